import itertools

import trio

from vmproto.server.keypool import RsaKeyPool


def _counting_factory():
    counter = itertools.count()

    def factory(bits):
        return (bits, next(counter))

    return factory


async def test_pool_fills_and_never_reuses_a_key():
    pool = RsaKeyPool({2048: 3, 4096: 1}, factory=_counting_factory())
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        with trio.fail_after(5):
            while pool.available(2048) < 3 or pool.available(4096) < 1:
                await trio.sleep(0.01)
        keys = [await pool.get(2048) for _ in range(10)]
        assert len(set(keys)) == 10
        assert all(k[0] == 2048 for k in keys)
        assert pool.served_from_pool >= 3
        with trio.fail_after(5):  # refilled after being drained
            while pool.available(2048) < 3:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()


async def test_without_pool_keys_are_generated_on_demand():
    pool = RsaKeyPool({}, factory=_counting_factory())
    assert await pool.get(2048) != await pool.get(2048)
    assert pool.served_on_demand == 2


async def test_generation_failure_does_not_kill_the_refill_task():
    calls = []

    def flaky(bits):
        calls.append(bits)
        if len(calls) == 1:
            raise RuntimeError("entropy exhausted")
        return object()

    pool = RsaKeyPool({2048: 1}, factory=flaky)
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        with trio.fail_after(5):
            while pool.available(2048) < 1:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert len(calls) >= 2
