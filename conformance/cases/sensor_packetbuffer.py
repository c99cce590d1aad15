"""Sensor role: packetbuffer (mirroring) senders, spec §6.2, §6.4, §9. The suite plays the central."""

from __future__ import annotations

import struct
import time

import trio

from vmproto.wire.compression import PbCompression, pb_decompress
from vmproto.wire.errors import ProtocolError
from vmproto.wire.pbstore import checksum32buf

from ..central import Conn, PbBlock
from ..model import CaseFailed, case, check, check_eq
from ..sensorctx import SensorContext, SensorSession
from .sensor_service import PB_CREDS

# Small blocks, so that the generated capture gives several containers.
PB_CONFIG: dict[str, object] = {"packetbuffer_sender": True, "packetbuffer_block_maxsize": 1}
_HDR = {0: 36, 1: 58}


async def blocks(ctx: SensorContext, s: SensorSession, n: int) -> list[PbBlock]:
    """Wait for at least n containers (then a short quiet period); return them."""
    await s.conn("packetbuffer block")
    await s.wait_until(lambda: len(s.central.pb_blocks) >= n, ctx.options.startup + ctx.wait(5),
                       f"{n} packetbuffer containers")
    await trio.sleep(ctx.t(0.3))
    return list(s.central.pb_blocks)


def check_header(blk: PbBlock, ctx: SensorContext) -> dict:
    """Check one container's header against spec §9.2 / §9.11; return the fields."""
    p = blk.payload
    check(len(p) >= 64, f"container of {len(p)} bytes (spec §9.11: never truncated)")
    f = blk.fields
    check_eq(f["title"], b"pcap_block_store", "title")
    check_eq(f["version"], 7, "version")
    check(f["count"] >= 1, "count 0 (spec §9.11)")
    area = f["size_compress"] or f["size"]
    check_eq(len(p), 64 + 4 * f["count"] + area, "container length (64 + 4·count + data area)")
    check(f["hm"] in (0, 1), f"hm {f['hm']}")
    check_eq(f["dlink"], 1, "dlink of an Ethernet capture")
    check_eq(f["sensor_id"], ctx.options.id_sensor, "sensor_id")
    check_eq(f["ifname"], b"read_from\0", "ifname of file input")
    if f["checksum"]:
        check_eq(f["checksum"], max(checksum32buf(p[64:]), 1), "checksum (spec §9.6)")
    if f["time_s"]:
        check(abs(f["time_s"] - time.time()) <= 60, f"time_s {f['time_s']} is not the send time")
    offsets = struct.unpack_from(f"<{f['count']}I", p, 64)
    check(all(a < b for a, b in zip(offsets, offsets[1:], strict=False)), "offsets not strictly increasing")
    check(offsets[-1] < f["size"], "last offset ≥ size")
    return f


@case("sensor-pb-credentials", "packetbuffer credentials: §6.2 members and order, local `time` now, configured "
      "sensor_id and sensor_name", ("§6.2", "§6.4", "§16 Q22"), mode="sensor")
async def pb_credentials(ctx: SensorContext) -> None:
    async with ctx.session(config=PB_CONFIG) as s:
        conn = await s.conn("packetbuffer block")
        text = await s.creds(conn)
        m = PB_CREDS.fullmatch(text)
        check(m, f"packetbuffer credentials do not follow spec §6.2: {text!r}")
        t = time.mktime(time.strptime(m.group(1).decode(), "%Y-%m-%d %H:%M:%S"))  # type: ignore[union-attr]
        check(abs(t - (time.time() - (trio.current_time() - conn.accepted_at))) <= 3,
              f"`time` {m.group(1).decode()} differs from the local time by more than 2 s")  # type: ignore[union-attr]
        check_eq(int(m.group(2)), ctx.options.id_sensor, "sensor_id")  # type: ignore[union-attr]
        check_eq(m.group(3), b'"conformance"', "sensor_name")  # type: ignore[union-attr]
        s.check_clean()


@case("sensor-pb-bad-time", "`bad time` → the sensor retries the handshake with a pause and sends no container "
      "before an `OK`", ("§6.4", "§14.2", "§6.5"), mode="sensor")
async def pb_bad_time(ctx: SensorContext) -> None:
    def result(conn: Conn, n: int) -> bytes:
        return b"bad time" if n <= 2 else b"OK"

    async with ctx.session(config=PB_CONFIG, pb_result=result) as s:
        third = await s.conn("packetbuffer block", 3, timeout=ctx.options.startup + ctx.wait(8))
        conns = s.central.of("packetbuffer block")
        for a, b in zip(conns[:2], conns[1:3], strict=False):
            gap = b.accepted_at - (a.closed_at or a.accepted_at)
            check(gap >= ctx.t(0.8), f"retry {gap:.2f} s after `bad time` (spec §14.2: 1 s pause)")
        await s.wait_until(lambda: s.central.pb_blocks, ctx.wait(5), "a container after the accepted handshake")
        check(all(b.conn == third.index or s.central.conns[b.conn].accepted for b in s.central.pb_blocks),
              "container sent on a refused connection")
        s.check_clean()


