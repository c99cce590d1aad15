"""Minimal cffi ABI-mode binding to the system liblzo2 (LZO1X-1(11) compress, LZO1X safe decompress).

Only what spec §5 needs: ``lzo1x_1_11_compress`` (what the reference sensor uses) and
``lzo1x_decompress_safe`` (bounds-checked: it never writes past the output buffer we size).
"""

from __future__ import annotations

import ctypes.util

from cffi import FFI

__all__ = ["LzoError", "LzoUnavailable", "compress", "decompress"]

_CDEF = """
typedef size_t lzo_uint;
typedef size_t lzo_xint;
struct lzo_callback_t {
    void *nalloc;
    void *nfree;
    void *nprogress;
    void *user1;
    lzo_xint user2;
    lzo_xint user3;
};
int __lzo_init_v2(unsigned, int, int, int, int, int, int, int, int, int);
unsigned lzo_version(void);
int lzo1x_1_11_compress(const unsigned char *src, lzo_uint src_len,
                        unsigned char *dst, lzo_uint *dst_len, void *wrkmem);
int lzo1x_decompress_safe(const unsigned char *src, lzo_uint src_len,
                          unsigned char *dst, lzo_uint *dst_len, void *wrkmem);
"""

# The header's LZO_VERSION we were written against (2.10); __lzo_init_v2 only checks it is >= 0x1080
# and that the type sizes we report match the library's.
_LZO_VERSION = 0x20A0
_LZO_E_OK = 0
_LZO_E_OUTPUT_OVERRUN = -5


class LzoUnavailable(RuntimeError):
    """liblzo2 could not be loaded or initialised."""


class LzoError(ValueError):
    """Compression or decompression failed (corrupt input, output over the allowed size)."""


_ffi = FFI()
_ffi.cdef(_CDEF)
_lib = None
_load_error: str | None = None


def _load():
    """Return the loaded library, loading and initialising it on first use.

    No lock (the wire core stays free of threading): two racing first calls just both dlopen the
    same library, which is harmless. Raises :class:`LzoUnavailable`.
    """
    global _lib, _load_error
    if _lib is not None:
        return _lib
    if _load_error is not None:
        raise LzoUnavailable(_load_error)
    lib = None
    for name in ("liblzo2.so.2", ctypes.util.find_library("lzo2")):
        if not name:
            continue
        try:
            lib = _ffi.dlopen(name)
            break
        except OSError:
            continue
    if lib is None:
        _load_error = "liblzo2 (liblzo2.so.2) is not installed: LZO compression is unavailable"
        raise LzoUnavailable(_load_error)
    ptr = _ffi.sizeof("void *")
    rc = lib.__lzo_init_v2(
        _LZO_VERSION,
        _ffi.sizeof("short"),
        _ffi.sizeof("int"),
        _ffi.sizeof("long"),
        4,  # lzo_uint32_t
        _ffi.sizeof("lzo_uint"),
        ptr,  # lzo_sizeof_dict_t = sizeof(lzo_bytep)
        ptr,  # char *
        ptr,  # lzo_voidp
        _ffi.sizeof("struct lzo_callback_t"),
    )
    if rc != _LZO_E_OK:
        _load_error = f"lzo_init() failed with {rc}: liblzo2 does not match this binding"
        raise LzoUnavailable(_load_error)
    _lib = lib
    return lib


def _wrkmem_size() -> int:
    # LZO1X_1_11_MEM_COMPRESS = 2048 * lzo_sizeof_dict_t
    return 2048 * _ffi.sizeof("void *")


def compress(data: bytes) -> bytes:
    """Return the raw LZO1X-1(11) stream of ``data`` (no header)."""
    lib = _load()
    n = len(data)
    # Worst case documented by LZO: n + n/16 + 64 + 3.
    out = _ffi.new("unsigned char[]", n + n // 16 + 64 + 3)
    out_len = _ffi.new("lzo_uint *")
    wrk = _ffi.new("unsigned char[]", _wrkmem_size())
    rc = lib.lzo1x_1_11_compress(_ffi.from_buffer(bytes(data)), n, out, out_len, wrk)
    if rc != _LZO_E_OK:
        raise LzoError(f"lzo1x_1_11_compress failed ({rc})")
    return _ffi.buffer(out, out_len[0])[:]


def decompress(data: bytes | memoryview, out_size: int) -> bytes:
    """Decompress a raw LZO1X stream into at most ``out_size`` bytes.

    Raises :class:`LzoError` for corrupt input or output that would exceed ``out_size``.
    """
    lib = _load()
    src = bytes(data)
    out = _ffi.new("unsigned char[]", max(out_size, 1))
    out_len = _ffi.new("lzo_uint *", out_size)
    rc = lib.lzo1x_decompress_safe(_ffi.from_buffer(src), len(src), out, out_len, _ffi.NULL)
    if rc == _LZO_E_OUTPUT_OVERRUN:
        raise LzoError("lzo output larger than declared")
    if rc != _LZO_E_OK:
        raise LzoError(f"lzo1x_decompress_safe failed ({rc})")
    return _ffi.buffer(out, out_len[0])[:]
