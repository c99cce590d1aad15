"""Key log (like SSLKEYLOGFILE): one JSON object per line per connection, in the per-connection shape of the
reference recordings' key files (fields `conn`, `type_connection`, `aes_ckey`, `aes_ivec`, ... ), so
`python -m vmproto.inspect CAPTURE --keys FILE` decodes a capture of our own processes.

The file holds secrets: it is created 0600 and only written when the operator asks (`--keylog FILE`).
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any


def connection_entry(*, conn: int, type_connection: str, opened_ts: float, aes_ckey: str | None,
                     aes_ivec: str | None, rsa_modulus_bits: int | None = None,
                     server_rsa_public_key_pem: str | None = None, server_rsa_private_key_pem: str | None = None,
                     credentials_json: str | None = None, peer: str | None = None,
                     role: str | None = None) -> dict[str, Any]:
    """Build one key-file entry. AES-128-CBC uses the first 16 key characters (spec §3)."""
    entry: dict[str, Any] = {"conn": conn, "type_connection": type_connection, "opened_ts": opened_ts}
    if aes_ckey is not None and aes_ivec is not None:
        entry.update(
            aes_ckey=aes_ckey,
            aes_ivec=aes_ivec,
            aes_key_hex_used=aes_ckey.encode("latin-1")[:16].hex(),
            aes_iv_hex_used=aes_ivec.encode("latin-1")[:16].hex(),
            cipher="AES-128-CBC",
        )
    if rsa_modulus_bits is not None:
        entry["rsa_modulus_bits"] = rsa_modulus_bits
    if server_rsa_public_key_pem is not None:
        entry["server_rsa_public_key_pem"] = server_rsa_public_key_pem
    entry["server_rsa_private_key_pem"] = server_rsa_private_key_pem
    if credentials_json is not None:
        entry["credentials_json"] = credentials_json
    if peer is not None:
        entry["peer"] = peer
    if role is not None:
        entry["role"] = role
    return entry


class KeyLog:
    """Append-only JSONL writer, safe to call from several tasks or threads. Each write is one line, flushed."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        fd = os.open(os.fspath(path), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._file = os.fdopen(fd, "a", encoding="utf-8")
        self._lock = threading.Lock()

    def write(self, entry: dict[str, Any]) -> None:
        line = json.dumps(entry, ensure_ascii=False, separators=(",", ":")) + "\n"
        with self._lock:
            self._file.write(line)
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            self._file.close()


def load(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a key file in either form: the recordings' document (`{"connections": [...]}`) or our JSONL."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            doc = json.loads(text)
        except json.JSONDecodeError:
            doc = None
        if isinstance(doc, dict) and isinstance(doc.get("connections"), list):
            return list(doc["connections"])
    return [json.loads(line) for line in text.splitlines() if line.strip()]
