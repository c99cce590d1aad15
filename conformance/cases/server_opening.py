"""Central role: opening line, dispatch, RSA key message, credentials acceptance (spec §1, §3, §4, §6, §17)."""

from __future__ import annotations

from vmproto.wire import vmjson

from ..context import RSA_BITS, ServerContext
from ..model import CaseFailed, Level, Quirk, case, check, check_eq
from ..wirekit import NoReply, PeerClosed, block, new_keys, opening, rsa_block

RSA_TYPES = tuple(RSA_BITS)


def _handshake_case(type_connection: str) -> None:
    slug = type_connection.replace(" ", "-")

    @case(f"handshake-{slug}", f"RSA/AES handshake of `{type_connection}`: exact opening, {RSA_BITS[type_connection]}"
          "-bit SPKI rsa_key, credentials accepted, first AES exchange works",
          ("§1.3", "§3.1", "§3.2", "§3.3", "§6.1", "§6.5"))
    async def run(ctx: ServerContext) -> None:
        if type_connection == "service":
            wire, result, _ = await ctx.service()
            check(result == b"OK" or result.startswith(b'{"result":"OK"'), f"service result {result!r}")
            return
        wire, result = await ctx.handshake(type_connection, expect=None)
        if type_connection == "store":
            check(result in (ctx.spec.text("store_connect_ok"), ctx.spec.text("handshake_ok")),
                  f"store handshake result must be the §8.2 JSON or OK, got {result!r}")
            await wire.send_aes(b"check")
            reply = await wire.read_aes(ctx.wait(5), "reply to check")
            check(reply == b"OK" or reply.startswith(b'{"error":"sql queue is full"'), f"reply to check: {reply!r}")
        else:
            check_eq(result, ctx.spec.text("handshake_ok"), "handshake result")
        if type_connection == "query":
            await wire.send_aes(b"select 1")
            await wire.read_aes(ctx.wait(10), "reply to select 1")
        await wire.aclose()


for _t in RSA_TYPES:
    _handshake_case(_t)


@case("opening-unknown-type", "unknown type_connection (cloud name `sniffer_service`) → close, nothing written",
      ("§1.2", "§1.6", "§15.4"))
async def opening_unknown_type(ctx: ServerContext) -> None:
    wire = await ctx.open("sniffer_service")
    await wire.expect_silent_close(ctx.wait(5), "unknown connection type")


@case("opening-case-sensitive", "`Service` (wrong letter case) is an unknown type → close, nothing written",
      ("§1.3", "§1.6"))
async def opening_case_sensitive(ctx: ServerContext) -> None:
    wire = await ctx.open("Service")
    await wire.expect_silent_close(ctx.wait(5), "type_connection with wrong letter case")


@case("opening-not-json", "a line that is not a JSON object → close, nothing written", ("§1.4", "§1.6"))
async def opening_not_json(ctx: ServerContext) -> None:
    wire = await ctx.open("service", line=b"GET / HTTP/1.0\r\n\r\n")
    await wire.expect_silent_close(ctx.wait(5), "non-JSON opening line")


@case("opening-any-json-form", "the central accepts whitespace and another key order in the opening object",
      ("§1.3", "§4.3"))
async def opening_any_json_form(ctx: ServerContext) -> None:
    line = b'{ "x" : 1 ,\t"type_connection" : "query" }\r\n'
    wire = await ctx.open("query", line=line)
    await ctx.read_rsa_key(wire, 2048)
    await wire.aclose()


@case("opening-without-crlf", "a complete JSON object without CRLF is a complete opening line", ("§1.4",))
async def opening_without_crlf(ctx: ServerContext) -> None:
    wire = await ctx.open("query", line=b'{"type_connection":"query"}')
    await ctx.read_rsa_key(wire, 2048)
    await wire.aclose()


@case("opening-remainder-discarded", "bytes after the opening line, sent before rsa_key, are discarded; the "
      "handshake still works", ("§1.5",))
async def opening_remainder_discarded(ctx: ServerContext) -> None:
    wire = await ctx.open("query", line=opening("query") + b"\r\n\r\nleftover")
    pem = await ctx.read_rsa_key(wire, 2048)
    creds = ctx.credentials()
    wire.install_keys(creds["aes_ckey"], creds["aes_ivec"])
    await wire.send(rsa_block(pem, vmjson.dumps(creds)))
    check_eq(await wire.read_plain(ctx.wait(5), "handshake result"), b"OK", "handshake result")


