"""`packetbuffer block` connection machines (spec §9, facts §4.7): pcap_block_store containers over AES blocks.

Client: handshake with `PacketbufferCredentials` (sensor local `time`, `sensor_id`, `sensor_name`), then
`send(PacketbufferBlock(container))`; when the container's require_confirmation byte is 1 the server's
`BlockReply` (`OK` or an error text) comes back, otherwise nothing does.

Server: checks the handshake `time` against `now` modulo 1800 s (`bad time` when over
`connect_max_time_diff`, reference default 2 s). Each block is validated with `pbstore.validate_container` in the
reference order; a bad one is `Rejected` carrying the error text as the reply when confirmation is required (the
connection stays open, as in the reference). A good one is `PacketbufferBlock`; the counter is tracked per
connection: the same counter as the previous block → `duplicate=True` (acknowledge, drop); a gap →
`BlockLoss(previous, counter)` first (the reference's `loss packetbuffer block` warning). The caller answers
`BlockReply()` / `BlockReply(error)` whenever the block asked for confirmation.
"""

from __future__ import annotations

import struct
from typing import Any

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from vmproto.wire import events as ev
from vmproto.wire import pbkernel, pbstore, vmjson
from vmproto.wire.errors import LocalProtocolError, RemoteProtocolError
from vmproto.wire.framing import BLOCK_MAGIC, HEADER_SIZE, byte_sum
from vmproto.wire.handshake import (
    BAD_TIME,
    HandshakeClient,
    HandshakeServer,
    json_text,
    parse_wire_time,
)

__all__ = ["PacketbufferClient", "PacketbufferServer", "HALF_HOUR"]

HALF_HOUR = 1800
_HEADER = 64
_CONFIRM_OFFSET = 56  # require_confirmation byte of the 64-byte container header
_COUNTER_OFFSET = 52
_FRAME_PREFIX = BLOCK_MAGIC + b"\0" * (32 - len(BLOCK_MAGIC))
_LENGTH_SUM = struct.Struct("<II")


def _plain_sum(data: bytes | bytearray | memoryview) -> int:
    """The block frame's checksum (spec §2): the kernel's one-pass sum when built, else framing.byte_sum."""
    fast = pbkernel.sums(data)
    return fast[0] if fast is not None else byte_sum(data)


def _encrypt_frame(key: bytes, iv: bytes, payload: bytes) -> bytes:
    """Return the AES block frame of `payload` (spec §2, §3): the same bytes as
    `encode_block(AesBlockCipher(key, iv).encrypt(payload), byte_sum(payload))`, with the ciphertext written
    straight behind the 40-byte frame header instead of being copied three times (containers are ~1 MiB)."""
    n = len(payload)
    full = n - n % 16
    pad = 16 - n % 16
    out = bytearray(HEADER_SIZE + full + 16)
    view = memoryview(out)
    enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    written = enc.update_into(memoryview(payload)[:full], view[HEADER_SIZE:]) if full else 0
    view[HEADER_SIZE + written :] = enc.update(bytes(payload[full:]) + bytes((pad,)) * pad) + enc.finalize()
    view[:32] = _FRAME_PREFIX
    _LENGTH_SUM.pack_into(out, 32, full + 16, _plain_sum(payload))
    return bytes(out)


def _require_confirmation(payload: bytes) -> bool:
    # The reference defaults to "reply" and reads the byte only when a whole header arrived.
    return payload[_CONFIRM_OFFSET] != 0 if len(payload) >= _HEADER else True


class PacketbufferClient(HandshakeClient):
    """Sensor side of `packetbuffer block`."""

    connection_type = "packetbuffer block"
    _credentials_event = ev.PacketbufferCredentials

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._prepared: tuple[bytes, bytes] | None = None

    def prepare(self, payload: bytes) -> None:
        """Encrypt and frame `payload` now, e.g. while the previous block's reply is awaited; the next
        `send(PacketbufferBlock(p))` with this very object `p` uses the result (any other payload is encoded as
        usual). Raises LocalProtocolError before the handshake installed the AES key."""
        if self._cipher is None:
            raise LocalProtocolError("no AES key yet: prepare() after the handshake")
        self._prepared = (payload, _encrypt_frame(self._cipher.key, self._cipher.iv, payload))

    def _credential_fields(self, event: Any) -> dict[str, Any]:
        fields = super()._credential_fields(event)
        fields.update(time=event.time, sensor_id=event.sensor_id, sensor_name=event.sensor_name)
        return fields

    def _input_name(self, event: ev.Event) -> str:
        if isinstance(event, ev.PacketbufferBlock):
            # The container header decides, not the event's convenience fields.
            return "PacketbufferBlock/confirm" if _require_confirmation(event.payload) else "PacketbufferBlock/noconfirm"
        return super()._input_name(event)

    def _data_events(self, payload: bytes) -> list[ev.Event]:
        return [ev.BlockReply(payload.decode("utf-8", "replace") or "(empty reply)")]

    def _encode_data(self, event: ev.Event) -> bytes:
        if isinstance(event, ev.PacketbufferBlock):
            prepared, self._prepared = self._prepared, None
            if prepared is not None and prepared[0] is event.payload:
                return prepared[1]
            assert self._cipher is not None  # the machine allows blocks only after the handshake
            return _encrypt_frame(self._cipher.key, self._cipher.iv, event.payload)
        return super()._encode_data(event)


