"""Raw-byte access to a peer over TCP for the cases: blocks, AES, RSA, the opening line.

Only codecs come from vmproto.wire (checksum, AES/RSA primitives, JSON dialect, compression); everything about
*when* a block is expected and what it must contain is written in the cases from the spec text. The reader
checks the writer rules of spec §2.1 on every block it takes (magic, bytes 28-31 zero) and keeps what it saw so
that a failing case can say exactly which bytes arrived.
"""

from __future__ import annotations

import contextvars
import math
import struct
from dataclasses import dataclass

import trio

from vmproto.wire import vmjson
from vmproto.wire.crypto import AesBlockCipher, generate_aes_strings, rsa_encrypt
from vmproto.wire.errors import ProtocolError
from vmproto.wire.framing import byte_sum

from .model import CaseFailed

__all__ = [
    "MAGIC",
    "Block",
    "NoReply",
    "PeerClosed",
    "Wire",
    "block",
    "opening",
]

MAGIC = b"vm_cloud_router_block_header"
_HEADER = struct.Struct("<28s4sII")
_READ = 65536
# The connections a running case opened; the runner closes them when the case ends (cases need not clean up).
OPEN_WIRES: contextvars.ContextVar[list[Wire] | None] = contextvars.ContextVar("open_wires", default=None)


class PeerClosed(CaseFailed):
    """The peer closed (FIN or RST) before the expected bytes arrived. `data` holds what came before."""

    def __init__(self, message: str, data: bytes = b"") -> None:
        super().__init__(message)
        self.data = data


class NoReply(CaseFailed):
    """Nothing (or not enough) arrived within the deadline. `data` holds the partial bytes."""

    def __init__(self, message: str, data: bytes = b"") -> None:
        super().__init__(message)
        self.data = data


@dataclass(frozen=True, slots=True)
class Block:
    """One block as read: header fields and the payload exactly as on the wire."""

    zero: bytes
    length: int
    checksum: int
    payload: bytes


def block(payload: bytes, checksum: int | None = None, *, magic: bytes = MAGIC, zero: bytes = b"\0" * 4,
          length: int | None = None) -> bytes:
    """Build a block frame by hand (so cases can also build broken ones). Defaults give a correct plain block."""
    return b"".join((
        magic.ljust(28, b"\0")[:28], zero,
        struct.pack("<II", len(payload) if length is None else length,
                    byte_sum(payload) if checksum is None else checksum),
        payload,
    ))


def opening(type_connection: str, **fields: object) -> bytes:
    """The exact opening line a sensor writes (spec §1.3): compact JSON, this member order, CRLF."""
    return vmjson.dumps({"type_connection": type_connection, **fields}) + b"\r\n"


