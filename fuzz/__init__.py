"""Fuzzing of the sans-IO wire core (issue 10): harness bodies, seed generation and the atheris runner.

The harness bodies in :mod:`fuzz.harnesses` take one ``bytes`` input and are driven either by atheris
(``python fuzz/run.py``, coverage guided) or by the seeded mutator of :mod:`fuzz.mutator` (the CI short
mode in ``tests/fuzz``). Nothing here is imported by :mod:`vmproto`.
"""
