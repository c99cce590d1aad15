"""What every connection handler shares: the configuration, the database, the registries, the counters.

`ServerContext` is built once by `vmproto.server.app` and handed to each connection; handlers never reach for
globals. `ServerStats` is the one place counters live (the metrics endpoint of issue 9 reads it).
"""

from __future__ import annotations

import collections
import ipaddress
import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import trio

from vmproto.config import Config
from vmproto.keylog import KeyLog
from vmproto.logs import RateLimiter, log_event
from vmproto.server.db.connection import Pool
from vmproto.server.db.store import StoreWriter
from vmproto.server.keypool import RsaKeyPool
from vmproto.server.pbspool import PacketSink
from vmproto.server.registry import Registry
from vmproto.wire.crypto import ManagerAesKey

__all__ = ["LiveConnection", "ServerContext", "ServerStats", "StoreWriters", "dedup_scope", "TooManyWriters"]

log = logging.getLogger("vmproto.server")


@dataclass
class ServerStats:
    """Counters of the running server. Plain integers and Counters: cheap to bump, easy to export."""

    started_at: float = field(default_factory=time.time)
    connections: collections.Counter[str] = field(default_factory=collections.Counter)  # accepted, by type
    refused: collections.Counter[str] = field(default_factory=collections.Counter)  # before dispatch, by reason
    handshakes: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)  # (type, result)
    blocks_in: collections.Counter[str] = field(default_factory=collections.Counter)  # data events, by type
    bytes_in: collections.Counter[str] = field(default_factory=collections.Counter)
    bytes_out: collections.Counter[str] = field(default_factory=collections.Counter)
    protocol_errors: collections.Counter[str] = field(default_factory=collections.Counter)  # by type
    store_queued: int = 0
    store_acked: int = 0
    store_committed: int = 0
    store_duplicates: int = 0
    store_failed: int = 0  # permanent SQL errors (acknowledged, logged)
    store_queue_full: int = 0
    store_rows: int = 0  # statements executed (units), for rates
    pb_blocks: int = 0
    pb_packets: int = 0
    pb_duplicates: int = 0
    pb_rejected: int = 0
    pb_undecodable: int = 0
    db_errors: int = 0
    db_error_codes: collections.Counter[str] = field(default_factory=collections.Counter)  # by errno ("0": none)
    services_active: int = 0
    gui_tasks: collections.Counter[str] = field(default_factory=collections.Counter)  # by outcome

    def count_db_error(self, exc: Any) -> None:
        """Count one database error (`exc` a vmproto.server.db.errors.DatabaseError) in total and by its errno."""
        self.db_errors += 1
        self.db_error_codes[str(int(getattr(exc, "errno", 0) or 0))] += 1

    def snapshot(self) -> dict[str, Any]:
        """A JSON-friendly copy (tuple keys joined with '/')."""
        out: dict[str, Any] = {}
        for name, value in vars(self).items():
            if isinstance(value, collections.Counter):
                out[name] = {("/".join(k) if isinstance(k, tuple) else k): v for k, v in value.items()}
            else:
                out[name] = value
        return out


class TooManyWriters(Exception):
    """More distinct id_main values than `max_writers`: a hostile or broken sensor; the message is refused."""


class StoreWriters:
    """One `StoreWriter` per id_main (spec §8.9), created on first use inside the server's writer nursery."""

    def __init__(self, pool: Pool, nursery: trio.Nursery, *, queue_limit: int, max_writers: int = 128) -> None:
        self._pool = pool
        self._nursery = nursery
        self._queue_limit = max(1, queue_limit)
        self._max = max_writers
        self.writers: dict[int, StoreWriter] = {}

    def get(self, id_main: int) -> StoreWriter:
        """The writer of `id_main`, started if new. Raises TooManyWriters past the cap."""
        writer = self.writers.get(id_main)
        if writer is None:
            if len(self.writers) >= self._max:
                raise TooManyWriters(f"more than {self._max} distinct id_main values")
            writer = StoreWriter(self._pool, id_main, queue_limit=self._queue_limit)
            self._nursery.start_soon(writer.run)
            self.writers[id_main] = writer
        return writer

    @property
    def queued(self) -> int:
        return sum(w.queue_length for w in self.writers.values())


def dedup_scope(peer_ip: str, mode: str = "address") -> int:
    """The store dedup scope (spec §8.10.3) as the database layer's int32 key.

    IPv4 (also IPv4-mapped IPv6) is the 32-bit address read as a signed int; IPv6 a 31-bit fold of its 128 bits
    (collisions need two IPv6 sensors sending byte-identical SQL, see the spec's soundness note). `global` → 0.
    """
    if mode == "global":
        return 0
    try:
        addr = ipaddress.ip_address(peer_ip.split("%", 1)[0])
    except ValueError:
        return 0
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    value = int(addr)
    if addr.version == 4:
        return value - (1 << 32) if value >= (1 << 31) else value
    folded = 0
    while value:
        folded ^= value & 0x7FFFFFFF
        value >>= 31
    return -(folded or 1)  # negative: never equal to an IPv4 scope in 0..2^31


@dataclass(eq=False)
class LiveConnection:
    """A connection being served: its cancel scope, and once dispatched its type and adapter (an
    `vmproto.server.handlers.io.MachineStream`), so shutdown can end it the right way."""

    scope: trio.CancelScope
    type: str | None = None
    io: Any = None


@dataclass
class ServerContext:
    """Everything a connection handler needs. Built by `vmproto.server.app.Server`."""

    cfg: Config
    stats: ServerStats
    registry: Registry
    keypool: RsaKeyPool
    pool: Pool | None
    writers: StoreWriters | None
    sink: PacketSink
    keylog: KeyLog | None = None
    manager_key: ManagerAesKey | None = None
    db_ready: bool = False
    shutting_down: bool = False
    # spec §9.9: last accepted (counter, SHA-256 of bytes 64..end) per sensor identity, across connections
    pb_last: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    live: dict[int, LiveConnection] = field(default_factory=dict)
    hostile: RateLimiter = field(default_factory=lambda: RateLimiter(per_second=1 / 60, burst=5))
    # Per-connection lines happen before authentication, so their rate is the peer's to choose (spec §17.4): far
    # above what a sensor does (a handful of connections at start, then one now and then), far below a flood.
    connection_lines: RateLimiter = field(default_factory=lambda: RateLimiter(per_second=2.0, burst=20))
    _conn_ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    def next_conn_id(self) -> int:
        return next(self._conn_ids)

    def opt(self, name: str, default: Any) -> Any:
        """An option value; `default` for options the registry does not know (vmproto-only knobs)."""
        return self.cfg.get(name, default)

    def log_connection(self, peer_ip: str, level: int, event: str, **kv: Any) -> None:
        """Log a per-connection line (accepted / closed), rate-limited per address; suppressed lines are counted
        in `connection_lines.suppressed`."""
        if log.isEnabledFor(level) and self.connection_lines.allow(peer_ip, time.monotonic()):
            log_event(log, level, event, **kv)

    def log_hostile(self, peer_ip: str, event: str, **kv: Any) -> None:
        """Log a line caused by a possibly hostile peer, at most a few per minute per (address, event)."""
        if self.hostile.allow(f"{peer_ip} {event}", time.monotonic()):
            log_event(log, logging.WARNING, event, peer=peer_ip, **kv)
