"""Central role: the store channel (spec §5, §8), checked through the query channel or --mysql."""

from __future__ import annotations

import json
import secrets

from vmproto.wire.compression import Compression, compress

from ..context import ServerContext, local_time_text
from ..model import CaseFailed, Level, Quirk, case, check, check_eq
from ..wirekit import NoReply, PeerClosed, Wire

TABLE = "conformance_probe"


async def query(ctx: ServerContext, sql: str) -> dict:
    """Run one SQL statement through a fresh `query` connection; return the parsed JSON result."""
    wire, _ = await ctx.handshake("query")
    await wire.send_aes(compress(Compression.GZIP, sql.encode()))
    reply = await wire.read_aes(ctx.wait(10), f"reply to {sql[:40]!r}")
    if reply[:2] == b"\x1f\x8b":
        import gzip

        reply = gzip.decompress(reply)
    await wire.send_aes(b"_END_")
    try:
        return json.loads(reply)
    except ValueError:
        raise CaseFailed(f"query reply is not JSON: {reply[:100]!r}") from None


async def ensure_table(ctx: ServerContext) -> None:
    """Create the probe table through the query channel (idempotent)."""
    res = await query(ctx, f"create table if not exists {TABLE} (v varchar(64))")
    check(res.get("result") == "OK", f"cannot create the probe table: {res}")


async def count(ctx: ServerContext, value: str) -> int:
    """Rows holding `value` in the probe table: through --mysql when given, else through the query channel."""
    if ctx.options.mysql:
        from ..mysqlcheck import count_rows

        return await count_rows(ctx.options.mysql, TABLE, value)
    res = await query(ctx, f"select count(*) as n from {TABLE} where v = '{value}'")
    check(res.get("result") == "OK" and "data" in res, f"count query failed: {res}")
    return int(res["data"][1][0])


async def store_conn(ctx: ServerContext) -> tuple[Wire, bool]:
    """A store connection after the handshake; returns (wire, check_time flag from the result)."""
    wire, result = await ctx.handshake("store", expect=None)
    if result == b"OK":
        return wire, False
    try:
        obj = json.loads(result)
    except ValueError:
        raise CaseFailed(f"store handshake result is neither OK nor JSON: {result!r}") from None
    check(obj.get("rslt") == "OK", f"store handshake refused: {result!r}")
    return wire, int(obj.get("check_time", 0)) > 0


def message(id_main: int, body: bytes, check_time: bool, time_text: str | None = None) -> bytes:
    """A store message of spec §8.3."""
    part = b"T" + (time_text or local_time_text()).encode() + b"|" if check_time else b""
    return b"%d|" % id_main + part + body


def l_items(*units: bytes) -> bytes:
    """The L-item body of spec §8.3."""
    return b"".join(b"L%d:" % len(u) + u + b"\n" for u in units)


def insert(value: str) -> bytes:
    return f"INSERT INTO {TABLE} (v) VALUES ('{value}');".encode()


async def send_ok(ctx: ServerContext, wire: Wire, payload: bytes, what: str) -> None:
    await wire.send_aes(payload)
    check_eq(await wire.read_aes(ctx.wait(10), f"reply to {what}"), ctx.spec.text("store_ok"), f"reply to {what}")


@case("store-connect-result", "store handshake result: the §8.2 JSON by default (plain `OK` only when configured "
      "for old sensors)", ("§8.2", "§15.2"))
async def store_connect_result(ctx: ServerContext) -> None:
    _wire, result = await ctx.handshake("store", expect=None)
    if result == b"OK":
        ctx.notes.append("store-connect-result: central sends the simple `OK` (server_cp_store_simple_connect_"
                         "response)")
        return
    check_eq(result, ctx.spec.text("store_connect_ok"), "store handshake result")


