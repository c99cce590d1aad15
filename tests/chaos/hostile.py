"""Hostile peers against a running central while a well-behaved sensor keeps its service and store flow.

The central is our real process (`python -m vmproto.server`) on loopback. The good sensor is a wire-driven client
in this process on 127.0.0.1 (service: answers every ping; store: one message every 100 ms, each acknowledged);
its ping gaps and store ack latencies are the service figures. Hostile peers come from other loopback addresses
(127.0.<k>.<j>), a few hundred per address, so the per-address cap (spec §1.7, 256) is not what stops them — a
separate burst from one address checks the cap itself.

Kinds: silent (connect, send nothing: slowloris), half opening line, store handshake then silence (holds an RSA
key), a service that never answers ping, GUI clients that never read a large reply (a real sensor serves the file),
wrong passwords at a fixed rate.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import trio

from tests.chaos.context import ChaosContext
from tests.chaos.figures import Figures
from tests.chaos.procs import PASSWORD, Central, Sensor, log_lines_per_second, watch_rss
from tests.chaos.workload import make_workload
from vmproto.wire import events as ev
from vmproto.wire.connection import Connection
from vmproto.wire.crypto import generate_aes_strings
from vmproto.wire.opening import encode_opening
from vmproto.wire.service import ServiceClient
from vmproto.wire.store import StoreClient
from vmproto.wire.store_msg import StoreMessage

__all__ = ["hostile_peers", "HostileFigures"]

PER_ADDRESS = 200  # hostile connections per source address (under the 256 cap)
GUI_FILE_MB = 64
WRONG_PASSWORD_IN_FLIGHT = 300  # wrong-password handshakes waiting for an answer at once, at most


@dataclass
class HostileFigures:
    """Raw measurements, turned into `Figures` by `hostile_peers`."""

    ping_gaps: list[float] = field(default_factory=list)
    ack_latencies: list[float] = field(default_factory=list)
    reconnect_latencies: list[float] = field(default_factory=list)
    reconnect_failures: int = 0
    store_error_replies: list[str] = field(default_factory=list)
    store_errors: int = 0
    service_lost: int = 0
    opened: dict[str, int] = field(default_factory=dict)
    closed_by_central: dict[str, int] = field(default_factory=dict)
    connect_failed: dict[str, int] = field(default_factory=dict)
    silent_pinged_closed_s: float | None = None
    wrong_passwords: int = 0
    wrong_password_refused: int = 0
    wrong_password_answered: int = 0
    wrong_password_skipped: int = 0
    cap_accepted: int = 0
    cap_refused: int = 0


class _Wire:
    """A client machine on a socket bound to a chosen loopback source address."""

    def __init__(self, stream: trio.SocketStream, machine: Connection | None) -> None:
        self.stream, self.machine = stream, machine

    @classmethod
    async def open(cls, port: int, source: str, machine: Connection | None = None) -> _Wire:
        sock = trio.socket.socket()
        try:
            await sock.bind((source, 0))
            await sock.connect(("127.0.0.1", port))
        except BaseException:  # also cancellation at the end of the flood: never leak the socket
            sock.close()
            raise
        return cls(trio.SocketStream(sock), machine)

    async def send(self, event: ev.Event) -> None:
        assert self.machine is not None
        data = self.machine.send(event, time.time())
        if data:
            await self.stream.send_all(data)

    async def next_event(self, timeout: float = 30.0) -> object:
        assert self.machine is not None
        with trio.fail_after(timeout):
            while True:
                event = self.machine.next_event(time.time())
                if event is not ev.NEED_DATA:
                    return event
                try:
                    data = await self.stream.receive_some(1 << 20)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    data = b""
                self.machine.receive_data(data, time.time())

    async def closed_by_peer(self, timeout: float) -> bool:
        """True when the central closed (EOF or reset) within `timeout` seconds; data received is discarded."""
        with trio.move_on_after(timeout):
            try:
                while await self.stream.receive_some(65536):
                    pass
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            return True
        return False

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)


async def _handshake(wire: _Wire, credentials: ev.Event) -> object:
    assert wire.machine is not None
    await wire.send(ev.OpenConnection(wire.machine.connection_type, {}))
    key = await wire.next_event()
    if not isinstance(key, ev.RsaKey):
        return key
    await wire.send(credentials)
    return await wire.next_event()


def _creds(password: str = PASSWORD) -> ev.Credentials:
    ckey, ivec = generate_aes_strings()
    return ev.Credentials(password, ckey, ivec)


def _service_creds(sensor_id: int) -> ev.ServiceCredentials:
    ckey, ivec = generate_aes_strings()
    return ev.ServiceCredentials(sensor_id=sensor_id, password=PASSWORD, aes_ckey=ckey, aes_ivec=ivec,
                                 sensor_version=2026004000)


# ------------------------------------------------------------------------------------------------ good sensor
async def _good_service(port: int, hf: HostileFigures, stop: trio.Event) -> None:
    wire = await _Wire.open(port, "127.0.0.1", ServiceClient())
    reply = await _handshake(wire, _service_creds(2))
    if not isinstance(reply, ev.ServiceAccepted):
        raise AssertionError(f"good service refused: {reply!r}")
    last = time.monotonic()
    try:
        while not stop.is_set():
            with trio.move_on_after(0.5):
                event = await wire.next_event(timeout=40)
                if event == ev.Ping():
                    now = time.monotonic()
                    hf.ping_gaps.append(now - last)
                    last = now
                    await wire.send(ev.Pong())
                elif isinstance(event, ev.ConnectionClosed):
                    hf.service_lost += 1
                    return
    finally:
        await wire.aclose()


async def _good_store(port: int, hf: HostileFigures, stop: trio.Event) -> None:
    wire = await _Wire.open(port, "127.0.0.1", StoreClient())
    reply = await _handshake(wire, _creds())
    if not isinstance(reply, ev.StoreAccepted):
        raise AssertionError(f"good store refused: {reply!r}")
    i = 0
    try:
        while not stop.is_set():
            i += 1
            t0 = time.monotonic()
            await wire.send(ev.StoreQueries(StoreMessage(99, time.strftime("%Y-%m-%d %H:%M:%S"),
                                                         (f"SELECT {i}".encode(),))))
            reply = await wire.next_event(timeout=60)
            if reply == ev.StoreOK():
                hf.ack_latencies.append(time.monotonic() - t0)
            else:
                hf.store_errors += 1
                hf.store_error_replies.append(repr(reply)[:80])
            await trio.sleep(0.1)
    finally:
        await wire.aclose()


# ------------------------------------------------------------------------------------------------ hostile kinds
def _sources(kind_index: int, n: int) -> list[str]:
    """n source addresses for one kind: 127.<10+kind>.<block>.<1..>, PER_ADDRESS connections each."""
    return [f"127.{10 + kind_index}.{i // PER_ADDRESS}.1" for i in range(n)]


async def _open_many(port: int, sources: list[str], kind: str, hf: HostileFigures, first: bytes | None,
                     limiter: trio.CapacityLimiter) -> list[_Wire]:
    wires: list[_Wire] = []

    async def one(src: str) -> None:
        async with limiter:
            try:
                wire = await _Wire.open(port, src)
                if first:
                    await wire.stream.send_all(first)
            except (OSError, trio.BrokenResourceError):
                hf.connect_failed[kind] = hf.connect_failed.get(kind, 0) + 1
                return
            wires.append(wire)

    async with trio.open_nursery() as nursery:
        for src in sources:
            nursery.start_soon(one, src)
    hf.opened[kind] = len(wires)
    return wires


async def _handshake_then_silence(port: int, sources: list[str], hf: HostileFigures,
                                  limiter: trio.CapacityLimiter, holder: list[_Wire]) -> list[_Wire]:
    wires: list[_Wire] = []

    async def one(src: str) -> None:
        async with limiter:
            try:
                wire = await _Wire.open(port, src, StoreClient())
            except OSError:
                hf.connect_failed["handshake-silence"] = hf.connect_failed.get("handshake-silence", 0) + 1
                return
            try:
                await wire.send(ev.OpenConnection("store", {}))
                key = await wire.next_event(timeout=60)
            except (OSError, trio.BrokenResourceError, trio.TooSlowError):
                hf.connect_failed["handshake-silence"] = hf.connect_failed.get("handshake-silence", 0) + 1
                await wire.aclose()
                return
            except BaseException:  # cancelled at the end of the flood while waiting for the key
                await wire.aclose()
                raise
            if isinstance(key, ev.RsaKey):
                wires.append(wire)  # ... and never send the credentials

    try:
        async with trio.open_nursery() as nursery:
            for src in sources:
                nursery.start_soon(one, src)
    finally:
        hf.opened["handshake-silence"] = len(wires)
        holder.extend(wires)
    return wires


async def _never_pong(port: int, hf: HostileFigures) -> None:
    """A service (sensor id 77) that never answers ping: time until the central ends it (spec §14.1: 5 s)."""
    wire = await _Wire.open(port, "127.9.0.1", ServiceClient())
    try:
        await _handshake(wire, _service_creds(77))
        t0 = time.monotonic()
        if await wire.closed_by_peer(60):
            hf.silent_pinged_closed_s = round(time.monotonic() - t0, 1)
    finally:
        await wire.aclose()


async def _wrong_passwords(port: int, hf: HostileFigures, rate: int, duration: float) -> None:
    async def one(k: int) -> None:
        try:
            wire = await _Wire.open(port, f"127.8.{k // PER_ADDRESS}.1", StoreClient())
        except OSError:
            return
        try:
            hf.wrong_passwords += 1
            reply = await _handshake(wire, _creds("not-the-password"))
            hf.wrong_password_answered += 1
            if reply == ev.Refuse("bad password"):
                hf.wrong_password_refused += 1
        except (trio.TooSlowError, trio.BrokenResourceError, OSError):
            pass
        finally:
            await wire.aclose()

    in_flight = trio.CapacityLimiter(WRONG_PASSWORD_IN_FLIGHT)

    async def limited(k: int) -> None:
        async with in_flight:
            await one(k)

    async with trio.open_nursery() as nursery:
        t_end = time.monotonic() + duration
        k = 0
        while time.monotonic() < t_end:
            if in_flight.borrowed_tokens < in_flight.total_tokens:
                nursery.start_soon(limited, k)
            else:
                hf.wrong_password_skipped += 1  # the central is not answering fast enough: do not pile up
            k += 1
            await trio.sleep(1.0 / rate)


async def _gui_never_reads(port: int, sensor_id: int, n: int, wires: list[_Wire]) -> None:
    for _ in range(n):
        wire = await _Wire.open(port, "127.7.0.1")
        await wire.stream.send_all(encode_opening({"type_connection": "gui_command", "sensor_id": sensor_id,
                                                   "command": "getfile chaos-big.pcap"}))
        wires.append(wire)  # never read


async def _address_cap(port: int, hf: HostileFigures, cap: int) -> None:
    """cap + 50 silent connections from one address: the ones past the cap are closed at once (checked within
    half a second, long before any timeout could close the others)."""
    wires: list[_Wire] = []
    try:
        for _ in range(cap + 50):
            try:
                wires.append(await _Wire.open(port, "127.6.0.1"))
            except OSError:
                hf.cap_refused += 1
        await trio.sleep(0.3)

        async def check(w: _Wire) -> None:
            if await w.closed_by_peer(0.2):
                hf.cap_refused += 1
            else:
                hf.cap_accepted += 1

        async with trio.open_nursery() as nursery:
            for w in wires:
                nursery.start_soon(check, w)
    finally:
        for w in wires:
            await w.aclose()


async def _good_reconnects(port: int, hf: HostileFigures, stop: trio.Event) -> None:
    """Every 2 s a new store connection of the good sensor: how long its handshake takes under the flood (each
    handshake needs a fresh RSA key from the central's pool, spec §3.8)."""
    while not stop.is_set():
        t0 = time.monotonic()
        try:
            wire = await _Wire.open(port, "127.0.0.1", StoreClient())
            try:
                with trio.move_on_after(60):
                    if isinstance(await _handshake(wire, _creds()), ev.StoreAccepted):
                        hf.reconnect_latencies.append(time.monotonic() - t0)
            finally:
                await wire.aclose()
        except (OSError, trio.BrokenResourceError, trio.TooSlowError):
            hf.reconnect_failures += 1
        await trio.sleep(2.0)


async def hostile_peers(ctx: ChaosContext) -> Figures:
    """Run the flood; returns Figures with the service and hostile measurements in `extra`."""
    size = ctx.size
    wd = ctx.scenario_dir("hostile")
    short = size.name == "short"
    options: dict[str, object] = {}
    if short:  # the spec's 30 s / 60 s would outlast a CI flood; the same code paths fire sooner
        options.update(server_opening_line_timeout_s=3, server_write_timeout_s=5)
    central = Central(wd, ctx.db, ctx.database_name("hostile"), server_rsa_key_pool=8, **options)
    fig = Figures("hostile-peers")
    hf = HostileFigures()
    gui_sensor = Sensor(wd, "gui-sensor", server="127.0.0.1", port=central.port, id_sensor=5, savesip="yes")
    spool = wd / "gui-sensor-spool"
    spool.mkdir(parents=True, exist_ok=True)
    with open(spool / "chaos-big.pcap", "wb") as fh:
        fh.truncate(GUI_FILE_MB * 1024 * 1024)
    wl = make_workload(wd, 2, seed=21)
    held: dict[str, list[_Wire]] = {}
    gui_wires: list[_Wire] = []
    good: trio.Process | None = None
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch_rss, [central, gui_sensor])
            await central.start()
            gui_sensor.start(wl.pcap)
            await gui_sensor.wait_log("replay done", 60)
            good_seconds = size.flood_s + 8.0
            good = await trio.lowlevel.open_process(
                [sys.executable, "-m", "tests.chaos.goodsensor", str(central.port), str(good_seconds)],
                stdout=subprocess.PIPE, cwd=str(Path(__file__).resolve().parents[2]))
            await trio.sleep(1.0)
            flood_start = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
            # Outside the flood's deadline: the pong wait must be observed even when the flood phase is short.
            never_pong_done = trio.Event()

            async def never_pong() -> None:
                try:
                    await _never_pong(central.port, hf)
                finally:
                    never_pong_done.set()

            nursery.start_soon(never_pong)
            # Also outside: attempts stop after flood_s, but those in flight get their answer (or 30 s timeout).
            passwords_done = trio.Event()

            async def wrong_passwords() -> None:
                try:
                    await _wrong_passwords(central.port, hf, size.password_rate, size.flood_s)
                finally:
                    passwords_done.set()

            nursery.start_soon(wrong_passwords)
            t0 = time.monotonic()
            async with trio.open_nursery() as flood:
                # The flood phase lasts flood_s; attempts still waiting then (e.g. for an RSA key) are abandoned.
                flood.cancel_scope.deadline = trio.current_time() + size.flood_s
                async def hold(kind: str, index: int, first: bytes | None) -> None:
                    held[kind] = await _open_many(central.port, _sources(index, size.hostile), kind, hf, first,
                                                  trio.CapacityLimiter(100))

                flood.start_soon(hold, "silent", 0, None)
                flood.start_soon(hold, "half-line", 1, b'{"type_connection":"serv')

                held["handshake-silence"] = []

                async def silence() -> None:
                    await _handshake_then_silence(central.port, _sources(2, size.hostile), hf,
                                                  trio.CapacityLimiter(100), held["handshake-silence"])

                flood.start_soon(silence)
                flood.start_soon(_gui_never_reads, central.port, 5, max(2, size.hostile // 50), gui_wires)
            fig.extra["flood_s"] = round(time.monotonic() - t0, 1)
            held["gui-no-read"] = gui_wires
            with trio.move_on_after(60):
                await never_pong_done.wait()
                await passwords_done.wait()
            for kind, wires in held.items():
                closed = 0
                for w in wires:
                    closed += await w.closed_by_peer(0.01)
                hf.closed_by_central[kind] = closed
            await _address_cap(central.port, hf, 256)
            assert good.stdout is not None
            output = b""
            with trio.fail_after(good_seconds + 120):
                while chunk := await good.stdout.receive_some(65536):
                    output += chunk
                await good.wait()
            measured = json.loads(output or b"{}")
            hf.ping_gaps, hf.ack_latencies = measured.get("ping_gaps", []), measured.get("ack_latencies", [])
            hf.reconnect_latencies = measured.get("reconnect_latencies", [])
            hf.reconnect_failures = measured.get("reconnect_failures", 0)
            hf.store_errors, hf.service_lost = measured.get("store_errors", 1), measured.get("service_lost", 1)
            hf.store_error_replies = measured.get("store_error_replies", [])
            gui_alive = gui_sensor.alive()
            await gui_sensor.stop()
            fig.extra["central_alive"] = int(central.alive())
            await central.stop()
            nursery.cancel_scope.cancel()
    finally:
        if good is not None and good.returncode is None:
            good.kill()
        for wires in held.values():
            for w in wires:
                await w.aclose()
        gui_sensor.kill9()
        central.kill9()
    per_s = log_lines_per_second(central.log_text(), flood_start)
    fig.peak_rss_mb = {"central": round(central.peak_mb, 1), "gui_sensor": round(gui_sensor.peak_mb, 1)}
    acks = sorted(hf.ack_latencies)
    fig.extra.update(
        hostile_per_kind=size.hostile, opened=hf.opened, connect_failed=hf.connect_failed,
        closed_by_central=hf.closed_by_central, never_pong_closed_s=hf.silent_pinged_closed_s,
        wrong_passwords=hf.wrong_passwords, wrong_password_refused=hf.wrong_password_refused,
        wrong_password_answered=hf.wrong_password_answered, wrong_password_skipped=hf.wrong_password_skipped,
        cap_accepted=hf.cap_accepted, cap_refused=hf.cap_refused,
        pings=len(hf.ping_gaps), ping_gap_max_s=round(max(hf.ping_gaps, default=0), 2),
        store_acks=len(acks), store_errors=hf.store_errors, service_lost=hf.service_lost,
        store_error_replies=hf.store_error_replies[:3], reconnects=len(hf.reconnect_latencies),
        reconnect_failures=hf.reconnect_failures,
        reconnect_max_s=round(max(hf.reconnect_latencies, default=0), 2),
        ack_p50_ms=round(statistics.median(acks) * 1000, 1) if acks else None,
        ack_max_ms=round(acks[-1] * 1000, 1) if acks else None,
        log_lines=sum(per_s.values()), log_lines_max_per_s=max(per_s.values(), default=0),
        gui_sensor_alive=int(gui_alive))
    return fig


def hostile_log(path: Path) -> str:
    """The central's log of a hostile run (for a failing test's message)."""
    return path.read_text(errors="replace")[-4000:]
