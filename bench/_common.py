"""What every bench script shares: the physical limits of this machine measured in the same run, figures printed
with their ratio to a limit, results written as JSON, and the common command line.

    from bench._common import BenchRun, bench_parser

    parser = bench_parser(__doc__)               # --quick, --json-only, --out
    args = parser.parse_args()
    with BenchRun("mirror", args) as run:        # machine, git commit and limits are recorded
        ...
        run.figure("packet_MBps", mbps, "MB/s", limit="aes_cbc_encrypt_64KiB")
    # on leaving: the table is printed, bench/results/<date>-mirror.json written

The limits are what the machine does with the bare primitives (cryptography's AES-128-CBC with a fresh context per
block, as the protocol encrypts each block from its IV; cramjam's raw snappy and lz4 block; zstandard level 1 as the
wire uses; one Trio TCP connection over loopback), so a figure reads as a fraction of what is physically possible
here, whatever else the shared machine was doing at the time. A result file keeps the figures, the limits, the git
commit, the machine and the mode (quick or full) so `bench/compare.py` can put two runs side by side.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import io
import json
import math
import os
import platform
import random
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

__all__ = [
    "BENCH_DIR",
    "RESULTS_DIR",
    "ROOT",
    "SCHEMA",
    "BenchError",
    "BenchRun",
    "Figure",
    "Limit",
    "bench_parser",
    "git_info",
    "load_result",
    "machine_info",
    "measure_limits",
    "percentile",
    "result_files",
    "sample_packet_area",
    "validate_result",
]

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
SCHEMA = "vmproto-bench/1"

# Measuring time per limit: enough rounds for a stable figure in a full run, a glance in a quick one.
FULL_BUDGET_S = 0.4
QUICK_BUDGET_S = 0.1


class BenchError(Exception):
    """A bench run or result file is unusable (bad figure, unknown limit, malformed or missing result)."""


@dataclass(frozen=True, slots=True)
class Limit:
    """One physical limit: `value` in `unit`, with a sentence saying what was measured."""

    key: str
    value: float
    unit: str
    what: str


@dataclass(frozen=True, slots=True)
class Figure:
    """One measured figure; `ratio` is value / limit when `limit` names a limit of the same unit."""

    key: str
    value: float
    unit: str
    limit: str | None = None
    ratio: float | None = None
    note: str = ""


# ------------------------------------------------------------------------------------------------ helpers
def percentile(values: list[float], p: float) -> float:
    """The `p`-th percentile (nearest rank, 0 <= p <= 100) of `values`. Raises BenchError when empty."""
    if not values:
        raise BenchError("percentile of no values")
    if not 0 <= p <= 100:
        raise BenchError(f"percentile {p} outside 0..100")
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def sample_packet_area(size: int = 1 << 20, seed: int = 11) -> bytes:
    """`size` bytes of Ethernet/IPv4/UDP/RTP G.711 frames back to back, the data a packetbuffer block compresses.

    Headers repeat with small changes and the 160-byte μ-law payloads are drawn from a small set of random
    voice-like frames, so compressors see the mild redundancy of real RTP rather than zeros or pure noise.
    """
    rng = random.Random(seed)
    voice = [bytes(min(255, max(0, int(rng.gauss(0x7F, 24)))) ^ 0x55 for _ in range(160)) for _ in range(48)]
    out = bytearray()
    seq = 0
    while len(out) < size:
        stream = rng.randrange(200)
        eth = bytes.fromhex("00163e0000010016 3e0000020800".replace(" ", ""))
        ip = bytes.fromhex("450000bc0000400040110000") + bytes([10, 0, stream // 250, stream % 250 + 1, 10, 9, 9, 9])
        udp = (10000 + 2 * stream).to_bytes(2, "big") + (20000).to_bytes(2, "big") + bytes.fromhex("00a80000")
        rtp = bytes([0x80, 0]) + (seq & 0xFFFF).to_bytes(2, "big") + (seq * 160 & 0xFFFFFFFF).to_bytes(4, "big") \
            + (0x1000 + stream).to_bytes(4, "big")
        out += eth + ip + udp + rtp + voice[rng.randrange(len(voice))]
        seq += 1
    return bytes(out[:size])


def _rate(fn: Callable[[], object], nbytes: int, budget: float, rounds: int = 5) -> float:
    """MB/s of `fn` processing `nbytes` per call: the best of `rounds` rounds sharing about `budget` seconds,
    after one warm-up call. The best round, because a limit is what the machine can do; on a shared machine the
    other rounds measure the neighbours too."""
    fn()
    best = 0.0
    for _ in range(rounds):
        calls = 0
        start = time.perf_counter()
        while True:
            fn()
            calls += 1
            elapsed = time.perf_counter() - start
            if elapsed >= budget / rounds:
                break
        best = max(best, nbytes * calls / elapsed / 1e6)
    return best


# ------------------------------------------------------------------------------------------------- limits
def _aes_limits(budget: float) -> list[Limit]:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    cipher = Cipher(algorithms.AES(b"0123456789abcdef"), modes.CBC(b"fedcba9876543210"))
    out = []
    for size, label in ((1024, "1KiB"), (64 * 1024, "64KiB")):
        plain = os.urandom(size)

        def enc(p: bytes = plain) -> bytes:
            e = cipher.encryptor()
            return e.update(p) + e.finalize()

        ct = enc()

        def dec(c: bytes = ct) -> bytes:
            d = cipher.decryptor()
            return d.update(c) + d.finalize()

        out.append(Limit(f"aes_cbc_encrypt_{label}", _rate(enc, size, budget), "MB/s",
                         f"AES-128-CBC encrypt, {label} blocks, a fresh cipher context per block (cryptography)"))
        out.append(Limit(f"aes_cbc_decrypt_{label}", _rate(dec, size, budget), "MB/s",
                         f"AES-128-CBC decrypt, {label} blocks, a fresh cipher context per block (cryptography)"))
    return out


def _compression_limits(budget: float, data: bytes) -> list[Limit]:
    import cramjam
    import zstandard

    zc = zstandard.ZstdCompressor(level=1, write_content_size=False, write_checksum=False)
    zd = zstandard.ZstdDecompressor()
    n = len(data)
    packed = {
        "snappy": bytes(cramjam.snappy.compress_raw(data)),
        "lz4": bytes(cramjam.lz4.compress_block(data, store_size=False)),
        "zstd": zc.compress(data),
    }
    codecs: dict[str, tuple[Callable[[], object], Callable[[], object], str]] = {
        "snappy": (lambda: cramjam.snappy.compress_raw(data), lambda: cramjam.snappy.decompress_raw(packed["snappy"]),
                   "raw snappy (cramjam)"),
        "lz4": (lambda: cramjam.lz4.compress_block(data, store_size=False),
                lambda: cramjam.lz4.decompress_block(packed["lz4"], output_len=n), "lz4 block (cramjam)"),
        "zstd": (lambda: zc.compress(data), lambda: zd.decompress(packed["zstd"], max_output_size=n),
                 "zstd level 1 (zstandard)"),
    }
    out = []
    for name, (comp, decomp, what) in codecs.items():
        ratio = n / len(packed[name])
        detail = f"{what} on {n // 1024} KiB of G.711 RTP frames (ratio {ratio:.2f})"
        out.append(Limit(f"{name}_compress", _rate(comp, n, budget), "MB/s", f"{detail}, compress"))
        out.append(Limit(f"{name}_decompress", _rate(decomp, n, budget), "MB/s", f"{detail}, decompress"))
    return out


def _tcp_limit(budget: float) -> Limit:
    import trio

    chunk = os.urandom(64 * 1024)
    received = 0

    async def main() -> float:
        nonlocal received
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        done = trio.Event()
        result: list[float] = []

        async def sink(stream: trio.SocketStream) -> None:
            nonlocal received
            async with stream:
                while data := await stream.receive_some(1 << 20):
                    received += len(data)
            done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, sink, listeners)
            client = await trio.open_tcp_stream("127.0.0.1", port)
            sent = 0
            async with client:
                for _ in range(16):  # warm-up: socket buffers, the event loop's first wake-ups
                    await client.send_all(chunk)
                    sent += len(chunk)
                for _ in range(5):  # best of 5 rounds, as for the other limits
                    while received < sent:  # start each round with nothing in flight
                        await trio.sleep(0)
                    start_bytes, start = received, time.perf_counter()
                    while time.perf_counter() - start < budget / 5:
                        await client.send_all(chunk)
                        sent += len(chunk)
                    # Count what arrived, not what was queued in the kernel: wait until the receiver caught up.
                    while received < sent:
                        await trio.sleep(0)
                    result.append((received - start_bytes) / (time.perf_counter() - start) / 1e6)
            await done.wait()
            nursery.cancel_scope.cancel()
        return max(result)

    value = trio.run(main)
    return Limit("tcp_loopback_trio", value, "MB/s",
                 "one Trio TCP connection over 127.0.0.1, 64 KiB writes, sender and receiver in one thread")


def measure_limits(quick: bool = False, data: bytes | None = None,
                   budget: float | None = None) -> dict[str, Limit]:
    """Measure every physical limit now. `data` is what the compressors run on (default: `sample_packet_area()`,
    256 KiB in quick mode); `budget` the seconds per figure. Returns limits by key."""
    b = budget if budget is not None else (QUICK_BUDGET_S if quick else FULL_BUDGET_S)
    sample = data if data is not None else sample_packet_area(256 * 1024 if quick else 1 << 20)
    if not sample:
        raise BenchError("the compression limits need non-empty data")
    limits = [*_aes_limits(b), *_compression_limits(b, bytes(sample)), _tcp_limit(b)]
    return {lim.key: lim for lim in limits}


# ---------------------------------------------------------------------------------------------- provenance
def git_info(root: Path = ROOT) -> dict[str, Any]:
    """{"commit", "dirty", "branch"} of the checkout; commit None outside git. `dirty` counts modified tracked
    files under vmproto/ and bench/, the code a figure depends on."""

    def git(*args: str) -> str | None:
        try:
            res = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        return res.stdout.strip() if res.returncode == 0 else None

    status = git("status", "--porcelain", "--untracked-files=no", "--", "vmproto", "bench")
    return {"commit": git("rev-parse", "HEAD"), "branch": git("rev-parse", "--abbrev-ref", "HEAD"),
            "dirty": len(status.splitlines()) if status else 0}


def machine_info() -> dict[str, Any]:
    """Host facts a figure depends on: CPU model and count, memory, kernel, Python, load at the start."""
    cpu = platform.processor() or platform.machine()
    mem_kb = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {"hostname": platform.node(), "cpu": cpu, "cpus": os.cpu_count(),
            "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "mem_total_MB": round(mem_kb / 1024) if mem_kb else None, "kernel": platform.release(),
            "python": platform.python_version(), "implementation": platform.python_implementation(),
            "loadavg_at_start": load}


# ------------------------------------------------------------------------------------------------- the run
def bench_parser(doc: str | None) -> argparse.ArgumentParser:
    """An ArgumentParser with the common options: --quick, --json-only, --out."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes and short runs (CI mode)")
    parser.add_argument("--json-only", action="store_true",
                        help="print only the result JSON on stdout (progress and tables go to stderr)")
    parser.add_argument("--out", metavar="PATH", default=str(RESULTS_DIR),
                        help="directory for <date>-<name>.json, or a .json file path, or '-' to write no file "
                             f"(default {RESULTS_DIR.relative_to(ROOT)})")
    return parser