@case("store-check", "`check` → AES `OK` (or the queue-full JSON); nothing stored", ("§8.5", "§8.7", "§15.2"))
async def store_check(ctx: ServerContext) -> None:
    wire, _ = await store_conn(ctx)
    await wire.send_aes(ctx.spec.text("store_check"))
    reply = await wire.read_aes(ctx.wait(5), "reply to check")
    if reply != b"OK":
        check(ctx.spec.regex("store_queue_full").fullmatch(reply), f"reply to check: {reply!r}")


def _codec_case(codec: Compression) -> None:
    @case(f"store-single-{codec.name.lower()}", f"single store message, {codec.name.lower()} compressed → `OK`, "
          "the statement is applied", ("§8.3", "§8.5", "§5.2", "§5.3" if codec is Compression.GZIP else
                                       "§5.4" if codec is Compression.ZSTD else "§5.5" if codec is Compression.LZO
                                       else "§5.6"))
    async def run(ctx: ServerContext) -> None:
        await ensure_table(ctx)
        value = "single-" + secrets.token_hex(6)
        wire, check_time = await store_conn(ctx)
        await send_ok(ctx, wire, compress(codec, message(10, insert(value), check_time)), "a single message")
        check_eq(await count(ctx, value), 1, f"rows with {value} after OK")


for _c in Compression:
    _codec_case(_c)


@case("store-l-batch", "L-item batch → `OK`, every item applied; a second message on the same connection works",
      ("§8.3", "§8.11"))
async def store_l_batch(ctx: ServerContext) -> None:
    await ensure_table(ctx)
    values = ["batch-" + secrets.token_hex(6) for _ in range(3)]
    wire, check_time = await store_conn(ctx)
    body = l_items(*(insert(v) + b"\n" for v in values))
    await send_ok(ctx, wire, compress(Compression.ZSTD, message(10, body, check_time)), "an L batch")
    for v in values:
        check_eq(await count(ctx, v), 1, f"rows with {v}")
    other = "batch2-" + secrets.token_hex(6)
    await send_ok(ctx, wire, compress(Compression.GZIP, message(1010, insert(other), check_time)), "message 2")
    check_eq(await count(ctx, other), 1, f"rows with {other}")


@case("store-unknown-id-main", "any decimal id_main is accepted", ("§8.4",))
async def store_unknown_id_main(ctx: ServerContext) -> None:
    await ensure_table(ctx)
    value = "idmain-" + secrets.token_hex(6)
    wire, check_time = await store_conn(ctx)
    await send_ok(ctx, wire, compress(Compression.GZIP, message(4242, insert(value), check_time)), "id_main 4242")
    check_eq(await count(ctx, value), 1, f"rows with {value}")


@case("store-client-time-future", "time part > 24 h ahead → AES client-time JSON, close", ("§8.5", "§8.7", "§15.2"))
async def store_client_time_future(ctx: ServerContext) -> None:
    wire, _ = await store_conn(ctx)
    await wire.send_aes(compress(Compression.GZIP, message(10, b"select 1", True, local_time_text(26 * 3600))))
    check_eq(await wire.read_aes(ctx.wait(5), "time error"), ctx.spec.text("store_client_time"), "reply")
    await wire.expect_silent_close(ctx.wait(5), "close after the time error")


@case("store-client-time-past", "a time part far in the past is accepted", ("§8.5", "§16 Q27"))
async def store_client_time_past(ctx: ServerContext) -> None:
    await ensure_table(ctx)
    value = "past-" + secrets.token_hex(6)
    wire, _ = await store_conn(ctx)
    await send_ok(ctx, wire, compress(Compression.GZIP, message(10, insert(value), True, "2001-01-01 00:00:00")),
                  "a message from 2001")
    check_eq(await count(ctx, value), 1, f"rows with {value}")


@case("store-malformed-items", "an L batch with a bad item length: vmproto rejects the whole message and closes; "
      "the reference applies the items before the defect and answers `OK`", ("§8.3", "§8.6", "§16 Q16"),
      Level.QUIRK, quirk=Quirk("Q16", "applies the items parsed before the defect, replies `OK`",
                               "applies nothing, no reply, closes"))
