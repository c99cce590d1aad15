"""Session keys for decoding: the key files of the recordings and of our own `--keylog`.

Both forms are read (vmproto.keylog.load): the recordings' document `{"connections": [...]}` and our JSONL, one
entry per connection, named by the client port (`conn`). Fields used, all optional except `conn`:
`type_connection`, `opened_ts`, `aes_ckey`/`aes_ivec` (the strings as sent), `aes_key_hex_used`/`aes_iv_hex_used`
(what OpenSSL was given), `credentials_json` (the RSA block plaintext), `credentials_source`,
`rsa_modulus_bits`, `server_rsa_private_key_pem` (when present the RSA block is decrypted for real) and
`manager_aes_key`/`manager_aes_iv` (base64, for AES-wrapped GUI openings; an extension of ours).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from vmproto import keylog
from vmproto.inspect.errors import InspectError


@dataclass(frozen=True, slots=True)
class KeyEntry:
    """What a key file says about one connection. Byte fields are None when the file does not carry them."""

    conn: int
    type_connection: str | None
    opened_ts: float | None
    aes_key: bytes | None
    aes_iv: bytes | None
    credentials: bytes | None
    credentials_source: tuple[str, ...]
    rsa_modulus_bits: int | None
    private_key_pem: bytes | None
    manager_key_b64: tuple[str, str] | None


def _text_bytes(value: Any) -> bytes | None:
    # Key strings are what the peers sent: JSON-decoded text whose characters are the wire bytes.
    if not isinstance(value, str):
        return None
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8")


def _hex_bytes(value: Any, what: str, conn: Any) -> bytes | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InspectError(f"key file: connection {conn}: {what} is not a hex string")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise InspectError(f"key file: connection {conn}: {what} is not valid hex") from None


def _entry(raw: Any) -> KeyEntry:
    if not isinstance(raw, dict) or not isinstance(raw.get("conn"), int):
        raise InspectError("key file: every connection entry must be an object with an integer `conn`")
    conn = raw["conn"]
    key = _hex_bytes(raw.get("aes_key_hex_used"), "aes_key_hex_used", conn)
    iv = _hex_bytes(raw.get("aes_iv_hex_used"), "aes_iv_hex_used", conn)
    # Older or hand-written files may carry only the strings as sent: AES-128 takes the first 16 bytes (spec §3).
    if key is None and (ckey := _text_bytes(raw.get("aes_ckey"))) is not None:
        key = ckey[:16]
    if iv is None and (ivec := _text_bytes(raw.get("aes_ivec"))) is not None:
        iv = ivec[:16]
    opened = raw.get("opened_ts")
    source = raw.get("credentials_source") or []
    pem = raw.get("server_rsa_private_key_pem")
    manager = None
    if isinstance(raw.get("manager_aes_key"), str) and isinstance(raw.get("manager_aes_iv"), str):
        manager = (raw["manager_aes_key"], raw["manager_aes_iv"])
    bits = raw.get("rsa_modulus_bits")
    return KeyEntry(
        conn=conn,
        type_connection=raw.get("type_connection") if isinstance(raw.get("type_connection"), str) else None,
        opened_ts=float(opened) if isinstance(opened, int | float) and math.isfinite(opened) else None,
        aes_key=key,
        aes_iv=iv,
        credentials=_text_bytes(raw.get("credentials_json")),
        credentials_source=tuple(str(s) for s in source) if isinstance(source, list) else (),
        rsa_modulus_bits=bits if isinstance(bits, int) else None,
        private_key_pem=pem.encode("ascii", "replace") if isinstance(pem, str) else None,
        manager_key_b64=manager,
    )


class KeyStore:
    """All key entries of a file, looked up by client port (and opening time when a port was reused)."""

    def __init__(self, entries: list[KeyEntry], manager_key_b64: tuple[str, str] | None = None) -> None:
        self.entries = entries
        self.manager_key_b64 = manager_key_b64
        self._by_port: dict[int, list[KeyEntry]] = {}
        # Loading a PEM private key checks it (tens of ms for RSA): do it once per distinct key.
        self._private_keys: dict[bytes, Any] = {}
        for e in entries:
            self._by_port.setdefault(e.conn, []).append(e)

    @classmethod
    def empty(cls) -> KeyStore:
        """A store without keys: the inspector then decodes only what is not encrypted."""
        return cls([])

    def lookup(self, client_port: int, opened_ts: float | None = None) -> KeyEntry | None:
        """Return the entry of the connection from `client_port`, the one opened closest to `opened_ts`."""
        candidates = self._by_port.get(client_port)
        if not candidates:
            return None
        if len(candidates) == 1 or opened_ts is None:
            return candidates[0]
        return min(candidates, key=lambda e: abs((e.opened_ts or 0.0) - opened_ts))

    def private_key(self, pem: bytes) -> Any:
        """Return the loaded private key of `pem` (cached).

        Raises ValueError or TypeError (from cryptography) when the PEM is not a usable unencrypted private key.
        """
        key = self._private_keys.get(pem)
        if key is None:
            key = serialization.load_pem_private_key(pem, password=None)
            self._private_keys[pem] = key
        return key

    def service_keys_before(self, ts: float | None) -> KeyEntry | None:
        """Return the last `service` entry opened before `ts` that has AES keys (a `response` stream uses them)."""
        best = None
        for e in self.entries:
            if e.type_connection != "service" or e.aes_key is None or e.aes_iv is None:
                continue
            if ts is not None and e.opened_ts is not None and e.opened_ts > ts:
                continue
            if best is None or (e.opened_ts or 0.0) >= (best.opened_ts or 0.0):
                best = e
        return best


def load_keys(path: str | Path) -> KeyStore:
    """Read a key file (recordings' document or our JSONL).

    Raises InspectError when the file cannot be read or is not a key file.
    """
    try:
        raw_entries = keylog.load(path)
    except OSError as exc:
        raise InspectError(f"cannot read key file {path}: {exc.strerror or exc}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise InspectError(f"key file {path} is not JSON or JSON lines: {exc}") from None
    entries = [_entry(raw) for raw in raw_entries]
    manager = next((e.manager_key_b64 for e in entries if e.manager_key_b64), None)
    return KeyStore(entries, manager)
