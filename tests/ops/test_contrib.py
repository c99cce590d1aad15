"""contrib/: the example configurations load cleanly and build the right mode; the systemd units verify."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vmproto.config import load_file
from vmproto.metrics.endpoint import parse_bind
from vmproto.metrics.sensor import sensor_mode
from vmproto.sensor.app import SensorApp
from vmproto.server.app import Server

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "contrib" / "conf"
UNITS = ROOT / "contrib" / "systemd"

SENSOR_MODES = {
    "sensor-onhost.conf": "classic",
    "sensor-span.conf": "local-processing",
    "sensor-tunnel.conf": "local-processing",
    "sensor-client-local.conf": "local-processing",
    "sensor-client-mirror.conf": "mirroring",
}


def test_every_example_is_covered():
    assert sorted(p.name for p in CONF.glob("*.conf")) == sorted([*SENSOR_MODES, "central.conf"])


@pytest.mark.parametrize("name", sorted([*SENSOR_MODES, "central.conf"]))
def test_example_loads_without_warnings(name, caplog):
    with caplog.at_level(logging.WARNING, logger="vmproto.config"):
        cfg = load_file(CONF / name)
    assert cfg.unknown == {}
    assert caplog.records == [], [r.getMessage() for r in caplog.records]
    # Metrics on loopback only: the endpoint has no authentication.
    host, _port = parse_bind(cfg.get("prometheus_bind"))
    assert host == "127.0.0.1"


@pytest.mark.parametrize("name", sorted(SENSOR_MODES))
def test_sensor_example_builds_its_mode(name, tmp_path):
    cfg = load_file(CONF / name)
    # Paths of the example point at /var; the sensor is only built here, in a scratch directory.
    for option in ("spooldir", "journal_dir", "packetbuffer_file_path"):
        if cfg.get(option):
            cfg.values[option] = str(tmp_path / option)
    app = SensorApp(cfg, replay=tmp_path / "unused.pcap")
    assert sensor_mode(app) == SENSOR_MODES[name]
    if name == "sensor-tunnel.conf":
        assert app.decoder.options.hep and app.decoder.options.hep_bind_port == 9060


def test_central_example_builds(tmp_path):
    cfg = load_file(CONF / "central.conf")
    server = Server(cfg)
    assert int(cfg.get("server_bind_port")) == 60024
    assert str(server.datadir) == "/var/lib/vmproto"
    assert not cfg.get("mysqlhost") and not cfg.get("mysqlsocket")  # embedded MariaDB


def _units_for_this_machine(tmp_path: Path) -> list[Path]:
    # verify checks that ExecStart's binary exists: point it at this checkout's interpreter.
    out = []
    for unit in sorted(UNITS.glob("*.service")):
        text = unit.read_text().replace("/opt/vmproto/.venv/bin/python", sys.executable)
        target = tmp_path / unit.name
        target.write_text(text)
        out.append(target)
    return out


def test_units_verify(tmp_path):
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze not installed (no systemd on this machine)")
    units = _units_for_this_machine(tmp_path)
    assert [u.name for u in units] == ["vmproto-sensor.service", "vmproto-server.service"]
    result = subprocess.run([tool, "verify", *map(str, units)], capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    problems = [line for line in (result.stdout + result.stderr).splitlines() if "vmproto-" in line]
    assert problems == []


def test_units_hardening():
    server = (UNITS / "vmproto-server.service").read_text()
    sensor = (UNITS / "vmproto-sensor.service").read_text()
    for text in (server, sensor):
        for line in ("User=vmproto", "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes",
                     "PrivateTmp=yes", "RestartPreventExitStatus=2"):
            assert line in text.splitlines(), line
    # Capture capabilities for the sensor only.
    assert "AmbientCapabilities=CAP_NET_RAW CAP_NET_ADMIN" in sensor.splitlines()
    assert "CapabilityBoundingSet=CAP_NET_RAW CAP_NET_ADMIN" in sensor.splitlines()
    assert "CapabilityBoundingSet=" in server.splitlines() and "CAP_NET" not in server
