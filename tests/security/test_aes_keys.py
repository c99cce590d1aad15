"""AES key strings come from a CSPRNG (spec §3.4, §17.2): the reference's alphabet 0x30-0x7A, no repeats over
100 000 draws, no visible bias in character frequencies, and no `random` module anywhere on the path."""

from __future__ import annotations

import ast
import math
from collections import Counter
from pathlib import Path

from vmproto.wire import crypto
from vmproto.wire.crypto import AES_KEY_ALPHABET, generate_aes_strings

ROOT = Path(__file__).resolve().parents[2]
DRAWS = 100_000
ALPHABET = set(AES_KEY_ALPHABET.decode("ascii"))


def _chi_square_limit(df: int, z: float = 4.75) -> float:
    """Wilson-Hilferty upper quantile of chi-square(df); z = 4.75 is a one-sided p of about 1e-6."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def test_alphabet_is_the_reference_range():
    assert AES_KEY_ALPHABET == bytes(range(0x30, 0x7B))


def test_keys_unique_in_alphabet_and_unbiased():
    keys, ivs = set(), set()
    counts: Counter[str] = Counter()
    first: Counter[str] = Counter()
    for _ in range(DRAWS):
        ckey, ivec = generate_aes_strings()
        assert len(ckey) == 32 and len(ivec) == 16
        keys.add(ckey[:16])  # only the first 16 characters are key material (spec §3)
        ivs.add(ivec)
        counts.update(ckey)
        counts.update(ivec)
        first[ckey[0]] += 1
    assert len(keys) == DRAWS and len(ivs) == DRAWS, "a key or IV repeated"
    assert set(counts) == ALPHABET, sorted(set(counts) ^ ALPHABET)
    for sample in (counts, first):
        total = sum(sample.values())
        expected = total / len(ALPHABET)
        chi2 = sum((sample[c] - expected) ** 2 / expected for c in ALPHABET)
        assert chi2 < _chi_square_limit(len(ALPHABET) - 1), f"chi-square {chi2:.1f} over {total} characters"


def test_chi_square_check_detects_a_biased_generator():
    """The bias check is able to fail: a generator that never draws the top 5 characters is caught."""
    narrowed = sorted(ALPHABET)[:-5]
    counts = Counter({c: 1000 for c in narrowed})
    expected = sum(counts.values()) / len(ALPHABET)
    chi2 = sum((counts[c] - expected) ** 2 / expected for c in ALPHABET)
    assert chi2 > _chi_square_limit(len(ALPHABET) - 1)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text("utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_generator_draws_from_secrets_not_random():
    source = Path(crypto.__file__)
    names = _imports(source)
    assert "secrets" in names and "random" not in names
    tree = ast.parse(source.read_text("utf-8"))
    fn = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "generate_aes_strings")
    calls = {ast.unparse(n.func) for n in ast.walk(fn) if isinstance(n, ast.Call)}
    assert "secrets.choice" in calls, calls


def test_sensor_key_generation_has_no_weak_random():
    """Modules that create connection keys (sensor client, server key pool) never import `random`."""
    suspects = []
    for path in [*(ROOT / "vmproto" / "sensor" / "client").glob("*.py"), ROOT / "vmproto" / "server" / "keypool.py"]:
        text = path.read_text("utf-8")
        if ("aes_ckey" in text or "generate_aes_strings" in text) and "random" in _imports(path):
            suspects.append(str(path.relative_to(ROOT)))
    assert not suspects
