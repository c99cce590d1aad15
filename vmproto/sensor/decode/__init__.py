"""Packet decoding: link layers, IP, fragments, tunnels -> `DecodedPacket` records (docs/architecture.md)."""

from .dedup import Deduplicator, dedup_key
from .engine import Decoder
from .errors import DecodeError, OptionError
from .fragments import FragmentReassembler
from .hep import HepMessage, HepStreamDecoder, hep_to_record, parse_hep3
from .ipfix import IpfixStreamDecoder, parse_ipfix_message
from .options import DecodeOptions
from .record import DecodedPacket
from .stats import DecodeStats

__all__ = [
    "DecodeError",
    "DecodeOptions",
    "DecodeStats",
    "DecodedPacket",
    "Decoder",
    "Deduplicator",
    "FragmentReassembler",
    "HepMessage",
    "HepStreamDecoder",
    "IpfixStreamDecoder",
    "OptionError",
    "dedup_key",
    "hep_to_record",
    "parse_hep3",
    "parse_ipfix_message",
]
