"""Payload compression of the C/S channel and of packet containers (spec §5).

Channel payloads (query, store, ``rch:``) carry no flag: the receiver sniffs the magic of the
decrypted payload -- gzip ``1F 8B``, zstd ``28 B5 2F FD``, lzo ``LZO`` -- and anything else is
uncompressed. Our compressors are byte-identical with the reference's (checked against the
recordings); the decompressors are bounded so a small payload cannot expand into a memory bomb.
"""

from __future__ import annotations

import struct
import zlib
from enum import IntEnum

import cramjam
import zstandard

from . import _lzo, _snappy
from .errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "DEFAULT_MAX_DECOMPRESSED",
    "Compression",
    "PbCompression",
    "compress",
    "decompress",
    "detect",
    "pb_compress",
    "pb_decompress",
]

# Store batches of 1000 statements and large query results stay far below this; anything larger
# from a peer is refused rather than buffered.
DEFAULT_MAX_DECOMPRESSED = 256 * 1024 * 1024

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
LZO_MAGIC = b"LZO"
_LZO_HEADER = struct.Struct("<3sI")

# Reasons follow the reference's texts for failed decompression (spec §5/§7).
_REASON = {1: "error in decompress zip", 2: "error in decompress lzo", 3: "error in decompress zstd"}
_CHUNK = 64 * 1024


class Compression(IntEnum):
    """Channel codecs; the values are the reference's ``type_compress`` numbers."""

    NONE = 0
    GZIP = 1
    LZO = 2
    ZSTD = 3


class PbCompression(IntEnum):
    """Codecs of a pcap_block_store data area (``packetbuffer_compress_method``)."""

    SNAPPY = 1
    LZ4 = 2


def detect(data: bytes | bytearray | memoryview) -> Compression:
    """Return the codec a receiver infers from the payload's first bytes (gzip, zstd, lzo order)."""
    head = bytes(data[:4])
    if head[:2] == GZIP_MAGIC:
        return Compression.GZIP
    if head == ZSTD_MAGIC:
        return Compression.ZSTD
    if head[:3] == LZO_MAGIC:
        return Compression.LZO
    return Compression.NONE


_ZSTD_COMPRESSOR = zstandard.ZstdCompressor(level=1, write_content_size=False, write_checksum=False)


def compress(kind: Compression, data: bytes | bytearray | memoryview) -> bytes:
    """Compress ``data`` exactly as the reference does.

    * GZIP: zlib deflate level 5, gzip wrapper (mtime 0, XFL 0, OS 3), one ``Z_FINISH``;
    * ZSTD: streaming level 1, no content size, no checksum;
    * LZO: ``b"LZO"`` + u32 LE input length + LZO1X-1(11) stream;
    * NONE: ``data`` unchanged.

    Raises :class:`LocalProtocolError` when LZO is requested but liblzo2 is missing, or the input is
    too large for the u32 length of the LZO header.
    """
    kind = Compression(kind)
    if kind is Compression.NONE:
        return bytes(data)
    if kind is Compression.GZIP:
        co = zlib.compressobj(5, zlib.DEFLATED, 16 + zlib.MAX_WBITS, 8, zlib.Z_DEFAULT_STRATEGY)
        return co.compress(data) + co.flush(zlib.Z_FINISH)
    if kind is Compression.ZSTD:
        # compressobj = the streaming API without a pledged size, as the reference's ZSTD_compressStream2.
        co = _ZSTD_COMPRESSOR.compressobj()
        return co.compress(data) + co.flush(zstandard.COMPRESSOBJ_FLUSH_FINISH)
    if len(data) > 0xFFFFFFFF:
        raise LocalProtocolError("input too large for an LZO payload")
    try:
        body = _lzo.compress(bytes(data))
    except _lzo.LzoUnavailable as exc:
        raise LocalProtocolError(str(exc)) from None
    except _lzo.LzoError as exc:  # pragma: no cover - lzo1x_1_11_compress cannot fail on valid args
        raise LocalProtocolError(str(exc)) from None
    return _LZO_HEADER.pack(LZO_MAGIC, len(data)) + body


