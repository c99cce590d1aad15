"""Central role: packetbuffer block channel, pcap_block_store v7 validation (spec §6.4, §9)."""

from __future__ import annotations

import struct
import time

from vmproto.wire.compression import PbCompression
from vmproto.wire.pbstore import checksum32buf, encode_container

from ..context import ServerContext
from ..model import CaseFailed, Level, Quirk, case, check, check_eq
from ..wirekit import NoReply, Wire

# a recorded-looking Ethernet/IPv4/UDP frame (payload content does not matter to the channel)
_FRAME = bytes.fromhex("00112233445566778899aabb0800") + bytes.fromhex(
    "4500002e000040004011f96d7f0000017f000001") + bytes.fromhex("13c413c4001a0000") + b"conformance-probe!"


def container(*, counter: int = 1, hm: int = 0, compress: PbCompression | None = PbCompression.SNAPPY,
              confirm: bool = True, time_s: int | None = None, time_offset: int | None = None, sensor_id: int = 0,
              packets: int = 3, frame: bytes = _FRAME, checksum: bool = True) -> bytes:
    """A valid container (spec §9.2) with `packets` copies of a UDP frame. `time_s`: absolute, else now plus
    `time_offset` (taken when the container is built, i.e. when the case runs), else now."""
    now = int(time.time())
    if time_s is None:
        time_s = now + (time_offset or 0)
    pk = [(now, i * 1000, frame) for i in range(packets)]
    return encode_container(pk, hm=hm, counter=counter, time_s=time_s,
                            sensor_id=sensor_id, ifname="lo", require_confirmation=confirm, compress=compress,
                            checksum=checksum)


def patch(data: bytes, offset: int, fmt: str, value: int, *, resum: bool = True) -> bytes:
    """Overwrite a field; recompute the container checksum unless told not to."""
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, value)
    if resum and offset >= 64 and struct.unpack_from("<I", out, 48)[0]:
        struct.pack_into("<I", out, 48, max(checksum32buf(bytes(out[64:])), 1))
    return bytes(out)


async def pb_conn(ctx: ServerContext, **creds_kw: object) -> Wire:
    wire, _ = await ctx.handshake("packetbuffer block", ctx.pb_credentials(**creds_kw))  # type: ignore[arg-type]
    return wire


async def send_expect(ctx: ServerContext, wire: Wire, payload: bytes, expected: bytes, what: str) -> None:
    await wire.send_aes(payload)
    check_eq(await wire.read_aes(ctx.wait(5), f"reply to {what}"), expected, f"reply to {what}")


def _ok_case(slug: str, title: str, sections: tuple[str, ...], **kw: object) -> None:
    @case(f"pb-{slug}", title, sections)
    async def run(ctx: ServerContext) -> None:
        wire = await pb_conn(ctx)
        await send_expect(ctx, wire, container(**kw), ctx.spec.text("pb_ok"), slug)  # type: ignore[arg-type]
        await send_expect(ctx, wire, container(counter=2, **kw), b"OK", f"{slug}, second block")  # type: ignore


_ok_case("plus-snappy", "hm 0 (plus), snappy data area → `OK`", ("§9.2", "§9.4", "§9.7", "§5.7"))
_ok_case("plus2-snappy", "hm 1 (plus2, 58-byte headers) → `OK`", ("§9.2", "§9.5"), hm=1)
_ok_case("plus-uncompressed", "uncompressed data area (size_compress 0) → `OK`", ("§9.2", "§9.3"), compress=None)
_ok_case("plus-lz4", "LZ4 data area → `OK` (ACK covers the header, not decompression)",
         ("§9.7", "§5.7", "§16 Q12"), compress=PbCompression.LZ4)
_ok_case("no-checksum", "checksum 0 (none) → `OK`", ("§9.6", "§9.8"), checksum=False)
_ok_case("time-zero", "time_s 0 skips the time check → `OK`", ("§9.8",), time_s=0)
_ok_case("time-half-hour", "time_s off by exactly 1800 s is forgiven (mod 1800) → `OK`", ("§9.8",),
         time_offset=-1800)


