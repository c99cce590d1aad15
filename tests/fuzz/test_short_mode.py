"""CI short mode of the fuzz campaign: every harness body of fuzz/ run on its seeds and then on a bounded
number of inputs from the seeded mutator (no atheris needed). Only wire errors may escape, the caps hold
(the harnesses check them), and the Python heap peak of any single input stays under MAX_PEAK_BYTES."""

from __future__ import annotations

import pytest

from fuzz.checks import MAX_PEAK_BYTES, known_issue
from fuzz.harnesses import HARNESSES
from fuzz.mutator import Mutator, run_mutated
from fuzz.seeds import dialogue_streams, seeds, vector_payloads
from fuzz.source import ByteSource, ScriptWriter

# Iterations per harness: codecs run ~10k inputs/s, machines (RSA handshakes) ~1k/s; the whole module stays
# well under 30 s on one core.
CODEC_ITERATIONS = 1500
MACHINE_ITERATIONS = 250


@pytest.mark.parametrize("name", sorted(HARNESSES))
def test_harness_short_run(name):
    iterations = MACHINE_ITERATIONS if name.startswith("conn_") else CODEC_ITERATIONS
    stats = run_mutated(name, HARNESSES[name], seeds(name), iterations=iterations, seed=20260414)
    assert stats.executions >= iterations
    if stats.failures:
        data, exc = stats.failures[0]
        pytest.fail(f"{len(stats.failures)} new findings; first: {exc!r}\n"
                    f"reproduce: HARNESSES[{name!r}](bytes.fromhex({data.hex()!r}))")
    assert stats.peak_bytes <= MAX_PEAK_BYTES, f"peak {stats.peak_bytes} bytes"


def test_seeds_exist_for_every_harness():
    for name in HARNESSES:
        assert len(seeds(name)) >= 5, name


def test_seeds_come_from_vectors_and_dialogues():
    vectors = vector_payloads()
    for name in ("block_reader", "opening", "aes", "pbstore", "store_msg", "query_result", "vmjson"):
        assert vectors.get(name), name
    # Every type's valid dialogue writes something both ways.
    assert len(dialogue_streams()) >= 12


def test_seeds_run_clean_without_known_issues():
    """The seeds are valid inputs: none of them may trip even a known issue."""
    for name, body in HARNESSES.items():
        for seed in seeds(name):
            try:
                body(seed)
            except Exception as exc:  # noqa: BLE001
                pytest.fail(f"seed of {name} fails ({known_issue(exc)}): {exc!r}")


def test_byte_source_reads_what_the_writer_wrote():
    data = ScriptWriter().u8(7).u16(513).u32(0xDEADBEEF).choice(2, 3).blob(b"abc").raw(b"tail").build()
    src = ByteSource(data)
    assert (src.u8(), src.u16(), src.u32(), src.below(3), src.blob(), src.rest()) == \
        (7, 513, 0xDEADBEEF, 2, b"abc", b"tail")
    assert src.u32() == 0 and src.blob() == b"" and src.remaining == 0


def test_mutator_is_deterministic_and_bounded():
    corpus = [b"hello world" * 10, b"\0" * 100]
    first = [Mutator(5).mutate(corpus[0], corpus) for _ in range(3)]
    again = [Mutator(5).mutate(corpus[0], corpus) for _ in range(3)]
    assert first == again
    m = Mutator(6)
    outputs = {m.mutate(corpus[i % 2], corpus) for i in range(200)}
    assert len(outputs) > 150 and all(len(o) <= 1 << 16 for o in outputs)


def test_harness_catches_a_stray_exception():
    """The loop reports non-wire exceptions as findings (the harness contract cannot pass vacuously)."""

    def broken(data: bytes) -> None:
        if data[:1] == b"x":
            raise KeyError("boom")

    stats = run_mutated("broken", broken, [b"x", b"y"], iterations=10, seed=1, track_memory=False)
    assert stats.failures and isinstance(stats.failures[0][1], KeyError)
