"""What the central server exports: the Prometheus families (`ServerCollector`) and the `/status` document
(`server_status`). Both read the running `Server` at request time; nothing is copied or sampled in between.

Sources: `ServerStats` (vmproto/server/handlers/context.py) for every counter, the service `Registry` for the
connected sensors, `ServerContext.live` for the connections open right now, `StoreWriters` for queue depths.
The metric names and labels are documented in docs/metrics.md; they are a stable interface.
"""

from __future__ import annotations

import collections
import os
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import Metric

from vmproto import __version__
from vmproto.metrics.families import counter, gauge, token, version_text
from vmproto.server.pbanalysis import CentralAnalysis

if TYPE_CHECKING:
    from vmproto.server.app import Server

__all__ = ["ServerCollector", "server_status", "CHANNELS"]

P = "vmproto_server_"
# Connection types a sensor opens towards the central (spec §1); every connected sensor gets a sample for each.
CHANNELS = ("service", "store", "packetbuffer block", "query", "response", "responses")


def _channels_by_sensor(server: Server) -> dict[str, collections.Counter[str]]:
    """Connections open now per registered sensor (service key), by type.

    Attribution: a service connection is its registry entry (same address and port); a `packetbuffer block`
    connection names its sensor id in its credentials; the other types (store, query, response, responses)
    carry no sensor id, so they are attributed by address, and only when a single connected sensor has that
    address (sensors behind one NAT address, or on one host, leave them unattributed).
    """
    out: dict[str, collections.Counter[str]] = {}
    ctx = server.ctx
    services = list(server.registry.services.values())
    for e in services:
        out[e.key] = collections.Counter()
    if ctx is None:
        return out
    by_ip: dict[str, list[str]] = collections.defaultdict(list)
    by_endpoint: dict[tuple[str, int], str] = {}
    by_id: dict[int, str] = {}
    for e in services:
        by_ip[e.ip].append(e.key)
        by_endpoint[(e.ip, e.port)] = e.key
        by_id.setdefault(e.sensor_id, e.key)
    for live in list(ctx.live.values()):
        io = live.io
        if live.type is None or io is None:
            continue
        ip, port = str(io.peer[0]), int(io.peer[1])
        if live.type == "service":
            key = by_endpoint.get((ip, port))
        elif live.type == "packetbuffer block":
            key = by_id.get(int(getattr(io.machine, "sensor_id", 0) or 0))
        else:
            keys = by_ip.get(ip, [])
            key = keys[0] if len(keys) == 1 else None
        if key is not None:
            out[key][live.type] += 1
    return out


def _central_analysis(server: Server) -> CentralAnalysis | None:
    sink = getattr(getattr(server, "ctx", None), "sink", None)
    for candidate in getattr(sink, "sinks", [sink]):
        if isinstance(candidate, CentralAnalysis):
            return candidate
    return None


def _mode(channels: collections.Counter[str]) -> str:
    if channels.get("packetbuffer block"):
        return "mirroring"
    if channels.get("store"):
        return "local-processing"
    return "unknown"  # no data channel open or attributable right now (store connections open lazily)


