"""Faults between our sensor and our central (issue 10): after each, zero lost and zero duplicated CDRs against the
offline analysis of the same capture. Figures are printed (run with -s to see them), never asserted on time."""

from __future__ import annotations

import pytest

from tests.chaos.context import ChaosContext
from tests.chaos.faults import (
    MountUnavailable,
    central_kill_during_mirroring,
    central_kill_during_store,
    check_started,
    disk_full,
    mariadb_outage,
    network_cut,
)
from tests.chaos.figures import Figures
from tests.chaos.netns import NetnsPair, NetnsUnavailable
from tests.chaos.skew import clock_skew


def _report(fig: Figures) -> Figures:
    print(fig.line())
    check_started(fig)
    return fig


def _no_loss(fig: Figures) -> None:
    assert fig.expected > 0
    assert (fig.lost, fig.duplicated) == (0, 0), fig.line()
    assert "unexpected" not in fig.extra, fig.line()


async def test_central_killed_during_store(chaos: ChaosContext):
    fig = _report(await central_kill_during_store(chaos))
    _no_loss(fig)
    assert fig.late > 0, "the kill must have caught CDRs in flight: " + fig.line()


@pytest.mark.xfail(strict=True, reason=(
    "kill -9 of the central during mirroring loses the CDRs of every call whose packets it had confirmed (OK, "
    "spec §9.9) but not yet analysed and committed: the analysis state is only in memory, and no drop counter on "
    "either side accounts for them (sensor mirror_dropped = 0)"))
async def test_central_killed_during_mirroring(chaos: ChaosContext):
    fig = _report(await central_kill_during_mirroring(chaos))
    assert fig.extra.get("mirror_dropped", 0) == 0, "the sensor dropped nothing: " + fig.line()
    _no_loss(fig)


async def test_mariadb_stopped_and_started(chaos: ChaosContext):
    fig = _report(await mariadb_outage(chaos))
    _no_loss(fig)
    assert fig.extra["central_alive_after"] == 1, fig.line()


async def test_network_cut_and_restored(chaos: ChaosContext):
    try:
        net = NetnsPair.create()
    except NetnsUnavailable as exc:
        pytest.skip(f"network namespaces unavailable: {exc}")
    with net:
        fig = _report(await network_cut(chaos, net))
    _no_loss(fig)


async def test_disk_full_on_journal_and_spool(chaos: ChaosContext):
    try:
        fig = _report(await disk_full(chaos))
    except MountUnavailable as exc:
        pytest.skip(f"cannot mount a small file system: {exc}")
    assert fig.extra["sensor_alive_at_end_of_fault"] == 1, fig.line()
    _no_loss(fig)


async def test_clock_skew_beyond_the_time_checks(chaos: ChaosContext):
    fig = await clock_skew(chaos)
    print(fig.line())
    x = fig.extra
    assert x["ahead_reply"].startswith("StoreError(") and "client time is too greater" in x["ahead_reply"], fig.line()
    assert x["ahead_closed"] == 1 and x["fixed_ok"] == x["resend_ok"] == x["behind_ok"] == 1, fig.line()
    assert (fig.lost, fig.duplicated) == (0, 0), fig.line()
    assert not x["pb_skewed_handshake"].startswith("HandshakeOK"), fig.line()
