"""Spool options, named after the reference's configuration keys.

Defaults follow the reference: `savesip` and `savertp` off, `pcap_split` on (SIP and RTP in separate
files under `SIP/` and `RTP/`), every `maxpool*` limit 0 (= no limit). Sizes are in MB (2^20 bytes), days
are whole days.

`savertp` takes `yes`, `no` or `header` (also `h`): `header` keeps each RTP packet only up to the end of its
12-byte fixed RTP header, with the original length recorded, as the reference does.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import SpoolOptionError

__all__ = ["RtpMode", "SpoolLimits", "SpoolOptions", "parse_savertp"]


class RtpMode(enum.Enum):
    """What of an RTP packet goes into the call's RTP capture."""

    NO = "no"
    YES = "yes"
    HEADER = "header"


def parse_savertp(value: object) -> RtpMode:
    """Parse a `savertp` value (`yes`/`no`/`header`, or a bool). Raises SpoolOptionError."""
    if isinstance(value, RtpMode):
        return value
    if isinstance(value, bool):
        return RtpMode.YES if value else RtpMode.NO
    text = str(value).strip().lower()
    if text in ("header", "h", "-1"):
        return RtpMode.HEADER
    # The reference's yesno: the first character decides.
    if text[:1] in ("y", "1"):
        return RtpMode.YES
    if text[:1] in ("n", "0", ""):
        return RtpMode.NO
    raise SpoolOptionError(f"savertp must be yes, no or header, got {value!r}")


def _yesno(value: object) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip()[:1] in ("y", "Y", "1")


def _nonneg_int(name: str, value: object) -> int:
    if isinstance(value, bool):
        raise SpoolOptionError(f"{name} must be a whole number >= 0, got {value!r}")
    try:
        number = int(str(value).strip(), 10) if not isinstance(value, int) else value
    except ValueError:
        raise SpoolOptionError(f"{name} must be a whole number >= 0, got {value!r}") from None
    if number < 0:
        raise SpoolOptionError(f"{name} must be a whole number >= 0, got {value!r}")
    return number


@dataclass(frozen=True, slots=True)
class SpoolLimits:
    """The reference's spool limits; 0 = no limit. Sizes in MB, ages in days.

    `maxpoolsize`/`maxpooldays` apply to everything, the `sip`/`rtp` ones to that file type only.
    """

    maxpoolsize: int = 0
    maxpooldays: int = 0
    maxpoolsipsize: int = 0
    maxpoolsipdays: int = 0
    maxpoolrtpsize: int = 0
    maxpoolrtpdays: int = 0

    def __post_init__(self) -> None:
        for name in self.__slots__:  # type: ignore[attr-defined]
            _nonneg_int(name, getattr(self, name))

    @property
    def any(self) -> bool:
        """True when at least one limit is set."""
        return any(getattr(self, name) for name in self.__slots__)  # type: ignore[attr-defined]


LIMIT_NAMES = ("maxpoolsize", "maxpooldays", "maxpoolsipsize", "maxpoolsipdays", "maxpoolrtpsize", "maxpoolrtpdays")


@dataclass(frozen=True, slots=True)
class SpoolOptions:
    """Where and what the sensor spools. Raises SpoolOptionError on invalid values.

    `spooldirs[0]` is `spooldir`; `spooldirs[1]`, when configured, is `spooldir_2` (the manager commands'
    `spool_index` selects one). `cleanspool_interval` is the cleaner's period in seconds.
    """

    spooldirs: tuple[Path, ...] = (Path("/var/spool/voipmonitor"),)
    savesip: bool = False
    savertp: RtpMode = RtpMode.NO
    pcap_split: bool = True
    limits: SpoolLimits = field(default_factory=SpoolLimits)
    cleanspool: bool = True
    cleanspool_interval: int = 300
    max_open_files: int = 256
    flush_bytes: int = 1 << 20

    def __post_init__(self) -> None:
        if not self.spooldirs:
            raise SpoolOptionError("spooldir must be set")
        for d in self.spooldirs:
            if "\x00" in str(d) or not str(d):
                raise SpoolOptionError(f"bad spooldir {str(d)!r}")
        if not isinstance(self.savertp, RtpMode):
            raise SpoolOptionError(f"savertp must be an RtpMode, got {self.savertp!r}")
        if self.cleanspool_interval < 1:
            raise SpoolOptionError(f"cleanspool_interval must be >= 1 s, got {self.cleanspool_interval}")
        if self.max_open_files < 1:
            raise SpoolOptionError(f"max_open_files must be >= 1, got {self.max_open_files}")
        if self.flush_bytes < 1:
            raise SpoolOptionError(f"flush_bytes must be >= 1, got {self.flush_bytes}")

    @property
    def enabled(self) -> bool:
        """True when any per-call capture is written."""
        return self.savesip or self.savertp is not RtpMode.NO

    @classmethod
    def from_config(cls, cfg: Any) -> SpoolOptions:
        """Build from a vmproto.config.Config (or anything with `get(name, default)`).

        Options the registry does not know yet arrive as raw text; both forms are accepted.
        Raises SpoolOptionError naming the option.
        """
        dirs = [Path(str(cfg.get("spooldir", "/var/spool/voipmonitor")))]
        second = cfg.get("spooldir_2", "")
        if second:
            dirs.append(Path(str(second)))
        limits = SpoolLimits(**{n: _nonneg_int(n, cfg.get(n, 0)) for n in LIMIT_NAMES})
        interval = _nonneg_int("cleanspool_interval", cfg.get("cleanspool_interval", 0)) or 300
        return cls(
            spooldirs=tuple(dirs),
            savesip=_yesno(cfg.get("savesip", False)),
            savertp=parse_savertp(cfg.get("savertp", "no")),
            pcap_split=_yesno(cfg.get("pcap_split", True)),
            limits=limits,
            cleanspool=_yesno(cfg.get("cleanspool", True)),
            cleanspool_interval=interval,
        )
