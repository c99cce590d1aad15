"""Store throughput of the central server: messages/s and rows/s committed (ack after COMMIT), ack latency.

    .venv/bin/python bench/store.py            # 4 connections x 500 messages of 100 INSERTs (L-items)
    .venv/bin/python bench/store.py --quick    # 2 x 100

Each message is `<id_main>|L<len>:INSERT ...\\n` x batch, as a reference sensor batches with mysql_concat_limit.
Connections use distinct id_main values (one writer each, as several sensor queues would) plus one run where
all share id_main 10 (the single CDR writer). Client and server share one process; MariaDB is private.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.server.client import WireClient, credentials, handshake  # noqa: E402
from tests.server.conftest import server_config  # noqa: E402
from vmproto.server.app import Server  # noqa: E402
from vmproto.server.db.connection import Connection, ConnectParams  # noqa: E402
from vmproto.server.pbspool import PcapSpool  # noqa: E402
from vmproto.testing.mariadb import MariaDBConfig, MariaDBServer  # noqa: E402
from vmproto.wire import events as ev  # noqa: E402
from vmproto.wire.compression import Compression  # noqa: E402
from vmproto.wire.store import StoreClient  # noqa: E402
from vmproto.wire.store_msg import StoreMessage  # noqa: E402


def message(id_main: int, conn: int, seq: int, batch: int) -> StoreMessage:
    rows = tuple(f"INSERT INTO bench_rows (conn, seq, item, payload) VALUES ({conn}, {seq}, {i}, "
                 f"'call-{conn}-{seq}-{i}@198.51.100.20')".encode() for i in range(batch))
    return StoreMessage(id_main, time.strftime("%Y-%m-%d %H:%M:%S"), rows, batched=True)


async def run(params, connections: int, per_conn: int, batch: int, shared_id: bool, workdir: Path) -> dict:
    database = f"bench_store_{int(shared_id)}"
    cfg = server_config(params, database, cdr_partition=False, server_rsa_key_pool=2)
    server = Server(cfg, sink=PcapSpool(workdir / "spool"))
    latencies: list[float] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        admin = await Connection.open(ConnectParams(database=database, user=params.user,
                                                    unix_socket=params.unix_socket))
        await admin.execute("CREATE TABLE IF NOT EXISTS bench_rows (conn INT, seq INT, item INT, "
                            "payload VARCHAR(100)) ENGINE=InnoDB")
        await admin.execute("TRUNCATE TABLE bench_rows")

        async def sender(c: int) -> None:
            client = await WireClient.connect(server.port, StoreClient(compression=Compression.ZSTD))
            try:
                assert isinstance(await handshake(client, credentials()), ev.StoreAccepted)
                for seq in range(per_conn):
                    msg = message(10 if shared_id else 200 + c, c, seq, batch)
                    t = time.perf_counter()
                    await client.send(ev.StoreQueries(msg))
                    reply = await client.next_event(timeout=300)
                    assert reply == ev.StoreOK(), reply
                    latencies.append(time.perf_counter() - t)
            finally:
                await client.close()

        t0 = time.perf_counter()
        async with trio.open_nursery() as senders:
            for c in range(connections):
                senders.start_soon(sender, c)
        wall = time.perf_counter() - t0
        rows = int((await admin.execute("SELECT count(*) FROM bench_rows")).rows[0][0])
        await admin.execute(f"DROP DATABASE `{database}`")
        await admin.aclose()
        server.request_shutdown()
    n = connections * per_conn
    assert rows == n * batch, (rows, n * batch)
    lat = sorted(latencies)
    return {"messages": n, "msg_s": n / wall, "rows_s": rows / wall, "p50_ms": 1000 * statistics.median(lat),
            "p99_ms": 1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))], "wall": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args()
    connections, per_conn = (2, 100) if args.quick else (4, 500)
    with tempfile.TemporaryDirectory(prefix="vmpbench") as tmp:
        config = MariaDBConfig(Path(tmp) / "db", innodb_buffer_pool_size="256M", innodb_log_file_size="128M")
        with MariaDBServer(config) as db:
            for shared in (False, True):
                r = trio.run(run, db.params, connections, per_conn, args.batch, shared, Path(tmp))
                label = "one id_main (single writer)" if shared else f"{connections} id_mains (parallel writers)"
                print(f"{label:32s} {r['messages']} msgs x {args.batch} rows: {r['msg_s']:8.1f} msg/s "
                      f"{r['rows_s']:9.0f} rows/s committed  ack p50 {r['p50_ms']:7.1f} ms  p99 {r['p99_ms']:7.1f} ms")


if __name__ == "__main__":
    main()
