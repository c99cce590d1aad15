"""RSA keys for the harnesses: generated once per process (never stored; fuzz inputs do not depend on them,
because RSA blocks are built at run time from structured ops)."""

from __future__ import annotations

import functools
from typing import Any

from vmproto.wire.crypto import generate_rsa_key, public_key_pem

__all__ = ["rsa_key", "rsa_pem"]


@functools.cache
def rsa_key(bits: int) -> Any:
    """One private key per size for the whole process (1024 bits keeps the handshake fast enough for fuzzing;
    `service` credentials need 2048 to fit the plaintext)."""
    return generate_rsa_key(bits)


@functools.cache
def rsa_pem(bits: int) -> bytes:
    """The SPKI PEM of :func:`rsa_key`."""
    return public_key_pem(rsa_key(bits))
