"""Central role: the service channel (spec §5.1, §7, §14)."""

from __future__ import annotations

import re

import trio

from vmproto.wire import vmjson

from ..context import ServerContext
from ..model import CaseFailed, case, check, check_eq
from ..wirekit import NoReply, PeerClosed, Wire

# spec §7.4 svc-params, member order fixed
_SVC_PARAMS = re.compile(
    rb'\{"result":"OK"(,"use_blocks_pb":1)?(,"deduplicate":-?\d+,"deduplicate_ipheader":-?\d+)?'
    rb'(,"mysql_new_store":[12])?(,"mysql_set_id":1)?(,"mysql_concat_limit":-?[1-9]\d*)?(,"csv_store_format":1)?'
    rb'(,"charts_cache_store":1)?,"type_compress":([0-3]),"type_compress_query":([0-3]),'
    rb'"type_compress_store":([0-3]),"enable_responses_sender":1\}'
)
_TASK = re.compile(rb"(\d+:\d+)/(.*)", re.DOTALL)


def params(result: bytes) -> re.Match[bytes]:
    """Check a service result against spec §7.4; return the match (groups 8-10: the codes)."""
    m = _SVC_PARAMS.fullmatch(result)
    if m is None:
        raise CaseFailed(f"service result does not follow spec §7.4 (members, order, compact): {result[:200]!r}")
    return m


async def read_service_block(ctx: ServerContext, wire: Wire, timeout: float, what: str, aes: bool = False) -> bytes:
    """Read one S→C service block (plain, or AES with use_encode_data)."""
    return await (wire.read_aes if aes else wire.read_plain)(timeout, what)


@case("service-auto-parameters", "service result with auto_parameters: the §7.4 JSON, three equal codecs",
      ("§7.4", "§4.1", "§4.5"))
async def service_auto_parameters(ctx: ServerContext) -> None:
    _wire, result, _ = await ctx.service()
    m = params(result)
    check(m.group(8) == m.group(9) == m.group(10), f"type_compress values differ: {result!r}")


@case("service-plain-ok", "service without auto_parameters → plain `OK`", ("§7.4", "§6.5"))
async def service_plain_ok(ctx: ServerContext) -> None:
    _wire, result, _ = await ctx.service(auto_parameters=False)
    check_eq(result, ctx.spec.text("handshake_ok"), "service result without auto_parameters")


@case("service-compression-choice", "codec choice follows compress_types: without `zstd`/`lzo` the central falls "
      "back to gzip", ("§5.1", "§7.4"))
async def service_compression_choice(ctx: ServerContext) -> None:
    _w, full, _ = await ctx.service(compress_types="gzip,zstd,lzo")
    configured = int(params(full).group(8))
    _w, gz, _ = await ctx.service(compress_types="gzip")
    got = int(params(gz).group(8))
    check_eq(got, 1 if configured in (2, 3) else configured, "type_compress for a gzip-only sensor "
             f"(central chose {configured} for gzip,zstd,lzo)")
    if configured == 2:
        _w, z, _ = await ctx.service(compress_types="gzip,zstd")
        check_eq(int(params(z).group(8)), 1, "type_compress for gzip,zstd when the central prefers lzo")


@case("service-same-sensor-id", "sensor_id equal to max(central id_sensor, 0) without sensor_string → exact "
      "refusal, close", ("§7.3", "§15.2"))
async def service_same_sensor_id(ctx: ServerContext) -> None:
    sid = max(ctx.options.central_sensor_id, 0)
    wire, result = await ctx.handshake("service", ctx.service_credentials(sid), expect=None)
    check_eq(result, ctx.spec.text("same_sensor_id"), "reply to the central's own sensor id")
    await wire.expect_silent_close(ctx.wait(5), "close after the refusal")


@case("service-version-refusal", "an old sensor_version is either refused with `need upgrade sensor!!!` (central "
      "in new-store mode) or accepted; nothing else", ("§7.3", "§15.2"))
async def service_version_refusal(ctx: ServerContext) -> None:
    wire, result = await ctx.handshake("service", ctx.service_credentials(ctx.new_sensor_id(), sensor_version=1),
                                       expect=None)
    if result == ctx.spec.text("need_upgrade_sensor"):
        await wire.expect_silent_close(ctx.wait(5), "close after `need upgrade sensor!!!`")
        ctx.notes.append("service-version-refusal: central runs new store / set-id (old sensors refused)")
        return
    params(result)