class ServerCollector:
    """prometheus_client collector over one `Server`; register it in a CollectorRegistry(auto_describe=False)."""

    def __init__(self, server: Server) -> None:
        self.server = server

    def collect(self) -> Iterator[Metric]:
        s = self.server.stats
        ctx = self.server.ctx
        now = time.time()
        yield gauge(P + "info", "Constant 1; the version label is the vmproto version.", ["version"],
                    {(__version__,): 1})
        yield gauge(P + "start_time_seconds", "UNIX time the server process started.", (), s.started_at)
        yield gauge(P + "up", "1 once the listener is bound and the database prepared, 0 before.", (),
                    1 if ctx is not None and self.server.addresses and not ctx.shutting_down else 0)

        # connections
        yield counter(P + "connections_accepted_total", "Connections whose opening line was accepted, by type.",
                      ["type"], {(token(k),): v for k, v in s.connections.items()})
        open_now: collections.Counter[str] = collections.Counter()
        if ctx is not None:
            for live in list(ctx.live.values()):
                open_now[token(live.type or "opening")] += 1
        yield gauge(P + "connections_open", "Connections open now, by type (`opening`: opening line not read "
                    "yet).", ["type"], {(k,): v for k, v in open_now.items()})
        yield counter(P + "connections_refused_total", "Connections closed before dispatch, by reason "
                      "(per-address cap, opening line timeout or error).", ["reason"],
                      {(k,): v for k, v in s.refused.items()})
        yield counter(P + "handshakes_total", "Handshakes by connection type and result (`ok`, `closed`, or the "
                      "refusal reason, e.g. `bad password`).", ["type", "result"],
                      {(token(t), r): v for (t, r), v in s.handshakes.items()})
        yield counter(P + "protocol_errors_total", "Connections ended by a peer breaking the protocol, by type.",
                      ["type"], {(token(k),): v for k, v in s.protocol_errors.items()})
        yield counter(P + "blocks_received_total", "Data blocks/messages received, by connection type.", ["type"],
                      {(token(k),): v for k, v in s.blocks_in.items()})
        yield counter(P + "received_bytes_total", "Bytes read from sockets, by connection type.", ["type"],
                      {(token(k),): v for k, v in s.bytes_in.items()})
        yield counter(P + "sent_bytes_total", "Bytes written to sockets, by connection type.", ["type"],
                      {(token(k),): v for k, v in s.bytes_out.items()})

        # sensors
        services = list(self.server.registry.services.values())
        by_sensor = _channels_by_sensor(self.server)
        yield gauge(P + "sensors_connected", "Sensors with a registered service connection.", (), len(services))
        info: dict[tuple[str, ...], float] = {}
        chans: dict[tuple[str, ...], float] = {}
        ping_age: dict[tuple[str, ...], float] = {}
        since: dict[tuple[str, ...], float] = {}
        for e in services:
            sid = e.key  # the sensor id; "<id>/<sensor_string>" for the GUI's pseudo-sensors
            channels = by_sensor.get(e.key, collections.Counter())
            info[(sid, e.ip, version_text(e.sensor_version), _mode(channels))] = 1
            for ch in CHANNELS:
                chans[(sid, token(ch))] = channels.get(ch, 0)
            since[(sid,)] = e.connected_at
            if e.last_pong is not None:
                ping_age[(sid,)] = max(0.0, now - e.last_pong)
        yield gauge(P + "sensor_info", "Constant 1 per connected sensor: id, address, announced version, mode "
                    "seen from its open channels.", ["sensor_id", "address", "version", "mode"], info)
        yield gauge(P + "sensor_channel_connections", "Connections of the sensor open now, by channel (0 = none; "
                    "store/query/response connections are attributed by address when it is unambiguous).",
                    ["sensor_id", "channel"], chans)
        yield gauge(P + "sensor_connected_since_seconds", "UNIX time the sensor's service connection was "
                    "registered.", ["sensor_id"], since)
        yield gauge(P + "sensor_last_pong_age_seconds", "Seconds since the sensor last answered a ping (absent "
                    "before the first pong).", ["sensor_id"], ping_age)

        # store channel (spec §8)
        yield counter(P + "store_messages_queued_total", "Store messages handed to a database writer.", (),
                      s.store_queued)
        yield counter(P + "store_messages_committed_total", "Store messages committed (first application).", (),
                      s.store_committed)
        yield counter(P + "store_messages_duplicate_total", "Store messages found applied before (dedup, not "
                      "executed again).", (), s.store_duplicates)
        yield counter(P + "store_messages_acknowledged_total", "Store messages answered OK (committed, duplicate, "
                      "or permanently failed).", (), s.store_acked)
        yield counter(P + "store_statements_failed_total", "Store statements refused by the database "
                      "(acknowledged and logged).", (), s.store_failed)
        yield counter(P + "store_statements_total", "SQL statements executed for store messages.", (),
                      s.store_rows)
        yield counter(P + "store_queue_full_replies_total", "Queue-full replies sent (sensor retries later).", (),
                      s.store_queue_full)
        writers = ctx.writers if ctx is not None else None
        depth = {(str(i),): w.queue_length for i, w in writers.writers.items()} if writers is not None else {}
        yield gauge(P + "store_writer_queue_length", "Messages waiting in the database writer, by id_main.",
                    ["id_main"], depth)

        # packetbuffer (mirroring, spec §9)
        yield counter(P + "pb_blocks_total", "pcap_block_store containers accepted.", (), s.pb_blocks)
        yield counter(P + "pb_packets_total", "Packets in accepted containers.", (), s.pb_packets)
        yield counter(P + "pb_blocks_dropped_total", "Containers not used, by reason.", ["reason"],
                      {("duplicate",): s.pb_duplicates, ("rejected",): s.pb_rejected,
                       ("undecodable",): s.pb_undecodable})
        analysis = _central_analysis(self.server)
        per = analysis.per_sensor() if analysis is not None else {}
        yield counter(P + "pb_analysis_packets_total", "Mirrored packets analysed on the central, by sending sensor.",
                      ["sensor"], {(k,): v[0] for k, v in per.items()})
        yield gauge(P + "pb_analysis_calls_active", "Calls open in the central's analysis of mirrored packets.",
                    ["sensor"], {(k,): v[1] for k, v in per.items()})
        yield counter(P + "pb_analysis_cdrs_total", "CDRs the central built from mirrored packets and committed.",
                      ["sensor"], {(k,): v[2] for k, v in per.items()})
        yield counter(P + "pb_analysis_cdrs_failed_total", "CDRs from mirrored packets the database refused.", (),
                      analysis.cdrs_failed if analysis is not None else 0)

        # database, services, GUI
        yield counter(P + "db_errors_total", "Database errors, by MariaDB/client error number (0: none given).",
                      ["code"], {(k,): v for k, v in s.db_error_codes.items()})
        yield gauge(P + "services_active", "Service connections in their data phase.", (), s.services_active)
        yield counter(P + "gui_tasks_total", "GUI commands relayed to sensors, by outcome.", ["outcome"],
                      {(token(k),): v for k, v in s.gui_tasks.items()})
        yield gauge(P + "gui_tasks_pending", "GUI tasks waiting for their sensor.", (),
                    len(self.server.registry.tasks))
        if ctx is not None:
            yield counter(P + "log_lines_suppressed_total", "Log lines about possibly hostile peers or per-connection events suppressed "
                          "by the rate limiters.", (), ctx.hostile.suppressed + ctx.connection_lines.suppressed)


