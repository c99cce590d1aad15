"""Client timeouts and retry pacing (spec §14.1, §14.2), with jitter so a fleet does not reconnect in step.

Every delay of the reference is kept as the base value; `jitter` (default 10 %) adds a random extra of up to that
fraction, never less than the reference waits. Tests scale the whole table with `Timings.scaled(factor)`.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass

__all__ = ["Timings", "store_retry_delay", "query_retry_delay", "pb_retry_delay", "jittered"]


@dataclass(frozen=True, slots=True)
class Timings:
    """All client-side durations in seconds (names follow spec §14)."""

    connect_timeout: float = 10.0  # one TCP connect attempt to one address
    handshake_timeout: float = 300.0  # rsa_key / handshake result reads
    reply_timeout: float = 300.0  # store / query / packetbuffer / responses reply reads
    service_receive_timeout: float = 30.0  # client_server_receiver_timeout (0 -> 30)
    service_pass_pause: float = 5.0  # after a full pass over all hosts failed to connect
    service_handshake_pause: float = 1.0  # after a failed service handshake
    service_stop_grace: float = 7.0  # wait for the next ping to answer `stop` (spec §7.9)
    responses_connect_pause: float = 5.0
    responses_handshake_pause: float = 1.0
    response_crlf_pause: float = 0.2  # spec §11.1 / §16 Q2
    write_timeout: float = 60.0
    retry_step: float = 1.0  # unit of the min(1 + 2·attempt, 60) schedule
    retry_cap: float = 60.0
    pb_short_pause: float = 1.0  # packetbuffer resend, attempts 1-9
    pb_long_pause: float = 5.0  # packetbuffer resend, attempts >= 10
    query_idle_probe: float = 10.0
    jitter: float = 0.1

    def scaled(self, factor: float) -> Timings:
        """A copy with every duration multiplied by `factor` (jitter fraction unchanged)."""
        changes = {f.name: getattr(self, f.name) * factor for f in dataclasses.fields(self) if f.name != "jitter"}
        return dataclasses.replace(self, **changes)


def jittered(seconds: float, fraction: float, rng: random.Random | None = None) -> float:
    """`seconds` plus a uniform random extra of up to `fraction` of it (never shorter than the base)."""
    if seconds <= 0 or fraction <= 0:
        return max(seconds, 0.0)
    return seconds * (1.0 + (rng or random).random() * fraction)


def store_retry_delay(t: Timings, attempt: int, usleep: int | None = None) -> float:
    """Store pause before the next attempt: the reply's `usleep` (µs) if given, else min(1 + 2·attempt, 60) s
    in units of `retry_step` (spec §8.8, §14.2). `attempt` starts at 1."""
    if usleep is not None:
        return usleep / 1_000_000 * t.retry_step
    return min((1 + 2 * max(attempt, 1)) * t.retry_step, t.retry_cap)


def query_retry_delay(t: Timings, attempt: int) -> float:
    """Query pause: min(1 + 2·attempt, 60) retry steps (spec §14.2)."""
    return min((1 + 2 * max(attempt, 1)) * t.retry_step, t.retry_cap)


def pb_retry_delay(t: Timings, attempt: int) -> float:
    """Packetbuffer resend pause: 1 s before attempts 1-9, then 5 s (spec §9.10)."""
    return t.pb_short_pause if attempt < 10 else t.pb_long_pause
