"""bench/_common.py, compare.py and run_all.py helpers: figures and ratios, result files, comparisons."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest

from bench import compare, run_all
from bench._common import (
    SCHEMA,
    BenchError,
    BenchRun,
    load_result,
    percentile,
    result_files,
    sample_packet_area,
    validate_result,
)


def _args(out: Path | str, quick: bool = True, **extra: object) -> argparse.Namespace:
    return argparse.Namespace(quick=quick, json_only=False, out=str(out), **extra)


def _run(tmp_path: Path, name: str = "demo", value: float = 50.0, quick: bool = True) -> Path:
    with BenchRun(name, _args(tmp_path, quick, size=3), limits=False) as run:
        run.add_limit("wire", 200.0, "MB/s", "a made-up limit")
        run.figure("speed", value, "MB/s", limit="wire")
        run.figure("count", 7, "items")
    assert run.path is not None
    return run.path


def test_percentile_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([3.0], 99) == 3.0
    with pytest.raises(BenchError):
        percentile([], 50)
    with pytest.raises(BenchError):
        percentile([1.0], 101)


def test_figure_ratio_and_errors(tmp_path):
    run = BenchRun("demo", _args(tmp_path), limits=False)
    run.add_limit("wire", 200.0, "MB/s", "x")
    assert run.figure("speed", 50, "MB/s", limit="wire").ratio == pytest.approx(0.25)
    assert run.figure("plain", 3, "s").ratio is None
    with pytest.raises(BenchError, match="unknown limit"):
        run.figure("speed", 1, "MB/s", limit="nope")
    with pytest.raises(BenchError, match="is in packets/s but limit wire is in MB/s"):
        run.figure("speed", 1, "packets/s", limit="wire")
    for bad in (math.nan, math.inf, True, "3"):
        with pytest.raises(BenchError, match="not a finite number"):
            run.figure("bad", bad, "s")  # type: ignore[arg-type]
    with pytest.raises(BenchError):
        run.add_limit("bad", math.inf, "MB/s", "x")
    with pytest.raises(BenchError, match="alphanumeric"):
        BenchRun("../evil", _args(tmp_path))


def test_result_file_round_trip(tmp_path):
    path = _run(tmp_path)
    assert path.parent == tmp_path and path.name.endswith("-demo.json")
    doc = load_result(path)
    assert doc["schema"] == SCHEMA and doc["name"] == "demo" and doc["mode"] == "quick"
    assert doc["figures"]["speed"] == {"value": 50.0, "unit": "MB/s", "limit": "wire", "ratio": 0.25, "note": ""}
    assert doc["params"] == {"size": 3}
    assert doc["git"]["commit"] is None or len(doc["git"]["commit"]) == 40
    assert doc["machine"]["cpus"] >= 1


def test_out_file_path_and_no_file(tmp_path, capsys):
    target = tmp_path / "sub" / "mine.json"
    with BenchRun("demo", _args(target), limits=False) as run:
        run.figure("x", 1.5, "s")
    assert run.path == target and load_result(target)["figures"]["x"]["value"] == 1.5
    with BenchRun("demo", _args("-"), limits=False) as run:
        run.figure("x", 1.5, "s")
    assert run.path is None
    assert "x" in capsys.readouterr().out


def test_json_only_keeps_stdout_for_the_document(tmp_path, capsys):
    args = argparse.Namespace(quick=True, json_only=True, out="-")
    with BenchRun("demo", args, limits=False) as run:
        print("progress line")
        run.figure("x", 2.0, "s")
    captured = capsys.readouterr()
    assert validate_result(json.loads(captured.out))["figures"]["x"]["value"] == 2.0
    assert "progress line" in captured.err


def test_nothing_written_when_the_run_fails(tmp_path):
    with pytest.raises(RuntimeError), BenchRun("demo", _args(tmp_path), limits=False) as run:
        run.figure("x", 1.0, "s")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.update(schema="other/1"), "schema"),
    (lambda d: d.pop("figures"), "figures"),
    (lambda d: d.update(mode="medium"), "mode"),
    (lambda d: d["figures"]["speed"].update(value=None), "finite"),
    (lambda d: d["figures"]["speed"].update(limit="gone"), "limit 'gone'"),
    (lambda d: d["limits"].update(wire=[]), "with a unit"),
])
def test_validate_result_names_the_defect(tmp_path, mutate, message):
    doc = json.loads(_run(tmp_path).read_text())
    mutate(doc)
    with pytest.raises(BenchError, match=message):
        validate_result(doc)


def test_load_result_errors(tmp_path):
    with pytest.raises(BenchError, match="cannot read"):
        load_result(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(BenchError, match="not JSON"):
        load_result(bad)


def test_result_files_and_compare_latest_two(tmp_path, capsys):
    first = _run(tmp_path, value=50.0)
    (tmp_path / "junk.json").write_text("[]")  # skipped, not fatal
    doc = json.loads(first.read_text())
    doc["started"] = doc["started"].replace(doc["started"][:4], str(int(doc["started"][:4]) + 1))
    doc["figures"]["speed"].update(value=60.0, ratio=0.3)
    second = tmp_path / "later-demo.json"
    second.write_text(json.dumps(doc))
    _run(tmp_path, name="other")
    assert result_files("demo", tmp_path) == [first, second]
    assert result_files("demo", tmp_path, mode="full") == []
    assert compare.pick(["demo"], tmp_path) == (first, second)
    text = compare.compare(load_result(first), load_result(second))
    line = next(x for x in text.splitlines() if x.strip().startswith("speed"))
    assert "+20.0%" in line and "0.250" in line and "0.300" in line
    assert compare.main(["--dir", str(tmp_path), "demo"]) == 0
    assert "+20.0%" in capsys.readouterr().out


def test_compare_refuses_what_it_cannot_compare(tmp_path, capsys):
    _run(tmp_path)
    assert compare.main(["--dir", str(tmp_path), "demo"]) == 2
    assert "nothing to compare" in capsys.readouterr().err
    assert compare.main(["--dir", str(tmp_path), "absent"]) == 2
    assert compare.main(["a.json", "b.json", "c.json"]) == 2


def test_compare_warns_on_mode_and_machine(tmp_path):
    a = load_result(_run(tmp_path, quick=True))
    b = json.loads(json.dumps(a))
    b.update(mode="full")
    b["machine"]["hostname"] = "elsewhere"
    text = compare.compare(a, b)
    assert "quick run with a full run" in text and "different machines" in text


def test_run_all_summary_and_harness_detection(tmp_path):
    doc = load_result(_run(tmp_path))
    text = run_all.summary([{"name": "demo", "status": "ok", "seconds": 1.0, "result": doc, "log": None},
                            {"name": "broken", "status": "exit 1", "seconds": 2.0, "result": None, "log": "x.log"}])
    assert "speed" in text and "0.250 x wire" in text and "x.log" in text
    assert run_all.on_common_harness(Path(run_all.__file__).with_name("fleet.py"))
    with pytest.raises(SystemExit) as exc:
        run_all.main(["--only", "nonsense"])
    assert exc.value.code == 2


def test_sample_packet_area_is_deterministic_and_compressible():
    import zlib

    a = sample_packet_area(64 * 1024)
    assert a == sample_packet_area(64 * 1024) and len(a) == 64 * 1024
    assert 1.5 < len(a) / len(zlib.compress(a)) < 50  # neither noise nor zeros


def test_run_all_markdown_table_uses_the_latest_full_result(tmp_path):
    _run(tmp_path, value=50.0, quick=True)  # quick runs are not table material
    assert "(no full result yet)" in run_all.markdown_table(tmp_path, ["demo"])
    _run(tmp_path, value=80.0, quick=False)
    table = run_all.markdown_table(tmp_path, ["demo", "absent"])
    assert "| demo | `speed` | 80 MB/s | 0.400 x `wire` |" in table
    assert "| absent | (no full result yet) |" in table
