"""A pool of pre-generated RSA keys for the handshake (spec §6, §17).

The reference generates a fresh key per connection inside the connection's thread; a 4096-bit key takes up to
seconds, so a reconnect storm of hundreds of sensors queues behind key generation. The pool keeps keys ready,
generated in worker threads, and still hands each key to exactly one connection (a key is never reused), so the
wire behaviour is the reference's.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Any

import trio

from vmproto.logs import log_event

log = logging.getLogger("vmproto.server.keypool")

KeyFactory = Callable[[int], Any]


def _default_factory(bits: int) -> Any:
    from vmproto.wire.crypto import generate_rsa_key

    return generate_rsa_key(bits)


class RsaKeyPool:
    """Keys by modulus size. `await pool.get(bits)` never waits when the pool is warm.

    `targets` maps bits -> how many keys to keep ready (0 disables pooling for that size: keys are generated on
    demand, as the reference does). `run()` is the refill task; start it in the server's nursery.
    """

    def __init__(self, targets: dict[int, int], factory: KeyFactory = _default_factory,
                 threads: int = 1) -> None:
        self.targets = dict(targets)
        self._factory = factory
        self._ready: dict[int, deque[Any]] = {bits: deque() for bits in targets}
        self._wakeup = trio.Event()
        self._limiter = trio.CapacityLimiter(max(1, threads))
        self.generated = 0
        self.served_from_pool = 0
        self.served_on_demand = 0

    def available(self, bits: int) -> int:
        return len(self._ready.get(bits, ()))

    async def _generate(self, bits: int) -> Any:
        key = await trio.to_thread.run_sync(self._factory, bits, limiter=self._limiter, abandon_on_cancel=True)
        self.generated += 1
        return key

    async def get(self, bits: int) -> Any:
        """A key used by nobody else. Generates one in a worker thread when none is ready."""
        ready = self._ready.setdefault(bits, deque())
        self._wakeup.set()  # a key left the pool (or is needed): let the refill task look
        if ready:
            self.served_from_pool += 1
            return ready.popleft()
        self.served_on_demand += 1
        return await self._generate(bits)

    def _deficit(self) -> int | None:
        for bits, target in self.targets.items():
            if len(self._ready[bits]) < target:
                return bits
        return None

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Refill forever (until cancelled): smallest deficit first, one key at a time."""
        task_status.started()
        while True:
            bits = self._deficit()
            if bits is None:
                self._wakeup = trio.Event()
                if self._deficit() is None:
                    await self._wakeup.wait()
                continue
            try:
                key = await self._generate(bits)
            except Exception as exc:  # a failing RNG/OpenSSL must not kill the server; on-demand still works
                log_event(log, logging.ERROR, "rsa key generation failed", bits=bits, error=repr(exc))
                await trio.sleep(1)
                continue
            self._ready[bits].append(key)
