"""Per-stream RTP statistics computed the way the reference sniffer computes them.

The model follows the reference's RTP reader (counting, loss, jitter, delay and ptime paths), re-expressed:

* Sequence tracking is RFC 3550 appendix A.1 with the reference's twists: the first packet only initialises,
  probation is two in-order packets, so `received` starts counting at the third packet. The CDR adds those two
  back (`received_cdr`).
* Jitter is the RFC 3550 estimator J += (|D| - J)/16 in milliseconds, where D compares arrival spacing with
  RTP timestamp spacing of consecutive voice packets. The average is a running mean over `received`, updated
  once per counted packet after the first (so the first counted packet contributes a zero).
* Loss is the gap between expected and received after each counted packet; each increase adds one burst of
  that length to `slost` (1..9, 10 = ten or more); each decrease counts as reordered.
* Delay buckets d50..d300 count packets whose |D| (ms, truncated) falls in each range.
* MOS follows the reference's interval scheme (10 s intervals, evaluated 20 packets later, minimum starting at
  4.5) with its E-model for G.711 with PLC. Each of the three figures has its own loss histogram, filled by
  a simulated receiver (`vmproto.sensor.calls.jitter`: fixed 50 ms, fixed 200 ms, adaptive), so frames that
  arrive too late for that receiver count as lost there and not in the others.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field

from vmproto.sensor.calls.jitter import PlayoutChannel, new_mos_channels

__all__ = ["RtpHeader", "parse_rtp_header", "RtpStream", "PAYLOAD_TELEVENT", "is_rtcp"]

PAYLOAD_TELEVENT = 400
_PCMU, _GSM, _G723, _PCMA, _G722, _G729, _ILBC = 0, 3, 4, 8, 9, 18, 97
_MIN_SEQUENTIAL = 2
_MAX_DROPOUT = 3000
_MAX_MISORDER = 100
_SEQ_MOD = 1 << 16
_VOICE, _DTMF = 1, 2
_MOS_INTERVAL_MS = 10_000
_MOS_WAIT_PACKETS = 20
#: The reference's sample rate per codec number (codecs not listed run at 8 kHz).
_SAMPLERATE = {303: 12000, 313: 12000, 339: 12000, 345: 12000, 332: 12000,
               307: 16000, 304: 16000, 314: 16000, 340: 16000, 346: 16000, 333: 16000, 321: 16000, 359: 16000,
               305: 24000, 315: 24000, 341: 24000, 347: 24000, 334: 24000,
               308: 32000, 335: 32000, 316: 48000, 342: 48000, 348: 48000, 336: 48000}


def _f32(x: float) -> float:
    """Round to IEEE single precision (the reference keeps avg_ptime in a float)."""
    return struct.unpack("<f", struct.pack("<f", x))[0]


@dataclass(slots=True, frozen=True)
class RtpHeader:
    """The RTP fixed header fields and the payload length after CSRC, extension and padding."""

    version: int
    padding_len: int
    marker: bool
    payload_type: int
    seq: int
    timestamp: int
    ssrc: int
    payload_len: int
    first_payload_byte: int


def parse_rtp_header(data: bytes) -> RtpHeader | None:
    """Return the RTP header of a UDP payload, or None when it cannot be RTP (too short, version != 2)."""
    if len(data) < 12:
        return None
    b0, b1, seq, ts, ssrc = struct.unpack_from("!BBHII", data)
    if b0 >> 6 != 2:
        return None
    off = 12 + (b0 & 0x0F) * 4
    if b0 & 0x10:
        if len(data) < off + 4:
            return None
        off += 4 + struct.unpack_from("!H", data, off + 2)[0] * 4
    pad = data[-1] if (b0 & 0x20) and len(data) > off else 0
    plen = len(data) - off - pad
    first = data[off] if 0 <= off < len(data) else 0
    return RtpHeader(2, pad, bool(b1 & 0x80), b1 & 0x7F, seq, ts, ssrc, plen, first)


def is_rtcp(data: bytes) -> bool:
    """Return True when `data` looks like an RTCP compound packet (version 2, PT 192..223)."""
    return len(data) >= 8 and data[0] >> 6 == 2 and 192 <= data[1] <= 223


def _mos_g711(ppl: float, burstr: float) -> float:
    """The reference's E-model curve for G.711 with packet-loss concealment, MOS 1..4.5."""
    if ppl == 0 or burstr == 0:
        return 4.5
    if ppl > 0.5:
        return 1.0
    bpl = 17.2647
    r = 93.2062077233 - 95.0 * (ppl * 100 / (ppl * 100 / burstr + bpl))
    mos = 2.06405 + 0.031738 * r - 0.000356641 * r * r + 2.93143e-6 * r * r * r
    return min(4.5, max(1.0, mos))


