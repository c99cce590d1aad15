"""Capture inspector: decode recorded C/S channel conversations (`python -m vmproto.inspect CAPTURE --keys FILE`).

Reads a pcap/pcapng, reassembles every TCP connection to the channel port, walks each connection's dialogue
by position as the spec's state machines do, and prints a readable conversation or one JSON object per message
in the format of the reference transcripts.
"""

from vmproto.inspect.errors import InspectError
from vmproto.inspect.keys import KeyEntry, KeyStore, load_keys
from vmproto.inspect.pcapread import Capture, Frame, parse_capture, read_capture
from vmproto.inspect.pipeline import DEFAULT_PORT, inspect_capture

__all__ = [
    "DEFAULT_PORT",
    "Capture",
    "Frame",
    "InspectError",
    "KeyEntry",
    "KeyStore",
    "inspect_capture",
    "load_keys",
    "parse_capture",
    "read_capture",
]
