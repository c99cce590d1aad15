"""Packet mirroring end to end, our sensor → our central: python bench/mirror.py [--quick] [options]

What runs, as separate processes:
* `python -m vmproto.sensor -c sensor.conf -r CAPTURE` in mirroring mode (`packetbuffer_sender = yes`): the
  capture file is replayed as fast as the pipeline takes it; every frame goes to the MirrorSender (header offsets,
  containers, snappy, checksum, AES, confirmation) before any analysis;
* `python -m vmproto.server -c central.conf` (embedded MariaDB) whose `packetbuffer block` handler validates,
  deduplicates, decodes and hands every container to the pb spool (`--sink spool`, the default), or the same
  server with a sink that only counts (`--sink null`: the channel figure without the pcap writing).

The capture: generated SIP calls (vmproto.testing.callgen) with G.711 RTP both ways every 20 ms, many calls
overlapping, Ethernet framing; cached under $TMPDIR by its parameters.

Measured: the window in which the central is busy with packetbuffer data (its /proc CPU time, sampled every
20 ms), packets/s and MB/s of packet data (captured bytes) in that window, CPU seconds of each side in the window
and over the whole process (/proc/<pid>/stat), and the limits of this machine measured in the same run:
AES-128-CBC encryption and decryption at the container size, snappy compression and decompression of the data
area, loopback TCP; each figure is printed with its ratio to the limits. `--quick` finishes in < 20 s. Common
options (bench/_common.py): --json-only, --out; results go to bench/results/<date>-mirror.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import BenchRun, bench_parser  # noqa: E402
from vmproto.sensor.capture.writer import PcapWriter  # noqa: E402
from vmproto.testing import pcapgen as g  # noqa: E402
from vmproto.testing.callgen import CallSpec, generate_call  # noqa: E402
from vmproto.wire.compression import PbCompression, pb_compress, pb_decompress  # noqa: E402
from vmproto.wire.crypto import AesBlockCipher  # noqa: E402

PY = sys.executable
PASSWORD = "bench"
CLK_TCK = os.sysconf("SC_CLK_TCK")
SAMPLE_S = 0.02
MB = 1e6


# --------------------------------------------------------------------------------------------------- the capture
def _ethernet(ip: bytes) -> bytes:
    return g.ethernet(ip)


def write_capture(path: Path, calls: int, seconds: float, stagger: float) -> tuple[int, int]:
    """Write `calls` G.711 calls of `seconds` RTP each, starting `stagger` s apart, time-ordered, as an Ethernet
    pcap. Returns (packets, captured bytes)."""
    t0 = float(int(time.time()) - 3600)
    # callgen's RTP payloads are constant; real G.711 voice barely compresses, so each RTP payload is replaced
    # by one of many random ones (more than snappy's 64 KiB window holds). UDP checksums are 0 (none) anyway.
    rnd = random.Random(7)
    voice = [rnd.randbytes(160) for _ in range(4096)]
    packets = []
    for i in range(calls):
        a, b = 10 + i // 250, i % 250
        spec = CallSpec(seed=i + 1, call_id=f"bench-{i}@192.0.2.{b}", start_s=t0 + i * stagger, rtp_seconds=seconds,
                        caller_ip=bytes([10, a, b, 1]), callee_ip=bytes([10, a, b, 2]),
                        caller_rtp_port=10000 + 2 * (i % 20000), callee_rtp_port=30000 + 2 * (i % 15000))
        for k, p in enumerate(generate_call(spec).packets):
            ip = p.ip_packet
            if p.sport != 5060 and len(p.payload) == 172:
                ip = ip[:40] + voice[(i * 7919 + k) % len(voice)]
            packets.append((p.ts_ns, ip))
    packets.sort(key=lambda p: p[0])
    total = 0
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as fh:
        writer = PcapWriter(fh, 1)
        for ts, ip in packets:
            frame = _ethernet(ip)
            writer.write(ts, frame)
            total += len(frame)
        writer.close()
    os.replace(tmp, path)
    return len(packets), total


def capture(calls: int, seconds: float) -> tuple[Path, int, int]:
    """The cached capture for these parameters: (path, packets, captured bytes)."""
    stagger = 0.05
    key = hashlib.sha256(f"v3 {calls} {seconds} {stagger}".encode()).hexdigest()[:12]
    folder = Path(tempfile.gettempdir()) / "vmproto-bench-mirror"
    folder.mkdir(exist_ok=True)
    path, meta = folder / f"rtp-{key}.pcap", folder / f"rtp-{key}.json"
    if not (path.exists() and meta.exists()):
        packets, size = write_capture(path, calls, seconds, stagger)
        meta.write_text(json.dumps({"packets": packets, "bytes": size}))
    info = json.loads(meta.read_text())
    return path, info["packets"], info["bytes"]


def sample_area(path: Path, size: int) -> bytes:
    """About `size` bytes laid out like a container's data area (36-byte header + frame per packet), taken from
    the capture, for the codec limits."""
    from vmproto.sensor.capture.files import CaptureFileReader

    parts, n = [], 0
    with CaptureFileReader(path, 4096) as reader:
        for batch in reader:
            for frame in batch.frames:
                parts.append(bytes(36))
                parts.append(bytes(frame))
                n += 36 + len(frame)
                if n >= size:
                    return b"".join(parts)
    return b"".join(parts)


# ---------------------------------------------------------------------------------------------------- the limits
def _rate(nbytes: int, fn, budget: float) -> float:  # type: ignore[no-untyped-def]
    fn()
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < budget:
        fn()
        calls += 1
    return nbytes * calls / (time.perf_counter() - start) / MB


def loopback_tcp(budget: float, chunk: int = 1 << 20) -> float:
    """MB/s one TCP connection over 127.0.0.1 carries (one sending thread, one receiving thread)."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    received = [0]

    def reader() -> None:
        conn, _ = listener.accept()
        buf = bytearray(chunk)
        with conn:
            while n := conn.recv_into(buf):
                received[0] += n

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    data = bytes(chunk)
    with socket.create_connection(("127.0.0.1", port)) as s:
        start = time.perf_counter()
        while time.perf_counter() - start < budget:
            s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        thread.join(10)
        elapsed = time.perf_counter() - start
    listener.close()
    return received[0] / elapsed / MB


