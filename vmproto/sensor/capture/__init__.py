"""Packet capture: libpcap binding (live, offline), pure-Python pcap/pcapng reader, pcap writers."""

from .batch import PacketBatch
from .errors import CaptureError, CaptureFormatError, CaptureOptionError
from .files import CaptureFileReader, read_capture
from .writer import PcapngWriter, PcapWriter

__all__ = [
    "CaptureError",
    "CaptureFileReader",
    "CaptureFormatError",
    "CaptureOptionError",
    "PacketBatch",
    "PcapWriter",
    "PcapngWriter",
    "read_capture",
]
