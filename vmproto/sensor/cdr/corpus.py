"""Render CDR records in the corpus TSV layout (cdr + cdr_next + cdr_sip_response joined; cdr_rtp rows).

This is what the stored rows look like when read back from MariaDB: DATETIME in UTC, IPs as text, FLOAT
columns with single precision shown to six significant digits, NULL as `NULL`.
"""

from __future__ import annotations

import ipaddress
import struct
import time

from vmproto.sensor.cdr.model import WHOHANGED, CdrRecord, CdrRtpRow, StreamStats

__all__ = ["CDR_COLUMNS", "RTP_COLUMNS", "cdr_row", "rtp_rows", "datetime_text", "float_column_text"]

CDR_COLUMNS = (
    "calldate callend duration connect_duration progress_time first_rtp_time caller called callername "
    "caller_domain called_domain sipcallerip sipcallerport sipcalledip sipcalledport lastSIPresponseNum "
    "lastSIPresponse whohanged bye a_payload b_payload payload a_saddr b_saddr a_received b_received a_lost "
    "b_lost a_reordered b_reordered a_avgjitter_mult10 b_avgjitter_mult10 a_maxjitter b_maxjitter "
    "a_mos_f1_min_mult10 b_mos_f1_min_mult10 a_mos_f2_min_mult10 b_mos_f2_min_mult10 a_mos_adapt_min_mult10 "
    "b_mos_adapt_min_mult10 packet_loss_perc_mult1000 a_rtp_ptime b_rtp_ptime a_sl1 b_sl1 a_d50 b_d50 fbasename"
).split()
RTP_COLUMNS = (
    "fbasename index saddr sport daddr dport ssrc payload received loss firsttime duration maxjitter_mult10 "
    "sdp_ptime rtp_ptime flags"
).split()


def datetime_text(us: int) -> str:
    """DATETIME text of a time in microseconds, seconds truncated (UTC).

    A negative time is taken the way the reference's unsigned arithmetic takes it: 64-bit microseconds,
    then 32-bit seconds."""
    if us < 0:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(((us % (1 << 64)) // 1_000_000) % (1 << 32)))
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(us // 1_000_000))


#: Unsigned integer columns narrower than the values the analysis can produce, and their maximum: MariaDB
#: (not in strict mode) stores an out-of-range value as the column's limit.
_MEDIUMINT_U, _SMALLINT_U = 16_777_215, 65_535
_COLUMN_MAX = {
    "duration": _MEDIUMINT_U, "connect_duration": _MEDIUMINT_U, "progress_time": _MEDIUMINT_U,
    "first_rtp_time": _MEDIUMINT_U, "a_received": _MEDIUMINT_U, "b_received": _MEDIUMINT_U,
    "a_lost": _MEDIUMINT_U, "b_lost": _MEDIUMINT_U, "a_reordered": _MEDIUMINT_U, "b_reordered": _MEDIUMINT_U,
    "a_avgjitter_mult10": _MEDIUMINT_U, "b_avgjitter_mult10": _MEDIUMINT_U, "a_maxjitter": _SMALLINT_U,
    "b_maxjitter": _SMALLINT_U, "a_sl1": _MEDIUMINT_U, "b_sl1": _MEDIUMINT_U, "a_d50": _MEDIUMINT_U,
    "b_d50": _MEDIUMINT_U,
}


def _clamp_columns(out: dict[str, str]) -> None:
    for col, top in _COLUMN_MAX.items():
        v = out[col]
        if v != "NULL" and int(v) > top:
            out[col] = str(top)


def ip_text(addr: bytes) -> str:
    return str(ipaddress.ip_address(addr))


def float_column_text(value: float) -> str:
    """How a FLOAT column shows a value the sensor sent as '%f' text: rounded to 6 decimals, then to single
    precision, printed with six significant digits."""
    f32 = struct.unpack("<f", struct.pack("<f", round(value, 6)))[0]
    return f"{f32:.6g}"


def _v(x: object) -> str:
    return "NULL" if x is None else str(x)


def _side(s: StreamStats | None, name: str) -> str:
    if s is None:
        return "NULL"
    if name == "sl1":
        return str(s.sl[0])
    if name == "d50":
        return str(s.d[50])
    if name == "saddr":
        return ip_text(s.saddr)
    return _v(getattr(s, name))


def cdr_row(r: CdrRecord) -> dict[str, str]:
    """Return the corpus TSV fields of one CDR, keyed by CDR_COLUMNS."""
    out = {
        "calldate": datetime_text(r.calldate_us),
        "callend": datetime_text(r.callend_us),
        "duration": _v(r.duration),
        "connect_duration": _v(r.connect_duration),
        "progress_time": _v(r.progress_time),
        "first_rtp_time": _v(r.first_rtp_time),
        "caller": r.caller,
        "called": r.called,
        "callername": r.callername,
        "caller_domain": r.caller_domain,
        "called_domain": r.called_domain,
        "sipcallerip": ip_text(r.sipcallerip),
        "sipcallerport": str(r.sipcallerport),
        "sipcalledip": ip_text(r.sipcalledip),
        "sipcalledport": str(r.sipcalledport),
        "lastSIPresponseNum": str(r.last_sip_response_num),
        "lastSIPresponse": r.last_sip_response,
        "whohanged": WHOHANGED.get(r.whohanged, "NULL") if r.whohanged is not None else "NULL",
        "bye": str(r.bye),
        "payload": _v(r.payload),
        "packet_loss_perc_mult1000": _v(r.packet_loss_perc_mult1000),
        "fbasename": r.fbasename,
    }
    names = {"payload": "payload", "saddr": "saddr", "received": "received", "lost": "lost",
             "reordered": "reordered", "avgjitter_mult10": "avgjitter_mult10", "maxjitter": "maxjitter",
             "mos_f1_min_mult10": "mos_f1_min_mult10", "mos_f2_min_mult10": "mos_f2_min_mult10",
             "mos_adapt_min_mult10": "mos_adapt_min_mult10", "rtp_ptime": "rtp_ptime", "sl1": "sl1", "d50": "d50"}
    for prefix, s in (("a", r.a), ("b", r.b)):
        for col, attr in names.items():
            out[f"{prefix}_{col}"] = _side(s, attr)
    _clamp_columns(out)
    return {c: out[c] for c in CDR_COLUMNS}


def _rtp_row(fbasename: str, x: CdrRtpRow) -> dict[str, str]:
    return {
        "fbasename": fbasename, "index": str(x.index), "saddr": ip_text(x.saddr), "sport": str(x.sport),
        "daddr": ip_text(x.daddr), "dport": str(x.dport), "ssrc": str(x.ssrc), "payload": _v(x.payload),
        "received": _v(x.received), "loss": str(x.loss), "firsttime": float_column_text(x.firsttime),
        "duration": float_column_text(x.duration), "maxjitter_mult10": str(x.maxjitter_mult10),
        "sdp_ptime": _v(x.sdp_ptime), "rtp_ptime": _v(x.rtp_ptime), "flags": _v(x.flags),
    }


def rtp_rows(r: CdrRecord) -> list[dict[str, str]]:
    """Return the corpus .rtp.tsv rows of one CDR, in index order."""
    return [_rtp_row(r.fbasename, x) for x in sorted(r.rtp, key=lambda x: x.index)]