class Wire:
    """One TCP connection to the peer with a receive buffer. All reads take a timeout in seconds."""

    def __init__(self, stream: trio.SocketStream, label: str = "") -> None:
        self.stream = stream
        self.label = label
        self._buf = bytearray()
        self.eof = False
        self.reset = False
        self.cipher: AesBlockCipher | None = None
        self.aes_ckey = ""
        self.aes_ivec = ""
        self.received = 0

    @classmethod
    async def connect(cls, host: str, port: int, label: str = "") -> Wire:
        """Open a TCP connection. Raises CaseFailed when the peer does not accept it."""
        try:
            stream = await trio.open_tcp_stream(host, port)
        except OSError as exc:
            raise CaseFailed(f"cannot connect to {host}:{port}: {exc}") from None
        wire = cls(stream, label)
        opened = OPEN_WIRES.get()
        if opened is not None:
            opened.append(wire)
        return wire

    # --- writing ----------------------------------------------------------------------------------------------
    async def send(self, data: bytes) -> None:
        """Write bytes. A peer that already closed raises PeerClosed."""
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise PeerClosed(f"peer closed while we were writing: {exc}") from None

    async def send_plain(self, payload: bytes) -> None:
        """Write one plain block."""
        await self.send(block(payload))

    async def send_aes(self, plaintext: bytes, *, checksum: int | None = None) -> None:
        """Write one AES block with the connection's keys (sum over the plaintext unless given)."""
        if self.cipher is None:
            raise RuntimeError("no AES keys installed on this connection")
        ct = self.cipher.encrypt(plaintext)
        await self.send(block(ct, byte_sum(plaintext) if checksum is None else checksum))

    def install_keys(self, aes_ckey: str, aes_ivec: str) -> None:
        """Use these credential strings for AES blocks from now on."""
        self.aes_ckey, self.aes_ivec = aes_ckey, aes_ivec
        self.cipher = AesBlockCipher(aes_ckey, aes_ivec)

    async def send_eof(self) -> None:
        """Half-close our side (FIN) and keep reading."""
        try:
            await self.stream.send_eof()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass

    async def aclose(self) -> None:
        """Close the socket (idempotent)."""
        await self.stream.aclose()

    # --- reading ----------------------------------------------------------------------------------------------
    async def _fill(self) -> bool:
        """Read once into the buffer. Returns False at EOF (FIN or RST)."""
        if self.eof:
            return False
        try:
            data = await self.stream.receive_some(_READ)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            self.eof = self.reset = True
            return False
        if not data:
            self.eof = True
            return False
        self.received += len(data)
        self._buf += data
        return True

    async def read_exact(self, n: int, timeout: float, what: str = "bytes") -> bytes:
        """Return exactly n bytes. Raises NoReply on timeout and PeerClosed at EOF (both carry the partial data)."""
        with trio.move_on_after(timeout):
            while len(self._buf) < n:
                if not await self._fill():
                    raise PeerClosed(f"peer closed while we waited for {what} ({len(self._buf)} of {n} bytes "
                                     f"arrived{', connection reset' if self.reset else ''})", bytes(self._buf))
            out = bytes(self._buf[:n])
            del self._buf[:n]
            return out
        raise NoReply(f"no {what} within {timeout:.1f} s ({len(self._buf)} of {n} bytes arrived)", bytes(self._buf))

    async def read_block(self, timeout: float, what: str = "a block") -> Block:
        """Read one block and check the writer rules of spec §2.1 (magic, bytes 28-31 zero).

        Raises CaseFailed for a broken header, NoReply / PeerClosed when it does not arrive completely.
        """
        deadline = trio.current_time() + timeout
        head = await self.read_exact(40, timeout, what)
        magic, zero, length, checksum = _HEADER.unpack(head)
        if magic != MAGIC:
            raise CaseFailed(f"{what}: bad block header (first bytes {head[:28]!r})")
        if zero != b"\0\0\0\0":
            raise CaseFailed(f"{what}: bytes 28-31 of the block header are {zero.hex()}, spec §2.1 wants zero")
        payload = await self.read_exact(length, max(0.0, deadline - trio.current_time()), f"payload of {what}")
        return Block(zero, length, checksum, payload)

    async def read_plain(self, timeout: float, what: str = "a plain block") -> bytes:
        """Read one plain block; check its sum (spec §2.2). Returns the payload."""
        blk = await self.read_block(timeout, what)
        if byte_sum(blk.payload) != blk.checksum:
            raise CaseFailed(f"{what}: sum {blk.checksum} does not match the payload ({byte_sum(blk.payload)})")
        return blk.payload

    async def read_aes(self, timeout: float, what: str = "an AES block") -> bytes:
        """Read one AES block, decrypt it with the connection's keys and check the sum. Returns the plaintext."""
        blk = await self.read_block(timeout, what)
        if self.cipher is None:
            raise RuntimeError("no AES keys installed on this connection")
        try:
            plain = self.cipher.decrypt(blk.payload)
        except ProtocolError:
            raise CaseFailed(f"{what}: does not decrypt with the connection's AES key and IV "
                             f"(length {blk.length}, first bytes {blk.payload[:16].hex()})") from None
        if byte_sum(plain) != blk.checksum:
            raise CaseFailed(f"{what}: sum {blk.checksum} does not match the decrypted payload ({byte_sum(plain)})")
        return plain

    async def read_until_eof(self, timeout: float, what: str = "the end of the connection") -> bytes:
        """Return every byte until the peer closes. Raises NoReply (with the bytes so far) if it stays open."""
        with trio.move_on_after(timeout):
            while await self._fill():
                pass
            out = bytes(self._buf)
            self._buf.clear()
            return out
        raise NoReply(f"the peer kept the connection open for {timeout:.1f} s waiting for {what}", bytes(self._buf))

    async def expect_silent_close(self, timeout: float, why: str) -> None:
        """The peer must close without writing anything (spec §15.1: local errors are never sent)."""
        try:
            data = await self.read_until_eof(timeout, why)
        except NoReply as exc:
            raise CaseFailed(f"{why}: the peer neither closed within {timeout:.1f} s"
                             + (f" and wrote {exc.data[:60]!r}" if exc.data else "")) from None
        if data:
            raise CaseFailed(f"{why}: the peer must close without writing, but wrote {data[:80]!r}")

    async def still_open(self, seconds: float) -> bytes:
        """Wait `seconds`; return whatever arrived. Raises PeerClosed if the peer closed meanwhile."""
        with trio.move_on_after(seconds):
            while True:
                if not await self._fill():
                    raise PeerClosed("the peer closed the connection", bytes(self._buf))
        out = bytes(self._buf)
        self._buf.clear()
        return out

    def take_buffer(self) -> bytes:
        """Return and clear the bytes read but not consumed."""
        out = bytes(self._buf)
        self._buf.clear()
        return out


# --- handshake helpers (sensor side, spec §6) ----------------------------------------------------------------

def rsa_key_bits(pem: bytes) -> int:
    """Modulus size of an SPKI PEM. Raises CaseFailed when it is not an RSA SubjectPublicKeyInfo."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise CaseFailed(f"rsa_key is not a loadable PEM public key: {exc}") from None
    if not isinstance(key, rsa.RSAPublicKey) or not pem.startswith(b"-----BEGIN PUBLIC KEY-----\n"):
        raise CaseFailed("rsa_key is not an RSA SubjectPublicKeyInfo PEM")
    return key.key_size


def new_keys() -> tuple[str, str]:
    """Fresh aes_ckey (32) / aes_ivec (16) strings in the reference alphabet."""
    return generate_aes_strings()


def rsa_block(pem: bytes, plaintext: bytes, checksum: int | None = None) -> bytes:
    """The credentials block: RSA PKCS#1 v1.5 ciphertext, sum over the plaintext (spec §3.3)."""
    ct = rsa_encrypt(pem, plaintext)
    return block(ct, byte_sum(plaintext) if checksum is None else checksum)


def ceil_div(a: float, b: float) -> int:
    """Integer ceiling of a / b (used for sleep slices)."""
    return math.ceil(a / b)
