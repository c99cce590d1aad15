"""spec/errors.toml is the normative catalogue of reply strings (spec §15): the code must use exactly those bytes.

Every `reply` and `local` entry must be found among the string literals of vmproto/ (fixed texts verbatim;
templates by each of their fixed parts). An entry whose producer does not exist yet is listed in PENDING with the
component that will produce it; the test fails when a pending entry appears in the code (so the list shrinks)."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CATALOGUE = tomllib.loads((ROOT / "spec" / "errors.toml").read_text())["error"]

# Entries whose producing component is not built yet (id -> component). Remove an entry when it lands.
PENDING: dict[str, str] = {
    # The sensor writes no tar archives, so getfile_in_tar_check_complete always answers OK (spec §13).
    "mgr_uncomplete": "a sensor keeping tar archives (vmproto's spool keeps per-call pcap files)",
}


def _json_replies() -> dict[str, bytes]:
    """Replies built from dicts by the code: render them so they are compared byte for byte."""
    from vmproto.wire import store_msg

    return {
        "store_queue_full": store_msg.queue_full_reply(store_msg.queue_full_usleep(1000, 42)),
        "store_client_time": store_msg.CLIENT_TIME_TOO_GREAT_REPLY,
    }


def _literals() -> set[str]:
    found: set[str] = set()
    for path in (ROOT / "vmproto").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str | bytes):
                value = node.value
                found.add(value.decode("latin-1") if isinstance(value, bytes) else value)
    return found


LITERALS = _literals()


def _fixed_parts(template: str) -> list[str]:
    return [part for part in re.split(r"<[^<>]+>", template) if len(part.strip()) >= 3]


def _present(entry: dict) -> bool:
    if "text" in entry:
        text = entry["text"]
        return any(text == lit or (len(text) >= 4 and text in lit) for lit in LITERALS)
    parts = _fixed_parts(entry["template"])
    return all(any(part in lit for lit in LITERALS) for part in parts)


# Replies must be in the code; local reasons only where vmproto defines them (the reference's own local reasons,
# e.g. its `na`, are documented for operators reading its logs).
CHECKED = [e for e in CATALOGUE if e.get("reachable", True)
           and (e["kind"] == "reply" or (e["kind"] == "local" and not e["reference"]))]


def test_catalogue_is_well_formed():
    ids = [e["id"] for e in CATALOGUE]
    assert len(ids) == len(set(ids))
    for e in CATALOGUE:
        assert ("text" in e) != ("template" in e), e["id"]
        if "template" in e:
            example = re.sub(r"<[^<>]+>", "1", e["template"])
            assert re.fullmatch(e["regex"], example), e["id"]


@pytest.mark.parametrize("entry", CHECKED, ids=[e["id"] for e in CHECKED])
def test_code_uses_catalogue_strings(entry):
    if entry["id"] in PENDING:
        assert not _present(entry), f"{entry['id']} is in the code now: remove it from PENDING"
        pytest.skip(f"only produced by {PENDING[entry['id']]}")
    rendered = _json_replies().get(entry["id"])
    if rendered is not None:
        text = rendered.decode("latin-1")
        assert text == entry["text"] if "text" in entry else re.fullmatch(entry["regex"], text), (entry["id"], text)
        return
    assert _present(entry), f"spec/errors.toml {entry['id']} ({entry.get('text') or entry.get('template')!r}) not in vmproto/"
