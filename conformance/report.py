"""Report writers: the human summary, JUnit XML, and the coverage matrix (spec section × cases)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

from .model import Case, Level, Outcome, Result

__all__ = ["exit_code", "format_result", "junit_xml", "matrix_markdown", "summary", "uncovered_sections"]

_MARK = {Outcome.PASS: "PASS", Outcome.FAIL: "FAIL", Outcome.SKIP: "SKIP", Outcome.ERROR: "ERROR"}


def format_result(r: Result) -> str:
    """One line per case: outcome, level, id, and the detail."""
    variant = f" [{r.variant}]" if r.variant else ""
    detail = f" — {r.detail}" if r.detail and r.outcome is not Outcome.PASS or r.variant else ""
    return f"{_MARK[r.outcome]:5} {r.case.level.value:15} {r.case.id}{variant} ({r.seconds:.1f} s){detail}"


def summary(results: list[Result], target: str) -> str:
    """The human summary: every case, the quirk behaviours seen, counts and the verdict."""
    lines = [f"conformance of {target}", ""]
    lines += [format_result(r) for r in results]
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for r in results:
        counts[(r.case.level.value, r.outcome.value)] += 1
    lines.append("")
    for level in Level:
        row = ", ".join(f"{counts[(level.value, o.value)]} {o.value}" for o in Outcome)
        lines.append(f"{level.value:15} {row}")
    quirks = [r for r in results if r.variant]
    if quirks:
        ref = sum(r.variant == "reference" for r in quirks)
        lines.append(f"reference quirks: {ref} showed the reference behaviour, {len(quirks) - ref} the vmproto one")
    blocking = [r.case.id for r in results if r.blocking]
    lines.append("verdict: " + ("CONFORMS (every MUST case passed)" if not blocking
                                else f"DOES NOT CONFORM ({len(blocking)} MUST case(s) failed: "
                                     f"{', '.join(blocking)})"))
    return "\n".join(lines) + "\n"


def exit_code(results: list[Result]) -> int:
    """0 when every MUST case passed (skips allowed), else 1."""
    return 1 if any(r.blocking for r in results) else 0


def junit_xml(results: list[Result], suite_name: str) -> bytes:
    """JUnit XML: one testcase per case (classname = level), quirk variants as properties."""
    suite = ET.Element("testsuite", name=suite_name, tests=str(len(results)),
                       failures=str(sum(r.outcome is Outcome.FAIL for r in results)),
                       errors=str(sum(r.outcome is Outcome.ERROR for r in results)),
                       skipped=str(sum(r.outcome is Outcome.SKIP for r in results)),
                       time=f"{sum(r.seconds for r in results):.3f}")
    for r in results:
        tc = ET.SubElement(suite, "testcase", classname=f"{suite_name}.{r.case.level.value}", name=r.case.id,
                           time=f"{r.seconds:.3f}")
        props = ET.SubElement(tc, "properties")
        ET.SubElement(props, "property", name="sections", value=" ".join(r.case.sections))
        ET.SubElement(props, "property", name="title", value=r.case.title)
        if r.variant:
            ET.SubElement(props, "property", name="quirk_variant", value=r.variant)
        if r.outcome is Outcome.FAIL:
            ET.SubElement(tc, "failure", message=r.detail[:200]).text = r.detail
        elif r.outcome is Outcome.ERROR:
            ET.SubElement(tc, "error", message=r.detail[:200]).text = r.detail
        elif r.outcome is Outcome.SKIP:
            ET.SubElement(tc, "skipped", message=r.detail[:200])
        elif r.variant:
            ET.SubElement(tc, "system-out").text = r.detail
    return ET.tostring(ET.ElementTree(suite).getroot(), encoding="utf-8", xml_declaration=True)


def _section_key(s: str) -> tuple[int, int, int]:
    m = re.fullmatch(r"§(\d+)(?:\.(\d+))?(?: Q(\d+))?", s)
    assert m is not None
    return int(m.group(1)), int(m.group(2) or 0), int(m.group(3) or 0)


def matrix_markdown(cases: list[Case], results: list[Result] | None, spec_sections: tuple[int, ...]) -> str:
    """Markdown coverage matrix: one row per spec section (every §N of the spec, plus the §N.M / Qn the cases
    cite), the cases citing it, the modes they belong to (server: the suite plays the sensor; sensor: it plays the
    central), and the outcome of those that ran (`results`)."""
    outcome = {r.case.id: r for r in results or []}
    by_section: dict[str, list[Case]] = defaultdict(list)
    for c in cases:
        for s in c.sections:
            by_section[s].append(c)
            top = s.split(".")[0].split(" ")[0]
            if top != s:
                by_section.setdefault(top, [])
    for n in spec_sections:
        by_section.setdefault(f"§{n}", [])
    lines = ["| section | cases | modes | MUST | SHOULD | quirk | results |", "|---|---|---|---|---|---|---|"]
    for s in sorted(by_section, key=_section_key):
        cs = by_section[s]
        top = s.split(".")[0].split(" ")[0]
        covering = cs if s != top else [c for k, v in by_section.items() if k.split(".")[0].split(" ")[0] == top
                                       for c in v]
        ids = sorted({c.id for c in cs})
        levels = defaultdict(int)
        for c in {c.id: c for c in covering}.values():
            levels[c.level] += 1
        res = ""
        if results is not None:
            cell = []
            for i in ids:
                r = outcome.get(i)
                if r is not None:
                    cell.append(f"{i}: {r.outcome.value}" + (f" ({r.variant})" if r.variant else ""))
            res = "<br>".join(cell)
        modes = ", ".join(m for m in ("server", "sensor") if any(c.mode == m for c in covering))
        lines.append(f"| {s} | {', '.join(ids) if ids else ('(see subsections)' if covering else '**none**')} | "
                     f"{modes} | {levels[Level.MUST]} | {levels[Level.SHOULD]} | {levels[Level.QUIRK]} | {res} |")
    return "\n".join(lines) + "\n"


def uncovered_sections(cases: list[Case], spec_sections: tuple[int, ...]) -> list[int]:
    """Spec sections §N that no case cites (directly or through a subsection)."""
    cited = {_section_key(s)[0] for c in cases for s in c.sections}
    return [n for n in spec_sections if n not in cited]


def write(path: str | Path, data: str | bytes) -> None:
    """Write a report file (parent directories created)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
