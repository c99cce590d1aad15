"""A small fault-injecting TCP proxy put in front of a central to prove that cases can fail.

Each accepted client gets its own upstream connection. Central→client bytes are cut into blocks (after the raw
opening exchange) and handed to a `Fault`, which may rewrite, drop or delay them; client→central bytes can be
rewritten too. Unparsable streams (raw GUI replies) pass through unchanged.
"""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio

from vmproto.wire.framing import byte_sum

__all__ = ["Fault", "FaultProxy", "drop_payload", "replace_payload", "corrupt_sum", "delay_payload"]

_MAGIC = b"vm_cloud_router_block_header"

# (connection opening line, block payload, full frame) -> frames to forward (b"" drops it); a rule that leaves
# a block alone returns the `frame` object itself
BlockRule = Callable[[bytes, bytes, bytes], Awaitable[bytes]]


@dataclass
class Fault:
    """What the proxy changes. `to_client` sees every central→client block; `opening` may rewrite the line."""

    to_client: BlockRule | None = None
    opening: Callable[[bytes], bytes] | None = None
    raw_to_client: Callable[[bytes, bytes], bytes] | None = None  # (opening, raw chunk) for non-block replies
    hits: list[str] = field(default_factory=list)


def _frame(payload: bytes, checksum: int | None = None) -> bytes:
    return _MAGIC + b"\0" * 4 + struct.pack("<II", len(payload), byte_sum(payload) if checksum is None else checksum) \
        + payload


def replace_payload(old: bytes, new: bytes) -> BlockRule:
    """Rewrite a plain block whose payload is `old` into `new` (a wrong reply string)."""
    async def rule(line: bytes, payload: bytes, frame: bytes) -> bytes:
        return _frame(new) if payload == old else frame
    return rule


def drop_payload(old: bytes) -> BlockRule:
    """Swallow plain blocks whose payload is `old` (e.g. no ping)."""
    async def rule(line: bytes, payload: bytes, frame: bytes) -> bytes:
        return b"" if payload == old else frame
    return rule


def delay_payload(old: bytes, seconds: float) -> BlockRule:
    """Hold plain blocks whose payload is `old` back for `seconds`."""
    async def rule(line: bytes, payload: bytes, frame: bytes) -> bytes:
        if payload == old:
            rule.matched.append(line)  # type: ignore[attr-defined]  (recorded before the sleep may be cancelled)
            await trio.sleep(seconds)
            return frame[:40] + frame[40:]  # a new object: the proxy counts it as applied
        return frame
    rule.matched = []  # type: ignore[attr-defined]
    return rule


def corrupt_sum(first_only: bool = True) -> BlockRule:
    """Add 1 to the checksum field of central→client blocks (the first one per connection by default)."""
    async def rule(line: bytes, payload: bytes, frame: bytes) -> bytes:
        return frame[:36] + struct.pack("<I", (struct.unpack_from("<I", frame, 36)[0] + 1) & 0xFFFFFFFF) + frame[40:]
    rule.first_only = first_only  # type: ignore[attr-defined]
    return rule


class FaultProxy:
    """Listen on 127.0.0.1 (ephemeral port) and forward to `upstream` applying `fault`."""

    def __init__(self, upstream: tuple[str, int], fault: Fault) -> None:
        self.upstream = upstream
        self.fault = fault
        self.port = 0

    async def serve(self, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled; reports the listening port through task_status."""
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self.port)
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, client: trio.SocketStream) -> None:
        try:
            upstream = await trio.open_tcp_stream(*self.upstream)
        except OSError:
            await client.aclose()
            return
        line_box: list[bytes] = [b""]
        async with client, upstream, trio.open_nursery() as nursery:
            nursery.start_soon(self._up, client, upstream, line_box, nursery.cancel_scope)
            nursery.start_soon(self._down, upstream, client, line_box, nursery.cancel_scope)

    async def _up(self, src: trio.SocketStream, dst: trio.SocketStream, line_box: list[bytes],
                  scope: trio.CancelScope) -> None:
        first = True
        try:
            while data := await src.receive_some(65536):
                if first:
                    first = False
                    line_box[0] = data.split(b"\r\n", 1)[0]
                    if self.fault.opening is not None:
                        data = self.fault.opening(data)
                await dst.send_all(data)
            await dst.send_eof()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            scope.cancel()

    async def _down(self, src: trio.SocketStream, dst: trio.SocketStream, line_box: list[bytes],
                    scope: trio.CancelScope) -> None:
        buf = bytearray()
        count = 0
        try:
            while True:
                data = await src.receive_some(65536)
                if not data:
                    break
                buf += data
                while buf:
                    if not buf.startswith(_MAGIC[: len(buf)]) or self.fault.to_client is None:
                        out = bytes(buf)
                        buf.clear()
                        if self.fault.raw_to_client is not None:
                            out = self.fault.raw_to_client(line_box[0], out)
                        await dst.send_all(out)
                        break
                    if len(buf) < 40:
                        break
                    length = struct.unpack_from("<I", buf, 32)[0]
                    if len(buf) < 40 + length:
                        break
                    frame = bytes(buf[: 40 + length])
                    del buf[: 40 + length]
                    rule = self.fault.to_client
                    count += 1
                    if getattr(rule, "first_only", False) and count > 1:
                        out = frame
                    else:
                        out = await rule(line_box[0], frame[40:], frame)
                    if out is not frame:  # rules return the very same object when they leave a block alone
                        self.fault.hits.append(line_box[0].decode("latin-1"))
                    if out:
                        await dst.send_all(out)
            if buf:
                await dst.send_all(bytes(buf))
            await dst.send_eof()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            scope.cancel()
