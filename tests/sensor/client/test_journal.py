"""Store journal: durability, torn tails, corruption, compaction, dead letters, kill -9 mid-append."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from vmproto.sensor.client.errors import JournalError
from vmproto.sensor.client.journal import Journal


def _segments(d: Path) -> list[Path]:
    return sorted(d.glob("seg-*.log"))


def test_append_ack_replay(tmp_path: Path) -> None:
    j = Journal(tmp_path, fsync=False)
    assert j.open().live == 0
    entries = j.append([(10, b"a;\n"), (1010, b"L1:x\nL1:y\n"), (10, b"c")], now=5.0)
    assert [e.seq for e in entries] == [1, 2, 3]
    j.ack(2)
    j.close()
    j2 = Journal(tmp_path, fsync=False)
    rep = j2.open()
    assert rep.live == 2 and rep.torn_records == 0 and rep.corrupt_bytes == 0
    assert [(e.seq, e.id_main, e.body, e.created) for e in j2.live()] == [(1, 10, b"a;\n", 5.0), (3, 10, b"c", 5.0)]
    # seqs keep growing across restarts (the order per id_main is the seq order)
    assert j2.append([(10, b"d")])[0].seq == 4
    j2.close()


def test_torn_tail_dropped_and_counted(tmp_path: Path) -> None:
    j = Journal(tmp_path, fsync=False)
    j.open()
    j.append([(10, b"first")])
    j.append([(10, b"second" * 100)])
    j.close()
    seg = _segments(tmp_path)[-1]
    data = seg.read_bytes()
    seg.write_bytes(data[:-50])  # the second record lost its end (crash mid-write)
    j2 = Journal(tmp_path, fsync=False)
    rep = j2.open()
    assert rep.torn_records == 1
    assert [e.body for e in j2.live()] == [b"first"]
    j2.close()  # the torn bytes were truncated away: a second replay finds a clean journal
    assert Journal(tmp_path, fsync=False).open().torn_records == 0


def test_torn_header_only(tmp_path: Path) -> None:
    j = Journal(tmp_path, fsync=False)
    j.open()
    j.append([(10, b"one")])
    j.close()
    seg = _segments(tmp_path)[-1]
    with open(seg, "ab") as f:
        f.write(b"VMJ1\x00\x01")  # a header cut after 6 bytes
    rep = Journal(tmp_path, fsync=False).open()
    assert rep.torn_records == 1 and rep.live == 1


def test_corrupt_record_in_the_middle_is_skipped(tmp_path: Path) -> None:
    j = Journal(tmp_path, fsync=False)
    j.open()
    j.append([(10, b"A" * 40), (10, b"B" * 40), (10, b"C" * 40)])
    j.close()
    seg = _segments(tmp_path)[-1]
    data = bytearray(seg.read_bytes())
    pos = data.find(b"B" * 40)
    data[pos + 3] ^= 0xFF  # bit rot inside the second record
    seg.write_bytes(bytes(data))
    j2 = Journal(tmp_path, fsync=False)
    rep = j2.open()
    assert rep.corrupt_bytes > 0 and rep.torn_records == 0
    assert [e.body for e in j2.live()] == [b"A" * 40, b"C" * 40]


def test_segments_released_and_compacted(tmp_path: Path) -> None:
    j = Journal(tmp_path, segment_bytes=2000, fsync=False)
    j.open()
    seqs = [e.seq for _ in range(200) for e in j.append([(10, bytes(100))])]
    assert len(_segments(tmp_path)) > 5
    keep = {seqs[0], seqs[37]}
    for s in seqs:
        if s not in keep:
            j.ack(s)
    j.append([(10, b"tail")])
    # acked prefixes are deleted; the oldest mostly-dead segment is compacted into the active one
    assert len(_segments(tmp_path)) <= 3
    assert j.disk_bytes < 2000 * 3
    j.close()
    j2 = Journal(tmp_path, fsync=False)
    j2.open()
    assert [e.seq for e in j2.live()] == sorted(keep) + [seqs[-1] + 1]


def test_dead_letter(tmp_path: Path) -> None:
    j = Journal(tmp_path, fsync=False)
    j.open()
    (e,) = j.append([(10, b"bad sql")])
    j.dead_letter(e.seq, "client time is too greater than server time")
    j.close()
    j2 = Journal(tmp_path, fsync=False)
    rep = j2.open()
    assert rep.live == 0 and rep.dead_letters == 1
    assert [d.body for d in j2.read_dead_letters()] == [b"bad sql"]


def test_back_pressure_bound(tmp_path: Path) -> None:
    j = Journal(tmp_path, max_live_bytes=100, fsync=False)
    j.open()
    assert j.has_room(1000)  # an empty journal always takes one message
    j.append([(10, bytes(80))])
    assert j.has_room(20) and not j.has_room(21)


def test_unusable_directory(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    with pytest.raises(JournalError):
        Journal(blocker / "journal").open()
    with pytest.raises(JournalError):
        Journal(tmp_path / "j").append([(10, b"x")])  # not opened


_CHILD = textwrap.dedent("""
    import sys
    from vmproto.sensor.client.journal import Journal
    j = Journal(sys.argv[1], segment_bytes=256 * 1024)
    j.open()
    i = 0
    while True:
        batch = [(10, (b"%08d;" % (i + k)) * 400) for k in range(4)]
        entries = j.append(batch)
        for e in entries:
            if e.seq % 3 == 0:
                j.ack(e.seq)
        i += 4
        print(" ".join(str(e.seq) for e in entries), flush=True)
""")


@pytest.mark.parametrize("lines_before_kill", [3, 40])
def test_kill_9_mid_append(tmp_path: Path, lines_before_kill: int) -> None:
    """A child appends (fsync) and reports each durable group; SIGKILL at an arbitrary point. Every reported
    message that was not acknowledged must be replayed; a torn tail is dropped and counted, never an error."""
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[3]))
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(tmp_path)], stdout=subprocess.PIPE, env=env)
    reported: list[int] = []
    assert child.stdout is not None
    try:
        while len(reported) < 4 * lines_before_kill:
            line = child.stdout.readline()
            assert line, "child died early"
            reported.extend(int(x) for x in line.split())
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
    j = Journal(tmp_path)
    rep = j.open()
    live = {e.seq: e for e in j.live()}
    for seq in reported:
        if seq % 3:
            assert seq in live, f"durable message {seq} lost"
            n = seq - 1
            assert live[seq].body == (b"%08d;" % n) * 400
        else:
            # acked before it was reported: the ACK record reached the page cache, which survives a process kill
            assert seq not in live
    assert rep.corrupt_bytes == 0
    j.close()
