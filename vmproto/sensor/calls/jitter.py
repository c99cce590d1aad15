"""Jitter-buffer simulations behind the reference's three MOS figures (F1, F2, adaptive).

The reference plays every voice packet of a stream through three simulated receivers and counts the frames
each would have had to conceal; those loss bursts, not the sequence gaps, feed its E-model. This module
re-expresses that model:

* `FixedBuffer`: a constant-delay playout buffer (F1: 50 ms delay, resync threshold 100 ms; F2: 200/200).
  A frame whose playout time is already past on arrival is discarded (and counts as lost) unless the
  buffer decides the stream jumped and resynchronises to it.
* `AdaptiveBuffer`: a delay that follows the 97th-percentile spread of the last 500 arrival delays plus
  40 ms (at most 500 ms), growing by one frame at a time and shrinking slowly, with a silence mode after
  ten concealed frames in a row.
* `PlayoutChannel`: the clock that drives a buffer. Packet arrival times advance a playout clock in
  `ptime` steps; each step takes one frame out. A concealed or dropped step lengthens the current loss
  burst; the next real frame closes the burst into `loss[len]` unless the stream itself explains the gap
  (marker bit, DTMF before it, or no sequence gap but a timestamp jump).

All times are integer milliseconds, frame timestamps are RTP timestamps divided by the clock rate in kHz,
as in the reference. Nothing here allocates per frame beyond a small tuple.
"""

from __future__ import annotations

from bisect import bisect_right, insort

__all__ = ["FixedBuffer", "AdaptiveBuffer", "PlayoutChannel", "new_mos_channels", "LOSS_BUCKETS"]

LOSS_BUCKETS = 128
#: A burst this long or longer is treated as a pause, not loss (`ignore_mos_degradation_for_contiguous_...`).
MAX_COUNTED_BURST = 1024
#: A step of at least this many ms with no sequence gap and an exact ptime timestamp step is a pause
#: (`ignore_mos_degradation_in_rtp_pause_without_seq_gap`, 1000 ms).
PAUSE_WITHOUT_GAP_MS = 1000

OK, DROP, INTERP, NOFRAME = 0, 1, 2, 3
_NEVER = 2_147_483_647  # "buffer empty" answer of the adaptive buffer's next()


class Frame:
    """One voice frame in a buffer: RTP time (ms), length (ms), sequence number, marker and the frame type
    of the packet before it (True when that was voice)."""

    __slots__ = ("ts", "ms", "seq", "marker", "after_voice")

    def __init__(self, ts: int, ms: int, seq: int, marker: bool, after_voice: bool) -> None:
        self.ts, self.ms, self.seq, self.marker, self.after_voice = ts, ms, seq, marker, after_voice


# ---- fixed -------------------------------------------------------------------------------------------------


