"""Central role: GUI tasks, `response` / `responses` relay, manager_command, keycheck (spec §11, §12, §13)."""

from __future__ import annotations

import json

import trio

from vmproto.wire.crypto import AesStreamDecryptor, AesStreamEncryptor, ManagerAesKey, wrap_manager_request
from vmproto.wire.errors import ProtocolError

from ..context import ServerContext
from ..model import CaseFailed, Level, Quirk, case, check, check_eq, skip
from ..wirekit import Wire, opening
from .server_service import next_task


def _stream(creds: dict, data: bytes) -> bytes:
    """The `response` AES stream of spec §3.7 with the service keys."""
    enc = AesStreamEncryptor(creds["aes_ckey"].encode("latin-1")[:16], creds["aes_ivec"].encode("latin-1")[:16])
    return enc.update(data) + enc.finalize()


async def _relay(ctx: ServerContext, command: str, output: bytes, *, gui_line: bytes | None = None,
                 use_encode_data: bool = False, first_byte: int | None = None,
                 same_write: bool = False) -> tuple[Wire, bytes, str]:
    """Register a service, send gui_command, answer the task on `response`; return (gui wire, command, task id)."""
    sid = ctx.new_sensor_id()
    svc, _r, creds = await ctx.service(sid, use_encode_data=use_encode_data)
    if use_encode_data:
        svc.install_keys(creds["aes_ckey"], creds["aes_ivec"])
    gui = await ctx.open("gui_command", line=gui_line or opening("gui_command", sensor_id=sid, command=command))
    task_id, cmd = await next_task(ctx, svc, ctx.wait(2), aes=use_encode_data)
    ct = _stream(creds, output)
    resp = await ctx.connect("response")
    line = opening("response", gui_task_id=task_id)
    if same_write:
        await resp.send(line + ct)
    else:
        await resp.send(line)
        await trio.sleep(0.05)
        await resp.send(ct)
    await resp.send_eof()
    extra = await resp.read_until_eof(ctx.wait(5), "the central closing the response connection")
    check_eq(extra, b"", "bytes the central wrote on a `response` connection (spec §11.1: none)")
    return gui, cmd, task_id


@case("task-relay-plain", "gui_command → task `<id>/<command>` on the service → `response` AES stream → the GUI "
      "gets the plaintext, then close", ("§7.5", "§11.1", "§12.2", "§12.4", "§13.2", "§3.7"))
async def task_relay_plain(ctx: ServerContext) -> None:
    output = b"2026.04.0 output with \r\n and \x00 bytes" * 40
    gui, cmd, task_id = await _relay(ctx, "getversion", output)
    check_eq(cmd, b"getversion", "task command")
    data = await gui.read_until_eof(ctx.wait(5), "the relayed output")
    check_eq(data, output, "bytes the GUI received")


@case("task-relay-empty", "an empty `response` stream (no ciphertext) gives the GUI nothing, then close",
      ("§3.7", "§11.1", "§12.4"))
async def task_relay_empty(ctx: ServerContext) -> None:
    gui, _cmd, _tid = await _relay(ctx, "getversion", b"")
    check_eq(await gui.read_until_eof(ctx.wait(5), "the GUI close"), b"", "bytes the GUI received")


@case("task-relay-encode-data", "task pushes are AES blocks on a use_encode_data service", ("§7.5", "§13.2"))
async def task_relay_encode_data(ctx: ServerContext) -> None:
    gui, cmd, _tid = await _relay(ctx, "getversion", b"ok", use_encode_data=True)
    check_eq(cmd, b"getversion", "task command")
    check_eq(await gui.read_until_eof(ctx.wait(5), "output"), b"ok", "GUI bytes")


@case("task-id-unique", "task ids are `<digits>:<digits>` and unique", ("§7.5",))
async def task_id_unique(ctx: ServerContext) -> None:
    sid = ctx.new_sensor_id()
    svc, _r, creds = await ctx.service(sid)
    ids = []
    for _ in range(3):
        gui = await ctx.open("gui_command", sensor_id=sid, command="getversion")
        task_id, _cmd = await next_task(ctx, svc, ctx.wait(2))
        ids.append(task_id)
        resp = await ctx.connect("response")
        await resp.send(opening("response", gui_task_id=task_id) + _stream(creds, b"x"))
        await resp.aclose()
        await gui.read_until_eof(ctx.wait(5), "output")
    check(len(set(ids)) == 3, f"task ids repeat: {ids}")


@case("response-crlf-remainder", "ciphertext starting with CR/LF sent in the same write as the opening line: "
      "vmproto keeps it, the reference strips it and corrupts the stream", ("§1.5", "§11.1", "§16 Q2"), Level.QUIRK,
      quirk=Quirk("Q2", "leading CR/LF bytes of the stream are skipped: garbage or nothing reaches the GUI",
                  "every byte after the first CRLF is stream data: the GUI gets the output"))
