"""Minimal cffi ABI-mode binding to the system libsnappy (C API of snappy-c.h), for compression only.

Why not just cramjam: its Rust encoder produces valid raw snappy that decodes identically, but not always the
same bytes as Google's C++ encoder the reference sniffer links; on the recordings it differs on 2 of 9
containers. A sender that wants byte-identical containers (spec §9.7) uses this binding when libsnappy.so.1 is
present (Debian package libsnappy1v5) and falls back to cramjam otherwise.
"""

from __future__ import annotations

import ctypes.util

from cffi import FFI

__all__ = ["available", "compress"]

_ffi = FFI()
_ffi.cdef(
    """
    int snappy_compress(const char *input, size_t input_length, char *compressed, size_t *compressed_length);
    size_t snappy_max_compressed_length(size_t source_length);
    """
)


def _load():  # type: ignore[no-untyped-def]
    for name in ("libsnappy.so.1", ctypes.util.find_library("snappy")):
        if not name:
            continue
        try:
            return _ffi.dlopen(name)
        except OSError:
            continue
    return None


_lib = _load()


def available() -> bool:
    """True when the system libsnappy could be loaded."""
    return _lib is not None


def compress(data: bytes) -> bytes:
    """Raw snappy (no framing) exactly as the C++ library produces it. RuntimeError if unavailable/failed."""
    if _lib is None:
        raise RuntimeError("libsnappy.so.1 is not available")
    bound = _lib.snappy_max_compressed_length(len(data))
    out = _ffi.new("char[]", bound)
    out_len = _ffi.new("size_t *", bound)
    status = _lib.snappy_compress(data, len(data), out, out_len)
    if status != 0:  # SNAPPY_OK = 0; the only other outcome is a too-small buffer, impossible with the bound
        raise RuntimeError(f"snappy_compress failed with status {status}")
    return _ffi.buffer(out, out_len[0])[:]
