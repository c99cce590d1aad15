"""`service` connections (spec §7): registration, auto parameters, pings, task pushes, restore."""

from __future__ import annotations

import collections
import logging
import time

import trio

from vmproto.logs import log_event
from vmproto.server.db.connection import quote_literal
from vmproto.server.db.errors import DatabaseError
from vmproto.server.handlers.context import ServerContext
from vmproto.server.handlers.handshake import run_handshake
from vmproto.server.handlers.io import MachineStream, PeerGone, Shutdown
from vmproto.server.registry import ServiceEntry
from vmproto.wire import events as ev
from vmproto.wire._state import State
from vmproto.wire.errors import RemoteProtocolError
from vmproto.wire.service import ServiceServer, duplicate_refusal

__all__ = ["Replaced", "EndService", "handle_service", "service_parameters"]

log = logging.getLogger("vmproto.server")


class Replaced:
    """External item: a `restore` connection took this service's key; end without unregistering."""


class EndService:
    """External item: end this service (spec §7.11, after `set_json_config` / `hot_restart` answered ok)."""


def service_parameters(ctx: ServerContext, machine: ServiceServer) -> ev.ServiceParameters:
    """The auto-parameter reply for the central's configuration (spec §7.4)."""
    cfg = ctx.cfg
    dedup = bool(cfg.get("deduplicate", False))
    return machine.parameters(
        use_blocks_pb=bool(cfg.get("pcap_queue_use_blocks", False)),
        deduplicate=1 if dedup else None,
        deduplicate_ipheader=int(bool(cfg.get("deduplicate_ipheader", True))) if dedup else None,
        mysql_new_store=int(cfg.get("mysql_enable_new_store", 0)) or None,
        mysql_set_id=bool(cfg.get("mysql_enable_set_id", False)),
        mysql_concat_limit=int(cfg.get("server_sql_concat_limit", 1000)) or None,
        csv_store_format=1 if cfg.get("csv_store_format", False) else None,
        charts_cache_store=bool(cfg.get("charts_cache_store", False)),
    )


async def handle_service(ctx: ServerContext, io: MachineStream, rsa_key: object, opened_ts: float) -> None:
    """Run one service connection to its end."""
    machine = io.machine
    assert isinstance(machine, ServiceServer)
    creds = await run_handshake(io, rsa_key, opened_ts)
    if not isinstance(creds, ev.ServiceCredentials):
        return
    peer = f"{io.peer[0]}:{io.peer[1]}"
    key = creds.service_key
    if not creds.restore and ctx.registry.find_service(key) is not None:
        # The reference sleeps 5 s before refusing (a brake on reconnect storms); the machine holds the reply
        # on its timer, so nothing here blocks or holds a lock meanwhile.
        log_event(log, logging.WARNING, "service refused", reason="duplicate sensor", sensor_id=creds.sensor_id,
                  key=key, peer=peer)
        ctx.stats.handshakes[("service", "duplicate")] += 1
        await io.send(duplicate_refusal(creds.sensor_id))
        await _drain_until_closed(io)
        return
    await io.send(ev.ServiceAccepted(service_parameters(ctx, machine) if creds.auto_parameters else None))
    entry = ServiceEntry(key=key, sensor_id=creds.sensor_id, sensor_string=creds.sensor_string, ip=io.peer[0],
                         port=io.peer[1], aes_ckey=creds.aes_ckey, aes_ivec=creds.aes_ivec, push=io.push,
                         remote_chart_server=creds.remote_chart_server, sensor_version=creds.sensor_version)
    replaced = ctx.registry.register(entry)
    if replaced is not None:
        replaced.push(Replaced())
    ctx.stats.services_active += 1
    log_event(log, logging.INFO, "SNIFFER SERVICE START", sensor_id=creds.sensor_id, key=key, peer=peer,
              version=creds.sensor_version, restore=int(creds.restore), compress=machine.type_compress)
    outcome = "DISCONNECT"
    try:
        if "load_pcap_user_id" not in creds.sensor_string:
            await _upsert_sensor(ctx, creds.sensor_id, io.peer[0])
        outcome = await _data_phase(io, entry)
    except RemoteProtocolError as exc:
        outcome = f"DISCONNECT ({exc.reason})"
    except PeerGone:
        outcome = "DISCONNECT (write failed)"
    finally:
        ctx.registry.unregister(entry)
        ctx.stats.services_active -= 1
        log_event(log, logging.INFO, f"SNIFFER SERVICE {outcome.split(' ', 1)[0]}", sensor_id=creds.sensor_id,
                  key=key, peer=peer, detail=outcome, seconds=round(time.time() - entry.connected_at, 1))


async def _data_phase(io: MachineStream, entry: ServiceEntry) -> str:
    # A task pushed while the machine waits for a pong (or a chart reply) waits until it is READY again: the
    # reference's service loop also sends tasks only between its pings (spec §7.5), and the machine refuses a
    # send in any other state.
    pending: collections.deque[ev.Task] = collections.deque()
    while True:
        if pending and io.machine.state is State.READY:
            await io.send(pending.popleft())
            continue
        item = await io.next_event()
        if isinstance(item, ev.Task):
            pending.append(item)
        elif isinstance(item, ev.Pong):
            entry.last_pong = time.time()
            continue
        elif isinstance(item, ev.Stop):
            return "STOPPED"
        elif isinstance(item, ev.ConnectionClosed):
            return f"DISCONNECT ({item.reason})"
        elif isinstance(item, Replaced):
            return "REPLACED (restore)"
        elif isinstance(item, EndService):
            return "STOP (configuration reloaded)"
        elif isinstance(item, Shutdown):
            return "STOP (server shutdown)"
        elif isinstance(item, ev.ChartReply):
            continue  # no chart pushes are queued by this central yet; a late reply is harmless


async def _drain_until_closed(io: MachineStream) -> None:
    # After a delayed refusal the machine writes the text from its timer and closes.
    try:
        while True:
            item = await io.next_event()
            if isinstance(item, ev.ConnectionClosed | Shutdown):
                return
    except (RemoteProtocolError, PeerGone):
        return


async def _upsert_sensor(ctx: ServerContext, sensor_id: int, ip: str) -> None:
    """Insert the sensor into `sensors` or refresh its host (spec §7.7). Database trouble is logged, never fatal."""
    if ctx.pool is None or not ctx.db_ready or not 0 <= sensor_id < 2**32:
        return
    sql = (f"INSERT INTO sensors (id_sensor, name, host) VALUES ({sensor_id:d}, "
           f"{quote_literal(f'auto insert id {sensor_id}')}, {quote_literal(ip)}) "
           f"ON DUPLICATE KEY UPDATE host = VALUES(host)")
    try:
        # Bounded: the first ping is due right after the result, and a slow database must not delay it much.
        with trio.move_on_after(3) as scope:
            await ctx.pool.run(sql, privilege="INSERT")
        if scope.cancelled_caught:
            log_event(log, logging.WARNING, "sensors upsert timed out", sensor_id=sensor_id)
    except DatabaseError as exc:
        ctx.stats.count_db_error(exc)
        log_event(log, logging.ERROR, "sensors upsert failed", sensor_id=sensor_id, error=exc.message)