def server_status(server: Server) -> dict[str, Any]:
    """The `/status` document of a central: JSON-friendly, what `python -m vmproto.server status` shows."""
    s = server.stats
    ctx = server.ctx
    now = time.time()
    by_sensor = _channels_by_sensor(server)
    sensors = []
    for e in sorted(server.registry.services.values(), key=lambda e: (e.sensor_id, e.key)):
        channels = by_sensor.get(e.key, collections.Counter())
        sensors.append({
            "sensor_id": e.sensor_id, "key": e.key, "address": f"{e.ip}:{e.port}",
            "version": version_text(e.sensor_version), "mode": _mode(channels),
            "channels": {token(k): v for k, v in sorted(channels.items())},
            "connected_s": round(now - e.connected_at, 1),
            "last_pong_age_s": None if e.last_pong is None else round(now - e.last_pong, 1),
        })
    open_now = collections.Counter(token(live.type or "opening") for live in (ctx.live.values() if ctx else ()))
    failures = {f"{token(t)}/{r}": v for (t, r), v in sorted(s.handshakes.items()) if r != "ok"}
    writers = ctx.writers if ctx is not None else None
    return {
        "role": "server", "version": __version__, "pid": os.getpid(), "now": now,
        "uptime_s": round(now - s.started_at, 1),
        "listening": [f"{h}:{p}" for h, p in server.addresses],
        "shutting_down": bool(ctx is not None and ctx.shutting_down),
        "sensors": sensors,
        "connections_open": dict(sorted(open_now.items())),
        "connections_accepted": {token(k): v for k, v in sorted(s.connections.items())},
        "refused": dict(sorted(s.refused.items())),
        "handshake_failures": failures,
        "store": {"queued": s.store_queued, "committed": s.store_committed, "duplicates": s.store_duplicates,
                  "acknowledged": s.store_acked, "failed_statements": s.store_failed,
                  "queue_full_replies": s.store_queue_full,
                  "writer_queue": writers.queued if writers is not None else 0},
        "packetbuffer": {"blocks": s.pb_blocks, "packets": s.pb_packets, "duplicates": s.pb_duplicates,
                         "rejected": s.pb_rejected, "undecodable": s.pb_undecodable},
        "db_errors": dict(sorted(s.db_error_codes.items())),
        "gui_tasks_pending": len(server.registry.tasks),
    }
