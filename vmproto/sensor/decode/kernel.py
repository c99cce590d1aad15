"""The C twin of the decoder's common paths, and of the pcap record walk (`_kernel.c`, cffi API mode).

The kernel parses a whole batch into columns of offsets and header fields; `BatchKernel.decode` turns
those into `DecodedPacket` records with C-level iteration only (no per-packet bytecode), slicing payloads
and IP packets straight from the buffer the frames live in. Frames the kernel does not take (anything but
"one record, only tunnel counters") are marked for the pure-Python decoder, which stays the reference:
tests/sensor/decode/test_kernel.py holds both to identical records and counters.

The kernel is compiled on first use into a cache directory and loaded from there afterwards (vmproto._ckernel);
without a C compiler everything falls back to the pure-Python path (one warning in the log). `$VMPROTO_DECODE_KERNEL`
chooses the implementation: `auto` (default: C when it builds, else Python), `c` (C or an error), `python`.
"""

from __future__ import annotations

import gc
import logging
import os
from array import array
from collections.abc import Callable, Sequence
from itertools import compress, repeat
from typing import Any

from vmproto._ckernel import KernelLoader
from vmproto.sensor.capture.frames import U32, FrameList

from . import _kernel_build
from .errors import DecodeError
from .options import DecodeOptions
from .record import DecodedPacket
from .stats import DecodeStats

__all__ = ["BatchKernel", "KernelUnavailable", "kernel_available", "load_kernel", "pcap_scanner", "use_kernel"]

log = logging.getLogger(__name__)

#: Tunnel codes of the kernel (VM_T_* in _kernel.c) -> the name in records and in "tunnel.<name>".
TUNNEL_NAMES = ("", "gre", "erspan1", "erspan2", "erspan3", "vxlan", "tzsp", "ipip")
_U_VER, _U_PROTO, _U_SEQ, _U_FLAGS, _U_VLAN, _U_TUNNEL, _U_TTL, _U_TO_END = 1, 2, 4, 8, 16, 32, 64, 128
_MAX_BUFFER = 1 << 32  # offsets are 32-bit
_ADDR_CACHE_MAX = 1 << 16
_new = tuple.__new__


class KernelUnavailable(DecodeError):
    """The C kernel was required but could not be built or loaded (the message says why)."""

    def __init__(self, detail: str) -> None:
        super().__init__("kernel_unavailable", detail)


#: Builds (first use) and loads the kernel once per process; see vmproto._ckernel.
LOADER = KernelLoader(_kernel_build.SPEC, "C packet decode kernel", KernelUnavailable)
load_kernel = LOADER.load
kernel_available = LOADER.available


def use_kernel(choice: str | None = None) -> bool:
    """Return whether to decode with the kernel: `choice` or `$VMPROTO_DECODE_KERNEL` ("auto", "c", "python").

    Raises `KernelUnavailable` when "c" was asked for and the kernel cannot be loaded, `ValueError` for an
    unknown choice.
    """
    choice = (choice or os.environ.get("VMPROTO_DECODE_KERNEL") or "auto").lower()
    if choice == "python":
        return False
    if choice == "c":
        load_kernel()
        return True
    if choice == "auto":
        return kernel_available()
    raise ValueError(f"decode kernel must be 'auto', 'c' or 'python', not {choice!r}")


class _AddrCache(dict):
    """IPv4 address number -> its 4 bytes; one shared object per address keeps records cheap to build."""

    def __missing__(self, key: int) -> bytes:
        value = self[key] = key.to_bytes(4, "big")
        return value


_COLUMNS = (("src_off", "uint32_t"), ("dst_off", "uint32_t"), ("dst_end", "uint32_t"), ("pay_off", "uint32_t"),
            ("pay_end", "uint32_t"), ("ip_off", "uint32_t"), ("ip_end", "uint32_t"), ("src4", "uint32_t"),
            ("dst4", "uint32_t"), ("seq", "uint32_t"), ("vlan", "int32_t"), ("sport", "uint16_t"),
            ("dport", "uint16_t"), ("ver", "uint8_t"), ("proto", "uint8_t"), ("ttl", "uint8_t"),
            ("flags", "uint8_t"), ("tunnel", "uint8_t"))