def limits(area: bytes, budget: float) -> dict[str, float]:
    """AES-128-CBC, snappy and loopback TCP MB/s on this machine, at the block size used."""
    aes = AesBlockCipher(b"0123456789abcdef", b"fedcba9876543210")
    packed = pb_compress(PbCompression.SNAPPY, area)
    ct = aes.encrypt(packed)
    return {
        "aes_128_cbc_encrypt_MBps": _rate(len(packed), lambda: aes.encrypt(packed), budget),
        "aes_128_cbc_decrypt_MBps": _rate(len(ct), lambda: aes.decrypt(ct), budget),
        "snappy_compress_MBps": _rate(len(area), lambda: pb_compress(PbCompression.SNAPPY, area), budget),
        "snappy_decompress_MBps": _rate(len(area), lambda: pb_decompress(PbCompression.SNAPPY, packed, len(area)),
                                        budget),
        "loopback_tcp_MBps": loopback_tcp(budget),
        "snappy_ratio": len(packed) / len(area),
    }


# ------------------------------------------------------------------------------------------------ the processes
def child_pid(pid: int, timeout: float = 10.0) -> int:
    """The first child of `pid` (the profiled Python under py-spy)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for task in Path(f"/proc/{pid}/task").iterdir():
            kids = (task / "children").read_text().split()
            if kids:
                return int(kids[0])
        time.sleep(0.01)
    raise SystemExit(f"process {pid} started no child")


def profile_top(raw: Path, n: int = 15) -> list[str]:
    """The top of a py-spy raw (collapsed stacks) profile: functions by self and by inclusive share."""
    own: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        total += count
        frames = [f.split(" (")[0] + " (" + f.split(" (")[-1].rsplit("/", 1)[-1] for f in stack.split(";")]
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for f in set(frames):
            incl[f] = incl.get(f, 0) + count
    lines = [f"  {total} samples; self:"]
    lines += [f"  {100 * c / total:5.1f}%  {f}" for f, c in sorted(own.items(), key=lambda x: -x[1])[:n]]
    lines.append("  inclusive:")
    lines += [f"  {100 * c / total:5.1f}%  {f}" for f, c in sorted(incl.items(), key=lambda x: -x[1])[:n]]
    return lines


def conf(path: Path, **options: object) -> Path:
    path.write_text("[general]\n" + "".join(f"{k} = {v}\n" for k, v in options.items()))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_s(pid: int) -> float:
    """utime + stime of a live process, seconds (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def run_queue_s(pid: int) -> float:
    """Seconds the process's threads waited for a CPU while runnable (/proc/<pid>/task/*/schedstat), 0 when
    gone: how much of the "waiting" is other processes using the cores."""
    total = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                total += int((task / "schedstat").read_text().split()[1])
            except (OSError, IndexError, ValueError):
                continue
    except OSError:
        return 0.0
    return total / 1e9


def run_null_central(config_file: str) -> int:
    """The central with a sink that only counts (child process of `--sink null`); prints the count at exit."""
    import trio

    from vmproto import logs
    from vmproto.config import load_file
    from vmproto.server.__main__ import _run
    from vmproto.server.app import Server
    from vmproto.server.pbspool import NullSink

    logs.setup(0)
    sink = NullSink()
    trio.run(_run, Server(load_file(config_file), sink=sink))
    print(f"null sink: packets={sink.packets} bytes={sink.bytes}", flush=True)
    return 0


def spool_packets(folder: Path) -> tuple[int, int]:
    """(packets, captured bytes) in every pcap of the pb spool."""
    from vmproto.sensor.capture.files import CaptureFileReader

    packets = size = 0
    for path in sorted(folder.glob("*/pb-*.pcap")):
        with CaptureFileReader(path, 8192) as reader:
            for batch in reader:
                packets += len(batch.frames)
                size += sum(map(len, batch.frames))
    return packets, size


def wait_idle(pid: int, timeout: float = 60.0) -> None:
    """Return once `pid` used under 5 % of a core for 0.3 s (the central's RSA key pool is full)."""
    deadline = time.monotonic() + timeout
    quiet, last = 0, cpu_s(pid)
    while time.monotonic() < deadline and quiet < 3:
        time.sleep(0.1)
        now = cpu_s(pid)
        quiet = quiet + 1 if now - last < 0.005 else 0
        last = now


def wait_log(proc: subprocess.Popen[bytes], log: Path, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"process exited ({proc.returncode}); see {log}:\n{log.read_text()[-3000:]}")
        if text in log.read_text(errors="replace"):
            return
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {text!r} in {log}")


class _Pid:
    def __init__(self, pid: int) -> None:
        self.pid = pid


def run(args: argparse.Namespace, pcap: Path, work: Path) -> dict[str, object]:
    """Start the central, replay the capture through a mirroring sensor; return the measurements."""
    port = free_port()
    spool = work / "pbspool"
    central_conf = conf(work / "central.conf", server_bind="127.0.0.1", server_bind_port=port,
                        server_password=PASSWORD, datadir=work / "central", server_rsa_key_pool=2,
                        server_pb_analysis="yes" if args.sink == "analysis" else "no",
                        **({"server_pb_spool": spool} if args.sink == "spool" else {}))
    sensor_conf = conf(work / "sensor.conf", id_sensor=7, packetbuffer_sender="yes", server_destination="127.0.0.1",
                       server_destination_port=port, server_password=PASSWORD, managerport=0,
                       spooldir=work / "sensor-spool", max_buffer_mem=args.buffer_mb,
                       mirror_require_confirmation="no" if args.no_confirm else "yes")
    central_log, sensor_log = work / "central.log", work / "sensor.log"
    if args.sink == "null":
        cmd = [PY, str(Path(__file__).resolve()), "--central-null", str(central_conf)]
    else:
        cmd = [PY, "-m", "vmproto.server", "--config-file", str(central_conf)]
    sensor_cmd = [PY, "-m", "vmproto.sensor", "--config-file", str(sensor_conf), "-r", str(pcap)]
    spy = [str(Path(PY).with_name("py-spy")), "record", "-f", "raw", "-r", "250", "--nonblocking", "-o"]
    if args.profile:
        cmd = [*spy, str(work / "central.prof"), "--", *cmd]
        sensor_cmd = [*spy, str(work / "sensor.prof"), "--", *sensor_cmd]
    central_proc = subprocess.Popen(cmd, cwd=ROOT, stdout=central_log.open("wb"), stderr=subprocess.STDOUT,
                                    start_new_session=True)
    central = central_proc
    try:
        if args.profile:
            central = _Pid(child_pid(central_proc.pid))
        wait_log(central_proc, central_log, "server started", 120)
        wait_idle(central.pid)
        samples: list[tuple[float, float, float, float, float]] = []
        started = time.monotonic()
        sensor = subprocess.Popen(sensor_cmd, cwd=ROOT, stdout=sensor_log.open("wb"), stderr=subprocess.STDOUT)
        sensor_pid = child_pid(sensor.pid) if args.profile else sensor.pid
        status = None
        while status is None:
            now = time.monotonic()
            samples.append((now, cpu_s(central.pid), cpu_s(sensor_pid), run_queue_s(central.pid),
                            run_queue_s(sensor_pid)))
            pid, status_raw, usage = os.wait4(sensor.pid, os.WNOHANG)
            if pid:
                status = os.waitstatus_to_exitcode(status_raw)
                sensor.returncode = status
                sensor_total_cpu = usage.ru_utime + usage.ru_stime
                break
            time.sleep(SAMPLE_S)
        ended = time.monotonic()
        samples.append((ended, cpu_s(central.pid), samples[-1][2], run_queue_s(central.pid), samples[-1][4]))
        if status != 0:
            raise SystemExit(f"sensor exited {status}; see {sensor_log}:\n{sensor_log.read_text()[-3000:]}")
    finally:
        if central_proc.poll() is None:
            os.kill(central.pid, signal.SIGTERM)
            try:
                central_proc.wait(60)
            except subprocess.TimeoutExpired:
                central_proc.kill()
                central_proc.wait()
    # The transfer window: the central idles before the sensor connects and after the last block (its key pool
    # is full, pings are rare), so it runs from the first to the last sample interval in which the central used
    # more than a third of a core. /proc counts in clock ticks (10 ms); intervals are 20 ms or more.
    active = [i for i in range(1, len(samples))
              if samples[i][1] - samples[i - 1][1] > (samples[i][0] - samples[i - 1][0]) / 3]
    if not active:
        raise SystemExit("the central never got busy: nothing was mirrored?")
    t0, c0, s0, q0, p0 = samples[active[0] - 1]
    t1, c1, s1, q1, p1 = samples[active[-1]]
    window = t1 - t0
    if args.sink == "null":
        text = central_log.read_text()
        line = [ln for ln in text.splitlines() if ln.startswith("null sink:")][-1]
        got = dict(kv.split("=") for kv in line.split(":", 1)[1].split())
        delivered, delivered_bytes = int(got["packets"]), int(got["bytes"])
    elif args.sink == "spool":
        delivered, delivered_bytes = spool_packets(spool)
    else:  # the analysis keeps no packets: the sensor's own count (its exit status 0 says all were confirmed)
        line = [ln for ln in sensor_log.read_text().splitlines() if "sensor stopped" in ln][-1]
        delivered = int(line.split("packets=")[1].split()[0])
        delivered_bytes = 0
    return {"window_s": window, "sensor_wall_s": ended - started, "central_runqueue_s": q1 - q0,
            "sensor_runqueue_s": p1 - p0,
            "central_cpu_window_s": c1 - c0, "sensor_cpu_window_s": s1 - s0,
            "sensor_cpu_total_s": sensor_total_cpu, "delivered_packets": delivered,
            "delivered_bytes": delivered_bytes}


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--calls", type=int, default=0, help="calls in the capture (default 1000, quick 300)")
    parser.add_argument("--seconds", type=float, default=0, help="RTP seconds per call (default 30, quick 10)")
    parser.add_argument("--sink", choices=("spool", "null", "analysis"), default="spool",
                        help="central packet sink: the pb pcap spool, count only, or the central call analysis")
    parser.add_argument("--no-confirm", action="store_true", help="mirror_require_confirmation = no")
    parser.add_argument("--buffer-mb", type=int, default=256, help="sensor max_buffer_mem (MB)")
    parser.add_argument("--json", help="also write the flat figures to this file (the result file is --out)")
    parser.add_argument("--keep", help="work directory to keep (logs, configs, spool); default a temporary one")
    parser.add_argument("--profile", action="store_true",
                        help="run both sides under py-spy and print the top of each profile (slows them a little)")
    parser.add_argument("--central-null", metavar="CONF", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.central_null:
        return run_null_central(args.central_null)
    if args.calls < 0 or args.seconds < 0:
        parser.error("--calls and --seconds must be positive")
    calls = args.calls or (300 if args.quick else 1000)
    seconds = args.seconds or (10.0 if args.quick else 30.0)
    params = {k: v for k, v in vars(args).items() if k not in ("quick", "json_only", "out", "central_null")}
    with BenchRun("mirror", args, limits=False, params={**params, "calls": calls, "seconds": seconds}) as bench:
        pcap, packets, size = capture(calls, seconds)
        area = sample_area(pcap, 1 << 20)
        bench.measure_limits(area)  # the common limits, compressors on this capture's packet data
        lim = limits(area, 0.2 if args.quick else 0.5)
        with tempfile.TemporaryDirectory(prefix="vmproto-bench-mirror-") as tmp:
            work = Path(args.keep) if args.keep else Path(tmp)
            work.mkdir(parents=True, exist_ok=True)
            for stale in ("pbspool", "sensor-spool"):
                shutil.rmtree(work / stale, ignore_errors=True)
            got = run(args, pcap, work)
            if args.profile:
                for side in ("sensor", "central"):
                    print(f"profile of the {side}:")
                    print("\n".join(profile_top(work / f"{side}.prof")))
        window = got["window_s"]
        pps = packets / window
        mbps = size / window / MB
        out: dict[str, object] = {
            "capture_packets": packets, "capture_MB": round(size / MB, 1), "calls": calls, "sink": args.sink,
            "confirmation": not args.no_confirm,
            "delivered_packets": got["delivered_packets"],
            "window_s": round(window, 3), "sensor_wall_s": round(got["sensor_wall_s"], 2),
            "packets_per_s": round(pps), "packet_MBps": round(mbps, 1),
            "sensor_cpu_window_s": round(got["sensor_cpu_window_s"], 2),
            "central_cpu_window_s": round(got["central_cpu_window_s"], 2),
            "sensor_cpu_share": round(got["sensor_cpu_window_s"] / window, 2),
            "central_cpu_share": round(got["central_cpu_window_s"] / window, 2),
            "sensor_runqueue_window_s": round(got["sensor_runqueue_s"], 2),
            "central_runqueue_window_s": round(got["central_runqueue_s"], 2),
            "load_average_1m": round(os.getloadavg()[0], 1),
            "sensor_cpu_total_s": round(got["sensor_cpu_total_s"], 2),
            "packets_per_sensor_cpu_s": round(packets / max(got["sensor_cpu_window_s"], 1e-9)),
            "packets_per_central_cpu_s": round(packets / max(got["central_cpu_window_s"], 1e-9)),
            **{k: round(v, 3 if k == "snappy_ratio" else 1) for k, v in lim.items()},
            "ratio_to_aes_encrypt": round(mbps * lim["snappy_ratio"] / lim["aes_128_cbc_encrypt_MBps"], 3),
            "ratio_to_snappy_compress": round(mbps / lim["snappy_compress_MBps"], 3),
            "ratio_to_loopback_tcp": round(mbps * lim["snappy_ratio"] / lim["loopback_tcp_MBps"], 3),
        }
        for k, v in out.items():
            print(f"{k:28} {v}")
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=1))
        _record(bench, got, packets, size, lim)
    if got["delivered_packets"] != packets:
        print(f"ERROR: the central stored {got['delivered_packets']} of {packets} packets", file=sys.stderr)
        return 1
    return 0


