"""Packet mirroring throughput, sensor → central: python bench/mirror.py [--quick] [--seconds N]

The sensor side is vmproto.sensor.client.mirror (header offsets, containers, snappy, AES, confirmations) fed
with a generated RTP-heavy capture (G.711 frames, 20 ms, many streams) as fast as it takes them. The central side
runs in a child process: the vmproto.wire packetbuffer server machine over a Trio socket, validating every
container and decoding its packets. Prints packets/s and MB/s of packet data, CPU seconds per side, and, measured
in the same run, AES-128-CBC and snappy MB/s on the same data, so the result reads as ratios to those limits.
--quick finishes in well under 15 s.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import resource
import sys
import time

import trio

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vmproto.sensor.capture.batch import PacketBatch  # noqa: E402
from vmproto.sensor.client.connector import Connector  # noqa: E402
from vmproto.sensor.client.machine_io import MachineStream  # noqa: E402
from vmproto.sensor.client.mirror import MirrorOptions, MirrorSender  # noqa: E402
from vmproto.sensor.client.session import SensorIdentity, SessionState  # noqa: E402
from vmproto.testing import pcapgen as g  # noqa: E402
from vmproto.wire import events as ev  # noqa: E402
from vmproto.wire.acceptor import Acceptor  # noqa: E402
from vmproto.wire.compression import PbCompression, pb_compress  # noqa: E402
from vmproto.wire.crypto import AesBlockCipher, generate_rsa_key  # noqa: E402
from vmproto.wire.pbstore import decode_container  # noqa: E402

PASSWORD = "bench"


def rtp_capture(n: int, streams: int = 200) -> list[bytes]:
    """`n` Ethernet/IPv4/UDP/RTP G.711 frames (172-byte RTP packets) spread over `streams` streams."""
    rnd = random.Random(7)
    payloads = [rnd.randbytes(160) for _ in range(64)]
    out = []
    for i in range(n):
        s = i % streams
        rtp = g.rtp(i // streams, (i // streams) * 160, 0x1000 + s, payloads[i % 64])
        out.append(g.ethernet(g.udp4(f"10.{s // 250}.{s % 250}.1", "10.9.9.9", 10000 + 2 * s, 20000, rtp)))
    return out


# --------------------------------------------------------------------------------------------------- central side
def _central(port_queue: multiprocessing.Queue, result_queue: multiprocessing.Queue) -> None:
    key = generate_rsa_key(2048)
    totals = {"packets": 0, "bytes": 0, "blocks": 0}

    async def handle(stream: trio.SocketStream) -> None:
        acceptor = Acceptor()
        opening = None
        while opening is None:
            data = await stream.receive_some(65536)
            if not data:
                return
            acceptor.receive_data(data, time.time())
            opening = acceptor.next_opening(time.time())
        machine = acceptor.build(opening, rsa_key=key, password=PASSWORD)
        ms = MachineStream(stream, machine)
        await ms.send(ev.RsaKey(machine.public_pem))  # type: ignore[attr-defined]
        while True:
            event = await ms.next_event()
            if isinstance(event, ev.PacketbufferCredentials):
                await ms.send(ev.HandshakeOK())
            elif isinstance(event, ev.PacketbufferBlock):
                c = decode_container(event.payload, PbCompression.SNAPPY)
                for p in c.iter_packets():
                    totals["bytes"] += p[2]
                totals["packets"] += len(c)
                totals["blocks"] += 1
                if event.require_confirmation:
                    await ms.send(ev.BlockReply("OK"))
            elif isinstance(event, ev.ConnectionClosed):
                ru = resource.getrusage(resource.RUSAGE_SELF)
                result_queue.put({**totals, "cpu_s": ru.ru_utime + ru.ru_stime})
                return

    async def main() -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port_queue.put(listeners[0].socket.getsockname()[1])
        await trio.serve_listeners(handle, listeners)

    trio.run(main)


# ---------------------------------------------------------------------------------------------------- sensor side
async def _sensor(port: int, frames: list[bytes], rounds: int, confirm: bool) -> dict[str, float]:
    connector = Connector(("127.0.0.1",), port)
    session = SessionState(SensorIdentity(id_sensor=5, name="bench", password=PASSWORD, packetbuffer_sender=True))
    mirror = MirrorSender(connector, session, MirrorOptions(require_confirmation=confirm))
    batch = 4096
    t0 = 1_795_667_230_000_000_000
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(mirror.run)
        n = 0
        for _ in range(rounds):
            for i in range(0, len(frames), batch):
                chunk = frames[i:i + batch]
                ts = [t0 + (n + k) * 100_000 for k in range(len(chunk))]
                mirror.add_batch(PacketBatch(1, ts, chunk, [len(f) for f in chunk]))
                n += len(chunk)
                while mirror.queued_blocks > 32:  # replaying a file: wait for the sender instead of dropping
                    await trio.sleep(0.001)
                await trio.sleep(0)
        mirror.flush()
        await mirror.wait_sent()
        elapsed = time.perf_counter() - start
        nursery.cancel_scope.cancel()
    ru = resource.getrusage(resource.RUSAGE_SELF)
    s = mirror.stats
    return {"packets": s.packets_sent, "bytes": s.bytes_in, "elapsed_s": elapsed, "blocks": s.blocks_sent,
            "cpu_s": (ru.ru_utime + ru.ru_stime) - (ru0.ru_utime + ru0.ru_stime),
            "dropped": sum(s.dropped.values())}


def _limits(frames: list[bytes], budget: float) -> dict[str, float]:
    area = b"".join(frames)[: 1 << 20]
    aes = AesBlockCipher(b"0123456789abcdef", b"fedcba9876543210")

    def rate(fn) -> float:  # type: ignore[no-untyped-def]
        fn()
        calls, start = 0, time.perf_counter()
        while time.perf_counter() - start < budget:
            fn()
            calls += 1
        return len(area) * calls / (time.perf_counter() - start) / 1e6

    return {"aes_128_cbc_encrypt_MBps": rate(lambda: aes.encrypt(area)),
            "snappy_compress_MBps": rate(lambda: pb_compress(PbCompression.SNAPPY, area))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small run (< 15 s)")
    parser.add_argument("--packets", type=int, default=0, help="packets per round (default 200k, quick 50k)")
    parser.add_argument("--rounds", type=int, default=0, help="rounds over the capture (default 5, quick 1)")
    parser.add_argument("--no-confirm", action="store_true", help="mirror_require_confirmation = no")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    n = args.packets or (50_000 if args.quick else 200_000)
    rounds = args.rounds or (1 if args.quick else 5)
    frames = rtp_capture(n)
    limits = _limits(frames, 0.3 if args.quick else 1.0)
    ctx = multiprocessing.get_context("spawn")
    port_q, result_q = ctx.Queue(), ctx.Queue()
    child = ctx.Process(target=_central, args=(port_q, result_q), daemon=True)
    child.start()
    try:
        port = port_q.get(timeout=30)
        sensor = trio.run(_sensor, port, frames, rounds, not args.no_confirm)
        central = result_q.get(timeout=30)
    finally:
        child.terminate()
        child.join(5)
    pps = sensor["packets"] / sensor["elapsed_s"]
    mbps = sensor["bytes"] / sensor["elapsed_s"] / 1e6
    out = {
        "packets": sensor["packets"], "elapsed_s": round(sensor["elapsed_s"], 3),
        "packets_per_s": round(pps), "packet_MBps": round(mbps, 1),
        "sensor_cpu_s": round(sensor["cpu_s"], 2), "central_cpu_s": round(central["cpu_s"], 2),
        "central_packets": central["packets"], "blocks": sensor["blocks"], "dropped": sensor["dropped"],
        **{k: round(v, 1) for k, v in limits.items()},
        "ratio_to_aes": round(mbps / limits["aes_128_cbc_encrypt_MBps"], 3),
        "ratio_to_snappy": round(mbps / limits["snappy_compress_MBps"], 3),
        "confirmation": not args.no_confirm,
    }
    assert central["packets"] == sensor["packets"], "the central did not receive every packet"
    for k, v in out.items():
        print(f"{k:28} {v}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
