"""The `prometheus_bind` endpoint: `/metrics` (Prometheus text format) and `/status` (JSON for the `status`
subcommand), served by a Trio task in the process's own nursery.

    endpoint = MetricsEndpoint.from_bind(cfg.get("prometheus_bind"), collector, status=lambda: {...})
    address = await nursery.start(endpoint.serve)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import trio
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.process_collector import ProcessCollector

from vmproto.config import ConfigError, parse_host_port
from vmproto.metrics.http import HttpEndpoint

__all__ = ["MetricsEndpoint", "MetricsConfigError", "MetricsStartError", "parse_bind", "start_endpoint",
           "STATUS_CONTENT_TYPE"]

STATUS_CONTENT_TYPE = "application/json; charset=utf-8"


class MetricsConfigError(Exception):
    """`prometheus_bind` cannot be used (the message names the value and why)."""


def parse_bind(value: str) -> tuple[str, int]:
    """`host:port`, `[v6]:port` or `:port` / `port` (all addresses) → (host, port); host "" means every address.

    Raises MetricsConfigError for a missing or out-of-range port."""
    text = str(value).strip()
    if not text:
        raise MetricsConfigError("prometheus_bind is empty")
    if text.isdigit():
        text = ":" + text
    try:
        host, port = parse_host_port(text, -1)
    except ConfigError as exc:
        raise MetricsConfigError(f"prometheus_bind = {value!r}: {exc}") from None
    if not 0 <= port <= 65535:
        raise MetricsConfigError(f"prometheus_bind = {value!r}: needs host:port with a port 0..65535")
    if host in ("*", "0.0.0.0"):
        host = "0.0.0.0"
    return host, port


class MetricsEndpoint:
    """One process's metrics endpoint. `collector` has a `collect()` yielding prometheus_client families;
    `status` returns the JSON-friendly `/status` document."""

    def __init__(self, host: str, port: int, collector: Any, status: Callable[[], dict[str, Any]], *,
                 process_metrics: bool = True) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(collector)
        if process_metrics:
            # process_* families (RSS, CPU, open fds) read from /proc at scrape time; no thread involved.
            ProcessCollector(registry=self.registry)
        self._status = status
        self.http = HttpEndpoint(host, port, {"/metrics": self._metrics, "/status": self._status_json,
                                              "/": self._index})

    @classmethod
    def from_bind(cls, bind: str, collector: Any, status: Callable[[], dict[str, Any]]) -> MetricsEndpoint:
        """Build from a `prometheus_bind` value. Raises MetricsConfigError."""
        host, port = parse_bind(bind)
        return cls(host, port, collector, status)

    def render(self) -> bytes:
        """The Prometheus text exposition of every family now."""
        return generate_latest(self.registry)

    def _metrics(self) -> tuple[bytes, str]:
        # The classic text format (0.0.4): every Prometheus version and most agents parse it; our names and
        # labels never need the escaping of the 1.0.0 format.
        return self.render(), CONTENT_TYPE_PLAIN_0_0_4

    def _status_json(self) -> tuple[bytes, str]:
        return json.dumps(self._status(), indent=1, sort_keys=True).encode() + b"\n", STATUS_CONTENT_TYPE

    def _index(self) -> tuple[bytes, str]:
        return b"vmproto: /metrics (Prometheus), /status (JSON)\n", "text/plain; charset=utf-8"

    async def serve(self, *, task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED) -> None:
        """Bind and serve until cancelled; `task_status.started` gets the bound (host, port). Raises OSError
        when the address cannot be bound."""
        await self.http.serve(task_status=task_status)

    @property
    def address(self) -> tuple[str, int] | None:
        """The bound (host, port) once serving, else None."""
        return self.http.address


class MetricsStartError(Exception):
    """The endpoint cannot start: bad `prometheus_bind` value or the address cannot be bound."""


async def start_endpoint(nursery: trio.Nursery, bind: object, collector: Any,
                         status: Callable[[], dict[str, Any]]) -> tuple[str, int] | None:
    """Start the endpoint in `nursery` when `bind` (the `prometheus_bind` value) is set; return the bound
    address, or None when it is empty (the default: no endpoint). Raises MetricsStartError."""
    text = str(bind or "").strip()
    if not text:
        return None
    try:
        endpoint = MetricsEndpoint.from_bind(text, collector, status)
        return await nursery.start(endpoint.serve)
    except MetricsConfigError as exc:
        raise MetricsStartError(str(exc)) from None
    except OSError as exc:
        raise MetricsStartError(f"prometheus_bind = {text}: cannot listen: {exc.strerror or exc}") from None
