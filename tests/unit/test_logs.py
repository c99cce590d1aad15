import io
import logging

from vmproto import logs


def test_key_value_line():
    buf = io.StringIO()
    logs.setup(0, stream=buf)
    logs.log_event(logging.getLogger("vmproto.t"), logging.INFO, "connection accepted", type="packetbuffer block",
                   peer="127.0.0.1:4000", n=3)
    line = buf.getvalue().strip()
    assert line.endswith('INFO vmproto.t connection accepted type="packetbuffer block" peer=127.0.0.1:4000 n=3')
    assert "\n" not in line


def test_debug_only_with_verbosity():
    buf = io.StringIO()
    logs.setup(0, stream=buf)
    logging.getLogger("vmproto.t").debug("hidden")
    logs.setup(2, stream=buf)
    logging.getLogger("vmproto.t").debug("shown")
    assert "hidden" not in buf.getvalue() and "shown" in buf.getvalue()


def test_rate_limiter_bounds_and_refills():
    rl = logs.RateLimiter(per_second=1.0, burst=3)
    assert [rl.allow("k", 0.0) for _ in range(5)] == [True, True, True, False, False]
    assert rl.suppressed == 2
    assert rl.allow("k", 1.5) is True
    assert rl.allow("other", 1.5) is True


def test_rate_limiter_memory_is_bounded():
    rl = logs.RateLimiter(max_keys=100)
    for i in range(10_000):
        rl.allow(f"peer{i}", 0.0)
    assert len(rl._tokens) <= 100
