"""The README's main job, end to end: our central, a local-processing and a mirroring sensor, a PCAP fetched back
through the central, and the recorded channel decoded by the inspector (vmproto/demo.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_demo_runs_the_whole_product(tmp_path):
    out = tmp_path / "demo"
    result = subprocess.run([sys.executable, "-m", "vmproto.demo", "--out", str(out)], cwd=ROOT,
                            capture_output=True, text=True, timeout=600, check=False)
    text = result.stdout + result.stderr
    assert result.returncode == 0, text[-4000:]
    assert "identical to the sensor's spool file: True" in text
    assert "inspector exit 0" in text
    # Both CDRs of sensor 2 landed (answered and busy) with its id.
    rows = [r for r in (line.split() for line in text.splitlines()) if len(r) >= 8 and r[0] == "2"
            and r[1].count("-") == 2]
    assert sorted(r[5] for r in rows) == ["200", "486"], text
    # Sensor 3 only mirrored packets: its CDR was built by the central, tagged with its id.
    mirrored = [r for r in (line.split() for line in text.splitlines()) if len(r) >= 8 and r[0] == "3"
                and r[1].count("-") == 2]
    assert [r[5] for r in mirrored] == ["200"], text
    assert (out / "channel.pcap").stat().st_size > 0
