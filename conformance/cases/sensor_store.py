"""Sensor role: the store channel (spec §5.6, §8) and the query channel a sensor may open (spec §10). The suite
plays the central."""

from __future__ import annotations

import time

import trio

from vmproto.wire.compression import Compression

from ..central import StoreMsg
from ..model import case, check, check_bytes_eq, check_eq, fail, skip
from ..sensorctx import SensorContext, SensorSession

QUEUE_FULL = b'{"error":"sql queue is full","next_attempt":1,"usleep":%d,"quietly":1,"keep_connect":1}'
QUEUE_FULL_RECONNECT = b'{"error":"sql queue is full","next_attempt":1,"usleep":%d,"quietly":1}'
TIME_ERROR = b'{"error":"client time is too greater than server time","next_attempt":0}'
_MAGICS = (b"\x1f\x8b", b"\x28\xb5\x2f\xfd", b"LZO")


async def first_msg(ctx: SensorContext, s: SensorSession) -> StoreMsg:
    """Wait for the first store data message."""
    await s.conn("store")
    return await s.wait_until(lambda: (s.central.data_msgs() or [None])[0], s.busy_allowance,
                              "the first store message")


def _time_close(text: bytes, what: str) -> None:
    t = time.mktime(time.strptime(text.decode("ascii"), "%Y-%m-%d %H:%M:%S"))
    check(abs(time.time() - t) <= 120, f"{what} {text.decode()} is not the sensor's local time now")


@case("sensor-store-grammar", "store messages follow §8.3 strictly; with check_time every one carries "
      "`T<local time>|`", ("§8.3", "§8.2", "§8.4", "§16 Q16", "§16 Q27"), mode="sensor")
async def store_grammar(ctx: SensorContext) -> None:
    async with ctx.session() as s:
        await first_msg(ctx, s)
        await trio.sleep(ctx.t(0.5))
        s.check_clean()  # a message that breaks §8.3 was recorded as a violation
        for m in s.central.data_msgs():
            check(m.time_part is not None, f"message without time part although check_time was announced: "
                  f"{m.text[:60]!r}")
            _time_close(m.time_part, "time part")  # type: ignore[arg-type]
            check(m.id_main >= 0, "id_main")
        ctx.notes.append("sensor-store-grammar: id_mains " + ",".join(sorted({str(m.id_main)
                                                                             for m in s.central.data_msgs()})))


@case("sensor-store-no-time-part", "store result plain `OK` (no check_time) → messages without `T` part",
      ("§8.2", "§8.3"), mode="sensor")
async def store_no_time_part(ctx: SensorContext) -> None:
    async with ctx.session(store_result=b"OK") as s:
        m = await first_msg(ctx, s)
        check(m.time_part is None, f"time part sent although the store result did not announce check_time: "
              f"{m.text[:40]!r}")
        s.check_clean()


@case("sensor-store-queue-full-check", "queue-full JSON with keep_connect → sleep `usleep`, `check` on the same "
      "connection, resend only after `OK`, body byte-identical", ("§8.8", "§8.7", "§8.13", "§5.6"), mode="sensor")
async def queue_full_check(ctx: SensorContext) -> None:
    usleep = int(ctx.t(0.4) * 1_000_000)
    async with ctx.session(store_reply=lambda m, n: QUEUE_FULL % usleep if n == 1 else b"OK") as s:
        first = await first_msg(ctx, s)
        nxt = await s.wait_until(lambda: _after(s, first), ctx.wait(3), "the block after the queue-full reply")
        check(nxt.is_check, f"after queue-full the sensor sent {nxt.payload[:40]!r} instead of `check`")
        check_eq(nxt.conn, first.conn, "connection of the `check` (keep_connect was set)")
        check_eq(nxt.payload, b"check", "`check` payload (never compressed)")
        check(nxt.at - first.at >= usleep / 1e6 * 0.9, f"`check` came {nxt.at - first.at:.2f} s after the "
              f"reply; usleep asked for {usleep / 1e6:.2f} s")
        resend = await s.wait_until(lambda: _after(s, nxt), ctx.wait(3), "the resend after `check` → OK")
        check(not resend.is_check, "a second `check` after OK")
        check_eq(resend.id_main, first.id_main, "id_main of the resent message")
        check_bytes_eq(resend.body, first.body, "resent body (after the time part)")
        s.check_clean()


