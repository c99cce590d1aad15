"""RSA key transport, per-block and stream AES, and the manager AES wrapper (spec §3).

Every C/S AES block is an independent AES-128-CBC message with PKCS#7 padding, the same key and the
same IV for every block of a connection (so equal plaintexts give equal ciphertexts, spec §3/§17).
"""

from __future__ import annotations

import base64
import binascii
import secrets

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.decrepit.ciphers import modes as decrepit_modes
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "AES_KEY_ALPHABET",
    "AesBlockCipher",
    "AesStreamDecryptor",
    "AesStreamEncryptor",
    "ManagerAesKey",
    "ManagerReplyEncryptor",
    "generate_aes_strings",
    "generate_rsa_key",
    "key_string_bytes",
    "public_key_pem",
    "rsa_decrypt",
    "rsa_encrypt",
    "unwrap_manager_request",
    "wrap_manager_request",
]

# The reference draws each key character as '0' + rand()*('z'-'0')/RAND_MAX: 0x30..0x7A inclusive.
AES_KEY_ALPHABET = bytes(range(0x30, 0x7B))
_ALPHABET_STR = AES_KEY_ALPHABET.decode("ascii")
_BLOCK = 16
# PKCS#7 pads indexed by the pad length, built once (the AES path is the hot one).
_PADS = [bytes([n]) * n for n in range(_BLOCK + 1)]
_SPKI_PEM_BEGIN = b"-----BEGIN PUBLIC KEY-----"

FAILED_AES_DECRYPT = "failed aes decrypt"
FAILED_PRIVATE_DECRYPT = "failed private decrypt"


def generate_aes_strings() -> tuple[str, str]:
    """Return fresh ``(aes_ckey, aes_ivec)``: 32 and 16 characters from :data:`AES_KEY_ALPHABET`.

    Same character range as the reference, but drawn from :mod:`secrets` instead of ``rand()``.
    Only the first 16 characters of ``aes_ckey`` are used as the AES-128 key (spec §3).
    """
    ckey = "".join(secrets.choice(_ALPHABET_STR) for _ in range(32))
    ivec = "".join(secrets.choice(_ALPHABET_STR) for _ in range(16))
    return ckey, ivec


def key_string_bytes(text: str, what: str = "aes key") -> bytes:
    """Return the bytes of a key string received in JSON (the reference uses the C string's bytes).

    Text decoded by :mod:`vmproto.wire.vmjson` keeps non-UTF-8 bytes as surrogate escapes, which go back
    to those bytes here. A lone surrogate from a JSON ``\\ud800`` escape has no byte form: it raises
    :class:`RemoteProtocolError` ``"<what> is not a byte string"`` (never UnicodeEncodeError).
    """
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise RemoteProtocolError(f"{what} is not a byte string") from None


def _as_bytes(value: bytes | str, what: str) -> bytes:
    if isinstance(value, str):
        # Keys travel as JSON strings; characters beyond Latin-1 cannot be key bytes of the reference.
        try:
            return value.encode("latin-1")
        except UnicodeEncodeError:
            raise RemoteProtocolError(f"{what} is not a byte string") from None
    return bytes(value)


def _pkcs7_unpad(plain: bytes) -> bytes:
    """Strip PKCS#7 padding the way EVP_DecryptFinal checks it; raise 'failed aes decrypt'."""
    if not plain:
        raise RemoteProtocolError(FAILED_AES_DECRYPT)
    n = plain[-1]
    if n == 0 or n > _BLOCK or plain[-n:] != _PADS[n]:
        raise RemoteProtocolError(FAILED_AES_DECRYPT)
    return plain[:-n]


class AesBlockCipher:
    """Per-block AES-128-CBC of a C/S connection (spec §3).

    ``ckey`` may be the full 32-character ``aes_ckey``: the key is its first 16 bytes, as OpenSSL
    takes them. ``ivec`` must give 16 bytes. Raises :class:`RemoteProtocolError` when the peer sent
    keys too short to use (the reference would read past the string).
    """

    __slots__ = ("_cipher", "iv", "key")

    def __init__(self, ckey: bytes | str, ivec: bytes | str) -> None:
        key = _as_bytes(ckey, "aes_ckey")
        iv = _as_bytes(ivec, "aes_ivec")
        if len(key) < 16 or len(iv) < 16:
            raise RemoteProtocolError("aes key or iv shorter than 16 bytes")
        self.key = key[:16]
        self.iv = iv[:16]
        # One Cipher object per connection; each block still needs its own context, because every
        # block restarts CBC from the IV.
        self._cipher = Cipher(algorithms.AES(self.key), modes.CBC(self.iv))

    def encrypt(self, plain: bytes | bytearray | memoryview) -> bytes:
        """Return the ciphertext of one block payload (16..len+16 bytes; empty input -> 16 bytes)."""
        enc = self._cipher.encryptor()
        # One update over plain + pad: for small blocks the call overhead dominates the copy.
        padded = bytes(plain) + _PADS[_BLOCK - len(plain) % _BLOCK]
        return enc.update(padded) + enc.finalize()

    def decrypt(self, ct: bytes | bytearray | memoryview) -> bytes:
        """Return the plaintext of one block payload.

        Raises :class:`RemoteProtocolError` ``"failed aes decrypt"`` for a length that is not a
        positive multiple of 16 or a bad padding.
        """
        n = len(ct)
        if n == 0 or n % _BLOCK:
            raise RemoteProtocolError(FAILED_AES_DECRYPT)
        dec = self._cipher.decryptor()
        return _pkcs7_unpad(dec.update(ct) + dec.finalize())


