"""Clock skew beyond the time checks, driven on the wire with a skewed clock (the system clock is never touched).

- store (spec §8.13): a message whose time part is more than 24 h ahead gets the time-error JSON and the connection
  is closed; nothing is applied. The same body sent again once the clock is right is applied once; a message from a
  clock a day behind is accepted (the check is one-sided, as in the reference).
- packetbuffer (spec §9): a handshake whose `time` is off by more than `client_server_connect_maximum_time_diff_s`
  (modulo 1800 s) is refused.
"""

from __future__ import annotations

import time

import trio

from tests.chaos.context import ChaosContext
from tests.chaos.figures import Figures
from tests.chaos.hostile import _creds, _handshake, _Wire
from tests.chaos.procs import PASSWORD, Central, Database, watch_rss
from vmproto.server.db.connection import Connection
from vmproto.wire import events as ev
from vmproto.wire.crypto import generate_aes_strings
from vmproto.wire.packetbuffer import PacketbufferClient
from vmproto.wire.store import StoreClient
from vmproto.wire.store_msg import StoreMessage

__all__ = ["clock_skew"]


def _stamp(offset_s: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(time.time() + offset_s))


async def _store_once(port: int, offset_s: float, sql: bytes) -> object:
    wire = await _Wire.open(port, "127.0.0.1", StoreClient())
    try:
        if not isinstance(await _handshake(wire, _creds()), ev.StoreAccepted):
            raise AssertionError("store handshake refused")
        await wire.send(ev.StoreQueries(StoreMessage(99, _stamp(offset_s), (sql,))))
        reply = await wire.next_event()
        if isinstance(reply, ev.StoreError):
            return (reply, await wire.closed_by_peer(5))
        return (reply, False)
    finally:
        await wire.aclose()


async def clock_skew(ctx: ChaosContext) -> Figures:
    """Returns Figures: expected/stored/lost/duplicated over the messages a corrected sensor resends, and the
    replies in `extra`."""
    wd = ctx.scenario_dir("clock-skew")
    central = Central(wd, ctx.db, ctx.database_name("skew"))
    fig = Figures("clock-skew")
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch_rss, [central])
            await central.start()
            await Database(ctx.db, central.database).cdr_count()
            sql = b"INSERT INTO sensors (id_sensor, name) VALUES (901, 'skewed')"
            ahead, ahead_closed = await _store_once(central.port, 25 * 3600, sql)
            fixed, _ = await _store_once(central.port, 0, sql)
            again, _ = await _store_once(central.port, 0, sql)  # its OK was "lost": resent, dedup
            behind, _ = await _store_once(central.port, -86400,
                                          b"INSERT INTO sensors (id_sensor, name) VALUES (902, 'behind')")
            pb = await _Wire.open(central.port, "127.0.0.1", PacketbufferClient())
            try:
                ckey, ivec = generate_aes_strings()
                pb_reply = await _handshake(pb, ev.PacketbufferCredentials(PASSWORD, ckey, ivec, _stamp(10), 4, "s"))
            finally:
                await pb.aclose()
            conn = await Connection.open(Database(ctx.db, central.database).params)
            try:
                rows = (await conn.execute("SELECT id_sensor, COUNT(*) FROM sensors WHERE id_sensor IN (901, 902) "
                                           "GROUP BY id_sensor")).rows
            finally:
                await conn.aclose()
            stored = {int(k): int(v) for k, v in rows}
            fig.expected, fig.stored = 2, sum(stored.values())
            fig.lost = sum(1 for k in (901, 902) if k not in stored)
            fig.duplicated = sum(v - 1 for v in stored.values() if v > 1)
            fig.extra.update(ahead_reply=repr(ahead)[:90], ahead_closed=int(ahead_closed),
                             fixed_ok=int(fixed == ev.StoreOK()), resend_ok=int(again == ev.StoreOK()),
                             behind_ok=int(behind == ev.StoreOK()), pb_skewed_handshake=repr(pb_reply)[:60])
            await central.stop()
            nursery.cancel_scope.cancel()
    finally:
        central.kill9()
    fig.peak_rss_mb = {"central": round(central.peak_mb, 1)}
    return fig
