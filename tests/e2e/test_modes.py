"""Issue 6's equivalence: the same capture gives the same CDRs whether a sensor analyses it and sends CDR SQL
(`store`), or mirrors its raw packets and the central analyses them (`packetbuffer block`).

Our central runs in-process on the test MariaDB; the two sensors are real `python -m vmproto.sensor` processes
replaying the capture over loopback."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import trio

from tests.conftest import CORPUS
from tests.server.client import PASSWORD, cached_key
from tests.server.conftest import server_config
from vmproto.sensor.capture.writer import PcapWriter
from vmproto.server.app import Server
from vmproto.server.db.connection import Connection, ConnectParams
from vmproto.testing.callgen import CallSpec, generate_call

ROOT = Path(__file__).resolve().parents[2]
# Every CDR column the two paths must agree on (ids, the sensor id and insertion times excluded).
COLUMNS = ("calldate", "callend", "duration", "connect_duration", "progress_time", "first_rtp_time", "caller",
           "called", "caller_domain", "called_domain", "sipcallerip", "sipcalledip", "lastSIPresponseNum",
           "whohanged", "bye", "a_received", "b_received", "a_lost", "b_lost", "a_avgjitter_mult10",
           "b_avgjitter_mult10", "a_mos_f1_min_mult10", "b_mos_f1_min_mult10", "a_mos_adapt_min_mult10",
           "b_mos_adapt_min_mult10", "payload", "a_rtp_ptime", "b_rtp_ptime")


def _generated(path: Path) -> Path:
    specs = [CallSpec(seed=41, call_id="modes-1@192.0.2.10", loss=0.02, jitter_ms=15, reorder=0.01),
             CallSpec(seed=42, call_id="modes-2@192.0.2.10", outcome="busy", start_s=1_763_632_820.0,
                      caller_rtp_port=10010, callee_rtp_port=20010),
             CallSpec(seed=43, call_id="modes-3@192.0.2.10", codec="g729", start_s=1_763_632_830.0,
                      caller_rtp_port=10020, callee_rtp_port=20020, reinvite=True, rtp_seconds=6)]
    packets = sorted((p for s in specs for p in generate_call(s).packets), key=lambda p: p.ts_ns)
    with PcapWriter(path, 101) as writer:
        for p in packets:
            writer.write(p.ts_ns, p.ip_packet)
    return path


def _captures(tmp_path: Path) -> list[Path]:
    out = [_generated(tmp_path / "generated.pcap")]
    for name in ("gen_call_pcmu", "gen_base_gre", "gen_sip_tcp"):  # plain, tunnelled, SIP over TCP
        corpus = CORPUS / "pcaps" / f"{name}.pcap"
        if corpus.exists():
            out.append(corpus)
    return out


def _sensor(tmp_path: Path, port: int, id_sensor: int, pcap: Path, mirror: bool) -> subprocess.CompletedProcess:
    conf = tmp_path / f"sensor{id_sensor}.conf"
    conf.write_text(
        f"server_destination = 127.0.0.1\nserver_destination_port = {port}\nserver_password = {PASSWORD}\n"
        f"id_sensor = {id_sensor}\nspooldir = {tmp_path / f'spool{id_sensor}'}\nmanagerport = 0\nsavesip = yes\n"
        f"packetbuffer_sender = {'yes' if mirror else 'no'}\n")
    return subprocess.run([sys.executable, "-m", "vmproto.sensor", "--config-file", str(conf), "-r", str(pcap)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)


async def _rows(conn: Connection, id_sensor: int) -> list[tuple]:
    cols = ", ".join(f"`{c}`" for c in COLUMNS)
    result = await conn.execute(f"SELECT {cols} FROM cdr WHERE id_sensor = {id_sensor} ORDER BY calldate, caller")
    return [tuple(row) for row in result.rows]


@pytest.mark.slow
async def test_mirrored_and_local_processing_give_the_same_cdrs(mariadb, tmp_path, nursery):
    database = f"vmp_modes_{uuid.uuid4().hex[:10]}"
    # No raw spool, central analysis on (the default): mirrored packets become CDRs on the central, and with savesip
    # per-call SIP PCAPs in the central's spool, as a sensor keeps them.
    central_spool = tmp_path / "central-spool"
    server = Server(server_config(mariadb, database, spooldir=str(central_spool), savesip=True), key_factory=cached_key)
    await nursery.start(server.run)
    port = server.addresses[0][1]
    admin = await Connection.open(ConnectParams(database=database, user=mariadb.user,
                                                unix_socket=mariadb.unix_socket))
    try:
        runs = [(pcap, 10 + 2 * n, 11 + 2 * n) for n, pcap in enumerate(_captures(tmp_path))]
        results: dict[tuple[int, bool], subprocess.CompletedProcess] = {}

        async def one(pcap: Path, id_sensor: int, mirror: bool) -> None:
            results[id_sensor, mirror] = await trio.to_thread.run_sync(_sensor, tmp_path, port, id_sensor, pcap,
                                                                       mirror)

        async with trio.open_nursery() as sensors:  # every sensor at once: they differ only by id
            for pcap, local_id, mirror_id in runs:
                sensors.start_soon(one, pcap, local_id, False)
                sensors.start_soon(one, pcap, mirror_id, True)
        for (id_sensor, mirror), done in sorted(results.items()):
            assert done.returncode == 0, (id_sensor, mirror, done.stderr[-3000:])
        for pcap, local_id, mirror_id in runs:
            local = await _rows(admin, local_id)
            assert local, f"{pcap.name}: no CDR from local processing"
            with trio.fail_after(60):  # the central closes the mirrored calls once that sensor is idle
                while len(await _rows(admin, mirror_id)) < len(local):
                    await trio.sleep(0.5)
            assert await _rows(admin, mirror_id) == local, pcap.name
        server.request_shutdown()  # closes the central's spool files
        with trio.fail_after(60):
            await server.stopped.wait()
        central_files = {p.name: p.read_bytes() for p in central_spool.rglob("SIP/*.pcap")}
        assert central_files, "the central kept no per-call PCAP of the mirrored calls"
        for pcap, local_id, _mirror_id in runs:
            local_files = {p.name: p.read_bytes() for p in (tmp_path / f"spool{local_id}").rglob("SIP/*.pcap")}
            assert local_files, pcap.name
            for name, data in local_files.items():  # the same call's SIP PCAP, written by the central
                assert central_files.get(name) == data, (pcap.name, name)
    finally:
        server.request_shutdown()
        await admin.execute(f"DROP DATABASE IF EXISTS `{database}`")
        await admin.aclose()