# --- cipher names (manager wrapper) -------------------------------------------------------------

_MODES = {
    "cbc": (modes.CBC, True),
    "ecb": (None, True),
    # GUIs may name any AES mode OpenSSL knows; CFB/OFB live in cryptography's "decrepit" module.
    "cfb": (decrepit_modes.CFB, False),
    "cfb128": (decrepit_modes.CFB, False),
    "cfb8": (decrepit_modes.CFB8, False),
    "ofb": (decrepit_modes.OFB, False),
    "ctr": (modes.CTR, False),
}
_ALIASES = {"aes128": "aes-128-cbc", "aes192": "aes-192-cbc", "aes256": "aes-256-cbc"}


def _resolve_cipher(cipher_name: str) -> tuple[int, str]:
    """Map an OpenSSL AES cipher name to (key bytes, mode); unknown names mean AES-128-CBC.

    EVP_get_cipherbyname silently returns NULL for unknown names and the reference then falls back
    to AES-128-CBC (spec §3), so we do the same.
    """
    name = _ALIASES.get(cipher_name.lower(), cipher_name.lower())
    parts = name.split("-")
    if len(parts) == 3 and parts[0] == "aes" and parts[1] in ("128", "192", "256") and parts[2] in _MODES:
        return int(parts[1]) // 8, parts[2]
    return 16, "cbc"


def _make_cipher(key: bytes, iv: bytes, cipher_name: str) -> tuple[Cipher, bool]:
    key_len, mode_name = _resolve_cipher(cipher_name)
    if len(key) < key_len or len(iv) < _BLOCK:
        raise LocalProtocolError(f"key/iv too short for {cipher_name}: need {key_len}/16 bytes")
    mode_cls, padded = _MODES[mode_name]
    mode = modes.ECB() if mode_cls is None else mode_cls(iv[:_BLOCK])
    return Cipher(algorithms.AES(key[:key_len]), mode), padded


class AesStreamEncryptor:
    """One EVP encryption stream kept across writes (the ``response`` channel, spec §3/§11).

    :meth:`update` returns whole cipher blocks only; :meth:`finalize` returns the padded last block.
    As in the reference, if no byte was ever written, :meth:`finalize` returns ``b""``.
    """

    __slots__ = ("_cipher", "_ctx", "_done", "_padded", "_pending")

    def __init__(self, key: bytes, iv: bytes, cipher_name: str = "aes-128-cbc") -> None:
        self._cipher, self._padded = _make_cipher(bytes(key), bytes(iv), cipher_name)
        self._ctx = None
        self._pending = 0  # bytes fed, modulo the block size, to compute the final pad
        self._done = False

    def update(self, data: bytes | bytearray | memoryview) -> bytes:
        """Feed plaintext; return the ciphertext that is complete so far."""
        if self._done:
            raise LocalProtocolError("stream already finalized")
        if not data:
            return b""
        if self._ctx is None:
            self._ctx = self._cipher.encryptor()
        self._pending = (self._pending + len(data)) % _BLOCK
        return self._ctx.update(data)

    def finalize(self) -> bytes:
        """End the stream; return the last (padded) block, or ``b""`` if nothing was written."""
        if self._done:
            raise LocalProtocolError("stream already finalized")
        self._done = True
        if self._ctx is None:
            return b""
        out = b""
        if self._padded:
            out = self._ctx.update(_PADS[_BLOCK - self._pending])
        return out + self._ctx.finalize()

    def start(self) -> None:
        """Open the stream even if no data follows, so :meth:`finalize` emits one padding block."""
        if self._ctx is None and not self._done:
            self._ctx = self._cipher.encryptor()