def _after(s: SensorSession, msg: StoreMsg) -> StoreMsg | None:
    msgs = s.central.store_msgs
    i = msgs.index(msg)
    return msgs[i + 1] if len(msgs) > i + 1 else None


@case("sensor-store-queue-full-reconnect", "queue-full JSON without keep_connect → new connection, `check` first, "
      "then the same body", ("§8.8", "§14.2"), mode="sensor")
async def queue_full_reconnect(ctx: SensorContext) -> None:
    usleep = int(ctx.t(0.3) * 1_000_000)
    async with ctx.session(store_reply=lambda m, n: QUEUE_FULL_RECONNECT % usleep if n == 1 else b"OK") as s:
        first = await first_msg(ctx, s)
        nxt = await s.wait_until(lambda: _after(s, first), ctx.wait(5), "the block after the queue-full reply")
        check(nxt.conn != first.conn, "the sensor stayed on the connection although keep_connect was absent")
        check(nxt.is_check, f"first block on the new connection is {nxt.payload[:40]!r}, not `check`")
        resend = await s.wait_until(lambda: _after(s, nxt), ctx.wait(3), "the resend after `check` → OK")
        check_eq(resend.id_main, first.id_main, "id_main of the resent message")
        check_bytes_eq(resend.body, first.body, "resent body (after the time part)")
        s.check_clean()


@case("sensor-store-lost-ok", "no reply and the connection closed → resend on a new connection after "
      "min(1 + 2·attempt, 60) s, body byte-identical", ("§8.8", "§8.10", "§14.2", "§16 Q5"), mode="sensor")
async def lost_ok(ctx: SensorContext) -> None:
    ctx.need_wait(3)
    async with ctx.session(store_reply=lambda m, n: None if n == 1 else b"OK") as s:
        first = await first_msg(ctx, s)
        resend = await s.wait_until(lambda: _after(s, first), ctx.wait(3) + 2, "the resend after a lost OK")
        check(resend.conn != first.conn, "resend on the closed connection")
        check_eq(resend.id_main, first.id_main, "id_main of the resent message")
        check_bytes_eq(resend.body, first.body, "resent body (after the time part)")
        gap = resend.at - first.at
        check(gap >= ctx.t(3) * 0.8, f"resent after {gap:.2f} s; spec §14.2 pauses min(1 + 2·1, 60) = 3 s")
        s.check_clean()


@case("sensor-store-next-attempt-zero", "`next_attempt`:0 → the message is dropped, never resent; later messages "
      "still go", ("§8.8", "§8.5"), mode="sensor")
async def next_attempt_zero(ctx: SensorContext) -> None:
    async with ctx.session(store_reply=lambda m, n: TIME_ERROR if n == 1 else b"OK") as s:
        first = await first_msg(ctx, s)
        later = await s.wait_until(lambda: _after(s, first), ctx.options.startup, "a message after the dropped one")
        await trio.sleep(ctx.t(4))
        again = [m for m in s.central.data_msgs()[1:] if m.message_key == first.message_key]
        check(not again, f"the message refused with next_attempt 0 was resent {len(again)} time(s)")
        check(later.message_key != first.message_key, "the dropped message came again")
        s.check_clean()


@case("sensor-store-batch-limit", "L-batches hold at least 2 and at most mysql_concat_limit items", ("§8.11", "§8.3"),
      mode="sensor")
async def batch_limit(ctx: SensorContext) -> None:
    async with ctx.session(concat_limit=3, pcap="many") as s:
        await first_msg(ctx, s)
        await s.wait_until(lambda: len(s.central.data_msgs()) >= 2 and _quiet(s, ctx.t(1.5)), ctx.wait(20),
                           "the end of the store traffic")
        s.check_clean()
        msgs = s.central.data_msgs()
        batches = [m for m in msgs if m.batched]
        for m in batches:
            check(2 <= len(m.items) <= 3, f"L-batch of {len(m.items)} items with mysql_concat_limit 3")
        if not batches:
            skip(f"the sensor sent {len(msgs)} single messages and no batch (it may form messages before the "
                 "service handshake; nothing to check)")
        ctx.notes.append(f"sensor-store-batch-limit: {len(batches)} batches of {len(msgs)} messages")


