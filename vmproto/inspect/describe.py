"""Describing decoded payloads for the transcript: printable text, compression headers, store messages.

Decoding itself is vmproto.wire's job; this module only reads header fields that the codecs do not report
(gzip flags and OS byte, zstd frame descriptor) and shapes results into the transcript's fields.
"""

from __future__ import annotations

import re
import struct
from typing import Any

from vmproto.wire.compression import Compression
from vmproto.wire.errors import ProtocolError
from vmproto.wire.store_msg import BadStoreItems, StoreMessage, decode_store_message

COMPRESSION_NAMES = {
    Compression.NONE: "none",
    Compression.GZIP: "gzip",
    Compression.LZO: "lzo",
    Compression.ZSTD: "zstd",
}

# Text means: valid UTF-8 without control characters other than TAB, LF and CR.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_STORE_ITEM_PREVIEW = 60


def as_text(data: bytes) -> str | None:
    """Return `data` as a string when it is printable text, else None (binary payloads)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return None if _CONTROL.search(text) else text


def compression_info(kind: Compression, compressed: bytes) -> dict[str, Any]:
    """Header fields of a compressed payload (RFC 1952 gzip, RFC 8878 zstd frame, the reference's LZO prefix)."""
    if kind == Compression.GZIP:
        info: dict[str, Any] = {
            "gzip_flg": compressed[3] if len(compressed) > 3 else None,
            "gzip_mtime": struct.unpack_from("<I", compressed, 4)[0] if len(compressed) >= 8 else None,
            "gzip_xfl": compressed[8] if len(compressed) > 8 else None,
            "gzip_os": compressed[9] if len(compressed) > 9 else None,
            # ISIZE: the trailer's uncompressed length mod 2^32.
            "gzip_isize": struct.unpack_from("<I", compressed, len(compressed) - 4)[0] if len(compressed) >= 18 else None,
        }
        return info
    if kind == Compression.ZSTD:
        return _zstd_frame_info(compressed)
    if kind == Compression.LZO:
        declared = struct.unpack_from("<I", compressed, 3)[0] if len(compressed) >= 7 else None
        return {"lzo_declared_len": declared}
    return {}


def _zstd_frame_info(frame: bytes) -> dict[str, Any]:
    if len(frame) < 5:
        return {"zstd_frame_header_descriptor": None}
    fhd = frame[4]
    content_size_flag = fhd >> 6
    single_segment = (fhd >> 5) & 1
    dict_id_flag = fhd & 3
    pos = 5
    window_size = None
    if not single_segment and len(frame) > pos:
        wd = frame[pos]
        base = 1 << (10 + (wd >> 3))
        window_size = base + (base // 8) * (wd & 7)
        pos += 1
    pos += (0, 1, 2, 4)[dict_id_flag]
    fcs_len = (1 if single_segment else 0, 2, 4, 8)[content_size_flag]
    content_size = None
    if fcs_len and len(frame) >= pos + fcs_len:
        content_size = int.from_bytes(frame[pos : pos + fcs_len], "little")
        if fcs_len == 2:
            content_size += 256
    if single_segment:
        window_size = content_size
    return {
        "zstd_frame_header_descriptor": fhd,
        "zstd_content_size_flag": content_size_flag,
        "zstd_single_segment": single_segment,
        "zstd_content_checksum": (fhd >> 2) & 1,
        "zstd_dict_id_flag": dict_id_flag,
        "zstd_content_size": content_size,
        "zstd_window_size": window_size,
    }


def describe_store(text: bytes) -> dict[str, Any]:
    """The `store` field of a store message (spec §8): id_main, time, and the body or its `L<len>:` items.

    Never raises: a message vmproto.wire rejects is described with `parse_error` (the reference's reason).
    """
    try:
        msg = decode_store_message(text)
    except BadStoreItems as exc:
        out = _describe(text, exc.partial)
        out["items_parse_ok"] = False
        out["parse_error"] = exc.reason
        return out
    except ProtocolError as exc:
        head = text.split(b"|", 1)[0]
        return {
            "id_main": int(head) if head.isdigit() else None,
            "parse_error": getattr(exc, "reason", str(exc)),
            "items_parse_ok": False,
        }
    return _describe(text, msg)


def _describe(text: bytes, msg: StoreMessage) -> dict[str, Any]:
    # Where the body starts: after `<id>|` and the optional `T<time>|`.
    body_start = text.index(b"|") + 1
    if msg.client_time is not None:
        body_start = text.index(b"|", body_start) + 1
    out: dict[str, Any] = {"id_main": msg.id_main, "time": msg.client_time}
    if not msg.batched:
        out["format"] = "single body"
        out["body_len"] = len(text) - body_start
        return out
    out["format"] = "L<len>:<query>\\n items"
    items = []
    pos = body_start
    for query in msg.queries:
        # Each item is `L<len>:<query>` followed by one separator byte (LF); the decoder has checked the lengths.
        pos = text.index(b":", pos) + 1 + len(query)
        separator = text[pos : pos + 1]
        items.append(
            {
                "length": len(query),
                "separator_after_hex": separator.hex(),
                "starts": query[:_STORE_ITEM_PREVIEW].decode("utf-8", "replace"),
            }
        )
        pos += 1
    out["items"] = items
    out["items_parse_ok"] = True
    return out
