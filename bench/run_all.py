"""Run every bench script and summarise: python bench/run_all.py [--quick] [--only a,b] [--out DIR]

Each script runs in its own process, one after the other (they measure throughput: running them side by side
would make each the others' load), with --json-only so its result document comes back on stdout; its own output
goes to a log beside the results (`--out`, default bench/results/). A script not (yet) on the common harness runs
with --quick only and is reported without figures. The summary lists each script's status, wall time and
headline figures with their ratio to the limits measured in its run. Exit status: 0 when every script ran, 1
otherwise.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import (  # noqa: E402
    BENCH_DIR,
    RESULTS_DIR,
    ROOT,
    BenchError,
    load_result,
    result_files,
    validate_result,
)

SCRIPTS = ["limits", "codecs", "decode", "analysis", "store", "handshake", "mirror", "fleet"]

# The figures a reader looks at first (the goals); others are in the result file.
HEADLINES: dict[str, list[str]] = {
    "limits": ["aes_cbc_encrypt_1KiB", "snappy_compress", "tcp_loopback_trio"],
    "codecs": ["aes_block_encrypt_1KiB", "snappy_packet_area_compress", "container_encode", "container_decode"],
    "decode": ["read_ours_c_walk", "decode_plain_c_cpu_median", "decode_plain_python_cpu_median"],
    "analysis": ["packets_per_s", "packets_per_cpu_s"],
    "store": ["rows_per_s", "cdrs_per_s", "ack_p99_ms"],
    "handshake": ["store_pool_p50_ms", "service_pool_p50_ms", "storm_pool_p99_ms"],
    "mirror": ["packet_MBps", "packets_per_s"],
    "fleet": ["central_rss_peak_MB", "missed_pongs", "ping_lateness_p99_ms", "store_ack_p99_ms"],
}


def on_common_harness(script: Path) -> bool:
    """True when the script uses bench/_common.py (and so takes --json-only and --out)."""
    return "bench._common" in script.read_text()


def run_script(name: str, quick: bool, out: Path, timeout: float,
               extra: list[str] | None = None) -> dict[str, Any]:
    """Run one script; return {"name", "status", "seconds", "result" (document or None), "log"}."""
    script = BENCH_DIR / f"{name}.py"
    if not script.exists():
        return {"name": name, "status": "missing", "seconds": 0.0, "result": None, "log": None}
    common = on_common_harness(script)
    cmd = [sys.executable, str(script)] + (["--quick"] if quick else [])
    if common:
        cmd += ["--json-only", "--out", str(out)]
    cmd += extra or []
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / f"run_all-{name}.log"
    start = time.perf_counter()
    try:
        with log_path.open("w") as log:
            proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True, timeout=timeout,
                                  check=False)
    except subprocess.TimeoutExpired:
        return {"name": name, "status": f"timeout after {timeout:.0f} s", "seconds": time.perf_counter() - start,
                "result": None, "log": str(log_path)}
    seconds = time.perf_counter() - start
    if not common:
        with log_path.open("a") as log:
            log.write(proc.stdout)
    status = "ok" if proc.returncode == 0 else f"exit {proc.returncode}"
    result = None
    if common and proc.returncode == 0:
        try:
            result = validate_result(json.loads(proc.stdout))
        except (json.JSONDecodeError, BenchError) as exc:
            status = f"bad result: {exc}"
    elif proc.returncode == 0:
        status = "ok (no result file: not on the common harness)"
    return {"name": name, "status": status, "seconds": seconds, "result": result, "log": str(log_path)}


def summary(runs: list[dict[str, Any]]) -> str:
    """The one-screen summary of `runs` as text."""
    lines = []
    for r in runs:
        lines.append(f"{r['name']:<10} {r['status']:<14} {r['seconds']:7.1f} s"
                     + (f"   log {r['log']}" if r["status"] != "ok" and r["log"] else ""))
        doc = r["result"]
        if not doc:
            continue
        figures = doc["figures"]
        keys = [k for k in HEADLINES.get(r["name"], []) if k in figures] or list(figures)[:4]
        for key in keys:
            f = figures[key]
            ratio = f" = {f['ratio']:.3f} x {f['limit']}" if f.get("ratio") is not None else ""
            lines.append(f"    {key:<34} {f['value']:>14,.2f} {f['unit']}{ratio}")
        if r["name"] == "limits":
            for key in keys:
                lim = doc["limits"][key]
                lines.append(f"    {key:<34} {lim['value']:>14,.1f} {lim['unit']}")
    return "\n".join(lines) + "\n"


def markdown_table(directory: Path, names: list[str]) -> str:
    """A markdown table of the latest full result of each bench in `names` found in `directory` (every figure,
    with its ratio), for bench/README.md. Benches without a full result are listed as such."""
    lines = ["| bench | figure | value | ratio to limit | run |", "|---|---|---|---|---|"]
    for name in names:
        files = result_files(name, directory, mode="full")
        if not files:
            lines.append(f"| {name} | (no full result yet) | | | |")
            continue
        doc = load_result(files[-1])
        run = f"{doc['started'][:16]} {(doc['git'].get('commit') or '?')[:8]}"
        if not doc["figures"]:  # the limits bench: its limits are its figures
            for key, lim in doc["limits"].items():
                lines.append(f"| {name} | `{key}`: {lim['what']} | {lim['value']:,.1f} {lim['unit']} | | {run} |")
                run = ""
        for key, f in doc["figures"].items():
            ratio = f"{f['ratio']:.3f} x `{f['limit']}`" if f.get("ratio") is not None else ""
            value = f"{f['value']:,.0f}" if abs(f["value"]) >= 100 else f"{f['value']:.3g}"
            note = f" ({f['note']})" if f.get("note") else ""
            lines.append(f"| {name} | `{key}`{note} | {value} {f['unit']} | {ratio} | {run} |")
            run = ""
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="every script in its quick mode")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {','.join(SCRIPTS)}")
    parser.add_argument("--skip", default="", help="comma-separated scripts to leave out")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="where results and logs go")
    parser.add_argument("--timeout", type=float, default=0, help="seconds per script (default 300 quick, 3600 full)")
    parser.add_argument("--table", action="store_true",
                        help="run nothing: print the markdown table of the latest full results in --out")
    args = parser.parse_args(argv)
    only = [s for s in args.only.split(",") if s]
    skip = {s for s in args.skip.split(",") if s}
    unknown = [s for s in [*only, *skip] if s not in SCRIPTS]
    if unknown:
        parser.error(f"unknown script(s) {unknown}; known: {SCRIPTS}")
    names = [s for s in (only or SCRIPTS) if s not in skip]
    if args.table:
        print(markdown_table(args.out, names), end="")
        return 0
    timeout = args.timeout or (300.0 if args.quick else 3600.0)
    runs = []
    for name in names:
        print(f"running {name} ...", flush=True)
        runs.append(run_script(name, args.quick, args.out, timeout))
    print()
    print(summary(runs), end="")
    return 0 if all(r["status"].startswith("ok") for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