def _quiet(s: SensorSession, seconds: float) -> bool:
    msgs = s.central.store_msgs
    return bool(msgs) and trio.current_time() - msgs[-1].at >= seconds


@case("sensor-store-compression", "store messages use the negotiated type_compress_store; none → uncompressed "
      "(gzip only for a body starting with a magic)", ("§5.6", "§5.1", "§5.2", "§16 Q9"), mode="sensor")
async def store_compression(ctx: SensorContext) -> None:
    for code, kind in ((1, Compression.GZIP), (0, Compression.NONE)):
        async with ctx.session(type_compress=code) as s:
            m = await first_msg(ctx, s)
            await trio.sleep(ctx.t(0.3))
            for msg in s.central.data_msgs():
                if kind is Compression.NONE and msg.codec is Compression.GZIP and msg.text.startswith(_MAGICS):
                    continue
                check_eq(msg.codec, kind, f"codec of a store message with type_compress_store {code} "
                         f"(first bytes {msg.payload[:6].hex()})")
            check(m.text, "empty store message")
            s.check_clean()


@case("sensor-store-gzip-before-confirmation", "service result plain `OK` (no parameters) → store messages gzip, "
      "no batching", ("§5.6", "§7.4", "§8.11"), mode="sensor")
async def gzip_unconfirmed(ctx: SensorContext) -> None:
    async with ctx.session(plain_ok=True) as s:
        await first_msg(ctx, s)
        await trio.sleep(ctx.t(0.3))
        for msg in s.central.data_msgs():
            check_eq(msg.codec, Compression.GZIP, "codec of a store message after a plain `OK` service result")
            check(not msg.batched, "L-batch although no mysql_concat_limit was given")
        s.check_clean()


# --- query (only when the sensor opens one) ------------------------------------------------------------------------

async def _queries(ctx: SensorContext, s: SensorSession) -> list[tuple[int, bytes, Compression]]:
    await s.conn("service", accepted=True)
    await trio.sleep(ctx.t(3))
    if not s.central.queries:
        skip("the sensor opened no query connection during the run (it reads nothing from the central's "
             "database with this configuration)")
    return s.central.queries


@case("sensor-query-end-uncompressed", "`_END_` is sent uncompressed", ("§10.2", "§10.3", "§16 Q8"), mode="sensor")
async def query_end(ctx: SensorContext) -> None:
    async with ctx.session() as s:
        for _conn, payload, codec in await _queries(ctx, s):
            if payload.endswith(b"_END_") or (codec is Compression.NONE and b"_END_" in payload):
                check_eq(payload, b"_END_", "the end request")
        ends = [p for _c, p, _k in s.central.queries if p == b"_END_"]
        if not ends:
            fail("query connections were closed without an uncompressed `_END_`")


@case("sensor-query-compression", "store sensor: query requests gzip before the service confirmed a codec, then "
      "type_compress_query", ("§10.3", "§5.6"), mode="sensor")
async def query_compression(ctx: SensorContext) -> None:
    async with ctx.session(type_compress=1) as s:
        for _conn, payload, codec in await _queries(ctx, s):
            if payload != b"_END_":
                check_eq(codec, Compression.GZIP, "query request codec (gzip before or after confirmation here)")


@case("sensor-pb-query-gzip", "packetbuffer sensor: query requests stay gzip whatever the central negotiated",
      ("§10.3", "§5.6", "§16 Q8"), mode="sensor")
async def pb_query_gzip(ctx: SensorContext) -> None:
    async with ctx.session(type_compress=3, config={"packetbuffer_sender": True}) as s:
        for _conn, payload, codec in await _queries(ctx, s):
            if payload != b"_END_":
                check_eq(codec, Compression.GZIP, "query request codec of a packetbuffer sensor")
