"""The store journal: durable, append-only segment files holding every store message until the central said `OK`
(spec §8.10.1).

Layout: `<dir>/seg-<n>.log` segment files plus `<dir>/deadletter.log`. Every record is

    magic "VMJ1" | crc32 u32 | body length u32 | kind u8 | seq u64 | id_main u32 | created f64 | body

(little endian; the CRC covers everything after the CRC field). Kinds: APPEND (a message), ACK (the central said
OK: the message with that seq is done), DEAD (moved to the dead-letter file, spec §8.8 `next_attempt` = 0).

Rules that make it crash safe:
- an append is fsynced before `append()` returns, so a message is durable before it is first sent;
- ACK/DEAD records are written without their own fsync (the next append's fsync, `sync()` or `close()` covers
  them): losing one in a crash only means a resend, which the central's dedup absorbs (spec §8.10.2);
- each process start writes into a fresh segment, so nothing is ever appended after a torn tail;
- replay reads every segment in order, keeps APPENDs without a later ACK/DEAD, and orders them by seq. A record
  cut short at the end of a file (a crash mid-write) is dropped and counted (`torn_records`); a damaged record
  elsewhere is skipped by resynchronising on the next valid record (`corrupt_bytes`);
- segments are deleted only from the oldest one forward and only when no live message remains in them, so an ACK
  never outlives... the APPEND it cancels in an older file; compaction copies the few live messages of the oldest
  segment into the active one (same seq) and then deletes it.
"""

from __future__ import annotations

import os
import re
import struct
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from vmproto.sensor.client.errors import JournalError

__all__ = ["Journal", "JournalEntry", "ReplayReport", "APPEND", "ACK", "DEAD"]

MAGIC = b"VMJ1"
APPEND, ACK, DEAD = 1, 2, 3
_HEAD = struct.Struct("<4sIIBQId")
_AFTER_CRC = 8  # CRC covers bytes from offset 8 of the record
_MAX_BODY = 256 * 1024 * 1024
_SEGMENT_RE = re.compile(r"^seg-(\d{12})\.log$")


class JournalEntry(NamedTuple):
    """One journaled store message: the exact body bytes after `<id_main>|` and the time part (spec §8.10.3)."""

    seq: int
    id_main: int
    created: float
    body: bytes


@dataclass
class ReplayReport:
    """What `Journal.open()` found on disk."""

    segments: int = 0
    records: int = 0
    live: int = 0
    torn_records: int = 0  # records cut short at the end of a file (crash mid-write), dropped
    corrupt_bytes: int = 0  # bytes skipped to resynchronise after a damaged record
    dead_letters: int = 0


@dataclass
class _Segment:
    number: int
    path: Path
    size: int = 0
    live: set[int] = field(default_factory=set)
    live_bytes: int = 0


def _encode(kind: int, seq: int, id_main: int, created: float, body: bytes) -> bytes:
    rest = _HEAD.pack(MAGIC, 0, len(body), kind, seq, id_main, created)[_AFTER_CRC:] + body
    return MAGIC + struct.pack("<I", zlib.crc32(rest)) + rest


def _scan(data: bytes, report: ReplayReport) -> tuple[list[tuple[int, JournalEntry]], int]:
    """Parse records; return ([(kind, entry)], offset after the last good record)."""
    out: list[tuple[int, JournalEntry]] = []
    pos, n, good_end = 0, len(data), 0
    while pos < n:
        if n - pos < _HEAD.size:
            report.torn_records += 1
            break
        magic, crc, length, kind, seq, id_main, created = _HEAD.unpack_from(data, pos)
        end = pos + _HEAD.size + length
        valid = magic == MAGIC and length <= _MAX_BODY and kind in (APPEND, ACK, DEAD)
        if valid and end > n:
            # Cut short: a torn tail if nothing valid follows (the usual crash), else damage.
            if _next_record(data, pos + 1) < 0:
                report.torn_records += 1
                break
            valid = False
        if valid and zlib.crc32(data[pos + _AFTER_CRC:end]) != crc:
            if _next_record(data, pos + 1) < 0:
                report.torn_records += 1
                break
            valid = False
        if not valid:
            nxt = _next_record(data, pos + 1)
            if nxt < 0:
                report.corrupt_bytes += n - pos
                break
            report.corrupt_bytes += nxt - pos
            pos = nxt
            continue
        out.append((kind, JournalEntry(seq, id_main, created, bytes(data[pos + _HEAD.size:end]))))
        report.records += 1
        pos = good_end = end
    return out, good_end


