"""Throughput of the wire codecs: python bench/codecs.py [--quick] [--json-only] [--out PATH]

Prints MB/s (and packets/s for containers), each beside its ratio to the bare primitive measured in the same run
(bench/_common.py: AES-128-CBC with a fresh context per block, raw snappy / lz4 block / zstd level 1 on the same
G.711 packet area): a ratio near 1 means our wrapper adds nothing, far below 1 that it does. --quick uses smaller
inputs and fewer rounds (< 5 s). Results go to bench/results/<date>-codecs.json.
"""

from __future__ import annotations

import os
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import BenchRun, bench_parser  # noqa: E402
from vmproto.wire.compression import (  # noqa: E402
    Compression,
    PbCompression,
    compress,
    decompress,
    pb_compress,
    pb_decompress,
)
from vmproto.wire.crypto import AesBlockCipher, AesStreamDecryptor, AesStreamEncryptor  # noqa: E402
from vmproto.wire.framing import byte_sum  # noqa: E402
from vmproto.wire.pbstore import ContainerBuilder, checksum32buf, decode_container, validate_container  # noqa: E402


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


def main(argv: list[str] | None = None) -> int:
    args = bench_parser(__doc__).parse_args(argv)
    budget = 0.08 if args.quick else 0.5
    big = 256 * 1024 if args.quick else 1024 * 1024
    builder, _ = _g711_block(1000)
    area = b"".join(builder._parts)  # the raw data area of 1000 G.711 packets
    with BenchRun("codecs", args, limits=False) as run:
        # The compressor limits run on this very packet area, so the packet-area rows compare like with like.
        run.measure_limits(area)
        _measure(run, budget, big, builder, area)
    return 0


def _measure(run: BenchRun, budget: float, big: int, builder: ContainerBuilder, area: bytes) -> None:
    cipher = AesBlockCipher("0123456789:;<=>?@ABCDEFGHIJKLMNO", "PQRSTUVWXYZ[]^_`")
    for size in (1024, 64 * 1024):
        label = f"{size // 1024}KiB"
        plain = os.urandom(size)
        ct = cipher.encrypt(plain)
        mbs, cps = _rate(lambda p=plain: cipher.encrypt(p), size, budget)
        run.figure(f"aes_block_encrypt_{label}", mbs, "MB/s", limit=f"aes_cbc_encrypt_{label}")
        run.figure(f"aes_block_encrypt_{label}_blocks", cps, "blocks/s")
        mbs, cps = _rate(lambda c=ct: cipher.decrypt(c), size, budget)
        run.figure(f"aes_block_decrypt_{label}", mbs, "MB/s", limit=f"aes_cbc_decrypt_{label}")
        run.figure(f"aes_block_decrypt_{label}_blocks", cps, "blocks/s")

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

    # A stream keeps one context, so the 64 KiB per-block limit is a floor it may exceed.
    run.figure("aes_stream_encrypt_16KiB_writes", _rate(stream_enc, big, budget)[0], "MB/s",
               limit="aes_cbc_encrypt_64KiB")
    run.figure("aes_stream_decrypt_16KiB_reads", _rate(stream_dec, big, budget)[0], "MB/s",
               limit="aes_cbc_decrypt_64KiB")

    text = _sql_like(big)
    for kind in (Compression.GZIP, Compression.ZSTD, Compression.LZO):
        packed = compress(kind, text)
        c = _rate(lambda k=kind: compress(k, text), big, budget)[0]
        d = _rate(lambda p=packed: decompress(p), big, budget)[0]
        name = kind.name.lower()
        note = f"SQL text, ratio {len(text) / len(packed):.1f}"
        # Only zstd has a bare-primitive limit; it was measured on packet data, so the ratio is indicative.
        limit = "zstd" if kind is Compression.ZSTD else None
        run.figure(f"{name}_sql_compress", c, "MB/s", limit=limit and f"{limit}_compress", note=note)
        run.figure(f"{name}_sql_decompress", d, "MB/s", limit=limit and f"{limit}_decompress", note=note)

    for method in PbCompression:
        packed = pb_compress(method, area)
        c = _rate(lambda m=method: pb_compress(m, area), len(area), budget)[0]
        d = _rate(lambda m=method, p=packed: pb_decompress(m, p, len(area)), len(area), budget)[0]
        name = method.name.lower()
        limit = name if f"{name}_compress" in run.limits else None
        run.figure(f"{name}_packet_area_compress", c, "MB/s", limit=limit and f"{limit}_compress")
        run.figure(f"{name}_packet_area_decompress", d, "MB/s", limit=limit and f"{limit}_decompress")

    run.figure("byte_sum", _rate(lambda: byte_sum(data), big, budget)[0], "MB/s")
    run.figure("checksum32buf", _rate(lambda: checksum32buf(data), big, budget)[0], "MB/s")

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

    for key, fn, limit in (("container_encode", add_packets, "snappy_compress"),
                           ("container_decode", decode_all, "snappy_decompress")):
        mbs, cps = _rate(fn, len(area), budget)
        note = "add + snappy + checksum" if key == "container_encode" else "validate + snappy + iterate"
        run.figure(key, mbs, "MB/s", limit=limit, note=f"1000 G.711 packets, {note}")
        run.figure(f"{key}_packets", cps * n_packets, "packets/s")


if __name__ == "__main__":
    sys.exit(main())
