"""Human-readable rendering of transcript entries (the default output of `python -m vmproto.inspect`)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

_PREVIEW = 160
_PACKETS_SHOWN = 5


def _preview(text: str, limit: int = _PREVIEW) -> str:
    flat = text.replace("\r", "\\r").replace("\n", "\\n")
    return flat if len(flat) <= limit else flat[:limit] + f"... ({len(text)} chars)"


def _arrow(direction: str | None) -> str:
    return {"c2s": "C->S", "s2c": "S->C"}.get(direction or "", "    ")


def render_message(msg: dict[str, Any], *, full: bool = False) -> Iterator[str]:
    """Yield the lines describing one entry."""
    limit = 1 << 30 if full else _PREVIEW
    head = f"  #{msg.get('seq')} frame {msg.get('pcap_frame')} {_arrow(msg.get('dir'))} @{msg.get('stream_offset')}"
    kind = msg.get("kind")
    if kind == "error":
        yield f"{head} !! ERROR: {msg.get('reason')}" + (f" (expected {msg['expected']})" if msg.get("expected") else "")
        return
    size = f"{msg.get('length')} bytes"
    if msg.get("plain_len") is not None and msg.get("plain_len") != msg.get("length"):
        size += f" ({msg['plain_len']} plain)"
    comp = msg.get("decompressed")
    if comp and comp != "none":
        size += f", {comp} -> {msg.get('decompressed_len')}"
    yield f"{head} {kind} {size}" + (" [resynced]" if msg.get("resynced") else "")
    store = msg.get("store")
    pb = msg.get("pcap_block_store")
    if store is not None:
        yield f"      store id_main={store.get('id_main')} time={store.get('time')} {store.get('format', '')}"
        for item in store.get("items", []):
            yield f"        L{item['length']}: {_preview(item['starts'], limit)}"
        if "body_len" in store and msg.get("text"):
            yield f"      {_preview(msg['text'], limit)}"
    elif pb is not None:
        yield (f"      pcap_block_store v{pb.get('version')} counter={pb.get('counter')} count={pb.get('count')} "
               f"size={pb.get('size')} size_compress={pb.get('size_compress')} data={pb.get('data_compression')} "
               f"checksum={pb.get('checksum')} {pb.get('checksum_matches')} time_s={pb.get('time_s')}")
        packets = pb.get("packets") or []
        shown = packets if full else packets[:_PACKETS_SHOWN]
        for p in shown:
            yield f"        [{p['i']}] {p['ts_tv_sec']}.{p['ts_tv_usec']:06d} {p['summary']}"
        if len(shown) < len(packets):
            yield f"        ... {len(packets) - len(shown)} more packets"
    elif msg.get("text") is not None:
        yield f"      {_preview(msg['text'], limit)}"
    elif msg.get("plain_hex"):
        yield f"      (binary) {_preview(msg['plain_hex'], limit)}"
    if msg.get("sum_ok") is False:
        yield "      !! checksum does not match"


def render(messages: Iterable[dict[str, Any]], *, full: bool = False) -> Iterator[str]:
    """Yield the text lines of a whole transcript, with one heading per connection."""
    current = object()
    for msg in messages:
        key = (msg.get("conn"), msg.get("type_connection"))
        if key != current:
            current = key
            if msg.get("conn") is None:
                yield "== capture"
            else:
                yield f"== connection from port {msg['conn']}: {msg.get('type_connection')}"
        yield from render_message(msg, full=full)


def to_json_line(msg: dict[str, Any]) -> str:
    """One entry as a JSON line (the `--json` output)."""
    return json.dumps(msg, ensure_ascii=False)
