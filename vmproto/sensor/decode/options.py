"""Decoder options, named after the reference sniffer's configuration keys.

Defaults follow the reference (2026.04.0): the UDP tunnel decoders are on (``udp_port_l2tp = 1701``,
``udp_port_tzsp = 37008``, ``udp_port_vxlan = 4789``), AudioCodes, HEP and IPFIX are off. A port of 0 turns
its decoder off, as in the reference.

Where we differ from the reference, on purpose:

* ``hep``/``ipfix``: the reference decodes these only from its listeners (``hep_bind_port``,
  ``ipfix_bind_port``), never from a capture file. We decode them from captures too, on the same ports.
  ``hep_bind_port`` has no default in the reference; we use 9060, the usual HEP port.
* GRE with a key or checksum and an IP payload, and L2TPv3, are decoded (the reference loses them).
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import OptionError

DEDUP_MODES = ("yes", "ip_only", "no")


def _check_port(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 65535:
        raise OptionError(f"{name} must be a port number 0..65535 (0 = off), got {value!r}")


def _check_positive(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise OptionError(f"{name} must be a positive integer, got {value!r}")


@dataclass(frozen=True, slots=True)
class DecodeOptions:
    """What the decoder strips and how much state it may keep. Raises `OptionError` on bad values."""

    udp_port_l2tp: int = 1701
    udp_port_tzsp: int = 37008
    udp_port_vxlan: int = 4789
    audiocodes: bool = False
    udp_port_audiocodes: int = 925
    tcp_port_audiocodes: int = 925
    hep: bool = False
    hep_bind_port: int = 9060
    ipfix: bool = False
    ipfix_bind_port: int = 4739
    # The reference ignores IPv6 unless its schema is in IPv6 mode; the decoder keeps it by default and
    # leaves that choice to call analysis.
    ipv6: bool = True
    udpfrag: bool = True
    frag_max_datagrams: int = 1024
    frag_max_bytes: int = 8 * 1024 * 1024
    frag_timeout_ns: int = 30 * 1_000_000_000
    deduplicate: bool = False
    # "yes": md5 of the IP header (TTL/hop limit, IP and UDP checksums zeroed) and payload;
    # "ip_only": md5 of the addresses and everything after the IP header; "no": md5 of the L4 payload only.
    deduplicate_ipheader: str = "yes"
    dedup_window_ns: int = 10 * 1_000_000_000
    dedup_max_entries: int = 262_144
    max_tunnel_depth: int = 8
    tcp_stream_max_bytes: int = 1024 * 1024

    def __post_init__(self) -> None:
        for name in ("udp_port_l2tp", "udp_port_tzsp", "udp_port_vxlan", "udp_port_audiocodes",
                     "tcp_port_audiocodes", "hep_bind_port", "ipfix_bind_port"):
            _check_port(name, getattr(self, name))
        for name in ("frag_max_datagrams", "frag_max_bytes", "frag_timeout_ns", "dedup_window_ns",
                     "dedup_max_entries", "max_tunnel_depth", "tcp_stream_max_bytes"):
            _check_positive(name, getattr(self, name))
        if self.deduplicate_ipheader not in DEDUP_MODES:
            raise OptionError(f"deduplicate_ipheader must be one of {DEDUP_MODES}, got {self.deduplicate_ipheader!r}")
