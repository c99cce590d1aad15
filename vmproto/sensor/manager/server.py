"""The sensor's manager port (`managerip`:`managerport`, default 127.0.0.1:5029), facts §2.4 / §5.4.

One request per connection:

* Request: a plain command line, or the AES wrapper `<cipher>:<ciphertext>:sea` (spec §3.6). The first
  read takes up to 4095 bytes; a plain request holding a line end, or an AES request holding `:sea`, is
  complete at once. Otherwise reading goes on while data keeps arriving within 500 ms and stops at the
  first line end (plain) or `:sea` (AES), or after 500 ms of silence. (The reference waits the 500 ms
  after a lone `cmd\\r\\n`; vmproto answers at once: only the first line is ever used, so no client can
  tell, except by the latency.) Only the first line of the plain text is the command.
* AES: with the manager key (`manager_aes_key` / `manager_aes_iv`, or the DB's `manager_key`). A request
  that does not decrypt runs as the command `failed_aes_decrypt`, i.e. `command not found\\n`.
* Enforcement: with a key set and `manager_enable_unencrypted` off, a plain request for a command not in
  the exempt list gets `need aes!\\n`.
* Reply: raw bytes, or for an AES request `aes:` + one stream (request's cipher, manager key and IV) that
  starts with the first output byte (an empty reply is nothing at all); then the server closes.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import trio

from vmproto.logs import RateLimiter, log_event
from vmproto.wire.crypto import ManagerAesKey, ManagerReplyEncryptor, unwrap_manager_request
from vmproto.wire.errors import ProtocolError

from .commands import COMMAND_NOT_FOUND, CommandContext, execute, first_line, not_need_aes

__all__ = ["ManagerRequest", "ManagerServer", "NEED_AES_REPLY", "parse_request", "read_request", "request_complete"]

log = logging.getLogger("vmproto.sensor.manager")

NEED_AES_REPLY = b"need aes!\n"
FAILED_AES_COMMAND = "failed_aes_decrypt"
FIRST_READ = 4095
ASSEMBLY_SILENCE = 0.5


def _is_aes(buf: bytes) -> bool:
    return buf[:3].lower() == b"aes"


def request_complete(buf: bytes) -> bool:
    """True when `buf` already holds a whole request: a line end (plain) or `:sea` (AES)."""
    if _is_aes(buf):
        return b":sea" in buf
    return b"\n" in buf or b"\r" in buf


async def read_request(stream: trio.abc.ReceiveStream, *, first_timeout: float = 30.0,
                       silence: float = ASSEMBLY_SILENCE, max_bytes: int = 1 << 20) -> bytes:
    """Read one request (see the module docstring). Returns the bytes read (empty: the peer sent nothing
    within `first_timeout`, or closed). Stops at `max_bytes`."""
    buf = b""
    with trio.move_on_after(first_timeout):
        buf = await stream.receive_some(FIRST_READ)
    while buf and not request_complete(buf) and len(buf) < max_bytes:
        chunk = b""
        with trio.move_on_after(silence):
            chunk = await stream.receive_some(min(65536, max_bytes - len(buf)))
        if not chunk:
            break
        buf += chunk
    return buf


@dataclass(frozen=True, slots=True)
class ManagerRequest:
    """A parsed request: the command line, and the cipher name when it came AES-wrapped."""

    line: str
    cipher: str | None = None

    @property
    def aes(self) -> bool:
        return self.cipher is not None


def parse_request(raw: bytes, key: ManagerAesKey | None) -> ManagerRequest:
    """Turn the request bytes into a command line. An AES request that cannot be decrypted (or arrives
    while no key is known) becomes the command `failed_aes_decrypt`, answered as a plain request."""
    if _is_aes(raw):
        if key is None:
            return ManagerRequest(FAILED_AES_COMMAND)
        try:
            cipher, plain = unwrap_manager_request(raw, key)
        except ProtocolError:
            return ManagerRequest(FAILED_AES_COMMAND)
        return ManagerRequest(first_line(plain.decode("utf-8", "surrogateescape")), cipher)
    return ManagerRequest(first_line(raw.decode("utf-8", "surrogateescape")))


class _PlainOut:
    def __init__(self, stream: trio.abc.SendStream) -> None:
        self.stream = stream
        self.sent = 0

    async def write(self, data: bytes) -> None:
        if data:
            await self.stream.send_all(data)
            self.sent += len(data)

    async def finish(self) -> None:
        return


class _AesOut:
    def __init__(self, stream: trio.abc.SendStream, key: ManagerAesKey, cipher: str) -> None:
        self.stream = stream
        self.enc = ManagerReplyEncryptor(key, cipher, eager_prefix=False)
        self.sent = 0

    async def write(self, data: bytes) -> None:
        out = self.enc.update(data)
        if out:
            await self.stream.send_all(out)
            self.sent += len(out)

    async def finish(self) -> None:
        out = self.enc.finalize()
        if out:
            await self.stream.send_all(out)
            self.sent += len(out)


class ManagerServer:
    """Serves the manager port. `key_source()` returns the current manager key (None: no key known), so a
    key loaded later from the database takes effect without a restart.

    `await nursery.start(server.serve, host, port)` listens and returns the bound (host, port) list.
    """

    def __init__(self, ctx: CommandContext, *, key_source: Callable[[], ManagerAesKey | None] = lambda: None,
                 enable_unencrypted: bool = False, max_connections: int = 64, request_timeout: float = 30.0,
                 reply_timeout: float = 600.0) -> None:
        self.ctx = ctx
        self.key_source = key_source
        self.enable_unencrypted = enable_unencrypted
        self.request_timeout = request_timeout
        self.reply_timeout = reply_timeout
        self._limiter = trio.CapacityLimiter(max_connections)
        self._log_limit = RateLimiter(per_second=2.0, burst=20)
        self.handled = 0

    async def serve(self, host: str, port: int, *,
                    task_status: trio.TaskStatus[list[tuple[str, int]]] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen on host:port and serve until cancelled. Reports the bound addresses through task_status.
        Raises OSError when the address cannot be bound."""
        listeners = await trio.open_tcp_listeners(port, host=host or None)
        addrs = [tuple(lst.socket.getsockname()[:2]) for lst in listeners]
        log_event(log, logging.INFO, "manager listening", addr=",".join(f"{h}:{p}" for h, p in addrs))
        async with trio.open_nursery() as nursery:
            task_status.started(addrs)  # type: ignore[arg-type]
            await trio.serve_listeners(self.handle, listeners, handler_nursery=nursery)

    async def handle(self, stream: trio.abc.Stream) -> None:
        """Serve one connection: read the request, answer it, close."""
        peer = _peer(stream)
        try:
            async with self._limiter:
                await self._handle(stream, peer)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self._note(peer, "manager peer gone", error=repr(exc))
        finally:
            with trio.CancelScope(shield=True):
                with trio.move_on_after(1):
                    await stream.aclose()

    async def _handle(self, stream: trio.abc.Stream, peer: str) -> None:
        raw = await read_request(stream, first_timeout=self.request_timeout)
        if not raw:
            return
        key = self.key_source()
        request = parse_request(raw, key)
        self.handled += 1
        out: _PlainOut | _AesOut
        if request.aes and key is not None:
            out = _AesOut(stream, key, request.cipher or "aes-128-cbc")
        else:
            out = _PlainOut(stream)
        word = request.line.split(maxsplit=1)[0] if request.line.strip() else ""
        if request.line == FAILED_AES_COMMAND:
            self._note(peer, "manager request failed aes decrypt")
            await out.write(COMMAND_NOT_FOUND)
        elif (key is not None and not request.aes and not self.enable_unencrypted
              and not not_need_aes(request.line)):
            self._note(peer, "manager request without aes refused", command=word)
            await out.write(NEED_AES_REPLY)
        else:
            with trio.move_on_after(self.reply_timeout if self.reply_timeout > 0 else math.inf) as scope:
                name = await execute(request.line, out, self.ctx)
            if scope.cancelled_caught:
                log_event(log, logging.WARNING, "manager reply cut at the time limit", peer=peer, command=word,
                          limit_s=self.reply_timeout)
            log_event(log, logging.DEBUG, "manager command", peer=peer, command=name or word,
                      aes=request.aes, bytes=out.sent)
        await out.finish()

    def _note(self, peer: str, event: str, **kv: object) -> None:
        if self._log_limit.allow(peer.rsplit(":", 1)[0], trio.current_time()):
            log_event(log, logging.INFO, event, peer=peer, **kv)


def _peer(stream: trio.abc.Stream) -> str:
    sock = getattr(stream, "socket", None)
    try:
        host, port = sock.getpeername()[:2]  # type: ignore[union-attr]
    except (AttributeError, OSError):
        return "?"
    return f"{host}:{port}"