@case("service-duplicate-refused", "a second service with the same sensor_id and no `restore` is refused after "
      "5 s with the exact text; the first stays", ("§7.3", "§14.1", "§15.2", "§16 Q19"))
async def service_duplicate(ctx: ServerContext) -> None:
    ctx.need_wait(5)
    sid = ctx.new_sensor_id()
    first, _r, _c = await ctx.service(sid, check_ping_response=False)
    start = trio.current_time()
    wire, result = await ctx.handshake("service", ctx.service_credentials(sid), expect=None)
    took = trio.current_time() - start
    check_eq(result, ctx.spec.template("already_connected", sensor_id=sid), "reply to a duplicate sensor id")
    check(took >= ctx.t(5) * 0.8, f"refusal came after {took:.2f} s; spec §7.3 wants a {ctx.t(5):.2f} s delay")
    await wire.expect_silent_close(ctx.wait(5), "close after the refusal")
    await first.still_open(0.2)


@case("service-restore-replaces", "a service with `restore` replaces a registered one with the same id",
      ("§7.3", "§7.2"))
async def service_restore(ctx: ServerContext) -> None:
    sid = ctx.new_sensor_id()
    first, _r, _c = await ctx.service(sid)
    second, result, _c2 = await ctx.service(sid, restore=True)
    check(result.startswith(b'{"result":"OK"'), f"restore refused: {result!r}")
    # the new one is the registered one: it gets pings and stays up
    ping = await second.read_plain(ctx.wait(1), "first ping on the restored service")
    check_eq(ping, b"ping", "first block on the restored service")


@case("service-restore-zero-is-present", "`\"restore\":0` counts as present (presence flag)", ("§4.4", "§16 Q21"))
async def service_restore_zero(ctx: ServerContext) -> None:
    sid = ctx.new_sensor_id()
    await ctx.service(sid, check_ping_response=False)
    creds = ctx.service_credentials(sid)
    text = vmjson.dumps(creds).replace(b',"check_ping_response"', b',"restore":0,"check_ping_response"')
    _wire, result = await ctx.handshake("service", text, expect=None)
    check(result.startswith(b'{"result":"OK"'), f"`restore`:0 must act as restore, got {result!r}")


@case("service-numeric-string-flags", "numeric flags given as strings (`\"auto_parameters\":\"1\"`) work",
      ("§4.2", "§4.4"))
async def service_numeric_string_flags(ctx: ServerContext) -> None:
    creds = ctx.service_credentials(ctx.new_sensor_id())
    text = vmjson.dumps(creds).replace(b'"auto_parameters":1', b'"auto_parameters":"1"')
    text = text.replace(b'"sensor_id":%d' % creds["sensor_id"], b'"sensor_id":"%d"' % creds["sensor_id"])
    _wire, result = await ctx.handshake("service", text, expect=None)
    params(result)


@case("service-ping-pong", "first ping ≈ at once, next ≈ 5 s after the last write; `pong` keeps the service",
      ("§7.5", "§14.1", "§16 Q26", "§15.2"))
async def service_ping_pong(ctx: ServerContext) -> None:
    ctx.need_wait(10)
    wire, _r, _c = await ctx.service()
    start = trio.current_time()
    check_eq(await wire.read_plain(ctx.wait(0.1), "first ping"), ctx.spec.text("ping"), "first block")
    first = trio.current_time() - start
    check(first <= ctx.t(0.1) + 1.0, f"first ping after {first:.2f} s")
    for n in range(2):
        await wire.send_plain(b"pong")
        t0 = trio.current_time()
        check_eq(await wire.read_plain(ctx.wait(5), f"ping {n + 2}"), b"ping", f"block {n + 2}")
        gap = trio.current_time() - t0
        check(gap >= ctx.t(5) * 0.8, f"ping {n + 2} came {gap:.2f} s after the pong; spec wants ≥ {ctx.t(5):.2f} s")


@case("service-no-pong", "no answer to `ping` → the central ends the service within the 5 s pong wait",
      ("§7.5", "§14.1", "§14.4"))
