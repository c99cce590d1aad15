"""SDP bodies: the media endpoints (address, port, RTCP port), ptime and rtpmap a call analysis needs."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from vmproto.sensor.calls.errors import SdpParseError

__all__ = ["SdpMedia", "parse_sdp", "codec_id"]

#: Codec identifiers the reference uses for dynamic payload types (its codecs.h numbering), keyed by the
#: rtpmap encoding name (lower case) and, where the numbering depends on it, the clock rate.
_CODEC_BY_NAME: dict[tuple[str, int | None], int] = {
    ("pcmu", None): 0, ("gsm", None): 3, ("g723", None): 4, ("pcma", None): 8, ("g722", None): 9,
    ("g729", None): 18, ("ilbc", None): 97, ("speex", None): 98, ("clearmode", None): 100,
    ("silk", 8000): 302, ("silk", 12000): 303, ("silk", 16000): 304, ("silk", 24000): 305, ("silk", None): 301,
    ("isac", 16000): 307, ("isac", 32000): 308, ("isac", None): 306,
    ("opus", 8000): 312, ("opus", 12000): 313, ("opus", 16000): 314, ("opus", 24000): 315, ("opus", 48000): 316,
    ("opus", None): 311, ("amr", None): 320, ("amr-wb", None): 321,
    ("g7221", 16000): 333, ("g7221", 32000): 335, ("g7221", None): 331,
    ("evs", None): 359, ("telephone-event", None): 400,
}


def codec_id(name: str, rate: int | None) -> int:
    """Return the reference codec number for an rtpmap encoding, or -1 when unknown."""
    key = name.lower()
    return _CODEC_BY_NAME.get((key, rate), _CODEC_BY_NAME.get((key, None), -1))


@dataclass(slots=True)
class SdpMedia:
    """One m= line: where media is expected, its payload types and their codecs."""

    media: str
    addr: bytes
    port: int
    rtcp_port: int
    payloads: list[int]
    ptime: int = 0
    rtpmap: dict[int, int] = field(default_factory=dict)
    direction: str = "sendrecv"


def _addr(text: str) -> bytes | None:
    try:
        return ipaddress.ip_address(text.strip()).packed
    except ValueError:
        return None


def parse_sdp(body: bytes) -> list[SdpMedia]:
    """Return the media sections of an SDP body, session-level c=/a=ptime applied.

    Sections without a usable address (hostname, 0.0.0.0 hold) keep `addr` empty. Raises `SdpParseError`
    when an m= line is malformed.
    """
    text = body.decode("utf-8", "replace")
    session_addr: bytes | None = None
    session_ptime = 0
    out: list[SdpMedia] = []
    cur: SdpMedia | None = None
    for raw in text.replace("\r\n", "\n").split("\n"):
        line = raw.strip()
        if len(line) < 2 or line[1] != "=":
            continue
        kind, value = line[0], line[2:]
        if kind == "m":
            parts = value.split()
            if len(parts) < 3:
                raise SdpParseError(f"bad m= line {value!r}")
            port_text = parts[1].split("/", 1)[0]
            if not port_text.isdigit() or int(port_text) > 65535:
                raise SdpParseError(f"bad media port {parts[1]!r}")
            pts = [int(p) for p in parts[3:] if p.isdigit()]
            port = int(port_text)
            cur = SdpMedia(parts[0].lower(), session_addr or b"", port, port + 1, pts, session_ptime)
            out.append(cur)
        elif kind == "c":
            parts = value.split()
            addr = _addr(parts[2].split("/", 1)[0]) if len(parts) >= 3 else None
            if cur is None:
                session_addr = addr
                for m in out:
                    m.addr = addr or b""
            elif addr is not None:
                cur.addr = addr
        elif kind == "a":
            name, _, arg = value.partition(":")
            name = name.lower()
            if name == "ptime" and arg.strip().split(".")[0].isdigit():
                ptime = int(arg.strip().split(".")[0])
                if cur is None:
                    session_ptime = ptime
                else:
                    cur.ptime = ptime
            elif name == "rtpmap" and cur is not None:
                pt_text, _, enc = arg.partition(" ")
                if pt_text.isdigit():
                    enc_parts = enc.strip().split("/")
                    rate = int(enc_parts[1]) if len(enc_parts) > 1 and enc_parts[1].isdigit() else None
                    cur.rtpmap[int(pt_text)] = codec_id(enc_parts[0], rate)
            elif name == "rtcp" and cur is not None:
                p = arg.strip().split(" ", 1)[0]
                if p.isdigit():
                    cur.rtcp_port = int(p)
            elif name in ("sendrecv", "sendonly", "recvonly", "inactive") and cur is not None:
                cur.direction = name
    return out