async def response_crlf_remainder(ctx: ServerContext) -> str:
    sid = ctx.new_sensor_id()
    svc, _r, creds = await ctx.service(sid)
    gui = await ctx.open("gui_command", sensor_id=sid, command="getversion")
    task_id, _cmd = await next_task(ctx, svc, ctx.wait(2))
    output = b""
    for n in range(100000):  # find an output whose first cipher byte is CR or LF
        output = b"version %d" % n
        if _stream(creds, output)[0] in (0x0A, 0x0D):
            break
    resp = await ctx.connect("response")
    await resp.send(opening("response", gui_task_id=task_id) + _stream(creds, output))
    await resp.send_eof()
    data = await gui.read_until_eof(ctx.wait(5), "output")
    return "vmproto" if data == output else "reference"


@case("response-unknown-task", "`response` for an unknown task id → close, nothing written", ("§11.1", "§15.1"))
async def response_unknown_task(ctx: ServerContext) -> None:
    wire = await ctx.open("response", gui_task_id="1:999999999")
    await wire.send(b"\x00" * 32)
    await wire.send_eof()
    await wire.expect_silent_close(ctx.wait(5), "response for an unknown task")


@case("gui-missing-service", "gui_command for a sensor without service → raw `missing sniffer service - connect "
      "sensor?`, close", ("§12.2", "§12.4", "§15.2"))
async def gui_missing_service(ctx: ServerContext) -> None:
    gui = await ctx.open("gui_command", sensor_id=ctx.new_sensor_id(), command="getversion")
    check_eq(await gui.read_until_eof(ctx.wait(5), "refusal"), ctx.spec.text("gui_missing_service"), "GUI bytes")


@case("gui-sensor-id-string", "gui_command sensor_id as a numeric string is accepted", ("§1.3", "§12.2"))
async def gui_sensor_id_string(ctx: ServerContext) -> None:
    sid = ctx.new_sensor_id()
    svc, _r, creds = await ctx.service(sid)
    gui = await ctx.open("gui_command", line=b'{"command":"getversion","type_connection":"gui_command",'
                         b'"sensor_id":"%d"}\r\n' % sid)
    task_id, _cmd = await next_task(ctx, svc, ctx.wait(2))
    resp = await ctx.connect("response")
    await resp.send(opening("response", gui_task_id=task_id) + _stream(creds, b"v"))
    await resp.aclose()
    check_eq(await gui.read_until_eof(ctx.wait(5), "output"), b"v", "GUI bytes")


@case("gui-timeout", "no response within 5 min → raw `timeout`, close", ("§12.2", "§14.1", "§15.2"), slow=True)
async def gui_timeout(ctx: ServerContext) -> None:
    ctx.need_wait(300)
    sid = ctx.new_sensor_id()
    svc, _r, _creds = await ctx.service(sid, check_ping_response=False)
    gui = await ctx.open("gui_command", sensor_id=sid, command="getversion")
    await next_task(ctx, svc, ctx.wait(2))
    check_eq(await gui.read_until_eof(ctx.wait(300), "timeout"), ctx.spec.text("gui_timeout"), "GUI bytes")


def _manager_key(ctx: ServerContext) -> ManagerAesKey:
    if ctx.options.manager_key is None or ctx.options.manager_iv is None:
        skip("needs --manager-key/--manager-iv (the central's manager AES key)")
    return ManagerAesKey(ctx.options.manager_key, ctx.options.manager_iv)  # type: ignore[arg-type]


@case("gui-aes-wrapper", "AES-wrapped gui_command: reply is `aes:` + one stream with the GUI's cipher and the "
      "manager key", ("§3.6", "§12.4", "§13.2"))
async def gui_aes_wrapper(ctx: ServerContext) -> None:
    key = _manager_key(ctx)
    for cipher in ("aes-128-cbc", "AES-256-CBC"):
        sid = ctx.new_sensor_id()
        line = wrap_manager_request(opening("gui_command", sensor_id=sid, command="getversion")[:-2], key, cipher)
        gui, cmd, _tid = await _relay(ctx, "getversion", b"2026.04.0", gui_line=line)
        check_eq(cmd, b"getversion", "task command from an AES-wrapped request")
        data = await gui.read_until_eof(ctx.wait(5), "AES reply")
        check_eq(data[:4], ctx.spec.text("aes_reply_prefix"), "reply prefix")
        try:
            dec = AesStreamDecryptor(key.key, key.iv, cipher)
            plain = dec.update(data[4:]) + dec.finalize()
        except ProtocolError as exc:
            raise CaseFailed(f"{cipher} reply does not decrypt with the manager key: {exc}") from None
        check_eq(plain, b"2026.04.0", f"decrypted {cipher} reply")


@case("gui-need-aes", "plain gui_command with a non-exempt command, manager key set → task command `need_aes`",
      ("§12.3", "§15.2"))
