"""Capture inspector: decode recorded C/S channel conversations (`python -m vmproto.inspect CAPTURE --keys FILE`).

Reads a pcap/pcapng, reassembles every TCP connection to the channel port, walks each connection's dialogue
by position as the spec's state machines do, and prints a readable conversation or one JSON object per message
in the format of the reference transcripts.
"""
