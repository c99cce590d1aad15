"""Bits of the cdr.flags column (a 64-bit mask) as the reference numbers them.

The analysis sets the signalling and media bits it observes; the `SAVE_*` bits describe what the sensor
stores for the call and come from its spool options (`AnalyzerConfig.cdr_save_flags`). `SAVE_FLAGS` is
always set: it marks a CDR whose flags are meaningful.
"""

from __future__ import annotations

__all__ = [
    "CHANGE_SRC_PORT_CALLER", "CHANGE_SRC_PORT_CALLED", "UNCONFIRMED_BYE", "TELEVENT_EXISTS_REQUEST",
    "TELEVENT_EXISTS_RESPONSE", "SIP_FRAGMENTED", "RTP_FRAGMENTED", "SDP_MEDIA_AUDIO", "SDP_MEDIA_IMAGE",
    "SDP_MEDIA_VIDEO", "RTCP_EXISTS", "SAVE_FLAGS", "SAVE_SIP_PCAP", "SAVE_RTP_PCAP", "SAVE_RTP_PAYLOAD_PCAP",
    "SAVE_RTCP_PCAP", "SAVE_RTP_GRAPH", "SAVE_AUDIO", "SAVE_AUDIOGRAPH", "PROTO_TCP", "PROTO_UDP", "PROTO_TLS",
    "SDP_MEDIA_FLAG",
]


def _bit(n: int) -> int:
    return 1 << n


CHANGE_SRC_PORT_CALLER = _bit(0)
CHANGE_SRC_PORT_CALLED = _bit(1)
UNCONFIRMED_BYE = _bit(2)
TELEVENT_EXISTS_REQUEST = _bit(8)    # telephone-event offered in an INVITE's SDP
TELEVENT_EXISTS_RESPONSE = _bit(9)   # ... and in the SDP of a 2xx to the INVITE
SIP_FRAGMENTED = _bit(10)
RTP_FRAGMENTED = _bit(11)
SDP_MEDIA_AUDIO = _bit(12)
SDP_MEDIA_IMAGE = _bit(13)
SDP_MEDIA_VIDEO = _bit(14)
RTCP_EXISTS = _bit(17)
SAVE_FLAGS = _bit(23)
SAVE_SIP_PCAP = _bit(24)
SAVE_RTP_PCAP = _bit(25)
SAVE_RTP_PAYLOAD_PCAP = _bit(26)
SAVE_RTCP_PCAP = _bit(27)
SAVE_RTP_GRAPH = _bit(28)
SAVE_AUDIO = _bit(29)
SAVE_AUDIOGRAPH = _bit(30)
PROTO_TCP = _bit(31)
PROTO_UDP = _bit(32)
PROTO_TLS = _bit(33)

#: SDP m= media type -> its "exists" bit.
SDP_MEDIA_FLAG = {"audio": SDP_MEDIA_AUDIO, "image": SDP_MEDIA_IMAGE, "video": SDP_MEDIA_VIDEO}
