"""AudioCodes debug recording (ACDR) headers, as sent by AudioCodes devices to UDP/TCP port 925.

Layout (version byte 0xMm, major M must be 0, minor m <= 9): time, sequence number, source/destination ids
(2 bytes, 4 from minor 9), extra-data flags, trace point, media type, header-extension length (minor >= 5),
session id; then the extension, then the recorded data.

* Signalling (media type SIP/MEGACO/MGCP/TPNCP/Control) recorded at trace point *System* carries the whole
  IP packet after the header; the extension holds addresses, ports and the IP protocol.
* Media (RTP, RTCP, T.38 ...) carries the bare RTP/RTCP payload. The extension holds only the *network*
  side's address and both ports: the source for packets entering the device (Net2Dsp ...), the destination
  for packets leaving it (Dsp2Net ...). The device-side address is unknown; like the reference we leave it
  0.0.0.0 (or ::), which is why the reference's CDRs show 0.0.0.0 for the device side.
"""

from __future__ import annotations

from typing import NamedTuple

from .errors import DecodeError

MEDIA_SIP = 10
SIGNALLING_MEDIA = frozenset({10, 11, 12, 13, 14})
RTP_LIKE_MEDIA = frozenset({1, 2, 3, 27, 28, 36, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61})
TRACE_SYSTEM = 6
# Trace points where the recorded packet came from the network (extension address = its source) ...
TRACE_FROM_NET = frozenset({0, 4, 18, 20, 27, 35})
# ... and where it goes to the network (extension address = its destination).
TRACE_TO_NET = frozenset({1, 5, 17, 19, 21, 22, 23, 24, 28})
_DSP_CORE_TRACE = frozenset({33, 34})


class AcdrHeader(NamedTuple):
    """What an ACDR header says about the recorded packet. Unknown addresses are empty bytes, ports 0."""

    minor: int
    header_total: int  # bytes from the ACDR start to the recorded data
    trace_point: int
    media_type: int
    ipv6: bool
    src: bytes
    dst: bytes
    sport: int
    dport: int
    ip_proto: int  # signalling at trace point System: protocol of the enclosed IP packet, else 0


def _base_length(minor: int) -> int:
    if minor < 5:
        return 15
    if minor < 7:
        return 19
    if minor == 7:
        return 23
    if minor == 8:
        return 24
    return 28


def parse_acdr(buf: bytes, off: int, end: int) -> AcdrHeader | None:
    """Parse the ACDR header at `buf[off:end]`.

    Returns None when the version byte is not ACDR (the datagram is not a recording); raises `DecodeError`
    when it claims to be one but is truncated.
    """
    if end - off < 15:
        return None
    version = buf[off]
    minor = version & 0xF
    if version >> 4 != 0 or minor > 9:
        return None
    hl = _base_length(minor)
    idl = 4 if minor >= 9 else 2
    p = off + 7 + 2 * idl
    if end - off < hl:
        raise DecodeError("audiocodes_truncated", f"header needs {hl} bytes")
    extra, trace, media = buf[p], buf[p + 1], buf[p + 2]
    ext = buf[p + 3] if minor >= 5 else 0
    total = hl + ext + (4 if minor >= 3 and extra & 1 else 0)
    if end - off < total:
        raise DecodeError("audiocodes_truncated", f"header with extension needs {total} bytes")
    ipv6 = bool(extra & 2)
    src = dst = b""
    sport = dport = proto = 0
    x = off + hl  # extension start
    if ext and trace not in _DSP_CORE_TRACE:
        if media in RTP_LIKE_MEDIA:
            v6 = minor == 3 or (minor >= 4 and ipv6)
            ab = 16 if v6 else 4
            if ext >= ab + 4:
                addr = bytes(buf[x : x + ab])
                a = int.from_bytes(buf[x + ab : x + ab + 2], "big")
                b = int.from_bytes(buf[x + ab + 2 : x + ab + 4], "big")
                if trace in TRACE_FROM_NET:
                    src, sport, dport = addr, a, b
                elif trace in TRACE_TO_NET:
                    dst, dport, sport = addr, a, b
            ipv6 = v6
        elif media in SIGNALLING_MEDIA and trace == TRACE_SYSTEM and ext >= 14:
            src = bytes(buf[x : x + 4])
            dst = bytes(buf[x + 4 : x + 8])
            sport = int.from_bytes(buf[x + 8 : x + 10], "big")
            dport = int.from_bytes(buf[x + 10 : x + 12], "big")
            proto = buf[x + 12]
    return AcdrHeader(minor, total, trace, media, ipv6, src, dst, sport, dport, proto)
