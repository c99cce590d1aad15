"""The SQL a sensor sends for one call on the store channel (id_main 10), built from a CDR record.

Shape (as a reference central expects it; it wraps the fragment in a generated procedure, spec §8):

    set @lSresp_id = getIdOrInsertSIPRES('...');
    set @uaA_id = getIdOrInsertUA('...');           -- only when known
    INSERT INTO cdr ( `col`,... ) VALUES ( 'v',... );
    if row_count() > 0 then
    set @MI_NEW_ID = last_insert_id();
    INSERT INTO cdr_next ...; INSERT INTO cdr_country_code ...; INSERT INTO cdr_rtp ...; INSERT INTO cdr_sdp ...;
    set @sip_req_id = getIdOrInsertSIPREQUEST('BYE'); INSERT INTO cdr_siphistory ...;
    end if

Values are quoted text ('%d' for integers, '%f' for reals), NULL bare, IPv4 addresses as their unsigned
integer. The same text runs on MariaDB directly once the lookup functions exist.
"""

from __future__ import annotations

import ipaddress
import time

from vmproto.sensor.cdr.model import CdrRecord, StreamStats

__all__ = ["store_sql", "sql_escape", "sql_value", "ip_value"]

_ESCAPES = {"\\": "\\\\", "'": "\\'", '"': '\\"', "\0": "\\0", "\n": "\\n", "\r": "\\r", "\x1a": "\\Z"}


def sql_escape(text: str) -> str:
    """Escape a string for a single-quoted MariaDB literal."""
    return "".join(_ESCAPES.get(c, c) for c in text)


class _Raw(str):
    """SQL text inserted as is (variables like @MI_NEW_ID, function calls)."""


def ip_value(addr: bytes) -> object:
    """IPv4 -> its unsigned integer (int unsigned columns); IPv6 -> INET6_ATON('...') for varbinary(16)."""
    if len(addr) == 4:
        return int.from_bytes(addr, "big")
    return _Raw(f"INET6_ATON('{ipaddress.ip_address(addr)}')")


def sql_value(v: object) -> str:
    """Render one value the way the reference does: NULL, raw SQL, or a quoted literal."""
    if v is None:
        return "NULL"
    if isinstance(v, _Raw):
        return str(v)
    if isinstance(v, bool):
        return f"'{int(v)}'"
    if isinstance(v, int):
        return f"'{v}'"
    if isinstance(v, float):
        return f"'{v:f}'"
    return f"'{sql_escape(str(v))}'"


