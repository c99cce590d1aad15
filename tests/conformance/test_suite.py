"""The conformance suite against our central, and proof that its cases fail on a broken peer (fault proxy)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
import trio

import conformance.cases  # noqa: F401  (registers the cases)
from conformance.context import ServerContext, ServerOptions
from conformance.model import CASES, Level, Outcome, Result
from conformance.peers.faultproxy import (
    Fault,
    FaultProxy,
    corrupt_sum,
    delay_payload,
    drop_payload,
    replace_payload,
)
from conformance.report import exit_code, junit_xml, matrix_markdown, summary, uncovered_sections
from conformance.runner import run_cases, select_cases
from conformance.specdata import load_spec

SPEC = load_spec()

# Cases left out of the CI run against our central, each with the reason. Keep this list short and honest.
# Cases left out of the CI run because our central cannot pass them yet (id -> reason). Empty: all run.
KNOWN_BAD: dict[str, str] = {}


def _ctx(host: str, port: int, password: str, max_wait: float = 12.0) -> ServerContext:
    return ServerContext(ServerOptions(host, port, password, max_wait=max_wait), SPEC)


def test_every_spec_section_is_covered_and_cases_are_well_formed():
    cases = select_cases("server")
    assert uncovered_sections(cases, SPEC.sections) == []
    assert SPEC.sections == tuple(range(1, 18))
    for c in cases:
        assert c.sections and c.title and c.role == "central"
        assert (c.level is Level.QUIRK) == (c.quirk is not None)
    matrix = matrix_markdown(cases, None, SPEC.sections)
    for n in SPEC.sections:
        assert f"| §{n} |" in matrix
    assert "**none**" not in matrix


def test_reports_and_exit_code():
    cases = [CASES["server"][i] for i in ("handshake-query", "gui-timeout", "opening-line-cap")]
    ok = [Result(cases[0], Outcome.SKIP), Result(cases[1], Outcome.PASS), Result(cases[2], Outcome.PASS,
                                                                                   variant="vmproto")]
    assert exit_code(ok) == 0
    bad = [*ok[:2], Result(cases[1], Outcome.FAIL, "boom")]
    assert exit_code(bad) == 1
    quirk_fail = [Result(cases[2], Outcome.FAIL, "neither")]
    assert exit_code(quirk_fail) == 0  # only MUST cases decide
    root = ET.fromstring(junit_xml(bad, "conformance.server"))
    assert root.get("tests") == "3" and root.get("failures") == "1" and root.get("skipped") == "1"
    assert "DOES NOT CONFORM" in summary(bad, "x") and "CONFORMS" in summary(ok, "x")


def test_select_only_and_skip():
    assert [c.id for c in select_cases("server", ["^query-end$"])] == ["query-end"]
    assert "query-end" not in [c.id for c in select_cases("server", skip=["query-end"])]
    assert all("§9" in " ".join(c.sections) for c in select_cases("server", ["§9"]))


async def test_server_mode_against_our_central(central):
    cases = [c for c in select_cases("server", include_slow=False) if c.id not in KNOWN_BAD]
    ctx = _ctx(central.host, central.port, central.password)
    results = await run_cases(cases, ctx, parallel=8, case_timeout=60)
    blocking = [f"{r.case.id}: {r.detail}" for r in results if r.blocking]
    assert not blocking, "\n".join(blocking)
    passed = sum(r.outcome is Outcome.PASS for r in results)
    assert passed >= 100, summary(results, "our central")
    quirks = {r.case.id: r.variant for r in results if r.variant}
    # vmproto decisions the spec makes normative for our central (spec §16)
    for cid in ("opening-line-cap", "credentials-not-json", "framing-oversized", "pb-short-container",
                "query-csv-separator-value", "query-literal-null-token", "store-no-separator",
                "store-malformed-items", "query-empty-request"):
        assert quirks.get(cid) == "vmproto", (cid, quirks.get(cid))


async def _run_through(central, fault: Fault, case_id: str) -> Result:
    proxy = FaultProxy((central.host, central.port), fault)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(proxy.serve)
        [result] = await run_cases([CASES["server"][case_id]], _ctx("127.0.0.1", port, central.password),
                                   case_timeout=30)
        nursery.cancel_scope.cancel()
    return result


FAULTS = [
    ("handshake-query", Fault(to_client=corrupt_sum()), "bad checksum on the rsa_key block"),
    ("aes-deterministic", Fault(to_client=corrupt_sum(first_only=False)), "bad checksums on every block"),
    ("bad-password-query", Fault(to_client=replace_payload(b"bad password", b"bad passwd")), "wrong reply string"),
    ("service-plain-ok", Fault(to_client=replace_payload(b"OK", b"Ok")), "wrong handshake result"),
    ("service-ping-pong", Fault(to_client=drop_payload(b"ping")), "no ping"),
    ("service-ping-pong", Fault(to_client=delay_payload(b"ping", 2.5)), "late ping"),
    ("service-no-pong", Fault(to_client=replace_payload(b"ping", b"pong")), "ping replaced"),
    ("opening-unknown-type", Fault(opening=lambda d: d.replace(b"sniffer_service", b"query")), "answers unknown"),
    ("gui-missing-service", Fault(raw_to_client=lambda line, d: d.replace(b"sensor?", b"sensor!")), "raw text"),
    ("store-connect-result", Fault(to_client=replace_payload(b'{"rslt":"OK","check_store":1,"check_time":1}',
                                                             b'{"rslt":"OK","check_store":1}')), "store JSON"),
]


def _swap_members(line: bytes, payload: bytes, frame: bytes):
    async def inner() -> bytes:
        from conformance.wirekit import block

        if payload.startswith(b'{"result":"OK"'):
            return block(payload.replace(b'{"result":"OK",', b"{").replace(b"}", b',"result":"OK"}', 1))
        return frame
    return inner()


FAULTS.append(("service-auto-parameters", Fault(to_client=_swap_members), "member order"))


@pytest.mark.parametrize(("case_id", "fault", "what"), FAULTS, ids=[f"{c}-{w}" for c, _, w in FAULTS])
async def test_case_fails_on_a_broken_peer(central, case_id, fault, what):
    result = await _run_through(central, fault, case_id)
    applied = fault.hits or getattr(fault.to_client, "matched", None)
    assert applied or fault.opening is not None or fault.raw_to_client is not None, "the fault never applied"
    assert result.outcome is Outcome.FAIL, (what, result.outcome, result.detail)


async def test_proxy_without_fault_is_transparent(central):
    result = await _run_through(central, Fault(), "handshake-store")
    assert result.outcome is Outcome.PASS, result.detail