class FixedBuffer:
    """Constant-delay playout buffer. `chan` receives late-frame loss counts (its `burst`)."""

    __slots__ = ("delay", "threshold", "chan", "frames", "rxcore", "next_delivery", "force", "skew_sum",
                 "skew_n")

    def __init__(self, delay: int, threshold: int, chan: PlayoutChannel) -> None:
        self.delay, self.threshold, self.chan = delay, threshold, chan
        self.frames: list[list] = []  # [delivery, ts, ms, frame], sorted by delivery
        self.rxcore = 0
        self.next_delivery = 0
        self.force = False
        self.skew_sum = 0
        self.skew_n = 0

    def put_first(self, f: Frame, now: int, marker: bool) -> int:
        self.rxcore = now - f.ts
        self.next_delivery = now + self.delay
        return self.put(f, now, marker)

    def _flush(self) -> None:
        # Delivering everything queued moves the playout point past the last frame.
        if self.frames:
            last = self.frames[-1]
            self.next_delivery = last[0] + last[2]
            self.frames.clear()

    def _resync(self, f: Frame, now: int) -> int:
        frames = self.frames
        if not frames:
            self.force = False
            return self.put_first(f, now, False)
        tail = frames[-1]
        offset = f.ts - tail[1] - tail[2]
        if -self.threshold < offset < self.threshold:
            if not self.force:
                if self.skew_n > 10 and abs(_cdiv(self.skew_sum, self.skew_n)) > self.delay // 2:
                    self.skew_sum = self.skew_n = 0
                    self._flush()
                    return self.put_first(f, now, False)
                if offset < 0 or now - f.ts < self.rxcore - self.delay:
                    return DROP
                self._flush()
                return self.put_first(f, now, False)
            self.force = False
            if offset < 0:
                return DROP
            self._flush()
            return self.put_first(f, now, False)
        self.force = False
        self.rxcore -= offset
        for fr in frames:
            fr[1] += offset
        return self.put(f, now, False)

    def put(self, f: Frame, now: int, marker: bool) -> int:
        ts, ms = f.ts, f.ms
        delivery = self.rxcore + self.delay + ts
        self.skew_sum += ts - (now - self.rxcore)
        self.skew_n += 1
        if delivery < self.next_delivery:
            # Too late to be played: it is lost unless the resync below takes it.
            if not marker:
                self.chan.burst += 1
            res = self._resync(f, now)
            if marker:
                self.rxcore = now - ts
            return res
        frames = self.frames
        tail = frames[-1] if frames else None
        if marker and tail is not None:
            k = 4 if self.chan.prev_dtmf else 2
            if ts > tail[1] + tail[2] + tail[2] * k or ts < tail[1] + tail[2] - tail[2] * k:
                self.force = True
                return self._resync(f, now)
        if delivery > self.next_delivery + self.delay + self.threshold:
            return self._resync(f, now)
        i = len(frames)
        while i and frames[i - 1][0] > delivery:
            i -= 1
        at = frames[i - 1] if i else None
        if self.force or (at is not None and (
                at[0] == delivery or delivery + 10 < at[0] + at[2]
                or (i < len(frames) and delivery + ms > frames[i][0]))):
            res = self._resync(f, now)
            self.force = False
            return res
        self.force = False
        frames.insert(i, [delivery, ts, ms, f])
        return OK

    def get(self, now: int, interp: int) -> tuple[int, Frame | None]:
        if now < self.next_delivery:
            return NOFRAME, None
        frames = self.frames
        if not frames:
            self.next_delivery += interp
            return INTERP, None
        head = frames[0]
        if now > head[0] + head[2]:
            del frames[0]
            self.next_delivery = head[0] + head[2]
            return DROP, head[3]
        if now < head[0]:
            self.next_delivery += interp
            return INTERP, None
        del frames[0]
        self.next_delivery = head[0] + head[2]
        return OK, head[3]

    def next(self) -> int:
        return self.next_delivery

    def force_resync(self) -> None:
        self.force = True

    def empty(self) -> None:
        self.frames.clear()