def _error_case(slug: str, title: str, sections: tuple[str, ...], build, error_id: str, **tpl: object) -> None:
    @case(f"pb-error-{slug}", title, (*sections, "§9.8", "§15.2"))
    async def run(ctx: ServerContext) -> None:
        wire = await pb_conn(ctx)
        expected = ctx.spec.template(error_id, **tpl) if tpl else ctx.spec.text(error_id)
        await send_expect(ctx, wire, build(), expected, slug)
        # the connection stays and the next good block is accepted
        await send_expect(ctx, wire, container(counter=7), b"OK", "a good block after the error")


_error_case("empty", "empty payload → `bad size / offset`", (), lambda: b"", "pb_bad_size")
_error_case("title", "wrong title → `missing / bad block id`", (),
            lambda: b"pcap_block_stor3" + container()[16:], "pb_bad_block_id")
_error_case("version", "version 6 → `bad version - ...`", (), lambda: patch(container(), 16, "<B", 6),
            "pb_bad_version")
_error_case("checksum", "wrong checksum → `bad checksum`", ("§9.6",),
            lambda: patch(container(), 48, "<I", 4242), "pb_bad_checksum")
_error_case("offsets", "offsets not increasing → `bad offsets`", (),
            lambda: patch(container(compress=None), 68, "<I", 0), "pb_bad_offsets")
_error_case("offset-beyond-size", "last offset ≥ size → `bad offsets`", (),
            lambda: patch(container(compress=None, packets=1), 64, "<I", 10_000), "pb_bad_offsets")
_error_case("caplen", "uncompressed area with caplen 70000 → `bad headers - caplen = 70000`", (),
            lambda: patch(container(compress=None, packets=1), 64 + 4 + 8, "<I", 70000), "pb_bad_headers_caplen",
            caplen=70000)
_error_case("ip-offset", "uncompressed area with header_ip_offset 1001 → `bad headers - header_ip_offset = 1001`",
            (), lambda: patch(container(compress=None, packets=1), 64 + 4 + 26, "<H", 1001),
            "pb_bad_headers_ip_offset", offset=1001)


@case("pb-error-time", "time_s 100 s off → the exact time-difference text with id_sensor and diff",
      ("§9.8", "§15.2"))
async def pb_error_time(ctx: ServerContext) -> None:
    wire = await pb_conn(ctx)
    await wire.send_aes(container(time_s=int(time.time()) - 100, sensor_id=77))
    reply = await wire.read_aes(ctx.wait(5), "time error")
    check(ctx.spec.regex("pb_time_difference").fullmatch(reply), f"reply: {reply!r}")
    check(b"(id_sensor:77)" in reply and (b"(100s)" in reply or b"(101s)" in reply or b"(99s)" in reply),
          f"id_sensor / diff in {reply!r}")
    await wire.send_aes(container(time_s=int(time.time()) - 100, sensor_id=0))
    reply = await wire.read_aes(ctx.wait(5), "time error, no sensor id")
    check(b"(id_sensor:local)" in reply, f"sensor id 0 must read `local`: {reply!r}")


@case("pb-error-too-big", "container over 10 × packetbuffer_block_maxsize → `too big`", ("§9.8", "§2.6"))
async def pb_error_too_big(ctx: ServerContext) -> None:
    wire = await pb_conn(ctx)
    big = container(compress=None, packets=1) + b"\0" * (10 * 1024 * 1024 + 1)
    await send_expect(ctx, wire, big, ctx.spec.text("pb_too_big"), "an 11 MiB container")


@case("pb-short-container", "payload shorter than 64 bytes: vmproto `bad size / offset`; the reference may ACK",
      ("§9.8", "§16 Q13"), Level.QUIRK,
      quirk=Quirk("Q13", "treated as incomplete, may answer `OK`", "`bad size / offset`"))
async def pb_short(ctx: ServerContext) -> str:
    wire = await pb_conn(ctx)
    await wire.send_aes(container()[:40])
    try:
        reply = await wire.read_aes(ctx.wait(3), "reply to a 40-byte container")
    except NoReply:
        return "reference"
    if reply == ctx.spec.text("pb_bad_size"):
        return "vmproto"
    if reply == b"OK":
        return "reference"
    raise CaseFailed(f"unexpected reply to a short container: {reply!r}")


