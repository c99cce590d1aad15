"""The metrics endpoint on its own: HTTP handling, bind parsing, start-up failures, the documented metric table,
and the `status` command line against a running central."""

from __future__ import annotations

import re
import socket
import sys
from pathlib import Path

import pytest
import trio

from tests.ops.helpers import http_get, scrape, value
from tests.server.conftest import server_config
from vmproto.config import defaults
from vmproto.metrics import MetricsConfigError, MetricsEndpoint, parse_bind
from vmproto.metrics.families import counter, version_text
from vmproto.metrics.http import MAX_HEAD
from vmproto.metrics.sensor import SensorCollector
from vmproto.metrics.server import ServerCollector
from vmproto.sensor.app import SensorApp
from vmproto.server.app import Server, ServerStartError
from vmproto.status import main as status_main
from vmproto.status import url_for_bind

ROOT = Path(__file__).resolve().parents[2]


class _Fixed:
    def __init__(self) -> None:
        self.n = 0

    def collect(self):  # type: ignore[no-untyped-def]
        self.n += 1
        yield counter("vmproto_test_scrapes_total", "Scrapes so far.", (), self.n)


async def _endpoint(nursery) -> tuple[MetricsEndpoint, tuple[str, int]]:  # type: ignore[no-untyped-def]
    ep = MetricsEndpoint("127.0.0.1", 0, _Fixed(), lambda: {"role": "test"}, process_metrics=False)
    return ep, await nursery.start(ep.serve)


@pytest.mark.parametrize(("text", "expected"), [
    ("127.0.0.1:9101", ("127.0.0.1", 9101)), ("[::1]:9101", ("::1", 9101)), ("9101", ("", 9101)),
    (":9101", ("", 9101)), ("0.0.0.0:0", ("0.0.0.0", 0)),
])
def test_parse_bind(text, expected):
    assert parse_bind(text) == expected


@pytest.mark.parametrize("text", ["", "localhost", "127.0.0.1:99999", "127.0.0.1:http", "::1"])
def test_parse_bind_refuses(text):
    with pytest.raises(MetricsConfigError):
        parse_bind(text)


def test_url_for_bind():
    assert url_for_bind("0.0.0.0:9101") == "http://127.0.0.1:9101"
    assert url_for_bind("[::]:9101") == "http://[::1]:9101"
    assert url_for_bind("10.0.0.5:9101") == "http://10.0.0.5:9101"


def test_version_text():
    assert version_text(2026004000) == "2026.4.0"
    assert version_text(0) == "unknown"


async def test_scrape_reads_live_values(nursery):
    _ep, addr = await _endpoint(nursery)
    assert value(await scrape(addr), "vmproto_test_scrapes_total") == 1
    assert value(await scrape(addr), "vmproto_test_scrapes_total") == 2  # read at scrape time, not cached


async def test_http_errors(nursery):
    ep, addr = await _endpoint(nursery)
    assert (await http_get(addr, "/nope"))[0] == 404
    assert (await http_get(addr, "/metrics", method="POST"))[0] == 405
    status, headers, body = await http_get(addr, "/status", method="HEAD")
    assert status == 200 and body == b"" and int(headers["content-length"]) > 0
    # Garbage request line, oversized head, silence: answered (or closed) without disturbing the endpoint.
    stream = await trio.open_tcp_stream(*addr)
    await stream.send_all(b"HELLO\r\n\r\n")
    assert (await stream.receive_some(100)).startswith(b"HTTP/1.1 400")
    await stream.aclose()
    stream = await trio.open_tcp_stream(*addr)
    await stream.send_all(b"GET /metrics HTTP/1.1\r\nX: " + b"a" * (MAX_HEAD + 10))
    assert (await stream.receive_some(100)).startswith(b"HTTP/1.1 431")
    await stream.aclose()
    assert value(await scrape(addr), "vmproto_test_scrapes_total") == 1
    assert ep.http.requests[400] == 1 and ep.http.requests[431] == 1


