"""Compare two bench results: python bench/compare.py OLD.json NEW.json | python bench/compare.py NAME

With one NAME (codecs, decode, fleet, ...) the latest two results of that bench in bench/results/ (or --dir) of the
same mode as the latest are compared. Prints every figure of either run with the change in percent, the ratios to
the limits when the figure has one, and how the limits themselves moved: when the limits moved as much as a
figure, the machine changed (other load, another host), not the code. Exit status 0, or 2 for unusable input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import RESULTS_DIR, BenchError, load_result, result_files  # noqa: E402


def pick(args: list[str], directory: Path) -> tuple[Path, Path]:
    """The two files to compare from the command line's one NAME or two paths. Raises BenchError."""
    if len(args) == 2:
        return Path(args[0]), Path(args[1])
    if len(args) != 1:
        raise BenchError("give two result files, or one bench name")
    name = args[0]
    every = result_files(name, directory)
    if not every:
        raise BenchError(f"no result of {name!r} in {directory}")
    mode = load_result(every[-1])["mode"]
    same = result_files(name, directory, mode=mode)
    if len(same) < 2:
        raise BenchError(f"only {len(same)} {mode} result of {name!r} in {directory}: nothing to compare")
    return same[-2], same[-1]


def _change(old: float | None, new: float | None) -> str:
    if old is None or new is None:
        return ""
    if old == 0:
        return "" if new == 0 else "new"
    return f"{100 * (new - old) / abs(old):+.1f}%"


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    if value == int(value):
        return f"{int(value):,}"
    return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.4g}"


def compare(old: dict[str, Any], new: dict[str, Any]) -> str:
    """The comparison of two validated result documents as text."""
    lines = []
    for tag, doc in (("old", old), ("new", new)):
        git, machine = doc["git"], doc["machine"]
        lines.append(f"{tag}: {doc['name']} {doc['mode']} {doc['started']} commit {(git.get('commit') or '?')[:10]}"
                     f"{' +dirty' if git.get('dirty') else ''} on {machine.get('hostname')} "
                     f"({machine.get('cpus')} x {machine.get('cpu')}, load {machine.get('loadavg_at_start')})")
    if old["name"] != new["name"]:
        lines.append(f"warning: comparing different benches ({old['name']} vs {new['name']})")
    if old["mode"] != new["mode"]:
        lines.append(f"warning: comparing a {old['mode']} run with a {new['mode']} run: sizes differ")
    if (old["machine"].get("hostname"), old["machine"].get("cpu")) != \
            (new["machine"].get("hostname"), new["machine"].get("cpu")):
        lines.append("warning: different machines: read the ratios, not the absolute figures")
    if old["params"] != new["params"]:
        lines.append(f"note: parameters differ: {old['params']} -> {new['params']}")
    rows = [("figure", "unit", "old", "new", "change", "ratio old", "ratio new")]
    for key in list(old["figures"]) + [k for k in new["figures"] if k not in old["figures"]]:
        a, b = old["figures"].get(key), new["figures"].get(key)
        va, vb = (a or {}).get("value"), (b or {}).get("value")
        ra, rb = (a or {}).get("ratio"), (b or {}).get("ratio")
        unit = (b or a or {}).get("unit", "")
        rows.append((key, unit, _num(va), _num(vb), _change(va, vb),
                     "" if ra is None else f"{ra:.3f}", "" if rb is None else f"{rb:.3f}"))
    if len(rows) > 1:
        lines.append(_table(rows))
    lim_rows = [("limit", "unit", "old", "new", "change")]
    for key in list(old["limits"]) + [k for k in new["limits"] if k not in old["limits"]]:
        a, b = old["limits"].get(key), new["limits"].get(key)
        va, vb = (a or {}).get("value"), (b or {}).get("value")
        lim_rows.append((key, (b or a or {}).get("unit", ""), _num(va), _num(vb), _change(va, vb)))
    if len(lim_rows) > 1:
        lines.append("limits:")
        lines.append(_table(lim_rows))
    return "\n".join(lines) + "\n"


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for r in rows:
        cells = [r[0].ljust(widths[0]), r[1].ljust(widths[1])] + [c.rjust(w) for c, w in zip(r[2:], widths[2:],
                                                                                          strict=True)]
        out.append("  " + "  ".join(cells).rstrip())
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("items", nargs="+", metavar="FILE_OR_NAME", help="OLD.json NEW.json, or one bench name")
    parser.add_argument("--dir", type=Path, default=RESULTS_DIR, help=f"results directory (default {RESULTS_DIR})")
    args = parser.parse_args(argv)
    try:
        old_path, new_path = pick(args.items, args.dir)
        text = compare(load_result(old_path), load_result(new_path))
    except BenchError as exc:
        print(f"compare: {exc}", file=sys.stderr)
        return 2
    print(f"old = {old_path}\nnew = {new_path}")
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
