"""End to end: a central and two sensors on loopback (local processing id 2, mirroring id 3), each with its
metrics endpoint; the counters move as traffic flows, dropped packets show up by stage and reason, and the
`/status` document and the `status` command describe the fleet."""

from __future__ import annotations

import time

import pytest
import trio

from tests.ops.helpers import arp_batch, bad_ipv4_batch, call_batch, scrape, status_doc, total, value
from tests.server.client import PASSWORD, WireClient, credentials, handshake
from vmproto import __version__
from vmproto.config import defaults
from vmproto.sensor.app import SensorApp
from vmproto.sensor.capture.batch import PacketBatch
from vmproto.status import render_sensor, render_server
from vmproto.wire import events as ev
from vmproto.wire.store import StoreClient

pytestmark = pytest.mark.mariadb


def sensor_config(tmp_path, name: str, port: int, **options: object):
    cfg = defaults()
    cfg.values.update(server_destination="127.0.0.1", server_destination_port=port, server_password=PASSWORD,
                      managerport=0, spooldir=str(tmp_path / name), prometheus_bind="127.0.0.1:0",
                      service_stop_grace=1, name_sensor=name, **options)
    return cfg


class Fed:
    """A packet source for SensorApp: sends `batches`, then holds the capture open until `release`."""

    def __init__(self, batches: list[PacketBatch]) -> None:
        self.batches = batches
        self.release = trio.Event()
        self.sent = trio.Event()

    async def __call__(self, send: trio.MemorySendChannel[PacketBatch]) -> None:
        for batch in self.batches:
            await send.send(batch)
        self.sent.set()
        await self.release.wait()


async def wait_metric(address, predicate, timeout: float = 20.0):  # type: ignore[no-untyped-def]
    """Scrape until `predicate(samples)` holds; return the samples (fails with the last scrape otherwise)."""
    samples: dict = {}
    with trio.move_on_after(timeout):
        while True:
            samples = await scrape(address)
            if predicate(samples):
                return samples
            await trio.sleep(0.05)
    raise AssertionError(f"metrics condition not met within {timeout} s; last scrape: "
                         f"{ {k: v for k, v in samples.items() if 'vmproto_' in k[0]} }")


