"""`python -m vmproto.sensor` in classic mode, as a subprocess against the private MariaDB:
-r replay lands the analyzer's CDRs in the database and the calls' packets in the spool; a live run on
loopback serves TCP/5029 and shuts down cleanly on SIGTERM; start-up errors exit 2."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import dpkt
import pytest
import trio

from tests.conftest import CORPUS, ROOT, need_shared
from vmproto.sensor.calls import AnalyzerConfig, CallAnalyzer
from vmproto.sensor.capture.files import read_capture
from vmproto.sensor.decode import Decoder
from vmproto.server.db.connection import Connection, ConnectParams
from vmproto.testing.callgen import CallSpec, generate_call
from vmproto.testing.mariadb import MariaDBParams
from vmproto.testing.pcapgen import ethernet, sip_invite, write_pcap

T0 = 1_763_632_800.0


@pytest.fixture
def database(mariadb: MariaDBParams) -> Iterator[ConnectParams]:
    name = f"vmp_cli_{uuid.uuid4().hex[:12]}"

    async def admin(sql: str) -> None:
        conn = await Connection.open(ConnectParams(database="", user=mariadb.user, unix_socket=mariadb.unix_socket))
        try:
            await conn.execute(sql)
        finally:
            await conn.aclose()

    trio.run(admin, f"CREATE DATABASE `{name}`")
    try:
        yield ConnectParams(database=name, user=mariadb.user, unix_socket=mariadb.unix_socket)
    finally:
        trio.run(admin, f"DROP DATABASE IF EXISTS `{name}`")


def _config(path: Path, db: ConnectParams | None, spool: Path, extra: str = "") -> Path:
    text = f"spooldir = {spool}\nsavesip = yes\nsavertp = yes\nmanagerport = 0\n"
    if db is not None:
        text += f"mysqlsocket = {db.unix_socket}\nmysqlusername = {db.user}\nmysqldb = {db.database}\n"
    path.write_text(text + extra)
    return path


def _sensor(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vmproto.sensor", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def _generated_capture(path: Path) -> list:
    packets = []
    specs = [CallSpec(call_id="cli-answered@test", seed=1, start_s=T0, rtp_seconds=2.0, loss=0.05),
             CallSpec(call_id="cli-busy@test", outcome="busy", start_s=T0 + 0.5, caller_rtp_port=10100),
             CallSpec(call_id="cli-cancel@test", outcome="cancel", start_s=T0 + 70, caller_rtp_port=10200)]
    for spec in specs:
        packets += generate_call(spec).packets
    packets.sort(key=lambda p: p.ts_ns)
    write_pcap(path, 1, [(p.ts_ns, ethernet(p.ip_packet)) for p in packets])
    return packets


def _analyse(path: Path, sip_ports: frozenset[int] = frozenset({5060})) -> list:
    analyzer = CallAnalyzer(AnalyzerConfig(sip_ports=sip_ports))
    decoder = Decoder()
    records = []
    for batch in read_capture(path):
        for pkt in decoder.decode_batch(batch.linktype, batch.ts_ns, batch.frames):
            records += analyzer.feed(pkt)
    return records + analyzer.finish()


COLUMNS = ("caller", "called", "callername", "duration", "connect_duration", "progress_time", "lastSIPresponseNum",
           "bye", "sipcallerip", "sipcalledip", "a_received", "b_received", "a_lost", "b_lost", "calldate")


def _expected_row(r) -> dict[str, str | None]:
    def s(v):
        return None if v is None else str(v)

    return {
        "caller": r.caller, "called": r.called, "callername": r.callername, "duration": s(r.duration),
        "connect_duration": s(r.connect_duration), "progress_time": s(r.progress_time),
        "lastSIPresponseNum": s(r.last_sip_response_num), "bye": s(r.bye),
        "sipcallerip": s(int.from_bytes(r.sipcallerip, "big")), "sipcalledip": s(int.from_bytes(r.sipcalledip, "big")),
        "a_received": s(r.a.received if r.a else None), "b_received": s(r.b.received if r.b else None),
        "a_lost": s(r.a.lost if r.a else None), "b_lost": s(r.b.lost if r.b else None),
        "calldate": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r.calldate_us // 1_000_000)),
    }


async def _db_rows(db: ConnectParams) -> tuple[dict[str, dict[str, str | None]], dict[str, int]]:
    conn = await Connection.open(db)
    try:
        cols = ", ".join(f"c.`{c}`" for c in COLUMNS)
        result = await conn.execute(f"SELECT n.fbasename, {cols} FROM cdr c JOIN cdr_next n ON n.cdr_ID = c.ID")
        rows = {row[0].decode(): {c: (v.decode() if v is not None else None) for c, v in zip(COLUMNS, row[1:],
                                                                                             strict=True)}
                for row in result.rows}
        rtp = await conn.execute("SELECT n.fbasename, COUNT(*) FROM cdr_rtp r JOIN cdr_next n ON n.cdr_ID = r.cdr_ID "
                                 "GROUP BY n.fbasename")
        return rows, {f.decode(): int(c) for f, c in rtp.rows}
    finally:
        await conn.aclose()


def _check_db(db: ConnectParams, records: list) -> None:
    rows, rtp_counts = trio.run(_db_rows, db)
    assert sorted(rows) == sorted(r.fbasename for r in records)
    for r in records:
        assert rows[r.fbasename] == _expected_row(r), r.fbasename
        assert rtp_counts.get(r.fbasename, 0) == len(r.rtp)


def _spool_sip(spool: Path, fbasename: str) -> list[bytes]:
    files = list(spool.rglob(f"SIP/{fbasename}.pcap"))
    assert len(files) == 1, files
    with open(files[0], "rb") as f:
        return [buf for _, buf in dpkt.pcap.Reader(f)]


def test_replay_lands_cdrs_and_spool(tmp_path: Path, database: ConnectParams) -> None:
    pcap = tmp_path / "calls.pcap"
    packets = _generated_capture(pcap)
    spool = tmp_path / "spool"
    proc = _sensor("--config-file", str(_config(tmp_path / "s.conf", database, spool)), "-r", str(pcap))
    assert proc.returncode == 0, proc.stderr
    records = _analyse(pcap)
    assert len(records) == 3
    _check_db(database, records)
    for r in records:
        sip = [p.ip_packet for p in packets if p.sport == 5060 and f"Call-ID: {r.fbasename}\r".encode() in p.payload]
        assert sip and _spool_sip(spool, r.fbasename) == sip
    rtp_files = list(spool.rglob("RTP/cli-answered@test.pcap"))
    with open(rtp_files[0], "rb") as f:
        assert len(list(dpkt.pcap.Reader(f))) == sum(1 for p in packets if p.sport in (10000, 20000))
    # A second run of the same file finds its CDRs already stored: nothing is inserted twice.
    proc = _sensor("--config-file", str(_config(tmp_path / "s.conf", database, spool)), "-r", str(pcap))
    assert proc.returncode == 0, proc.stderr
    _check_db(database, records)


def test_replay_of_a_corpus_capture(tmp_path: Path, database: ConnectParams) -> None:
    pcap = need_shared(CORPUS / "pcaps" / "gen_call_pcmu.pcap")
    ports = "5060,5061,5062,5080"
    spool = tmp_path / "spool"
    conf = _config(tmp_path / "s.conf", database, spool, f"sipport = {ports}\n")
    proc = _sensor("--config-file", str(conf), "-r", str(pcap))
    assert proc.returncode == 0, proc.stderr
    records = _analyse(pcap, frozenset({5060, 5061, 5062, 5080}))
    assert records
    _check_db(database, records)
    for r in records:
        assert _spool_sip(spool, r.fbasename)


def test_startup_errors_exit_2(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    pcap = tmp_path / "calls.pcap"
    _generated_capture(pcap)
    no_db = ConnectParams(database="x", user="root", unix_socket=str(tmp_path / "no.sock"))
    proc = _sensor("--config-file", str(_config(tmp_path / "a.conf", no_db, spool)), "-r", str(pcap))
    assert proc.returncode == 2 and "database" in proc.stderr
    proc = _sensor("--config-file", str(_config(tmp_path / "b.conf", None, spool)), "-r", str(tmp_path / "nope"))
    assert proc.returncode == 2 and "no such file" in proc.stderr
    (tmp_path / "c.conf").write_text("managerport = many\n")
    proc = _sensor("--config-file", str(tmp_path / "c.conf"), "-r", str(pcap))
    assert proc.returncode == 2 and "managerport" in proc.stderr
    # Not a capture file: the run ends, and says the capture failed.
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"this is not a pcap file at all")
    proc = _sensor("--config-file", str(_config(tmp_path / "d.conf", None, spool)), "-r", str(bad))
    assert proc.returncode == 1 and "capture failed" in proc.stderr


def test_replay_without_database_writes_spool_only(tmp_path: Path) -> None:
    pcap = tmp_path / "calls.pcap"
    _generated_capture(pcap)
    spool = tmp_path / "spool"
    proc = _sensor("--config-file", str(_config(tmp_path / "s.conf", None, spool)), "-r", str(pcap))
    assert proc.returncode == 0, proc.stderr
    assert len(list(spool.rglob("*.pcap"))) == 3 + 1  # three SIP files, RTP of the answered call only


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _manager(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        return data


def test_live_capture_sigterm_closes_calls_and_commits(tmp_path: Path, database: ConnectParams) -> None:
    spool = tmp_path / "spool"
    port = _free_port()
    sip_port = _free_port()
    conf = _config(tmp_path / "s.conf", database, spool,
                   f"interface = lo\nsipport = {sip_port}\nfilter = udp port {sip_port}\n").read_text()
    (tmp_path / "s.conf").write_text(conf.replace("managerport = 0", f"managerport = {port}"))
    proc = subprocess.Popen([sys.executable, "-m", "vmproto.sensor", "--config-file", str(tmp_path / "s.conf")],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        version = b""
        while time.monotonic() < deadline and not version:
            if proc.poll() is not None:
                pytest.skip(f"live capture unavailable: {proc.stderr.read()}")
            try:
                version = _manager(port, b"getversion\r\n\r\n")
            except OSError:
                time.sleep(0.1)
        assert version == b"2026.04.0"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            files: list[Path] = []
            while time.monotonic() < deadline and not files:
                s.sendto(sip_invite("live-sigterm@test"), ("127.0.0.1", sip_port))
                time.sleep(0.3)
                files = list(spool.rglob("SIP/live-sigterm@test.pcap"))
        assert files, "the INVITE never reached the spool"
        rel = files[0].relative_to(spool)
        assert _manager(port, f"getfile {rel}\r\n\r\n".encode()) == files[0].read_bytes()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, err
    rows, _ = trio.run(_db_rows, database)
    assert list(rows) == ["live-sigterm@test"]
    assert rows["live-sigterm@test"]["bye"] == "110"  # closed as a forced stop


# ---- the app in-process: the CdrSink seam, stalled sinks, stop() ----------------------------------------------


class _ListSink:
    """A CdrSink keeping CDRs in memory (what the C/S store client will plug in the same way)."""

    def __init__(self, stall: bool = False) -> None:
        from vmproto.sensor.classic import SinkSummary

        self.summary = SinkSummary()
        self.cdrs: list = []
        self.stall = stall
        self.started = False

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        self.started = True
        task_status.started()
        await trio.sleep_forever()

    async def submit(self, cdr) -> None:
        self.summary.submitted += 1
        self.cdrs.append(cdr)
        if not self.stall:
            self.summary.committed += 1

    async def aclose(self) -> None:
        if self.stall:
            await trio.sleep_forever()


async def test_app_feeds_every_sink(tmp_path: Path) -> None:
    from vmproto import config
    from vmproto.sensor.app import SensorApp

    pcap = tmp_path / "calls.pcap"
    _generated_capture(pcap)
    cfg = config.load_text(f"spooldir = {tmp_path / 'spool'}\nsavesip = yes\nmanagerport = 0\n")
    sinks = [_ListSink(), _ListSink()]
    report = await SensorApp(cfg, replay=pcap, sinks=sinks).run()
    assert report.ok and report.cdrs == 3 and all(s.started for s in sinks)
    expected = _analyse(pcap)
    for sink in sinks:
        assert [c.fbasename for c in sink.cdrs] == [r.fbasename for r in expected]
        assert [c.duration for c in sink.cdrs] == [r.duration for r in expected]


async def test_app_reports_a_stalled_sink(tmp_path: Path) -> None:
    from vmproto import config
    from vmproto.sensor.app import SensorApp

    pcap = tmp_path / "calls.pcap"
    _generated_capture(pcap)
    cfg = config.load_text(f"spooldir = {tmp_path / 'spool'}\nmanagerport = 0\n")
    with trio.fail_after(10):
        report = await SensorApp(cfg, replay=pcap, sinks=[_ListSink(stall=True)], stall_timeout=0.2).run()
    assert not report.ok and report.problems == ["3 of 3 CDRs not committed"]


async def test_app_stop_closes_open_calls_as_forced(tmp_path: Path) -> None:
    from vmproto import config
    from vmproto.sensor.app import SensorApp
    from vmproto.sensor.capture import PacketBatch
    from vmproto.testing.pcapgen import udp4

    # One INVITE that is never answered, then the source waits like a quiet live interface.
    frame = ethernet(udp4("192.0.2.10", "192.0.2.20", 5060, 5060, sip_invite("stop@test")))

    async def source(send) -> None:
        await send.send(PacketBatch(1, [int(T0 * 1e9)], [frame], [len(frame)]))
        await trio.sleep_forever()

    cfg = config.load_text(f"spooldir = {tmp_path / 'spool'}\nsavesip = yes\nmanagerport = 0\n")
    sink = _ListSink()
    app = SensorApp(cfg, sinks=[sink], source=source)
    async with trio.open_nursery() as nursery:
        result: list = []

        async def runner() -> None:
            result.append(await app.run())

        nursery.start_soon(runner)
        with trio.fail_after(10):
            while app.report.packets < 1:
                await trio.sleep(0.01)
        assert not sink.cdrs  # the call is open
        app.stop("SIGTERM")
    report = result[0]
    assert report.ok and report.stopped_by_signal == "SIGTERM"
    assert [(c.fbasename, c.bye) for c in sink.cdrs] == [("stop@test", 110)]
    # The spool was flushed and closed at the stop.
    files = list((tmp_path / "spool").rglob("SIP/stop@test.pcap"))
    with open(files[0], "rb") as f:
        assert [buf for _, buf in dpkt.pcap.Reader(f)] == [frame[14:]]
