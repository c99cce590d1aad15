"""A fleet of sensors on one central: python bench/fleet.py [--quick] [--sensors N] [--seconds S] [--clients K]

One central process (`python -m vmproto.server`, embedded MariaDB) and N simulated sensors (default 1,000; --quick
50), each with a `service` connection (check_ping_response, answering every ping) and a `store` connection sending
a trickle of CDRs (the real id_main 10 SQL of vmproto.sensor.cdr.sql over generated calls, one per sensor every
--cdr-interval seconds on average). The sensors are light in-bench clients driven by the vmproto.wire client
machines, spread over K client processes (not one process per sensor); each sensor connects from its own
127.x.y.z address as a real fleet does from its own hosts.

Phases: the central starts and idles (its idle RSS is the baseline); the sensors connect (the ramp: each service
handshake costs the central a fresh 4096-bit RSA key, as the reference does, so on a small machine this takes
minutes for 1,000 sensors); then the measurement window of --seconds (default 180, --quick 20), during which
the central's RSS and CPU are sampled and every ping, pong and store acknowledgement is timed.

Figures: central RSS (peak, per sensor above idle), central CPU (% of one core) during the window, ping interval
lateness (the server pings every 5 s after its last write; lateness = interval - 5 s, p50/p99/max: how late the
central's timers fire under the load), pong turnaround in the client (ping received -> pong written, p99: the
client's own delay, which must stay small for the other figures to mean anything), missed pongs (service
connections the central ended, must be 0), store ack latency p50/p99, CDRs committed per second, and the
MariaDB server's RSS and CPU beside the central's. Goal (issue 8): RSS under 300 MB with 1,000 sensors, no
missed pong.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
import re
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import BenchError, BenchRun, bench_parser, percentile  # noqa: E402

PASSWORD = "fleetbench"
PING_INTERVAL_S = 5.0  # spec §7.5: the central pings 5 s after its last write
FIRST_SENSOR_ID = 101
_PAGE = os.sysconf("SC_PAGE_SIZE")
_TICK = os.sysconf("SC_CLK_TCK")


# ================================================================================================== the client
def sensor_address(index: int) -> str:
    """The loopback source address of sensor `index` (0-based): 127.1.0.1, 127.1.0.2, ... one per sensor."""
    if not 0 <= index < 250 * 250 * 250:
        raise BenchError(f"sensor index {index} out of range")
    return f"127.{1 + index // 62500}.{index // 250 % 250}.{index % 250 + 1}"


def cdr_templates(count: int = 8) -> list[Any]:
    """CdrRecords of `count` generated answered calls (callgen -> CallAnalyzer), the CDRs the sensors send."""
    from vmproto.sensor.calls import AnalyzerConfig, CallAnalyzer
    from vmproto.testing.callgen import CallSpec, generate_call

    records = []
    for i in range(count):
        spec = CallSpec(call_id=f"fleet-template-{i}@192.0.2.10", seed=100 + i, loss=0.01 * (i % 3),
                        jitter_ms=4, rtp_seconds=1.0, start_s=1_763_632_800.0 + i,
                        outcome=("answered", "answered", "busy", "cancel")[i % 4])
        analyzer = CallAnalyzer(AnalyzerConfig(sip_ports=frozenset({5060})))
        for packet in generate_call(spec).packets:
            records.extend(analyzer.feed(packet))
        records.extend(analyzer.finish())
    if not records:
        raise BenchError("the call generator produced no CDR")
    return records


def cdr_sql(template: Any, sensor_id: int, seq: int, now: float) -> bytes:
    """The store SQL of `template` as sensor `sensor_id`'s call number `seq`, dated now. Each message differs (its
    own fbasename), so the central's duplicate detection never skips one."""
    from vmproto.sensor.cdr.sql import store_sql

    length = template.callend_us - template.calldate_us
    start = int(now * 1e6) - length
    shift = start - template.calldate_us
    record = dataclasses.replace(template, id_sensor=sensor_id, fbasename=f"fleet-{sensor_id}-{seq}@bench",
                                 calldate_us=start, callend_us=template.callend_us + shift)
    return store_sql(record).encode("utf-8", "surrogateescape")


