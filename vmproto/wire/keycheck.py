"""`keycheck` connection machines (spec §12, facts §4.9): a licence-check relay over the generic handshake.

Client: `send(KeycheckRequest(data))` → receive `KeycheckReply`. Server: receive `KeycheckRequest`, answer
`KeycheckReply(output)` (the script output, or `error: <reason>`). AES blocks both ways; 300 s idle on the server.
"""

from __future__ import annotations

from vmproto.wire import events as ev
from vmproto.wire.handshake import HandshakeClient, HandshakeServer

__all__ = ["KeycheckClient", "KeycheckServer"]


class KeycheckClient(HandshakeClient):
    """Sensor side of `keycheck`."""

    connection_type = "keycheck"

    def _data_events(self, payload: bytes) -> list[ev.Event]:
        return [ev.KeycheckReply(payload)]

    def _encode_data(self, event: ev.Event) -> bytes:
        if isinstance(event, ev.KeycheckRequest):
            return self._aes_block(event.data)
        return super()._encode_data(event)


class KeycheckServer(HandshakeServer):
    """Central side of `keycheck`."""

    connection_type = "keycheck"

    def _data_events(self, payload: bytes) -> list[ev.Event]:
        return [ev.KeycheckRequest(payload)]

    def _encode_data(self, event: ev.Event) -> bytes:
        if isinstance(event, ev.KeycheckReply):
            return self._aes_block(event.data)
        return super()._encode_data(event)