async def service_no_pong(ctx: ServerContext) -> None:
    ctx.need_wait(5)
    wire, _r, _c = await ctx.service()
    check_eq(await wire.read_plain(ctx.wait(0.1), "first ping"), b"ping", "first block")
    await wire.expect_silent_close(ctx.wait(5), "pong timeout")


@case("service-wrong-pong", "a reply other than `pong`/`stop` to `ping` ends the service", ("§7.5",))
async def service_wrong_pong(ctx: ServerContext) -> None:
    wire, _r, _c = await ctx.service()
    check_eq(await wire.read_plain(ctx.wait(0.1), "first ping"), b"ping", "first block")
    await wire.send_plain(b"pang")
    await wire.expect_silent_close(ctx.wait(1), "wrong pong")


@case("service-stop", "`stop` in reply to `ping` ends the service in order (the central closes)",
      ("§7.5", "§7.9", "§16 Q4"))
async def service_stop(ctx: ServerContext) -> None:
    wire, _r, _c = await ctx.service()
    check_eq(await wire.read_plain(ctx.wait(0.1), "first ping"), b"ping", "first block")
    await wire.send_plain(b"stop")
    await wire.expect_silent_close(ctx.wait(1), "close after `stop`")


@case("service-no-check-ping-response", "without check_ping_response the central does not wait for `pong`",
      ("§7.5", "§14.1"))
async def service_no_check_ping(ctx: ServerContext) -> None:
    ctx.need_wait(10)
    wire, _r, _c = await ctx.service(check_ping_response=False)
    check_eq(await wire.read_plain(ctx.wait(0.1), "first ping"), b"ping", "first block")
    check_eq(await wire.read_plain(ctx.wait(5), "second ping without any pong"), b"ping", "second block")


@case("service-unsolicited-discarded", "unsolicited bytes between pings are read and discarded, not a reason to "
      "close", ("§7.5", "§16 Q3"))
async def service_unsolicited(ctx: ServerContext) -> None:
    ctx.need_wait(5)
    wire, _r, _c = await ctx.service()
    check_eq(await wire.read_plain(ctx.wait(0.1), "first ping"), b"ping", "first block")
    await wire.send_plain(b"pong")
    await trio.sleep(ctx.t(1))
    await wire.send_plain(b"pong")  # an extra pong outside a reply wait
    try:
        got = await wire.read_plain(ctx.wait(5), "the next ping")
    except PeerClosed:
        raise CaseFailed("the central closed the service after unsolicited bytes") from None
    check_eq(got, b"ping", "next block")


@case("service-encode-data", "with use_encode_data the central's service blocks are AES", ("§7.1", "§7.5", "§7.10"))
async def service_encode_data(ctx: ServerContext) -> None:
    wire, _r, creds = await ctx.service(use_encode_data=True)
    wire.install_keys(creds["aes_ckey"], creds["aes_ivec"])
    check_eq(await wire.read_aes(ctx.wait(0.1), "first ping (AES)"), b"ping", "first block")
    await wire.send_plain(b"pong")  # sensor → central stays plain


@case("service-eof-unregisters", "after a service ends, `gui_command` for it answers `missing sniffer service`",
      ("§7.5", "§12.2"))
async def service_eof_unregisters(ctx: ServerContext) -> None:
    sid = ctx.new_sensor_id()
    wire, _r, _c = await ctx.service(sid)
    await wire.aclose()
    await trio.sleep(0.3)
    gui = await ctx.open("gui_command", sensor_id=sid, command="getversion")
    data = await gui.read_until_eof(ctx.wait(5), "gui reply")
    check_eq(data, ctx.spec.text("gui_missing_service"), "gui_command after the service ended")


async def next_task(ctx: ServerContext, wire: Wire, timeout: float, aes: bool = False) -> tuple[str, bytes]:
    """Read service blocks, answering pings, until a task `<id>/<command>` arrives; return (id, command)."""
    deadline = trio.current_time() + timeout
    while True:
        left = deadline - trio.current_time()
        if left <= 0:
            raise NoReply("no task push on the service connection")
        payload = await read_service_block(ctx, wire, left, "a task push", aes)
        if payload == b"ping":
            await wire.send_plain(b"pong")
            continue
        m = _TASK.fullmatch(payload)
        if m is None:
            raise CaseFailed(f"service block is neither ping nor `<id>/<command>` (spec §7.5): {payload[:80]!r}")
        return m.group(1).decode(), m.group(2)