@dataclasses.dataclass
class ClientStats:
    """What one client process measured inside the window (monotonic times)."""

    window: tuple[float, float] = (float("inf"), float("inf"))
    ping_lateness: list[float] = dataclasses.field(default_factory=list)
    pong_turnaround: list[float] = dataclasses.field(default_factory=list)
    store_ack: list[float] = dataclasses.field(default_factory=list)
    loop_lag: list[float] = dataclasses.field(default_factory=list)
    pings: int = 0
    cdrs_acked: int = 0
    store_errors: Counter[str] = dataclasses.field(default_factory=Counter)
    service_lost: Counter[str] = dataclasses.field(default_factory=Counter)  # in the window: a missed pong
    store_lost: Counter[str] = dataclasses.field(default_factory=Counter)
    connect_failed: Counter[str] = dataclasses.field(default_factory=Counter)
    handshake_s: list[float] = dataclasses.field(default_factory=list)
    services_alive: int = 0  # service connections being served now
    services_alive_at_end: int = 0  # ... when the window ended

    def inside(self, t: float) -> bool:
        return self.window[0] <= t < self.window[1]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (Counters as plain dicts; dataclasses.asdict would turn them into pair counts)."""
        return {f.name: (dict(v) if isinstance(v := getattr(self, f.name), Counter) else
                         list(v) if isinstance(v, tuple) else v) for f in dataclasses.fields(self)}


async def _client_main(spec: dict[str, Any]) -> None:
    import trio

    from vmproto.wire import events as ev
    from vmproto.wire.compression import Compression
    from vmproto.wire.crypto import generate_aes_strings
    from vmproto.wire.service import ServiceClient
    from vmproto.wire.store import StoreClient
    from vmproto.wire.store_msg import StoreMessage

    port: int = spec["port"]
    first: int = spec["first"]
    count: int = spec["count"]
    cdr_interval: float = spec["cdr_interval"]
    stats = ClientStats()
    templates = cdr_templates()
    connected = 0
    all_connected = trio.Event()
    handshake_slots = trio.Semaphore(spec["ramp_parallel"])
    stop = trio.Event()

    class Link:
        """One connection: a wire client machine over a Trio stream."""

        def __init__(self, stream: trio.SocketStream, machine: Any) -> None:
            self.stream, self.machine = stream, machine
            self.arrived = 0.0  # monotonic time the bytes holding the last event arrived

        async def send(self, event: Any) -> None:
            data = self.machine.send(event, time.time())
            if data:
                await self.stream.send_all(data)

        async def next_event(self) -> Any:
            while True:
                event = self.machine.next_event(time.time())
                if event is not ev.NEED_DATA:
                    return event
                try:
                    data = await self.stream.receive_some(1 << 16)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    data = b""
                self.arrived = time.monotonic()
                self.machine.receive_data(data, time.time())

    async def open_link(index: int, machine: Any, creds: Any) -> tuple[Link, Any]:
        stream = await trio.open_tcp_stream("127.0.0.1", port, local_address=sensor_address(index))
        link = Link(stream, machine)
        with trio.fail_after(900):  # a service key may queue behind hundreds of 4096-bit key generations
            await link.send(ev.OpenConnection(machine.connection_type, {}))
            key = await link.next_event()
            if not isinstance(key, ev.RsaKey):
                raise BenchError(f"expected the RSA key, got {key!r}")
            await link.send(creds)
            return link, await link.next_event()

    async def service_loop(link: Link) -> None:
        stats.services_alive += 1
        try:
            await serve_pings(link)
        finally:
            stats.services_alive -= 1

    async def serve_pings(link: Link) -> None:
        last_ping: float | None = None
        while True:
            event = await link.next_event()
            if isinstance(event, ev.Ping):
                arrived = link.arrived
                await link.send(ev.Pong())
                done = time.monotonic()
                if stats.inside(arrived):
                    stats.pings += 1
                    stats.pong_turnaround.append(done - arrived)
                    if last_ping is not None:
                        stats.ping_lateness.append(arrived - last_ping - PING_INTERVAL_S)
                last_ping = arrived
            elif isinstance(event, ev.ConnectionClosed):
                if not stop.is_set():
                    where = "window" if stats.inside(time.monotonic()) else "outside window"
                    stats.service_lost[f"{event.reason} ({where})"] += 1
                return
            # tasks and chart pushes are not sent by an idle central; anything else is ignored

    async def store_loop(link: Link, sensor_id: int, rng: random.Random) -> None:
        seq = 0
        await trio.sleep(rng.uniform(0, cdr_interval))  # spread the fleet's CDRs over the interval
        while not stop.is_set():
            sql = cdr_sql(templates[seq % len(templates)], sensor_id, seq, time.time())
            message = StoreMessage(10, time.strftime("%Y-%m-%d %H:%M:%S"), (sql,))
            sent = time.monotonic()
            await link.send(ev.StoreQueries(message))
            reply = await link.next_event()
            acked = time.monotonic()
            if isinstance(reply, ev.ConnectionClosed):
                if not stop.is_set():
                    stats.store_lost[reply.reason] += 1
                return
            if isinstance(reply, ev.StoreOK):
                if stats.inside(sent):
                    stats.store_ack.append(acked - sent)
                    stats.cdrs_acked += 1
            elif stats.inside(sent):
                stats.store_errors[type(reply).__name__] += 1
            seq += 1
            await trio.sleep(rng.expovariate(1.0 / cdr_interval))  # a trickle: calls end at random

    async def handshake(index: int, machine: Any, creds: Any, accepted: type) -> Link | None:
        """One handshake under the ramp's limit; the link, or None (counted) when it failed."""
        try:
            async with handshake_slots:
                link, reply = await open_link(index, machine, creds)
            if not isinstance(reply, accepted):
                raise BenchError(f"{machine.connection_type} refused: {reply!r}")
            return link
        except (OSError, trio.BrokenResourceError, trio.TooSlowError, BenchError) as exc:
            stats.connect_failed[type(exc).__name__ + ": " + str(exc)[:80]] += 1
        except Exception as exc:  # noqa: BLE001 - a protocol error from the machines: count it, keep the fleet
            stats.connect_failed[type(exc).__name__ + ": " + str(exc)[:80]] += 1
        return None

    async def sensor(index: int) -> None:
        nonlocal connected
        sensor_id = FIRST_SENSOR_ID + index
        rng = random.Random(sensor_id)
        t0 = time.monotonic()
        ckey, ivec = generate_aes_strings()
        creds = ev.ServiceCredentials(sensor_id=sensor_id, password=PASSWORD, aes_ckey=ckey, aes_ivec=ivec,
                                      sensor_version=2026004000, check_ping_response=True)
        service = await handshake(index, ServiceClient(), creds, ev.ServiceAccepted)
        if service is None:
            return
        links = [service]
        async with trio.open_nursery() as nursery:
            # The central pings at once after accepting the service and wants the pong within 5 s: the service
            # connection is served from now on, as a sensor does, while the store connection is still opening.
            nursery.start_soon(service_loop, service)
            ckey, ivec = generate_aes_strings()
            store = await handshake(index, StoreClient(compression=Compression.ZSTD),
                                    ev.Credentials(PASSWORD, ckey, ivec), ev.StoreAccepted)
            if store is not None:
                links.append(store)
                stats.handshake_s.append(time.monotonic() - t0)
                connected += 1
                nursery.start_soon(store_loop, store, sensor_id, rng)
            await stop.wait()
            nursery.cancel_scope.cancel()
        for link in links:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await link.stream.aclose()

    async def lag_probe() -> None:
        # How late this client's own loop wakes up: if it is late, the ping figures include the client's delay.
        while not stop.is_set():
            t = time.monotonic()
            await trio.sleep(0.1)
            late = time.monotonic() - t - 0.1
            if stats.inside(t):
                stats.loop_lag.append(late)

    def say(obj: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    async def control() -> None:
        # The parent decides the window once every client process is connected (stdin, one JSON line).
        await all_connected.wait()
        say({"event": "connected", "connected": connected, "failed": sum(stats.connect_failed.values())})
        line = await trio.to_thread.run_sync(sys.stdin.readline)
        if not line:
            stop.set()
            return
        window = json.loads(line)
        stats.window = (window["from"], window["until"])
        await trio.sleep_until(trio.current_time() + max(0.0, window["until"] - time.monotonic()))
        stats.services_alive_at_end = stats.services_alive
        stop.set()

    async def watch_failures() -> None:
        # Everyone is in when each sensor connected or failed to: the run goes on without the failed ones.
        while not all_connected.is_set():
            if connected + sum(stats.connect_failed.values()) >= count:
                all_connected.set()
            await trio.sleep(0.2)

    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(control)
        nursery.start_soon(watch_failures)
        nursery.start_soon(lag_probe)
        async with trio.open_nursery() as sensors:
            for i in range(first, first + count):
                sensors.start_soon(sensor, i)
        nursery.cancel_scope.cancel()
    ru = resource.getrusage(resource.RUSAGE_SELF)
    out = stats.to_json()
    out.update(event="result", cpu_s=(ru.ru_utime + ru.ru_stime) - (ru0.ru_utime + ru0.ru_stime),
               maxrss_MB=ru.ru_maxrss / 1024)
    say(out)


def client_process(spec_json: str) -> int:
    """Entry of a client process (`fleet.py --client SPEC`): run its sensors, print JSON lines. Returns 0."""
    import trio

    spec = json.loads(spec_json)
    _raise_nofile(2 * spec["count"] + 64)
    trio.run(_client_main, spec)
    return 0


# ================================================================================================= the central
def _die_with_parent() -> None:
    """In a child between fork and exec: ask Linux for SIGTERM when the bench process dies, so that a killed
    bench leaves no central (and, through the central's orderly stop, no MariaDB) behind."""
    import ctypes

    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)


