"""Packetbuffer channel end to end (spec §9): recorded containers are confirmed and their packets land in the
spool; every validation error comes back with the reference's text; resent blocks are dropped once."""

from __future__ import annotations

import json
import struct
import time

import dpkt
import pytest

from tests.conftest import REFERENCE, need_shared
from tests.server.client import PASSWORD, eventually, handshake
from vmproto.wire import events as ev
from vmproto.wire.crypto import generate_aes_strings
from vmproto.wire.packetbuffer import PacketbufferClient
from vmproto.wire.pbstore import ContainerBuilder, checksum32buf

PB_SCENARIOS = ["pb_nocomp", "pb_zstd", "pb_blocks_nocomp", "pb_blocks_lz4"]
SENSOR_ID = 3


def _containers(scenario: str) -> list[bytes]:
    path = need_shared(REFERENCE / "transcripts" / f"{scenario}.jsonl")
    out = []
    for line in path.read_text().splitlines():
        r = json.loads(line)
        if r["type_connection"] == "packetbuffer block" and r["dir"] == "c2s" and r.get("pcap_block_store"):
            out.append(bytes.fromhex(r["plain_hex"]))
    return out


def restamp(container: bytes, now: int | None = None) -> bytes:
    """Set time_s (bytes 60..64) to now, as a sender does on every (re)send; the checksum does not cover it."""
    return container[:60] + struct.pack("<I", int(now if now is not None else time.time())) + container[64:]


def pb_credentials(sensor_id: int = SENSOR_ID, when: float | None = None, password: str = PASSWORD):
    ckey, ivec = generate_aes_strings()
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(time.time() if when is None else when))
    return ev.PacketbufferCredentials(password, ckey, ivec, stamp, sensor_id, "sensor-three")


async def _pb_client(connect, server, **kw):
    client = await connect(server.port, PacketbufferClient())
    assert await handshake(client, pb_credentials(**kw)) == ev.HandshakeOK()
    return client


def _spooled_packets(server) -> list[tuple[float, bytes]]:
    out = []
    for path in server.ctx.sink.files():
        with open(path, "rb") as f:
            out += [(ts, bytes(buf)) for ts, buf in dpkt.pcap.Reader(f)]
    return out


@pytest.mark.parametrize("scenario", PB_SCENARIOS)
async def test_transcript_containers_land_in_spool(start_server, connect, scenario):
    containers = _containers(scenario)
    server = await start_server(packetbuffer_compress_method=2 if scenario == "pb_blocks_lz4" else 1)
    client = await _pb_client(connect, server)
    expected = 0
    for container in containers:
        await client.send(ev.PacketbufferBlock(restamp(container)))
        assert await client.next_event() == ev.BlockReply("OK")
        expected += struct.unpack_from("<I", container, 28)[0]
    # One resend of the last block on a new connection (its OK was "lost"): confirmed, dropped.
    again = await _pb_client(connect, server)
    await again.send(ev.PacketbufferBlock(restamp(containers[-1])))
    assert await again.next_event() == ev.BlockReply("OK")
    await eventually(lambda: server.stats.pb_duplicates == 1 and server.stats.pb_packets == expected)
    assert server.stats.pb_blocks == len(containers) and server.stats.pb_duplicates == 1
    assert server.stats.pb_packets == expected
    packets = _spooled_packets(server)
    assert len(packets) == expected
    assert all(dpkt.ethernet.Ethernet(buf).type == dpkt.ethernet.ETH_TYPE_IP for _ts, buf in packets)


def _container(counter: int = 1, *, time_s: int | None = None, confirm: bool = True) -> bytes:
    builder = ContainerBuilder()
    frame = b"\x02" * 12 + b"\x08\x00" + b"\x45" + b"\x00" * 40
    builder.add(int(time.time()), 0, frame)
    builder.add(int(time.time()), 10, frame)
    return builder.build(counter=counter, time_s=int(time.time()) if time_s is None else time_s,
                         sensor_id=SENSOR_ID, require_confirmation=confirm, compress=None)


def _with_checksum(data: bytearray) -> bytes:
    data[48:52] = struct.pack("<I", max(checksum32buf(bytes(data[64:])), 1))
    return bytes(data)


