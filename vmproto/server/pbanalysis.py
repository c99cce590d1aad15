"""Mirrored packets analysed on the central, as if sniffed there (spec §9; issue 6 "central side").

A `packetbuffer block` sensor ships raw packets; the central runs the same pipeline a local-processing sensor runs
— decode (link layers, tunnels), call analysis, per-call PCAP spool — once per sending sensor, and writes each CDR
through its own store path (the id_main 10 writer: commit, per-unit isolation, dedup), tagged with the sender's
`id_sensor`. Same pcap, mirrored or processed on the sensor: the same CDRs.

Time: the analysis clock is packet time. A sensor that goes quiet would leave its last calls open forever, so a
sweeper advances each idle sensor's clock by the wall-clock time since its last container (`advance`), which lets
the call timers (after BYE, RTP idle, ...) fire as they would on a live capture.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from vmproto.logs import log_event
from vmproto.sensor.calls import AnalyzerConfig, CallAnalyzer
from vmproto.sensor.cdr.model import CdrRecord
from vmproto.sensor.cdr.sql import store_sql
from vmproto.sensor.decode import DecodeOptions, Decoder
from vmproto.server.db.errors import DatabaseError
from vmproto.server.db.store import StoreMessage
from vmproto.server.pbspool import SensorIdentity
from vmproto.wire.pbstore import Container

__all__ = ["CentralAnalysis", "FanOut", "ID_MAIN_CDR"]

log = logging.getLogger("vmproto.server.pbanalysis")

ID_MAIN_CDR = 10
SWEEP_INTERVAL = 1.0  # s of wall clock between idle checks


@dataclass
class _Pipeline:
    sensor: SensorIdentity
    decoder: Decoder
    analyzer: CallAnalyzer
    # One container at a time per sensor (the analysis is stateful); different sensors run in parallel threads.
    lock: trio.Lock = field(default_factory=trio.Lock)
    closed: list[CdrRecord] = field(default_factory=list)
    # Spool events recorded in the analysis thread, replayed in order into the spool writer by the Trio thread:
    # (call, pkt, kind) for a packet, (call, None, "") when the call closed.
    spooled: list[tuple[Any, Any, str]] = field(default_factory=list)
    last_ts_ns: int = 0  # newest packet time seen
    last_wall: float = 0.0  # wall clock when that packet arrived
    packets: int = 0
    cdrs: int = 0


class CentralAnalysis:
    """`PacketSink` running decode + call analysis per sending sensor; CDRs go to `submit_cdr_sql`.

    `submit_cdr_sql(id_sensor, sql)` must return only when the SQL is committed (the server passes its id_main 10
    writer). `on_call_packet`, when given, receives `(sensor, call, pkt, kind)` for a central-side spool.
    """

    def __init__(self, submit: Callable[[StoreMessage], Any], *, decode_options: DecodeOptions | None = None,
                 analyzer_config: Callable[[int], AnalyzerConfig] | None = None, spool: Any = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._submit = submit
        # The central's per-call PCAP spool (vmproto.sensor.spool.SpoolWriter) when savesip/savertp ask for one.
        self.spool = spool
        self._decode_options = decode_options or DecodeOptions()
        self._analyzer_config = analyzer_config or (lambda id_sensor: AnalyzerConfig(id_sensor=id_sensor))
        self._clock = clock
        self._pipelines: dict[str, _Pipeline] = {}
        self.packets = 0
        self.cdrs_written = 0
        self.cdrs_failed = 0

    def _pipeline(self, sensor: SensorIdentity) -> _Pipeline:
        pipe = self._pipelines.get(sensor.label)
        if pipe is None:
            id_sensor = sensor.sensor_id if sensor.sensor_id > 0 else -1
            holder: list[_Pipeline] = []

            spooling = self.spool is not None

            def closed(call: Any, cdr: CdrRecord) -> None:
                holder[0].closed.append(cdr)
                if spooling:
                    holder[0].spooled.append((call, None, ""))

            def packet_hook(call: Any, pkt: Any, kind: str) -> None:
                holder[0].spooled.append((call, pkt, kind))

            analyzer = CallAnalyzer(self._analyzer_config(id_sensor),
                                    on_call_packet=packet_hook if spooling else None, on_call_closed=closed)
            pipe = _Pipeline(sensor, Decoder(self._decode_options), analyzer)
            holder.append(pipe)
            self._pipelines[sensor.label] = pipe
            log_event(log, logging.INFO, "central analysis started", sensor=sensor.label, name=sensor.sensor_name)
        return pipe

    async def accept(self, sensor: SensorIdentity, container: Container) -> int:
        """Decode and analyse every packet of `container`; commit the CDRs of calls it closed.

        The CPU work runs in a worker thread: a large container must not stall the event loop that answers every
        other sensor's pings and handshakes (a packetbuffer handshake has a 2 s time check, spec §6)."""
        pipe = self._pipeline(sensor)
        async with pipe.lock:
            count = await trio.to_thread.run_sync(self._analyse, pipe, container)
            pipe.last_wall = self._clock()
            pipe.packets += count
            self.packets += count
            await self._write(pipe)
        return count

    @staticmethod
    def _analyse(pipe: _Pipeline, container: Container) -> int:
        default_dlink = container.header.dlink
        batches: dict[int, tuple[list[int], list[bytes]]] = {}
        for ts, us, _caplen, _length, _encaps, _ipoff, dlink, _vlan, _flags, data in container.iter_packets():
            ts_list, frames = batches.setdefault(dlink or default_dlink, ([], []))
            ts_list.append(ts * 1_000_000_000 + us * 1000)
            frames.append(bytes(data))
        count = 0
        feed = pipe.analyzer.feed
        for linktype, (ts_list, frames) in batches.items():
            count += len(frames)
            for rec in pipe.decoder.decode_batch(linktype, ts_list, frames):
                feed(rec)
            if ts_list:
                pipe.last_ts_ns = max(pipe.last_ts_ns, max(ts_list))
        return count

    def per_sensor(self) -> dict[str, tuple[int, int, int]]:
        """For metrics: sensor label -> (packets analysed, calls open now, CDRs committed)."""
        return {label: (p.packets, p.analyzer.open_calls, p.cdrs) for label, p in self._pipelines.items()}

    async def _write(self, pipe: _Pipeline) -> None:
        if pipe.spooled:
            events, pipe.spooled = pipe.spooled, []
            for call, pkt, kind in events:
                if pkt is None:
                    self.spool.on_call_closed(call)
                else:
                    self.spool.on_packet(call, pkt, kind)
            await self.spool.maybe_flush()
        while pipe.closed:
            cdr = pipe.closed.pop(0)
            message = StoreMessage(id_sensor=_scope(pipe.sensor), id_main=ID_MAIN_CDR,
                                   queries=(store_sql(cdr).encode("utf-8"),))
            try:
                await self._submit(message)
            except DatabaseError as exc:
                # The packets are gone (the sensor was acknowledged); the CDR cannot be rebuilt. Count and log
                # loudly rather than block every sensor behind a broken database row.
                self.cdrs_failed += 1
                log_event(log, logging.ERROR, "central cdr not stored", sensor=pipe.sensor.label, error=str(exc))
                continue
            pipe.cdrs += 1
            self.cdrs_written += 1

    async def sweep(self, idle_after: float = 5.0) -> None:
        """Advance the packet clock of every sensor idle for `idle_after` s of wall clock, so timers fire."""
        for pipe in list(self._pipelines.values()):
            async with pipe.lock:
                now = self._clock()
                if pipe.last_ts_ns and now - pipe.last_wall >= idle_after and pipe.analyzer.open_calls:
                    pipe.analyzer.advance(pipe.last_ts_ns + int((now - pipe.last_wall) * 1e9))
                    await self._write(pipe)

    async def run_sweeper(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await trio.sleep(SWEEP_INTERVAL)
            await self.sweep()

    async def aclose(self) -> None:
        """At shutdown: close every open call as a forced stop (bye 110, as the reference at stop) and commit."""
        for pipe in list(self._pipelines.values()):
            async with pipe.lock:
                pipe.analyzer.terminate()
                with trio.CancelScope(shield=True):
                    await self._write(pipe)
        if self.spool is not None:
            with trio.CancelScope(shield=True):
                await self.spool.aclose()


def _scope(sensor: SensorIdentity) -> int:
    # The store path records a dedup digest per message; for CDRs the central builds itself there are no resends,
    # so any stable scope works. The sender's id keeps the records attributable.
    return sensor.sensor_id


class FanOut:
    """A `PacketSink` handing each container to several sinks (analysis and a raw spool); with none, packets are
    counted and dropped (a central configured to neither analyse nor keep mirrored packets)."""

    def __init__(self, sinks: list[Any]) -> None:
        self.sinks = list(sinks)
        self.dropped = 0

    async def accept(self, sensor: SensorIdentity, container: Container) -> int:
        if not self.sinks:
            self.dropped += len(container)
            return len(container)
        taken = 0
        for sink in self.sinks:
            taken = max(taken, await sink.accept(sensor, container))
        return taken

    async def aclose(self) -> None:
        for sink in self.sinks:
            await sink.aclose()