def _raise_nofile(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise BenchError(f"need {needed} open files but the hard limit is {hard}: raise it (ulimit -Hn)")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


@dataclasses.dataclass
class ProcSample:
    t: float
    rss_MB: float
    cpu_s: float


def proc_sample(pid: int) -> ProcSample | None:
    """RSS and user+system CPU seconds of `pid` from /proc; None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        statm = Path(f"/proc/{pid}/statm").read_text().split()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    cpu = (int(fields[11]) + int(fields[12])) / _TICK
    return ProcSample(time.monotonic(), int(statm[1]) * _PAGE / 1e6, cpu)


def child_pids(pid: int) -> list[int]:
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                out += [int(x) for x in (task / "children").read_text().split()]
    return out


class Central:
    """`python -m vmproto.server` with an embedded MariaDB in a temporary directory, its log in a file."""

    def __init__(self, workdir: Path, extra: list[str]) -> None:
        self.workdir = workdir
        self.log_path = workdir / "central.log"
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.db_pid: int | None = None

    def start(self, timeout: float = 180.0) -> None:
        sets = {"server_bind": "127.0.0.1", "server_bind_port": "0", "server_password": PASSWORD,
                "datadir": str(self.workdir / "central")}
        cmd = [sys.executable, "-m", "vmproto.server"]
        for k, v in sets.items():
            cmd += ["--set", f"{k}={v}"]
        for item in self.extra:
            cmd += ["--set", item]
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=Path(__file__).parents[1],
                                     preexec_fn=_die_with_parent)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(r"server started port=(\d+)", self.log())
            if m:
                self.port = int(m.group(1))
                kids = child_pids(self.proc.pid)
                self.db_pid = kids[0] if kids else None
                return
            if self.proc.poll() is not None:
                raise BenchError(f"the central exited with {self.proc.returncode} during start-up:\n{self.tail()}")
            time.sleep(0.2)
        raise BenchError(f"the central did not start within {timeout:.0f} s:\n{self.tail()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def log_slice(self, start: int, end: int) -> str:
        """The log bytes [start, end) as text."""
        with contextlib.suppress(OSError), self.log_path.open("rb") as f:
            f.seek(start)
            return f.read(max(0, end - start)).decode(errors="replace")
        return ""

    def tail(self, lines: int = 25) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM (orderly shutdown, which also stops the embedded MariaDB); SIGKILL after `timeout`."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)


class Sampler:
    """Samples a process's RSS and CPU; summarises a time range."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self.samples: list[ProcSample] = []

    def sample(self) -> None:
        if self.pid is not None and (s := proc_sample(self.pid)) is not None:
            self.samples.append(s)

    def between(self, t0: float, t1: float) -> dict[str, float]:
        inside = [s for s in self.samples if t0 <= s.t <= t1]
        if len(inside) < 2:
            return {}
        first, last = inside[0], inside[-1]
        return {"rss_peak_MB": max(s.rss_MB for s in inside), "rss_end_MB": last.rss_MB,
                "cpu_percent": 100 * (last.cpu_s - first.cpu_s) / (last.t - first.t),
                "cpu_s": last.cpu_s - first.cpu_s}


# ================================================================================================ the profile
def find_py_spy() -> str | None:
    """The py-spy executable beside this Python or on PATH (an optional tool: pip install py-spy)."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


def start_profile(py_spy: str, pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    """Sample `pid` for `seconds` with py-spy (collapsed stacks, GIL-holding and idle threads excluded)."""
    return subprocess.Popen([py_spy, "record", "--pid", str(pid), "--duration", str(max(1, int(seconds))),
                             "--rate", "100", "--format", "raw", "--nonblocking", "--output", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=_die_with_parent)


def profile_top(collapsed: str, n: int = 12) -> list[tuple[str, int, int]]:
    """(function, self samples, inclusive samples) of the `n` functions with most self samples in py-spy's
    collapsed output (`frame;frame;... count` per line). Returns [] for an empty profile."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]  # one entry per function, any line
        own[frames[-1]] += int(count)
        for frame in set(frames):
            incl[frame] += int(count)
    return [(f, c, incl[f]) for f, c in own.most_common(n)]


# ================================================================================================== the driver
def _read_json_line(proc: subprocess.Popen[str], timeout: float, what: str) -> dict[str, Any]:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            line = proc.stdout.readline()
            if not line:
                raise BenchError(f"a client process exited ({proc.poll()}) before reporting {what}")
            with contextlib.suppress(json.JSONDecodeError):
                return json.loads(line)
        elif proc.poll() is not None:
            raise BenchError(f"a client process exited ({proc.returncode}) before reporting {what}")
    raise BenchError(f"no {what} from a client process within {timeout:.0f} s")


def run_fleet(run: BenchRun, sensors: int, seconds: float, clients: int, cdr_interval: float,
              ramp_parallel: int, central_set: list[str], keep: bool, profile: bool = False) -> None:
    """Start the central, connect the fleet, measure the window, record figures on `run`."""
    _raise_nofile(2 * sensors + 256)  # inherited by the central: one socket per connection plus its own
    workdir = Path(tempfile.mkdtemp(prefix="vmpfleet"))
    central = Central(workdir, central_set)
    procs: list[subprocess.Popen[str]] = []
    try:
        print(f"starting the central (embedded MariaDB under {workdir}) ...", flush=True)
        t_start = time.monotonic()
        central.start()
        assert central.proc is not None
        cs, ds = Sampler(central.proc.pid), Sampler(central.db_pid)
        t_up = time.monotonic()
        for _ in range(6):  # the idle baseline: key pool filled or filling, no sensor
            cs.sample()
            ds.sample()
            time.sleep(0.5)
        idle_rss = cs.samples[-1].rss_MB
        print(f"central up in {t_up - t_start:.1f} s on port {central.port}, idle RSS {idle_rss:.1f} MB; "
              f"connecting {sensors} sensors from {clients} client process(es) ...", flush=True)
        per = [sensors // clients + (1 if i < sensors % clients else 0) for i in range(clients)]
        first = 0
        t_ramp = time.monotonic()
        for n in per:
            spec = {"port": central.port, "first": first, "count": n, "cdr_interval": cdr_interval,
                    "ramp_parallel": ramp_parallel}
            procs.append(subprocess.Popen([sys.executable, __file__, "--client", json.dumps(spec)],
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                          preexec_fn=_die_with_parent))
            first += n
        connected = failed = 0
        pending = list(procs)
        next_note = time.monotonic() + 30
        while pending:
            cs.sample()
            ds.sample()
            for proc in list(pending):
                assert proc.stdout is not None
                if select.select([proc.stdout], [], [], 0)[0]:
                    msg = _read_json_line(proc, 5, "its connection count")
                    connected += msg["connected"]
                    failed += msg["failed"]
                    pending.remove(proc)
                elif proc.poll() is not None:
                    raise BenchError(f"a client process exited with {proc.returncode} during the ramp")
            if central.proc.poll() is not None:
                raise BenchError(f"the central exited during the ramp:\n{central.tail()}")
            if time.monotonic() > next_note:
                active = len(re.findall(r"SNIFFER SERVICE START", central.log()))
                print(f"  ramp: {active} service connections up after {time.monotonic() - t_ramp:.0f} s", flush=True)
                next_note += 30
            time.sleep(0.5)
        ramp_s = time.monotonic() - t_ramp
        ramp_central = cs.between(t_ramp, time.monotonic())
        print(f"{connected} sensors connected ({failed} failed) in {ramp_s:.1f} s; measuring {seconds:.0f} s ...",
              flush=True)
        if connected == 0:
            raise BenchError(f"no sensor connected:\n{central.tail()}")
        log_before = central.log_size()
        w0 = time.monotonic() + 1.0
        w1 = w0 + seconds
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(json.dumps({"from": w0, "until": w1}) + "\n")
            proc.stdin.flush()
        spy = None
        if profile:
            py_spy = find_py_spy()
            if py_spy is None:
                print("--profile: py-spy not found (pip install py-spy); no profile", file=sys.stderr)
            else:
                spy = start_profile(py_spy, central.proc.pid, seconds, workdir / "central.profile")
        log_end = log_before
        while time.monotonic() < w1 + 0.5:
            cs.sample()
            ds.sample()
            if time.monotonic() < w1 - 0.1:
                # The log up to the window's end: the clients' own disconnects after it are no missed pongs.
                log_end = central.log_size()
            if central.proc.poll() is not None:
                raise BenchError(f"the central exited during the window:\n{central.tail()}")
            time.sleep(0.5)
        results, lost = [], []
        for proc in procs:
            try:
                results.append(_read_json_line(proc, 60 + 0.02 * sensors, "its result"))
            except BenchError as exc:  # the others' figures still stand; the run says what is missing
                lost.append(str(exc))
        if not results:
            raise BenchError(f"no client process reported: {lost}")
        if lost:
            print(f"warning: {len(lost)} client process(es) reported nothing: {lost}", file=sys.stderr)
            run.extra["clients_without_result"] = lost
        window_log = central.log_slice(log_before, log_end)
        for proc in procs:
            proc.wait(30)
        if spy is not None:
            _report_profile(run, spy, workdir / "central.profile", seconds)
        window = cs.between(w0, w1)
        db = ds.between(w0, w1)
        _figures(run, sensors, connected, failed, seconds, ramp_s, idle_rss, t_up - t_start, ramp_central, window,
                 db, results, window_log, cs)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        code = central.stop()
        if code not in (0, None):
            print(f"warning: the central exited with {code}:\n{central.tail()}", file=sys.stderr)
        if keep:
            print(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def _report_profile(run: BenchRun, spy: subprocess.Popen[bytes], path: Path, seconds: float) -> None:
    try:
        _, err = spy.communicate(timeout=seconds + 60)
    except subprocess.TimeoutExpired:
        spy.kill()
        _, err = spy.communicate()
    try:
        collapsed = path.read_text()
    except OSError:
        print(f"--profile: py-spy wrote no profile: {err.decode(errors='replace')[-500:]}", file=sys.stderr)
        return
    top = profile_top(collapsed)
    total = sum(int(line.rpartition(" ")[2]) for line in collapsed.splitlines() if line.rpartition(" ")[2].isdigit())
    print(f"central profile, {total} samples at 100 Hz in {seconds:.0f} s (busy threads only), top by own time:")
    for function, own, incl in top:
        print(f"  {100 * own / max(1, total):5.1f}% own {100 * incl / max(1, total):5.1f}% incl  {function}")
    run.extra["profile_samples"] = total
    run.extra["profile_top"] = [{"function": f, "own_percent": round(100 * o / max(1, total), 1),
                                 "incl_percent": round(100 * i / max(1, total), 1)} for f, o, i in top]


def _figures(run: BenchRun, sensors: int, connected: int, failed: int, seconds: float, ramp_s: float,
             idle_rss: float, startup_s: float, ramp_central: dict[str, float], window: dict[str, float],
             db: dict[str, float], results: list[dict[str, Any]], window_log: str, cs: Sampler) -> None:
    def merged(key: str) -> list[float]:
        return [x for r in results for x in r[key]]

    def counter(key: str) -> Counter[str]:
        total: Counter[str] = Counter()
        for r in results:
            total.update(r[key])
        return total

    ms = 1000.0
    lateness, turnaround, acks, lag = (merged(k) for k in ("ping_lateness", "pong_turnaround", "store_ack",
                                                          "loop_lag"))
    missed = counter("service_lost")
    store_lost = counter("store_lost")
    ended = len(re.findall(r"SNIFFER SERVICE (?:DISCONNECT|STOP)", window_log))
    run.figure("sensors_connected", connected, "sensors", note=f"of {sensors}; {failed} failed to connect")
    run.figure("central_startup_s", startup_s, "s", note="embedded MariaDB, schema, listening")
    run.figure("ramp_s", ramp_s, "s", note="all sensors' service + store handshakes")
    if ramp_central:
        run.figure("ramp_central_cpu_percent", ramp_central["cpu_percent"], "% of a core",
                   note="RSA key generation threads")
    run.figure("central_rss_idle_MB", idle_rss, "MB")
    if window:
        run.figure("central_rss_peak_MB", window["rss_peak_MB"], "MB", note="goal < 300 MB with 1,000 sensors")
        run.figure("central_rss_per_sensor_kB", 1000 * (window["rss_peak_MB"] - idle_rss) / max(1, connected),
                   "kB", note="above idle, service + store connection")
        run.figure("central_cpu_percent", window["cpu_percent"], "% of a core")
    run.figure("central_rss_max_MB", max(s.rss_MB for s in cs.samples), "MB", note="whole run incl. ramp")
    if db:
        run.figure("mariadb_rss_MB", db["rss_peak_MB"], "MB")
        run.figure("mariadb_cpu_percent", db["cpu_percent"], "% of a core")
    run.figure("pings", sum(r["pings"] for r in results), "pings", note=f"in {seconds:.0f} s")
    run.figure("missed_pongs", sum(missed.values()), "connections",
               note="service connections lost before the bench stopped, ramp included; goal 0")
    run.figure("missed_pongs_window", sum(v for k, v in missed.items() if "(window)" in k), "connections")
    run.figure("services_alive_at_end", sum(r["services_alive_at_end"] for r in results), "connections",
               note="service connections answering pings when the window ended")
    run.figure("service_ended_in_log", ended, "connections", note="central log SNIFFER SERVICE DISCONNECT/STOP")
    if lateness:
        run.figure("ping_lateness_p50_ms", ms * percentile(lateness, 50), "ms",
                   note="interval between pings minus 5 s")
        run.figure("ping_lateness_p99_ms", ms * percentile(lateness, 99), "ms")
        run.figure("ping_lateness_max_ms", ms * max(lateness), "ms")
    if turnaround:
        run.figure("pong_turnaround_p99_ms", ms * percentile(turnaround, 99), "ms",
                   note="client: ping received -> pong written")
    if lag:
        run.figure("client_loop_lag_p99_ms", ms * percentile(lag, 99), "ms", note="the bench client's own delay")
    run.figure("cdrs_acked", sum(r["cdrs_acked"] for r in results), "CDRs")
    run.figure("cdrs_per_s", sum(r["cdrs_acked"] for r in results) / seconds, "CDRs/s")
    if acks:
        run.figure("store_ack_p50_ms", ms * percentile(acks, 50), "ms")
        run.figure("store_ack_p99_ms", ms * percentile(acks, 99), "ms")
        run.figure("store_ack_max_ms", ms * max(acks), "ms")
    hs = merged("handshake_s")
    if hs:
        run.figure("handshake_p50_s", percentile(hs, 50), "s",
                   note="a sensor's start to both connections up, its wait for a ramp slot included")
        run.figure("handshake_p99_s", percentile(hs, 99), "s")
    run.figure("client_cpu_s", sum(r["cpu_s"] for r in results), "s", note=f"{len(results)} client process(es)")
    run.extra.update(service_lost=dict(missed), store_lost=dict(store_lost),
                     store_errors=dict(counter("store_errors")), connect_failed=dict(counter("connect_failed")),
                     client_maxrss_MB=[round(r["maxrss_MB"], 1) for r in results],
                     central_samples=[(round(s.t - cs.samples[0].t, 1), round(s.rss_MB, 1), round(s.cpu_s, 2))
                                      for s in cs.samples[::4]])


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["--client"] and len(argv) == 2:
        return client_process(argv[1])
    parser = bench_parser(__doc__)
    parser.add_argument("--sensors", type=int, default=0, help="sensors (default 1000, --quick 50)")
    parser.add_argument("--seconds", type=float, default=0, help="measurement window (default 180, --quick 20)")
    parser.add_argument("--clients", type=int, default=0, help="client processes (default 1 per 500 sensors)")
    parser.add_argument("--cdr-interval", type=float, default=10.0, help="mean seconds between a sensor's CDRs")
    parser.add_argument("--ramp-parallel", type=int, default=16, help="handshakes in flight per client process")
    parser.add_argument("--central-set", action="append", default=[], metavar="NAME=VALUE",
                        help="extra option for the central (repeatable), e.g. server_rsa_key_pool=32")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (central log, database)")
    parser.add_argument("--profile", action="store_true", help="py-spy the central during the window (top 12)")
    args = parser.parse_args(argv)
    sensors = args.sensors or (50 if args.quick else 1000)
    seconds = args.seconds or (20.0 if args.quick else 180.0)
    clients = args.clients or max(1, (sensors + 499) // 500)
    for name, value in (("--sensors", sensors), ("--clients", clients), ("--ramp-parallel", args.ramp_parallel)):
        if value < 1:
            parser.error(f"{name} must be at least 1")
    if seconds < PING_INTERVAL_S + 1:
        parser.error(f"--seconds must be at least {PING_INTERVAL_S + 1:.0f} (a ping interval)")
    if args.cdr_interval <= 0:
        parser.error("--cdr-interval must be positive")
    clients = min(clients, sensors)
    # SIGTERM (a CI timeout, a test's teardown) unwinds like Ctrl-C, through the finally that stops the central.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    params = {"sensors": sensors, "seconds": seconds, "clients": clients, "cdr_interval": args.cdr_interval,
              "ramp_parallel": args.ramp_parallel, "central_set": args.central_set, "profile": args.profile}
    try:
        with BenchRun("fleet", args, params=params) as run:
            run_fleet(run, sensors, seconds, clients, args.cdr_interval, args.ramp_parallel, args.central_set,
                      args.keep, args.profile)
    except BenchError as exc:
        print(f"fleet: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