async def gui_need_aes(ctx: ServerContext) -> None:
    _manager_key(ctx)
    _gui, cmd, _tid = await _relay(ctx, "getfile x.pcap", b"command not found\n")
    check_eq(cmd, ctx.spec.text("need_aes_command"), "forwarded command")
    _gui, cmd, _tid = await _relay(ctx, "getversion", b"2026.04.0")
    check_eq(cmd, b"getversion", "exempt command forwarded as is")


@case("responses-relay", "file_exists task answered on `responses` with `<id>#output` → `OK`, GUI gets the output "
      "raw", ("§11.2", "§11.3", "§13.2", "§15.2"))
async def responses_relay(ctx: ServerContext) -> None:
    sid = ctx.new_sensor_id()
    svc, result, _creds = await ctx.service(sid)
    check(b'"enable_responses_sender":1' in result, "service result lacks enable_responses_sender")
    gui = await ctx.open("gui_command", sensor_id=sid, command="file_exists 2026-01-01/x.pcap")
    task_id, cmd = await next_task(ctx, svc, ctx.wait(2))
    check_eq(cmd, b"file_exists 2026-01-01/x.pcap", "task command")
    rs, _ = await ctx.handshake("responses")
    await rs.send_aes(task_id.encode() + b"#1234#5")
    check_eq(await rs.read_aes(ctx.wait(5), "responses reply"), ctx.spec.text("responses_ok"), "reply")
    check_eq(await gui.read_until_eof(ctx.wait(5), "output"), b"1234#5", "GUI bytes (after the first #)")


@case("responses-errors", "`responses` without `#` → `missing gui task id`; unknown id → `unknown gui task id`; the "
      "connection stays", ("§11.2", "§15.2"))
async def responses_errors(ctx: ServerContext) -> None:
    rs, _ = await ctx.handshake("responses")
    await rs.send_aes(b"no separator")
    check_eq(await rs.read_aes(ctx.wait(5), "reply"), ctx.spec.text("responses_missing_task_id"), "reply")
    await rs.send_aes(b"1:2#")  # '#' as the last byte does not count (spec §11.2)
    check_eq(await rs.read_aes(ctx.wait(5), "reply"), ctx.spec.text("responses_missing_task_id"),
             "reply when `#` is the last byte")
    await rs.send_aes(b"1:424242424#out")
    check_eq(await rs.read_aes(ctx.wait(5), "reply"), ctx.spec.text("responses_unknown_task_id"), "reply")


@case("manager-active", "manager_command `active` lists registered services as the §12.5 JSON", ("§12.5",))
async def manager_active(ctx: ServerContext) -> None:
    sid = ctx.new_sensor_id()
    await ctx.service(sid, check_ping_response=False)
    wire = await ctx.open("manager_command", command="active")
    data = await wire.read_until_eof(ctx.wait(5), "active list")
    try:
        obj = json.loads(data)
    except ValueError:
        raise CaseFailed(f"reply to `active` is not JSON: {data[:100]!r}") from None
    check(list(obj)[:1] == ["count"], f"first member must be count: {data[:100]!r}")
    services = obj.get("services", [])
    check_eq(obj["count"], len(services), "count vs services")
    mine = [s for s in services if s.get("sensor_id") == sid]
    check(len(mine) == 1 and list(mine[0]) == ["ip", "port", "sensor_id"],
          f"our sensor {sid} must be listed once as {{ip,port,sensor_id}}: {data[:300]!r}")
    keys = [str(s["sensor_id"]) for s in services]
    check(keys == sorted(keys), f"services are not ordered by key as text: {keys}")


@case("manager-unknown", "manager_command with an unknown command → raw `unknown command: <command>`, close",
      ("§12.5", "§15.2"))
async def manager_unknown(ctx: ServerContext) -> None:
    wire = await ctx.open("manager_command", command="frobnicate 1")
    check_eq(await wire.read_until_eof(ctx.wait(5), "reply"),
             ctx.spec.template("manager_unknown_command", command="frobnicate 1"), "reply")


@case("keycheck-exchange", "keycheck: handshake `OK`, a request gets a non-empty AES reply (checker output or a "
      "§12.6 error), connection stays", ("§12.6", "§15.2"))
async def keycheck_exchange(ctx: ServerContext) -> None:
    wire, _ = await ctx.handshake("keycheck")
    for _ in range(2):
        await wire.send_aes(b"conformance-probe")
        reply = await wire.read_aes(ctx.wait(30), "keycheck reply")
        check(reply != b"", "empty keycheck reply")
        if reply.startswith(b"error: "):
            ok = any(ctx.spec.regex(e).fullmatch(reply) for e in
                     ("keycheck_undefined", "keycheck_missing_script", "keycheck_failed_run", "keycheck_no_output"))
            check(ok, f"keycheck error not in the §12.6 grammar: {reply!r}")


