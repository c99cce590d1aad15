"""Describing a pcap_block_store v7 container (spec §9) for the transcript's `pcap_block_store` field.

The container says neither how its data area is compressed (snappy and LZ4 are configured, not signalled) nor
which checksum formula was used, so the description tries every candidate and reports which ones fit -- the
question an operator has when a receiver rejects blocks (e.g. a sender on LZ4 and a receiver on snappy).
Parsing and decompression are vmproto.wire.pbstore / compression; this module only arranges their results.
"""

from __future__ import annotations

import struct
from typing import Any

from vmproto.inspect.summary import packet_summary
from vmproto.wire.compression import PbCompression, pb_decompress
from vmproto.wire.errors import ProtocolError
from vmproto.wire.framing import byte_sum
from vmproto.wire.pbstore import (
    CONTAINER_HEADER_SIZE,
    HM_PLUS2,
    Container,
    checksum32buf,
    decode_container,
    peek_header,
)

_HM_NAMES = {0: "plus (36-byte packet headers)", 1: "plus2 (58-byte packet headers)"}
_METHODS = (("snappy", PbCompression.SNAPPY), ("lz4", PbCompression.LZ4))


def _reason(exc: BaseException) -> str:
    return getattr(exc, "reason", None) or str(exc)


def describe_container(payload: bytes) -> dict[str, Any]:
    """Return every header field, the offsets, checksum and compression findings and one entry per packet.

    Never raises: what cannot be decoded is reported in `error` (header) or `packets_error` (data area).
    """
    try:
        hdr = peek_header(payload)
    except ProtocolError as exc:
        return {"error": f"not a container: {_reason(exc)} ({len(payload)} bytes)"}
    out: dict[str, Any] = {
        "title": hdr.title.decode("latin-1"),
        "version": hdr.version,
        "pad_17_20_hex": hdr.pad17.hex(),
        "size": hdr.size,
        "size_compress": hdr.size_compress,
        "count": hdr.count,
        "dlink": hdr.dlink,
        "sensor_id": hdr.sensor_id,
        "ifname_hex": hdr.ifname.hex(),
        "ifname": hdr.ifname_text,
        "hm": hdr.hm,
        "hm_name": _HM_NAMES.get(hdr.hm, f"unknown header mode {hdr.hm}"),
        "pad_47_hex": hdr.pad47.hex(),
        "checksum": hdr.checksum,
        "counter": hdr.counter,
        "require_confirmation": hdr.require_confirmation,
        "pad_57_60_hex": hdr.pad57.hex(),
        "time_s": hdr.time_s,
    }
    offsets_end = CONTAINER_HEADER_SIZE + 4 * hdr.count
    if offsets_end > len(payload):
        out["error"] = f"container truncated inside its offsets ({len(payload)} of {offsets_end} bytes)"
        return out
    offsets = list(struct.unpack_from(f"<{hdr.count}I", payload, CONTAINER_HEADER_SIZE))
    declared = hdr.total_size
    out["offsets"] = offsets
    out["declared_total_len"] = declared
    out["actual_payload_len"] = len(payload)
    out["trailing_bytes"] = max(0, len(payload) - declared)
    if len(payload) < declared:
        out["missing_bytes"] = declared - len(payload)
    body = payload[CONTAINER_HEADER_SIZE:declared]
    candidates = {
        "signed8_mod65536": checksum32buf(body),
        "unsigned8_mod65536": byte_sum(body) & 0xFFFF,
        "unsigned8_mod2^32": byte_sum(body),
    }
    out["checksum_candidates_over_bytes_64_to_end"] = candidates
    # The sender stores max(sum, 1) so that 0 keeps meaning "no checksum".
    out["checksum_matches"] = [name for name, value in candidates.items() if max(value, 1) == hdr.checksum]
    container: Container | None = None
    problem = None
    if hdr.size_compress:
        area = payload[offsets_end:declared]
        method = None
        for name, pb_method in _METHODS:
            try:
                pb_decompress(pb_method, area, hdr.size)
                ok = True
            except ProtocolError:
                ok = False
            out[f"{name}_decodes"] = ok
            if ok and method is None:
                method = (name, pb_method)
        out["data_compression"] = method[0] if method else "undecodable (neither snappy nor lz4)"
        if method is not None:
            container, problem = _decode(payload, method[1])
    else:
        out["data_compression"] = "none"
        container, problem = _decode(payload, None)
    increasing = all(a < b for a, b in zip(offsets, offsets[1:], strict=False)) and (
        not offsets or offsets[-1] < hdr.size
    )
    out["offsets_strictly_increasing"] = increasing
    if container is None:
        if problem is not None:
            out["packets_error"] = problem
        return out
    out["packets_contiguous_no_padding"] = _contiguous(container)
    out["packets"] = [_packet(container, i, hdr.dlink) for i in range(len(container))]
    return out


def _decode(payload: bytes, method: PbCompression | None) -> tuple[Container | None, str | None]:
    try:
        return decode_container(payload, method), None
    except ProtocolError as exc:
        return None, _reason(exc)


def _contiguous(container: Container) -> bool:
    hdr_size = container.header.header_size
    pos = 0
    for i, off in enumerate(container.offsets):
        if off != pos:
            return False
        pos = off + hdr_size + container.packet(i)[0].caplen
    return pos == container.header.size


def _packet(container: Container, index: int, block_dlink: int) -> dict[str, Any]:
    ph, data = container.packet(index)
    off = container.offsets[index]
    hdr_size = container.header.header_size
    entry: dict[str, Any] = {
        "i": index,
        "offset": off,
        "ts_tv_sec": ph.ts_sec,
        "ts_tv_usec": ph.ts_usec,
        "caplen": ph.caplen,
        "len": ph.len,
        "filler_16_24_hex": ph.fillers.hex(),
        "header_ip_encaps_offset": ph.header_ip_encaps_offset,
        "header_ip_offset": ph.header_ip_offset,
        "std": ph.std,
        "dlink": ph.dlink,
        "vlan": ph.vlan,
        "pid_flags": ph.flags,
        "pad_35": ph.pad35,
    }
    if container.header.hm == HM_PLUS2:
        entry.update(
            detect_headers=ph.detect_headers, pad_37=ph.pad37, eth_protocol=ph.eth_protocol,
            dc_hex=ph.dc.hex() if ph.dc is not None else None, ignore=ph.ignore, pad_57=ph.pad57,
        )
    entry["header_hex"] = container.area[off : off + hdr_size].hex()
    packet = bytes(data)
    entry["summary"] = packet_summary(ph.dlink or block_dlink, packet)
    entry["packet_hex"] = packet.hex()
    return entry
