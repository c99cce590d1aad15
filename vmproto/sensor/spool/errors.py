"""Errors of the spool: bad options and paths that leave the spool."""

from __future__ import annotations

__all__ = ["SpoolAccessError", "SpoolError", "SpoolOptionError"]


class SpoolError(Exception):
    """Base of the spool's errors."""


class SpoolOptionError(SpoolError, ValueError):
    """A spool option (savertp, maxpool*, spooldir, ...) has a value we cannot use. The message names it."""


class SpoolAccessError(SpoolError):
    """A path asked for by a manager command is not inside a spool directory (spec §13.4).

    The manager answers `access denied`; the message says why, for the log only.
    """