class AesStreamDecryptor:
    """Decrypting counterpart of :class:`AesStreamEncryptor`.

    :meth:`update` holds back the last full block (it may be the padding); :meth:`finalize` checks
    and strips the padding. An empty stream decrypts to ``b""``. Errors raise
    :class:`RemoteProtocolError` ``"failed aes decrypt"``.
    """

    __slots__ = ("_ctx", "_done", "_padded", "_seen", "_tail")

    def __init__(self, key: bytes, iv: bytes, cipher_name: str = "aes-128-cbc") -> None:
        cipher, self._padded = _make_cipher(bytes(key), bytes(iv), cipher_name)
        self._ctx = cipher.decryptor()
        self._tail = b""
        self._seen = 0
        self._done = False

    def update(self, ct: bytes | bytearray | memoryview) -> bytes:
        """Feed ciphertext; return the plaintext that is certain so far."""
        if self._done:
            raise LocalProtocolError("stream already finalized")
        if not self._padded:
            self._seen += len(ct)
            return self._ctx.update(ct)
        if not ct:
            return b""
        self._seen += len(ct)
        data = self._tail + bytes(ct)
        # Keep at least one whole block (or the partial remainder) back for finalize.
        keep = len(data) % _BLOCK or _BLOCK
        if len(data) <= keep:
            self._tail = data
            return b""
        self._tail = data[-keep:]
        return self._ctx.update(data[:-keep])

    def finalize(self) -> bytes:
        """End the stream; return the last plaintext bytes (padding removed)."""
        if self._done:
            raise LocalProtocolError("stream already finalized")
        self._done = True
        if not self._padded:
            return self._ctx.finalize()
        if self._seen == 0:
            return b""
        if len(self._tail) != _BLOCK:
            raise RemoteProtocolError(FAILED_AES_DECRYPT)
        last = self._ctx.update(self._tail) + self._ctx.finalize()
        return _pkcs7_unpad(last)


# --- RSA ----------------------------------------------------------------------------------------


def generate_rsa_key(bits: int) -> rsa.RSAPrivateKey:
    """Return a fresh RSA private key (exponent 65537): 4096 bits for service, 2048 otherwise."""
    if bits < 1024 or bits % 8:
        raise LocalProtocolError(f"unsupported RSA key size: {bits}")
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def public_key_pem(private_key: rsa.RSAPrivateKey) -> bytes:
    """Return the SubjectPublicKeyInfo PEM (``-----BEGIN PUBLIC KEY-----``) of ``private_key``."""
    return private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def rsa_encrypt(public_pem: bytes, plaintext: bytes) -> bytes:
    """Encrypt ``plaintext`` in one RSA PKCS#1 v1.5 operation with the peer's SPKI PEM key.

    Raises :class:`RemoteProtocolError` ``"bad rsa key"`` when the PEM is not an SPKI RSA public
    key (the reference client parses with PEM_read_bio_RSA_PUBKEY, which refuses PKCS#1 PEM), and
    :class:`LocalProtocolError` when ``plaintext`` exceeds modulus size - 11 bytes.
    """
    pem = bytes(public_pem)
    if not pem.lstrip().startswith(_SPKI_PEM_BEGIN):
        raise RemoteProtocolError("bad rsa key")
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise RemoteProtocolError("bad rsa key") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise RemoteProtocolError("bad rsa key")
    limit = key.key_size // 8 - 11
    if len(plaintext) > limit:
        raise LocalProtocolError(f"credentials too long: {len(plaintext)} > {limit} bytes for one RSA block")
    return key.encrypt(bytes(plaintext), asym_padding.PKCS1v15())


def rsa_decrypt(private_key: rsa.RSAPrivateKey, ciphertext: bytes) -> bytes:
    """Decrypt one RSA PKCS#1 v1.5 block.

    Raises :class:`RemoteProtocolError` ``"failed private decrypt"`` when the length is not the
    modulus size or the padding is bad. (OpenSSL >= 3.2 applies implicit rejection: a bad padding
    may then yield random bytes instead of an error; the caller's ``password`` check catches that.)
    """
    if len(ciphertext) != private_key.key_size // 8:
        raise RemoteProtocolError(FAILED_PRIVATE_DECRYPT)
    try:
        return private_key.decrypt(bytes(ciphertext), asym_padding.PKCS1v15())
    except ValueError:
        raise RemoteProtocolError(FAILED_PRIVATE_DECRYPT) from None


# --- manager AES wrapper (spec §3, used by gui_command/manager_command) ---------------------------

_SEA = b":sea"
_MAX_CIPHER_NAME = 20  # the name before the first ':' must be shorter than this (reference rule)


