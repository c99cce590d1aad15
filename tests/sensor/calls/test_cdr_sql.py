"""The store SQL we generate for a CDR against the body a reference sensor sent (store transcripts)."""

from __future__ import annotations

import calendar
import json
import time

from tests.conftest import REFERENCE, need_shared
from vmproto.sensor.cdr.model import CdrRecord, CdrRtpRow, CdrSdpRow, CdrSipHistoryRow, StreamStats
from vmproto.sensor.cdr.sql import sql_escape, sql_value, store_sql


def _us(text: str) -> int:
    return calendar.timegm(time.strptime(text, "%Y-%m-%d %H:%M:%S")) * 1_000_000


def _side(index: int, received: int, saddr: bytes) -> StreamStats:
    return StreamStats(index=index, received=received, lost=0, reordered=0, packet_loss_perc_mult1000=0,
                       avgjitter_mult10=0, maxjitter=0, payload=0, sl=[0] * 10,
                       d={k: 0 for k in (50, 70, 90, 120, 150, 200, 300)}, saddr=saddr, mos_f1_min_mult10=45,
                       mos_f2_min_mult10=45, mos_adapt_min_mult10=45, mos_f1_mult10=None, mos_f2_mult10=None,
                       mos_adapt_mult10=None, rtp_ptime=20, ttl_min=64, ttl_max=64, ttl_avg_mult10=640)


def _reference_call() -> CdrRecord:
    """The call of the store recordings (README: Alice 1000 -> 2000, 3 s PCMU), as our record."""
    a, b = bytes([192, 0, 2, 10]), bytes([198, 51, 100, 20])
    calldate = _us("2026-11-26 04:17:58")
    rtp = [CdrRtpRow(1, a, 10000, b, 20000, 3469092792, 0, 148, 0, 2.05, 2.94, 0, 20, 20, 6, 64, 64, 640),
           CdrRtpRow(2, b, 20000, a, 10000, 179720520, 0, 147, 0, 2.053, 2.92, 0, 20, 20, 10, 64, 64, 640)]
    return CdrRecord(
        id_sensor=2, fbasename="refcall-0-3038c9df@192.0.2.10", calldate_us=calldate,
        callend_us=_us("2026-11-26 04:18:03"), duration=5, connect_duration=3, progress_time=0, first_rtp_time=2,
        post_bye_delay=0, caller="1000", called="2000", callername="Alice 1000", caller_domain="192.0.2.10",
        called_domain="198.51.100.20", sipcallerip=a, sipcallerport=5060, sipcalledip=b, sipcalledport=5060,
        last_sip_response_num=200, last_sip_response="200 OK", whohanged=1, bye=3, sighup=False, vlan=None,
        response_time_100=10, response_time_xxx=200, a_ua="ref-pcap-gen", b_ua="",
        a=_side(0, 148, a), b=_side(1, 147, b), payload=0, a_last_rtp_from_end=0, b_last_rtp_from_end=0,
        ttl_min=64, ttl_max=64, ttl_avg_mult10=640, flags=4303360768, rtp=rtp,
        sdp=[CdrSdpRow(b, 20000, True, 20), CdrSdpRow(a, 10000, False, 20)],
        siphistory=[CdrSipHistoryRow(5_100_000, "BYE", None, None)])


def _reference_body() -> str:
    path = need_shared(REFERENCE / "transcripts" / "store_nocomp.jsonl")
    with open(path) as f:
        for line in f:
            d = json.loads(line)
            if (d.get("store") or {}).get("id_main") == 10:
                return d["text"].split("|", 2)[2].rstrip("\n")
    raise AssertionError("no id_main 10 message in the transcript")


def test_store_sql_matches_reference_body() -> None:
    assert store_sql(_reference_call()) == _reference_body()


def test_values_and_escaping() -> None:
    assert sql_value(None) == "NULL"
    assert sql_value(3) == "'3'"
    assert sql_value(2.05) == "'2.050000'"
    assert sql_escape("O'Brien \\ \"x\"\n") == "O\\'Brien \\\\ \\\"x\\\"\\n"
    rec = _reference_call()
    rec.callername = "x'; DROP TABLE cdr; --"
    sql = store_sql(rec)
    assert "'x\\'; DROP TABLE cdr; --'" in sql


def test_ipv6_addresses_use_inet6_aton() -> None:
    rec = _reference_call()
    rec.sipcallerip = bytes.fromhex("20010db8000a00000000000000000010")
    assert "INET6_ATON('2001:db8:a::10')" in store_sql(rec)
