"""SIP over TCP: per-flow reassembly by sequence number, SIP message cutting, WebSocket unframing.

Buffers are bounded (`MAX_BUFFER` bytes per flow, `MAX_PENDING` out-of-order segments); a flow that overflows
or stops looking like SIP is reset and resynchronises on the next segment that starts a SIP message, the way a
passive sniffer has to.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from vmproto.sensor.calls.errors import SipParseError
from vmproto.sensor.calls.sip import SipMessage, looks_like_sip, split_stream

__all__ = ["TcpSipReassembler", "MAX_BUFFER", "MAX_PENDING", "unframe_websocket"]

MAX_BUFFER = 256 * 1024
MAX_PENDING = 64
_FIN, _SYN, _RST = 0x01, 0x02, 0x04
FlowKey = tuple[bytes, int, bytes, int]


def unframe_websocket(data: bytes) -> tuple[bytes, int] | None:
    """Decode complete WebSocket frames at the front of `data` (RFC 6455).

    Returns (concatenated text/binary/continuation payloads, bytes consumed), or None when `data` does not
    start with a plausible data frame. Control frames are consumed and dropped.
    """
    out = bytearray()
    pos = 0
    n = len(data)
    while pos + 2 <= n:
        b0, b1 = data[pos], data[pos + 1]
        opcode = b0 & 0x0F
        if b0 & 0x70 or opcode not in (0x0, 0x1, 0x2, 0x8, 0x9, 0xA):
            return None if pos == 0 else (bytes(out), pos)
        length = b1 & 0x7F
        off = pos + 2
        if length == 126:
            if off + 2 > n:
                break
            length = struct.unpack_from("!H", data, off)[0]
            off += 2
        elif length == 127:
            if off + 8 > n:
                break
            length = struct.unpack_from("!Q", data, off)[0]
            off += 8
        mask = b""
        if b1 & 0x80:
            if off + 4 > n:
                break
            mask = data[off: off + 4]
            off += 4
        if off + length > n:
            break
        payload = data[off: off + length]
        if mask:
            payload = bytes(c ^ mask[i & 3] for i, c in enumerate(payload))
        if opcode in (0x0, 0x1, 0x2):
            out += payload
        pos = off + length
    return bytes(out), pos


@dataclass(slots=True)
class _Flow:
    next_seq: int | None = None
    data: bytearray = field(default_factory=bytearray)
    pending: dict[int, bytes] = field(default_factory=dict)
    websocket: bool = False
    ws_raw: bytearray = field(default_factory=bytearray)
    msg_ts: int = 0


class TcpSipReassembler:
    """Turns TCP segments of SIP flows into SIP messages, in stream order per flow."""

    def __init__(self) -> None:
        self._flows: dict[FlowKey, _Flow] = {}
        self.dropped_bytes = 0

    def feed(self, key: FlowKey, seq: int, flags: int, payload: bytes, ts: int = 0) -> list[tuple[SipMessage, int]]:
        """Add one segment captured at `ts`; return the SIP messages it completes with the capture time of
        the segment that carried each message's first byte (the time the reference gives a message)."""
        if flags & _RST:
            self._flows.pop(key, None)
            return []
        flow = self._flows.get(key)
        if flow is None:
            flow = self._flows[key] = _Flow()
        if flags & _SYN:
            flow.next_seq = (seq + 1) & 0xFFFFFFFF
            flow.data.clear()
            flow.pending.clear()
        if payload:
            if not flow.data:
                flow.msg_ts = ts
            self._add(flow, seq, payload)
        msgs = self._drain(flow)
        out = [(m, flow.msg_ts if i == 0 else ts) for i, m in enumerate(msgs)]
        if msgs and flow.data:
            flow.msg_ts = ts
        if flags & _FIN:
            self._flows.pop(key, None)
        return out

    def _add(self, flow: _Flow, seq: int, payload: bytes) -> None:
        if flow.next_seq is None:
            # Joined mid-stream: only a segment that starts a message (or a WebSocket frame) can anchor us.
            if not (looks_like_sip(payload[:16]) or payload[:4] == b"GET " or unframe_websocket(payload)):
                self.dropped_bytes += len(payload)
                return
            flow.next_seq = seq
        delta = (seq - flow.next_seq) & 0xFFFFFFFF
        if delta >= 0x80000000:
            # Retransmission overlapping data already taken: keep only the new tail.
            skip = (flow.next_seq - seq) & 0xFFFFFFFF
            if skip >= len(payload):
                return
            payload = payload[skip:]
            delta = 0
        if delta:
            if len(flow.pending) >= MAX_PENDING:
                self._reset(flow)
                return
            flow.pending[seq] = payload
            return
        self._append(flow, payload)
        while flow.next_seq in flow.pending:
            self._append(flow, flow.pending.pop(flow.next_seq))

    def _append(self, flow: _Flow, payload: bytes) -> None:
        assert flow.next_seq is not None
        flow.next_seq = (flow.next_seq + len(payload)) & 0xFFFFFFFF
        if flow.websocket:
            flow.ws_raw += payload
            res = unframe_websocket(bytes(flow.ws_raw))
            if res is None:
                self._reset(flow)
                return
            text, used = res
            del flow.ws_raw[:used]
            flow.data += text
        else:
            flow.data += payload
        if len(flow.data) > MAX_BUFFER or len(flow.ws_raw) > MAX_BUFFER:
            self._reset(flow)

    def _reset(self, flow: _Flow) -> None:
        self.dropped_bytes += len(flow.data) + len(flow.ws_raw)
        flow.data.clear()
        flow.ws_raw.clear()
        flow.pending.clear()
        flow.next_seq = None

    def _drain(self, flow: _Flow) -> list[SipMessage]:
        if not flow.data:
            return []
        head = bytes(flow.data[:4])
        if head == b"GET " or head == b"HTTP":
            # WebSocket opening handshake: skip the HTTP head; frames follow.
            end = flow.data.find(b"\r\n\r\n")
            if end < 0:
                return []
            rest = bytes(flow.data[end + 4:])
            flow.data.clear()
            flow.websocket = True
            if rest:
                flow.ws_raw += rest
                res = unframe_websocket(bytes(flow.ws_raw))
                if res is not None:
                    del flow.ws_raw[: res[1]]
                    flow.data += res[0]
            return self._drain(flow) if flow.data else []
        if not flow.websocket and not looks_like_sip(bytes(flow.data[:16])) and flow.data[:1] not in (b"\r", b"\n"):
            res = unframe_websocket(bytes(flow.data))
            if res is not None and looks_like_sip(res[0][:16]):
                # Frames without a captured handshake.
                flow.websocket = True
                raw = bytes(flow.data)
                flow.data.clear()
                flow.ws_raw += raw[res[1]:]
                flow.data += res[0]
        try:
            msgs, used = split_stream(bytes(flow.data))
        except SipParseError:
            self._reset(flow)
            return []
        del flow.data[:used]
        return msgs
