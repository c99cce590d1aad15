"""Replay of capture files into the pipeline: as fast as possible, or at the pace of the capture."""

from __future__ import annotations

import os
from collections.abc import Callable

import trio

from .batch import PacketBatch
from .files import CaptureFileReader
from .options import Replay


def split_due(batch: PacketBatch, start_ts: int, elapsed_ns: int) -> tuple[PacketBatch, PacketBatch]:
    """Split `batch` into the packets due after `elapsed_ns` of replay (capture started at `start_ts`)
    and the rest. Returns (due, rest)."""
    limit = start_ts + elapsed_ns
    ts = batch.ts_ns
    i = 0
    n = len(ts)
    while i < n and ts[i] <= limit:
        i += 1
    due = PacketBatch(batch.linktype, ts[:i], batch.frames[:i], batch.orig_len[:i])
    rest = PacketBatch(batch.linktype, ts[i:], batch.frames[i:], batch.orig_len[i:])
    return due, rest


async def replay_file(path: str | os.PathLike[str], send: trio.MemorySendChannel, mode: Replay = Replay.FAST,
                      batch_size: int = 4096, speed: float = 1.0,
                      clock: Callable[[], float] = trio.current_time) -> int:
    """Send the batches of a capture file into `send`; return the number of packets sent.

    `Replay.PACE` keeps the capture's inter-packet gaps (divided by `speed`); `Replay.FAST` sends as fast
    as the receiver takes them. Raises `CaptureFormatError` for a bad file.
    """
    if speed <= 0:
        raise ValueError("speed must be positive")
    sent = 0
    t0: float | None = None
    first_ts = 0
    with CaptureFileReader(path, batch_size) as reader:
        for batch in reader:
            if mode is Replay.FAST:
                await send.send(batch)
                sent += len(batch.frames)
                continue
            if t0 is None:
                t0 = clock()
                first_ts = batch.ts_ns[0]
            rest = batch
            while rest.frames:
                elapsed_ns = int((clock() - t0) * speed * 1e9)
                due, rest = split_due(rest, first_ts, elapsed_ns)
                if due.frames:
                    await send.send(due)
                    sent += len(due.frames)
                if rest.frames:
                    wait_s = (rest.ts_ns[0] - first_ts) / speed / 1e9 - (clock() - t0)
                    await trio.sleep(max(wait_s, 0))
    return sent