@case("sensor-pb-container", "containers: v7 header, lengths, offsets, checksum, ifname, sensor_id, time_s",
      ("§9.2", "§9.6", "§9.11"), mode="sensor")
async def pb_container(ctx: SensorContext) -> None:
    async with ctx.session(config=PB_CONFIG) as s:
        for blk in await blocks(ctx, s, 2):
            try:
                check_header(blk, ctx)
            except CaseFailed as exc:
                raise CaseFailed(f"container {s.central.pb_blocks.index(blk) + 1}: {exc}") from None
        s.check_clean()


@case("sensor-pb-data-area", "data area: §9.3 layout after decompression; packet headers per §9.4/§9.11 (vlan "
      "0xFFFE, IP offsets 14, dlink, fillers zero)", ("§9.3", "§9.4", "§9.5", "§9.7", "§9.11", "§5.7"), mode="sensor")
async def pb_data_area(ctx: SensorContext) -> None:
    async with ctx.session(config=PB_CONFIG) as s:
        for i, blk in enumerate(await blocks(ctx, s, 1), 1):
            f = check_header(blk, ctx)
            area = blk.payload[64 + 4 * f["count"]:]
            if f["size_compress"]:
                try:
                    area = pb_decompress(PbCompression.SNAPPY, area, f["size"])
                except ProtocolError as exc:
                    raise CaseFailed(f"container {i}: data area is not raw snappy of {f['size']} bytes "
                                     f"(the default method, spec §5.7): {exc}") from None
            check_eq(len(area), f["size"], f"container {i}: data area size")
            offsets = struct.unpack_from(f"<{f['count']}I", blk.payload, 64)
            hsize = _HDR[f["hm"]]
            pos = 0
            for k, off in enumerate(offsets):
                check_eq(off, pos, f"container {i} packet {k}: offset (headers and data back to back)")
                sec, usec, caplen, length = struct.unpack_from("<IIII", area, off)
                filler = area[off + 16:off + 24]
                encaps, ip_off, std, dlink, vlan = struct.unpack_from("<HHhHH", area, off + 24)
                check(caplen <= 65535 and caplen <= length, f"container {i} packet {k}: caplen {caplen}")
                check(usec < 1_000_000, f"container {i} packet {k}: usec {usec}")
                check_eq(filler, b"\0" * 8, f"container {i} packet {k}: filler")
                check_eq((encaps, ip_off, std, dlink, vlan), (14, 14, 0, f["dlink"], 0xFFFE),
                         f"container {i} packet {k}: (encaps offset, ip offset, std, dlink, vlan)")
                pos = off + hsize + caplen
            check_eq(pos, f["size"], f"container {i}: size = end of the last packet")
        s.check_clean()


@case("sensor-pb-counter", "counter starts at 1 and grows by one per new container; require_confirmation 1 by "
      "default", ("§9.2", "§9.9", "§9.10"), mode="sensor")
async def pb_counter(ctx: SensorContext) -> None:
    async with ctx.session(config=PB_CONFIG) as s:
        got = await blocks(ctx, s, 3)
        counters = [b.fields["counter"] for b in got]
        check_eq(counters, list(range(1, len(got) + 1)), "counters of the containers in order")
        check(all(b.fields["require_confirmation"] == 1 for b in got), "require_confirmation not 1")
        s.check_clean()


@case("sensor-pb-resend", "a reply other than `OK` → the same container again on a new connection after ≈ 1 s: "
      "same counter, bytes 64…end unchanged, time_s re-stamped", ("§9.10", "§9.9", "§16 Q14"), mode="sensor")
async def pb_resend(ctx: SensorContext) -> None:
    async with ctx.session(config=PB_CONFIG, pb_reply=lambda b, n: b"bad checksum" if n == 1 else b"OK") as s:
        await blocks(ctx, s, 2)
        first, again = s.central.pb_blocks[0], s.central.pb_blocks[1]
        check(again.conn != first.conn, "resent on the same connection (spec §9.10: new connection)")
        check_eq(again.fields["counter"], first.fields["counter"], "counter of the resent container")
        check(again.payload[64:] == first.payload[64:], "bytes 64…end of the resent container differ")
        check_eq(again.payload[:52], first.payload[:52], "header bytes 0-51 of the resent container")
        check(again.fields["time_s"] >= first.fields["time_s"], "time_s went back on the resend")
        gap = again.at - first.at
        check(gap >= ctx.t(0.8), f"resent after {gap:.2f} s (spec §14.2: 1 s pause)")
        s.check_clean()


@case("sensor-pb-no-confirmation", "mirror_require_confirmation = no → require_confirmation 0 and no waiting for "
      "replies", ("§9.9", "§9.10"), mode="sensor")
async def pb_no_confirmation(ctx: SensorContext) -> None:
    async with ctx.session(config={**PB_CONFIG, "mirror_require_confirmation": False}) as s:
        got = await blocks(ctx, s, 3)
        check(all(b.fields["require_confirmation"] == 0 for b in got), "require_confirmation set although off")
        check_eq([b.fields["counter"] for b in got], list(range(1, len(got) + 1)), "counters")
        check_eq(len({b.conn for b in got}), 1, "connections used (nothing failed, so one)")
        s.check_clean()