@case("pb-count-zero", "count 0: vmproto `bad offsets`; the reference underflows", ("§9.8", "§16 Q13"), Level.QUIRK,
      quirk=Quirk("Q13", "undefined (offset check underflows)", "`bad offsets`"))
async def pb_count_zero(ctx: ServerContext) -> str:
    wire = await pb_conn(ctx)
    data = patch(container(compress=None, packets=1), 28, "<I", 0, resum=False)
    await wire.send_aes(data)
    try:
        reply = await wire.read_aes(ctx.wait(3), "reply to count 0")
    except NoReply:
        return "reference"
    return "vmproto" if reply == ctx.spec.text("pb_bad_offsets") else "reference"


@case("pb-bad-hm", "header mode 5: vmproto `bad headers - hm = 5`", ("§9.2", "§9.8"), Level.QUIRK,
      quirk=Quirk("", "no hm check (reads garbage headers)", "`bad headers - hm = 5`"))
async def pb_bad_hm(ctx: ServerContext) -> str:
    wire = await pb_conn(ctx)
    await wire.send_aes(patch(container(compress=None), 46, "<b", 5, resum=False))
    reply = await wire.read_aes(ctx.wait(3), "reply to hm 5")
    return "vmproto" if reply == ctx.spec.template("pb_bad_headers_hm", hm=5) else "reference"


@case("pb-no-confirmation", "require_confirmation 0 → no reply, even for a bad block", ("§9.9",))
async def pb_no_confirmation(ctx: ServerContext) -> None:
    wire = await pb_conn(ctx)
    await wire.send_aes(container(confirm=False))
    await wire.send_aes(patch(container(confirm=False), 48, "<I", 4242))  # bad checksum, still silent
    await send_expect(ctx, wire, container(counter=3), b"OK", "a confirmed block after two unconfirmed ones")


@case("pb-duplicate-counter", "the same counter twice on one connection → both `OK`", ("§9.9",))
async def pb_duplicate_counter(ctx: ServerContext) -> None:
    wire = await pb_conn(ctx)
    data = container(counter=5)
    await send_expect(ctx, wire, data, b"OK", "block 5")
    await send_expect(ctx, wire, data, b"OK", "block 5 again")


@case("pb-bad-time", "packetbuffer credentials with a time 7 minutes off → plain `bad time`, close",
      ("§6.4", "§15.2"))
async def pb_bad_time(ctx: ServerContext) -> None:
    wire, result = await ctx.handshake("packetbuffer block", ctx.pb_credentials(time_offset=420),
                                       expect=None)
    check_eq(result, ctx.spec.text("bad_time"), "reply to a wrong time")
    await wire.expect_silent_close(ctx.wait(5), "close after `bad time`")


@case("pb-time-half-hour-handshake", "credentials time off by 30 min is forgiven; empty time skips the check",
      ("§6.4",))
async def pb_time_half_hour(ctx: ServerContext) -> None:
    # 30 min in the past: |now - t| is 1800 or 1801, so the remainder is 0 or 1 (a future time would give 1799)
    await ctx.handshake("packetbuffer block", ctx.pb_credentials(time_offset=-1800))
    await ctx.handshake("packetbuffer block", ctx.pb_credentials(time_text=""))


@case("pb-unparsable-time", "an unparsable credentials time: vmproto `bad time`; the reference compares garbage",
      ("§6.4", "§16 Q22"), Level.QUIRK,
      quirk=Quirk("Q22", "compares a garbage time (usually `bad time`, may pass)", "`bad time`"))
async def pb_unparsable_time(ctx: ServerContext) -> str:
    _wire, result = await ctx.handshake("packetbuffer block", ctx.pb_credentials(time_text="yesterday noon"),
                                        expect=None)
    return "vmproto" if result == b"bad time" else "reference"


@case("pb-sensor-name", "packetbuffer credentials with sensor id and name are accepted", ("§6.2", "§6.4"))
async def pb_sensor_name(ctx: ServerContext) -> None:
    wire = await pb_conn(ctx, sensor_id=ctx.new_sensor_id(), sensor_name="conformance")
    await send_expect(ctx, wire, container(), b"OK", "a block")
