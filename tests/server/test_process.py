"""The server as a process, from its CLI: embedded database start and orderly SIGTERM shutdown; SIGKILL during a
store stream loses no acknowledged message and applies resends once (spec §8.9, §8.10)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import trio

from tests.server.client import PASSWORD, WireClient, credentials, handshake
from vmproto.server.db.connection import Connection, ConnectParams
from vmproto.wire import events as ev
from vmproto.wire.store import StoreClient
from vmproto.wire.store_msg import StoreMessage

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(path: Path, port: int, **extra: str) -> Path:
    lines = ["server_bind = 127.0.0.1", f"server_bind_port = {port}", f"server_password = {PASSWORD}",
             "server_rsa_key_pool = 1"] + [f"{k} = {v}" for k, v in extra.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


async def _spawn(config: Path, log: Path) -> trio.Process:
    with open(log, "ab") as err:  # the child keeps its own copy of the descriptor
        return await trio.lowlevel.open_process(
            [sys.executable, "-m", "vmproto.server", "--config-file", str(config)], cwd=str(ROOT),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)


async def _wait_port(port: int, proc: trio.Process, log: Path, timeout: float = 60) -> None:
    with trio.fail_after(timeout):
        while True:
            if proc.returncode is not None:
                raise AssertionError(f"server exited {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
            except OSError:
                await trio.sleep(0.1)
                continue
            await stream.aclose()
            return


async def _store(port: int) -> WireClient:
    client = await WireClient.connect(port, StoreClient())
    assert isinstance(await handshake(client, credentials()), ev.StoreAccepted)
    return client


@pytest.mark.slow
async def test_cli_embedded_database_and_sigterm(tmp_path):
    port = _free_port()
    datadir = tmp_path / "d"
    log = tmp_path / "server.log"
    proc = await _spawn(_config(tmp_path / "vm.conf", port, datadir=str(datadir)), log)
    try:
        await _wait_port(port, proc, log, timeout=90)
        client = await _store(port)
        await client.send(ev.StoreQueries(StoreMessage(99, None, (b"INSERT INTO sensors (id_sensor) VALUES (42)",))))
        assert await client.next_event() == ev.StoreOK()
        await client.close()
        proc.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = log.read_text()
    assert "embedded mariadb ready" in text and "server stopped" in text
    assert (datadir / "mariadb" / "data" / "voipmonitor").is_dir()
    assert not (datadir / "mariadb" / "mysqld.sock").exists()  # mariadbd was stopped with the server


async def test_kill9_during_store_stream_loses_no_acked_message(tmp_path, mariadb):
    database = f"vmp_kill_{uuid.uuid4().hex[:8]}"
    port = _free_port()
    log = tmp_path / "server.log"
    config = _config(tmp_path / "vm.conf", port, mysqlsocket=mariadb.unix_socket, mysqlusername=mariadb.user,
                     mysqldb=database, cdr_partition="no")
    admin = await Connection.open(ConnectParams(database="", user=mariadb.user, unix_socket=mariadb.unix_socket))
    proc = await _spawn(config, log)
    try:
        await _wait_port(port, proc, log)
        await admin.execute(f"CREATE TABLE `{database}`.acktest (n INT NOT NULL)")
        total, acked = 400, []
        unacked = list(range(total))

        async def stream_until_killed() -> None:
            client = await _store(port)
            try:
                for n in list(unacked):
                    await client.send(ev.StoreQueries(StoreMessage(99, None, (f"INSERT INTO acktest VALUES ({n})"
                                                                              .encode(),))))
                    if await client.next_event() != ev.StoreOK():
                        return
                    acked.append(n)
                    unacked.remove(n)
            except Exception:  # noqa: BLE001 - the server died under us: that is the point
                return
            finally:
                await client.close()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(stream_until_killed)
            with trio.fail_after(30):
                while len(acked) < 50:
                    await trio.sleep(0.005)
            os.kill(proc.pid, signal.SIGKILL)
        await proc.wait()
        assert 50 <= len(acked) < total
        # Restart; the client resends every message it has no OK for (including the one in flight).
        proc = await _spawn(config, log)
        await _wait_port(port, proc, log)
        await stream_until_killed()
        assert not unacked
        rows = (await admin.execute(f"SELECT n, count(*) FROM `{database}`.acktest GROUP BY n")).rows
        counts = {int(n): int(c) for n, c in rows}
        assert counts == {n: 1 for n in range(total)}
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            with trio.move_on_after(20):
                await proc.wait()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        await admin.execute(f"DROP DATABASE IF EXISTS `{database}`")
        await admin.aclose()