async def test_server_start_fails_when_metrics_port_is_taken(mariadb, tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cfg = server_config(mariadb, "vmp_ops_busy", prometheus_bind=f"127.0.0.1:{port}")
        server = Server(cfg, sink=None)
        with pytest.raises(BaseException) as info:
            await server.run()
    assert _only(info.value, ServerStartError) and "prometheus_bind" in str(_only(info.value, ServerStartError))


def test_sensor_refuses_a_bad_bind(tmp_path):
    cfg = defaults()
    cfg.values.update(spooldir=str(tmp_path), managerport=0, prometheus_bind="nonsense")

    async def run() -> None:
        await SensorApp(cfg, source=_never).run()

    from vmproto.sensor.app import SensorSetupError

    with pytest.raises(BaseException) as info:
        trio.run(run)
    assert "prometheus_bind = 'nonsense'" in str(_only(info.value, SensorSetupError))


def _only(exc: BaseException, kind: type) -> BaseException:
    """The single leaf of `exc` (possibly grouped by nurseries), checked to be a `kind`."""
    leaves, stack = [], [exc]
    while stack:
        e = stack.pop()
        if isinstance(e, BaseExceptionGroup):
            stack.extend(e.exceptions)
        else:
            leaves.append(e)
    assert len(leaves) == 1 and isinstance(leaves[0], kind), leaves
    return leaves[0]


async def _never(send) -> None:  # type: ignore[no-untyped-def]
    await trio.sleep_forever()


def _documented() -> set[str]:
    text = (ROOT / "docs" / "metrics.md").read_text()
    return set(re.findall(r"^\| `(vmproto_\w+)` \|", text, re.MULTILINE))


def test_metrics_table_matches_the_collectors(tmp_path):
    server = Server(defaults())
    names = {m.name + ("_total" if m.type == "counter" else "") for m in ServerCollector(server).collect()}
    cfg = defaults()
    cfg.values.update(spooldir=str(tmp_path), managerport=0, server_destination="127.0.0.1")
    local = SensorApp(cfg, source=_never)
    cfg2 = defaults()
    cfg2.values.update(spooldir=str(tmp_path / "m"), managerport=0, server_destination="127.0.0.1",
                       packetbuffer_sender=True)
    mirror = SensorApp(cfg2, source=_never)
    for app in (local, mirror):
        names |= {m.name + ("_total" if m.type == "counter" else "") for m in SensorCollector(app).collect()}
    # Families present only on a running central (the context exists after start-up).
    names.add("vmproto_server_log_lines_suppressed_total")
    assert names == _documented()


async def test_status_command_against_a_running_central(start_server, tmp_path):
    server = await start_server(prometheus_bind="127.0.0.1:0")
    host, port = server.metrics_address
    conf = tmp_path / "central.conf"
    conf.write_text(f"prometheus_bind = {host}:{port}\n")
    result = await trio.run_process([sys.executable, "-m", "vmproto.server", "status", "-c", str(conf)],
                                    capture_stdout=True, capture_stderr=True, check=False)
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr.decode()
    assert out.startswith("vmproto central ") and "sensors connected: 0" in out
    assert f"listening 127.0.0.1:{server.port}" in out
    # The sensor's command refuses to show a central; a config without prometheus_bind is a usage error.
    wrong = await trio.run_process([sys.executable, "-m", "vmproto.sensor", "status", "--url",
                                    f"http://{host}:{port}"], capture_stdout=True, capture_stderr=True,
                                   check=False)
    assert wrong.returncode == 1 and b"is a server, not a sensor" in wrong.stderr
    (tmp_path / "none.conf").write_text("id_sensor = 3\n")
    assert status_main("server", ["-c", str(tmp_path / "none.conf")]) == 2


def test_status_command_unreachable(capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connection refused
        assert status_main("sensor", ["--url", f"http://127.0.0.1:{port}", "--timeout", "2"]) == 1
    assert "cannot reach the process" in capsys.readouterr().err