def _next_record(data: bytes, start: int) -> int:
    """Offset of the next complete record with a valid CRC at or after `start`, or -1."""
    pos = data.find(MAGIC, start)
    while pos >= 0:
        if len(data) - pos >= _HEAD.size:
            _m, crc, length, kind, _s, _i, _c = _HEAD.unpack_from(data, pos)
            end = pos + _HEAD.size + length
            if kind in (APPEND, ACK, DEAD) and length <= _MAX_BODY and end <= len(data) \
                    and zlib.crc32(data[pos + _AFTER_CRC:end]) == crc:
                return pos
        pos = data.find(MAGIC, pos + 1)
    return -1


class Journal:
    """The store journal in `directory` (created 0700 if missing). Not thread safe: one user at a time.

    `segment_bytes`: rotate the active segment past this size; `max_live_bytes`: the bound of spec §8.10.1 (see
    `has_room`); `fsync`: False only for tests and benchmarks that measure without the disk.
    """

    def __init__(self, directory: str | os.PathLike[str], *, segment_bytes: int = 64 * 1024 * 1024,
                 max_live_bytes: int = 1024 * 1024 * 1024, fsync: bool = True) -> None:
        self.directory = Path(directory)
        self.segment_bytes = segment_bytes
        self.max_live_bytes = max_live_bytes
        self._fsync = fsync
        self._segments: list[_Segment] = []
        self._entries: dict[int, tuple[_Segment, JournalEntry]] = {}
        self._fd = -1
        self._active: _Segment | None = None
        self._next_seq = 1
        self._unsynced = False
        self.live_bytes = 0
        self.report = ReplayReport()
        self.appended = 0
        self.acked = 0
        # ACK/dead-letter records that could not be written (disk full): the message is done in this process; a
        # restart before the next successful write may resend it, which the central's dedup absorbs (spec §8.10).
        self.finish_write_failures = 0
        self.dead_lettered = 0

    # ----------------------------------------------------------------------------------------------- open/close
    def open(self) -> ReplayReport:
        """Replay the directory and start a fresh active segment. Returns what was found.

        Raises JournalError when the directory cannot be created, read or written.
        """
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            names = sorted(p for p in os.listdir(self.directory) if _SEGMENT_RE.match(p))
        except OSError as exc:
            raise JournalError(f"journal directory {self.directory}: {exc.strerror}") from None
        report = ReplayReport(segments=len(names))
        top_seq = 0
        for name in names:
            seg = _Segment(int(_SEGMENT_RE.match(name).group(1)), self.directory / name)  # type: ignore[union-attr]
            try:
                data = seg.path.read_bytes()
            except OSError as exc:
                raise JournalError(f"cannot read {seg.path}: {exc.strerror}") from None
            records, good_end = _scan(data, report)
            if good_end < len(data):
                self._truncate(seg.path, good_end)
            seg.size = good_end
            self._segments.append(seg)
            for kind, entry in records:
                top_seq = max(top_seq, entry.seq)
                if kind == APPEND:
                    if entry.seq in self._entries:
                        continue  # a compaction copy whose original was not deleted before a crash
                    self._add_live(seg, entry)
                else:
                    self._drop_live(entry.seq)
        self._next_seq = top_seq + 1
        report.live = len(self._entries)
        report.dead_letters = self._count_dead_letters()
        self.report = report
        self._release_prefix()
        self._rotate()
        return report

    @property
    def is_open(self) -> bool:
        """True between `open()` and `close()`."""
        return self._fd >= 0

    def close(self) -> None:
        """fsync and close the active segment. Never raises for an already closed journal."""
        if self._fd >= 0:
            self.sync()
            os.close(self._fd)
            self._fd = -1

    # --------------------------------------------------------------------------------------------------- writes
    def has_room(self, nbytes: int) -> bool:
        """True when `nbytes` more live bytes fit under `max_live_bytes` (an empty journal always takes one)."""
        return not self._entries or self.live_bytes + nbytes <= self.max_live_bytes

    def append(self, messages: list[tuple[int, bytes]], now: float | None = None) -> list[JournalEntry]:
        """Append messages `(id_main, body)` durably (one fsync for the group); return their entries in order.

        Raises JournalError on I/O errors (disk full: nothing of the group counts as journaled).
        """
        self._require_open()
        created = time.time() if now is None else now
        entries = []
        chunks = []
        for id_main, body in messages:
            if not isinstance(body, bytes | bytearray) or len(body) > _MAX_BODY:
                raise JournalError("journal bodies are bytes of at most 256 MiB")
            entry = JournalEntry(self._next_seq, int(id_main), created, bytes(body))
            self._next_seq += 1
            entries.append(entry)
            chunks.append(_encode(APPEND, entry.seq, entry.id_main, created, entry.body))
        start = self._active.size  # type: ignore[union-attr]
        try:
            self._write(b"".join(chunks))
            self._sync_fd()
        except OSError as exc:
            self._truncate_active(start)
            raise JournalError(f"journal append failed: {exc.strerror}") from None
        seg = self._active
        assert seg is not None
        for entry in entries:
            self._add_live(seg, entry)
        self.appended += len(entries)
        if seg.size >= self.segment_bytes:
            self._rotate()
        return entries

    def ack(self, seq: int) -> None:
        """Mark message `seq` done (the central said OK). Unknown seqs are ignored (a replayed duplicate)."""
        self._finish(seq, ACK)
        self.acked += 1

    def dead_letter(self, seq: int, reason: str = "") -> None:
        """Move message `seq` to the dead-letter file (fsynced) and drop it from the live set."""
        self._require_open()
        item = self._entries.get(seq)
        if item is None:
            return
        entry = item[1]
        path = self.directory / "deadletter.log"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(fd, _encode(APPEND, entry.seq, entry.id_main, entry.created, entry.body))
                if self._fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise JournalError(f"dead-letter write failed: {exc.strerror}") from None
        self._finish(seq, DEAD)
        self.dead_lettered += 1

    def sync(self) -> None:
        """fsync pending ACK/DEAD records. Raises JournalError on I/O errors."""
        if self._fd >= 0 and self._unsynced:
            try:
                self._sync_fd()
            except OSError as exc:
                raise JournalError(f"journal fsync failed: {exc.strerror}") from None

    # ---------------------------------------------------------------------------------------------------- reads
    def live(self) -> list[JournalEntry]:
        """Every message not yet acknowledged, in journal (seq) order."""
        return [self._entries[s][1] for s in sorted(self._entries)]

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def disk_bytes(self) -> int:
        """Bytes of all segment files."""
        return sum(s.size for s in self._segments)

    @property
    def oldest_created(self) -> float | None:
        """Creation time of the oldest live message (journal age for metrics), or None."""
        if not self._entries:
            return None
        return self._entries[min(self._entries)][1].created

    def read_dead_letters(self) -> list[JournalEntry]:
        """The dead-letter file's messages (for an operator to inspect or re-inject)."""
        path = self.directory / "deadletter.log"
        if not path.exists():
            return []
        records, _end = _scan(path.read_bytes(), ReplayReport())
        return [e for k, e in records if k == APPEND]

    # ------------------------------------------------------------------------------------------------ internals
    def _require_open(self) -> None:
        if self._fd < 0:
            raise JournalError("journal is not open")

    def _count_dead_letters(self) -> int:
        try:
            return len(self.read_dead_letters())
        except OSError:
            return 0

    def _add_live(self, seg: _Segment, entry: JournalEntry) -> None:
        self._entries[entry.seq] = (seg, entry)
        seg.live.add(entry.seq)
        seg.live_bytes += len(entry.body) + _HEAD.size  # record bytes, comparable with the file size
        self.live_bytes += len(entry.body)

    def _drop_live(self, seq: int) -> bool:
        item = self._entries.pop(seq, None)
        if item is None:
            return False
        seg, entry = item
        seg.live.discard(seq)
        seg.live_bytes -= len(entry.body) + _HEAD.size
        self.live_bytes -= len(entry.body)
        return True

    def _finish(self, seq: int, kind: int) -> None:
        self._require_open()
        item = self._entries.get(seq)
        if item is None:
            return
        assert self._active is not None
        start = self._active.size
        try:
            self._write(_encode(kind, seq, item[1].id_main, 0.0, b""))
            self._unsynced = True
        except OSError:
            # Never lose track of a finished message because the disk is full: undo the partial record, count it,
            # and drop the message from the live set anyway (see finish_write_failures).
            self._truncate_active(start)
            self.finish_write_failures += 1
        self._drop_live(seq)
        self._release_prefix()
        self._compact_oldest()

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        assert self._active is not None
        self._active.size += len(data)

    def _sync_fd(self) -> None:
        if self._fsync:
            os.fdatasync(self._fd)
        self._unsynced = False

    def _truncate(self, path: Path, size: int) -> None:
        try:
            with open(path, "r+b") as f:
                f.truncate(size)
                if self._fsync:
                    os.fsync(f.fileno())
        except OSError as exc:
            raise JournalError(f"cannot truncate torn tail of {path}: {exc.strerror}") from None

    def _truncate_active(self, size: int) -> None:
        try:
            os.ftruncate(self._fd, size)
            os.lseek(self._fd, size, os.SEEK_SET)
        except OSError:
            pass
        assert self._active is not None
        self._active.size = size

    def _rotate(self) -> None:
        number = self._segments[-1].number + 1 if self._segments else 1
        seg = _Segment(number, self.directory / f"seg-{number:012d}.log")
        try:
            fd = os.open(seg.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
            if self._fsync:
                dfd = os.open(self.directory, os.O_RDONLY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
        except OSError as exc:
            raise JournalError(f"cannot create {seg.path}: {exc.strerror}") from None
        if self._fd >= 0:
            self.sync()
            os.close(self._fd)
        self._fd = fd
        self._segments.append(seg)
        self._active = seg
        self._compact_oldest()

    def _release_prefix(self) -> None:
        # Only a prefix may go: an ACK in a later file must never outlive the APPEND it cancels.
        while len(self._segments) > 1 and not self._segments[0].live and self._segments[0] is not self._active:
            seg = self._segments.pop(0)
            try:
                seg.path.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise JournalError(f"cannot delete {seg.path}: {exc.strerror}") from None

    def _compact_oldest(self) -> None:
        """Copy the live messages of the oldest sealed segment into the active one when they are a small part of it
        (or the active one cannot fill up behind it), then release it."""
        if self._fd < 0 or len(self._segments) < 2:
            return
        oldest = self._segments[0]
        if oldest is self._active or not oldest.live:
            return
        if oldest.live_bytes * 4 > max(oldest.size, 1):
            return
        entries = [self._entries[s][1] for s in sorted(oldest.live)]
        data = b"".join(_encode(APPEND, e.seq, e.id_main, e.created, e.body) for e in entries)
        start = self._active.size  # type: ignore[union-attr]
        try:
            self._write(data)
            self._sync_fd()
        except OSError as exc:
            self._truncate_active(start)
            raise JournalError(f"journal compaction failed: {exc.strerror}") from None
        for e in entries:
            self._drop_live(e.seq)
            self._add_live(self._active, e)  # type: ignore[arg-type]
        self._release_prefix()