async def test_central_and_two_sensors_counters_move(start_server, tmp_path, nursery):
    server = await start_server(prometheus_bind="127.0.0.1:0", default_sink=True)
    assert server.metrics_address is not None
    central = server.metrics_address

    before = await scrape(central)
    assert value(before, "vmproto_server_up") == 1
    assert value(before, "vmproto_server_sensors_connected") == 0

    # A peer with the wrong password: the refusal is counted by type and reason.
    bad = await WireClient.connect(server.port, StoreClient())
    assert await handshake(bad, credentials(password="wrong")) == ev.Refuse("bad password")
    await bad.close()

    t0 = time.time() - 3600  # recent enough for the central's daily partitions
    local_feed = Fed([call_batch(31, "ops-local-1@192.0.2.10", t0), bad_ipv4_batch(int(t0 * 1e9) + 5),
                      call_batch(32, "ops-local-2@192.0.2.10", t0 + 5, outcome="busy",
                                 caller_rtp_port=10002, callee_rtp_port=20002)])
    mirror_feed = Fed([call_batch(33, "ops-mirror-1@192.0.2.30", t0 + 10), arp_batch(int(t0 * 1e9) + 7)])
    local = SensorApp(sensor_config(tmp_path, "s2", server.port, id_sensor=2), source=local_feed, stay=True,
                      stall_timeout=20)
    mirror = SensorApp(sensor_config(tmp_path, "s3", server.port, id_sensor=3, packetbuffer_sender=True),
                       source=mirror_feed, stay=True, stall_timeout=20)
    done = {"local": trio.Event(), "mirror": trio.Event()}

    async def run(app: SensorApp, key: str) -> None:
        try:
            await app.run()
        finally:
            done[key].set()

    nursery.start_soon(run, local, "local")
    nursery.start_soon(run, mirror, "mirror")
    with trio.fail_after(20):
        await local_feed.sent.wait()
        await mirror_feed.sent.wait()
        while local.metrics_address is None or mirror.metrics_address is None:
            await trio.sleep(0.01)

    # Sensor 2 while its calls are still open: packets counted, the malformed frame dropped at decode.
    s2 = await wait_metric(local.metrics_address, lambda s: value(s, "vmproto_sensor_decode_frames_total") >= 1
                           and value(s, "vmproto_sensor_channel_connected", channel="service") == 1)
    captured = value(s2, "vmproto_sensor_packets_captured_total")
    assert captured == sum(len(b.frames) for b in local_feed.batches)
    assert value(s2, "vmproto_sensor_packets_dropped_total", stage="decode", reason="ipv4_truncated") == 1
    assert value(s2, "vmproto_sensor_calls_active") == 2
    assert value(s2, "vmproto_sensor_info", version=__version__, mode="local-processing") == 1

    # The mirroring sensor: the ARP frame cannot be mirrored (no IP), everything else reaches the central.
    n_mirror = sum(len(b.frames) for b in mirror_feed.batches)
    s3 = await wait_metric(mirror.metrics_address,
                           lambda s: total(s, "vmproto_sensor_mirror_blocks_total", step="confirmed") >= 1)
    assert value(s3, "vmproto_sensor_packets_dropped_total", stage="mirror", reason="no_ip") == 1
    assert value(s3, "vmproto_sensor_mirror_packets_total", step="taken") == n_mirror

    # The central sees both sensors, their channels and their pongs; the mirrored packets arrived.
    c = await wait_metric(central, lambda s: value(s, "vmproto_server_sensors_connected") == 2
                          and value(s, "vmproto_server_pb_packets_total") == n_mirror - 1
                          and ("vmproto_server_sensor_last_pong_age_seconds", (("sensor_id", "2"),)) in s
                          and ("vmproto_server_sensor_last_pong_age_seconds", (("sensor_id", "3"),)) in s)
    assert value(c, "vmproto_server_handshakes_total", type="store", result="bad password") == 1
    assert value(c, "vmproto_server_handshakes_total", type="service", result="ok") == 2
    assert value(c, "vmproto_server_sensor_channel_connections", sensor_id="3", channel="service") == 1
    assert value(c, "vmproto_server_sensor_channel_connections", sensor_id="3", channel="packetbuffer_block") == 1
    assert value(c, "vmproto_server_pb_blocks_total") >= 1
    # The central analyses what it received as if sniffed there (spec §9.13), per sending sensor.
    assert value(c, "vmproto_server_pb_analysis_packets_total", sensor="3") == n_mirror - 1
    assert value(c, "vmproto_server_received_bytes_total", type="packetbuffer_block") > 0
    assert value(c, "vmproto_server_sent_bytes_total", type="service") > 0
    committed_before = value(c, "vmproto_server_store_messages_committed_total")

    # End of sensor 2's capture: its calls close, the CDRs travel through the journal to the central.
    local_feed.release.set()
    s2 = await wait_metric(local.metrics_address,
                           lambda s: value(s, "vmproto_sensor_store_messages_acknowledged_total") >= 1
                           and value(s, "vmproto_sensor_journal_messages") == 0
                           and value(s, "vmproto_sensor_cdrs_written_total", sink="store") == 2)
    assert value(s2, "vmproto_sensor_cdrs_total") == 2
    assert value(s2, "vmproto_sensor_calls_active") == 0
    assert value(s2, "vmproto_sensor_journal_oldest_age_seconds") == 0
    c = await wait_metric(central, lambda s: value(s, "vmproto_server_store_messages_committed_total")
                          > committed_before)
    assert value(c, "vmproto_server_store_messages_acknowledged_total") >= value(
        c, "vmproto_server_store_messages_committed_total")
    assert value(c, "vmproto_server_sensor_info", sensor_id="2", address="127.0.0.1",
                 version="2026.4.0", mode="local-processing") in (0, 1)  # store may have closed meanwhile
    assert value(c, "vmproto_server_blocks_received_total", type="store") >= 1

    # /status and its rendering: one line per sensor with id, address, mode, version and last pong.
    doc = await status_doc(central)
    ids = [s["sensor_id"] for s in doc["sensors"]]
    assert ids == [2, 3]
    s3_row = doc["sensors"][1]
    assert s3_row["mode"] == "mirroring" and s3_row["version"] == "2026.4.0"
    assert s3_row["last_pong_age_s"] is not None and s3_row["last_pong_age_s"] < 30
    assert doc["handshake_failures"] == {"store/bad password": 1}
    text = render_server(doc)
    assert "sensors connected: 2" in text
    assert any(line.split()[:1] == ["3"] and "mirroring" in line and "2026.4.0" in line
               for line in text.splitlines())
    sdoc = await status_doc(local.metrics_address)
    assert sdoc["journal"]["messages"] == 0 and sdoc["central"]["service"] == "connected"
    assert sdoc["drops"] == {"decode/ipv4_truncated": 1}
    assert "drops (stage/reason): decode/ipv4_truncated=1" in render_sensor(sdoc)

    mirror_feed.release.set()
    local.stop()
    mirror.stop()
    with trio.fail_after(30):
        await done["local"].wait()
        await done["mirror"].wait()
    assert local.report.ok, local.report.problems
    # The mirroring sensor reports the packet it could not ship, as the metric did.
    assert len(mirror.report.problems) == 1 and "'no_ip': 1" in mirror.report.problems[0]