class BenchRun:
    """One run of a bench script: collects limits and figures, prints them, writes the result file.

    Use as a context manager. Inside, with --json-only, anything printed goes to stderr so that stdout carries
    only the JSON. On a clean exit the table is printed and the file written (`path` holds it); on an exception
    nothing is written.
    """

    def __init__(self, name: str, args: argparse.Namespace, *, limits: bool = True,
                 limit_data: bytes | None = None, params: dict[str, Any] | None = None) -> None:
        if not name or not name.replace("_", "").isalnum():
            raise BenchError(f"bench name must be alphanumeric (underscores allowed), got {name!r}")
        self.name = name
        self.quick = bool(getattr(args, "quick", False))
        self.json_only = bool(getattr(args, "json_only", False))
        self.out = str(getattr(args, "out", RESULTS_DIR))
        self.params = params if params is not None else {
            k: v for k, v in vars(args).items() if k not in ("quick", "json_only", "out")}
        self.limits: dict[str, Limit] = {}
        self.figures: dict[str, Figure] = {}
        self.extra: dict[str, Any] = {}
        self.path: Path | None = None
        self.document: dict[str, Any] | None = None  # the result as written, set by finish()
        self._measure_limits = limits
        self._limit_data = limit_data
        self._started = _dt.datetime.now().astimezone()
        self._t0 = time.perf_counter()
        self._stdout: TextIO | None = None
        self._redirect: contextlib.AbstractContextManager[Any] | None = None

    # -- context manager
    def __enter__(self) -> BenchRun:
        if self.json_only:
            self._stdout = sys.stdout
            self._redirect = contextlib.redirect_stdout(sys.stderr)
            self._redirect.__enter__()
        self.machine = machine_info()
        self.git = git_info()
        if self._measure_limits:
            self.measure_limits(self._limit_data)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if exc_type is None:
                self.finish()
        finally:
            if self._redirect is not None:
                self._redirect.__exit__(None, None, None)
                self._redirect = None
        if exc_type is None and self.json_only and self._stdout is not None:
            json.dump(self.document, self._stdout, indent=1)
            self._stdout.write("\n")

    # -- collecting
    def measure_limits(self, data: bytes | None = None) -> dict[str, Limit]:
        """(Re)measure the standard limits, compressors on `data` (default the sample packet area)."""
        self.limits.update(measure_limits(self.quick, data))
        return self.limits

    def add_limit(self, key: str, value: float, unit: str, what: str) -> Limit:
        """Record a script-specific limit (e.g. RSA key generations per second for the handshake bench)."""
        if not math.isfinite(value):
            raise BenchError(f"limit {key}: value {value!r} is not a finite number")
        lim = Limit(key, float(value), unit, what)
        self.limits[key] = lim
        return lim

    def figure(self, key: str, value: float, unit: str, *, limit: str | None = None, note: str = "") -> Figure:
        """Record a figure. With `limit`, also its ratio to that limit (which must exist and share the unit).
        Returns the Figure. Raises BenchError for a non-finite value, an unknown limit or a unit mismatch."""
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise BenchError(f"figure {key}: value {value!r} is not a finite number")
        ratio = None
        if limit is not None:
            lim = self.limits.get(limit)
            if lim is None:
                raise BenchError(f"figure {key}: unknown limit {limit!r} (measured: {sorted(self.limits)})")
            if lim.unit != unit:
                raise BenchError(f"figure {key} is in {unit} but limit {limit} is in {lim.unit}")
            ratio = value / lim.value if lim.value else None
        fig = Figure(key, float(value), unit, limit, ratio, note)
        self.figures[key] = fig
        return fig

    def figures_from(self, values: dict[str, Any], units: dict[str, str], *, prefix: str = "") -> None:
        """Record every numeric entry of `values` whose key has a unit in `units` (others go to `extra`)."""
        for key, value in values.items():
            if key in units and isinstance(value, int | float) and not isinstance(value, bool):
                self.figure(prefix + key, value, units[key])
            else:
                self.extra[prefix + key] = value

    # -- output
    def result(self) -> dict[str, Any]:
        """The JSON-ready result document (see validate_result for its shape)."""
        return {
            "schema": SCHEMA,
            "name": self.name,
            "mode": "quick" if self.quick else "full",
            "started": self._started.isoformat(timespec="seconds"),
            "duration_s": round(time.perf_counter() - self._t0, 3),
            "git": self.git,
            "machine": self.machine,
            "params": _jsonable(self.params),
            "limits": {k: {"value": v.value, "unit": v.unit, "what": v.what} for k, v in self.limits.items()},
            "figures": {k: {"value": f.value, "unit": f.unit, "limit": f.limit, "ratio": f.ratio, "note": f.note}
                        for k, f in self.figures.items()},
            "extra": _jsonable(self.extra),
        }

    def table(self) -> str:
        """The figures (with ratios) and the limits as aligned text."""
        buf = io.StringIO()
        mode = "quick" if self.quick else "full"
        commit = (self.git.get("commit") or "?")[:10]
        buf.write(f"== {self.name} ({mode}) commit {commit}{' +dirty' if self.git.get('dirty') else ''} "
                  f"on {self.machine.get('cpus')} x {self.machine.get('cpu')}\n")
        if self.figures:
            width = max(len(k) for k in self.figures)
            for f in self.figures.values():
                line = f"  {f.key:<{width}}  {_fmt(f.value):>14} {f.unit:<10}"
                if f.ratio is not None:
                    line += f"  = {f.ratio:6.3f} x {f.limit}"
                if f.note:
                    line += f"  ({f.note})"
                buf.write(line.rstrip() + "\n")
        if self.limits:
            buf.write("  limits measured in this run:\n")
            width = max(len(k) for k in self.limits)
            for lim in self.limits.values():
                buf.write(f"    {lim.key:<{width}}  {_fmt(lim.value):>12} {lim.unit:<8} {lim.what}\n")
        return buf.getvalue()

    def finish(self) -> Path | None:
        """Print the table and write the result file unless --out is '-'. Returns the path written."""
        self.document = doc = validate_result(self.result())
        print(self.table(), end="")
        if self.out == "-":
            return None
        out = Path(self.out)
        if out.suffix == ".json":
            path = out
        else:
            stamp = self._started.strftime("%Y-%m-%d-%H%M%S")
            path = out / f"{stamp}-{self.name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(doc, indent=1) + "\n")
        tmp.replace(path)
        self.path = path
        print(f"  result written to {path}")
        return path


