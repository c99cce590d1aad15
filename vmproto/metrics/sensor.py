"""What a sensor exports: the Prometheus families (`SensorCollector`) and the `/status` document
(`sensor_status`). Both read the running `SensorApp` at request time.

Sources: `RunReport` (packets, records, CDRs), the decoder's `DecodeStats`, the call analyzer, the spool writer's
`SpoolStats`, each CDR sink's `SinkSummary`, libpcap's `pcap_stats` per interface (live capture only), and in
client mode the `RemoteClient` parts: service session, connector, `StoreStats` + `Journal`, `MirrorStats`.

Every packet the sensor does not use appears in `vmproto_sensor_packets_dropped_total{stage, reason}`:

* `kernel` / `buffer`, `interface`: pcap_stats ps_drop and ps_ifdrop (the capture ring overflowed, the NIC);
* `decode` / `<error kind>`: frames that could not be decoded (malformed or truncated headers, by layer);
* `analysis` / `bad_packet`: decoded packets the call analysis could not use;
* `mirror` / `no_ip`, `too_big`, `buffer_full`, `disk_full`, `disk_error`, `rejected`: packets a mirroring
  sensor did not deliver to its central.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import Metric

from vmproto import __version__
from vmproto.metrics.families import counter, gauge

if TYPE_CHECKING:
    from vmproto.sensor.app import SensorApp

__all__ = ["SensorCollector", "sensor_status", "drops", "sink_name"]

P = "vmproto_sensor_"


def sink_name(sink: object) -> str:
    """The `sink` label of a CDR sink: `classic` (own database), `store` (central's store channel) or the class
    name of anything else."""
    name = type(sink).__name__
    return {"ClassicCdrSink": "classic", "StoreCdrSink": "store"}.get(name, name)


def kernel_stats(app: SensorApp) -> dict[str, tuple[int, int, int]]:
    """(received, dropped, if_dropped) per live interface; empty for file replay or once capture is closed."""
    live = getattr(app, "live", None)
    out: dict[str, tuple[int, int, int]] = {}
    if live is None:
        return out
    for name, handle in list(live.handles.items()):
        try:
            st = handle.stats()
        except Exception:  # noqa: BLE001 - CaptureError or a closed handle at shutdown: no sample this time
            continue
        out[name] = (st.received, st.dropped, st.if_dropped)
    return out


def drops(app: SensorApp) -> dict[tuple[str, str], int]:
    """Packets not used, by (stage, reason): see the module docstring. Only non-zero entries plus the kernel's."""
    out: dict[tuple[str, str], int] = {}
    for _rx, drop, ifdrop in kernel_stats(app).values():
        out[("kernel", "buffer")] = out.get(("kernel", "buffer"), 0) + drop
        out[("kernel", "interface")] = out.get(("kernel", "interface"), 0) + ifdrop
    for kind, n in app.decoder.stats.prefix("error").items():
        out[("decode", kind)] = n
    bad = int(getattr(app.analyzer, "bad_packets", 0))
    if bad:
        out[("analysis", "bad_packet")] = bad
    remote = app.remote
    if remote is not None and remote.mirror is not None:
        for reason, n in remote.mirror.stats.dropped.items():
            out[("mirror", reason)] = n
    return out


class SensorCollector:
    """prometheus_client collector over one `SensorApp`; register it in a CollectorRegistry(auto_describe=False)."""

    def __init__(self, app: SensorApp) -> None:
        self.app = app
        self.started_at = time.time()

    def collect(self) -> Iterator[Metric]:
        app = self.app
        r = app.report
        yield gauge(P + "info", "Constant 1; labels: vmproto version, operating mode.", ["version", "mode"],
                    {(__version__, sensor_mode(app)): 1})
        yield gauge(P + "start_time_seconds", "UNIX time the sensor started.", (), self.started_at)

        # capture and decode
        yield counter(P + "packets_captured_total", "Frames taken from capture (live or file) into the pipeline.",
                      (), r.packets)
        k = kernel_stats(app)
        yield counter(P + "kernel_packets_received_total", "pcap_stats ps_recv per interface (live capture).",
                      ["interface"], {(n,): v[0] for n, v in k.items()})
        yield counter(P + "kernel_packets_dropped_total", "pcap_stats drops per interface: reason `buffer` "
                      "(ps_drop, ring full) or `interface` (ps_ifdrop).", ["interface", "reason"],
                      {**{(n, "buffer"): v[1] for n, v in k.items()},
                       **{(n, "interface"): v[2] for n, v in k.items()}})
        yield counter(P + "packets_dropped_total", "Packets not used, by stage and reason (kernel, decode, "
                      "analysis, mirror).", ["stage", "reason"], drops(app))
        st = app.decoder.stats
        yield counter(P + "decode_frames_total", "Frames handed to the decoder.", (), st.get("frames"))
        yield counter(P + "decode_records_total", "Decoded packets handed to call analysis.", (), st.get("records"))
        events = {(name,): v for name, v in st.as_dict().items()
                  if name not in ("frames", "records") and not name.startswith("error.")}
        yield counter(P + "decode_events_total", "Decoder events other than errors: tunnel.*, skip.*, frag.*, "
                      "dedup.*, stream.*, truncated (see vmproto/sensor/decode/stats.py).", ["event"], events)

        # calls and CDRs
        yield gauge(P + "calls_active", "Calls open in the call analysis.", (), app.analyzer.open_calls)
        yield counter(P + "cdrs_total", "CDRs produced by call analysis (calls closed).", (), r.cdrs)
        submitted, committed, duplicate, failed = {}, {}, {}, {}
        for sink in app.sinks:
            name = (sink_name(sink),)
            s = sink.summary
            submitted[name], committed[name] = s.submitted, s.committed
            duplicate[name], failed[name] = s.duplicates, len(s.failed)
        yield counter(P + "cdrs_submitted_total", "CDRs handed to a sink.", ["sink"], submitted)
        yield counter(P + "cdrs_written_total", "CDRs durably written by a sink (classic: committed in the "
                      "database; store: counted when the sink drains at stop, live progress is "
                      "vmproto_sensor_store_messages_acknowledged_total).", ["sink"], committed)
        yield counter(P + "cdrs_duplicate_total", "CDRs the database already held.", ["sink"], duplicate)
        yield counter(P + "cdrs_failed_total", "CDRs that could not be stored.", ["sink"], failed)

        # spool
        sp = app.spool.stats
        yield counter(P + "spool_packets_total", "Packets written to per-call PCAP files.", (), sp.packets)
        yield counter(P + "spool_bytes_total", "Bytes written to per-call PCAP files.", (), sp.bytes)
        yield counter(P + "spool_files_closed_total", "Per-call PCAP files completed.", (), sp.files_closed)
        yield counter(P + "spool_write_errors_total", "Spool write errors (per-call captures incomplete).", (),
                      sp.write_errors)

        remote = app.remote
        if remote is None:
            return
        yield from _client_families(remote)


def _client_families(remote: Any) -> Iterator[Metric]:
    svc, session, conn = remote.service, remote.session, remote.connector
    yield gauge(P + "channel_connected", "1 while the service connection to the central is up (spec §7).",
                ["channel"], {("service",): 1 if session.service_keys is not None else 0})
    yield counter(P + "service_handshakes_total", "Successful service handshakes (first connect and restores).",
                  (), svc.handshakes)
    refusals: dict[tuple[str, ...], float] = {}
    for text in svc.refusals:
        refusals[(text,)] = refusals.get((text,), 0) + 1
    yield counter(P + "service_refusals_total", "Service handshakes the central refused, by its reply.",
                  ["reason"], refusals)
    yield counter(P + "service_pings_total", "Pings received from the central.", (), svc.pings)
    yield counter(P + "connects_total", "TCP connections opened to the central (all channels).", (), conn.connects)
    yield counter(P + "connect_failures_total", "Connection attempts that failed (all destinations tried).", (),
                  conn.connect_failures)
    sink = remote.store_sink
    if sink is not None:
        store = sink.store
        s = store.stats
        yield counter(P + "store_units_submitted_total", "SQL units queued for the store channel.", (),
                      s.units_submitted)
        yield counter(P + "store_messages_sent_total", "Store messages written to the central (resends "
                      "included).", (), s.messages_sent)
        yield counter(P + "store_messages_acknowledged_total", "Store messages the central answered OK "
                      "(committed there; they leave the journal).", (), s.messages_acked)
        yield counter(P + "store_queue_full_replies_total", "Queue-full replies from the central.", (),
                      s.queue_full_replies)
        yield counter(P + "store_error_replies_total", "Other error replies from the central.", (), s.error_replies)
        yield counter(P + "store_dead_letters_total", "Messages set aside after repeated permanent errors.", (),
                      s.dead_letters)
        yield counter(P + "store_connections_total", "Store connections opened.", (), s.connections)
        yield gauge(P + "store_unacked", "SQL units and messages not yet acknowledged (memory + journal).", (),
                    store.unacked)
        j = store.journal
        oldest = j.oldest_created if j.is_open else None
        yield gauge(P + "journal_messages", "Messages in the durable journal waiting for OK.", (), len(j))
        yield gauge(P + "journal_bytes", "Bytes of the journal's segment files.", (), j.disk_bytes)
        yield gauge(P + "journal_oldest_age_seconds", "Age of the oldest unacknowledged message (0 when empty).",
                    (), max(0.0, time.time() - oldest) if oldest is not None else 0.0)
        yield counter(P + "journal_appended_total", "Messages appended to the journal.", (), j.appended)
        yield counter(P + "journal_acknowledged_total", "Journal messages released by an OK.", (), j.acked)
    mirror = remote.mirror
    if mirror is not None:
        m = mirror.stats
        yield counter(P + "mirror_packets_total", "Packets in the mirroring path, by step.", ["step"],
                      {("taken",): m.packets_in, ("queued",): m.packets_queued, ("sent",): m.packets_sent})
        yield counter(P + "mirror_bytes_total", "Captured bytes taken for mirroring.", (), m.bytes_in)
        yield counter(P + "mirror_blocks_total", "pcap_block_store containers, by step.", ["step"],
                      {("built",): m.blocks_built, ("sent",): m.blocks_sent, ("confirmed",): m.blocks_confirmed,
                       ("resent",): m.blocks_resent, ("spooled",): m.blocks_spooled})
        yield counter(P + "mirror_connections_total", "packetbuffer block connections opened.", (), m.connections)
        yield gauge(P + "mirror_buffer_fill_ratio", "Memory buffer fill, 0..1.", (), mirror.fill)
        yield gauge(P + "mirror_queued_blocks", "Containers waiting to be sent or confirmed.", (),
                    mirror.queued_blocks)


def sensor_mode(app: SensorApp) -> str:
    """`mirroring`, `local-processing` (client with a store sink), `classic` (own database) or `capture-only`."""
    remote = app.remote
    if remote is not None:
        return "mirroring" if remote.mirror is not None else "local-processing"
    if any(sink_name(s) == "classic" for s in app.sinks):
        return "classic"
    return "capture-only"


def sensor_status(app: SensorApp, started_at: float) -> dict[str, Any]:
    """The `/status` document of a sensor: JSON-friendly, what `python -m vmproto.sensor status` shows."""
    now = time.time()
    r = app.report
    cfg = app.cfg
    doc: dict[str, Any] = {
        "role": "sensor", "version": __version__, "pid": os.getpid(), "now": now,
        "uptime_s": round(now - started_at, 1), "mode": sensor_mode(app),
        "id_sensor": int(cfg.get("id_sensor", -1)), "name_sensor": str(cfg.get("name_sensor", "") or ""),
        "capture": "file" if app.replay is not None else ("source" if app.source is not None
                                                          else ",".join(cfg.get("interface", ()) or ("any",))),
        "packets": r.packets, "records": r.records, "calls_active": app.analyzer.open_calls, "cdrs": r.cdrs,
        "kernel": {n: {"received": v[0], "dropped": v[1], "if_dropped": v[2]} for n, v in kernel_stats(app).items()},
        "drops": {f"{stage}/{reason}": n for (stage, reason), n in sorted(drops(app).items())},
        "sinks": {sink_name(s): {"submitted": s.summary.submitted, "written": s.summary.committed,
                                 "duplicates": s.summary.duplicates, "failed": len(s.summary.failed)}
                  for s in app.sinks},
        "spool": {"packets": app.spool.stats.packets, "write_errors": app.spool.stats.write_errors},
    }
    remote = app.remote
    if remote is not None:
        session, svc = remote.session, remote.service
        central: dict[str, Any] = {
            "destinations": list(remote.connector.destinations), "port": remote.connector.port,
            "service": "connected" if session.service_keys is not None else "disconnected",
            "host": session.service_host, "handshakes": svc.handshakes, "pings": svc.pings,
            "last_error": svc.last_error,
        }
        doc["central"] = central
        if remote.store_sink is not None:
            store = remote.store_sink.store
            j = store.journal
            oldest = j.oldest_created if j.is_open else None
            doc["journal"] = {"messages": len(j), "bytes": j.disk_bytes,
                              "oldest_age_s": round(now - oldest, 1) if oldest is not None else 0.0,
                              "unacked": store.unacked, "acknowledged": store.stats.messages_acked,
                              "queue_full_replies": store.stats.queue_full_replies}
        if remote.mirror is not None:
            m = remote.mirror
            doc["mirror"] = {"blocks_confirmed": m.stats.blocks_confirmed, "queued_blocks": m.queued_blocks,
                             "buffer_fill": round(m.fill, 4), "packets_sent": m.stats.packets_sent}
    return doc