@dataclass(slots=True)
class _MosChannel:
    """Loss-burst histogram of one MOS model and its interval bookkeeping."""

    loss: list[int] = field(default_factory=lambda: [0] * 128)  # shared with the PlayoutChannel
    last_loss: list[int] = field(default_factory=lambda: [0] * 128)
    last_received: int = 0
    minimum: int = 45
    average: float = 0.0

    def interval_mos(self, received: int, connected: bool) -> int:
        lost = bursts = 0
        for i in range(128):
            d = self.loss[i] - self.last_loss[i]
            lost += i * d
            bursts += d
        received2 = received - self.last_received
        self.last_received = received
        self.last_loss = list(self.loss)
        if lost < 5:
            return 45
        burstr = 0.0
        if received > 0 and bursts > 0:
            if received2:
                # lost == received2 gives 1/0: the reference's C arithmetic yields inf there (burstr 0 -> 1).
                denom = 1.0 - lost / received2
                burstr = (lost / bursts) / (1.0 / denom) if denom else 0.0
            burstr = -burstr if burstr < 0 else max(burstr, 1.0)
        lossr = lost / received2 if received > 0 and received2 else 0.0
        if not connected and received < 100:
            return 45
        return int(math.floor(_mos_g711(lossr, burstr) * 10 + 0.5))


