"""Packet mirroring: container layout against the recorded reference sender, header offsets, confirmation and
resend with the same counter, back-pressure rules, bounded buffer with disk overflow, drop counters."""

from __future__ import annotations

import json
import random
from array import array
from pathlib import Path

import pytest
import trio

from tests.conftest import REFERENCE, need_shared
from tests.sensor.client.central import Central
from tests.sensor.client.stack import Stack, wait_for
from vmproto.sensor.capture.batch import PacketBatch
from vmproto.sensor.capture.frames import U32, FrameList
from vmproto.sensor.client.mirror import MirrorOptions, MirrorSender
from vmproto.sensor.client.pktinfo import VLAN_NOSET, AreaPacker, frame_offsets
from vmproto.testing import pcapgen as g
from vmproto.wire import pbkernel
from vmproto.wire.pbstore import checksum32buf, decode_container, peek_header


def _rtp_frames(n: int, vlans: tuple[int, ...] = ()) -> list[bytes]:
    rnd = random.Random(n)  # audio-like incompressible payloads, deterministic per size
    return [g.ethernet(g.udp4("10.0.0.1", "10.0.0.2", 10000, 20000, g.rtp(i, i * 160, 0x1234, rnd.randbytes(160))),
                       vlans) for i in range(n)]


def _batch(frames: list[bytes], t0: int = 1_795_667_230_000_000_000) -> PacketBatch:
    return PacketBatch(1, [t0 + i * 20_000_000 for i in range(len(frames))], frames, [len(f) for f in frames])


def test_frame_offsets() -> None:
    ip = g.udp4("192.0.2.1", "192.0.2.2", 5060, 5060, b"x")
    assert frame_offsets(1, g.ethernet(ip)) == (14, 14, VLAN_NOSET)
    assert frame_offsets(1, g.ethernet(ip, (100, 200))) == (22, 22, 100)
    assert frame_offsets(113, g.sll(ip)) == (16, 16, VLAN_NOSET)
    assert frame_offsets(276, g.sll2(ip)) == (20, 20, VLAN_NOSET)
    assert frame_offsets(101, ip) == (0, 0, VLAN_NOSET)
    assert frame_offsets(0, g.null(ip)) == (4, 4, VLAN_NOSET)
    ipip = g.ipv4("10.1.1.1", "10.1.1.2", 4, ip)
    assert frame_offsets(1, g.ethernet(ipip)) == (14, 34, VLAN_NOSET)  # tunnel: outer / inner
    gre = g.ipv4("10.1.1.1", "10.1.1.2", 47, b"\x00\x00\x08\x00" + ip)
    assert frame_offsets(1, g.ethernet(gre)) == (14, 38, VLAN_NOSET)
    assert frame_offsets(1, g.ethernet(b"\x00" * 30, ethertype=0x0806)) is None  # ARP: not shipped
    assert frame_offsets(1, b"\x00" * 5) is None


def test_builder_matches_recorded_reference_sender() -> None:
    """Rebuild every recorded container from its packets; header fields, offsets, packet headers and the
    uncompressed data area must equal the reference sender's (pads and time_s excepted, README item 3)."""
    path = need_shared(REFERENCE / "transcripts" / "pb_zstd.jsonl")
    blocks = [json.loads(line) for line in path.read_text().splitlines()]
    blocks = [b for b in blocks if "pcap_block_store" in b]
    assert blocks
    session = Stack(1).session
    session.identity = type(session.identity)(id_sensor=3, name="", password="x", packetbuffer_sender=True)
    mirror = MirrorSender(Stack(1).connector, session, MirrorOptions(ifname="read_from"))
    for rec in blocks:
        ref = rec["pcap_block_store"]
        pkts = ref["packets"]
        frames = [bytes.fromhex(p["packet_hex"]) for p in pkts]
        ts = [p["ts_tv_sec"] * 1_000_000_000 + p["ts_tv_usec"] * 1000 for p in pkts]
        mirror.add_batch(PacketBatch(1, ts, frames, [p["len"] for p in pkts]))
        mirror.flush()
        ours = mirror._queue.pop().data  # noqa: SLF001 - the built container itself
        assert ours is not None
        hdr = peek_header(ours)
        assert hdr.title.decode() == ref["title"]
        for name in ("version", "size", "size_compress", "count", "dlink", "sensor_id", "hm", "checksum",
                     "counter", "require_confirmation"):
            assert getattr(hdr, name) == ref[name], name
        assert hdr.ifname == bytes.fromhex(ref["ifname_hex"])
        assert hdr.checksum == max(checksum32buf(ours[64:]), 1)
        theirs = bytes.fromhex(rec["plain_hex"])
        assert ours[64:] == theirs[64:]  # offsets and the snappy-compressed area: byte for byte
        mine, recorded = decode_container(ours), decode_container(theirs)
        assert list(mine.offsets) == list(recorded.offsets) == ref["offsets"]
        assert mine.area == recorded.area  # packet headers (36 bytes each, hm 0) and packet bytes
        for i, p in enumerate(pkts):
            off = mine.offsets[i]
            assert mine.area[off:off + 36].hex() == p["header_hex"]