def _record(run: BenchRun, got: dict[str, Any], packets: int, size: int, lim: dict[str, float]) -> None:
    """The figures and this script's own limits (measured through our wrappers at the container size) on `run`."""
    window = got["window_s"]
    mbps = size / window / MB
    run.add_limit("aes_cbc_encrypt_container", lim["aes_128_cbc_encrypt_MBps"], "MB/s",
                  "our AesBlockCipher on one snappy-compressed 1 MiB packet area")
    run.add_limit("snappy_compress_ours", lim["snappy_compress_MBps"], "MB/s",
                  "our pb_compress (snappy) on a 1 MiB packet area")
    run.figure("packets_per_s", packets / window, "packets/s", note="goal about 700,000 (G.711)")
    # Every captured byte is compressed by the sensor: snappy is the first ceiling of the packet data rate.
    run.figure("packet_MBps", mbps, "MB/s", limit="snappy_compress", note="goal 150 MB/s of packet data")
    run.figure("packet_MBps_vs_our_snappy", mbps, "MB/s", limit="snappy_compress_ours")
    # What goes through AES and TCP is the compressed data.
    compressed = mbps * lim["snappy_ratio"]
    run.figure("compressed_MBps", compressed, "MB/s", limit="aes_cbc_encrypt_64KiB",
               note=f"snappy ratio {lim['snappy_ratio']:.3f}")
    run.figure("compressed_MBps_vs_tcp", compressed, "MB/s", limit="tcp_loopback_trio")
    run.figure("delivered_packets", got["delivered_packets"], "packets", note=f"of {packets}")
    run.figure("sensor_cpu_share", got["sensor_cpu_window_s"] / window, "cores")
    run.figure("central_cpu_share", got["central_cpu_window_s"] / window, "cores")
    run.figure("packets_per_sensor_cpu_s", packets / max(got["sensor_cpu_window_s"], 1e-9), "packets/s")
    run.figure("packets_per_central_cpu_s", packets / max(got["central_cpu_window_s"], 1e-9), "packets/s")
    run.figure("sensor_runqueue_s", got["sensor_runqueue_s"], "s", note="waiting for a core in the window")
    run.figure("central_runqueue_s", got["central_runqueue_s"], "s")


if __name__ == "__main__":
    sys.exit(main())