def _fmt(value: float) -> str:
    if value == int(value):
        return f"{int(value):,}"
    if abs(value) >= 100:
        return f"{value:,.1f}"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


# ------------------------------------------------------------------------------------------ reading results
def validate_result(doc: Any) -> dict[str, Any]:
    """Check the shape of a result document; return it. Raises BenchError naming the first defect."""
    if not isinstance(doc, dict):
        raise BenchError("result is not a JSON object")
    if doc.get("schema") != SCHEMA:
        raise BenchError(f"schema is {doc.get('schema')!r}, expected {SCHEMA!r}")
    for key, kind in (("name", str), ("mode", str), ("started", str), ("duration_s", int | float),
                      ("git", dict), ("machine", dict), ("params", dict), ("limits", dict), ("figures", dict)):
        if not isinstance(doc.get(key), kind):
            raise BenchError(f"result field {key!r} missing or not {getattr(kind, '__name__', kind)}")
    if doc["mode"] not in ("quick", "full"):
        raise BenchError(f"mode is {doc['mode']!r}")
    for section in ("limits", "figures"):
        for key, entry in doc[section].items():
            if not isinstance(entry, dict) or not isinstance(entry.get("unit"), str):
                raise BenchError(f"{section}.{key}: not an object with a unit")
            value = entry.get("value")
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise BenchError(f"{section}.{key}: value {value!r} is not a finite number")
    for key, entry in doc["figures"].items():
        limit = entry.get("limit")
        if limit is not None and limit not in doc["limits"]:
            raise BenchError(f"figures.{key}: refers to limit {limit!r} that the result does not hold")
    return doc


def load_result(path: Path) -> dict[str, Any]:
    """Read and validate one result file. Raises BenchError when unreadable or malformed."""
    try:
        doc = json.loads(Path(path).read_text())
    except OSError as exc:
        raise BenchError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except json.JSONDecodeError as exc:
        raise BenchError(f"{path} is not JSON: {exc}") from exc
    try:
        return validate_result(doc)
    except BenchError as exc:
        raise BenchError(f"{path}: {exc}") from exc


def result_files(name: str | None = None, directory: Path = RESULTS_DIR,
                 mode: str | None = None) -> list[Path]:
    """Result files in `directory` (oldest first), only those of bench `name` and `mode` when given.
    Unreadable files are skipped."""
    found: list[tuple[str, Path]] = []
    for path in Path(directory).glob("*.json"):
        try:
            doc = load_result(path)
        except BenchError:
            continue
        if (name is None or doc["name"] == name) and (mode is None or doc["mode"] == mode):
            found.append((doc["started"] + path.name, path))
    return [p for _, p in sorted(found)]
