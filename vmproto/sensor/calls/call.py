"""State of one INVITE dialog (by Call-ID) as the reference tracks it, and its conversion to a CDR record."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from vmproto.sensor.calls.invites import InviteLegs
from vmproto.sensor.calls.kernel import KernelRtpStream
from vmproto.sensor.calls.rtp import RtpStream
from vmproto.sensor.calls.sdp import SdpMedia
from vmproto.sensor.calls.sip import SipMessage, parse_name_addr
from vmproto.sensor.calls.timers import CallTimers
from vmproto.sensor.cdr.model import CdrRecord, CdrRtpRow, CdrSdpRow, CdrSipHistoryRow, StreamStats

__all__ = ["Call", "MediaEndpoint", "Endpoint", "filename_from_call_id"]

Endpoint = tuple[bytes, int]
#: Either implementation of a stream's statistics (same surface, same results).
Stream = RtpStream | KernelRtpStream

# cdr_rtp.flags bits (the reference's CDR_RTP_STREAM_* values).
FLAG_IS_AB = 1 << 1
FLAG_IS_CALLER = 1 << 2
FLAG_IS_CALLED = 1 << 3

# cdr.bye codes for calls closed by a timer rather than by signalling.
BYE_FORCED = 110
BYE_ONEWAY = 101


@dataclass(slots=True)
class MediaEndpoint:
    """An SDP-announced RTP destination. `iscaller` is True when the caller sends to it (callee announced it)."""

    addr: bytes
    port: int
    iscaller: bool
    ptime: int
    rtpmap: dict[int, int]
    media: str


# The reference keeps at most 255 characters of the Call-ID as a call's base name (MAX_FNAME - 1).
FBASENAME_MAX = 255
_FILENAME_KEEP = frozenset(b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ:-.@")


def filename_from_call_id(call_id: str, convert_chars: str = "") -> str:
    """Return the file-name form of a Call-ID the way the reference names a call's files.

    The Call-ID is cut to 255 bytes (UTF-8); then every byte that is not an ASCII letter or digit or one of
    ``: - . @``, and every character listed in `convert_chars` (the reference's `convertchar` option), becomes
    ``_`` (one ``_`` per byte, so a multi-byte character gives several). The result is pure ASCII.
    """
    raw = call_id.encode("utf-8", "surrogateescape")[:FBASENAME_MAX]
    extra = frozenset(convert_chars.encode("utf-8", "surrogateescape"))
    return "".join(chr(c) if c in _FILENAME_KEEP and c not in extra else "_" for c in raw)


def _trunc_s(us: int) -> int:
    """Seconds from microseconds, truncated toward zero like the reference's integer division."""
    return int(us / 1_000_000) if us < 0 else us // 1_000_000


def _nonneg_s(us: int) -> int | None:
    return _trunc_s(us) if us >= 0 else None


@dataclass(slots=True)
class Call:
    """One call. Times are microseconds since the epoch."""

    call_id: str
    first_packet_us: int
    sipcallerip: bytes
    sipcallerport: int
    sipcalledip: bytes
    sipcalledport: int
    caller: str = ""
    called: str = ""
    callername: str = ""
    caller_domain: str = ""
    called_domain: str = ""
    a_ua: str = ""
    b_ua: str = ""
    vlan: int = -1
    invite_cseq: tuple[int, str] = (0, "")
    invite_cseqs: set[tuple[int, str]] = field(default_factory=set)
    last_signal_us: int = 0
    last_rtp_us: int = 0
    last_rtcp_us: int = 0
    last_rtp_a_us: int = 0
    last_rtp_b_us: int = 0
    progress_time_us: int = 0
    connect_time_us: int = 0
    first_rtp_time_us: int = 0
    first_invite_us: int = 0
    first_response_100_us: int = 0
    first_response_xxx_us: int = 0
    seeninviteok: bool = False
    seenbye: bool = False
    seenbye_us: int = 0
    seenbye_and_ok: bool = False
    seenbye_and_ok_us: int = 0
    seen_res18x: bool = False
    seen_res2xx_no_bye: bool = False
    bye_cseqs: set[tuple[int, str]] = field(default_factory=set)
    cancel_cseq: tuple[int, str] | None = None
    cancel_lsr487: bool = False
    last_response_num: int = 0
    last_response: str = ""
    whohanged: int | None = None
    oneway: bool = True
    invite_addrs: set[tuple[bytes, int, bytes, int]] = field(default_factory=set)
    invites: InviteLegs = field(default_factory=InviteLegs)
    timers: CallTimers = field(default_factory=CallTimers)
    in_dialog_cseqs: set[tuple[int, str]] = field(default_factory=set)
    seen_res2xx: bool = False
    cdr_flags: int = 0  # vmproto.sensor.cdr.flags bits observed so far
    endpoints: list[MediaEndpoint] = field(default_factory=list)
    streams: dict[tuple[bytes, int, bytes, int, int], Stream] = field(default_factory=dict)
    forcemark_times: list[int] = field(default_factory=list)
    siphistory: list[CdrSipHistoryRow] = field(default_factory=list)
    close_reason: int = 0

    # ---- identity ------------------------------------------------------------------------------------------

    @property
    def fbasename(self) -> str:
        """The Call-ID as a file name (see `filename_from_call_id`): the base name of the call's files.

        The CDR's `fbasename` column keeps the raw Call-ID; this form is only for file names.
        """
        return filename_from_call_id(self.call_id)

    @property
    def calldate(self) -> int:
        """Time of the call's first packet, integer nanoseconds since the Unix epoch (microsecond precision)."""
        return self.first_packet_us * 1000

    # ---- signalling ----------------------------------------------------------------------------------------

    def fill_from_invite(self, msg: SipMessage) -> None:
        """Set the party fields from the first INVITE."""
        frm = parse_name_addr(msg.header("from"))
        to = parse_name_addr(msg.header("to"))
        self.caller = frm.user
        self.callername = frm.display
        self.caller_domain = frm.host
        self.called = to.user
        self.called_domain = to.host
        self.a_ua = msg.header("user-agent") or ""

    def from_caller(self, src: bytes, sport: int) -> bool | None:
        """Return True when a packet from src:sport comes from the caller, False from the callee, None unknown."""
        if (src, sport) == (self.sipcallerip, self.sipcallerport):
            return True
        if (src, sport) == (self.sipcalledip, self.sipcalledport):
            return False
        if src == self.sipcallerip and src != self.sipcalledip:
            return True
        if src == self.sipcalledip and src != self.sipcallerip:
            return False
        return None

    def check_reset_oneway(self, src: bytes, sport: int, dst: bytes, dport: int) -> None:
        """Clear the one-way flag once a SIP packet comes from anywhere but an INVITE's sender."""
        if not self.oneway:
            return
        if src != self.sipcallerip or (self.sipcallerip == self.sipcalledip and sport != self.sipcallerport):
            if (src, sport, dst, dport) not in self.invite_addrs:
                self.oneway = False

    def update_last_response(self, num: int, text: str, cseq: tuple[int, str]) -> None:
        """Apply the reference's rules for which response becomes lastSIPresponse."""
        if not num or not text:
            return
        cur = self.last_response_num
        allowed = (cur != 487 or (self.cancel_lsr487 and num // 10 == 48)) and not self.seeninviteok \
            and not (cur // 100 == 5 and num // 100 == 5) \
            and not (cur // 100 >= 2 and num // 100 == 1 and cur not in (401, 407))
        if allowed and (num != 200 or cseq[1] == "INVITE") and not (
                self.cancel_cseq is not None and cseq == self.cancel_cseq):
            self.last_response_num = num
            self.last_response = text

    def add_sdp(self, media: list[SdpMedia], from_caller: bool, ts_us: int) -> None:
        """Record the media destinations of an SDP offer/answer; a changed endpoint marks a re-INVITE."""
        changed = False
        for m in media:
            if not m.addr or not m.port:
                continue
            iscaller = not from_caller
            found = None
            for e in self.endpoints:
                if e.addr == m.addr and e.port == m.port and e.iscaller == iscaller:
                    found = e
                    break
            if found is None:
                if any(e.iscaller == iscaller for e in self.endpoints):
                    changed = True
                self.endpoints.append(MediaEndpoint(m.addr, m.port, iscaller, m.ptime, dict(m.rtpmap), m.media))
            else:
                if m.ptime:
                    found.ptime = m.ptime
                if m.rtpmap and any(found.rtpmap.get(k) != v for k, v in m.rtpmap.items()):
                    found.rtpmap.update(m.rtpmap)
                    for s in self.streams.values():
                        if s.rtpmap_own is found.rtpmap:
                            s.refresh_rtpmap()
        if changed:
            self.forcemark_times.append(ts_us)

    def endpoint_for(self, addr: bytes, port: int) -> MediaEndpoint | None:
        """Return the newest endpoint matching addr:port (RTP destination), or None."""
        for e in reversed(self.endpoints):
            if e.addr == addr and e.port == port:
                return e
        return None

    def sender_ptime(self, addr: bytes, port: int, iscaller: bool) -> int:
        """The a=ptime the stream's sender announced in its own SDP (the endpoint at the stream's source
        address and port, on the sending side); 0 when the source is no SDP endpoint or announced none."""
        for e in reversed(self.endpoints):
            if e.addr == addr and e.port == port and e.iscaller != iscaller:
                return e.ptime
        return 0

    def rtcp_endpoint(self, addr: bytes, port: int) -> bool:
        return any(e.addr == addr and e.port + 1 == port for e in self.endpoints)

    def rtpmap_for(self, iscaller: bool) -> dict[int, int]:
        merged: dict[int, int] = {}
        for e in self.endpoints:
            if e.iscaller == iscaller:
                merged.update(e.rtpmap)
        return merged

    # ---- results -------------------------------------------------------------------------------------------

    def last_time_us(self) -> int:
        return max(self.last_signal_us, self.last_rtp_us, self.last_rtcp_us)

    def bye_code(self) -> int:
        if self.close_reason:
            return self.close_reason
        if self.oneway:
            return BYE_ONEWAY
        if not self.seen_res2xx_no_bye and not self.seen_res18x and self.seenbye:
            return 106
        if not self.seeninviteok:
            return 0
        if not self.seenbye:
            return 1
        return 3 if self.seenbye_and_ok else 2

    def _select_ab(self, streams: list[Stream]) -> tuple[Stream | None, Stream | None]:
        if not streams:
            return None, None
        if len(streams) == 1:
            s = streams[0]
            return (s, None) if s.iscaller else (None, s)
        if len(streams) == 2 and streams[0].iscaller != streams[1].iscaller:
            return (streams[0], streams[1]) if streams[0].iscaller else (streams[1], streams[0])
        # Otherwise the busiest stream of each direction (stable order on ties, as the reference sorts).
        order = sorted(streams, key=lambda s: -(s.received + s.lost))
        a = next((s for s in order if s.iscaller and s.first_codec >= 0), None)
        b = next((s for s in order if not s.iscaller and s.first_codec >= 0), None)
        return a, b

    def _stream_stats(self, s: Stream, index: int) -> StreamStats:
        connected = bool(self.connect_time_us)
        s.finalize_mos(connected)
        lost = s.lost
        loss_perc = int(math.floor(lost / (s.received + 2 + lost) * 100 * 1000 + 0.5)) if (s.received + 2 + lost) else 0
        f1, f2, ad = (ch for ch in s.mos)
        return StreamStats(
            index=index,
            received=s.received_cdr,
            lost=lost,
            reordered=s.reordered,
            packet_loss_perc_mult1000=loss_perc,
            avgjitter_mult10=math.ceil(s.avgjitter * 10),
            maxjitter=math.ceil(s.maxjitter),
            payload=s.first_codec if s.first_codec >= 0 else None,
            sl=s.slost[1:11],
            d=dict(s.delay),
            saddr=s.saddr,
            mos_f1_min_mult10=f1.minimum if 0 < f1.minimum != 255 else None,
            mos_f2_min_mult10=f2.minimum if 0 < f2.minimum != 255 else None,
            mos_adapt_min_mult10=ad.minimum if 0 < ad.minimum != 255 else None,
            mos_f1_mult10=int(f1.average) if f1.average > 0 else None,
            mos_f2_mult10=int(math.floor(f2.average + 0.5)) if f2.average > 0 else None,
            mos_adapt_mult10=int(math.floor(ad.average + 0.5)) if ad.average > 0 else None,
            rtp_ptime=s.rtp_ptime,
            ttl_min=s.ttl_min if s.ttl_count else None,
            ttl_max=s.ttl_max if s.ttl_count else None,
            ttl_avg_mult10=int(math.floor(s.ttl_sum / s.ttl_count * 10 + 0.5)) if s.ttl_count else None,
        )

    def end_time_us(self, ignore_duration_after_bye_confirmed: bool = True) -> int:
        """The call's end for duration and callend: the 2xx to BYE when there is one (the reference's
        `ignore_duration_after_bye_confirmed`, on by default), else its last packet."""
        if ignore_duration_after_bye_confirmed and self.seenbye_and_ok_us > self.first_packet_us:
            return self.seenbye_and_ok_us
        return self.last_time_us()

    def to_cdr(self, id_sensor: int | None = None, *, ignore_duration_after_bye_confirmed: bool = True,
               extra_flags: int = 0) -> CdrRecord:
        """Build the CDR record the reference would store for this call; `extra_flags` is ORed into its
        cdr.flags (the sensor's SAVE_* bits)."""
        first = self.first_packet_us
        last = self.end_time_us(ignore_duration_after_bye_confirmed)
        duration_us = last - first
        all_streams = list(self.streams.values())
        rows_streams = [s for s in all_streams if s.received or s.first_codec >= 0]
        a, b = self._select_ab([s for s in all_streams if s.first_codec >= 0 or s.received])
        index_of = {id(s): i + 1 for i, s in enumerate(all_streams)}
        a_stats = self._stream_stats(a, index_of[id(a)]) if a else None
        b_stats = self._stream_stats(b, index_of[id(b)]) if b else None
        payload = None
        if a_stats and a_stats.payload is not None:
            payload = a_stats.payload
        elif b_stats and b_stats.payload is not None:
            payload = b_stats.payload
        rtp_rows = []
        for s in rows_streams:
            flags = (FLAG_IS_AB if s is a or s is b else 0) | (FLAG_IS_CALLER if s.iscaller else FLAG_IS_CALLED)
            rtp_rows.append(CdrRtpRow(
                index=index_of[id(s)], saddr=s.saddr, sport=s.sport, daddr=s.daddr, dport=s.dport, ssrc=s.ssrc,
                payload=s.first_codec if s.first_codec >= 0 else None,
                received=s.received_cdr if (s.received > 0 or s.first_codec < 0) else None,
                loss=s.lost, firsttime=(s.first_time_us - first) / 1e6,
                duration=(s.last_time_us - s.first_time_us) / 1e6,
                maxjitter_mult10=int(s.maxjitter * 10), sdp_ptime=s.sdp_ptime or None,
                rtp_ptime=s.rtp_ptime or None, flags=flags or None,
                ttl_min=s.ttl_min if s.ttl_count else None, ttl_max=s.ttl_max if s.ttl_count else None,
                ttl_avg_mult10=int(math.floor(s.ttl_sum / s.ttl_count * 10 + 0.5)) if s.ttl_count else None,
            ))
        sdp_rows: list[CdrSdpRow] = []
        seen_sides: set[bool] = set()
        for e in sorted(self.endpoints, key=lambda e: not e.iscaller):
            if e.iscaller in seen_sides or e.media != "audio":
                continue
            seen_sides.add(e.iscaller)
            sdp_rows.append(CdrSdpRow(e.addr, e.port, e.iscaller, e.ptime or None))
        whohanged = None if self.whohanged is None else (2 if self.whohanged else 1)
        rt100 = rtxxx = None
        if self.first_invite_us:
            if self.first_response_100_us:
                rt100 = min(65535, int(math.floor((self.first_response_100_us - self.first_invite_us) / 1000 + 0.5)))
            if self.first_response_xxx_us:
                rtxxx = min(65535, int(math.floor((self.first_response_xxx_us - self.first_invite_us) / 1000 + 0.5)))
        ttl = [s for s in (a, b) if s is not None and s.ttl_count]
        caller_ip, caller_port = self.invites.caller((self.sipcallerip, self.sipcallerport))
        called_ip, called_port = self.invites.called((self.sipcalledip, self.sipcalledport))
        return CdrRecord(
            id_sensor=id_sensor,
            fbasename=self.call_id,
            calldate_us=first,
            callend_us=first + duration_us,
            # A negative span (capture times out of order) is stored as NULL, as the reference's unsigned
            # duration arithmetic does.
            duration=_trunc_s(duration_us) if duration_us >= 0 else None,
            connect_duration=_nonneg_s(duration_us - (self.connect_time_us - first)) if self.connect_time_us else None,
            progress_time=_trunc_s(self.progress_time_us - first) if self.progress_time_us else None,
            first_rtp_time=_trunc_s(self.first_rtp_time_us - first) if self.first_rtp_time_us else None,
            post_bye_delay=_trunc_s(self.seenbye_and_ok_us - self.seenbye_us)
            if self.seenbye_us and self.seenbye_and_ok_us > self.seenbye_us else 0,
            caller=self.caller, called=self.called, callername=self.callername,
            caller_domain=self.caller_domain, called_domain=self.called_domain,
            sipcallerip=caller_ip, sipcallerport=caller_port, sipcalledip=called_ip, sipcalledport=called_port,
            last_sip_response_num=self.last_response_num, last_sip_response=self.last_response,
            whohanged=whohanged, bye=self.bye_code(), sighup=False,
            vlan=self.vlan if self.vlan >= 0 else None,
            response_time_100=rt100, response_time_xxx=rtxxx,
            a_ua=self.a_ua, b_ua=self.b_ua, a=a_stats, b=b_stats, payload=payload,
            a_last_rtp_from_end=_trunc_s(self.last_signal_us - self.last_rtp_a_us) if self.last_rtp_a_us else None,
            b_last_rtp_from_end=_trunc_s(self.last_signal_us - self.last_rtp_b_us) if self.last_rtp_b_us else None,
            ttl_min=min(s.ttl_min for s in ttl) if ttl else None,
            ttl_max=max(s.ttl_max for s in ttl) if ttl else None,
            ttl_avg_mult10=int(math.floor(sum(s.ttl_sum / s.ttl_count for s in ttl) / len(ttl) * 10 + 0.5))
            if ttl else None,
            flags=self.cdr_flags | extra_flags, rtp=rtp_rows, sdp=sdp_rows, siphistory=list(self.siphistory),
        )
