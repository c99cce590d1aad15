"""The CDR record: one call's rows for cdr, cdr_next, cdr_rtp, cdr_sdp, cdr_siphistory and cdr_country_code.

Values are Python values (None = SQL NULL). IP addresses are packed bytes (4 or 16); times are microseconds
since the epoch (UTC). Both renderers (`vmproto.sensor.cdr.sql` for the store channel, `.corpus` for the
corpus TSV layout) read from this record, so a real central, ours or a DB writer all get the same data.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["StreamStats", "CdrRtpRow", "CdrSdpRow", "CdrSipHistoryRow", "CdrRecord", "WHOHANGED"]

#: Values of cdr.whohanged (an enum column: 1 caller, 2 callee).
WHOHANGED = {1: "caller", 2: "callee"}


@dataclass(slots=True)
class StreamStats:
    """The a_* or b_* group of cdr columns for the stream chosen as that side."""

    index: int
    received: int
    lost: int
    reordered: int
    packet_loss_perc_mult1000: int
    avgjitter_mult10: int
    maxjitter: int
    payload: int | None
    sl: list[int]
    d: dict[int, int]
    saddr: bytes
    mos_f1_min_mult10: int | None
    mos_f2_min_mult10: int | None
    mos_adapt_min_mult10: int | None
    mos_f1_mult10: int | None
    mos_f2_mult10: int | None
    mos_adapt_mult10: int | None
    rtp_ptime: int | None
    ttl_min: int | None
    ttl_max: int | None
    ttl_avg_mult10: int | None

    @property
    def delay_sum(self) -> int:
        w = {50: 60, 70: 80, 90: 105, 120: 135, 150: 175, 200: 250, 300: 300}
        return sum(self.d[k] * w[k] for k in w)

    @property
    def delay_cnt(self) -> int:
        return sum(self.d.values())

    @property
    def delay_avg_mult100(self) -> int:
        cnt = self.delay_cnt
        return int(self.delay_sum / cnt * 100 + 0.5) if cnt else 0


@dataclass(slots=True)
class CdrRtpRow:
    """One cdr_rtp row."""

    index: int
    saddr: bytes
    sport: int
    daddr: bytes
    dport: int
    ssrc: int
    payload: int | None
    received: int | None
    loss: int
    firsttime: float
    duration: float
    maxjitter_mult10: int
    sdp_ptime: int | None
    rtp_ptime: int | None
    flags: int | None
    ttl_min: int | None
    ttl_max: int | None
    ttl_avg_mult10: int | None


@dataclass(slots=True)
class CdrSdpRow:
    """One cdr_sdp row: a media address announced in SDP."""

    ip: bytes
    port: int
    is_caller: bool
    ptime: int | None


@dataclass(slots=True)
class CdrSipHistoryRow:
    """One cdr_siphistory row (requests other than the initial INVITE; time relative to calldate, in us)."""

    time_us: int
    request: str | None
    response_num: int | None
    response: str | None


@dataclass(slots=True)
class CdrRecord:
    """Everything stored for one call."""

    id_sensor: int | None
    fbasename: str
    calldate_us: int
    callend_us: int
    duration: int | None
    connect_duration: int | None
    progress_time: int | None
    first_rtp_time: int | None
    post_bye_delay: int
    caller: str
    called: str
    callername: str
    caller_domain: str
    called_domain: str
    sipcallerip: bytes
    sipcallerport: int
    sipcalledip: bytes
    sipcalledport: int
    last_sip_response_num: int
    last_sip_response: str
    whohanged: int | None
    bye: int
    sighup: bool
    vlan: int | None
    response_time_100: int | None
    response_time_xxx: int | None
    a_ua: str
    b_ua: str
    a: StreamStats | None
    b: StreamStats | None
    payload: int | None
    a_last_rtp_from_end: int | None
    b_last_rtp_from_end: int | None
    ttl_min: int | None = None
    ttl_max: int | None = None
    ttl_avg_mult10: int | None = None
    flags: int = 0
    rtp: list[CdrRtpRow] = field(default_factory=list)
    sdp: list[CdrSdpRow] = field(default_factory=list)
    siphistory: list[CdrSipHistoryRow] = field(default_factory=list)

    @property
    def packet_loss_perc_mult1000(self) -> int | None:
        vals = [s.packet_loss_perc_mult1000 for s in (self.a, self.b) if s is not None]
        return max(vals) if vals else None

    @property
    def jitter_mult10(self) -> int | None:
        vals = [s.avgjitter_mult10 for s in (self.a, self.b) if s is not None]
        return max(vals) if vals else None

    @property
    def lost(self) -> int | None:
        vals = [s.lost for s in (self.a, self.b) if s is not None]
        return max(vals) if vals else None
