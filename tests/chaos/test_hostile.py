"""Hostile peers against a running central while a well-behaved sensor keeps its service and store flow (issue 10).
One flood per session; the tests read its figures (run with -s to see them)."""

from __future__ import annotations

from tests.chaos.context import ChaosContext
from tests.chaos.figures import Figures
from tests.chaos.hostile import hostile_peers

_RUNS: dict[str, Figures] = {}


async def _flood(chaos: ChaosContext) -> Figures:
    if "fig" not in _RUNS:
        _RUNS["fig"] = await hostile_peers(chaos)
        print(_RUNS["fig"].line())
    return _RUNS["fig"]


async def test_good_sensor_keeps_service_and_store_under_flood(chaos: ChaosContext):
    fig = await _flood(chaos)
    x = fig.extra
    assert x["central_alive"] == 1, fig.line()
    assert x["service_lost"] == 0 and x["pings"] >= 1, fig.line()
    assert x["store_errors"] == 0 and x["store_acks"] > 0, fig.line()
    assert x["gui_sensor_alive"] == 1, fig.line()


async def test_caps_and_timeouts_apply(chaos: ChaosContext):
    fig = await _flood(chaos)
    x = fig.extra
    # Opening-line timeout (spec §14.1): every silent and half-line connection was closed by the central.
    for kind in ("silent", "half-line"):
        assert x["opened"][kind] > 0 and x["closed_by_central"][kind] == x["opened"][kind], fig.line()
    # Pong wait (spec §14.1): a service that never answers ping is ended.
    assert x["never_pong_closed_s"] is not None, fig.line()
    # Per-address cap (spec §1.7): 256 from one address, the next 50 closed at once.
    assert (x["cap_accepted"], x["cap_refused"]) == (256, 50), fig.line()
    # Wrong passwords are refused with the reference's text, never accepted.
    assert x["wrong_password_refused"] == x["wrong_password_answered"] > 0, fig.line()


async def test_log_lines_are_rate_limited_under_flood(chaos: ChaosContext):
    fig = await _flood(chaos)
    x = fig.extra
    # A rate-limited log writes a bounded number of lines per (address, event) and minute; the flood uses a few
    # dozen addresses and events, so well under one line per hostile connection.
    hostile_events = sum(x["opened"].values()) + x["wrong_passwords"]
    assert x["log_lines"] <= 100 + hostile_events // 10, fig.line()
