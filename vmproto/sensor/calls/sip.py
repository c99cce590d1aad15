"""SIP message parsing: start line, headers, body, and the header fields a CDR needs.

Parsing is tolerant the way a passive sniffer must be: header names are case-insensitive, compact forms
(`i`, `f`, `t`, `m`, `l`, `c`, `v`) are understood, lines may end in CRLF or bare LF. What cannot be a SIP
message raises `SipParseError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vmproto.sensor.calls.errors import SipParseError

__all__ = ["SipMessage", "NameAddr", "parse_message", "split_stream", "parse_name_addr", "looks_like_sip", "via_branch"]

_COMPACT = {
    "i": "call-id", "f": "from", "t": "to", "m": "contact", "l": "content-length", "c": "content-type",
    "v": "via", "k": "supported", "s": "subject", "e": "content-encoding",
}
_METHODS = (b"INVITE", b"ACK", b"BYE", b"CANCEL", b"OPTIONS", b"REGISTER", b"PRACK", b"SUBSCRIBE", b"NOTIFY",
            b"PUBLISH", b"INFO", b"REFER", b"MESSAGE", b"UPDATE")
#: The reference keeps at most 127 characters of a response line (a 128-byte buffer).
_RESPONSE_TEXT_MAX = 127


@dataclass(slots=True)
class SipMessage:
    """One SIP request or response.

    `headers` maps lower-case full header names to their values in order of appearance.
    For a response `method` is the CSeq method; `status` is 0 for requests.
    """

    is_request: bool
    method: str
    request_uri: str
    status: int
    reason: str
    response_line: str
    headers: dict[str, list[str]] = field(default_factory=dict)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        """Return the first value of header `name` (case-insensitive), or None."""
        values = self.headers.get(name.lower())
        return values[0] if values else None

    @property
    def call_id(self) -> str:
        return (self.header("call-id") or "").strip()

    @property
    def cseq(self) -> tuple[int, str]:
        """Return (number, METHOD) from CSeq; (0, "") when absent or malformed."""
        raw = self.header("cseq")
        if not raw:
            return (0, "")
        parts = raw.split()
        if len(parts) != 2 or not parts[0].isdigit():
            return (0, "")
        return (int(parts[0]), parts[1].upper())


@dataclass(slots=True, frozen=True)
class NameAddr:
    """A From/To/Contact value: display name, URI user, host, port (0 when absent) and tag."""

    display: str
    user: str
    host: str
    port: int
    tag: str
    has_user: bool


def looks_like_sip(data: bytes) -> bool:
    """Return True when `data` starts like a SIP request or response line."""
    if data.startswith(b"SIP/2.0 "):
        return True
    for m in _METHODS:
        if data.startswith(m + b" "):
            return True
    return False


def _header_end(data: bytes) -> tuple[int, int] | None:
    """Return (end of headers, start of body) or None when the header block is not complete."""
    crlf = data.find(b"\r\n\r\n")
    lf = data.find(b"\n\n")
    if crlf < 0 and lf < 0:
        return None
    if crlf >= 0 and (lf < 0 or crlf <= lf):
        return crlf, crlf + 4
    return lf, lf + 2


def _parse_headers(block: bytes) -> tuple[str, dict[str, list[str]]]:
    text = block.decode("utf-8", "replace")
    lines = text.replace("\r\n", "\n").split("\n")
    start = lines[0]
    headers: dict[str, list[str]] = {}
    last: str | None = None
    for line in lines[1:]:
        if not line:
            continue
        if line[0] in " \t" and last is not None:
            # RFC 3261 line folding: continue the previous header value.
            headers[last][-1] += " " + line.strip()
            continue
        name, sep, value = line.partition(":")
        if not sep:
            continue
        key = name.strip().lower()
        key = _COMPACT.get(key, key)
        headers.setdefault(key, []).append(value.strip())
        last = key
    return start, headers


def _content_length(headers: dict[str, list[str]]) -> int | None:
    values = headers.get("content-length")
    if not values:
        return None
    v = values[0].strip()
    if not v.isdigit():
        raise SipParseError(f"bad Content-Length {v!r}")
    return int(v)


def parse_message(data: bytes) -> SipMessage:
    """Parse one complete SIP message (a UDP payload or one message cut from a stream).

    A missing or short body is taken as it is (UDP truncation happens in captures).
    Raises `SipParseError` when the start line is not SIP.
    """
    if not looks_like_sip(data):
        raise SipParseError("not a SIP start line")
    bounds = _header_end(data)
    if bounds is None:
        head, body = data, b""
    else:
        head, body = data[: bounds[0]], data[bounds[1]:]
    start, headers = _parse_headers(head)
    length = _content_length(headers)
    if length is not None:
        body = body[:length]
    return _build(start, headers, body)


def _build(start: str, headers: dict[str, list[str]], body: bytes) -> SipMessage:
    if start.startswith("SIP/2.0 "):
        code = start[8:11]
        if not code.isdigit():
            raise SipParseError(f"bad status line {start[:40]!r}")
        line = start[8:].rstrip("\r")[:_RESPONSE_TEXT_MAX]
        cseq_method = ""
        raw = headers.get("cseq")
        if raw:
            parts = raw[0].split()
            if len(parts) == 2:
                cseq_method = parts[1].upper()
        return SipMessage(False, cseq_method, "", int(code), start[12:], line, headers, body)
    parts = start.split(" ")
    if len(parts) < 3 or not parts[2].startswith("SIP/"):
        raise SipParseError(f"bad request line {start[:40]!r}")
    return SipMessage(True, parts[0].upper(), parts[1], 0, "", "", headers, body)


def split_stream(buffer: bytes) -> tuple[list[SipMessage], int]:
    """Cut complete messages from the front of a stream buffer (SIP over TCP/WebSocket).

    Returns the messages and the number of bytes consumed; the rest waits for more data.
    Leading CRLF keep-alives are skipped. Raises `SipParseError` when the buffer front is not SIP, so
    the caller can drop the stream state.
    """
    messages: list[SipMessage] = []
    pos = 0
    n = len(buffer)
    while pos < n:
        while pos < n and buffer[pos] in (0x0D, 0x0A):
            pos += 1
        if pos >= n:
            break
        view = buffer[pos:]
        if len(view) < 8:
            break
        if not looks_like_sip(view[:16]):
            raise SipParseError("stream does not start with a SIP message")
        bounds = _header_end(view)
        if bounds is None:
            break
        start, headers = _parse_headers(view[: bounds[0]])
        length = _content_length(headers) or 0
        if len(view) - bounds[1] < length:
            break
        messages.append(_build(start, headers, view[bounds[1]: bounds[1] + length]))
        pos += bounds[1] + length
    return messages, pos


def parse_name_addr(value: str | None) -> NameAddr:
    """Split a From/To value into display name, URI user/host/port and tag.

    With no user part (`sip:host:port`), `user` is the host[:port] text, which is what the reference
    reports as the number in that case; `has_user` tells them apart.
    """
    if not value:
        return NameAddr("", "", "", 0, "", False)
    display = ""
    rest = value.strip()
    params = ""
    if "<" in rest:
        before, _, after = rest.partition("<")
        uri, _, params = after.partition(">")
        display = before.strip()
        if len(display) >= 2 and display[0] == '"' and display.endswith('"'):
            display = display[1:-1]
    else:
        uri, _, params = rest.partition(";")
        params = ";" + params
    tag = ""
    for p in params.split(";"):
        k, _, v = p.strip().partition("=")
        if k.lower() == "tag":
            tag = v
    scheme, colon, addr = uri.partition(":")
    if not colon or scheme.lower() not in ("sip", "sips", "tel"):
        addr = uri
    addr = addr.split(";", 1)[0].split("?", 1)[0]
    has_user = "@" in addr
    if has_user:
        user, _, hostport = addr.rpartition("@")
        user = user.split(":", 1)[0]
    else:
        # No user part: the reference reports host[:port] as the number only when URI parameters follow
        # (`<sip:192.0.2.1:5060;user=phone>`); a bare `<sip:host>` gives an empty number.
        hostport = addr
        user = addr if ";" in uri else ""
    host, port = _split_hostport(hostport)
    return NameAddr(display, user, host, port, tag, has_user)


def _split_hostport(hostport: str) -> tuple[str, int]:
    if hostport.startswith("["):
        # IPv6 reference: the domain keeps its brackets, as the reference stores it.
        inner, _, rest = hostport[1:].partition("]")
        host = f"[{inner}]"
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = hostport.partition(":")
    return host, int(port) if port.isdigit() else 0


def via_branch(msg: SipMessage) -> str:
    """Return the `branch` parameter of the message's first Via value ("" when there is none)."""
    via = msg.header("via")
    if not via:
        return ""
    first = via.split(",", 1)[0]
    for param in first.split(";")[1:]:
        k, _, v = param.partition("=")
        if k.strip().lower() == "branch":
            return v.strip()
    return ""
