"""From capture bytes to transcript entries: read, reassemble, decode every connection."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vmproto.inspect.decode import decode_connection
from vmproto.inspect.keys import KeyStore
from vmproto.inspect.pcapread import Capture, parse_capture, read_capture
from vmproto.inspect.tcp import connections

DEFAULT_PORT = 60024

__all__ = ["DEFAULT_PORT", "connections", "inspect_capture"]


def inspect_capture(
    capture: Capture | str | Path | bytes,
    keys: KeyStore | None = None,
    *,
    server_port: int = DEFAULT_PORT,
    client_port: int | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield one transcript entry per message, connection after connection (opening order).

    `client_port` restricts the output to the connection(s) from that port. A capture that ends early yields a
    final entry `{"kind": "error", "conn": None, ...}` saying where the file was cut. Raises InspectError only
    when the file is not a capture at all.
    """
    if isinstance(capture, bytes):
        capture = parse_capture(capture)
    elif not isinstance(capture, Capture):
        capture = read_capture(capture)
    keys = keys if keys is not None else KeyStore.empty()
    for conn in connections(capture, server_port):
        if client_port is not None and conn.client_port != client_port:
            continue
        yield from decode_connection(conn, keys)
    if capture.problem is not None:
        yield {
            "conn": None, "type_connection": None, "seq": None, "ts": None,
            "pcap_frame": len(capture.frames) + 1, "dir": None, "stream_offset": None,
            "kind": "error", "reason": capture.problem,
        }