class ManagerAesKey:
    """The manager key and IV (``manager_aes_key`` / ``manager_aes_iv``, raw bytes)."""

    __slots__ = ("iv", "key")

    def __init__(self, key: bytes, iv: bytes) -> None:
        if len(key) < 16 or len(iv) < 16:
            raise LocalProtocolError("manager AES key and IV need at least 16 bytes")
        self.key = bytes(key)
        self.iv = bytes(iv)

    @classmethod
    def from_base64(cls, key_b64: str | bytes, iv_b64: str | bytes) -> ManagerAesKey:
        """Build from the base64 text of the config options or of the DB ``manager_key`` row.

        Raises :class:`LocalProtocolError` for invalid base64 or too-short values.
        """
        try:
            key = base64.b64decode(key_b64, validate=True)
            iv = base64.b64decode(iv_b64, validate=True)
        except (binascii.Error, ValueError):
            raise LocalProtocolError("manager AES key/iv is not valid base64") from None
        return cls(key, iv)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ManagerAesKey) and (self.key, self.iv) == (other.key, other.iv)

    def __hash__(self) -> int:
        return hash((self.key, self.iv))

    def __repr__(self) -> str:  # never print key material
        return "ManagerAesKey(<hidden>)"


def _check_cipher_name(cipher_name: str) -> bytes:
    name = cipher_name.encode("ascii", "replace")
    if len(name) >= _MAX_CIPHER_NAME or not name[:3].lower() == b"aes" or b":" in name:
        raise LocalProtocolError(f"cipher name must start with 'aes', hold no ':' and be < 20 bytes: {cipher_name!r}")
    return name


def wrap_manager_request(text: bytes, key: ManagerAesKey, cipher_name: str = "aes-128-cbc") -> bytes:
    """Return ``<cipher_name>:<ciphertext>:sea`` for a GUI/manager request (spec §3).

    Raises :class:`LocalProtocolError` for a bad cipher name, or when the ciphertext happens to
    contain ``:sea`` (the receiver would cut it there; probability ~ n * 2**-32: retry with other text).
    """
    name = _check_cipher_name(cipher_name)
    enc = AesStreamEncryptor(key.key, key.iv, cipher_name)
    enc.start()
    ct = enc.update(text) + enc.finalize()
    if _SEA in ct:
        raise LocalProtocolError("ciphertext contains ':sea' and cannot be framed")
    return b"".join((name, b":", ct, _SEA))


def unwrap_manager_request(raw: bytes, key: ManagerAesKey) -> tuple[str, bytes]:
    """Decrypt ``<cipher>:<ciphertext>:sea``; return ``(cipher_name, plaintext)``.

    Follows the reference: the name is what precedes the first ``:`` (< 20 bytes), the ciphertext
    ends at the first ``:sea``; bytes after it are ignored. Raises :class:`RemoteProtocolError`
    ``"failed aes decrypt"`` when the framing or the decryption fails.
    """
    raw = bytes(raw)
    colon = raw.find(b":")
    end = raw.find(_SEA)
    if colon < 0 or colon >= _MAX_CIPHER_NAME or end < colon + 1 or raw[:3].lower() != b"aes":
        raise RemoteProtocolError(FAILED_AES_DECRYPT)
    cipher_name = raw[:colon].decode("latin-1")
    try:
        dec = AesStreamDecryptor(key.key, key.iv, cipher_name)
    except LocalProtocolError:
        raise RemoteProtocolError(FAILED_AES_DECRYPT) from None
    ct = raw[colon + 1 : end]
    plain = dec.update(ct) + dec.finalize()
    if not ct:
        raise RemoteProtocolError(FAILED_AES_DECRYPT)
    return cipher_name, plain


class ManagerReplyEncryptor:
    """``aes:`` + one EVP stream: the reply to an AES-speaking GUI (spec §3).

    Two reference behaviours (facts §2.4):

    * ``eager_prefix=False`` (TCP/5029 manager): ``aes:`` goes out with the first data, and an empty
      reply is nothing at all;
    * ``eager_prefix=True`` (C/S ``gui_command`` relay): ``aes:`` goes out before any data and the
      stream is always finalised, so an empty reply is ``aes:`` + one 16-byte padding block.

    Each method returns the bytes to write now.
    """

    PREFIX = b"aes:"

    __slots__ = ("_eager", "_enc", "_prefixed")

    def __init__(self, key: ManagerAesKey, cipher_name: str = "aes-128-cbc", *, eager_prefix: bool = False) -> None:
        self._enc = AesStreamEncryptor(key.key, key.iv, cipher_name)
        self._eager = eager_prefix
        self._prefixed = False
        if eager_prefix:
            self._enc.start()

    def begin(self) -> bytes:
        """Return ``aes:`` if it is due now (eager mode, not yet sent), else ``b""``."""
        if self._eager and not self._prefixed:
            self._prefixed = True
            return self.PREFIX
        return b""

    def update(self, data: bytes) -> bytes:
        """Encrypt more reply bytes."""
        if not data:
            return self.begin()
        out = self._enc.update(data)
        if not self._prefixed:
            self._prefixed = True
            return self.PREFIX + out
        return out

    def finalize(self) -> bytes:
        """End the reply: the final padded block (plus the prefix if still due)."""
        out = self._enc.finalize()
        if out and not self._prefixed:
            self._prefixed = True
            return self.PREFIX + out
        return self.begin() + out
