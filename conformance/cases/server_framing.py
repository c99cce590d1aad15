"""Central role: block framing and AES block rules (spec §2, §3.5)."""

from __future__ import annotations

from vmproto.wire import vmjson
from vmproto.wire.framing import byte_sum

from ..context import ServerContext
from ..model import CaseFailed, Level, Quirk, case, check_eq
from ..wirekit import NoReply, block, rsa_block


@case("framing-bad-magic", "credentials block with a wrong magic → close, nothing written (no resync)",
      ("§2.1", "§2.5", "§15.4"))
async def framing_bad_magic(ctx: ServerContext) -> None:
    wire = await ctx.open("query")
    pem = await ctx.read_rsa_key(wire, 2048)
    good = rsa_block(pem, vmjson.dumps(ctx.credentials()))
    await wire.send(b"VM_CLOUD_ROUTER_BLOCK_HEADER" + good[28:])
    await wire.expect_silent_close(ctx.wait(5), "bad block header")


@case("framing-header-pad-ignored", "bytes 28-31 of a block header are ignored by the reader", ("§2.1",))
async def framing_header_pad_ignored(ctx: ServerContext) -> None:
    wire = await ctx.open("query")
    pem = await ctx.read_rsa_key(wire, 2048)
    creds = ctx.credentials()
    wire.install_keys(creds["aes_ckey"], creds["aes_ivec"])
    good = rsa_block(pem, vmjson.dumps(creds))
    await wire.send(good[:28] + b"\xde\xad\xbe\xef" + good[32:])
    check_eq(await wire.read_plain(ctx.wait(5), "handshake result"), b"OK", "handshake result")


@case("framing-bad-checksum-rsa", "credentials block whose sum does not match the plaintext → close, nothing "
      "written", ("§2.2", "§2.5", "§3.3"))
async def framing_bad_checksum_rsa(ctx: ServerContext) -> None:
    wire = await ctx.open("query")
    pem = await ctx.read_rsa_key(wire, 2048)
    text = vmjson.dumps(ctx.credentials())
    await wire.send(rsa_block(pem, text, checksum=byte_sum(text) + 1))
    await wire.expect_silent_close(ctx.wait(5), "bad checksum on the credentials")


@case("framing-bad-checksum-aes", "AES data block whose sum does not match the plaintext → close, nothing written",
      ("§2.2", "§2.5"))
async def framing_bad_checksum_aes(ctx: ServerContext) -> None:
    wire, _ = await ctx.handshake("query")
    await wire.send_aes(b"select 1", checksum=byte_sum(b"select 1") ^ 0x100)
    await wire.expect_silent_close(ctx.wait(5), "bad checksum on an AES block")


@case("framing-sum-is-unsigned", "the checksum counts bytes as unsigned (bytes >= 0x80 in the plaintext)",
      ("§2.2",))
async def framing_sum_unsigned(ctx: ServerContext) -> None:
    wire, _ = await ctx.handshake("query")
    sql = "select 'é€'".encode()  # bytes >= 0x80: a signed sum would differ
    await wire.send_aes(sql)
    reply = await wire.read_aes(ctx.wait(10), "reply to a request with high bytes")
    check_eq(reply[:10], b'{"result":', "reply start")


@case("framing-bad-aes-length", "AES block whose length is not a multiple of 16 → close, nothing written",
      ("§2.6", "§3.5"))
async def framing_bad_aes_length(ctx: ServerContext) -> None:
    wire, _ = await ctx.handshake("query")
    await wire.send(block(b"\x00" * 15, 0))
    await wire.expect_silent_close(ctx.wait(5), "15-byte AES payload")


@case("framing-bad-aes-padding", "AES block with a wrong key (bad PKCS#7 padding) → close, nothing written",
      ("§3.5", "§2.5"))
async def framing_bad_aes_padding(ctx: ServerContext) -> None:
    from vmproto.wire.crypto import AesBlockCipher

    wire, _ = await ctx.handshake("query")
    other = AesBlockCipher("zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz", "yyyyyyyyyyyyyyyy")
    # find a ciphertext whose decryption under the real key has invalid padding
    for n in range(200):
        ct = other.encrypt(b"select %d" % n)
        try:
            wire.cipher.decrypt(ct)  # type: ignore[union-attr]
        except Exception:
            break
    await wire.send(block(ct, 0))
    await wire.expect_silent_close(ctx.wait(5), "undecryptable AES block")


@case("framing-truncated", "a block cut short by FIN → the central closes without writing", ("§2.5",))
async def framing_truncated(ctx: ServerContext) -> None:
    wire, _ = await ctx.handshake("query")
    ct = wire.cipher.encrypt(b"select 1")  # type: ignore[union-attr]
    await wire.send(block(ct, byte_sum(b"select 1"))[:50])
    await wire.send_eof()
    await wire.expect_silent_close(ctx.wait(5), "truncated block then FIN")


@case("framing-oversized", "a header announcing a 4 GiB payload: vmproto closes at once (64 MiB cap); the "
      "reference waits for the payload", ("§2.5", "§2.6", "§17.2"), Level.QUIRK,
      quirk=Quirk("", "no cap: waits for 4 GiB", "closes without writing (`block too large`)"))
async def framing_oversized(ctx: ServerContext) -> str:
    wire, _ = await ctx.handshake("query")
    await wire.send(block(b"", 0, length=0xFFFFFFF0))
    try:
        await wire.expect_silent_close(ctx.wait(3), "oversized block")
    except CaseFailed as exc:
        if "neither closed" in str(exc) and "wrote" not in str(exc):
            return "reference"
        raise
    return "vmproto"


@case("aes-deterministic", "equal plaintexts give equal ciphertexts on one connection (same IV every block)",
      ("§3.5",))
async def aes_deterministic(ctx: ServerContext) -> None:
    wire, _ = await ctx.handshake("query")
    seen = []
    for _ in range(2):
        await wire.send_aes(b"select 1")
        blk = await wire.read_block(ctx.wait(10), "reply to select 1")
        seen.append(blk.payload)
    check_eq(seen[1], seen[0], "ciphertext of the second identical reply")
    try:
        plain = wire.cipher.decrypt(seen[0])  # type: ignore[union-attr]
    except Exception as exc:
        raise CaseFailed(f"reply does not decrypt with the first 16 key bytes and the IV: {exc}") from None
    check_eq(plain[:10], b'{"result":', "decrypted reply start")


@case("aes-key-first-16-bytes", "only the first 16 bytes of aes_ckey are the key", ("§3.4", "§16 Q17"))
async def aes_key_first_16(ctx: ServerContext) -> None:
    from vmproto.wire.crypto import AesBlockCipher

    ckey = "0123456789abcdef" + "ZZZZZZZZZZZZZZZZ"
    ivec = "fedcba9876543210"
    wire, _ = await ctx.handshake("query", ctx.credentials(keys=(ckey, ivec)))
    wire.cipher = AesBlockCipher("0123456789abcdef" + "0000000000000000", ivec)  # same first 16, other tail
    await wire.send_aes(b"select 1")
    try:
        await wire.read_aes(ctx.wait(10), "reply under a key with a different tail")
    except NoReply:
        raise CaseFailed("the central did not answer: it uses more than the first 16 key bytes") from None
