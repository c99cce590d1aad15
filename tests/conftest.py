"""Shared fixtures. Data in ../shared is read in place; tests that need it skip with a reason when absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VMPROTO_SHARED", ROOT.parent / "shared")).resolve()
REFERENCE = SHARED / "reference"
CORPUS = SHARED / "corpus"


def need_shared(path: Path) -> Path:
    """Return `path`, or skip the calling test when the shared data is not beside the clone."""
    if not path.exists():
        pytest.skip(f"shared data not available: {path} (expected ../shared beside the clone, or VMPROTO_SHARED)")
    return path


@pytest.fixture
def reference_dir() -> Path:
    return need_shared(REFERENCE)


@pytest.fixture
def corpus_dir() -> Path:
    return need_shared(CORPUS)
