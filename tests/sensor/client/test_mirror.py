"""Packet mirroring: container layout against the recorded reference sender, header offsets, confirmation and
resend with the same counter, back-pressure rules, bounded buffer with disk overflow, drop counters."""

from __future__ import annotations

import json
import random
from pathlib import Path

import trio

from tests.conftest import REFERENCE, need_shared
from tests.sensor.client.central import Central
from tests.sensor.client.stack import Stack, wait_for
from vmproto.sensor.capture.batch import PacketBatch
from vmproto.sensor.client.mirror import MirrorOptions, MirrorSender
from vmproto.sensor.client.pktinfo import VLAN_NOSET, frame_offsets
from vmproto.testing import pcapgen as g
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
