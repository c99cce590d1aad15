"""The call table: DecodedPacket records in, CDR records out.

`CallAnalyzer.feed(pkt)` takes packets in capture order (any object with the DecodedPacket fields) and returns
the CDRs of calls that a timer closed; `finish()` closes every open call, as the reference does at the end of a
`-r` replay. Time comes only from packet timestamps, so replays are deterministic.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from vmproto.sensor.calls.call import BYE_FORCED, Call
from vmproto.sensor.calls.errors import AnalyzerConfigError, CallAnalysisError
from vmproto.sensor.calls.kernel import KernelRtpStream, load_kernel, stream_class
from vmproto.sensor.calls.rtp import PAYLOAD_TELEVENT
from vmproto.sensor.calls.sdp import parse_sdp
from vmproto.sensor.calls.sip import SipMessage, looks_like_sip, parse_message, parse_name_addr, via_branch
from vmproto.sensor.calls.stream import TcpSipReassembler
from vmproto.sensor.calls.timers import (
    BYE_ABSOLUTE_TIMEOUT,
    BYE_RTP_TIMEOUT,
    BYE_SIP_WITHOUT_RTP,
    BYE_TIMEOUT,
    BYE_ZOMBIE,
    ZOMBIE_TIMEOUT_S,
    final_response_delay,
)
from vmproto.sensor.cdr import flags as cdrflags
from vmproto.sensor.cdr.model import CdrRecord, CdrSipHistoryRow

__all__ = ["AnalyzerConfig", "CallAnalyzer", "CallClosedHook", "CallPacketHook", "PacketLike"]

_UDP, _TCP = 17, 6


class PacketLike(Protocol):
    """The DecodedPacket fields the analysis reads (see docs/architecture.md)."""

    ts_ns: int
    ip_version: int
    src: bytes
    dst: bytes
    proto: int
    sport: int
    dport: int
    payload: bytes
    ttl: int
    tcp_seq: int
    tcp_flags: int
    vlan: int


@dataclass(slots=True)
class AnalyzerConfig:
    """Options of the analysis (names follow voipmonitor.conf).

    `ipv6`: process IPv6 packets (the reference ignores them unless its schema is in IPv6 mode).
    Call closing (see `vmproto.sensor.calls.timers`; seconds): `rtptimeout`, `sipwithoutrtptimeout`,
    `absolute_timeout`, `bye_timeout`, `bye_confirmed_timeout`, `response_default_timeout`,
    `redirect_response_300_timeout`, `quick_save_cdr` (0 no, 1 yes, 2 immediately);
    `ignore_rtp_after_bye_confirmed`, `ignore_rtp_after_auth_failed`; `ignore_duration_after_bye_confirmed`
    (the call ends at the 2xx to BYE for duration and callend, not at its last packet).
    `cdr_save_flags`: `vmproto.sensor.cdr.flags.SAVE_*` bits describing what the sensor stores for each
    call (savesip, savertp ...), ORed into every CDR's flags.
    `cleanup_calls_period`: seconds of capture time between timer sweeps (None: the reference's default,
    10, or 1 with `quick_save_cdr`; 0: no sweep until `finish()`/`terminate()`). The reference sweeps on
    its wall clock, so a `-r` replay that finishes within one period closes no call before the end; 0
    reproduces such replays.
    `rtp_kernel`: per-stream RTP statistics in "c" (the compiled kernel), "python" (the reference model)
    or "auto" (C when it can be built, else Python; `$VMPROTO_RTP_KERNEL` overrides "auto"). Both give
    identical results.
    """

    sip_ports: frozenset[int] = frozenset({5060})
    ipv6: bool = False
    id_sensor: int | None = None
    rtptimeout: int = 300
    sipwithoutrtptimeout: int = 3600
    absolute_timeout: int = 4 * 3600
    bye_timeout: int = 20 * 60
    bye_confirmed_timeout: int = 10 * 60
    response_default_timeout: int = 5
    redirect_response_300_timeout: int = 5 * 60
    quick_save_cdr: int = 0
    ignore_rtp_after_bye_confirmed: bool = True
    ignore_rtp_after_auth_failed: bool = True
    cleanup_calls_period: int | None = None
    ignore_duration_after_bye_confirmed: bool = True
    cdr_save_flags: int = 0
    max_calls: int = 1_000_000
    rtp_kernel: str = "auto"
    stats: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Raises AnalyzerConfigError naming the first option with an unusable value."""
        for name in ("rtptimeout", "sipwithoutrtptimeout", "absolute_timeout", "bye_timeout", "bye_confirmed_timeout",
                     "response_default_timeout", "redirect_response_300_timeout", "max_calls"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise AnalyzerConfigError(f"{name} must be a whole number of seconds >= 0, got {value!r}")
        if self.quick_save_cdr not in (0, 1, 2) or isinstance(self.quick_save_cdr, bool):
            raise AnalyzerConfigError(f"quick_save_cdr must be 0, 1 or 2, got {self.quick_save_cdr!r}")
        period = self.cleanup_calls_period
        if period is not None and (not isinstance(period, int) or isinstance(period, bool) or period < 0):
            raise AnalyzerConfigError(f"cleanup_calls_period must be None or seconds >= 0, got {period!r}")
        if self.rtp_kernel not in ("auto", "c", "python"):
            raise AnalyzerConfigError(f"rtp_kernel must be 'auto', 'c' or 'python', got {self.rtp_kernel!r}")
        if not all(isinstance(p, int) and 0 < p < 65536 for p in self.sip_ports):
            raise AnalyzerConfigError(f"sip_ports must be port numbers 1..65535, got {sorted(self.sip_ports)!r}")
        if not isinstance(self.cdr_save_flags, int) or self.cdr_save_flags < 0:
            raise AnalyzerConfigError(f"cdr_save_flags must be a bit mask >= 0, got {self.cdr_save_flags!r}")


CallPacketHook = Callable[[Call, PacketLike, str], None]
CallClosedHook = Callable[[Call, CdrRecord], None]


class CallAnalyzer:
    """SIP dialogs and their RTP, keyed by Call-ID.

    Optional hooks (both run synchronously inside `feed`/`finish`/`terminate`; an exception they raise
    propagates to the caller):

    `on_call_packet(call, pkt, kind)`: every packet the analysis attributes to a call, `kind` being "sip",
    "rtp" or "rtcp", in capture order. A SIP message carried over TCP is reported with the segment that
    completed it (once per segment even when it completes several messages of the call). Lets a spool
    writer keep per-call SIP and RTP captures.
    `on_call_closed(call, cdr)`: once per call, when its CDR is final (timer, `finish()` or `terminate()`),
    before the CDR is returned.
    """

    def __init__(self, config: AnalyzerConfig | None = None, *, on_call_packet: CallPacketHook | None = None,
                 on_call_closed: CallClosedHook | None = None) -> None:
        self.config = config or AnalyzerConfig()
        self.on_call_packet = on_call_packet
        self.on_call_closed = on_call_closed
        self._calls: dict[str, Call] = {}
        self._order: list[str] = []
        self._media: dict[tuple[bytes, int], list[str]] = {}
        # (src, sport, dst, dport, SSRC bytes) -> (call, stream, kernel handle): the RTP fast path. An entry
        # is dropped when its call closes or an SDP (re)registers one of its two endpoints in _media.
        self._hot: dict[tuple[bytes, int, bytes, int, bytes], tuple[Call, Any, Any]] = {}
        self._tcp = TcpSipReassembler()
        self._now_us = 0
        self._last_sweep_us = 0
        period = self.config.cleanup_calls_period
        if period is None:
            period = 1 if self.config.quick_save_cdr else 10
        # 0: never sweep before finish()/terminate() (what a reference `-r` replay faster than its wall-clock
        # cleanup period amounts to).
        self._sweep_every_us = period * 1_000_000 if period > 0 else 1 << 62
        self.bad_packets = 0
        self._ipv6 = self.config.ipv6
        self._sip_ports = self.config.sip_ports
        self._stream_class = stream_class(None if self.config.rtp_kernel == "auto" else self.config.rtp_kernel)
        if self._stream_class is KernelRtpStream:
            mod = load_kernel()
            self._kread: Callable[..., int] | None = mod.lib.vm_stream_read
            self._knull = mod.ffi.NULL
        else:
            self._kread = None
            self._knull = None

    @property
    def rtp_kernel(self) -> str:
        """Which RTP statistics implementation runs: "c" or "python"."""
        return "c" if self._kread is not None else "python"

    @property
    def open_calls(self) -> int:
        return len(self._calls)

    # ---- input ---------------------------------------------------------------------------------------------

    def feed(self, pkt: PacketLike) -> list[CdrRecord]:
        """Process one packet; return CDRs of calls closed by timers."""
        if isinstance(pkt, tuple) and len(pkt) == 14:
            # DecodedPacket (or a NamedTuple with its fields and order): one unpack instead of nine lookups.
            ts_ns, ip_version, src, dst, proto, sport, dport, data, ttl, _, _, _, _, _ = pkt
        else:
            ts_ns, ip_version, src, dst, proto = pkt.ts_ns, pkt.ip_version, pkt.src, pkt.dst, pkt.proto
            sport, dport, data, ttl = pkt.sport, pkt.dport, pkt.payload, pkt.ttl
        if ip_version == 6 and not self._ipv6:
            return []
        ts_us = ts_ns // 1000
        if ts_us > self._now_us:
            self._now_us = ts_us
        sip_ports = self._sip_ports
        if proto == _UDP:
            if (sport in sip_ports or dport in sip_ports) and looks_like_sip(data[:16]):
                try:
                    msg = parse_message(data)
                except CallAnalysisError:
                    self.bad_packets += 1
                else:
                    self._sip(msg, pkt, ts_us, report=True)
            else:
                # RTP of a known stream: checks as in _media_packet, then straight to the statistics.
                n = len(data)
                hit = None
                if n >= 12:
                    b0 = data[0]
                    if b0 >> 6 == 2 and not 192 <= data[1] <= 223 and not (b0 & 0x10 and n < 16 + (b0 & 0x0F) * 4):
                        hit = self._hot.get((src, sport, dst, dport, data[8:12]))
                if hit is not None:
                    call, stream, handle = hit
                    cutoff = call.timers.rtp_cutoff_us
                    if cutoff and ts_us > cutoff:
                        hit = None  # not attributed: the slow path drops it the same way
                if hit is None:
                    self._media_packet(pkt, ts_us)
                else:
                    if self.on_call_packet is not None:
                        self.on_call_packet(call, pkt, "rtp")
                    if handle is not None and not call.forcemark_times:
                        r = self._kread(handle, ts_us, ttl, data, n, self._knull, 0,  # type: ignore[misc]
                                        call.connect_time_us != 0)
                        if r < -1:
                            raise MemoryError("RTP kernel: jitter-buffer allocation failed")
                        counted = r > 0
                    else:
                        counted = stream.feed(ts_us, ttl, data, call.forcemark_times, call.connect_time_us != 0)
                    if counted:
                        if not call.first_rtp_time_us:
                            call.first_rtp_time_us = ts_us
                        if ts_us > call.last_rtp_us:
                            call.last_rtp_us = ts_us
                        if stream.iscaller:
                            call.last_rtp_a_us = ts_us
                        else:
                            call.last_rtp_b_us = ts_us
        elif proto == _TCP and (sport in sip_ports or dport in sip_ports):
            key = (src, sport, dst, dport)
            reported: set[str] = set()
            for msg, msg_ts in self._tcp.feed(key, pkt.tcp_seq, pkt.tcp_flags, data, ts_us):
                call = self._sip(msg, pkt, msg_ts, report=False)
                hook = self.on_call_packet
                if hook is not None and call is not None and call.call_id not in reported:
                    reported.add(call.call_id)
                    hook(call, pkt, "sip")
        # The timer sweep runs once per cleanup period of capture time; checked inline (per-packet path).
        if self._now_us - self._last_sweep_us < self._sweep_every_us:
            return []
        return self._sweep()

    def advance(self, ts_ns: int) -> list[CdrRecord]:
        """Move the analysis clock to `ts_ns` without a packet and run the call timers; return the CDRs they closed.

        For a live source that goes quiet (a mirroring sensor that stops sending, an idle link): the timers run on
        packet time, so without this the last calls would stay open until the next packet or a stop. A time
        earlier than the newest packet changes nothing.
        """
        ts_us = ts_ns // 1000
        if ts_us <= self._now_us:
            return []
        self._now_us = ts_us
        self._last_sweep_us = min(self._last_sweep_us, ts_us - self._sweep_every_us)  # force this sweep
        return self._sweep()

    def finish(self) -> list[CdrRecord]:
        """Close every open call (end of input) and return their CDRs in call-start order."""
        out = [self._close(cid, 0) for cid in list(self._order) if cid in self._calls]
        self._order.clear()
        return out

    def terminate(self) -> list[CdrRecord]:
        """Close every open call as a forced stop (SIGTERM of a live sensor: `bye` = 110)."""
        out = [self._close(cid, BYE_FORCED) for cid in list(self._order) if cid in self._calls]
        self._order.clear()
        return out

    # ---- timers --------------------------------------------------------------------------------------------

    def _sweep(self) -> list[CdrRecord]:
        now = self._now_us
        if now - self._last_sweep_us < self._sweep_every_us:
            return []
        self._last_sweep_us = now
        cfg = self.config
        now_s = now // 1_000_000
        out: list[CdrRecord] = []
        for cid in list(self._order):
            call = self._calls.get(cid)
            if call is None:
                continue
            t = call.timers
            first_s = call.first_packet_us // 1_000_000
            reason = -1
            if t.destroy_at and t.destroy_at <= now_s:
                reason = 0
            elif (t.destroy_at_bye and t.destroy_at_bye <= now_s) or \
                    (t.destroy_at_bye_confirmed and t.destroy_at_bye_confirmed <= now_s):
                reason = BYE_TIMEOUT
            elif call.first_rtp_time_us and now_s > call.last_time_us() // 1_000_000 + cfg.rtptimeout:
                reason = BYE_RTP_TIMEOUT
            elif not call.first_rtp_time_us and now_s > first_s + cfg.sipwithoutrtptimeout:
                reason = BYE_SIP_WITHOUT_RTP
            elif now_s > first_s + cfg.absolute_timeout:
                reason = BYE_ABSOLUTE_TIMEOUT
            elif now_s > first_s + ZOMBIE_TIMEOUT_S and not call.seen_res18x and not call.seen_res2xx \
                    and not call.first_rtp_time_us:
                reason = BYE_ZOMBIE
            if reason >= 0:
                out.append(self._close(cid, reason))
        if out:
            self._order = [c for c in self._order if c in self._calls]
        return out

    def _close(self, cid: str, reason: int) -> CdrRecord:
        call = self._calls.pop(cid)
        call.close_reason = reason
        hot = self._hot
        for key in [k for k, v in hot.items() if v[0] is call]:
            del hot[key]
        for ep in call.endpoints:
            lst = self._media.get((ep.addr, ep.port))
            if lst and cid in lst:
                lst.remove(cid)
                if not lst:
                    del self._media[(ep.addr, ep.port)]
        cdr = call.to_cdr(self.config.id_sensor, extra_flags=cdrflags.SAVE_FLAGS | self.config.cdr_save_flags,
                          ignore_duration_after_bye_confirmed=self.config.ignore_duration_after_bye_confirmed)
        if self.on_call_closed is not None:
            self.on_call_closed(call, cdr)
        return cdr

    # ---- SIP -----------------------------------------------------------------------------------------------

    def _sip(self, msg: SipMessage, pkt: PacketLike, ts_us: int, *, report: bool) -> Call | None:
        """Apply one SIP message; return the call it belongs to (None when it belongs to none)."""
        cid = msg.call_id
        if not cid:
            self.bad_packets += 1
            return None
        call = self._calls.get(cid)
        if call is None:
            if not (msg.is_request and msg.method == "INVITE"):
                return None
            if len(self._calls) >= self.config.max_calls:
                self.bad_packets += 1
                return None
            call = Call(cid, ts_us, pkt.src, pkt.sport, pkt.dst, pkt.dport)
            call.fill_from_invite(msg)
            call.vlan = pkt.vlan
            call.invite_cseq = msg.cseq
            call.first_invite_us = ts_us
            self._calls[cid] = call
            self._order.append(cid)
        if report and self.on_call_packet is not None:
            self.on_call_packet(call, pkt, "sip")
        call.cdr_flags |= cdrflags.PROTO_TCP if pkt.proto == _TCP else cdrflags.PROTO_UDP
        from_caller = call.from_caller(pkt.src, pkt.sport)
        call.last_signal_us = max(call.last_signal_us, ts_us)
        call.check_reset_oneway(pkt.src, pkt.sport, pkt.dst, pkt.dport)
        cseq = msg.cseq
        if msg.is_request:
            self._request(call, msg, pkt, ts_us, cseq, from_caller)
        else:
            self._response(call, msg, pkt, ts_us, cseq, from_caller)
        if msg.body and b"v=0" in msg.body[:64]:
            try:
                media = parse_sdp(msg.body)
            except CallAnalysisError:
                self.bad_packets += 1
                return call
            sender_is_caller = from_caller if from_caller is not None else msg.is_request
            for m in media:
                call.cdr_flags |= cdrflags.SDP_MEDIA_FLAG.get(m.media, 0)
                if msg.cseq[1] == "INVITE" and PAYLOAD_TELEVENT in m.rtpmap.values():
                    if msg.is_request:
                        call.cdr_flags |= cdrflags.TELEVENT_EXISTS_REQUEST
                    elif 200 <= msg.status < 300:
                        call.cdr_flags |= cdrflags.TELEVENT_EXISTS_RESPONSE
            before = {(e.addr, e.port) for e in call.endpoints}
            call.add_sdp(media, sender_is_caller, ts_us)
            for e in call.endpoints:
                # Only audio is analysed: the reference keeps no RTP statistics for video by default.
                if (e.addr, e.port) not in before and e.media == "audio":
                    self._forget_hot_endpoint((e.addr, e.port))
                    lst = self._media.setdefault((e.addr, e.port), [])
                    if cid in lst:
                        lst.remove(cid)
                    lst.append(cid)
        return call

    def _forget_hot_endpoint(self, ep: tuple[bytes, int]) -> None:
        """Drop fast-path entries whose owner may change now that `ep` (re)joins _media: packets to it (found
        by destination) and packets from it (found by source when their destination is unknown)."""
        hot = self._hot
        for key in [k for k in hot if (k[2], k[3]) == ep or (k[0], k[1]) == ep]:
            del hot[key]

    def _request(self, call: Call, msg: SipMessage, pkt: PacketLike, ts_us: int, cseq: tuple[int, str],
                 from_caller: bool | None) -> None:
        method = msg.method
        ts_s = ts_us // 1_000_000
        timers = call.timers
        if method == "INVITE":
            # Every INVITE re-opens the call: BYE, 2xx-to-BYE and auth-failure state and all deadlines go.
            call.seenbye = call.seenbye_and_ok = False
            call.seenbye_us = call.seenbye_and_ok_us = 0
            timers.bye_ok_us = timers.auth_failed_us = 0
            timers.clear()
            self._update_cutoff(call)
            call.invite_cseqs.add(cseq)
            if from_caller is not False:
                call.invite_addrs.add((pkt.src, pkt.sport, pkt.dst, pkt.dport))
            to = parse_name_addr(msg.header("to"))
            if cseq != call.invite_cseq and to.tag:
                call.in_dialog_cseqs.add(cseq)
            call.invites.note_invite(pkt.src, pkt.sport, pkt.dst, pkt.dport, ts_us,
                                     cseq != call.invite_cseq and bool(to.tag), to.user, via_branch(msg),
                                     (call.sipcallerip, call.sipcallerport), (call.sipcalledip, call.sipcalledport))
            if ts_us != call.first_packet_us or cseq != call.invite_cseq:
                call.siphistory.append(CdrSipHistoryRow(ts_us - call.first_packet_us, "INVITE", None, None))
        elif method == "CANCEL":
            # A CANCEL counts as a "487 Request Terminated CANCEL" response under the usual rules; a later
            # 48x may replace it, other final responses may not.
            call.cancel_lsr487 = True
            call.update_last_response(487, "487 Request Terminated CANCEL", cseq)
            call.cancel_cseq = cseq
            timers.destroy_at = ts_s + (0 if self.config.quick_save_cdr == 2 else 1 if self.config.quick_save_cdr else 10)
            call.siphistory.append(CdrSipHistoryRow(ts_us - call.first_packet_us, "CANCEL", None, None))
        elif method == "BYE":
            call.bye_cseqs.add(cseq)
            timers.destroy_at = ts_s + 60
            timers.destroy_at_bye = ts_s + self.config.bye_timeout
            if not call.seenbye:
                call.seenbye_us = ts_us
            call.seenbye = True
            if from_caller is True:
                call.whohanged = 0
            elif from_caller is False:
                call.whohanged = 1
            call.siphistory.append(CdrSipHistoryRow(ts_us - call.first_packet_us, "BYE", None, None))

    def _response(self, call: Call, msg: SipMessage, pkt: PacketLike, ts_us: int, cseq: tuple[int, str],
                  from_caller: bool | None) -> None:
        code = msg.status
        # The reference applies the lastSIPresponse rules before this response's own effects (2xx, 18x).
        call.update_last_response(code, msg.response_line, cseq)
        if cseq[1] == "INVITE" and call.first_invite_us:
            if code == 100 and not call.first_response_100_us:
                call.first_response_100_us = ts_us
            elif code > 100 and not call.first_response_xxx_us:
                call.first_response_xxx_us = ts_us
        if cseq[1] == "INVITE" and from_caller is False:
            server = msg.header("server") or msg.header("user-agent")
            if server:
                call.b_ua = server
        timers = call.timers
        ts_s = ts_us // 1_000_000
        if 200 <= code < 300:
            call.seen_res2xx = True
            if cseq[1] == "BYE" and cseq in call.bye_cseqs:
                call.seenbye_and_ok = True
                if not call.seenbye_and_ok_us:
                    call.seenbye_and_ok_us = ts_us
                timers.bye_ok_permanent = True
                if not timers.bye_ok_us:
                    timers.bye_ok_us = ts_us
                    self._update_cutoff(call)
                quick = self.config.quick_save_cdr
                timers.destroy_at = ts_s + (0 if quick == 2 else 1 if quick else 5)
                timers.destroy_at_bye_confirmed = ts_s + self.config.bye_confirmed_timeout
                if from_caller is True:
                    call.whohanged = 1
                elif from_caller is False:
                    call.whohanged = 0
            else:
                call.seen_res2xx_no_bye = True
                if not call.progress_time_us:
                    call.progress_time_us = ts_us
            if cseq[1] == "INVITE" and cseq in call.invite_cseqs:
                call.invites.confirm(pkt.src, pkt.sport, pkt.dst, pkt.dport)
                call.seeninviteok = True
                timers.bye_ok_permanent = False
                if not call.connect_time_us:
                    call.connect_time_us = ts_us
        elif 180 <= code < 190:
            call.seen_res18x = True
            if not call.progress_time_us:
                call.progress_time_us = ts_us
            timers.clear()
        elif code >= 300 and cseq[1] == "INVITE":
            delay = final_response_delay(code, self.config.response_default_timeout,
                                         self.config.redirect_response_300_timeout, timers.bye_ok_permanent,
                                         cseq not in call.in_dialog_cseqs)
            if delay is not None:
                timers.destroy_at = ts_s + delay
            if code == 403:
                timers.auth_failed_us = ts_us
                self._update_cutoff(call)

    def _update_cutoff(self, call: Call) -> None:
        call.timers.update_cutoff(self.config.ignore_rtp_after_bye_confirmed, self.config.ignore_rtp_after_auth_failed)

    # ---- RTP / RTCP ----------------------------------------------------------------------------------------

    def _media_packet(self, pkt: PacketLike, ts_us: int) -> None:
        # The per-packet hot path of an RTP-heavy capture: header checks inline, statistics in the stream
        # class (the C kernel called directly, or the Python model).
        dst, dport = pkt.dst, pkt.dport
        cids = self._media.get((dst, dport))
        data = pkt.payload
        n = len(data)
        rtcp = n >= 8 and data[0] >> 6 == 2 and 192 <= data[1] <= 223
        by_dest = True
        if not cids:
            if rtcp:
                rtcp_cids = self._media.get((dst, dport - 1))
                call = self._calls.get(rtcp_cids[-1]) if rtcp_cids else None
                if call is not None and not (call.timers.rtp_cutoff_us and ts_us > call.timers.rtp_cutoff_us):
                    call.last_rtcp_us = max(call.last_rtcp_us, ts_us)
                    call.cdr_flags |= cdrflags.RTCP_EXISTS
                    if self.on_call_packet is not None:
                        self.on_call_packet(call, pkt, "rtcp")
                return
            # As the reference: a packet whose destination no SDP announced still belongs to the call whose
            # SDP announced its source (e.g. AudioCodes media records, where the device side is 0.0.0.0).
            cids = self._media.get((pkt.src, pkt.sport))
            if not cids:
                return
            by_dest = False
        call = self._calls[cids[-1]]  # a call leaves _media when it closes
        cutoff = call.timers.rtp_cutoff_us
        if cutoff and ts_us > cutoff:
            return  # after the 2xx to BYE or a 403: the reference no longer attributes media to the call
        if rtcp:
            # RTCP multiplexed on the RTP port (RFC 5761): kept with the call, no RTP statistics.
            call.cdr_flags |= cdrflags.RTCP_EXISTS
            if self.on_call_packet is not None:
                self.on_call_packet(call, pkt, "rtcp")
            return
        # What cannot be RTP (rtp.parse_rtp_header returns None): short, not version 2, cut extension header.
        if n < 12:
            return
        b0 = data[0]
        if b0 >> 6 != 2 or (b0 & 0x10 and n < 16 + (b0 & 0x0F) * 4):
            return
        src, sport = pkt.src, pkt.sport
        key = (src, sport, dst, dport, int.from_bytes(data[8:12], "big"))
        stream = call.streams.get(key)
        if stream is None:
            if by_dest:
                ep = call.endpoint_for(dst, dport)
                if ep is None:
                    return
                iscaller, ptime = ep.iscaller, call.sender_ptime(src, sport, ep.iscaller)
            else:
                # Found by its source: that endpoint is the sender's own SDP address, so the direction is the
                # opposite of the endpoint's and its a=ptime is the sender's.
                ep = call.endpoint_for(src, sport)
                if ep is None:
                    return
                iscaller, ptime = not ep.iscaller, ep.ptime
            stream = self._stream_class(src, sport, dst, dport, key[4], iscaller, ptime, ep.rtpmap,
                                        call.rtpmap_for(not ep.iscaller))
            call.streams[key] = stream
        self._hot[(src, sport, dst, dport, data[8:12])] = (call, stream, stream._s if self._kread else None)
        if self.on_call_packet is not None:
            self.on_call_packet(call, pkt, "rtp")
        kread = self._kread
        if kread is not None and not call.forcemark_times:
            r = kread(stream._s, ts_us, pkt.ttl, data, n, self._knull, 0, call.connect_time_us != 0)
            if r < -1:
                raise MemoryError("RTP kernel: jitter-buffer allocation failed")
            counted = r > 0
        else:
            counted = stream.feed(ts_us, pkt.ttl, data, call.forcemark_times, call.connect_time_us != 0)
        if counted:
            self._rtp_counted(call, stream.iscaller, ts_us)

    @staticmethod
    def _rtp_counted(call: Call, iscaller: bool, ts_us: int) -> None:
        if not call.first_rtp_time_us:
            call.first_rtp_time_us = ts_us
        if ts_us > call.last_rtp_us:
            call.last_rtp_us = ts_us
        if iscaller:
            call.last_rtp_a_us = ts_us
        else:
            call.last_rtp_b_us = ts_us