async def test_mirror_delivery_resend_same_counter(tmp_path: Path) -> None:
    central = Central(ping_interval=0.05, pb_drop_before_reply=1)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(central.serve)
        stack = Stack(port, packetbuffer_sender=True)
        mirror = MirrorSender(stack.connector, stack.session, MirrorOptions(block_maxsize=8192))
        nursery.start_soon(mirror.run)
        frames = _rtp_frames(200)
        mirror.add_batch(_batch(frames))
        mirror.flush()
        await wait_for(lambda: mirror.stats.packets_sent == 200)
        assert central.packets() == frames
        counters = central.counters()
        assert counters == list(range(1, len(counters) + 1))  # the dropped-reply block was resent as counter 1
        assert mirror.stats.blocks_resent == 1 and central.connections["packetbuffer block"] == 2
        creds = central.pb_creds[0]
        assert (creds.sensor_id, creds.sensor_name) == (2, "s1") and len(creds.time) == 19
        assert all(peek_header(b).time_s > 0 for b in central.pb_blocks)
        nursery.cancel_scope.cancel()


def test_back_pressure_rules() -> None:
    stack = Stack(1, packetbuffer_sender=True)
    mirror = MirrorSender(stack.connector, stack.session, MirrorOptions(block_maxsize=1024,
                                                                        buffer_max_bytes=100_000))
    payload = bytearray(64)
    assert mirror._decide(payload) and payload[56] == 1 and payload[60:64] != bytes(4)  # noqa: SLF001
    mirror._memory_bytes = 40_000  # 40 % full  # noqa: SLF001
    mirror._last_confirm = 0.010  # fast confirmations keep confirmation on  # noqa: SLF001
    assert mirror._decide(payload)  # noqa: SLF001
    mirror._last_confirm = 0.050  # noqa: SLF001
    assert not mirror._decide(payload) and payload[56] == 0 and payload[60:64] == bytes(4)  # noqa: SLF001
    mirror._last_confirm = 0.0  # noqa: SLF001
    mirror._memory_bytes = 80_000  # > 70 %: confirmed, but time_s zeroed  # noqa: SLF001
    assert mirror._decide(payload) and payload[60:64] == bytes(4)  # noqa: SLF001


def test_drops_are_counted_by_reason(tmp_path: Path) -> None:
    stack = Stack(1, packetbuffer_sender=True)
    opts = MirrorOptions(block_maxsize=4096, buffer_max_bytes=8192)
    mirror = MirrorSender(stack.connector, stack.session, opts)
    arp = g.ethernet(b"\x00" * 28, ethertype=0x0806)
    frames = _rtp_frames(100) + [arp, arp]
    mirror.add_batch(_batch(frames))
    mirror.flush()
    s = mirror.stats
    assert s.dropped["no_ip"] == 2
    assert s.dropped["buffer_full"] > 0
    assert s.packets_queued + s.dropped["buffer_full"] + s.dropped["no_ip"] == s.packets_in == 102


async def test_disk_overflow_delivers_in_order(tmp_path: Path) -> None:
    central = Central(ping_interval=0.05)
    spool = tmp_path / "spool"
    async with trio.open_nursery() as nursery:
        port = await nursery.start(central.serve)
        stack = Stack(port, packetbuffer_sender=True)
        opts = MirrorOptions(block_maxsize=4096, buffer_max_bytes=8192, spool_dir=str(spool),
                             spool_max_bytes=1 << 20)
        mirror = MirrorSender(stack.connector, stack.session, opts)
        frames = _rtp_frames(300)
        mirror.add_batch(_batch(frames))  # before the sender runs: most blocks overflow to disk
        mirror.flush()
        assert mirror.stats.blocks_spooled > 0 and mirror.stats.dropped["buffer_full"] == 0
        nursery.start_soon(mirror.run)
        await wait_for(lambda: mirror.stats.packets_sent == 300)
        assert central.packets() == frames
        assert list(spool.iterdir()) == []
        nursery.cancel_scope.cancel()