def _dt(us: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(us // 1_000_000))


def _insert(table: str, rows: list[list[tuple[str, object]]]) -> str:
    cols = ",".join(f"`{c}`" for c, _ in rows[0])
    values = ",".join("( " + ",".join(sql_value(v) for _, v in row) + " )" for row in rows)
    return f"INSERT INTO {table} ( {cols} ) VALUES {values};"


def _side(prefix: str, s: StreamStats) -> list[tuple[str, object]]:
    p = prefix
    cols: list[tuple[str, object]] = [
        (f"{p}_index", s.index), (f"{p}_received", s.received), (f"{p}_lost", s.lost),
        (f"{p}_reordered", s.reordered), (f"{p}_packet_loss_perc_mult1000", s.packet_loss_perc_mult1000),
        (f"{p}_avgjitter_mult10", s.avgjitter_mult10), (f"{p}_maxjitter", s.maxjitter),
    ]
    if s.payload is not None:
        cols.append((f"{p}_payload", s.payload))
    cols += [(f"{p}_sl{i + 1}", s.sl[i]) for i in range(10)]
    cols += [(f"{p}_d{k}", s.d[k]) for k in (50, 70, 90, 120, 150, 200, 300)]
    cols += [(f"{p}_delay_sum", s.delay_sum), (f"{p}_delay_cnt", s.delay_cnt),
             (f"{p}_delay_avg_mult100", s.delay_avg_mult100), (f"{p}_saddr", ip_value(s.saddr))]
    for name in ("mos_f1_min_mult10", "mos_f2_min_mult10", "mos_adapt_min_mult10"):
        v = getattr(s, name)
        if v is not None:
            cols.append((f"{p}_{name}", v))
    # Silence MOS: without silence detection the reference reports its initial minimum, 4.5.
    cols.append((f"{p}_mos_silence_min_mult10", 45))
    cols.append((f"{p}_rtp_ptime", s.rtp_ptime or None))
    if s.ttl_min is not None:
        cols += [(f"{p}_ttl_min", s.ttl_min), (f"{p}_ttl_max", s.ttl_max), (f"{p}_ttl_avg_mult10", s.ttl_avg_mult10)]
    return cols


def _cdr_columns(r: CdrRecord) -> list[tuple[str, object]]:
    cols: list[tuple[str, object]] = []
    if r.id_sensor is not None:
        cols.append(("id_sensor", r.id_sensor))
    cols += [
        ("caller", r.caller), ("caller_reverse", r.caller[::-1]), ("called", r.called),
        ("called_reverse", r.called[::-1]), ("caller_domain", r.caller_domain), ("called_domain", r.called_domain),
        ("callername", r.callername), ("callername_reverse", r.callername[::-1]),
        ("sipcallerip", ip_value(r.sipcallerip)), ("sipcalledip", ip_value(r.sipcalledip)),
        ("sipcallerport", r.sipcallerport), ("sipcalledport", r.sipcalledport),
        ("duration", r.duration), ("progress_time", r.progress_time), ("first_rtp_time", r.first_rtp_time),
        ("connect_duration", r.connect_duration), ("post_bye_delay", r.post_bye_delay), ("vlan", r.vlan),
    ]
    if r.a_last_rtp_from_end is not None:
        cols.append(("a_last_rtp_from_end", r.a_last_rtp_from_end))
    if r.b_last_rtp_from_end is not None:
        cols.append(("b_last_rtp_from_end", r.b_last_rtp_from_end))
    cols += [("calldate", _dt(r.calldate_us)), ("callend", _dt(r.callend_us)), ("sighup", int(r.sighup)),
             ("lastSIPresponseNum", r.last_sip_response_num)]
    if r.response_time_100 is not None:
        cols.append(("response_time_100", float(r.response_time_100)))
    if r.response_time_xxx is not None:
        cols.append(("response_time_xxx", float(r.response_time_xxx)))
    cols.append(("bye", r.bye))
    if r.whohanged is not None:
        cols.append(("whohanged", r.whohanged))
    if r.a is not None:
        cols += _side("a", r.a)
    if r.b is not None:
        cols += _side("b", r.b)
    if r.a is not None or r.b is not None:
        sides = [s for s in (r.a, r.b) if s is not None]
        cols += [("payload", r.payload), ("jitter_mult10", r.jitter_mult10),
                 ("packet_loss_perc_mult1000", r.packet_loss_perc_mult1000),
                 ("delay_sum", max(s.delay_sum for s in sides)), ("delay_cnt", max(s.delay_cnt for s in sides)),
                 ("delay_avg_mult100", max(s.delay_avg_mult100 for s in sides)), ("lost", r.lost)]
        if r.ttl_min is not None:
            cols += [("ttl_min", r.ttl_min), ("ttl_max", r.ttl_max), ("ttl_avg_mult10", r.ttl_avg_mult10)]
    cols.append(("flags", r.flags))
    cols.append(("lastSIPresponse_id", _Raw("@lSresp_id")))
    if r.a_ua:
        cols.append(("a_ua_id", _Raw("@uaA_id")))
    if r.b_ua:
        cols.append(("b_ua_id", _Raw("@uaB_id")))
    return cols


def store_sql(r: CdrRecord) -> str:
    """Return the id_main 10 body (without the `10|T...|` store prefix) for one CDR record."""
    new_id = _Raw("@MI_NEW_ID")
    calldate = _dt(r.calldate_us)
    lines = [f"set @lSresp_id = getIdOrInsertSIPRES({sql_value(r.last_sip_response)});"]
    if r.a_ua:
        lines.append(f"set @uaA_id = getIdOrInsertUA({sql_value(r.a_ua)});")
    if r.b_ua:
        lines.append(f"set @uaB_id = getIdOrInsertUA({sql_value(r.b_ua)});")
    lines.append(_insert("cdr", [_cdr_columns(r)]))
    lines.append("if row_count() > 0 then")
    lines.append("set @MI_NEW_ID = last_insert_id();")
    lines.append(_insert("cdr_next", [[("fbasename", r.fbasename), ("calldate", calldate), ("cdr_ID", new_id)]]))
    lines.append(_insert("cdr_country_code", [[
        ("sipcallerip_country_code", ""), ("sipcalledip_country_code", ""), ("caller_number_country_code", ""),
        ("called_number_country_code", ""), ("calldate", calldate), ("cdr_ID", new_id)]]))
    if r.rtp:
        lines.append(_insert("cdr_rtp", [[
            ("cdr_ID", new_id), ("payload", x.payload), ("saddr", ip_value(x.saddr)), ("daddr", ip_value(x.daddr)),
            ("sport", x.sport), ("dport", x.dport), ("ssrc", x.ssrc), ("received", x.received), ("loss", x.loss),
            ("maxjitter_mult10", x.maxjitter_mult10), ("firsttime", x.firsttime), ("index", x.index),
            ("sdp_ptime", x.sdp_ptime), ("rtp_ptime", x.rtp_ptime), ("flags", x.flags), ("duration", x.duration),
            ("ttl_min", x.ttl_min), ("ttl_max", x.ttl_max), ("ttl_avg_mult10", x.ttl_avg_mult10),
            ("calldate", calldate)] for x in sorted(r.rtp, key=lambda x: x.index)]))
    if r.sdp:
        lines.append(_insert("cdr_sdp", [[
            ("cdr_ID", new_id), ("ip", ip_value(s.ip)), ("port", s.port), ("is_caller", int(s.is_caller)),
            ("ptime", s.ptime), ("calldate", calldate)] for s in r.sdp]))
    for h in r.siphistory:
        req = _Raw("@sip_req_id") if h.request else None
        resp = _Raw("@sip_resp_id") if h.response else None
        if h.request:
            lines.append(f"set @sip_req_id = getIdOrInsertSIPREQUEST({sql_value(h.request)});")
        if h.response:
            lines.append(f"set @sip_resp_id = getIdOrInsertSIPRES({sql_value(h.response)});")
        lines.append(_insert("cdr_siphistory", [[
            ("cdr_ID", new_id), ("time", h.time_us), ("SIPrequest_id", req), ("SIPresponseNum", h.response_num),
            ("SIPresponse_id", resp), ("calldate", calldate)]]))
    lines.append("end if")
    return "\n".join(lines)