def _cdiv(a: int, b: int) -> int:
    """C integer division (truncates toward zero)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


# ---- adaptive ----------------------------------------------------------------------------------------------

_HIST = 500
_DROP_PCT = 3
_MAXBUF = 20
_TARGET_EXTRA = 40
_ADJUST_DELAY = 40


class AdaptiveBuffer:
    """Adaptive playout buffer (the classic IAX2/Asterisk design) with a hard delay clamp."""

    __slots__ = ("max_jb", "threshold", "max_interp", "queue_ts", "queue", "hist", "sorted_hist",
                 "frames_in", "jitter", "min", "current", "target", "next_voice_ts", "last_voice_ms",
                 "silence_begin_ts", "last_adjustment", "last_delay", "discont", "resync_offset", "contig")

    def __init__(self, max_jb: int = 500, threshold: int = 500, max_interp: int = 10) -> None:
        self.max_jb, self.threshold, self.max_interp = max_jb, threshold, max_interp
        self.reset()

    def reset(self) -> None:
        self.queue_ts: list[int] = []
        self.queue: list[Frame] = []
        self.hist: list[int] = []          # the last <= 500 delays, oldest first
        self.sorted_hist: list[int] = []   # the same values, sorted
        self.frames_in = 0
        self.jitter = self.min = 0
        self.current = self.target = _TARGET_EXTRA
        self.next_voice_ts = 0
        self.last_voice_ms = 0
        self.silence_begin_ts = -1
        self.last_adjustment = 0
        self.last_delay = 0
        self.discont = 0
        self.resync_offset = 0
        self.contig = 0

    # history of arrival delays
    def _clear_history(self) -> None:
        self.hist.clear()
        self.sorted_hist.clear()

    def _history_put(self, ts: int, now: int) -> bool:
        """Record one arrival delay; return False when the frame must be dropped as a delay outlier."""
        delay = now - (ts - self.resync_offset)
        threshold = 2 * self.jitter + self.threshold
        if ts <= 0:
            return True
        if self.frames_in == 0:
            self.discont = 0
            self._clear_history()
            self.resync_offset = ts - now
            self.last_delay = delay = 0
        elif abs(delay - self.last_delay) > threshold:
            self.discont += 1
            if self.discont <= 3:
                return False
            self.discont = 0
            self._clear_history()
            self.resync_offset = ts - now
            self.last_delay = delay = 0
        else:
            self.last_delay = delay
            self.discont = 0
        if len(self.hist) == _HIST:
            old = self.hist.pop(0)
            del self.sorted_hist[bisect_right(self.sorted_hist, old) - 1]
        self.hist.append(delay)
        insort(self.sorted_hist, delay)
        return True

    def _history_get(self) -> None:
        s = self.sorted_hist
        n = len(s)
        if not n:
            # An empty history leaves the reference's zeroed extremes in place.
            self.min = self.jitter = 0
            return
        idx = min(n * _DROP_PCT // 100, _MAXBUF - 1)
        self.min = s[idx]
        self.jitter = s[n - 1 - idx] - s[idx]

    def put(self, f: Frame, now: int) -> int:
        q = self.queue_ts
        if (q[-1] - q[0] if q else 0) >= self.max_jb:
            return DROP
        if not self._history_put(f.ts, now):
            return DROP
        self.frames_in += 1
        rts = f.ts - self.resync_offset
        i = bisect_right(q, rts)
        q.insert(i, rts)
        self.queue.insert(i, f)
        return OK

    def _pop(self) -> tuple[int, Frame]:
        ts = self.queue_ts.pop(0)
        return ts, self.queue.pop(0)

    def get(self, now: int, interp: int) -> tuple[int, Frame | None]:
        self._history_get()
        self.target = self.jitter + self.min + _TARGET_EXTRA
        if self.max_jb and self.target - self.min > self.max_jb:
            self.target = self.min + self.max_jb
        diff = self.target - self.current
        q = self.queue_ts
        if not self.silence_begin_ts:
            if diff > 0 and (self.last_adjustment + _ADJUST_DELAY < now
                             or diff > ((q[-1] - q[0]) if q else 0)):
                self.current += interp
                self.next_voice_ts += interp
                self.last_voice_ms = interp
                self.last_adjustment = now
                self.contig += 1
                if self.max_interp and self.contig >= self.max_interp:
                    self.silence_begin_ts = self.next_voice_ts - self.current
                return INTERP, None
            frame = None
            fts = 0
            if q and self.next_voice_ts - self.current >= q[0]:
                fts, frame = self._pop()
            if frame is not None and fts + self.current < self.next_voice_ts:
                if fts + self.current > self.next_voice_ts - self.last_voice_ms:
                    self.next_voice_ts = fts + self.current + frame.ms
                    self.contig = 0
                    return OK, frame
                return DROP, frame
            if frame is not None and frame.ms > 0:
                self.last_voice_ms = frame.ms
            if diff < -_TARGET_EXTRA and ((frame is None and self.last_adjustment + 80 < now)
                                          or self.last_adjustment + 500 < now):
                self.last_adjustment = now
                self.contig = 0
                if frame is not None:
                    self.current -= frame.ms
                    return DROP, frame
                self.current -= self.last_voice_ms
                return NOFRAME, None
            if frame is None:
                self.next_voice_ts += interp
                self.last_voice_ms = interp
                self.contig += 1
                if self.max_interp and self.contig >= self.max_interp:
                    self.silence_begin_ts = self.next_voice_ts - self.current
                return INTERP, None
            self.next_voice_ts += frame.ms
            self.contig = 0
            return OK, frame
        # silence: shrink quickly, restart on the next voice frame
        if diff < -_TARGET_EXTRA and self.last_adjustment + 10 <= now:
            self.current -= interp
            self.last_adjustment = now
        if not q or now - self.current < q[0]:
            return NOFRAME, None
        fts, frame = self._pop()
        if fts < self.silence_begin_ts:
            return DROP, frame
        self.current = self.target
        self.silence_begin_ts = 0
        self.next_voice_ts = fts + self.current + frame.ms
        self.last_voice_ms = frame.ms
        return OK, frame

    def next(self) -> int:
        if self.silence_begin_ts:
            if not self.queue_ts:
                return _NEVER
            self._history_get()
            if self.target - self.current < -_TARGET_EXTRA:
                return self.last_adjustment + 10
            return self.queue_ts[0] + self.target
        return self.next_voice_ts

    def force_resync(self) -> None:
        self.reset()

    def empty(self) -> None:
        self.reset()


# ---- the playout clock -------------------------------------------------------------------------------------


class PlayoutChannel:
    """One simulated receiver: a buffer, its playout clock and the loss-burst histogram it produces.

    `loss[n]` counts concealment bursts of n frames (n >= 128 is split into 127-buckets as the reference
    does); `burst` is the burst in progress.
    """

    __slots__ = ("adaptive", "delay", "threshold", "buf", "loss", "burst", "created", "timebase_us",
                 "has_timebase", "started", "last_us", "last_seqno", "last_ms", "prev_dtmf")

    def __init__(self, adaptive: bool, delay: int, threshold: int) -> None:
        self.adaptive, self.delay, self.threshold = adaptive, delay, threshold
        self.buf: FixedBuffer | AdaptiveBuffer | None = None
        self.loss = [0] * LOSS_BUCKETS
        self.burst = 0
        self.created = False
        self.timebase_us = 0
        self.has_timebase = False
        self.started = False      # the reference's jb_reseted: set once, never cleared
        self.last_us = 0          # playout clock
        self.last_seqno = 0
        self.last_ms = 0
        self.prev_dtmf = False

    def destroy(self) -> None:
        """Drop the buffer and its time base (stream restart); the loss histogram is kept."""
        self.created = False
        self.has_timebase = False
        self.buf = None

    def _now(self, us: int) -> int:
        return (us - self.timebase_us) // 1000

    def _put(self, f: Frame, ts_us: int) -> None:
        if f.marker and self.created:
            self.buf.force_resync()  # type: ignore[union-attr]
        if f.ms < 2 or f.ts < 0:
            return
        now = self._now(ts_us)
        if not self.created:
            self.buf = AdaptiveBuffer(self.delay, self.threshold) if self.adaptive \
                else FixedBuffer(self.delay, self.threshold, self)
            self.created = True
            if self.adaptive:
                self.buf.put(f, now)  # type: ignore[union-attr, call-arg]
            else:
                self.buf.put_first(f, now, f.marker)  # type: ignore[union-attr]
            return
        if self.adaptive:
            self.buf.put(f, now)  # type: ignore[union-attr, call-arg]
        else:
            self.buf.put(f, now, f.marker)  # type: ignore[union-attr, call-arg]
        self.prev_dtmf = False

    def _get_and_deliver(self, ptime: int) -> None:
        if not self.created or self.last_us < self.timebase_us:
            return
        buf = self.buf
        now = self._now(self.last_us)
        nxt = buf.next()  # type: ignore[union-attr]
        if nxt == _NEVER:
            self.burst += 1
            return
        if now < nxt:
            return
        while now >= nxt:
            res, f = buf.get(now, ptime)  # type: ignore[union-attr]
            if res == OK:
                assert f is not None
                if not ((f.seq - self.last_seqno) & 0xFFFFFFFF == 1 and abs(f.ts - self.last_ms) > ptime) \
                        and not f.marker and 0 < self.burst < MAX_COUNTED_BURST and f.after_voice:
                    b = self.burst
                    while b > LOSS_BUCKETS:
                        self.loss[LOSS_BUCKETS - 1] += 1
                        b -= LOSS_BUCKETS
                    self.loss[b if b < LOSS_BUCKETS else LOSS_BUCKETS - 1] += 1
                self.burst = 0
                self.last_seqno = f.seq
                self.last_ms = f.ts
            elif res == NOFRAME:
                self.burst += 1
                return
            else:
                self.burst += 1
            nxt = buf.next()  # type: ignore[union-attr]

    def packet(self, ts_us: int, frame_ts: int, prev_frame_ts: int, seq: int, last_seq: int, marker: bool,
               after_voice: bool, ptime: int) -> None:
        """Play one voice packet through the receiver.

        `frame_ts`/`prev_frame_ts`: this and the previous packet's RTP time in ms (0 after a marker);
        `marker`: the packet's marker, already forced on after comfort noise or DTMF;
        `after_voice`: the previous packet was voice (not DTMF); `ptime`: the stream's packetization (ms).
        """
        if ptime <= 1:
            return
        if not self.has_timebase:
            self.timebase_us = ts_us
            self.has_timebase = True
        if self.timebase_us == ts_us:
            self.last_us = ts_us
        f = Frame(frame_ts, ptime, seq, marker, after_voice)
        if not self.started:
            if self.created:
                self.buf.empty()  # type: ignore[union-attr]
            self.started = True
            self.last_us = ts_us
            self._put(f, ts_us)
            return
        msdiff = (ts_us - (self.last_us + ptime * 1000)) // 1000
        if msdiff > ptime * 10000:
            self.last_us = ts_us
            self._put(f, ts_us)
            return
        if msdiff >= PAUSE_WITHOUT_GAP_MS and seq == (last_seq + 1) & 0xFFFF and frame_ts > prev_frame_ts \
                and frame_ts - prev_frame_ts == ptime:
            f.marker = True
        while msdiff >= ptime:
            if f.marker or not after_voice:
                self.burst = 0
            self._get_and_deliver(ptime)
            self.last_us += ptime * 1000
            msdiff -= ptime
        self._put(f, ts_us)


def new_mos_channels() -> tuple[PlayoutChannel, PlayoutChannel, PlayoutChannel]:
    """The reference's default receivers: F1 fixed 50 ms (resync 100), F2 fixed 200 ms (resync 200),
    adaptive up to 500 ms (resync 500)."""
    return PlayoutChannel(False, 50, 100), PlayoutChannel(False, 200, 200), PlayoutChannel(True, 500, 500)
