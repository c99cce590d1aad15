"""The machine-readable spec parts the cases take their expected bytes from (spec/errors.toml, spec/vectors.toml).

The suite reads them from the spec directory of the checkout (`--spec-dir` overrides), so a change of the spec
changes the expectations without touching the cases.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_SPEC_DIR", "Spec", "SpecError", "load_spec"]

DEFAULT_SPEC_DIR = Path(__file__).resolve().parent.parent / "spec"


class SpecError(Exception):
    """The spec files are missing or do not hold what the suite needs."""


@dataclass(frozen=True, slots=True)
class Spec:
    """Reply catalogue by id, vectors by name, and the set of section numbers that exist (1..17)."""

    errors: dict[str, dict[str, Any]]
    vectors: dict[str, dict[str, Any]]
    sections: tuple[int, ...]

    def text(self, error_id: str) -> bytes:
        """The exact bytes of a fixed catalogue entry. Raises SpecError for an unknown id or a template."""
        entry = self._entry(error_id)
        if "text" not in entry:
            raise SpecError(f"errors.toml entry {error_id!r} is a template, use regex()")
        return entry["text"].encode("utf-8")

    def regex(self, error_id: str) -> re.Pattern[bytes]:
        """A compiled full-match pattern for a catalogue entry (fixed entries match only themselves)."""
        entry = self._entry(error_id)
        if "regex" in entry:
            return re.compile(entry["regex"].encode("utf-8"), re.DOTALL)
        return re.compile(re.escape(entry["text"].encode("utf-8")))

    def template(self, error_id: str, **values: object) -> bytes:
        """Fill a template entry's `<name>` placeholders. Raises SpecError when a placeholder stays unfilled."""
        entry = self._entry(error_id)
        out = entry.get("template", entry.get("text", ""))
        for name, value in values.items():
            out = out.replace(f"<{name}>", str(value))
        if re.search(r"<[a-z_]+>", out):
            raise SpecError(f"template {error_id!r} needs more values: {out!r}")
        return out.encode("utf-8")

    def _entry(self, error_id: str) -> dict[str, Any]:
        try:
            return self.errors[error_id]
        except KeyError:
            raise SpecError(f"errors.toml has no entry {error_id!r}") from None


def load_spec(spec_dir: Path | str | None = None) -> Spec:
    """Read errors.toml and vectors.toml. Raises SpecError when they are missing or malformed."""
    root = Path(spec_dir) if spec_dir is not None else DEFAULT_SPEC_DIR
    try:
        errors = tomllib.loads((root / "errors.toml").read_text("utf-8"))["error"]
        vectors = tomllib.loads((root / "vectors.toml").read_text("utf-8"))["vector"]
    except (OSError, KeyError, tomllib.TOMLDecodeError) as exc:
        raise SpecError(f"cannot read the spec in {root}: {exc}") from None
    sections = tuple(sorted(int(p.name[:2]) for p in root.glob("[0-9][0-9]-*.md")))
    return Spec({e["id"]: e for e in errors}, {v["name"]: v for v in vectors}, sections)