@case("opening-split-writes", "the opening line and blocks may arrive in small pieces (readers must not rely on "
      "one segment per block)", ("§1.4", "§2.4", "§2.5"))
async def opening_split_writes(ctx: ServerContext) -> None:
    import trio

    wire = await ctx.connect()
    # the CRLF travels with the closing brace: an object complete without CRLF already ends the line (spec §1.4)
    for piece in (b'{"type_conn', b'ection":"qu', b'ery"}\r\n'):
        await wire.send(piece)
        await trio.sleep(0.05)
    pem = await ctx.read_rsa_key(wire, 2048)
    creds = ctx.credentials()
    wire.install_keys(creds["aes_ckey"], creds["aes_ivec"])
    data = rsa_block(pem, vmjson.dumps(creds))
    for i in range(0, len(data), 97):
        await wire.send(data[i:i + 97])
        await trio.sleep(0.01)
    check_eq(await wire.read_plain(ctx.wait(5), "handshake result"), b"OK", "handshake result")


@case("opening-line-cap", "64 KiB without a line terminator: vmproto closes silently, the reference keeps reading",
      ("§1.4", "§17.2", "§16 Q1"), Level.QUIRK,
      quirk=Quirk("Q1", "no cap: keeps the connection open and waits", "closes without writing after 65 536 bytes"))
async def opening_line_cap(ctx: ServerContext) -> str:
    wire = await ctx.connect()
    try:
        await wire.send(b"x" * 70000)
        await wire.expect_silent_close(ctx.wait(3), "over-long opening line")
    except PeerClosed:
        return "vmproto"
    except CaseFailed as exc:
        if isinstance(exc, NoReply) or "neither closed" in str(exc):
            return "reference"
        raise
    return "vmproto"


@case("opening-line-timeout", "no line terminator for 30 s: vmproto closes silently, the reference waits forever",
      ("§1.4", "§14.1", "§16 Q1"), Level.QUIRK,
      quirk=Quirk("Q1", "no timeout: the connection stays open", "closes without writing after 30 s"))
async def opening_line_timeout(ctx: ServerContext) -> str:
    ctx.need_wait(30)
    wire = await ctx.connect()
    await wire.send(b'{"type_connection":')
    try:
        await wire.expect_silent_close(ctx.wait(30), "silent client")
    except CaseFailed as exc:
        if "neither closed" in str(exc) and "wrote" not in str(exc):
            return "reference"
        raise
    return "vmproto"


# --- credentials (§3.3, §3.4, §4, §6.3) ---------------------------------------------------------------------

@case("credentials-no-password-member", "credentials without the substring `password` → close, nothing written",
      ("§6.3", "§15.4"))
async def credentials_no_password(ctx: ServerContext) -> None:
    wire = await ctx.open("query")
    pem = await ctx.read_rsa_key(wire, 2048)
    ckey, ivec = new_keys()
    await wire.send(rsa_block(pem, vmjson.dumps({"aes_ckey": ckey, "aes_ivec": ivec})))
    await wire.expect_silent_close(ctx.wait(5), "credentials lacking `password`")


@case("credentials-rsa-wrong-length", "RSA block whose length is not the modulus size → close, nothing written",
      ("§2.6", "§3.3"))
async def credentials_rsa_wrong_length(ctx: ServerContext) -> None:
    wire = await ctx.open("query")
    await ctx.read_rsa_key(wire, 2048)
    await wire.send(block(b"\x01" * 255))
    await wire.expect_silent_close(ctx.wait(5), "RSA block of 255 bytes")


@case("credentials-any-json-form", "credentials with whitespace, other member order and \\u escapes are accepted",
      ("§4.3", "§6.2"))
async def credentials_any_json_form(ctx: ServerContext) -> None:
    ckey, ivec = new_keys()
    pw = ctx.options.password
    escaped_pw = "".join(f"\\u{ord(c):04x}" for c in pw)
    text = (f'{{ "aes_ivec" : "{vmjson.escape(ivec)}",\n "password" : "{escaped_pw}", '
            f'"aes_ckey":"{vmjson.escape(ckey)}" }}').encode()
    wire = await ctx.open("query")
    pem = await ctx.read_rsa_key(wire, 2048)
    wire.install_keys(ckey, ivec)
    await wire.send(rsa_block(pem, text))
    check_eq(await wire.read_plain(ctx.wait(5), "handshake result"), b"OK", "handshake result")
    await wire.send_aes(b"select 1")
    await wire.read_aes(ctx.wait(10), "reply to select 1 under the installed keys")


