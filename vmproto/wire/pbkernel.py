"""C helpers for pcap_block_store containers (spec §9): the per-byte and per-packet loops of both ends.

Python is the reference for every function here; this module only makes the same results cheap at ~700,000
packets/s on one core:

* `sums(data)` → (unsigned byte sum mod 2³², checksum32buf) in one pass (block frame sum, spec §2; container
  checksum, spec §9.6);
* `pack(...)` the sender's data area: header offsets of each frame (spec §9.11, the twin of
  `vmproto.sensor.client.pktinfo.frame_offsets`), the 36-byte `plus` header and the frame, packet after packet;
* `check_area(...)` rows 8-10 of spec §9.8 on a decoded data area;
* `to_pcap(...)` a decoded area as classic pcap records (ns timestamps), one run of one link type per call.

The C source (`_pbkernel.c`) is compiled (cffi API mode) on first use by vmproto._ckernel and loaded from its
cache afterwards. `$VMPROTO_PB_KERNEL`: `auto` (default: C when it builds, else
the Python paths of the callers), `c` (C or `KernelUnavailable`), `python` (never C). `load()` returns None when
the callers must use their Python path.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from types import ModuleType

from vmproto._ckernel import KernelLoader, KernelSpec

from .errors import LocalProtocolError

__all__ = ["KernelUnavailable", "load", "sums", "MODULE_NAME"]

log = logging.getLogger(__name__)

MODULE_NAME = "_vmproto_pb_kernel"

CDEF = """
void pb_sums(const uint8_t *p, size_t n, uint64_t *usum, uint64_t *high);
int pb_offsets(int linktype, const uint8_t *f, uint32_t n, uint32_t *encaps, uint32_t *ip_off, uint32_t *vlan);
uint32_t pb_pack(const uint8_t *buf, const uint32_t *starts, const uint32_t *ends, const int64_t *ts_ns,
                 const uint32_t *orig_len, uint32_t i, uint32_t n, int linktype, uint32_t maxsize, uint8_t *out,
                 uint32_t *pos, uint32_t *offsets, uint32_t *count, uint64_t *stats);
int pb_increasing(const uint32_t *offs, uint32_t count);
int pb_check_area(const uint8_t *area, uint32_t size, const uint32_t *offs, uint32_t count, uint32_t hdr_size,
                  uint32_t *value);
uint32_t pb_to_pcap(const uint8_t *area, const uint32_t *offs, uint32_t i, uint32_t count, uint32_t hdr_size,
                    uint32_t default_dlink, uint8_t *out, uint64_t *written, uint32_t *dlink);
"""

COMPILE_ARGS = ["-O3", "-std=c99", "-Wall", "-Wno-unused-function"]



class KernelUnavailable(LocalProtocolError):
    """`VMPROTO_PB_KERNEL=c` but the kernel cannot be built or loaded (the message says why)."""


SPEC = KernelSpec(MODULE_NAME, Path(__file__).with_name("_pbkernel.c"), CDEF, tuple(COMPILE_ARGS))
LOADER = KernelLoader(SPEC, "C packetbuffer kernel", KernelUnavailable)
source_digest = SPEC.digest


def load() -> ModuleType | None:
    """Return the compiled kernel (`.ffi`, `.lib`), building it on first use; None when the callers must use
    their Python path (`VMPROTO_PB_KERNEL=python`, or no compiler in `auto` mode: one warning in the log).

    Raises KernelUnavailable in `c` mode when it cannot be built or loaded.
    """
    mode = os.environ.get("VMPROTO_PB_KERNEL", "auto").strip().lower() or "auto"
    if mode == "python":
        return None
    try:
        return LOADER.load()
    except KernelUnavailable:
        if mode == "c":
            raise
        return None


def sums(data: bytes | bytearray | memoryview) -> tuple[int, int] | None:
    """(unsigned byte sum mod 2³², checksum32buf mod 2¹⁶) of `data`, or None without the kernel."""
    k = load()
    if k is None:
        return None
    ffi = k.ffi
    out = ffi.new("uint64_t[2]")
    view = memoryview(data)
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    k.lib.pb_sums(ffi.from_buffer(view), len(view), out, out + 1)
    usum, high = out[0], out[1]
    return usum & 0xFFFFFFFF, (usum - 256 * high) & 0xFFFF