class RtpStream:
    """One RTP stream: (source, destination, SSRC) within a call.

    `iscaller` is True when the caller sends it. `rtpmap_own`/`rtpmap_other` map dynamic payload types to
    codec numbers (from the SDP the stream's destination announced, then the other side's).
    """

    def __init__(self, saddr: bytes, sport: int, daddr: bytes, dport: int, ssrc: int, iscaller: bool,
                 sdp_ptime: int = 0, rtpmap_own: dict[int, int] | None = None,
                 rtpmap_other: dict[int, int] | None = None) -> None:
        self.saddr, self.sport, self.daddr, self.dport, self.ssrc = saddr, sport, daddr, dport, ssrc
        self.iscaller = iscaller
        self.sdp_ptime = sdp_ptime
        self.rtpmap_own = rtpmap_own or {}
        self.rtpmap_other = rtpmap_other or {}
        self.first_time_us = 0
        self.last_time_us = 0
        self.ttl_min = -1
        self.ttl_max = -1
        self.ttl_sum = 0
        self.ttl_count = 0
        self.codec = -1
        self.first_codec = -1
        self.prev_payload = -1
        self.prev_codec = -1
        self.last_seq = -1
        self.last_markbit = False
        self.lastframetype = 0
        self.samplerate = 8000
        # RFC 3550 source state
        self._first = True
        self.base_seq = 0
        self.max_seq = 0
        self.bad_seq = 0
        self.cycles = 0
        self.s_received = 0
        self.probation = 0
        # statistics the CDR reports
        self.received = 0
        self.lost = 0
        self.last_lost = 0
        self.slost = [0] * 11
        self.reordered = 0
        self.delay = {50: 0, 70: 0, 90: 0, 120: 0, 150: 0, 200: 0, 300: 0}
        self.avgjitter = 0.0
        self.maxjitter = 0.0
        self._prevjitter = 0.0
        self._fdelay = 0.0
        self._avgdelay = 0.0
        self._avgdelays = [0.0] * 30
        self._counter = 0
        self._lvf_ts_us = 0
        self._lvf_timestamp = 0
        self._forcemark2 = False
        self.forcemark_used = 0
        # packetization
        self.packetization = 0
        self._last_packetization = 0
        self._default_packetization = 20
        self._ptime_iter = 0
        self._change_ptime_iter = 0
        self._last_ts = 0
        self._sid = False
        self._prev_sid = False
        self.avg_ptime = 0.0
        self._avg_ptime_count = 0
        # MOS: three simulated receivers (F1, F2, adaptive), each filling its own loss-burst histogram
        self.playout: tuple[PlayoutChannel, ...] = new_mos_channels()
        self.mos = [_MosChannel(loss=ch.loss) for ch in self.playout]
        self._lastcng = False
        self._last_stamp = 0
        self._timestamp = 0
        self._mos_time_ms = 0
        self._last_save_mos_ms = 0
        self._save_mos_wait = 0

    # ---- reading ---------------------------------------------------------------------------------------

    def feed(self, ts_us: int, ttl: int, data: bytes, forcemark_times: list[int], connected: bool) -> bool:
        """Account one UDP payload of this stream; return False when the reference would ignore it (or it is
        not RTP). The same entry point as the C kernel's `KernelRtpStream.feed`."""
        hdr = parse_rtp_header(data)
        if hdr is None:
            return False
        return self.read(ts_us, ttl, hdr, forcemark_times, connected)

    def refresh_rtpmap(self) -> None:
        """Nothing to do: `rtpmap_own` is read live (the C kernel copies it)."""

    def loss_histogram(self, channel: int) -> list[int]:
        """The loss-burst histogram of MOS receiver `channel` (0 F1, 1 F2, 2 adaptive)."""
        return list(self.playout[channel].loss)

    def read(self, ts_us: int, ttl: int, hdr: RtpHeader, forcemark_times: list[int], connected: bool) -> bool:
        """Account one packet of this stream; return False when the reference would ignore it."""
        if self.ttl_min < 0 or ttl < self.ttl_min:
            self.ttl_min = ttl
        if ttl > self.ttl_max:
            self.ttl_max = ttl
        self.ttl_sum += ttl
        self.ttl_count += 1
        if self.last_time_us and ts_us < self.last_time_us - 50_000:
            return False
        if not self.first_time_us:
            self.first_time_us = ts_us
        self.last_time_us = ts_us
        forcemark_by_owner = False
        while self.forcemark_used < len(forcemark_times) and forcemark_times[self.forcemark_used] < ts_us:
            if forcemark_times[self.forcemark_used] > self.first_time_us:
                forcemark_by_owner = True
            self.forcemark_used += 1
        if hdr.payload_len < 0:
            return False
        self._timestamp = hdr.timestamp
        seq = hdr.seq
        if seq == self.last_seq and not (not self.last_markbit and hdr.marker):
            return False
        self.last_markbit = hdr.marker
        cur = hdr.payload_type
        if self.codec == -1 or cur != self.prev_payload:
            if 96 <= cur <= 127:
                codec = self.rtpmap_own.get(cur, self.rtpmap_other.get(cur, -1))
                if codec == -1 and cur == 101:
                    codec = PAYLOAD_TELEVENT
                if codec != -1:
                    self.codec = codec
            else:
                self.codec = cur
            if self.codec == -1:
                return False
        codec = self.codec
        if self.last_seq != -1 and (self.last_seq + 1) & 0xFFFF != seq:
            rate_ms = self.samplerate // 1000
            if self._last_stamp == (hdr.timestamp - rate_ms * self.packetization) & 0xFFFFFFFF:
                # A sequence gap whose timestamp says nothing is missing: a restarted sender, not loss.
                self._restart_playout()
            else:
                self._last_stamp = (hdr.timestamp - rate_ms * self.packetization) & 0xFFFFFFFF
        if hdr.marker:
            self._rebase(seq)
        if self.lastframetype == _DTMF and codec != PAYLOAD_TELEVENT:
            self._restart_playout()
        if cur in (13, 19):
            self._lastcng = True
            return self._short_path(seq, ts_us, hdr, _VOICE, set_prev=True)
        if cur == _G729 and (hdr.payload_len <= (9 if self.packetization in (10, 0) else 12)
                             or hdr.payload_len + hdr.padding_len in (22, 32)):
            self._lastcng = True
            return self._short_path(seq, ts_us, hdr, _VOICE, set_prev=False)
        if codec == PAYLOAD_TELEVENT:
            self._lastcng = False
            return self._short_path(seq, ts_us, hdr, _DTMF, set_prev=True)
        if forcemark_by_owner:
            # A re-INVITE restarts the receivers: a gap across it is not loss.
            self._restart_playout()
            self._rebase(seq)
        if cur != self.prev_payload and codec not in (13, 19) and self.prev_codec not in (13, 19):
            self.samplerate = _SAMPLERATE.get(codec, 8000)
        if self.first_codec < 0 and codec not in (PAYLOAD_TELEVENT, 13, 19):
            self.first_codec = codec
        if self._update_packetization(seq, cur, codec, hdr):
            self._play(ts_us, seq, cur, hdr)
        self.prev_payload = cur
        self.prev_codec = codec
        self._prev_sid = self._sid
        self._last_ts = 0 if hdr.marker else hdr.timestamp
        if self._update_seq(seq, ts_us):
            self._update_stats(ts_us, hdr.timestamp, hdr.marker)
        self.lastframetype = _VOICE
        self._lastcng = False
        self.last_seq = seq
        if self.packetization > 0:
            self._avg_ptime_count += 1
            n = self._avg_ptime_count
            self.avg_ptime = _f32((self.avg_ptime * (n - 1) + self.packetization) / n)
        self._mos_tick(connected)
        if forcemark_by_owner:
            self._forcemark2 = True
        return True

    def _restart_playout(self) -> None:
        for ch in self.playout:
            ch.destroy()

    def _play(self, ts_us: int, seq: int, cur: int, hdr: RtpHeader) -> None:
        """Feed one voice packet to the three simulated receivers (before this packet's state updates)."""
        ptime = self.packetization
        if ptime <= 1:
            return
        div = _SAMPLERATE.get(self.codec, 8000) // 1000
        marker = hdr.marker or self._lastcng or self.lastframetype == _DTMF
        after_voice = self.lastframetype == _VOICE
        frame_ts = hdr.timestamp // div
        prev_ts = self._last_ts // div
        sid = cur == _G723 and bool(hdr.first_payload_byte & 2)
        for ch in self.playout:
            if sid and ch.created:
                continue  # G.723 silence descriptors are not played once a receiver runs
            ch.packet(ts_us, frame_ts, prev_ts, seq, self.last_seq, marker, after_voice, ptime)

    def _rebase(self, seq: int) -> None:
        self.cycles = self.cycles - self.base_seq + self.max_seq
        self.base_seq = seq
        self.max_seq = seq

    def _short_path(self, seq: int, ts_us: int, hdr: RtpHeader, frametype: int, set_prev: bool) -> bool:
        self.last_seq = seq
        if self._update_seq(seq, ts_us):
            self._update_stats(ts_us, hdr.timestamp, hdr.marker)
        if set_prev:
            self.prev_payload = hdr.payload_type
            self.prev_codec = self.codec
        self.lastframetype = frametype
        return True

    def _update_packetization(self, seq: int, cur: int, codec: int, hdr: RtpHeader) -> bool:
        """Update the packetization estimate; return True when the reference plays this packet through its
        simulated receivers (once the estimate is usable)."""
        plen = hdr.payload_len
        consecutive = self._last_ts != 0 and seq == (self.last_seq + 1) & 0xFFFF
        ts_delta = (hdr.timestamp - self._last_ts) & 0xFFFFFFFF
        rate_ms = self.samplerate // 1000
        if self._ptime_iter in (0, 1):
            if cur == _G723:
                self._default_packetization = 30
                self._sid = bool(hdr.first_payload_byte & 2)
            elif codec in (320, 321, 359):
                self._sid = plen == 7
            else:
                self._sid = False
                self._default_packetization = 20
        if self._ptime_iter == 0:
            if consecutive and self.prev_codec != PAYLOAD_TELEVENT and not self._sid and not self._prev_sid:
                p = self._ptime_from_payload(cur, codec, plen, ts_delta, rate_ms)
                self.packetization = p
                if p > 0:
                    self._last_packetization = p
                    self._ptime_iter += 1
            if cur in (_PCMU, _PCMA, _GSM, _G722, _G723):
                if cur in (_PCMU, _PCMA, _G722):
                    ap = plen // 8
                elif cur == _GSM:
                    ap = plen // 33 * 20
                else:
                    ap = {24: 30, 48: 60, 72: 90}.get(plen, 0)
                self.packetization = self._default_packetization = ap
                if ap >= 10:
                    self._ptime_iter = 10
                    return True
            return False
        elif self._ptime_iter == 1:
            if consecutive and self.prev_codec != PAYLOAD_TELEVENT and not self._sid and not self._prev_sid:
                if cur == _G729:
                    p = self._g729_ptime(plen, ts_delta)
                elif codec == _ILBC:
                    p = 30 * plen // 50 if plen % 50 == 0 else self._default_packetization
                else:
                    p = ts_delta // rate_ms if rate_ms else 0
                p = (p + self._last_packetization) // 2
                self.packetization = p
                if p <= 0 or hdr.marker:
                    self._ptime_iter = 0
                    return False
                self._ptime_iter += 1
                return True
            self._ptime_iter = 0
            return False
        else:
            if consecutive and not hdr.marker:
                if cur == _G729:
                    cp = self._g729_ptime(plen, ts_delta)
                elif codec == _ILBC:
                    cp = 30 * plen // 50 if plen % 50 == 0 else self._default_packetization
                elif cur == _G723:
                    cp = self._last_packetization if hdr.first_payload_byte & 2 else {24: 30, 48: 60, 72: 90}.get(plen, 0)
                elif cur in (_PCMU, _PCMA, _G722):
                    cp = plen // 8 if plen // 8 >= 20 else 0
                elif cur == _GSM:
                    cp = plen // 33 * 20
                elif codec in (320, 321, 359):
                    cp = ts_delta // (8 if codec == 320 else 16) if plen > 7 else self.packetization
                else:
                    cp = ts_delta // rate_ms if rate_ms else 0
                if cp < 10:
                    cp = self._default_packetization
                if cp != self.packetization and cp % 10 == 0 and 10 <= cp <= 120:
                    self._change_ptime_iter += 1
                else:
                    self._change_ptime_iter = 0
                if self._change_ptime_iter > 1:
                    self.packetization = self._last_packetization = cp
                    self._change_ptime_iter = 0
            if cur == _G723:
                self.packetization = {24: 30, 48: 60, 72: 90}.get(plen, self.packetization)
        return True

    @staticmethod
    def _g729_ptime(plen: int, ts_delta: int) -> int:
        return plen if plen in (10, 20, 30, 40, 50, 60) else ts_delta // 8

    def _ptime_from_payload(self, cur: int, codec: int, plen: int, ts_delta: int, rate_ms: int) -> int:
        if cur == _G729:
            return self._g729_ptime(plen, ts_delta)
        if cur == _G723:
            return {24: 30, 48: 60, 72: 90}.get(plen, self.packetization)
        if codec == _ILBC:
            return 30 * plen // 50 if plen % 50 == 0 else (ts_delta // rate_ms if rate_ms else 0)
        return ts_delta // rate_ms if rate_ms else 0

    # ---- RFC 3550 sequence state --------------------------------------------------------------------------

    def _init_seq(self, seq: int) -> None:
        self.base_seq = seq
        self.max_seq = seq
        self.bad_seq = _SEQ_MOD + 1
        self.cycles = 0
        self.s_received = 0
        self._fdelay = 0.0
        self._prevjitter = 0.0

    def _update_seq(self, seq: int, ts_us: int) -> bool:
        lost = (self.cycles + seq - (self.base_seq + 1)) - self.s_received
        if lost - self.last_lost > 200 and abs(int((ts_us - self._lvf_ts_us) / 1000.0)) < 1000:
            # A jump this big within a second is a sequence reset without a marker, not loss.
            self._rebase(seq)
        if self._first:
            self._first = False
            self._last_stamp = self._timestamp
            self._init_seq(seq)
            self.max_seq = (seq - 1) & 0xFFFF
            self.probation = _MIN_SEQUENTIAL
            return False
        udelta = (seq - self.max_seq) & 0xFFFF
        if self.probation:
            if seq == self.max_seq + 1:
                self.probation -= 1
                self.max_seq = seq
                if self.probation == 0:
                    self._init_seq(seq)
                    self.s_received += 1
                    self.received += 1
                    return True
            else:
                self.probation = _MIN_SEQUENTIAL - 1
                self.max_seq = seq
            return False
        if udelta < _MAX_DROPOUT:
            if seq < self.max_seq:
                self.cycles += _SEQ_MOD
            self.max_seq = seq
        elif udelta <= _SEQ_MOD - _MAX_MISORDER:
            if seq == self.bad_seq:
                self._init_seq(seq)
            else:
                self.bad_seq = (seq + 1) & (_SEQ_MOD - 1)
                return False
        self.received += 1
        self.s_received += 1
        return True

    def _update_stats(self, ts_us: int, timestamp: int, marker: bool) -> None:
        lost = (self.cycles + self.max_seq - (self.base_seq + 1)) - self.s_received
        if lost < 0:
            self.cycles += -lost
            lost = 0
        adelay = 0
        tsdiff_ms = (ts_us - self._lvf_ts_us) / 1000.0
        transit = tsdiff_ms - (timestamp - self._lvf_timestamp) / (self.samplerate / 1000.0)
        if self.codec == PAYLOAD_TELEVENT or self.lastframetype == _DTMF:
            if self.codec != PAYLOAD_TELEVENT and self._lvf_ts_us == 0:
                # First voice packet after DTMF: it only anchors the delay clock (a pending re-INVITE mark
                # stays for the next packet, as in the reference).
                self._lvf_ts_us = ts_us
                self._lvf_timestamp = timestamp
                return
            self._forcemark2 = False
            return
        if abs(int(transit)) > 5000:
            # Timestamp skew (e.g. a new talk spurt clock): the reference drops this delay sample.
            self._fdelay = self._avgdelay
            transit = 0.0
        else:
            adelay = abs(int(transit))
            self._fdelay += transit
        if self._lvf_ts_us == 0:
            self._lvf_ts_us = ts_us
            self._lvf_timestamp = timestamp
            self._forcemark2 = False
            return
        self._lvf_ts_us = ts_us
        self._lvf_timestamp = timestamp
        n = self._counter
        if n > 30:
            self._avgdelay = (30 * self._avgdelay - self._avgdelays[n % 30] + self._fdelay) / 30
        else:
            self._avgdelay = (self._avgdelay * n + self._fdelay) / (n + 1)
        self._avgdelays[n % 30] = self._fdelay
        jitter = self._prevjitter + (abs(transit) - self._prevjitter) / 16.0
        self._prevjitter = jitter
        self._counter += 1
        self.avgjitter = (self.avgjitter * (self.received - 1) + jitter) / self.received
        if self.maxjitter < jitter:
            self.maxjitter = jitter
        self._last_stamp = timestamp
        if self._forcemark2:
            self.last_lost = lost
        else:
            if lost > self.last_lost:
                burst = lost - self.last_lost
                self.slost[burst if burst < 10 else 10] += 1
            elif lost < self.last_lost:
                self.reordered += self.last_lost - lost
            if lost >= self.last_lost or self.lost >= self.last_lost - lost:
                self.lost += lost - self.last_lost
            else:
                self.lost = 0
            self.last_lost = lost
            for limit, nxt in ((50, 70), (70, 90), (90, 120), (120, 150), (150, 200), (200, 300)):
                if limit <= adelay < nxt:
                    self.delay[limit] += 1
                    break
            else:
                if adelay >= 300:
                    self.delay[300] += 1
        self._forcemark2 = False

    # ---- MOS ------------------------------------------------------------------------------------------------

    def _mos_tick(self, connected: bool) -> None:
        first_ms = self.first_time_us // 1000
        last_ms = self.last_time_us // 1000
        ref = self._last_save_mos_ms or first_ms
        if ref + _MOS_INTERVAL_MS < last_ms or self._save_mos_wait > 0:
            if not self._save_mos_wait:
                self._save_mos_wait = _MOS_WAIT_PACKETS
                self._last_save_mos_ms = last_ms
            else:
                self._save_mos_wait -= 1
                if not self._save_mos_wait:
                    self.save_mos(connected)

    def save_mos(self, connected: bool) -> None:
        """Close a MOS interval: update the minimum and the time-weighted average of each model."""
        new_ms = (self.last_time_us - self.first_time_us) // 1000
        diff_ms = new_ms - self._mos_time_ms if self._mos_time_ms else 0
        for ch in self.mos:
            value = ch.interval_mos(self.received, connected)
            ch.minimum = min(ch.minimum, value)
            if self._mos_time_ms and new_ms:
                ch.average = (ch.average * self._mos_time_ms + value * diff_ms) / new_ms
            else:
                ch.average = float(value)
        self._mos_time_ms = new_ms

    def finalize_mos(self, connected: bool) -> None:
        """Close the pending MOS interval at the end of the stream (none closed yet, or one waiting)."""
        if self._save_mos_wait or not self._mos_time_ms:
            self.save_mos(connected)

    # ---- results --------------------------------------------------------------------------------------------

    @property
    def received_cdr(self) -> int:
        """Packets as the CDR reports them (the two probation packets added back once a codec is known)."""
        return self.received + (2 if self.first_codec >= 0 else 0)

    @property
    def rtp_ptime(self) -> int:
        return int(math.floor(self.avg_ptime + 0.5))
