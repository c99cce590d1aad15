"""The sans-IO rule of the design: vmproto.wire never touches sockets, trio or the clock."""

import ast
from pathlib import Path

WIRE = Path(__file__).resolve().parents[1] / "vmproto" / "wire"
FORBIDDEN_MODULES = {"socket", "trio", "anyio", "asyncio", "selectors", "time", "threading", "random"}
# datetime is allowed for parsing wire timestamps, but never to read the clock.
CLOCK_READS = {"now", "today", "utcnow", "monotonic", "perf_counter"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def _clock_reads(path: Path) -> list[int]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in CLOCK_READS
    ]


def test_wire_is_sans_io():
    offenders = {}
    for path in sorted(WIRE.rglob("*.py")):
        bad = _imports(path) & FORBIDDEN_MODULES
        if bad:
            offenders[str(path.relative_to(WIRE))] = sorted(bad)
    assert offenders == {}, f"vmproto.wire must stay sans-IO; forbidden imports: {offenders}"


def test_wire_never_reads_the_clock():
    offenders = {str(p.relative_to(WIRE)): _clock_reads(p) for p in sorted(WIRE.rglob("*.py")) if _clock_reads(p)}
    assert offenders == {}, f"vmproto.wire takes time as an argument; clock reads at: {offenders}"
