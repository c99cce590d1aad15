"""Throughput of the wire codecs: python bench/codecs.py [--quick]

Prints MB/s (and packets/s for containers). --quick uses smaller inputs and fewer rounds (< 5 s).
"""

from __future__ import annotations

import argparse
import os
import random
import time
from collections.abc import Callable

from vmproto.wire.compression import (
    Compression,
    PbCompression,
    compress,
    decompress,
    pb_compress,
    pb_decompress,
)
from vmproto.wire.crypto import AesBlockCipher, AesStreamDecryptor, AesStreamEncryptor
from vmproto.wire.framing import byte_sum
from vmproto.wire.pbstore import ContainerBuilder, checksum32buf, decode_container, validate_container


def _rate(fn: Callable[[], object], nbytes: int, budget: float) -> tuple[float, float]:
    """Run fn repeatedly for about `budget` seconds; return (MB/s, calls/s)."""
    fn()
    calls = 0
    start = time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= budget:
            return nbytes * calls / elapsed / 1e6, calls / elapsed


def _sql_like(size: int) -> bytes:
    rng = random.Random(1)
    words = [b"INSERT", b"INTO", b"cdr", b"VALUES", b"select", b"'2026-11-26 05:00:00'", b"NULL", b"192.0.2.10"]
    out = bytearray()
    while len(out) < size:
        out += rng.choice(words) + b" " + str(rng.randrange(100000)).encode() + b","
    return bytes(out[:size])


def _g711_block(n: int) -> tuple[ContainerBuilder, int]:
    builder = ContainerBuilder()
    rng = random.Random(2)
    payload_len = 0
    for i in range(n):
        pkt = bytes(42) + bytes(rng.getrandbits(8) for _ in range(12)) + bytes([0xFF]) * 160  # eth+ip+udp+rtp+μ-law
        builder.add(1_795_666_906 + i // 50, (i % 50) * 20_000, pkt, len(pkt), 14)
        payload_len += len(pkt)
    return builder, payload_len


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small inputs, short runs (< 5 s)")
    args = parser.parse_args()
    budget = 0.08 if args.quick else 0.5
    big = 256 * 1024 if args.quick else 1024 * 1024
    rows: list[tuple[str, str]] = []

    cipher = AesBlockCipher("0123456789:;<=>?@ABCDEFGHIJKLMNO", "PQRSTUVWXYZ[]^_`")
    for size in (1024, 64 * 1024):
        plain = os.urandom(size)
        ct = cipher.encrypt(plain)
        mbs, cps = _rate(lambda p=plain: cipher.encrypt(p), size, budget)
        rows.append((f"AES block encrypt {size // 1024} KiB", f"{mbs:8.1f} MB/s  {cps:9.0f} blocks/s"))
        mbs, cps = _rate(lambda c=ct: cipher.decrypt(c), size, budget)
        rows.append((f"AES block decrypt {size // 1024} KiB", f"{mbs:8.1f} MB/s  {cps:9.0f} blocks/s"))

    data = os.urandom(big)

    def stream_enc() -> None:
        enc = AesStreamEncryptor(cipher.key, cipher.iv)
        for i in range(0, len(data), 16384):
            enc.update(data[i : i + 16384])
        enc.finalize()

    enc = AesStreamEncryptor(cipher.key, cipher.iv)
    stream_ct = enc.update(data) + enc.finalize()

    def stream_dec() -> None:
        dec = AesStreamDecryptor(cipher.key, cipher.iv)
        for i in range(0, len(stream_ct), 16384):
            dec.update(stream_ct[i : i + 16384])
        dec.finalize()

    rows.append(("AES stream encrypt (16 KiB writes)", f"{_rate(stream_enc, big, budget)[0]:8.1f} MB/s"))
    rows.append(("AES stream decrypt (16 KiB reads)", f"{_rate(stream_dec, big, budget)[0]:8.1f} MB/s"))

    text = _sql_like(big)
    for kind in (Compression.GZIP, Compression.ZSTD, Compression.LZO):
        packed = compress(kind, text)
        c = _rate(lambda k=kind: compress(k, text), big, budget)[0]
        d = _rate(lambda p=packed: decompress(p), big, budget)[0]
        rows.append((f"{kind.name.lower()} SQL text (ratio {len(text) / len(packed):.1f})",
                     f"{c:8.1f} MB/s compress  {d:8.1f} MB/s decompress"))

    builder, _ = _g711_block(1000)
    area = b"".join(builder._parts)  # the raw data area of 1000 G.711 packets
    for method in PbCompression:
        packed = pb_compress(method, area)
        c = _rate(lambda m=method: pb_compress(m, area), len(area), budget)[0]
        d = _rate(lambda m=method, p=packed: pb_decompress(m, p, len(area)), len(area), budget)[0]
        rows.append((f"{method.name.lower()} packet area", f"{c:8.1f} MB/s compress  {d:8.1f} MB/s decompress"))

    rows.append(("byte_sum", f"{_rate(lambda: byte_sum(data), big, budget)[0]:8.1f} MB/s"))
    rows.append(("checksum32buf", f"{_rate(lambda: checksum32buf(data), big, budget)[0]:8.1f} MB/s"))

    n_packets = 1000

    container = builder.build(counter=1, time_s=1_795_666_967, sensor_id=3, ifname="read_from")

    def add_packets() -> None:
        b = ContainerBuilder()
        pkt = builder._parts[1]
        for i in range(n_packets):
            b.add(1_795_666_906, i, pkt, len(pkt), 14)
        b.build(counter=1, time_s=1_795_666_967, sensor_id=3)

    def decode_all() -> None:
        validate_container(container, now=1_795_666_967)
        cont = decode_container(container)
        for _p in cont.iter_packets():
            pass

    for label, fn in (("container encode (add + snappy + checksum)", add_packets),
                      ("container decode (validate + snappy + iterate)", decode_all)):
        mbs, cps = _rate(fn, len(area), budget)
        rows.append((f"{label}, 1000 G.711 pkts", f"{mbs:8.1f} MB/s  {cps * n_packets:11.0f} packets/s"))

    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
