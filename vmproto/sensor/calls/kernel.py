"""The C twin of `RtpStream` (per-stream RTP statistics and the three MOS jitter-buffer simulations).

The kernel (`_kernel.c`, cffi API mode) is compiled on first use into a cache directory and loaded from
there afterwards (vmproto._ckernel); without a C compiler the analysis falls back to the pure-Python `RtpStream`,
which stays the reference (tests/sensor/calls/test_kernel.py requires both to agree on random streams).
`$VMPROTO_RTP_KERNEL`
chooses the implementation: `auto` (default: C when it builds, else Python), `c` (C or an error), `python`.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from vmproto._ckernel import KernelLoader
from vmproto.sensor.calls import _kernel_build
from vmproto.sensor.calls.errors import AnalyzerConfigError, CallAnalysisError
from vmproto.sensor.calls.rtp import RtpStream

__all__ = ["KernelRtpStream", "KernelUnavailable", "load_kernel", "kernel_available", "stream_class"]

log = logging.getLogger(__name__)


class KernelUnavailable(CallAnalysisError):
    """The C kernel was required but could not be built or loaded (the message says why)."""


#: Builds (first use) or finds the install-time build of the kernel, once per process; see vmproto._ckernel.
LOADER = KernelLoader(_kernel_build.SPEC, "C RTP kernel", KernelUnavailable, digest_symbol="vm_kernel_digest")
load_kernel = LOADER.load
kernel_available = LOADER.available


def stream_class(choice: str | None = None) -> type[RtpStream] | type[KernelRtpStream]:
    """Return the stream implementation to use: `choice` or `$VMPROTO_RTP_KERNEL` ("auto", "c", "python").

    Raises `KernelUnavailable` when "c" was asked for and the kernel cannot be loaded, `AnalyzerConfigError`
    for an unknown choice.
    """
    choice = (choice or os.environ.get("VMPROTO_RTP_KERNEL") or "auto").lower()
    if choice == "python":
        return RtpStream
    if choice == "c":
        load_kernel()
        return KernelRtpStream
    if choice == "auto":
        return KernelRtpStream if kernel_available() else RtpStream
    raise AnalyzerConfigError(f"rtp kernel must be 'auto', 'c' or 'python', not {choice!r}")


class _Mos:
    __slots__ = ("minimum", "average")

    def __init__(self, minimum: int, average: float) -> None:
        self.minimum, self.average = minimum, average


class KernelRtpStream:
    """Same surface and results as `RtpStream`, with the per-packet work done by the C kernel."""

    __slots__ = ("saddr", "sport", "daddr", "dport", "ssrc", "iscaller", "sdp_ptime", "rtpmap_own",
                 "rtpmap_other", "_s", "_lib", "_ffi", "_fm_len", "_fm_arr")

    def __init__(self, saddr: bytes, sport: int, daddr: bytes, dport: int, ssrc: int, iscaller: bool,
                 sdp_ptime: int = 0, rtpmap_own: dict[int, int] | None = None,
                 rtpmap_other: dict[int, int] | None = None) -> None:
        mod = load_kernel()
        self._lib: Any = mod.lib
        self._ffi: Any = mod.ffi
        self.saddr, self.sport, self.daddr, self.dport, self.ssrc = saddr, sport, daddr, dport, ssrc
        self.iscaller = iscaller
        self.sdp_ptime = sdp_ptime
        self.rtpmap_own = rtpmap_own or {}
        self.rtpmap_other = rtpmap_other or {}
        raw = self._lib.vm_stream_new()
        if raw == self._ffi.NULL:
            raise MemoryError("vm_stream_new")
        self._s = self._ffi.gc(raw, self._lib.vm_stream_free)
        self._fm_len = 0
        self._fm_arr: Any = self._ffi.NULL
        self.refresh_rtpmap()

    def refresh_rtpmap(self) -> None:
        """Copy the dynamic payload-type map into the kernel (call after `rtpmap_own` changed in place)."""
        for pt in range(96, 128):
            codec = self.rtpmap_own.get(pt, self.rtpmap_other.get(pt, -1))
            self._lib.vm_stream_set_rtpmap(self._s, pt, codec)

    def feed(self, ts_us: int, ttl: int, data: bytes, forcemark_times: list[int], connected: bool) -> bool:
        """Account one UDP payload of this stream; return False when the reference would ignore it (or it is
        not RTP). Raises MemoryError when the kernel could not grow a jitter buffer."""
        if forcemark_times:
            if len(forcemark_times) != self._fm_len:
                self._fm_arr = self._ffi.new("int64_t[]", forcemark_times)
                self._fm_len = len(forcemark_times)
            r = self._lib.vm_stream_read(self._s, ts_us, ttl, data, len(data), self._fm_arr, self._fm_len, connected)
        else:
            r = self._lib.vm_stream_read(self._s, ts_us, ttl, data, len(data), self._ffi.NULL, 0, connected)
        if r < -1:
            raise MemoryError("RTP kernel: jitter-buffer allocation failed")
        return r > 0

    def save_mos(self, connected: bool) -> None:
        """Close a MOS interval (see `RtpStream.save_mos`)."""
        self._lib.vm_stream_save_mos(self._s, connected)

    def finalize_mos(self, connected: bool) -> None:
        """Close the pending MOS interval at the end of the stream (see `RtpStream.finalize_mos`)."""
        if self._s.save_mos_wait or not self._s.mos_time_ms:
            self._lib.vm_stream_save_mos(self._s, connected)

    # ---- results (read after the stream ends; not on the per-packet path) ----------------------------------

    @property
    def received(self) -> int:
        return self._s.received

    @property
    def lost(self) -> int:
        return self._s.lost

    @property
    def reordered(self) -> int:
        return self._s.reordered

    @property
    def avgjitter(self) -> float:
        return self._s.avgjitter

    @property
    def maxjitter(self) -> float:
        return self._s.maxjitter

    @property
    def codec(self) -> int:
        return self._s.codec

    @property
    def first_codec(self) -> int:
        return self._s.first_codec

    @property
    def packetization(self) -> int:
        return self._s.packetization

    @property
    def slost(self) -> list[int]:
        return list(self._s.slost)

    @property
    def delay(self) -> dict[int, int]:
        return dict(zip((50, 70, 90, 120, 150, 200, 300), self._s.delay, strict=True))

    @property
    def ttl_min(self) -> int:
        return self._s.ttl_min

    @property
    def ttl_max(self) -> int:
        return self._s.ttl_max

    @property
    def ttl_sum(self) -> int:
        return self._s.ttl_sum

    @property
    def ttl_count(self) -> int:
        return self._s.ttl_count

    @property
    def first_time_us(self) -> int:
        return self._s.first_time_us

    @property
    def last_time_us(self) -> int:
        return self._s.last_time_us

    @property
    def avg_ptime(self) -> float:
        return float(self._s.avg_ptime)

    @property
    def mos(self) -> list[_Mos]:
        lib, s = self._lib, self._s
        return [_Mos(lib.vm_stream_mos_min(s, i), lib.vm_stream_mos_avg(s, i)) for i in range(3)]

    def loss_histogram(self, channel: int) -> list[int]:
        """The loss-burst histogram of MOS receiver `channel` (0 F1, 1 F2, 2 adaptive)."""
        return [self._lib.vm_stream_loss(self._s, channel, i) for i in range(128)]

    @property
    def received_cdr(self) -> int:
        return self.received + (2 if self.first_codec >= 0 else 0)

    @property
    def rtp_ptime(self) -> int:
        import math

        return int(math.floor(self.avg_ptime + 0.5))
