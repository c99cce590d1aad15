"""Structured, journald-friendly logging: one line per event, `key=value` fields, to stderr.

    log_event(log, logging.INFO, "connection accepted", type="store", peer="10.0.0.2:40000")
    -> 2026-11-26T05:40:01.123Z INFO vmproto.server connection accepted type=store peer=10.0.0.2:40000

Values with spaces or quotes are quoted. Secrets must never be passed (spec §17); the redaction helpers in
vmproto.config exist for configuration dumps. Repeated events from hostile peers go through RateLimiter so an
attacker cannot fill the disk with log lines.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

_VERBOSITY_LEVELS = {0: logging.INFO, 1: logging.INFO, 2: logging.DEBUG}


def _fmt_value(value: Any) -> str:
    text = str(value)
    if text == "" or any(c in text for c in ' "=\n\t'):
        text = '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


def fields(**kv: Any) -> str:
    """Render keyword fields as `k=v k2="v 2"` in the given order."""
    return " ".join(f"{k}={_fmt_value(v)}" for k, v in kv.items())


def log_event(logger: logging.Logger, level: int, event: str, **kv: Any) -> None:
    if logger.isEnabledFor(level):
        logger.log(level, f"{event} {fields(**kv)}" if kv else event)


class _Formatter(logging.Formatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        t = time.gmtime(record.created)
        return time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{int(record.msecs):03d}Z"


def setup(verbosity: int = 0, stream: Any = None) -> None:
    """Configure the root logger for a vmproto process; `-v N` raises verbosity (N >= 2: debug)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(_Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_VERBOSITY_LEVELS.get(verbosity, logging.DEBUG))


class RateLimiter:
    """Allow `burst` events per key, refilled at `per_second`; counts what it suppressed.

    The clock is passed in (`now`), so the limiter is deterministic in tests.
    """

    def __init__(self, per_second: float = 1.0, burst: int = 10, max_keys: int = 10_000) -> None:
        self.per_second = per_second
        self.burst = burst
        self.max_keys = max_keys
        self._tokens: dict[str, tuple[float, float]] = {}
        self.suppressed = 0

    def allow(self, key: str, now: float) -> bool:
        tokens, last = self._tokens.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.per_second)
        if tokens < 1.0:
            self._tokens[key] = (tokens, now)
            self.suppressed += 1
            return False
        if key not in self._tokens and len(self._tokens) >= self.max_keys:
            # Bounded memory under a flood of distinct keys: forget the oldest half.
            for old in list(self._tokens)[: self.max_keys // 2]:
                del self._tokens[old]
        self._tokens[key] = (tokens - 1.0, now)
        return True
