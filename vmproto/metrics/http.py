"""A minimal HTTP/1.1 responder on Trio for the metrics endpoint: `GET /metrics`, `GET /status`, nothing else.

Why not prometheus_client's own HTTP server: it serves from a thread, and the stats objects it would read are
mutated by Trio tasks without locks. Serving from a Trio task means every scrape reads the counters between two
Trio checkpoints, i.e. a consistent view, with no locking anywhere in the hot paths.

The responder is deliberately small and strict: one request per connection (`Connection: close`), request head
capped in size and time, only GET and HEAD, a cap on concurrent scrapes. A route is a function returning
`(body, content type)`; it runs in the Trio thread and must not block.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import trio

from vmproto.logs import log_event

__all__ = ["HttpEndpoint", "Route", "MAX_HEAD", "HEAD_TIMEOUT"]

log = logging.getLogger("vmproto.metrics")

Route = Callable[[], tuple[bytes, str]]

MAX_HEAD = 8192  # bytes of request line + headers; a scraper sends a few hundred
HEAD_TIMEOUT = 5.0  # seconds to receive the request head
WRITE_TIMEOUT = 10.0
MAX_CONCURRENT = 16

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            408: "Request Timeout", 431: "Request Header Fields Too Large", 500: "Internal Server Error",
            503: "Service Unavailable"}


class _BadRequest(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status


def _response(status: int, body: bytes, content_type: str, *, head_only: bool = False) -> bytes:
    head = (f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
            f"Content-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n"
            "Cache-Control: no-store\r\n"
            "Connection: close\r\n\r\n").encode("ascii")
    return head if head_only else head + body


def parse_request_head(data: bytes) -> tuple[str, str]:
    """(method, path without query string) of a complete request head (ending in a blank line).

    Raises _BadRequest (400) for a request line that is not `METHOD SP target SP HTTP/x.y`."""
    line = data.split(b"\r\n", 1)[0].split(b"\n", 1)[0]
    parts = line.split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1.") or not parts[1].startswith(b"/"):
        raise _BadRequest(400, "malformed request line")
    try:
        method, target = parts[0].decode("ascii"), parts[1].decode("ascii")
    except UnicodeDecodeError:
        raise _BadRequest(400, "non-ASCII request line") from None
    return method, target.split("?", 1)[0]


class HttpEndpoint:
    """Serves `routes` (path → Route) on one TCP address.

    `await nursery.start(endpoint.serve)` binds and returns the bound (host, port); raises OSError when the
    address cannot be bound. `requests` counts answered requests by status (tests, debugging).
    """

    def __init__(self, host: str, port: int, routes: Mapping[str, Route]) -> None:
        self.host = host
        self.port = port
        self.routes = dict(routes)
        self.requests: dict[int, int] = {}
        self.address: tuple[str, int] | None = None
        self._limit = trio.CapacityLimiter(MAX_CONCURRENT)

    async def serve(self, *, task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(self.port, host=self.host or None)
        try:
            bound = listeners[0].socket.getsockname()
            address = self.address = (str(bound[0]), int(bound[1]))
            log_event(log, logging.INFO, "metrics endpoint listening",
                      address=",".join(f"{ls.socket.getsockname()[0]}:{ls.socket.getsockname()[1]}"
                                       for ls in listeners),
                      paths=",".join(sorted(self.routes)))
            task_status.started(address)
            async with trio.open_nursery() as nursery:
                for ls in listeners:
                    nursery.start_soon(self._accept_loop, ls, nursery)
        finally:
            with trio.CancelScope(shield=True):
                for ls in listeners:
                    await ls.aclose()

    async def _accept_loop(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:  # out of descriptors and the like: the endpoint must not end the process
                log_event(log, logging.WARNING, "metrics accept failed", error=exc.strerror or str(exc))
                await trio.sleep(0.5)
                continue
            if self._limit.borrowed_tokens >= self._limit.total_tokens:
                await self._answer(stream, _response(503, b"busy\n", "text/plain; charset=utf-8"))
                continue
            nursery.start_soon(self._handle, stream)

    async def _handle(self, stream: trio.SocketStream) -> None:
        async with self._limit:
            try:
                method, path = await self._read_head(stream)
                reply = self._dispatch(method, path)
            except _BadRequest as exc:
                reply = _response(exc.status, f"{exc}\n".encode(), "text/plain; charset=utf-8")
            await self._answer(stream, reply)

    async def _read_head(self, stream: trio.SocketStream) -> tuple[str, str]:
        data = bytearray()
        with trio.move_on_after(HEAD_TIMEOUT):
            while b"\r\n\r\n" not in data and b"\n\n" not in data:
                if len(data) > MAX_HEAD:
                    raise _BadRequest(431, "request head too large")
                try:
                    chunk = await stream.receive_some(4096)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    raise _BadRequest(400, "connection failed") from None
                if not chunk:
                    raise _BadRequest(400, "incomplete request")
                data += chunk
            return parse_request_head(bytes(data))
        raise _BadRequest(408, "request head timeout")

    def _dispatch(self, method: str, path: str) -> bytes:
        route = self.routes.get(path)
        if route is None:
            return _response(404, b"not found; try " + ", ".join(sorted(self.routes)).encode() + b"\n",
                             "text/plain; charset=utf-8")
        if method not in ("GET", "HEAD"):
            return _response(405, b"only GET and HEAD\n", "text/plain; charset=utf-8")
        try:
            body, content_type = route()
        except Exception as exc:  # noqa: BLE001 - a broken collector must not end the endpoint; log it
            log.exception("metrics route %s failed", path)
            return _response(500, f"internal error: {type(exc).__name__}\n".encode(), "text/plain; charset=utf-8")
        return _response(200, body, content_type, head_only=method == "HEAD")

    async def _answer(self, stream: trio.SocketStream, data: bytes) -> None:
        status = int(data[9:12])
        self.requests[status] = self.requests.get(status, 0) + 1
        try:
            with trio.move_on_after(WRITE_TIMEOUT):
                await stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # the scraper went away; nothing to do
        finally:
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(stream)
