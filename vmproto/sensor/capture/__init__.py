"""Packet capture: libpcap binding (live, offline), pure-Python pcap/pcapng reader, pcap writers."""

from .batch import PacketBatch
from .errors import CaptureError, CaptureFormatError, CaptureOptionError
from .files import CaptureFileReader, read_capture
from .frames import FrameList
from .options import CaptureOptions, Replay, parse_interfaces, parse_port_list
from .writer import PcapngWriter, PcapWriter

__all__ = [
    "CaptureError",
    "CaptureFileReader",
    "CaptureFormatError",
    "CaptureOptionError",
    "CaptureOptions",
    "FrameList",
    "PacketBatch",
    "PcapWriter",
    "PcapngWriter",
    "Replay",
    "parse_interfaces",
    "parse_port_list",
    "read_capture",
]
