"""Handshake throughput of the central server: store (2048-bit RSA) and service (4096-bit) handshakes per second,
latency p50/p99, with and without the RSA key pool, and a reconnect storm of N sensors (service + store each).

    .venv/bin/python bench/handshake.py            # 200 store / 40 service handshakes, storm of 50 sensors
    .venv/bin/python bench/handshake.py --quick    # 40 / 8, storm of 10
    .venv/bin/python bench/handshake.py --storm 500  # the issue's reconnect storm (sizes: --store/--service/--storm)

Client and server run in one process (one Trio loop) against a private MariaDB in a temporary directory, on
loopback; RSA key generation runs in worker threads. "no pool" generates a key per connection as the reference
does; "pool" measures a warm pool (each key still used once). RSA key generation per second on one thread is
measured in the same run as the limit of the no-pool case; results go to bench/results/<date>-handshake.json.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import BenchRun, bench_parser  # noqa: E402
from tests.server.client import WireClient, credentials, handshake, service_credentials  # noqa: E402
from tests.server.conftest import server_config  # noqa: E402
from vmproto.server.app import Server  # noqa: E402
from vmproto.server.pbspool import PcapSpool  # noqa: E402
from vmproto.testing.mariadb import MariaDBConfig, MariaDBServer  # noqa: E402
from vmproto.wire import events as ev  # noqa: E402
from vmproto.wire.crypto import generate_rsa_key  # noqa: E402
from vmproto.wire.service import ServiceClient  # noqa: E402
from vmproto.wire.store import StoreClient  # noqa: E402


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def one_handshake(port: int, kind: str, sensor_id: int = 2) -> float:
    start = time.perf_counter()
    machine = ServiceClient() if kind == "service" else StoreClient()
    client = await WireClient.connect(port, machine)
    try:
        creds = service_credentials(sensor_id=sensor_id) if kind == "service" else credentials()
        reply = await handshake(client, creds, timeout=600)
        assert isinstance(reply, ev.ServiceAccepted | ev.StoreAccepted), reply
        return time.perf_counter() - start
    finally:
        await client.close()


async def sequential(port: int, kind: str, n: int) -> dict:
    lat = []
    t0 = time.perf_counter()
    for i in range(n):
        lat.append(await one_handshake(port, kind, sensor_id=1000 + i))
    wall = time.perf_counter() - t0
    return {"n": n, "per_s": n / wall, "p50_ms": 1000 * statistics.median(lat), "p99_ms": 1000 * pct(lat, 99)}


async def storm(port: int, sensors: int) -> dict:
    lat: list[float] = []
    t0 = time.perf_counter()

    async def sensor(i: int) -> None:
        s = await one_handshake(port, "service", sensor_id=5000 + i)
        t = await one_handshake(port, "store")
        lat.append(s + t)

    async with trio.open_nursery() as nursery:
        for i in range(sensors):
            nursery.start_soon(sensor, i)
    wall = time.perf_counter() - t0
    return {"sensors": sensors, "all_connected_s": wall, "p50_ms": 1000 * statistics.median(lat),
            "p99_ms": 1000 * pct(lat, 99)}


async def run_case(params, pool_size: int, n_store: int, n_service: int, n_storm: int, workdir: Path) -> dict:
    cfg = server_config(params, f"bench_hs_{pool_size}", server_rsa_key_pool=pool_size,
                        cdr_partition=False)
    server = Server(cfg, sink=PcapSpool(workdir / f"spool{pool_size}"))
    out: dict = {}
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        keypool = server.ctx.keypool
        if pool_size:
            # Size the pool so the whole measurement is served warm, then wait for it to fill.
            keypool.targets = {2048: n_store + n_storm + 2, 4096: n_service + n_storm + 2}
            keypool._wakeup.set()
            with trio.fail_after(3600):
                while keypool.available(2048) < keypool.targets[2048] or keypool.available(4096) < keypool.targets[4096]:
                    await trio.sleep(0.2)
        out["store"] = await sequential(server.port, "store", n_store)
        out["service"] = await sequential(server.port, "service", n_service)
        out["storm"] = await storm(server.port, n_storm)
        server.request_shutdown()
    return out


def rsa_keygen_rate(bits: int, samples: int) -> float:
    """Keys per second of one thread generating `bits`-bit RSA keys (mean over `samples` keys)."""
    start = time.perf_counter()
    for _ in range(samples):
        generate_rsa_key(bits)
    return samples / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--store", type=int, default=0, help="sequential store handshakes (default 200, quick 40)")
    parser.add_argument("--service", type=int, default=0, help="sequential service handshakes (default 40, quick 8)")
    parser.add_argument("--storm", type=int, default=0, help="sensors in the reconnect storm (default 50, quick 10)")
    args = parser.parse_args(argv)
    if min(args.store, args.service, args.storm) < 0:
        parser.error("sizes must be positive")
    n_store, n_service, n_storm = (40, 8, 10) if args.quick else (200, 40, 50)
    n_store, n_service, n_storm = args.store or n_store, args.service or n_service, args.storm or n_storm
    with BenchRun("handshake", args) as run:
        # The limit of a handshake without the pool is RSA key generation; measured on one thread here (the
        # central generates in two).
        samples = 2 if args.quick else 6
        run.add_limit("rsa2048_keygen", rsa_keygen_rate(2048, 3 * samples), "per s",
                      "2048-bit RSA keys generated per second, one thread (the store handshake's key)")
        run.add_limit("rsa4096_keygen", rsa_keygen_rate(4096, samples), "per s",
                      "4096-bit RSA keys generated per second, one thread (the service handshake's key)")
        with tempfile.TemporaryDirectory(prefix="vmpbench") as tmp:
            with MariaDBServer(MariaDBConfig(Path(tmp) / "db")) as db:
                for pool_size, label, tag in ((0, "no pool (key per connection)", "no_pool"),
                                              (8, "warm key pool", "pool")):
                    result = trio.run(run_case, db.params, pool_size, n_store, n_service, n_storm, Path(tmp))
                    print(f"== {label}")
                    for kind, bits in (("store", 2048), ("service", 4096)):
                        r = result[kind]
                        print(f"  {kind:8s} {r['n']:4d} handshakes: {r['per_s']:8.1f}/s  p50 {r['p50_ms']:8.1f} ms  "
                              f"p99 {r['p99_ms']:8.1f} ms")
                        # Key generation bounds only the no-pool case; with a warm pool it is off the path.
                        run.figure(f"{kind}_{tag}_per_s", r["per_s"], "per s",
                                   limit=f"rsa{bits}_keygen" if pool_size == 0 else None,
                                   note=f"{r['n']} sequential handshakes")
                        run.figure(f"{kind}_{tag}_p50_ms", r["p50_ms"], "ms")
                        run.figure(f"{kind}_{tag}_p99_ms", r["p99_ms"], "ms")
                    s = result["storm"]
                    print(f"  storm    {s['sensors']:4d} sensors (service+store): all up in "
                          f"{s['all_connected_s']:.2f} s  p50 {s['p50_ms']:.1f} ms  p99 {s['p99_ms']:.1f} ms")
                    run.figure(f"storm_{tag}_all_up_s", s["all_connected_s"], "s",
                               note=f"{s['sensors']} sensors, service + store each")
                    run.figure(f"storm_{tag}_p50_ms", s["p50_ms"], "ms")
                    run.figure(f"storm_{tag}_p99_ms", s["p99_ms"], "ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
