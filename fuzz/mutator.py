"""A seeded byte mutator and the loop that drives a harness with it (the CI short mode, and the runner's
fallback when atheris is not installed).

The mutations are libFuzzer's everyday ones -- bit flips, interesting integers, inserts, deletes, duplicated
ranges, splices with another corpus entry -- so mutated scripts still mostly parse as scripts, and mutated
frames keep most of their structure.
"""

from __future__ import annotations

import random
import struct
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .checks import known_issue

__all__ = ["Mutator", "RunStats", "run_mutated"]

_INTERESTING_8 = (0, 1, 0x7F, 0x80, 0xFF)
_INTERESTING_16 = (0, 0x7FFF, 0x8000, 0xFFFF, 40, 64, 1024)
_INTERESTING_32 = (0, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0x10000000, 0x10000001, 65536, 65537)
MAX_LEN = 1 << 16


class Mutator:
    """Deterministic mutator: the same seed gives the same sequence of inputs."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)

    def mutate(self, data: bytes, corpus: Sequence[bytes]) -> bytes:
        """Return ``data`` with 1-4 random mutations applied (never longer than 64 KiB)."""
        rng = self._rng
        buf = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            choice = rng.randrange(8)
            if not buf and choice not in (4, 7):
                choice = 4
            if choice == 0:
                i = rng.randrange(len(buf))
                buf[i] ^= 1 << rng.randrange(8)
            elif choice == 1:
                buf[rng.randrange(len(buf))] = rng.choice(_INTERESTING_8)
            elif choice == 2 and len(buf) >= 2:
                i = rng.randrange(len(buf) - 1)
                buf[i : i + 2] = struct.pack("<H", rng.choice(_INTERESTING_16))
            elif choice == 3 and len(buf) >= 4:
                i = rng.randrange(len(buf) - 3)
                buf[i : i + 4] = struct.pack("<I", rng.choice(_INTERESTING_32))
            elif choice == 4:
                i = rng.randrange(len(buf) + 1)
                buf[i:i] = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 16)))
            elif choice == 5:
                i = rng.randrange(len(buf))
                del buf[i : i + rng.randint(1, 32)]
            elif choice == 6:
                i = rng.randrange(len(buf))
                chunk = buf[i : i + rng.randint(1, 64)]
                j = rng.randrange(len(buf) + 1)
                buf[j:j] = chunk * rng.randint(1, 4)
            elif corpus:
                other = rng.choice(corpus)
                if other:
                    cut = rng.randrange(len(buf) + 1)
                    start = rng.randrange(len(other))
                    buf = buf[:cut] + other[start : start + rng.randint(1, 256)]
        return bytes(buf[:MAX_LEN])


@dataclass
class RunStats:
    """What one mutated run did."""

    name: str
    executions: int = 0
    seconds: float = 0.0
    peak_bytes: int = 0
    known: dict[str, int] = field(default_factory=dict)
    failures: list[tuple[bytes, BaseException]] = field(default_factory=list)

    @property
    def per_second(self) -> float:
        """Executions per second."""
        return self.executions / self.seconds if self.seconds else 0.0


def run_mutated(
    name: str,
    harness: Callable[[bytes], None],
    seeds: Sequence[bytes],
    *,
    iterations: int,
    seed: int = 0,
    strict: bool = False,
    track_memory: bool = True,
    max_seconds: float | None = None,
) -> RunStats:
    """Run every seed once, then ``iterations`` mutated inputs (or until ``max_seconds``).

    New findings are collected in ``failures`` (input, exception); known issues are counted in ``known``
    unless ``strict``. With ``track_memory`` the tracemalloc peak of the worst single input is recorded.
    """
    stats = RunStats(name)
    mutator = Mutator(seed)
    corpus = list(seeds) or [b""]
    started = time.perf_counter()
    if track_memory:
        tracemalloc.start()
    try:
        inputs = iter(corpus)
        for i in range(len(corpus) + iterations):
            data = next(inputs, None)
            if data is None:
                data = mutator.mutate(corpus[i % len(corpus)], corpus)
            if track_memory:
                tracemalloc.reset_peak()
            try:
                harness(data)
            except Exception as exc:  # noqa: BLE001 - every exception is a finding to classify
                issue = None if strict else known_issue(exc)
                if issue is None:
                    stats.failures.append((data, exc))
                else:
                    stats.known[issue.id] = stats.known.get(issue.id, 0) + 1
            if track_memory:
                stats.peak_bytes = max(stats.peak_bytes, tracemalloc.get_traced_memory()[1])
            stats.executions += 1
            if max_seconds is not None and time.perf_counter() - started > max_seconds:
                break
    finally:
        if track_memory:
            tracemalloc.stop()
        stats.seconds = time.perf_counter() - started
    return stats
