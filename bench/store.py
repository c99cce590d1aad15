"""Store path end to end: CDRs/s committed to MariaDB by the central (ack after COMMIT, spec §8.9), ack latency.

    .venv/bin/python bench/store.py             # 4 connections, 8 s per phase, durability 1 then 2
    .venv/bin/python bench/store.py --quick     # < 20 s: 3 s per phase, durability 1 only
    .venv/bin/python bench/store.py --durability 1 --connections 8 --concat 200 --seconds 10

What runs where:

* a private MariaDB (unix socket for the central, as in production) started with
  `innodb_flush_log_at_trx_commit` = 1 (every COMMIT fsynced: the production default) or 2 (flushed once a second);
* the central (`vmproto.server.app.Server`) in this process, on a loopback TCP port;
* a sensor-like client in a **separate process**: `--connections` store connections of id_main 10 over real
  sockets, strictly one message in flight per connection (spec §8.1), zstd as `type_compress_store`. Its units are
  real CDR SQL: `vmproto.sensor.cdr.sql.store_sql` of calls from `vmproto.testing.callgen` run through the call
  analyzer, each made unique (Call-ID / fbasename). Like a sensor, a connection sends whatever is queued, up to
  `mysql_concat_limit` units as L-items (spec §8.11).

Phases: *full load* (the queue never runs dry: every message carries `--concat` CDRs) and *half load* (CDRs arrive
at half the measured full rate; batches are what queued up meanwhile). Reported: messages/s, CDRs/s committed
(counted in the `cdr` table, not by the client), table rows/s, ack latency p50/p99 (send → `OK`), CPU seconds of
the central and the client. Beside them the physical limits measured on the same machine: loopback TCP MB/s, the
`mariadb` C client's plain INSERT rate and its rate for the same CDR SQL (same durability), so the figures read as
ratios. Results go to bench/results/<date>-store.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing as mp
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.server.client import cached_key  # noqa: E402
from tests.server.conftest import server_config  # noqa: E402
from vmproto.server.app import Server  # noqa: E402
from vmproto.server.db.connection import Connection, ConnectParams  # noqa: E402
from vmproto.server.pbspool import PcapSpool  # noqa: E402
from vmproto.testing.mariadb import MariaDBConfig, MariaDBParams, MariaDBServer  # noqa: E402

ID_MAIN_CDR = 10
MARK = b"vmpbenchcall"  # in every template's Call-ID; replaced per CDR to make each unit unique
# Tables a CDR unit writes (the lookup tables only on first use of a value).
CDR_TABLES = ("cdr", "cdr_next", "cdr_country_code", "cdr_rtp", "cdr_sdp", "cdr_siphistory")


# --- the client process --------------------------------------------------------------------------------------

def cdr_templates() -> list[bytes]:
    """CDR SQL units of a few generated calls (answered with and without re-INVITE, busy, cancelled; two
    codecs), each containing MARK where the Call-ID goes."""
    from vmproto.sensor.calls import AnalyzerConfig, CallAnalyzer
    from vmproto.sensor.cdr.sql import store_sql
    from vmproto.testing.callgen import CallSpec, generate_call

    specs = [
        CallSpec(call_id=f"{MARK.decode()}@192.0.2.10", outcome=o, codec=c, reinvite=r, rtp_seconds=2.0,
                 loss=0.01, jitter_ms=4, seed=i, start_s=1_763_632_800.0 + i, caller_rtp_port=10000 + 2 * i,
                 callee_rtp_port=20000 + 2 * i)
        for i, (o, c, r) in enumerate([("answered", "pcmu", False), ("answered", "pcma", True),
                                       ("busy", "pcmu", False), ("cancel", "g729", False),
                                       ("answered", "g729", False), ("answered", "pcmu", True)])
    ]
    out = []
    for spec in specs:
        analyzer = CallAnalyzer(AnalyzerConfig(sip_ports=frozenset({5060})))
        cdrs = []
        for p in generate_call(spec).packets:
            cdrs += analyzer.feed(p)
        cdrs += analyzer.finish()
        for cdr in cdrs:
            sql = store_sql(cdr).encode()
            if MARK not in sql:
                raise SystemExit("bench: the Call-ID marker is missing from the CDR SQL")
            out.append(sql)
    return out


def client_main(port: int, connections: int, concat: int, phases: list[dict], pipe) -> None:
    """Entry point of the client process: run `phases` and send one result dict per phase through `pipe`."""
    try:
        trio.run(_client, port, connections, concat, phases, pipe)
    except BaseException as exc:  # report instead of dying silently
        pipe.send({"error": repr(exc)})
        raise


async def _client(port: int, connections: int, concat: int, phases: list[dict], pipe) -> None:
    from tests.server.client import WireClient, credentials, handshake
    from vmproto.wire import events as ev
    from vmproto.wire.compression import Compression
    from vmproto.wire.store import StoreClient

    templates = cdr_templates()
    tag = os.getpid()
    clients = []
    for _ in range(connections):
        client = await WireClient.connect(port, StoreClient(compression=Compression.ZSTD))
        accepted = await handshake(client, credentials())
        if not isinstance(accepted, ev.StoreAccepted):
            raise SystemExit(f"bench: store handshake refused: {accepted!r}")
        clients.append(client)
    serial = 0

    def unit() -> bytes:
        nonlocal serial
        serial += 1
        return templates[serial % len(templates)].replace(MARK, b"b%d-%d" % (tag, serial))

    pipe.send({"ready": True, "templates": len(templates)})
    for phase in phases:
        pipe.recv()  # the go signal: the server side took its "before" counts
        pipe.send(await _phase(clients, unit, concat, phase.get("rate"), phase["seconds"]))
    for client in clients:
        await client.close()


async def _phase(clients: list, unit, concat: int, rate: float | None, duration: float) -> dict:
    """Send for `duration` seconds on every connection; `rate` CDRs/s arriving (None: the queue never runs
    dry, every message carries `concat` CDRs). Returns counts, wall and client CPU time, ack latencies."""
    from vmproto.wire import events as ev
    from vmproto.wire.store_msg import StoreMessage

    latencies: list[float] = []
    sent = {"messages": 0, "cdrs": 0}
    queued = 0  # CDRs arrived and not yet sent (open loop)
    arrived = trio.Condition()
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    end = t0 + duration

    async def arrivals() -> None:
        nonlocal queued
        while time.perf_counter() < end:
            await trio.sleep(0.001)
            due = int((time.perf_counter() - t0) * rate) - sent["cdrs"] - queued
            if due > 0:
                queued += due
                async with arrived:
                    arrived.notify_all()
        async with arrived:
            arrived.notify_all()

    async def sender(client) -> None:
        nonlocal queued
        while time.perf_counter() < end:
            if rate is None:
                n = concat
            else:
                async with arrived:
                    while queued == 0 and time.perf_counter() < end:
                        await arrived.wait()
                n = min(queued, concat)
                if n == 0:
                    break
                queued -= n
            units = tuple(unit() for _ in range(n))
            msg = StoreMessage(ID_MAIN_CDR, time.strftime("%Y-%m-%d %H:%M:%S"), units, batched=n > 1)
            t = time.perf_counter()
            await client.send(ev.StoreQueries(msg))
            reply = await client.next_event(timeout=300)
            if reply != ev.StoreOK():
                raise SystemExit(f"bench: central replied {reply!r}")
            latencies.append(time.perf_counter() - t)
            sent["messages"] += 1
            sent["cdrs"] += n

    async with trio.open_nursery() as nursery:
        if rate is not None:
            nursery.start_soon(arrivals)
        for client in clients:
            nursery.start_soon(sender, client)
    wall = time.perf_counter() - t0
    lat = sorted(latencies)
    return {**sent, "wall": wall, "client_cpu": time.process_time() - cpu0,
            "p50_ms": 1000 * statistics.median(lat) if lat else None,
            "p99_ms": 1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else None,
            "max_ms": 1000 * lat[-1] if lat else None}


# --- physical limits -----------------------------------------------------------------------------------------

def loopback_mb_s(total: int = 256 << 20, chunk: int = 1 << 20) -> float:
    """Loopback TCP throughput (MB/s) with large writes: the wire's ceiling on this machine."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    received = [0]

    def sink() -> None:
        conn, _ = listener.accept()
        with conn:
            while data := conn.recv(chunk):
                received[0] += len(data)

    thread = threading.Thread(target=sink)
    thread.start()
    payload = b"\0" * chunk
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as out:
        for _ in range(total // chunk):
            out.sendall(payload)
    thread.join()
    listener.close()
    return received[0] / (time.perf_counter() - t0) / 1e6


def mariadb_cli(params: MariaDBParams, database: str, sql: bytes) -> subprocess.Popen:
    return subprocess.Popen(["mariadb", "--no-defaults", f"--socket={params.unix_socket}", f"--user={params.user}",
                             database], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def run_cli_parallel(params: MariaDBParams, database: str, scripts: list[bytes]) -> float:
    """Run one `mariadb` C client per script in parallel; return the wall time."""
    t0 = time.perf_counter()
    procs = [mariadb_cli(params, database, s) for s in scripts]
    for proc, script in zip(procs, scripts, strict=True):
        _, err = proc.communicate(script)
        if proc.returncode != 0:
            raise SystemExit(f"bench: mariadb client failed: {err.decode(errors='replace')[:400]}")
    return time.perf_counter() - t0


def raw_insert_rate(params: MariaDBParams, database: str, sessions: int, per_session: int, batch: int) -> float:
    """Rows/s of single-row INSERTs, `batch` per transaction, `sessions` C clients in parallel."""
    scripts = []
    for s in range(sessions):
        lines = []
        for t in range(per_session // batch):
            lines.append(b"START TRANSACTION;")
            lines += [b"INSERT INTO raw_rows (s, n, payload) VALUES (%d, %d, 'call-%d-%d@198.51.100.20');"
                      % (s, t * batch + i, s, i) for i in range(batch)]
            lines.append(b"COMMIT;")
        scripts.append(b"\n".join(lines))
    wall = run_cli_parallel(params, database, scripts)
    return sessions * (per_session // batch) * batch / wall


def cli_cdr_rate(params: MariaDBParams, database: str, templates: list[bytes], sessions: int, per_session: int,
                 batch: int) -> float:
    """CDRs/s for the same CDR SQL run by the C client: per transaction `batch` units in one compound
    statement (no dedup record, no per-unit isolation): what MariaDB itself does with this SQL."""
    scripts = []
    serial = 0
    for s in range(sessions):
        parts = [b"DELIMITER //"]
        for _ in range(per_session // batch):
            units = []
            for _ in range(batch):
                serial += 1
                u = templates[serial % len(templates)].replace(MARK, b"cli%d-%d" % (s, serial)).rstrip()
                units.append(u if u.endswith(b";") else u + b";")
            parts.append(b"START TRANSACTION//\nBEGIN NOT ATOMIC\n" + b"\n".join(units) + b"\nEND//\nCOMMIT//")
        scripts.append(b"\n".join(parts))
    wall = run_cli_parallel(params, database, scripts)
    return sessions * (per_session // batch) * batch / wall


# --- the server side -----------------------------------------------------------------------------------------

async def count_rows(conn: Connection) -> dict[str, int]:
    out = {}
    for table in CDR_TABLES:
        out[table] = int((await conn.execute(f"SELECT count(*) FROM `{table}`")).rows[0][0])
    return out


async def run_durability(params: MariaDBParams, args, durability: int, workdir: Path) -> dict:
    database = f"bench_store_d{durability}"
    # One cached RSA key, as the tests use: the key pool's background generation would compete for the CPU.
    cfg = server_config(params, database, cdr_partition=False, server_rsa_key_pool=0,
                        server_sql_concat_limit=args.concat)
    server = Server(cfg, key_factory=cached_key, sink=PcapSpool(workdir / f"spool{durability}"))
    result: dict = {"durability": durability, "phases": {}}
    ctx = mp.get_context("spawn")
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        admin = await Connection.open(ConnectParams(database=database, user=params.user,
                                                    unix_socket=params.unix_socket))
        here, there = ctx.Pipe()
        seconds = args.seconds
        phases = [{"name": "full", "seconds": seconds}, {"name": "half", "seconds": seconds}]
        proc = ctx.Process(target=client_main, args=(server.port, args.connections, args.concat,
                                                     [{"seconds": seconds}], there), daemon=True)
        # The half-load rate depends on the full-load result, so the client gets one phase at a time.
        proc.start()
        first = await trio.to_thread.run_sync(here.recv)
        if "error" in first:
            raise SystemExit(f"bench client: {first['error']}")
        procs = [proc]
        for phase in phases:
            if phase["name"] == "half":
                rate = result["phases"]["full"]["cdrs_s"] / 2
                here, there = ctx.Pipe()
                proc = ctx.Process(target=client_main, args=(server.port, args.connections, args.concat,
                                                              [{"seconds": seconds, "rate": rate}], there),
                                   daemon=True)
                proc.start()
                procs.append(proc)
                ready = await trio.to_thread.run_sync(here.recv)
                if "error" in ready:
                    raise SystemExit(f"bench client: {ready['error']}")
            before = await count_rows(admin)
            cpu0 = resource.getrusage(resource.RUSAGE_SELF)
            here.send("go")
            got = await trio.to_thread.run_sync(here.recv)
            if "error" in got:
                raise SystemExit(f"bench client: {got['error']}")
            cpu1 = resource.getrusage(resource.RUSAGE_SELF)
            after = await count_rows(admin)
            cdrs = after["cdr"] - before["cdr"]
            rows = sum(after.values()) - sum(before.values())
            if cdrs != got["cdrs"]:
                raise SystemExit(f"bench: client had {got['cdrs']} CDRs acknowledged, cdr table grew by {cdrs}")
            result["phases"][phase["name"]] = {
                "messages": got["messages"], "cdrs": cdrs, "msg_s": got["messages"] / got["wall"],
                "cdrs_s": cdrs / got["wall"], "rows_s": rows / got["wall"],
                "cdrs_per_msg": cdrs / max(1, got["messages"]),
                "p50_ms": got["p50_ms"], "p99_ms": got["p99_ms"], "max_ms": got["max_ms"],
                "central_cpu_s": (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime),
                "client_cpu_s": got["client_cpu"], "wall_s": got["wall"],
            }
        for p in procs:
            await trio.to_thread.run_sync(p.join, 30)
        templates = await trio.to_thread.run_sync(cdr_templates)
        per = 2000 if args.quick else 6000
        result["limits"] = {
            "mariadb_raw_insert_rows_s": await trio.to_thread.run_sync(
                raw_insert_rate, params, database, args.connections, per * 5, 100),
            "mariadb_cdr_sql_cdrs_s": await trio.to_thread.run_sync(
                cli_cdr_rate, params, database, templates, args.connections, per // 2, args.concat),
        }
        await admin.execute(f"DROP DATABASE `{database}`")
        await admin.aclose()
        server.request_shutdown()
    return result


async def _prepare_raw(params: MariaDBParams, durability: int) -> None:
    conn = await Connection.open(ConnectParams(database="", user=params.user, unix_socket=params.unix_socket))
    try:
        await conn.execute(f"SET GLOBAL innodb_flush_log_at_trx_commit = {durability:d}")
        await conn.execute(f"CREATE DATABASE IF NOT EXISTS bench_store_d{durability}")
        await conn.execute(f"CREATE TABLE IF NOT EXISTS bench_store_d{durability}.raw_rows (id INT AUTO_INCREMENT "
                           "PRIMARY KEY, s INT, n INT, payload VARCHAR(100)) ENGINE=InnoDB")
    finally:
        await conn.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="< 20 s: short phases, durability 1 only")
    parser.add_argument("--connections", type=int, default=4, help="store connections of the client (id_main 10)")
    parser.add_argument("--concat", type=int, default=100, help="mysql_concat_limit: CDRs per message at most")
    parser.add_argument("--seconds", type=float, default=None, help="length of each phase")
    parser.add_argument("--durability", type=int, action="append", choices=(1, 2),
                        help="innodb_flush_log_at_trx_commit to measure (repeatable; default 1 and 2, quick: 1)")
    parser.add_argument("--no-save", action="store_true", help="do not write bench/results/<date>-store.json")
    args = parser.parse_args()
    args.seconds = args.seconds or (3.0 if args.quick else 8.0)
    durabilities = args.durability or ([1] if args.quick else [1, 2])
    report: dict = {"date": dt.datetime.now().isoformat(timespec="seconds"), "cpus": os.cpu_count(),
                    "connections": args.connections, "concat": args.concat, "seconds": args.seconds,
                    "loopback_tcp_mb_s": loopback_mb_s(64 << 20 if args.quick else 256 << 20), "runs": []}
    print(f"loopback TCP: {report['loopback_tcp_mb_s']:,.0f} MB/s   cpus: {report['cpus']}   "
          f"{args.connections} connections, mysql_concat_limit {args.concat}, {args.seconds:g} s per phase")
    with tempfile.TemporaryDirectory(prefix="vmpbench") as tmp:
        config = MariaDBConfig(Path(tmp) / "db", innodb_buffer_pool_size="512M", innodb_log_file_size="256M")
        with MariaDBServer(config) as db:
            for durability in durabilities:
                trio.run(_prepare_raw, db.params, durability)
                r = trio.run(run_durability, db.params, args, durability, Path(tmp))
                report["runs"].append(r)
                lim = r["limits"]
                print(f"innodb_flush_log_at_trx_commit={durability}: mariadb C client: plain INSERT "
                      f"{lim['mariadb_raw_insert_rows_s']:,.0f} rows/s, same CDR SQL "
                      f"{lim['mariadb_cdr_sql_cdrs_s']:,.0f} CDRs/s")
                for name, p in r["phases"].items():
                    print(f"  {name:4s} load: {p['msg_s']:7.1f} msg/s ({p['cdrs_per_msg']:5.1f} CDRs/msg) "
                          f"{p['cdrs_s']:8,.0f} CDRs/s committed ({p['cdrs_s'] / lim['mariadb_cdr_sql_cdrs_s']:4.0%} "
                          f"of the C client) {p['rows_s']:8,.0f} rows/s  ack p50 {p['p50_ms']:6.1f} ms "
                          f"p99 {p['p99_ms']:6.1f} ms  cpu central {p['central_cpu_s']:.1f}s "
                          f"client {p['client_cpu_s']:.1f}s / {p['wall_s']:.1f}s")
    if not args.no_save:
        out = Path(__file__).resolve().parent / "results" / f"{dt.date.today().isoformat()}-store.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"written {out.relative_to(Path.cwd()) if out.is_relative_to(Path.cwd()) else out}")


if __name__ == "__main__":
    main()
