"""The sensor mode of the conformance suite against our sensor, and proof that its cases fail on a broken sensor."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import trio

import conformance.cases  # noqa: F401  (registers the cases)
from conformance.central import parse_store_text
from conformance.model import CASES, Outcome
from conformance.peers.brokensensor import FAULTS
from conformance.report import matrix_markdown, summary, uncovered_sections
from conformance.runner import run_cases, select_cases
from conformance.sensorctx import SensorContext, SensorOptions
from conformance.sensorproc import TemplateError, expand_command, make_pcap
from conformance.specdata import load_spec

SPEC = load_spec()
ROOT = Path(__file__).resolve().parents[2]
OUR_SENSOR = f"{sys.executable} -m vmproto.sensor --config-file {{workdir}}/sensor.conf -r {{pcap}} --stay"

# Cases our sensor fails today (id -> reason). The run asserts they still fail, so a fix shows up here.
KNOWN_BAD: dict[str, str] = {}
# Cases that cannot apply to our sensor (id -> reason); they must report SKIP.
NOT_APPLICABLE: dict[str, str] = {}


def _ctx(command: str = OUR_SENSOR, **kw) -> SensorContext:
    return SensorContext(SensorOptions(command, **kw), SPEC)


def test_sensor_cases_are_well_formed_and_both_modes_cover_the_spec():
    sensor = select_cases("sensor")
    assert len(sensor) >= 30
    for c in sensor:
        assert c.role == "sensor" and c.mode == "sensor" and c.sections and c.title
    both = sensor + select_cases("server")
    assert uncovered_sections(both, SPEC.sections) == []
    matrix = matrix_markdown(both, None, SPEC.sections)
    assert "| §7 | (see subsections) | server, sensor |" in matrix
    assert "**none**" not in matrix
    # the sensor side of the spec: what a sensor MUST do is cited by sensor cases
    cited = {s.split(".")[0].split(" ")[0] for c in sensor for s in c.sections}
    assert {"§1", "§3", "§5", "§6", "§7", "§8", "§9", "§11", "§14", "§16"} <= cited


def test_command_template():
    argv = expand_command("sensor -c '{workdir}/a b.conf' --to {host}:{port} -r {pcap}",
                          {"workdir": "/w", "host": "127.0.0.2,127.0.0.3", "port": "9", "pcap": "/p.pcap"})
    assert argv == ["sensor", "-c", "/w/a b.conf", "--to", "127.0.0.2,127.0.0.3:9", "-r", "/p.pcap"]
    for bad in ("sensor {nope}", "", "sensor 'open"):
        with pytest.raises(TemplateError):
            expand_command(bad, {})


def test_generated_capture_is_deterministic(tmp_path):
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    a_dir.mkdir()
    b_dir.mkdir()
    assert make_pcap(a_dir).read_bytes() == make_pcap(b_dir).read_bytes()
    with pytest.raises(KeyError):
        make_pcap(tmp_path, "unknown")


def test_store_grammar_parser_is_strict():
    assert parse_store_text(b"10|T2026-11-26 04:21:36|select 1;\n") == (10, b"2026-11-26 04:21:36",
                                                                       b"select 1;\n", (b"select 1;\n",), False)
    assert parse_store_text(b"1010|L3:a;\n\nL1:b\n")[3:] == ((b"a;\n", b"b"), True)
    assert parse_store_text(b"10|Lx")[2] == b"Lx"  # "L" not followed by a digit is a single unit
    for bad in (b"x|a", b"10 a", b"10|T2026-11-26 04:21|a", b"10|L3:ab\n", b"10|L2:ab\nL1:c", b"10|L1:a\n",
                b"10|L2:ab\nrest"):
        with pytest.raises(ValueError):
            parse_store_text(bad)


async def test_sensor_mode_against_our_sensor():
    ctx = _ctx()
    try:
        results = await run_cases(select_cases("sensor"), ctx, parallel=8, case_timeout=60)
    finally:
        ctx.cleanup()
    by_id = {r.case.id: r for r in results}
    text = summary(results, "our sensor")
    for cid, reason in KNOWN_BAD.items():
        assert by_id[cid].outcome is Outcome.FAIL, (cid, f"now passes? drop it from KNOWN_BAD ({reason})")
    for cid in NOT_APPLICABLE:
        assert by_id[cid].outcome is Outcome.SKIP, (cid, by_id[cid].detail)
    bad = [f"{r.case.id}: {r.outcome.value}: {r.detail}" for r in results
           if r.case.id not in KNOWN_BAD and r.case.id not in NOT_APPLICABLE and r.outcome is not Outcome.PASS
           and not (r.case.id == "sensor-store-batch-limit" and r.outcome is Outcome.SKIP)]
    assert not bad, "\n".join(bad) + "\n\n" + text
    assert by_id["sensor-shutdown"].variant == "vmproto"


async def test_cases_fail_on_a_broken_sensor():
    """Each fault of the broken sensor wrapper makes its matching case fail (all faults run concurrently)."""
    outcomes: dict[str, tuple[Outcome, str]] = {}

    async def one(fault: str, case_id: str) -> None:
        command = (f"{sys.executable} -m conformance.peers.brokensensor {fault} -- "
                   "--config-file {workdir}/sensor.conf -r {pcap} --stay")
        ctx = _ctx(command)
        try:
            [result] = await run_cases([CASES["sensor"][case_id]], ctx, case_timeout=40)
        finally:
            ctx.cleanup()
        outcomes[fault] = (result.outcome, result.detail)

    async with trio.open_nursery() as nursery:
        for fault, (_install, case_id) in FAULTS.items():
            nursery.start_soon(one, fault, case_id)
    wrong = {f: o for f, o in outcomes.items() if o[0] is not Outcome.FAIL or "cannot start" in o[1]}
    assert not wrong, wrong


def test_cli_sensor_mode_writes_reports(tmp_path):
    junit, matrix = tmp_path / "sensor.xml", tmp_path / "matrix.md"
    proc = subprocess.run(
        [sys.executable, "-m", "conformance", "sensor", "--command", OUR_SENSOR, "--only", "^sensor-service-cred",
         "--only", "^sensor-pb-credentials$", "--junit", str(junit), "--matrix", str(matrix), "-q"],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "CONFORMS" in proc.stdout
    root = ET.parse(junit).getroot()
    assert root.get("tests") == "2" and root.get("failures") == "0"
    assert {tc.get("classname") for tc in root} == {"conformance.sensor.MUST"}
    table = matrix.read_text()
    assert "sensor-service-credentials: pass" in table and "server" in table and "**none**" not in table
    bad = subprocess.run([sys.executable, "-m", "conformance", "sensor", "--command", "x {bogus}"], cwd=ROOT,
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode != 0 and "unknown placeholder" in bad.stderr