class BatchKernel:
    """Per-decoder kernel state: the option table, column buffers sized for the largest batch seen.

    Raises `KernelUnavailable` from the constructor when the kernel cannot be loaded.
    """

    def __init__(self, options: DecodeOptions, stats: DecodeStats, udp_watch: frozenset[int],
                 tcp_watch: frozenset[int]) -> None:
        mod = load_kernel()
        self._stats = stats
        self._ffi = ffi = mod.ffi
        self._lib = mod.lib
        self._cfg = cfg = ffi.new("vm_cfg *")
        cfg.vxlan_port = options.udp_port_vxlan
        cfg.tzsp_port = options.udp_port_tzsp
        cfg.ipv6 = 1 if options.ipv6 else 0
        cfg.max_depth = options.max_tunnel_depth
        for port in udp_watch:
            cfg.udp_watch[port] = 1
        for port in tcp_watch:
            cfg.tcp_watch[port] = 1
        self._cols = ffi.new("vm_cols *")
        self._arrays: dict[str, Any] = {}
        self._cap = 0
        self._grow(4096)
        self._counts = ffi.new("uint32_t[]", len(TUNNEL_NAMES))
        self._addr = _AddrCache()

    def _grow(self, n: int) -> None:
        cap = max(n, 2 * self._cap)
        ffi = self._ffi
        for name, ctype in _COLUMNS:
            arr = self._arrays[name] = ffi.new(f"{ctype}[]", cap)
            setattr(self._cols, name, arr)
        self._status = ffi.new("uint8_t[]", cap)
        self._cap = cap

    def decode(self, linktype: int, ts_list: Sequence[int], frames: Sequence[bytes],
               slow: Callable[[int, int, bytes, list], None]) -> list[DecodedPacket] | None:
        """Decode a batch; `slow(linktype, ts, frame, out)` decodes (and appends) a frame the kernel leaves to Python.

        Adds the tunnel counters of the frames it took to the decoder's stats. Returns the records in
        capture order, or None when the batch cannot go through the kernel (its
        buffer would need offsets beyond 32 bits); the caller then decodes it in Python.
        """
        if isinstance(frames, FrameList):
            buf, starts, ends = frames.buffer, frames.starts, frames.ends
        else:
            total = sum(map(len, frames))
            if total >= _MAX_BUFFER:
                return None
            fl = FrameList.from_frames(frames)
            buf, starts, ends = fl.buffer, fl.starts, fl.ends
        if len(buf) >= _MAX_BUFFER:
            return None
        n = len(starts)
        if n > self._cap:
            self._grow(n)
        ffi = self._ffi
        counts = self._counts
        k = self._lib.vm_decode(ffi.from_buffer("uint8_t[]", buf), ffi.from_buffer("uint32_t[]", starts),
                                ffi.from_buffer("uint32_t[]", ends), n, linktype, self._cfg, self._cols,
                                self._status, counts)
        for code in range(1, len(TUNNEL_NAMES)):
            if counts[code]:
                self._stats.inc("tunnel." + TUNNEL_NAMES[code], counts[code])
                counts[code] = 0
        # Cyclic GC is paused while the records are built: they are acyclic (bytes, ints, str), and one
        # collection after the batch instead of one per 700 new records measured 15-25% faster overall.
        gc_was_on = gc.isenabled()
        gc.disable()
        try:
            if k == n:
                return self._records(buf, ts_list, k)
            status = bytes(ffi.buffer(self._status, n))
            recs = self._records(buf, compress(ts_list, status), k) if k else []
        finally:
            if gc_was_on:
                gc.enable()
        out: list[DecodedPacket] = []
        taken = 0  # records of fast frames already copied to `out`
        i = 0
        at = status.find(0)
        while at >= 0:
            fast = at - i
            if fast:
                out += recs[taken : taken + fast]
                taken += fast
            slow(linktype, ts_list[at], buf[starts[at] : ends[at]], out)
            i = at + 1
            at = status.find(0, i)
        out += recs[taken:]
        return out

    def _records(self, buf: bytes, ts: Any, k: int) -> list[DecodedPacket]:
        """Build the first `k` records from the columns.

        Measured choices: constant columns become `repeat`; IPv4 addresses come from a cache (one bytes
        object per address, no slicing); slices are taken in comprehensions (BUILD_SLICE is cheaper than
        `map(slice, ...)`), the payload from the IP packet with small relative offsets (cached small ints
        instead of new large ones); the records themselves by `map`/`zip` without per-record bytecode.
        """
        a = self._arrays
        u = self._cols.uniform
        unpack = self._ffi.unpack

        def col(name: str, bit: int) -> Any:
            arr = a[name]
            return repeat(arr[0]) if u & bit else unpack(arr, k)

        ips = [buf[lo:hi] for lo, hi in zip(unpack(a["ip_off"], k), unpack(a["ip_end"], k), strict=True)]
        if u & _U_TO_END:
            pays = [ip[lo:] for ip, lo in zip(ips, unpack(a["pay_off"], k), strict=True)]
        else:
            pays = [ip[lo:hi] for ip, lo, hi in zip(ips, unpack(a["pay_off"], k), unpack(a["pay_end"], k), strict=True)]
        if u & _U_VER and a["ver"][0] == 4:
            addr = self._addr
            if len(addr) > _ADDR_CACHE_MAX:
                addr.clear()
            get = addr.__getitem__
            src: Any = map(get, unpack(a["src4"], k))
            dst: Any = map(get, unpack(a["dst4"], k))
        else:
            src = [buf[lo:hi] for lo, hi in zip(unpack(a["src_off"], k), unpack(a["dst_off"], k), strict=True)]
            dst = [buf[lo:hi] for lo, hi in zip(unpack(a["dst_off"], k), unpack(a["dst_end"], k), strict=True)]
        if u & _U_TUNNEL:
            tunnel: Any = repeat(TUNNEL_NAMES[a["tunnel"][0]])
        else:
            tunnel = map(TUNNEL_NAMES.__getitem__, unpack(a["tunnel"], k))
        return list(map(_new, repeat(DecodedPacket), zip(
            ts, col("ver", _U_VER), src, dst, col("proto", _U_PROTO), unpack(a["sport"], k), unpack(a["dport"], k),
            pays, col("ttl", _U_TTL), ips, col("seq", _U_SEQ), col("flags", _U_FLAGS), col("vlan", _U_VLAN),
            tunnel, strict=False)))  # repeat() columns are endless: the k-long ones bound the zip