async def store_malformed(ctx: ServerContext) -> str:
    await ensure_table(ctx)
    value = "malformed-" + secrets.token_hex(6)
    wire, check_time = await store_conn(ctx)
    good = insert(value)
    body = b"L%d:" % len(good) + good + b"\nL999:short\n"
    await wire.send_aes(compress(Compression.GZIP, message(10, body, check_time)))
    try:
        data = await wire.read_until_eof(ctx.wait(3), "rejection")
    except NoReply as exc:
        data = exc.data
        if not data:
            raise CaseFailed("no reply and no close for a malformed message") from None
    if data:
        # the reference answers `OK` (and keeps the connection); anything else is wrong either way
        ok = data[40:] and wire.cipher is not None and wire.cipher.decrypt(data[40:]) == b"OK"
        if not ok:
            raise CaseFailed(f"the central wrote {data[:60]!r} on a malformed message")
        return "reference"
    check_eq(await count(ctx, value), 0, "rows applied from a rejected message")
    return "vmproto"


@case("store-no-separator", "a message without `|`: vmproto closes without reply; the reference ignores it and "
      "keeps the connection", ("§8.5", "§8.6", "§16 Q15"), Level.QUIRK,
      quirk=Quirk("Q15", "no reply, connection kept", "no reply, connection closed"))
async def store_no_separator(ctx: ServerContext) -> str:
    wire, _ = await store_conn(ctx)
    await wire.send_aes(compress(Compression.GZIP, b"select 1"))
    try:
        await wire.expect_silent_close(ctx.wait(2), "message without `|`")
    except CaseFailed as exc:
        if "neither closed" in str(exc) and "wrote" not in str(exc):
            return "reference"
        raise
    return "vmproto"


@case("store-undecodable", "a payload with the gzip magic that does not decode: vmproto closes without reply; the "
      "reference keeps the connection silently", ("§5.8", "§8.5", "§16 Q15"), Level.QUIRK,
      quirk=Quirk("Q15", "no reply, connection kept (the sensor waits 300 s)", "no reply, connection closed"))
async def store_undecodable(ctx: ServerContext) -> str:
    wire, _ = await store_conn(ctx)
    await wire.send_aes(b"\x1f\x8b\x08\x00garbage-garbage")
    try:
        await wire.expect_silent_close(ctx.wait(2), "undecodable payload")
    except CaseFailed as exc:
        if "neither closed" in str(exc) and "wrote" not in str(exc):
            return "reference"
        raise
    return "vmproto"


@case("store-resend-dedup", "the same body resent on a new connection (new time part) is applied once by vmproto, "
      "twice by the reference", ("§8.9", "§8.10", "§16 Q5"), Level.QUIRK,
      quirk=Quirk("Q5", "applies a resend again (duplicate rows)", "dedup record: applied once"))
async def store_resend_dedup(ctx: ServerContext) -> str:
    await ensure_table(ctx)
    value = "dedup-" + secrets.token_hex(6)
    for n in range(2):
        wire, check_time = await store_conn(ctx)
        await send_ok(ctx, wire, compress(Compression.GZIP, message(10, insert(value), check_time,
                                                                    local_time_text(-n))), f"send {n + 1}")
        await wire.aclose()
    rows = await count(ctx, value)
    if rows == 1:
        return "vmproto"
    if rows == 2:
        return "reference"
    raise CaseFailed(f"{rows} rows after sending one message twice")


@case("store-idle-close", "a store connection idle for 300 s is closed by the central", ("§14.1",), slow=True)
async def store_idle_close(ctx: ServerContext) -> None:
    ctx.need_wait(300)
    wire, _ = await store_conn(ctx)
    try:
        await wire.expect_silent_close(ctx.wait(300), "idle store connection")
    except PeerClosed:
        pass
