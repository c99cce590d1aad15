"""Walking each connection's dialogue by position and decoding every message (spec §1-§12).

The wire carries no message types: the meaning of a block is its position in the dialogue of its connection
type (spec §2). This module follows the same plan as the state machines:

* client to server: the opening line (spec §1), then for the RSA types the credentials block (spec §3, §6), then
  data blocks -- AES, except on `service` where the client always writes plain blocks (spec §7); a `response`
  connection carries one raw AES-128-CBC stream instead (spec §11); GUI types carry nothing more;
* server to client: the plain `rsa_key` block, the plain handshake reply, then AES blocks -- on `service` plain
  unless the sensor asked for `use_encode_data`; GUI types get a raw reply (`aes:` stream when the GUI used AES).

Every message becomes one dict with the fields of the reference transcripts. Anything that cannot be decoded
becomes a `kind: "error"` entry with a `reason`; decoding of that direction then continues where it safely can.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from vmproto.inspect.describe import COMPRESSION_NAMES, as_text, compression_info, describe_store
from vmproto.inspect.keys import KeyEntry, KeyStore
from vmproto.inspect.tcp import Connection, Stream
from vmproto.wire import opening as wire_opening
from vmproto.wire import vmjson
from vmproto.wire.compression import Compression, decompress
from vmproto.wire.crypto import AesBlockCipher, AesStreamDecryptor, ManagerAesKey, rsa_decrypt
from vmproto.wire.errors import ProtocolError
from vmproto.wire.framing import BLOCK_MAGIC, HEADER_SIZE, BlockReader, byte_sum

RSA_TYPES = frozenset(
    {
        wire_opening.SERVICE,
        wire_opening.RESPONSES,
        wire_opening.QUERY,
        wire_opening.STORE,
        wire_opening.PACKETBUFFER,
        wire_opening.KEYCHECK,
    }
)
GUI_TYPES = frozenset({wire_opening.GUI_COMMAND, wire_opening.MANAGER_COMMAND})
_MAX_PAYLOAD = 0xFFFFFFFF  # an inspector reads what is there; truncation is reported, nothing is allocated ahead
_MANAGER_REPLY_PREFIX = b"aes:"
_RCH_PREFIX = b"rch:"


def _reason(exc: BaseException) -> str:
    return getattr(exc, "reason", None) or str(exc) or type(exc).__name__


@dataclass(slots=True)
class _Secrets:
    """What the dialogue has revealed so far: the AES block cipher and the service options."""

    cipher: AesBlockCipher | None = None
    cipher_problem: str = "no AES key for this connection in the key file"
    use_encode_data: bool = False
    credentials: dict[str, Any] = field(default_factory=dict)


class ConnectionDecoder:
    """Decode one reassembled connection. `messages()` returns the transcript entries in wire order."""

    def __init__(self, conn: Connection, keys: KeyStore) -> None:
        self.conn = conn
        self.keys = keys
        self.entry: KeyEntry | None = keys.lookup(conn.client_port, conn.first_ts)
        self.type_connection: str = (self.entry.type_connection if self.entry else None) or "unknown"
        self.secrets = _Secrets()
        self.aes_cipher_name: str | None = None

    # -- shared helpers -------------------------------------------------------------------------------

    def _base(self, direction: str, stream: Stream, offset: int, kind: str) -> dict[str, Any]:
        try:
            frame, ts = stream.origin(offset)
        except IndexError:
            frame, ts = self._nearest_origin(stream, offset)
        return {
            "conn": self.conn.client_port,
            "type_connection": self.type_connection,
            "seq": None,
            "ts": ts,
            "pcap_frame": frame,
            "dir": direction,
            "stream_offset": offset,
            "kind": kind,
        }

    @staticmethod
    def _nearest_origin(stream: Stream, offset: int) -> tuple[int | None, float | None]:
        after = [c for c in stream.islands if c.end > offset]
        if after:
            return after[0].frame, after[0].ts
        if stream.chunks:
            return stream.chunks[-1].frame, stream.chunks[-1].ts
        if stream.fin:
            return stream.fin
        if stream.rst:
            return stream.rst
        return None, None

    def _error(self, direction: str, stream: Stream, offset: int, reason: str, expected: str | None,
               **extra: Any) -> dict[str, Any]:
        msg = self._base(direction, stream, offset, "error")
        msg["reason"] = reason
        if expected is not None:
            msg["expected"] = expected
        msg.update(extra)
        return msg

    # -- entry point ----------------------------------------------------------------------------------

    def messages(self) -> list[dict[str, Any]]:
        """Decode both directions and return all entries ordered by first frame, then stream offset."""
        c2s = list(self._client_messages())
        s2c = list(self._server_messages())
        out = c2s + s2c + list(self._conflicts())
        for msg in out:
            msg["type_connection"] = self.type_connection
        out.sort(key=lambda m: (m["pcap_frame"] if m["pcap_frame"] is not None else 1 << 62,
                                m["dir"] != "c2s", m["stream_offset"]))
        for seq, msg in enumerate(out):
            msg["seq"] = seq
        return out

    def _conflicts(self) -> Iterator[dict[str, Any]]:
        for direction, stream in (("c2s", self.conn.c2s), ("s2c", self.conn.s2c)):
            for conflict in stream.conflicts:
                msg = self._error(direction, stream, conflict.offset,
                                  f"retransmission in frame {conflict.frame} carries different bytes than the "
                                  f"first copy at stream offset {conflict.offset}; the first copy was decoded", None)
                msg["pcap_frame"] = conflict.frame
                yield msg

    # -- client to server -----------------------------------------------------------------------------

    def _client_messages(self) -> Iterator[dict[str, Any]]:
        stream = self.conn.c2s
        if stream.missing_start and stream.data:
            yield self._error("c2s", stream, 0, "connection start not captured (no SYN): the position in the "
                              "dialogue is unknown; blocks below were found by scanning for the block magic",
                              None)
            yield from self._resync("c2s", stream, stream.data, 0)
            return
        opening = yield from self._opening(stream)
        if opening is None:
            return
        pos = opening
        t = self.type_connection
        if t in RSA_TYPES:
            pos = yield from self._rsa_block(stream, pos)
            if pos is None:
                return
            mode = "plain" if t == wire_opening.SERVICE else "aes"
            yield from self._blocks("c2s", stream, pos, [], mode)
        elif t == wire_opening.RESPONSE:
            yield from self._response_stream(stream, pos)
        else:
            yield from self._raw("c2s", stream, pos, None)

    def _opening(self, stream: Stream) -> Iterator[dict[str, Any]]:
        """Yield the opening-line entry; return the stream offset after it (None when decoding must stop)."""
        data = stream.data
        manager = self._manager_key()
        reader = wire_opening.OpeningReader(manager_key=manager)
        fed = 0
        opening = None
        try:
            # Feed segment by segment: the reference decides the end of the line after every read.
            for chunk in stream.chunks:
                reader.receive_data(chunk.data)
                fed = chunk.end
                opening = reader.next_opening()
                if opening is not None:
                    break
        except ProtocolError as exc:
            line_end = data.find(b"\r\n")
            wire = data[: line_end + 2] if line_end >= 0 else data[:fed]
            yield self._error("c2s", stream, 0, f"bad opening line: {_reason(exc)}", "opening_line",
                              length=len(wire), wire_hex=wire.hex(), text=as_text(wire))
            return None
        if opening is None:
            if data or stream.hole:
                yield self._error("c2s", stream, 0, self._cut_reason(stream, len(data), "opening line"),
                                  "opening_line", length=len(data), wire_hex=data.hex(), text=as_text(data))
            return None
        terminator = b":sea" if opening.aes_cipher is not None else b"\r\n"
        found = data.find(terminator, 0, fed)
        # Without a terminator the line was a complete JSON object: everything read so far.
        wire_end = found + len(terminator) if found >= 0 else fed
        end = wire_end
        while end < fed and data[end] in (0x0A, 0x0D):  # CR/LF after the terminator are skipped (spec §1)
            end += 1
        wire = data[:wire_end]
        plain = wire if opening.aes_cipher is None else bytes(opening.text)
        self.type_connection = opening.type_connection
        self.aes_cipher_name = opening.aes_cipher
        msg = self._base("c2s", stream, 0, "opening_line")
        msg.update(
            header_hex=None, length=len(wire), sum=None, wire_hex=wire.hex(), plain_hex=plain.hex(),
            decompressed="none", text=as_text(plain),
        )
        if opening.aes_cipher is not None:
            msg["aes_cipher"] = opening.aes_cipher
        yield msg
        if self.entry is not None and self.entry.type_connection not in (None, opening.type_connection):
            yield self._error("c2s", stream, 0, f"key file names this connection {self.entry.type_connection!r} "
                              f"but its opening line says {opening.type_connection!r}", None)
        return end

    def _manager_key(self) -> ManagerAesKey | None:
        if self.keys.manager_key_b64 is None:
            return None
        try:
            return ManagerAesKey.from_base64(*self.keys.manager_key_b64)
        except ProtocolError:
            return None

    def _rsa_block(self, stream: Stream, pos: int) -> Iterator[dict[str, Any]]:
        """Yield the credentials block entry; set the AES cipher; return the offset after it (None: stop)."""
        got = yield from self._read_block("c2s", stream, pos, "rsa_block")
        if got is None:
            return None
        start, end, header, payload = got
        msg = self._block_base("c2s", stream, start, "rsa_block", header, stream.data[start:end])
        entry = self.entry
        credentials: bytes | None = None
        source: list[str] = []
        problem = None
        if entry is not None and entry.private_key_pem is not None:
            try:
                credentials = rsa_decrypt(self.keys.private_key(entry.private_key_pem), payload)
                source = ["decrypted with server_rsa_private_key_pem of the key file"]
            except (ValueError, TypeError, ProtocolError) as exc:
                problem = f"RSA decryption with the key file's private key failed: {_reason(exc)}"
        if credentials is None and entry is not None and entry.credentials is not None:
            credentials = entry.credentials
            source = list(entry.credentials_source) or ["credentials_json of the key file"]
        if credentials is None:
            reason = problem or ("RSA credentials block: the key file has neither a private key nor "
                                 "credentials_json for this connection")
            yield self._error("c2s", stream, start, reason, "rsa_block", **{k: msg[k] for k in (
                "header_hex", "length", "sum", "wire_hex")})
            self._secrets_from_entry()
            return end
        msg.update(plain_hex=credentials.hex(), decompressed="none", text=as_text(credentials))
        msg["header_bytes_28_32_hex"] = header[28:32].hex()
        msg["rsa_modulus_bits"] = (entry.rsa_modulus_bits if entry and entry.rsa_modulus_bits else len(payload) * 8)
        msg["plaintext_source"] = source
        msg["sum_ok"] = byte_sum(credentials) == msg["sum"]
        msg["plain_len"] = len(credentials)
        yield msg
        self._secrets_from_credentials(credentials, decrypted=bool(entry and entry.private_key_pem and not problem))
        if not msg["sum_ok"]:
            yield self._error("c2s", stream, start, "bad checksum: the credentials do not match the block's sum "
                              "(wrong key file entry?)", None)
        return end

    def _secrets_from_entry(self) -> None:
        entry = self.entry
        if entry is not None and entry.aes_key is not None and entry.aes_iv is not None:
            self._set_cipher(entry.aes_key, entry.aes_iv)

    def _secrets_from_credentials(self, credentials: bytes, *, decrypted: bool) -> None:
        try:
            fields = vmjson.loads(credentials)
        except ProtocolError:
            fields = None
        if isinstance(fields, dict):
            self.secrets.credentials = fields
            self.secrets.use_encode_data = vmjson.atoi(fields.get("use_encode_data")) > 0
        entry = self.entry
        # The key file's record of what OpenSSL was given wins, unless we decrypted the credentials ourselves.
        if not decrypted and entry is not None and entry.aes_key is not None and entry.aes_iv is not None:
            self._set_cipher(entry.aes_key, entry.aes_iv)
            return
        if isinstance(fields, dict) and isinstance(fields.get("aes_ckey"), str) and isinstance(fields.get("aes_ivec"), str):
            self._set_cipher(fields["aes_ckey"].encode("latin-1", "replace"), fields["aes_ivec"].encode("latin-1", "replace"))
        else:
            self._secrets_from_entry()

    def _set_cipher(self, key: bytes, iv: bytes) -> None:
        try:
            self.secrets.cipher = AesBlockCipher(key, iv)
        except ProtocolError as exc:
            self.secrets.cipher_problem = f"unusable AES key: {_reason(exc)}"

    # -- server to client -----------------------------------------------------------------------------

    def _server_messages(self) -> Iterator[dict[str, Any]]:
        stream = self.conn.s2c
        t = self.type_connection
        if stream.missing_start and stream.data:
            yield self._error("s2c", stream, 0, "connection start not captured (no SYN): the position in the "
                              "dialogue is unknown; blocks below were found by scanning for the block magic", None)
            yield from self._resync("s2c", stream, stream.data, 0)
            return
        if t in RSA_TYPES:
            if self.secrets.cipher is None and self.conn.c2s.missing_start:
                self._secrets_from_entry()
            data_mode = "aes"
            if t == wire_opening.SERVICE and not self.secrets.use_encode_data:
                data_mode = "plain"
            yield from self._blocks("s2c", stream, 0, ["plain", "plain"], data_mode)
        elif t in GUI_TYPES:
            yield from self._raw("s2c", stream, 0, self._manager_key() if self.aes_cipher_name else None)
        elif stream.data:
            # `response` and unknown types: the server is not supposed to write anything.
            yield from self._raw("s2c", stream, 0, None)

    # -- blocks ---------------------------------------------------------------------------------------

    def _cut_reason(self, stream: Stream, have: int, what: str) -> str:
        if stream.hole is not None:
            lo, hi = stream.hole
            return (f"{what} incomplete: {hi - lo} bytes at stream offset {lo} were never captured "
                    f"(lost segments); {len(stream.islands)} later segment(s) cannot be placed")
        end = "RST" if stream.rst else "FIN" if stream.fin else "end of capture"
        return f"{what} incomplete: the stream ends ({end}) after {have} bytes of it (truncated)"

    def _read_block(self, direction: str, stream: Stream, pos: int, expected: str
                    ) -> Iterator[dict[str, Any]]:
        """Frame one block at `pos`. Return (start, end, header bytes, payload) or None after an error entry."""
        data = stream.data
        reader = BlockReader(_MAX_PAYLOAD)
        try:
            reader.receive_data(data[pos : pos + HEADER_SIZE])
            if len(data) - pos < HEADER_SIZE:
                yield self._error(direction, stream, pos, self._cut_reason(stream, len(data) - pos, "block header"),
                                  expected, wire_hex=data[pos:].hex())
                return None
            length = int.from_bytes(data[pos + 32 : pos + 36], "little")
            reader.receive_data(data[pos + HEADER_SIZE : pos + HEADER_SIZE + length])
            block = reader.next_block()
        except ProtocolError as exc:
            yield self._error(direction, stream, pos, _reason(exc), expected,
                              header_hex=data[pos : pos + HEADER_SIZE].hex(), wire_hex=data[pos : pos + 256].hex())
            return None
        if block is None:
            have = len(data) - pos - HEADER_SIZE
            yield self._error(direction, stream, pos, self._cut_reason(stream, have, f"block of {length} bytes"),
                              expected, header_hex=data[pos : pos + HEADER_SIZE].hex(), length=length)
            return None
        end = pos + HEADER_SIZE + length
        return pos, end, data[pos : pos + HEADER_SIZE], block[1]

    def _block_base(self, direction: str, stream: Stream, start: int, kind: str, header: bytes,
                    wire: bytes) -> dict[str, Any]:
        msg = self._base(direction, stream, start, kind)
        msg.update(
            header_hex=header.hex(),
            length=int.from_bytes(header[32:36], "little"),
            sum=int.from_bytes(header[36:40], "little"),
            wire_hex=wire.hex(),
        )
        return msg

    def _blocks(self, direction: str, stream: Stream, pos: int, first_modes: list[str], data_mode: str
                ) -> Iterator[dict[str, Any]]:
        """Decode consecutive blocks from `pos`: `first_modes` for the handshake blocks, then `data_mode`."""
        index = 0
        while pos < len(stream.data):
            mode = first_modes[index] if index < len(first_modes) else data_mode
            handshake = index < len(first_modes)
            got = yield from self._read_block(direction, stream, pos, f"{mode}_block")
            if got is None:
                if stream.hole is not None:  # the block was cut by lost segments: look for blocks after them
                    yield from self._resync_islands(direction, stream)
                return
            start, end, header, payload = got
            yield self._decode_block(direction, stream, start, stream.data[start:end], header, payload, mode,
                                     handshake, index)
            pos = end
            index += 1
        if stream.hole is not None and pos == len(stream.data):
            yield self._error(direction, stream, pos, self._cut_reason(stream, 0, "stream"), None)
            yield from self._resync_islands(direction, stream)

    def _decode_block(self, direction: str, stream: Stream, start: int, wire: bytes, header: bytes, payload: bytes,
                      mode: str, handshake: bool, index: int) -> dict[str, Any]:
        kind = f"{mode}_block"
        msg = self._block_base(direction, stream, start, kind, header, wire)
        if mode == "aes":
            cipher = self.secrets.cipher
            if cipher is None:
                return self._as_error(msg, self.secrets.cipher_problem, kind)
            try:
                plain = cipher.decrypt(payload)
            except ProtocolError as exc:
                return self._as_error(msg, f"{_reason(exc)} (wrong AES key, or not an AES block here)", kind)
        else:
            plain = payload
        msg["plain_hex"] = plain.hex()
        sum_ok = byte_sum(plain) == msg["sum"]
        body, decompressed_kind, decompressed, problem = self._decompress(plain, handshake)
        msg["decompressed"] = COMPRESSION_NAMES[decompressed_kind]
        msg["text"] = as_text(decompressed if body is None else body)
        msg["header_bytes_28_32_hex"] = header[28:32].hex()
        msg["sum_ok"] = sum_ok
        msg["plain_len"] = len(plain)
        if handshake and index == 0 and direction == "s2c":
            pem = self._rsa_pem(plain)
            if pem is not None:
                msg["rsa_pem_len"] = len(pem)
        if decompressed_kind != Compression.NONE:
            compressed = plain[len(_RCH_PREFIX):] if body is not None else plain
            msg["compression_info"] = compression_info(decompressed_kind, compressed)
            msg["decompressed_len"] = len(decompressed)
        if problem is not None:
            return self._as_error(msg, problem, kind)
        if not sum_ok:
            return self._as_error(msg, "bad checksum" + (" (wrong AES key?)" if mode == "aes" else ""), kind)
        if not handshake and direction == "c2s":
            if self.type_connection == wire_opening.STORE and decompressed != b"check":
                msg["store"] = describe_store(decompressed)
            elif self.type_connection == wire_opening.PACKETBUFFER:
                from vmproto.inspect.pbdescribe import describe_container

                msg["pcap_block_store"] = describe_container(plain)
        return msg

    def _decompress(self, plain: bytes, handshake: bool) -> tuple[bytes | None, Compression, bytes, str | None]:
        """Return (rch text or None, compression, decompressed bytes, problem). Handshake blocks are never
        compressed; `rch:` pushes carry the compressed body after the prefix (spec §7)."""
        if handshake:
            return None, Compression.NONE, plain, None
        prefix = b""
        body = plain
        if self.type_connection == wire_opening.SERVICE and plain.startswith(_RCH_PREFIX):
            prefix, body = _RCH_PREFIX, plain[len(_RCH_PREFIX):]
        try:
            kind, out = decompress(body)
        except ProtocolError as exc:
            return None, Compression.NONE, plain, f"decompression failed: {_reason(exc)}"
        if prefix:
            return prefix + out, kind, out, None
        return None, kind, out, None

    @staticmethod
    def _rsa_pem(plain: bytes) -> str | None:
        try:
            obj = vmjson.loads(plain)
        except ProtocolError:
            return None
        pem = obj.get("rsa_key") if isinstance(obj, dict) else None
        return pem if isinstance(pem, str) else None

    @staticmethod
    def _as_error(msg: dict[str, Any], reason: str, expected: str) -> dict[str, Any]:
        msg["kind"] = "error"
        msg["reason"] = reason
        msg["expected"] = expected
        return msg

    # -- raw streams ----------------------------------------------------------------------------------

    def _response_stream(self, stream: Stream, pos: int) -> Iterator[dict[str, Any]]:
        """The `response` connection: one raw AES-128-CBC stream with the service connection's keys (spec §11)."""
        wire = stream.data[pos:]
        if not wire and stream.hole is None:
            return
        msg = self._base("c2s", stream, pos, "raw")
        msg.update(header_hex=None, length=len(wire), sum=None, wire_hex=wire.hex())
        entry = self.entry if self.entry and self.entry.aes_key else self.keys.service_keys_before(self.conn.first_ts)
        if entry is None or entry.aes_key is None or entry.aes_iv is None:
            yield self._as_error(msg, "no AES key for the response stream (the service connection's keys are "
                                 "not in the key file)", "raw")
            return
        try:
            dec = AesStreamDecryptor(entry.aes_key, entry.aes_iv)
            plain = dec.update(wire) + dec.finalize()
        except ProtocolError as exc:
            problem = self._cut_reason(stream, len(wire), "response stream") if stream.hole else _reason(exc)
            yield self._as_error(msg, problem, "raw")
            return
        yield self._raw_fields(msg, plain)
        if stream.hole is not None:
            yield self._error("c2s", stream, len(stream.data), self._cut_reason(stream, 0, "response stream"), "raw")

    def _raw(self, direction: str, stream: Stream, pos: int, manager: ManagerAesKey | None
             ) -> Iterator[dict[str, Any]]:
        """Bytes outside any block: a GUI reply (`aes:` + stream when the GUI used AES), or unexpected data."""
        wire = stream.data[pos:]
        if not wire:
            return
        msg = self._base(direction, stream, pos, "raw")
        msg.update(header_hex=None, length=len(wire), sum=None, wire_hex=wire.hex())
        plain = wire
        if wire.startswith(_MANAGER_REPLY_PREFIX) and self.aes_cipher_name is not None:
            if manager is None:
                yield self._as_error(msg, "AES reply to an AES GUI request: no manager key in the key file", "raw")
                return
            try:
                dec = AesStreamDecryptor(manager.key, manager.iv, self.aes_cipher_name)
                plain = dec.update(wire[len(_MANAGER_REPLY_PREFIX):]) + dec.finalize()
            except ProtocolError as exc:
                yield self._as_error(msg, _reason(exc), "raw")
                return
        yield self._raw_fields(msg, plain)
        if stream.hole is not None:
            yield self._error(direction, stream, len(stream.data), self._cut_reason(stream, 0, "raw stream"), "raw")

    @staticmethod
    def _raw_fields(msg: dict[str, Any], plain: bytes) -> dict[str, Any]:
        msg["plain_hex"] = plain.hex()
        try:
            kind, out = decompress(plain)
        except ProtocolError:
            kind, out = Compression.NONE, plain
        msg["decompressed"] = COMPRESSION_NAMES[kind]
        msg["text"] = as_text(out)
        msg["plain_len"] = len(plain)
        if kind != Compression.NONE:
            msg["compression_info"] = compression_info(kind, plain)
            msg["decompressed_len"] = len(out)
        return msg

    # -- resynchronisation after a lost start or a hole -------------------------------------------------

    def _resync_islands(self, direction: str, stream: Stream) -> Iterator[dict[str, Any]]:
        """Scan the data captured after a hole for blocks (contiguous runs only)."""
        runs: list[tuple[int, bytes]] = []
        for chunk in stream.islands:
            if runs and runs[-1][0] + len(runs[-1][1]) == chunk.start:
                runs[-1] = (runs[-1][0], runs[-1][1] + chunk.data)
            else:
                runs.append((chunk.start, chunk.data))
        for start, data in runs:
            yield from self._resync(direction, stream, data, start)

    def _resync(self, direction: str, stream: Stream, data: bytes, base: int) -> Iterator[dict[str, Any]]:
        """Find blocks by their magic and decode each as AES (when a key is known) or plain, by checksum."""
        if self.secrets.cipher is None:
            self._secrets_from_entry()
        # Blocks after a hole are not in `stream.data`; this copy maps their offsets to frames as well.
        located = Stream(chunks=sorted(stream.chunks + stream.islands, key=lambda c: c.start), hole=stream.hole,
                         islands=stream.islands, missing_start=stream.missing_start, fin=stream.fin, rst=stream.rst)
        pos = data.find(BLOCK_MAGIC)
        while pos >= 0 and pos + HEADER_SIZE <= len(data):
            length = int.from_bytes(data[pos + 32 : pos + 36], "little")
            end = pos + HEADER_SIZE + length
            if end > len(data):
                yield self._error(direction, stream, base + pos, "block cut off by missing capture data", None,
                                  header_hex=data[pos : pos + HEADER_SIZE].hex(), length=length)
                return
            header, payload = data[pos : pos + HEADER_SIZE], data[pos + HEADER_SIZE : end]
            mode = "plain"
            if self.secrets.cipher is not None and length and length % 16 == 0:
                try:
                    plain = self.secrets.cipher.decrypt(payload)
                    if byte_sum(plain) == int.from_bytes(header[36:40], "little"):
                        mode = "aes"
                except ProtocolError:
                    pass
            msg = self._decode_block(direction, located, base + pos, data[pos:end], header, payload, mode, False, -1)
            msg["resynced"] = True
            yield msg
            pos = data.find(BLOCK_MAGIC, end)

def decode_connection(conn: Connection, keys: KeyStore) -> list[dict[str, Any]]:
    """Return the transcript entries of one connection (never raises for bad data; see the module doc)."""
    return ConnectionDecoder(conn, keys).messages()
