"""Central role: the query channel and result formats (spec §5, §10)."""

from __future__ import annotations

import base64
import re

from vmproto.wire.compression import Compression, compress, decompress, detect
from vmproto.wire.errors import ProtocolError

from ..context import ServerContext
from ..model import CaseFailed, Level, Quirk, case, check, check_eq
from ..wirekit import PeerClosed, Wire
from .server_store import TABLE, ensure_table

_JSON_ROWS = re.compile(rb'\{"result":"OK","data_rows":(\d+),"data":\[\[("[^"]*:\d{1,3}")(,"[^"]*:\d{1,3}")*\]'
                        rb'(,\[.*\])+\]\}', re.DOTALL)
_ERROR = re.compile(rb'\{"result":"(\d+)\|([01])\|(.*)"\}', re.DOTALL)


async def ask(ctx: ServerContext, wire: Wire, sql: bytes, codec: Compression = Compression.GZIP) -> bytes:
    """Send one request; return the decompressed reply and check it came back in the request's codec."""
    await wire.send_aes(compress(codec, sql))
    raw = await wire.read_aes(ctx.wait(10), f"reply to {sql[:40]!r}")
    got = detect(raw)
    try:
        _kind, text = decompress(raw)
    except ProtocolError as exc:
        raise CaseFailed(f"reply does not decompress: {exc}") from None
    if not _ERROR.fullmatch(text):  # error replies may be uncompressed (reference)
        check(got == codec or (codec is Compression.NONE and got is Compression.NONE),
              f"reply codec {got.name} for a {codec.name} request (spec §10.3: the same)")
    return text


async def _conn(ctx: ServerContext) -> Wire:
    wire, _ = await ctx.handshake("query")
    return wire


def _codec_case(codec: Compression) -> None:
    @case(f"query-codec-{codec.name.lower()}", f"{codec.name.lower()} request → reply in the same codec",
          ("§10.2", "§10.3", "§5.2", "§5.6"))
    async def run(ctx: ServerContext) -> None:
        wire = await _conn(ctx)
        text = await ask(ctx, wire, b"select 1 as one", codec)
        check(_JSON_ROWS.fullmatch(text), f"result does not follow spec §10.4: {text[:200]!r}")


for _c in Compression:
    _codec_case(_c)


@case("query-json-result", "JSON result: header row `name:type`, data rows, values as strings, NULL as null",
      ("§10.4", "§10.6", "§10.7"))
async def query_json_result(ctx: ServerContext) -> None:
    wire = await _conn(ctx)
    text = await ask(ctx, wire, b"select 1 as a, 'x' as b, null as c")
    m = _JSON_ROWS.fullmatch(text)
    check(m, f"result does not follow spec §10.4: {text[:200]!r}")
    check(text.endswith(b',["1","x",null]]}'), f"row values: {text!r}")
    check(re.search(rb'\["a:\d+","b:\d+","c:\d+"\]', text), f"header row: {text!r}")
    check_eq(m.group(1), b"1", "data_rows")


@case("query-empty-result", "no rows → exactly `{\"result\":\"OK\"}`", ("§10.4", "§15.2"))
async def query_empty_result(ctx: ServerContext) -> None:
    await ensure_table(ctx)
    wire = await _conn(ctx)
    check_eq(await ask(ctx, wire, f"select v from {TABLE} where 1 = 0".encode()), ctx.spec.text("query_ok_empty"),
             "empty result")


@case("query-csv-result", "`CSV:` request → `CSV` LF header LF rows, `_NULL_` for NULL, no trailing LF",
      ("§10.5", "§10.6"))
async def query_csv_result(ctx: ServerContext) -> None:
    wire = await _conn(ctx)
    text = await ask(ctx, wire, b"CSV:select 1 as a, 'x' as b, null as c")
    check(re.fullmatch(rb"CSV\na:\d+,b:\d+,c:\d+\n1,x,_NULL_", text), f"CSV result: {text!r}")


@case("query-b64-values", "non-ASCII / control bytes travel as `_B64_<base64>`", ("§10.6",))
async def query_b64_values(ctx: ServerContext) -> None:
    wire = await _conn(ctx)
    text = await ask(ctx, wire, "select 'é\tx' as a".encode())
    expected = b'"_B64_' + base64.b64encode("é\tx".encode()) + b'"'
    check(text.endswith(b"[" + expected + b"]]}"), f"value should be {expected!r}: {text!r}")