def _varied_frames() -> list[bytes]:
    """Ethernet frames of every shape the header-offset rules distinguish (spec §9.11), plus junk."""
    rnd = random.Random(11)
    ip = g.udp4("192.0.2.1", "192.0.2.2", 10000, 20000, g.rtp(1, 160, 0x55, rnd.randbytes(160)))
    ip6 = g.udp6("2001:db8::1", "2001:db8::2", 5060, 5060, b"OPTIONS")
    vxlan = g.outer_udp(1234, 4789, b"\x08\x00\x00\x00\x00\x00\x01\x00" + g.ethernet(ip, (7,)))
    frames = [g.ethernet(ip), g.ethernet(ip6), g.ethernet(ip, (100,)), g.ethernet(ip, (100, 200)),
              g.ethernet(g.ipip(ip)), g.ethernet(g.ip_in_ipv6(ip)), g.ethernet(g.gre(ip, key=5, seq=9)),
              g.ethernet(g.gre_teb(ip, vlan=3)), g.ethernet(vxlan), g.ethernet(g.ipip(g.ipip(g.ipip(g.ipip(ip))))),
              *(g.ethernet(f) for f in g.fragment_v4(g.ipip(ip), 96)),
              g.ethernet(b"\x00" * 28, ethertype=0x0806), g.ethernet(ip, ethertype=0x8847)[:-1],
              bytes(14 + 4 * 260), b"\x00" * 5, b"", bytes(70_000)]
    frames += [rnd.randbytes(rnd.randrange(0, 120)) for _ in range(300)]
    # Mutations of real frames: every byte of the first 60 set to interesting values.
    base = g.ethernet(g.gre_teb(ip, vlan=3))
    for i in range(60):
        for v in (0x00, 0x08, 0x11, 0x2F, 0x45, 0x65, 0x81, 0x86, 0xFF):
            frames.append(base[:i] + bytes((v,)) + base[i + 1:])
    return frames


def test_frame_offsets_python_and_kernel_agree() -> None:
    kernel = pbkernel.load()
    if kernel is None:
        pytest.skip("no C compiler: the kernel path cannot be tested here")
    ffi, lib = kernel.ffi, kernel.lib
    out = ffi.new("uint32_t[3]")
    for linktype in (1, 101, 0, 113, 276, 12, 9999):
        for frame in _varied_frames():
            if len(frame) > 65535:
                continue
            got = lib.pb_offsets(linktype, frame, len(frame), out, out + 1, out + 2)
            assert (tuple(out) if got else None) == frame_offsets(linktype, frame), (linktype, frame.hex())


def test_area_packer_python_and_kernel_give_the_same_bytes() -> None:
    frames = FrameList.from_frames(_varied_frames())
    n = len(frames)
    ts = array("q", [1_795_667_230_123_456_789 + i * 20_000_000 for i in range(n)])
    ts[3] = -1_500  # before 1970: floor division as in the reference layout
    orig = array(U32, [len(f) + (i % 3) for i, f in enumerate(frames)])
    results = []
    for use_kernel in (True, False):
        packer = AreaPacker(2048, use_kernel=use_kernel)
        blocks, i = [], 0
        while i < n:
            i = packer.pack(1, frames, ts, orig, i)
            if packer.full or i >= n:
                area, offsets = packer.take()
                blocks.append((bytes(area), offsets.tolist()))
                area.release()
        results.append((blocks, packer.totals))
    if pbkernel.load() is None:
        return  # both runs took the Python path
    assert results[0] == results[1]
    blocks, (seen, no_ip, too_big, taken) = results[0]
    assert seen == n and too_big == 1 and no_ip > 0 and len(blocks) > 3
    assert sum(len(o) for _, o in blocks) == n - no_ip - too_big


async def test_pipelined_sender_delivers_every_block_confirmed() -> None:
    """The next block is encrypted while the OK of the current one is awaited; the central still sees every
    block once, in order, each confirmed."""
    central = Central()
    async with trio.open_nursery() as nursery:
        port = await nursery.start(central.serve)
        stack = Stack(port, packetbuffer_sender=True)
        mirror = MirrorSender(stack.connector, stack.session, MirrorOptions(block_maxsize=4096))
        nursery.start_soon(mirror.run)
        frames = _rtp_frames(400)
        mirror.add_batch(_batch(frames))
        mirror.flush()
        await wait_for(lambda: mirror.stats.packets_sent == 400, 10)
        assert mirror.stats.blocks_built > 10
        assert mirror.stats.blocks_confirmed == mirror.stats.blocks_sent == mirror.stats.blocks_built
        assert central.counters() == list(range(1, mirror.stats.blocks_built + 1))
        assert central.packets() == frames
        assert all(peek_header(b).require_confirmation == 1 for b in central.pb_blocks)
        nursery.cancel_scope.cancel()