@case("credentials-key-alphabet", "AES key and IV using the whole 0x30-0x7A alphabet (\\ escaped) work",
      ("§3.4", "§4.1"))
async def credentials_key_alphabet(ctx: ServerContext) -> None:
    ckey = "0\\:;<=>?@[]^_`z" + "\\" * 17
    ivec = "\\\\`_^]>=<;:0zyx@"
    creds = ctx.credentials(keys=(ckey, ivec))
    wire, _ = await ctx.handshake("query", creds)
    await wire.send_aes(b"select 1")
    await wire.read_aes(ctx.wait(10), "reply under a key containing backslashes")


@case("credentials-short-aes-key", "aes_ckey shorter than 16 bytes: vmproto closes silently; the reference "
      "reads past the string and proceeds", ("§3.4", "§6.3", "§17.2"), Level.QUIRK,
      quirk=Quirk("", "accepts (`OK`) with an undefined key", "closes without writing"))
async def credentials_short_aes_key(ctx: ServerContext) -> str:
    wire = await ctx.open("query")
    pem = await ctx.read_rsa_key(wire, 2048)
    await wire.send(rsa_block(pem, vmjson.dumps({"password": ctx.options.password, "aes_ckey": "0123456789",
                                                 "aes_ivec": "0123456789abcdef"})))
    try:
        data = await wire.read_until_eof(ctx.wait(5), "refusal of a short key")
    except NoReply as exc:
        if exc.data.endswith(b"OK"):
            return "reference"
        raise
    if data == b"":
        return "vmproto"
    if data.endswith(b"OK"):
        return "reference"
    raise CaseFailed(f"unexpected answer to a short AES key: {data[:80]!r}")


@case("credentials-not-json", "credentials that contain `password` but are not JSON: vmproto closes silently; the "
      "reference continues with an empty password", ("§6.3", "§16 Q29"), Level.QUIRK,
      quirk=Quirk("Q29", "answers `bad password` (or accepts if the password is empty)", "closes without writing"))
async def credentials_not_json(ctx: ServerContext) -> str:
    wire = await ctx.open("query")
    pem = await ctx.read_rsa_key(wire, 2048)
    await wire.send(rsa_block(pem, b"password=" + ctx.options.password.encode()))
    data = await wire.read_until_eof(ctx.wait(5), "refusal of non-JSON credentials")
    if data == b"":
        return "vmproto"
    if data in (block(b"bad password"), block(b"OK")):
        return "reference"
    raise CaseFailed(f"unexpected answer to non-JSON credentials: {data[:80]!r}")


def _bad_password_case(type_connection: str) -> None:
    slug = type_connection.replace(" ", "-")

    @case(f"bad-password-{slug}", f"wrong password on `{type_connection}` → plain `bad password`, then close",
          ("§6.3", "§6.6", "§15.2"))
    async def run(ctx: ServerContext) -> None:
        if type_connection == "service":
            creds = ctx.service_credentials(ctx.new_sensor_id(), password=ctx.options.password + "-wrong")
        elif type_connection == "packetbuffer block":
            creds = ctx.pb_credentials(password=ctx.options.password + "-wrong")
        else:
            creds = ctx.credentials(password=ctx.options.password + "-wrong")
        wire, result = await ctx.handshake(type_connection, creds, expect=None)
        check_eq(result, ctx.spec.text("bad_password"), "reply to a wrong password")
        await wire.expect_silent_close(ctx.wait(5), "close after `bad password`")


for _t in RSA_TYPES:
    _bad_password_case(_t)


@case("bad-password-empty", "an empty password against a central with a password → `bad password`", ("§6.6",))
async def bad_password_empty(ctx: ServerContext) -> None:
    if not ctx.options.password:
        from ..model import skip

        skip("the central's password is empty")
    _wire, result = await ctx.handshake("query", ctx.credentials(password=""), expect=None)
    check_eq(result, ctx.spec.text("bad_password"), "reply to an empty password")