@case("query-csv-separator-value", "a CSV value containing `,`: vmproto sends `_B64_`, the reference breaks the "
      "row", ("§10.5", "§16 Q10"), Level.QUIRK,
      quirk=Quirk("Q10", "value written raw (row breaks)", "value written as _B64_"))
async def query_csv_separator(ctx: ServerContext) -> str:
    wire = await _conn(ctx)
    text = await ask(ctx, wire, b"CSV:select 'a,b' as v")
    last = text.rsplit(b"\n", 1)[-1]
    if last == b"a,b":
        return "reference"
    if last == b"_B64_" + base64.b64encode(b"a,b"):
        return "vmproto"
    raise CaseFailed(f"unexpected CSV row: {text!r}")


@case("query-literal-null-token", "a stored text equal to `_NULL_`: vmproto sends `_B64_`, the reference sends it "
      "as is (read back as NULL)", ("§10.6", "§16 Q11"), Level.QUIRK,
      quirk=Quirk("Q11", "`_NULL_` sent literally", "sent as _B64_"))
async def query_literal_null(ctx: ServerContext) -> str:
    wire = await _conn(ctx)
    text = await ask(ctx, wire, b"select '_NULL_' as v")
    if text.endswith(b'["_NULL_"]]}'):
        return "reference"
    if text.endswith(b'["_B64_' + base64.b64encode(b"_NULL_") + b'"]]}'):
        return "vmproto"
    raise CaseFailed(f"unexpected result: {text!r}")


@case("query-error-unknown-table", "SQL error → `{\"result\":\"<errno>|1|<message>\"}`; connection stays",
      ("§10.8", "§15.2"))
async def query_error_unknown_table(ctx: ServerContext) -> None:
    wire = await _conn(ctx)
    text = await ask(ctx, wire, b"select * from conformance_no_such_table_4711")
    m = _ERROR.fullmatch(text)
    check(m, f"error result does not follow spec §10.8: {text!r}")
    check_eq(m.group(1), b"1146", "errno of an unknown table")
    check_eq(m.group(2), b"1", "retry flag")
    await ask(ctx, wire, b"select 1")


@case("query-error-syntax", "syntax error → errno 1064 with retry flag 0", ("§10.8",))
async def query_error_syntax(ctx: ServerContext) -> None:
    wire = await _conn(ctx)
    text = await ask(ctx, wire, b"selectt 1 frm")
    m = _ERROR.fullmatch(text)
    check(m, f"error result does not follow spec §10.8: {text!r}")
    check_eq((m.group(1), m.group(2)), (b"1064", b"0"), "errno and retry flag of a syntax error")


@case("query-end", "`_END_` (uncompressed) → the central closes without a reply", ("§10.9", "§15.3"))
async def query_end(ctx: ServerContext) -> None:
    wire = await _conn(ctx)
    await ask(ctx, wire, b"select 1")
    await wire.send_aes(ctx.spec.text("query_end"))
    await wire.expect_silent_close(ctx.wait(5), "close after _END_")


@case("query-empty-request", "a request that decompresses to nothing: vmproto closes, the reference keeps the "
      "connection without reply", ("§10.2", "§5.8", "§16 Q15"), Level.QUIRK,
      quirk=Quirk("Q15", "no reply, connection kept", "no reply, connection closed"))
async def query_empty_request(ctx: ServerContext) -> str:
    wire = await _conn(ctx)
    await wire.send_aes(compress(Compression.GZIP, b""))
    try:
        await wire.expect_silent_close(ctx.wait(2), "empty request")
    except CaseFailed as exc:
        if "neither closed" in str(exc) and "wrote" not in str(exc):
            return "reference"
        raise
    return "vmproto"


@case("query-idle-close", "an idle query connection is closed after 60 s", ("§10.1", "§14.1", "§14.4"))
async def query_idle_close(ctx: ServerContext) -> None:
    ctx.need_wait(60)
    wire = await _conn(ctx)
    try:
        await wire.expect_silent_close(ctx.wait(60), "idle query connection")
    except PeerClosed:
        pass