class PacketbufferServer(HandshakeServer):
    """Central side of `packetbuffer block`.

    `connect_max_time_diff`: handshake `time` tolerance (client_server_connect_maximum_time_diff_s, 2);
    `block_max_time_diff`: container `time_s` tolerance (receive_packetbuffer_maximum_time_diff_s, 30);
    `max_container_size`: 10 × packetbuffer_block_maxsize (10 MiB by default); `utc_offset`: seconds east of UTC
    of the server's local time (the handshake `time` is sensor local time).
    """

    connection_type = "packetbuffer block"

    def __init__(self, *, connect_max_time_diff: int = 2, block_max_time_diff: int = 30,
                 max_container_size: int = 10 * 1024 * 1024, utc_offset: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._connect_max_time_diff = connect_max_time_diff
        self._block_max_time_diff = block_max_time_diff
        self._max_container_size = max_container_size
        self._utc_offset = utc_offset
        self._previous_counter = 0
        self.sensor_id = 0
        self.sensor_name = ""

    def _check_credentials(self, payload: bytes) -> ev.Event:
        fields = self._load_credentials(payload)
        self._check_password(fields)
        self._install_keys(fields)
        self.sensor_id = vmjson.atoi(fields.get("sensor_id"))
        self.sensor_name = json_text(fields, "sensor_name")
        sensor_time = json_text(fields, "time")
        if sensor_time:
            now = self._require_now("the packetbuffer handshake time check")
            sent = parse_wire_time(sensor_time, self._utc_offset)
            diff = HALF_HOUR if sent is None else abs(int(now) - int(sent)) % HALF_HOUR
            if sent is None or diff > self._connect_max_time_diff:
                raise RemoteProtocolError(BAD_TIME, reply=BAD_TIME.encode(), reply_mode="plain")
        return ev.PacketbufferCredentials(
            json_text(fields, "password"), json_text(fields, "aes_ckey"), json_text(fields, "aes_ivec"),
            sensor_time, self.sensor_id, self.sensor_name,
        )

    def _next_block(self, mode: str) -> bytes | None:
        # The generic path, with the checksum of the ~1 MiB decrypted containers summed by the kernel: same
        # errors (failed aes decrypt, bad checksum), a fraction of the time.
        if mode != "aes" or self._cipher is None:
            return super()._next_block(mode)
        got = self._blocks.next_block()
        if got is None:
            return None
        header, payload = got
        payload = self._cipher.decrypt(payload)
        if _plain_sum(payload) != header.checksum:
            raise RemoteProtocolError("bad checksum")
        return payload

    def _data_events(self, payload: bytes) -> list[ev.Event]:
        confirm = _require_confirmation(payload)
        now = self._require_now("packetbuffer container validation")
        try:
            pbstore.validate_container(payload, now=int(now), max_time_diff=self._block_max_time_diff,
                                       max_size=self._max_container_size)
        except RemoteProtocolError as exc:
            return [ev.Rejected(exc.reason, exc.reason if confirm else None, b"")]
        counter = int.from_bytes(payload[_COUNTER_OFFSET:_COUNTER_OFFSET + 4], "little")
        events: list[ev.Event] = []
        previous = self._previous_counter
        duplicate = counter == previous
        if not duplicate:
            if previous and previous + 1 != counter:
                events.append(ev.BlockLoss(previous, counter))
            self._previous_counter = counter
        events.append(ev.PacketbufferBlock(payload, counter, confirm, duplicate))
        return events

    def _input_name(self, event: ev.Event) -> str:
        if isinstance(event, ev.PacketbufferBlock):
            return "PacketbufferBlock/confirm" if event.require_confirmation else "PacketbufferBlock/noconfirm"
        if isinstance(event, ev.Rejected):
            return "Rejected/reply" if event.reply is not None else "Rejected/noreply"
        return super()._input_name(event)

    def _encode_data(self, event: ev.Event) -> bytes:
        if isinstance(event, ev.BlockReply):
            return self._aes_block(event.text.encode("utf-8"))
        return super()._encode_data(event)
