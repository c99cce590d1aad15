"""Run the wire-core fuzz harnesses with atheris (coverage guided), or with the seeded mutator.

    python fuzz/run.py --list
    python fuzz/run.py --harness store_msg --seconds 60
    python fuzz/run.py --all --seconds 20
    python fuzz/run.py --all --seconds 5 --mutator      # no atheris needed
    python fuzz/run.py --make-corpus                    # (re)write the seed files under fuzz/corpus

Each atheris harness runs in its own process with libFuzzer's ``-max_total_time``, an RSS limit and a malloc
limit (a decompression bomb that ignored the caps aborts the run), its corpus in ``fuzz/corpus/<name>``
(seeded first from :mod:`fuzz.seeds`) and crash inputs in ``fuzz/crashes``. Known findings
(:data:`fuzz.checks.KNOWN_ISSUES`) are counted, not reported, unless ``--strict``. A summary line per harness
gives executions, executions per second, peak RSS, and new crashes.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CORPUS = ROOT / "fuzz" / "corpus"
CRASHES = ROOT / "fuzz" / "crashes"
RSS_LIMIT_MB = 2048
MALLOC_LIMIT_MB = 1024


def _worker(name: str, seconds: int, strict: bool) -> None:
    """Inside the child process: instrument vmproto and the harnesses, then hand over to libFuzzer."""
    import atheris

    with atheris.instrument_imports(include=["vmproto", "fuzz"]):
        from fuzz.checks import known_issue
        from fuzz.harnesses import HARNESSES

    harness = HARNESSES[name]
    known: dict[str, int] = {}

    def one_input(data: bytes) -> None:
        try:
            harness(data)
        except Exception as exc:
            issue = None if strict else known_issue(exc)
            if issue is None:
                raise
            known[issue.id] = known.get(issue.id, 0) + 1

    import atexit

    atexit.register(lambda: print(f"known-issues: {known}", file=sys.stderr, flush=True))
    corpus = CORPUS / name
    CRASHES.mkdir(parents=True, exist_ok=True)
    argv = [sys.argv[0], str(corpus), f"-max_total_time={seconds}", f"-rss_limit_mb={RSS_LIMIT_MB}",
            f"-malloc_limit_mb={MALLOC_LIMIT_MB}", "-print_final_stats=1", "-max_len=65536",
            f"-artifact_prefix={CRASHES}/{name}-", "-timeout=20"]
    atheris.Setup(argv, one_input)
    atheris.Fuzz()


_STAT = re.compile(r"stat::(\w+):\s*(\d+)")


def _run_atheris(name: str, seconds: int, strict: bool) -> dict[str, object]:
    from fuzz.seeds import write_corpus

    write_corpus(CORPUS, [name])
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--seconds", str(seconds)]
    if strict:
        cmd.append("--strict")
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          timeout=seconds * 3 + 120)
    stats = {k: int(v) for k, v in _STAT.findall(proc.stderr)}
    known = re.findall(r"known-issues: (.*)", proc.stderr)
    crashed = proc.returncode != 0
    result = {
        "harness": name,
        "executions": stats.get("number_of_executed_units", 0),
        "exec_per_s": stats.get("average_exec_per_sec", 0),
        "peak_rss_mb": stats.get("peak_rss_mb", 0),
        "new_units": stats.get("new_units_added", 0),
        "known": known[-1] if known else "{}",
        "crash": crashed,
    }
    if crashed:
        tail = "\n".join(proc.stderr.splitlines()[-40:])
        result["detail"] = tail
    return result


def _run_mutator(name: str, seconds: int, strict: bool) -> dict[str, object]:
    from fuzz.harnesses import HARNESSES
    from fuzz.mutator import run_mutated
    from fuzz.seeds import seeds

    stats = run_mutated(name, HARNESSES[name], seeds(name), iterations=10**9, seed=int.from_bytes(os.urandom(4)),
                        strict=strict, track_memory=False, max_seconds=seconds)
    result = {"harness": name, "executions": stats.executions, "exec_per_s": round(stats.per_second),
              "peak_rss_mb": 0, "new_units": 0, "known": stats.known, "crash": bool(stats.failures)}
    if stats.failures:
        data, exc = stats.failures[0]
        CRASHES.mkdir(parents=True, exist_ok=True)
        path = CRASHES / f"{name}-mutator-{len(stats.failures)}"
        path.write_bytes(data)
        result["detail"] = f"{exc!r} (input saved to {path})"
    return result


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit status (1 when a harness found a new crash)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--harness", action="append", default=[], help="harness name (repeatable)")
    parser.add_argument("--all", action="store_true", help="run every harness in turn")
    parser.add_argument("--seconds", type=int, default=30, help="time per harness")
    parser.add_argument("--mutator", action="store_true", help="use the seeded mutator instead of atheris")
    parser.add_argument("--strict", action="store_true", help="report known issues as crashes too")
    parser.add_argument("--list", action="store_true", help="list the harnesses")
    parser.add_argument("--make-corpus", action="store_true", help="write the seed corpus and exit")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        _worker(args.worker, args.seconds, args.strict)
        return 0
    from fuzz.harnesses import HARNESSES

    if args.list:
        for name, body in HARNESSES.items():
            print(f"{name:32} {(body.__doc__ or '').strip().splitlines()[0]}")
        return 0
    if args.make_corpus:
        from fuzz.seeds import write_corpus

        print(f"{write_corpus(CORPUS, list(HARNESSES))} new seed files in {CORPUS}")
        return 0
    names = list(HARNESSES) if args.all else args.harness
    unknown = [n for n in names if n not in HARNESSES]
    if unknown or not names:
        parser.error(f"unknown harness {unknown}" if unknown else "give --harness NAME or --all")
    if not args.mutator:
        try:
            import atheris  # noqa: F401
        except ImportError:
            parser.error("atheris is not installed (pip install atheris, or use --mutator)")
    status = 0
    for name in names:
        result = (_run_mutator if args.mutator else _run_atheris)(name, args.seconds, args.strict)
        print(f"{name:32} exec={result['executions']:>9} exec/s={result['exec_per_s']:>6} "
              f"peak_rss={result['peak_rss_mb']:>5}MB new_units={result['new_units']:>5} "
              f"known={result['known']} crash={'YES' if result['crash'] else 'no'}", flush=True)
        if result["crash"]:
            status = 1
            print(result.get("detail", ""), flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