def _bad(kind: str) -> tuple[bytes, str]:
    good = bytearray(_container(7))
    if kind == "title":
        good[0:16] = b"pcap_block_stor_"
        return bytes(good), "missing / bad block id"
    if kind == "version":
        good[16] = 6
        return bytes(good), "bad version - sender and receiver must be the same version"
    if kind == "checksum":
        good[-1] ^= 0x55
        return bytes(good), "bad checksum"
    if kind == "time":
        old = int(time.time()) - 100
        return (bytes(good[:60]) + struct.pack("<I", old) + bytes(good[64:]),
                f"Time difference between server and client (id_sensor:{SENSOR_ID}) is too big (100s) - data cannot "
                "be received. Please synchronise time on both server and client. Or increase configuration "
                "parameter receive_packetbuffer_maximum_time_diff_s on server.")
    if kind == "offsets":
        good[68:72] = struct.pack("<I", 0)  # second offset equals the first: not increasing
        return _with_checksum(good), "bad offsets"
    if kind == "caplen":
        base = 64 + 8
        good[base + 8:base + 12] = struct.pack("<I", 70000)
        return _with_checksum(good), "bad headers - caplen = 70000"
    if kind == "too big":
        return bytes(good) + b"\0" * (10 * 1024 * 1024), "too big"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["title", "version", "time", "checksum", "offsets", "caplen", "too big"])
async def test_validation_errors_exact_reply(server, connect, kind):
    client = await _pb_client(connect, server)
    payload, reply = _bad(kind)
    await client.send(ev.PacketbufferBlock(payload))
    assert await client.next_event() == ev.BlockReply(reply)
    # The connection stays usable (spec §9.8): a good block is still accepted.
    await client.send(ev.PacketbufferBlock(_container(8)))
    assert await client.next_event() == ev.BlockReply("OK")
    await eventually(lambda: server.stats.pb_packets == 2)
    assert server.stats.pb_rejected == 1


async def test_no_confirmation_no_reply(server, connect):
    client = await _pb_client(connect, server)
    await client.send(ev.PacketbufferBlock(_container(1, confirm=False)))
    await client.send(ev.PacketbufferBlock(_container(2)))
    assert await client.next_event() == ev.BlockReply("OK")  # the first reply is the second block's
    await eventually(lambda: server.stats.pb_packets == 4)


async def test_bad_time_in_handshake(server, connect):
    client = await connect(server.port, PacketbufferClient())
    reply = await handshake(client, pb_credentials(when=time.time() - 60))
    assert reply == ev.Refuse("bad time")
    assert await client.closed_by_peer()


@pytest.mark.parametrize("hm", [0, 1])
async def test_spool_records_are_the_same_with_and_without_the_kernel(tmp_path, monkeypatch, hm):
    """The pcap records the spool writes (one file per link type, ns times, usec carries, orig_len >= caplen)
    do not depend on whether the C kernel or the Python path wrote them."""
    from vmproto.server.pbspool import PcapSpool, SensorIdentity
    from vmproto.wire import pbkernel
    from vmproto.wire.pbstore import decode_container

    if pbkernel.load() is None:
        pytest.skip("no C compiler: the kernel path cannot be tested here")
    builder = ContainerBuilder(hm)
    for i in range(50):
        builder.add(1_795_667_230 + i, (i * 37_001) % 1_000_000, bytes([i]) * (60 + i), orig_len=(60 + i) * (i % 2),
                    dlink=(0, 1, 1, 101)[i % 4])
    builder.add(4_294_967_295, 2_500_000, b"late" * 20)  # usec >= 10^6 carries, seconds wrap at 32 bits
    container = decode_container(builder.build(counter=1, dlink=1))
    files = {}
    for mode in ("c", "python"):
        monkeypatch.setenv("VMPROTO_PB_KERNEL", mode)
        spool = PcapSpool(tmp_path / mode)
        assert await spool.accept(SensorIdentity(3, "s", "127.0.0.1"), container) == 51
        await spool.aclose()
        files[mode] = sorted((p.name.rsplit("-", 1)[1], p.read_bytes()) for p in spool.files())
    assert [name for name, _ in files["c"]] == ["dlt1.pcap", "dlt101.pcap"]
    assert files["c"] == files["python"]
