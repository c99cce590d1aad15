"""The connection-opening line (spec §1).

The client's first bytes name the connection type: a compact JSON object followed by CRLF, or the
same object wrapped as ``aes...:<ciphertext>:sea`` with the manager key (GUI side).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import vmjson
from .crypto import ManagerAesKey, unwrap_manager_request
from .errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "CONNECTION_TYPES",
    "GUI_COMMAND",
    "KEYCHECK",
    "MANAGER_COMMAND",
    "PACKETBUFFER",
    "QUERY",
    "RESPONSE",
    "RESPONSES",
    "SERVICE",
    "STORE",
    "Opening",
    "OpeningReader",
    "encode_opening",
]

GUI_COMMAND = "gui_command"
SERVICE = "service"
RESPONSE = "response"
RESPONSES = "responses"
QUERY = "query"
STORE = "store"
PACKETBUFFER = "packetbuffer block"  # with a space: the reference's historic spelling
MANAGER_COMMAND = "manager_command"
KEYCHECK = "keycheck"
CONNECTION_TYPES = frozenset(
    {GUI_COMMAND, SERVICE, RESPONSE, RESPONSES, QUERY, STORE, PACKETBUFFER, MANAGER_COMMAND, KEYCHECK}
)

_CRLF = b"\r\n"
_SEA = b":sea"


def encode_opening(fields: dict[str, Any]) -> bytes:
    """Return the opening line: compact reference JSON of ``fields`` + CRLF.

    ``fields`` must contain a known ``type_connection``; raises :class:`LocalProtocolError` otherwise.
    """
    if fields.get("type_connection") not in CONNECTION_TYPES:
        raise LocalProtocolError(f"unknown type_connection: {fields.get('type_connection')!r}")
    return vmjson.dumps(fields) + _CRLF


@dataclass(frozen=True, slots=True)
class Opening:
    """A parsed opening line.

    ``text`` is the command text (decrypted for AES), ``fields`` its JSON object, ``aes_cipher`` the
    manager cipher name when the line was AES-wrapped, ``remainder`` the bytes that followed the
    terminator (kept only for ``response``, where they begin the AES stream; empty otherwise) after the
    reference's CR/LF skipping, and ``raw_remainder`` the same bytes before that skipping (spec §16: the skip
    can eat ciphertext; a peer that knows better uses this one).
    """

    text: bytes
    fields: dict[str, Any] = field(default_factory=dict)
    type_connection: str = ""
    aes_cipher: str | None = None
    remainder: bytes = b""
    raw_remainder: bytes = b""

    def get_text(self, name: str) -> str:
        """Return a field as the reference reads it (json_object_get_string; ``""`` when missing)."""
        return vmjson.text_value(self.fields.get(name))


def _is_aes(buf: bytes | bytearray) -> bool:
    return len(buf) >= 3 and bytes(buf[:3]).lower() == b"aes"


def _is_json_object(buf: bytes | bytearray) -> bool:
    """The reference's second end rule: the buffer, trimmed of CR/LF, is a complete JSON object."""
    text = bytes(buf).strip(b"\r\n")
    if not text or text[:1] != b"{" or text[-1:] != b"}":
        return False
    try:
        vmjson.loads(text)
    except RemoteProtocolError:
        return False
    return True


class OpeningReader:
    """Collects the opening line from the first bytes of a connection (sans-IO).

    End rules, evaluated after every :meth:`receive_data` like the reference after every read:
    a buffer starting with ``aes`` (any case) ends at the first ``:sea``; otherwise at the first CRLF,
    or as soon as the buffer starts with ``{`` and (trimmed of CR/LF) is a complete JSON object.
    The reference waits forever without a size limit; we refuse a line of more than ``max_size`` bytes
    (before its terminator, however the bytes were split into reads).
    Errors are :class:`RemoteProtocolError` with ``close=True`` and no reply (the reference closes
    without writing).
    """

    __slots__ = ("_buf", "_done", "_manager_key", "_max_size", "_ready")

    def __init__(self, max_size: int = 65536, manager_key: ManagerAesKey | None = None) -> None:
        self._max_size = max_size
        self._manager_key = manager_key
        self._buf = bytearray()
        self._ready = False
        self._done = False

    @property
    def buffered(self) -> int:
        """Bytes held so far."""
        return len(self._buf)

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Append bytes from the peer. Raises :class:`RemoteProtocolError` ``"opening line too long"`` when the
        line (the bytes before its terminator, or all bytes while none has arrived) is over ``max_size``."""
        if self._done:
            raise LocalProtocolError("the opening line was already read")
        if not data:
            return
        if self._ready:
            # Bytes after the terminator (a response's stream) wait for next_opening(); bounded too.
            self._buf += data
            if len(self._buf) > 2 * self._max_size:
                self._buf = bytearray()
                raise RemoteProtocolError("opening line too long")
            return
        self._buf += data
        buf = self._buf
        end = buf.find(_SEA if _is_aes(buf) else _CRLF)
        # The cap applies to the line itself wherever its terminator lands (spec §1.4): a terminator arriving in
        # the same read as 100 kB of line does not make the line acceptable. Bytes after the terminator are not
        # line (a response's stream, §1.5) and do not count here.
        # A buffer that starts with CRLF has the whole buffer as its text (next_opening), so all of it counts.
        line_length = end if end > 0 else len(buf)
        if line_length > self._max_size:
            self._buf = bytearray()
            raise RemoteProtocolError("opening line too long")
        if end >= 0 or (buf[:1] == b"{" and _is_json_object(buf)):
            self._ready = True

    def next_opening(self) -> Opening | None:
        """Return the :class:`Opening` once its end is seen, else ``None``.

        Raises :class:`RemoteProtocolError` for an unknown ``type_connection``, text that is not
        JSON, or an AES line that cannot be decrypted (or no manager key to decrypt it).
        """
        if self._done:
            raise LocalProtocolError("the opening line was already read")
        if not self._ready:
            return None
        self._done = True
        buf = bytes(self._buf)
        self._buf = bytearray()
        is_aes = _is_aes(buf)
        end_pos = buf.find(_SEA if is_aes else _CRLF)
        remainder = raw_remainder = b""
        if end_pos >= 0:
            begin = end_pos + (4 if is_aes else 2)
            raw_remainder = buf[begin:]
            # The reference skips every CR/LF after the terminator -- even when they are the first
            # bytes of a response's ciphertext (spec §16 quirk); we do the same to stay compatible.
            while begin < len(buf) and buf[begin] in (0x0A, 0x0D):
                begin += 1
            remainder = buf[begin:]
        cipher: str | None = None
        if is_aes:
            if self._manager_key is None or end_pos <= 0:
                raise RemoteProtocolError("failed aes decrypt")
            cipher, text = unwrap_manager_request(buf, self._manager_key)
        else:
            # end_pos == 0 (buffer starts with CRLF): the reference then takes the whole buffer.
            text = buf[:end_pos] if end_pos > 0 else buf
        try:
            fields = vmjson.loads(text)
        except RemoteProtocolError:
            raise RemoteProtocolError("unknown type_connection") from None
        if not isinstance(fields, dict):
            raise RemoteProtocolError("unknown type_connection")
        type_connection = vmjson.text_value(fields.get("type_connection"))
        if type_connection not in CONNECTION_TYPES:
            raise RemoteProtocolError("unknown type_connection")
        if type_connection != RESPONSE:
            remainder = raw_remainder = b""
        return Opening(
            text=text,
            fields=fields,
            type_connection=type_connection,
            aes_cipher=cipher,
            remainder=remainder,
            raw_remainder=raw_remainder,
        )
