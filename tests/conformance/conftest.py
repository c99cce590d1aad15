"""Fixtures: our central (python -m vmproto.server, embedded MariaDB) started once for the conformance tests."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "conformance-pw"


@dataclass(frozen=True)
class Central:
    host: str
    port: int
    password: str
    log: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"vmproto.server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"vmproto.server did not listen within {timeout} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="session")
def central(tmp_path_factory: pytest.TempPathFactory):
    """Our central on a free loopback port; skips when vmproto.server or mariadb-server is missing."""
    if importlib.util.find_spec("vmproto.server.__main__") is None:
        pytest.skip("vmproto.server has no entry point yet")
    from vmproto.testing.mariadb import find_binary

    try:
        find_binary("mariadbd")
    except Exception as exc:  # noqa: BLE001 - any reason means: no database, no server test
        pytest.skip(f"mariadb-server not available: {exc}")
    work = tmp_path_factory.mktemp("central")
    port = _free_port()
    conf = work / "central.conf"
    # The suite runs cases in parallel on a 2-core CI machine: a packetbuffer handshake's wall-clock check (default
    # 2 s) must not turn scheduling delays into `bad time`. The cases that test the check use offsets of minutes.
    conf.write_text(f"server_bind = 127.0.0.1\nserver_bind_port = {port}\nserver_password = {PASSWORD}\n"
                    "client_server_connect_maximum_time_diff_s = 5\n")
    log = work / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "vmproto.server", "--config-file", str(conf)], cwd=ROOT,
                                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        _wait_port(port, proc, log, 90)
        yield Central("127.0.0.1", port, PASSWORD, log)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
