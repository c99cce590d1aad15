"""The sensor process: capture → decode → call analysis → spool + CDR sinks, and the manager port.

Everything runs in one Trio nursery:

* capture: a live interface (`interface`), or a capture file (`-r`) replayed as fast as the pipeline takes it;
  batches go through a bounded channel, so a slow consumer slows the reader instead of growing memory;
* pipeline: decodes each batch, feeds the call analysis, whose hooks queue per-call packets for the spool
  writer and collect finished CDRs, which go to every CDR sink;
* spool writer, spool cleaner, CDR sinks (classic MariaDB writer now; the C/S store client later, through
  the same `CdrSink` interface), manager port.

End of a `-r` file: every open call is closed as at the end of the reference's replay (`finish`), the
spool is flushed and every CDR committed; the exit status says whether all of that succeeded. SIGTERM /
SIGINT: capture stops, open calls are closed as a forced stop (`terminate`, bye = 110, as the reference
does when it is stopped), then the same flush and commit; exit 0 when everything was written.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import trio

from vmproto.keylog import KeyLog
from vmproto.logs import log_event
from vmproto.metrics import MetricsStartError, SensorCollector, sensor_status, start_endpoint
from vmproto.metrics.sensor import sensor_mode
from vmproto.sensor.calls import AnalyzerConfig, CallAnalyzer
from vmproto.sensor.calls.errors import AnalyzerConfigError
from vmproto.sensor.capture import CaptureError, CaptureOptions
from vmproto.sensor.capture.batch import PacketBatch
from vmproto.sensor.capture.live import LiveCapture
from vmproto.sensor.capture.options import Replay
from vmproto.sensor.capture.replay import replay_file
from vmproto.sensor.cdr.model import CdrRecord
from vmproto.sensor.classic import ClassicCdrSink, SinkSummary, classic_mode, connect_params, load_manager_key
from vmproto.sensor.decode import DecodeOptions, Decoder
from vmproto.sensor.listeners import Listeners
from vmproto.sensor.manager import CommandContext, ManagerServer
from vmproto.sensor.remote import RemoteClient, RemoteSetupError, client_mode
from vmproto.sensor.spool import SpoolCleaner, SpoolIndex, SpoolOptionError, SpoolOptions, SpoolWriter
from vmproto.wire.crypto import ManagerAesKey

__all__ = ["CdrSink", "RunReport", "SensorApp", "SensorSetupError"]

log = logging.getLogger("vmproto.sensor")

LINKTYPE_RAW = 101  # listener records are IP packets


class SensorSetupError(Exception):
    """The sensor cannot start with this configuration (the message says which option and why)."""


class CdrSink(Protocol):
    """Where finished CDRs go. Implementations: `ClassicCdrSink` (MariaDB); the C/S store client.

    `run` is started with `nursery.start`: it may fail before `task_status.started()` (e.g. the database
    is unreachable) and then the sensor does not start. `submit` may wait (back-pressure). `aclose`
    returns once every submitted CDR is durable or counted as failed in `summary`.
    """

    summary: SinkSummary

    async def run(self, *, task_status: trio.TaskStatus[None] = ...) -> None: ...

    async def submit(self, cdr: CdrRecord) -> None: ...

    async def aclose(self) -> None: ...


@dataclass(slots=True)
class RunReport:
    """The outcome of a run; `problems` lists what was not done (empty → exit status 0)."""

    packets: int = 0
    records: int = 0
    cdrs: int = 0
    stopped_by_signal: str = ""
    capture_error: str = ""
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def decode_options(cfg: Any) -> DecodeOptions:
    """Decoder options from the configuration (tunnel ports, HEP, IPFIX, AudioCodes, dedup)."""
    return DecodeOptions(
        udp_port_l2tp=int(cfg.get("udp_port_l2tp", 1701)), udp_port_tzsp=int(cfg.get("udp_port_tzsp", 37008)),
        udp_port_vxlan=int(cfg.get("udp_port_vxlan", 4789)), audiocodes=bool(cfg.get("audiocodes", False)),
        udp_port_audiocodes=int(cfg.get("udp_port_audiocodes", 925)),
        tcp_port_audiocodes=int(cfg.get("tcp_port_audiocodes", 0)), hep=bool(cfg.get("hep", False)),
        hep_bind_port=int(cfg.get("hep_bind_port", 9060)), ipfix=bool(cfg.get("ipfix", False)),
        ipfix_bind_port=int(cfg.get("ipfix_bind_port", 4739)), deduplicate=bool(cfg.get("deduplicate", False)),
    )


# Analysis options that carry the reference's names (AnalyzerConfig fields of the same name).
_ANALYZER_OPTIONS = ("rtptimeout", "sipwithoutrtptimeout", "absolute_timeout", "bye_timeout", "bye_confirmed_timeout",
                     "response_default_timeout", "redirect_response_300_timeout", "quick_save_cdr",
                     "ignore_rtp_after_bye_confirmed", "ignore_rtp_after_auth_failed",
                     "ignore_duration_after_bye_confirmed", "cleanup_calls_period")


def analyzer_config(cfg: Any) -> AnalyzerConfig:
    """Call-analysis options from the configuration (`sipport`, `ipv6`, `id_sensor`, the call timers).
    Raises SensorSetupError naming an option with an unusable value."""
    id_sensor = int(cfg.get("id_sensor", -1))
    timers = {name: cfg.get(name) for name in _ANALYZER_OPTIONS if cfg.get(name) is not None}
    try:
        return AnalyzerConfig(sip_ports=frozenset(cfg.get("sipport", (5060,))), ipv6=bool(cfg.get("ipv6", False)),
                              id_sensor=id_sensor if id_sensor >= 0 else None, **timers)
    except AnalyzerConfigError as exc:
        raise SensorSetupError(str(exc)) from None


def manager_key_from_config(cfg: Any) -> ManagerAesKey | None:
    """`manager_aes_key` / `manager_aes_iv` (base64), None when unset. Raises SensorSetupError when only one
    is set or they are not valid base64 / too short."""
    key, iv = cfg.get("manager_aes_key", ""), cfg.get("manager_aes_iv", "")
    if not key and not iv:
        return None
    if not key or not iv:
        raise SensorSetupError("manager_aes_key and manager_aes_iv must be set together")
    try:
        return ManagerAesKey.from_base64(key, iv)
    except Exception as exc:  # noqa: BLE001 - LocalProtocolError: the message says what is wrong
        raise SensorSetupError(f"manager_aes_key/manager_aes_iv: {exc}") from None


class SensorApp:
    """One sensor process. `await app.run()` returns a RunReport; `problems` empty means success.

    `replay`: a capture file to process instead of live capture. `sinks`: CDR sinks to use instead of
    the ones the configuration implies (tests, embedding). `stall_timeout`: at the end, how long a sink
    may go without committing anything before the sensor stops waiting for it. `source`: an async
    function sending PacketBatch objects, used instead of live capture or `replay` (embedding, tests).
    """

    def __init__(self, cfg: Any, *, replay: Path | None = None, sinks: list[CdrSink] | None = None,
                 on_started: Callable[[SensorApp], None] | None = None, keylog: KeyLog | None = None,
                 stall_timeout: float = 60.0, stay: bool = False, replay_mode: Replay = Replay.FAST,
                 source: Callable[[trio.MemorySendChannel[PacketBatch]], Awaitable[None]] | None = None) -> None:
        self.cfg = cfg
        self.source = source
        # After a replay: keep the service (and manager port) up until a signal, e.g. to serve PCAP fetches.
        self.stay = stay
        self.replay_mode = replay_mode
        self.stall_timeout = stall_timeout
        self.replay = replay
        # Handed to the C/S client connections (none in classic mode).
        self.keylog = keylog
        self.on_started = on_started
        self.report = RunReport()
        self.spool_options = _spool_options(cfg)
        self.index = SpoolIndex()
        self.spool = SpoolWriter(self.spool_options, self.index)
        self.decoder = Decoder(decode_options(cfg))
        self.analyzer = CallAnalyzer(analyzer_config(cfg), on_call_packet=self._on_call_packet,
                                     on_call_closed=self._on_call_closed)
        self._spool_on = self.spool_options.enabled
        self._closed: list[CdrRecord] = []
        self.manager_ctx = CommandContext(layout=self.spool.layout)
        self.remote: RemoteClient | None = None
        if client_mode(cfg):
            try:
                self.remote = RemoteClient(cfg, manager_ctx=self.manager_ctx, spooldir=self.spool_options.spooldirs[0],
                                           replaying=replay is not None or source is not None)
            except RemoteSetupError as exc:
                raise SensorSetupError(str(exc)) from None
        self.sinks: list[CdrSink] = list(sinks) if sinks is not None else self._default_sinks()
        self.manager_key = manager_key_from_config(cfg)
        self._db_manager_key: ManagerAesKey | None = None
        self.manager_addrs: list[tuple[str, int]] = []
        self.live: LiveCapture | None = None  # the open live capture (kernel drop counters for metrics)
        self.metrics_address: tuple[str, int] | None = None  # prometheus_bind, once bound
        self._capture_scope = trio.CancelScope()
        self._stay_scope: trio.CancelScope | None = None
        self._listen_scope = trio.CancelScope()
        self.listeners = Listeners(cfg)
        self._stop_signal = ""

    def _default_sinks(self) -> list[CdrSink]:
        # A client sensor stores through the central even when mysqlhost is also set, as the reference does.
        if self.remote is not None:
            return list(self.remote.sinks)
        if not classic_mode(self.cfg):
            return []
        id_sensor = int(self.cfg.get("id_sensor", -1))
        return [ClassicCdrSink(connect_params(self.cfg), id_sensor=id_sensor,
                               partitioned=bool(self.cfg.get("cdr_partition", True)))]

    # ---- analysis hooks (synchronous, hot path) -------------------------------------------------------------

    def _on_call_packet(self, call: Any, pkt: Any, kind: str) -> None:
        if self._spool_on:
            self.spool.on_packet(call, pkt, kind)

    def _on_call_closed(self, call: Any, cdr: CdrRecord) -> None:
        if self._spool_on:
            self.spool.on_call_closed(call)
        self._closed.append(cdr)

    # ---- run ------------------------------------------------------------------------------------------------

    async def run(self) -> RunReport:
        """Run until the capture file ends or a signal stops the sensor. Raises DatabaseError / OSError /
        SensorSetupError when a service cannot start."""
        live: LiveCapture | None = None
        if self.replay is None and self.source is None and self._wants_live_capture():
            live = self.live = self._open_live()
        try:
            async with trio.open_nursery() as nursery:
                opts = self.spool_options
                cleaner = SpoolCleaner(opts.spooldirs, self.index, opts.limits, interval=opts.cleanspool_interval,
                                       busy_units=self.spool.busy_units)
                if opts.cleanspool:
                    await nursery.start(cleaner.run)
                await nursery.start(self.spool.run)
                if self.remote is not None:
                    await nursery.start(self.remote.run)
                for sink in self.sinks:
                    await nursery.start(sink.run)
                await self._start_manager(nursery)
                await self._start_metrics(nursery)
                log_event(log, logging.INFO, "sensor started", mode=sensor_mode(self),
                          capture=str(self.replay) if self.replay is not None else
                          ",".join(self.cfg.get("interface", ()) or ("any",)),
                          manager=",".join(f"{h}:{p}" for h, p in self.manager_addrs) or "off",
                          metrics="{}:{}".format(*self.metrics_address) if self.metrics_address else "off")
                nursery.start_soon(self._signals)
                send, receive = trio.open_memory_channel[Any](8)
                if self.replay is None and self.source is None and self.listeners.enabled:
                    # HEP / IPFIX exporters push their packets to us (live mode only; a replay is its own input).
                    nursery.start_soon(self._listen, send.clone())
                nursery.start_soon(self._capture, send, live)
                if self.on_started is not None:
                    self.on_started(self)
                await self._pipeline(receive)
                await self._finish()
                if self.stay and not self._stop_signal:
                    log_event(log, logging.INFO, "replay done, staying connected until a signal")
                    await self._stay_until_stopped()
                if self.remote is not None:
                    with trio.CancelScope(shield=True):
                        await self.remote.stop()
                nursery.cancel_scope.cancel()
        finally:
            if live is not None:
                live.close()
        self._summarise()
        return self.report

    async def _stay_until_stopped(self) -> None:
        self._stay_scope = trio.CancelScope()
        with self._stay_scope:
            await trio.sleep_forever()

    async def _mirror_room(self) -> None:
        # Below 30 % the reference's live back-pressure rules (no confirmation, no time) never start (spec §9.10).
        assert self.remote is not None and self.remote.mirror is not None
        mirror = self.remote.mirror
        while mirror.fill > 0.25:
            await trio.sleep(0.002)

    def _wants_live_capture(self) -> bool:
        """Capture from an interface unless only listeners were asked for (`interface` unset or `--`)."""
        interfaces = tuple(self.cfg.get("interface", ()) or ())
        if interfaces == ("--",):
            return False
        return bool(interfaces) or not self.listeners.enabled

    async def _listen(self, send: trio.MemorySendChannel[Any]) -> None:
        with self._listen_scope:
            try:
                await self.listeners.run(send)
            except OSError as exc:
                self.report.capture_error = f"listener: {exc.strerror or exc}"
                log_event(log, logging.ERROR, "listener failed", error=str(exc))

    def stop(self, reason: str = "stop") -> None:
        """Stop capturing; open calls are then closed as a forced stop and everything is flushed."""
        self._stop_signal = reason
        self._capture_scope.cancel()
        self._listen_scope.cancel()
        if self._stay_scope is not None:
            self._stay_scope.cancel()

    def _open_live(self) -> LiveCapture:
        interfaces = self.cfg.get("interface", ()) or ("any",)
        try:
            options = CaptureOptions(interface=",".join(interfaces), promisc=bool(self.cfg.get("promisc", True)),
                                     filter=str(self.cfg.get("filter", "")),
                                     snaplen=int(self.cfg.get("snaplen", 0)) or 3200)
            live = LiveCapture(options)
            live.open()
        except CaptureError as exc:
            raise SensorSetupError(f"cannot capture on {','.join(interfaces)}: {exc}") from None
        return live

    async def _start_manager(self, nursery: trio.Nursery) -> None:
        port = int(self.cfg.get("managerport", 5029))
        if port <= 0:
            return
        server = ManagerServer(self.manager_ctx, key_source=lambda: self.manager_key or self._db_manager_key,
                               enable_unencrypted=bool(self.cfg.get("manager_enable_unencrypted", False)))
        if self.manager_key is None:
            for sink in self.sinks:
                if isinstance(sink, ClassicCdrSink):
                    self._db_manager_key = await load_manager_key(sink.pool)
        self.manager_addrs = await nursery.start(server.serve, str(self.cfg.get("managerip", "127.0.0.1")), port)

    async def _start_metrics(self, nursery: trio.Nursery) -> None:
        # issue 9: /metrics and /status (prometheus_bind, off by default)
        collector = SensorCollector(self)
        try:
            self.metrics_address = await start_endpoint(nursery, self.cfg.get("prometheus_bind", ""), collector,
                                                        lambda: sensor_status(self, collector.started_at))
        except MetricsStartError as exc:
            raise SensorSetupError(str(exc)) from None

    async def _signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                name = signal.Signals(signum).name
                log_event(log, logging.INFO, "stopping", signal=name)
                self.stop(name)
                return

    async def _capture(self, send: trio.MemorySendChannel[PacketBatch], live: LiveCapture | None) -> None:
        async with send:
            with self._capture_scope:
                try:
                    if self.source is not None:
                        await self.source(send)
                    elif self.replay is not None:
                        n = await replay_file(self.replay, send, self.replay_mode)
                        log_event(log, logging.INFO, "capture file read", file=str(self.replay), packets=n)
                    elif live is None:  # listeners only: nothing to capture, wait for the stop
                        await trio.sleep_forever()
                    else:
                        raw_send, raw_receive = trio.open_memory_channel[tuple[str, PacketBatch]](8)
                        async with trio.open_nursery() as nursery:
                            nursery.start_soon(live.run, raw_send)
                            async for _name, batch in raw_receive:
                                await send.send(batch)
                except (CaptureError, OSError) as exc:
                    self.report.capture_error = str(exc)
                    log_event(log, logging.ERROR, "capture failed", error=str(exc))

    async def _pipeline(self, receive: trio.MemoryReceiveChannel[PacketBatch]) -> None:
        decode = self.decoder.decode_batch
        feed = self.analyzer.feed
        report = self.report
        # A file replay waits for the mirror buffer instead of dropping: nothing is lost by reading slower.
        replaying = self.replay is not None or self.source is not None
        # A mirroring sensor ships raw packets and leaves the analysis to the central (spec §9).
        mirror = self.remote.add_batch if self.remote is not None and self.remote.mirror is not None else None
        tick = self.spool.max_delay
        async with receive:
            while True:
                batch = None
                # Wake up now and then without traffic, so spooled packets reach the disk in time.
                with trio.move_on_after(tick):
                    try:
                        batch = await receive.receive()
                    except trio.EndOfChannel:
                        break
                if isinstance(batch, list):  # records from the HEP / IPFIX listeners: already decoded
                    report.records += len(batch)
                    if mirror is not None:
                        mirror(PacketBatch(LINKTYPE_RAW, [r.ts_ns for r in batch], [r.ip_packet for r in batch],
                                           [len(r.ip_packet) for r in batch]))
                    else:
                        for pkt in batch:
                            feed(pkt)
                elif batch is not None and mirror is not None:
                    if replaying:
                        await self._mirror_room()
                    mirror(batch)
                    report.packets += len(batch.frames)
                elif batch is not None:
                    records = decode(batch.linktype, batch.ts_ns, batch.frames)
                    report.packets += len(batch.frames)
                    report.records += len(records)
                    for pkt in records:
                        feed(pkt)
                await self._hand_over()

    async def _hand_over(self) -> None:
        if self._closed:
            closed, self._closed = self._closed, []
            self.report.cdrs += len(closed)
            for cdr in closed:
                for sink in self.sinks:
                    await sink.submit(cdr)
        await self.spool.maybe_flush()

    async def _finish(self) -> None:
        # Shielded: a second signal must not cut the flush and commit short.
        with trio.CancelScope(shield=True):
            if self._stop_signal:
                self.analyzer.terminate()
                self.report.stopped_by_signal = self._stop_signal
            else:
                self.analyzer.finish()
            await self._hand_over()
            await self.spool.aclose()
            for sink in self.sinks:
                await self._drain_sink(sink)
            if self.remote is not None:
                self.report.problems.extend(await self.remote.drain(self.stall_timeout))

    async def _drain_sink(self, sink: CdrSink) -> None:
        # Wait while the sink makes progress; give up after `stall_timeout` seconds without any (e.g. the
        # database is gone), so a stop never hangs. What was not committed is reported by _summarise.
        last = -1
        while True:
            with trio.move_on_after(self.stall_timeout) as scope:
                await sink.aclose()
            if not scope.cancelled_caught:
                return
            s = sink.summary
            progress = s.committed + s.duplicates + len(s.failed)
            if progress == last:
                log_event(log, logging.ERROR, "cdr sink stalled, giving up", outstanding=s.outstanding,
                          stall_s=self.stall_timeout)
                return
            last = progress

    def _summarise(self) -> None:
        r = self.report
        if r.capture_error:
            r.problems.append(f"capture failed: {r.capture_error}")
        st = self.spool.stats
        if st.write_errors:
            r.problems.append(f"spool: {st.write_errors} write errors; per-call captures are incomplete")
        for sink in self.sinks:
            s = sink.summary
            if s.failed:
                r.problems.append(f"{len(s.failed)} of {s.submitted} CDRs not stored: " + "; ".join(s.failed[:5]))
            if s.outstanding:
                r.problems.append(f"{s.outstanding} of {s.submitted} CDRs not committed")
        committed = sum(s.summary.committed + s.summary.duplicates for s in self.sinks)
        log_event(log, logging.INFO, "sensor stopped", packets=r.packets, records=r.records, cdrs=r.cdrs,
                  cdrs_committed=committed, spool_packets=st.packets, spool_files=st.files_closed,
                  signal=r.stopped_by_signal or "-", ok=r.ok)


def _spool_options(cfg: Any) -> SpoolOptions:
    try:
        return SpoolOptions.from_config(cfg)
    except SpoolOptionError as exc:
        raise SensorSetupError(str(exc)) from None