def pcap_scanner() -> Callable[..., tuple[list[int], array, array, list[int], int, bool]] | None:
    """Return a function walking classic pcap records with the kernel, or None without a kernel.

    The function takes (data, pos, swapped, ts_multiplier, max_frame, cap) and returns (ts_ns list,
    starts, ends, orig_len list, next offset, corrupt) where `corrupt` says the record at `next` claims
    more than `max_frame` bytes and does not fit in `data`.
    """
    try:
        if not use_kernel():
            return None
        mod = load_kernel()
    except (KernelUnavailable, ValueError):
        return None
    ffi, lib = mod.ffi, mod.lib
    state: dict[str, Any] = {"cap": 0}
    nxt = ffi.new("uint64_t *")

    def scan(data: bytes, pos: int, swapped: bool, mult: int, max_frame: int, cap: int):
        if state["cap"] < cap:
            state.update(cap=cap, ts=ffi.new("int64_t[]", cap), start=ffi.new("uint32_t[]", cap),
                         end=ffi.new("uint32_t[]", cap), orig=ffi.new("uint32_t[]", cap))
        if len(data) >= _MAX_BUFFER:
            raise OverflowError("capture read buffer beyond 32-bit offsets")
        rc = lib.vm_pcap_scan(ffi.from_buffer("uint8_t[]", data), len(data), pos, 1 if swapped else 0, mult,
                              max_frame, cap, state["ts"], state["start"], state["end"], state["orig"], nxt)
        count = max(rc, 0)
        starts = array(U32)
        starts.frombytes(ffi.buffer(state["start"], 4 * count))
        ends = array(U32)
        ends.frombytes(ffi.buffer(state["end"], 4 * count))
        return (ffi.unpack(state["ts"], count), starts, ends, ffi.unpack(state["orig"], count), nxt[0], rc < 0)

    return scan