def _too_big(max_size: int) -> RemoteProtocolError:
    return RemoteProtocolError(f"decompressed payload larger than {max_size} bytes")


def _gunzip(data: bytes, max_size: int) -> bytes:
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    parts: list[bytes] = []
    total = 0
    buf = data
    try:
        while True:
            # max_length bounds each step's output: never more than max_size + 1 bytes are produced.
            out = d.decompress(buf, max_size + 1 - total)
            total += len(out)
            parts.append(out)
            if total > max_size:
                raise _too_big(max_size)
            if d.eof:
                break
            buf = d.unconsumed_tail
            if not buf:
                # Input exhausted before the end of the stream: truncated.
                raise RemoteProtocolError(_REASON[1])
    except zlib.error:
        raise RemoteProtocolError(_REASON[1]) from None
    # Bytes after the gzip member are ignored, as the reference's inflate loop does.
    return b"".join(parts)


_ZSTD_MAGIC_INT = 0xFD2FB528
_U32 = struct.Struct("<I")


def _zstd_frames_complete(data: bytes) -> bool:
    """Walk the frame and block headers: True when ``data`` is a run of complete zstd frames.

    The streaming decoder stops quietly on a truncated frame; the reference's loop then returns what
    it decoded so far. We want "truncated" to be an error, so check the framing first (cheap: one step
    per <= 128 KiB block).
    """
    pos, n = 0, len(data)
    while pos < n:
        if n - pos < 8:
            return False
        magic = _U32.unpack_from(data, pos)[0]
        if magic & 0xFFFFFFF0 == 0x184D2A50:  # skippable frame
            pos += 8 + _U32.unpack_from(data, pos + 4)[0]
            if pos > n:
                return False
            continue
        if magic != _ZSTD_MAGIC_INT:
            return False
        fhd = data[pos + 4]
        single = fhd >> 5 & 1
        fcs_size = (1 if single else 0, 2, 4, 8)[fhd >> 6]
        pos += 5 + (0 if single else 1) + (0, 1, 2, 4)[fhd & 3] + fcs_size
        while True:
            if pos + 3 > n:
                return False
            bh = data[pos] | data[pos + 1] << 8 | data[pos + 2] << 16
            btype = bh >> 1 & 3
            if btype == 3:
                return False
            pos += 3 + (1 if btype == 1 else bh >> 3)
            if pos > n:
                return False
            if bh & 1:
                break
        if fhd & 4:
            pos += 4
            if pos > n:
                return False
    return True


def _unzstd(data: bytes, max_size: int) -> bytes:
    if not _zstd_frames_complete(data):
        raise RemoteProtocolError(_REASON[3])
    dctx = zstandard.ZstdDecompressor(max_window_size=1 << 27)
    parts: list[bytes] = []
    total = 0
    try:
        # read_across_frames: the reference's ZSTD_decompressStream loop consumes concatenated frames.
        reader = dctx.stream_reader(data, read_across_frames=True, closefd=False)
        with reader:
            while True:
                chunk = reader.read(min(_CHUNK, max_size + 1 - total))
                if not chunk:
                    break
                total += len(chunk)
                if total > max_size:
                    raise _too_big(max_size)
                parts.append(chunk)
    except zstandard.ZstdError:
        raise RemoteProtocolError(_REASON[3]) from None
    return b"".join(parts)


def _unlzo(data: bytes, max_size: int) -> bytes:
    if len(data) < _LZO_HEADER.size:
        raise RemoteProtocolError(_REASON[2])
    declared = _LZO_HEADER.unpack_from(data)[1]
    if declared > max_size:
        # Refuse before allocating: the header's length sizes the output buffer.
        raise _too_big(max_size)
    try:
        out = _lzo.decompress(memoryview(data)[_LZO_HEADER.size :], declared)
    except _lzo.LzoUnavailable as exc:
        raise RemoteProtocolError(f"{_REASON[2]}: {exc}") from None
    except _lzo.LzoError:
        raise RemoteProtocolError(_REASON[2]) from None
    return out


def decompress(
    data: bytes | bytearray | memoryview, *, max_size: int = DEFAULT_MAX_DECOMPRESSED
) -> tuple[Compression, bytes]:
    """Detect the codec by magic and decompress; return ``(kind, plaintext)``.

    Uncompressed payloads pass through (also bounded by ``max_size``). Raises
    :class:`RemoteProtocolError` with the reference's reason (``"error in decompress zip"`` /
    ``"... zstd"`` / ``"... lzo"``) for corrupt or truncated data, and ``"decompressed payload larger
    than N bytes"`` as soon as the output would exceed ``max_size`` (never allocating beyond it).
    """
    data = bytes(data)
    kind = detect(data)
    if kind is Compression.NONE:
        if len(data) > max_size:
            raise _too_big(max_size)
        return kind, data
    if kind is Compression.GZIP:
        return kind, _gunzip(data, max_size)
    if kind is Compression.ZSTD:
        return kind, _unzstd(data, max_size)
    return kind, _unlzo(data, max_size)


def pb_compress(method: PbCompression, data: bytes | bytearray | memoryview) -> bytes:
    """Compress a packet data area: raw snappy or LZ4 block, no size prefix (spec §9)."""
    method = PbCompression(method)
    if method is PbCompression.SNAPPY:
        if _snappy.available():  # byte-identical with the reference's encoder (see _snappy.py)
            return _snappy.compress(bytes(data))
        return bytes(cramjam.snappy.compress_raw(bytes(data)))
    return bytes(cramjam.lz4.compress_block(bytes(data), store_size=False))


def pb_decompress(
    method: PbCompression, data: bytes | bytearray | memoryview, size: int, *, max_size: int = DEFAULT_MAX_DECOMPRESSED
) -> bytes:
    """Decompress a packet data area whose uncompressed length is ``size``.

    ``size`` comes from the peer's container header: it is checked against ``max_size`` (spec §5.8,
    default 256 MiB) before the decoder allocates anything, and the output is never longer than it.
    Raises :class:`RemoteProtocolError` ``"too big"`` over the cap, and when the data is corrupt or does
    not decode to exactly ``size`` bytes (reasons ``"snappy_uncompress: ..."`` / ``"lz4 uncompress failed"``).
    """
    method = PbCompression(method)
    if not 0 <= size <= max_size:
        raise RemoteProtocolError("too big")
    src = bytes(data)
    if method is PbCompression.SNAPPY:
        try:
            declared = _snappy_declared_length(src)
        except ValueError:
            raise RemoteProtocolError("snappy_uncompress: invalid input") from None
        if declared != size:
            raise RemoteProtocolError("snappy_uncompress: buffer is too small")
        try:
            out = bytes(cramjam.snappy.decompress_raw(src))
        except cramjam.DecompressionError:
            raise RemoteProtocolError("snappy_uncompress: invalid input") from None
    else:
        try:
            out = bytes(cramjam.lz4.decompress_block(src, output_len=size))
        except cramjam.DecompressionError:
            raise RemoteProtocolError("lz4 uncompress failed") from None
        # cramjam pads the output up to output_len when the block decodes to fewer bytes; a block of
        # exactly `size` bytes is the one that no longer fits into size - 1.
        if size:
            try:
                cramjam.lz4.decompress_block(src, output_len=size - 1)
            except cramjam.DecompressionError:
                pass
            else:
                raise RemoteProtocolError("lz4 uncompress failed")
    if len(out) != size:
        raise RemoteProtocolError(f"{method.name.lower()} uncompress: size mismatch")
    return out


def _snappy_declared_length(src: bytes) -> int:
    """Read the varint uncompressed length that starts a raw snappy stream (before decoding it)."""
    value = 0
    for i in range(5):
        if i >= len(src):
            raise ValueError("truncated varint")
        b = src[i]
        value |= (b & 0x7F) << (7 * i)
        if not b & 0x80:
            return value
    raise ValueError("varint too long")
