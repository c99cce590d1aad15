"""AES per block and stream, RSA transport, key generation, manager AES wrapper (spec §3)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vmproto.wire.crypto import (
    AES_KEY_ALPHABET,
    AesBlockCipher,
    AesStreamDecryptor,
    AesStreamEncryptor,
    ManagerAesKey,
    ManagerReplyEncryptor,
    generate_aes_strings,
    generate_rsa_key,
    public_key_pem,
    rsa_decrypt,
    rsa_encrypt,
    unwrap_manager_request,
    wrap_manager_request,
)
from vmproto.wire.errors import LocalProtocolError, RemoteProtocolError

CKEY = "0123456789:;<=>?@ABCDEFGHIJKLMNO"
IVEC = "PQRSTUVWXYZ[]^_`"
MKEY = ManagerAesKey.from_base64("MDEyMzQ1Njc4OWFiY2RlZg==", "ZmVkY2JhOTg3NjU0MzIxMA==")


@pytest.fixture(scope="module")
def rsa2048():
    return generate_rsa_key(2048)


def test_generated_strings_use_the_reference_range():
    for _ in range(20):
        ckey, ivec = generate_aes_strings()
        assert len(ckey) == 32 and len(ivec) == 16
        assert set(ckey.encode() + ivec.encode()) <= set(AES_KEY_ALPHABET)
    assert AES_KEY_ALPHABET[0] == ord("0") and AES_KEY_ALPHABET[-1] == ord("z") and len(AES_KEY_ALPHABET) == 75


def test_only_first_16_key_bytes_matter():
    a = AesBlockCipher(CKEY, IVEC)
    b = AesBlockCipher(CKEY[:16] + "z" * 16, IVEC)
    assert a.encrypt(b"hello") == b.encrypt(b"hello")


def test_same_iv_every_block():
    c = AesBlockCipher(CKEY, IVEC)
    assert c.encrypt(b"OK") == c.encrypt(b"OK") == bytes.fromhex("35ece09ebc37bc2131231a48bed974ca")


@settings(max_examples=80)
@given(st.binary(max_size=2000))
def test_block_round_trip(plain):
    c = AesBlockCipher(CKEY, IVEC)
    ct = c.encrypt(plain)
    assert len(ct) == (len(plain) // 16 + 1) * 16
    assert c.decrypt(ct) == plain


@pytest.mark.parametrize("ct", [b"", b"x" * 15, b"y" * 17])
def test_block_decrypt_bad_length(ct):
    with pytest.raises(RemoteProtocolError, match="failed aes decrypt"):
        AesBlockCipher(CKEY, IVEC).decrypt(ct)


def test_block_decrypt_bad_padding():
    c = AesBlockCipher(CKEY, IVEC)
    other = AesBlockCipher("Z" * 32, IVEC)
    bad = 0
    for i in range(50):
        try:
            other.decrypt(c.encrypt(bytes([i]) * 20))
        except RemoteProtocolError as exc:
            assert exc.reason == "failed aes decrypt"
            bad += 1
    assert bad >= 40  # a wrong key gives a valid pad only by chance (~1/256 per try)


def test_short_keys_are_refused():
    with pytest.raises(RemoteProtocolError):
        AesBlockCipher("short", IVEC)


@settings(max_examples=60)
@given(st.lists(st.binary(max_size=70), max_size=8), st.lists(st.integers(1, 40), min_size=1))
def test_stream_round_trip_any_split(writes, cuts):
    key, iv = CKEY[:16].encode(), IVEC.encode()
    enc = AesStreamEncryptor(key, iv)
    ct = b"".join(enc.update(w) for w in writes) + enc.finalize()
    plain = b"".join(writes)
    if not plain:
        assert ct == b""  # nothing written -> nothing at all (reference cAes::encrypt)
    else:
        assert ct == AesBlockCipher(key, iv).encrypt(plain)
    dec = AesStreamDecryptor(key, iv)
    out, pos, i = [], 0, 0
    while pos < len(ct):
        step = cuts[i % len(cuts)]
        out.append(dec.update(ct[pos : pos + step]))
        pos += step
        i += 1
    out.append(dec.finalize())
    assert b"".join(out) == plain


def test_stream_decrypt_truncated():
    key, iv = CKEY[:16].encode(), IVEC.encode()
    ct = AesBlockCipher(key, iv).encrypt(b"a" * 40)
    dec = AesStreamDecryptor(key, iv)
    dec.update(ct[:-3])
    with pytest.raises(RemoteProtocolError, match="failed aes decrypt"):
        dec.finalize()


def test_finalize_twice_is_our_misuse():
    enc = AesStreamEncryptor(b"k" * 16, b"i" * 16)
    enc.finalize()
    with pytest.raises(LocalProtocolError):
        enc.finalize()


def test_rsa_round_trip_and_limits(rsa2048):
    pem = public_key_pem(rsa2048)
    assert pem.startswith(b"-----BEGIN PUBLIC KEY-----\n") and len(pem) == 451
    ok = b"p" * 245
    ct = rsa_encrypt(pem, ok)
    assert len(ct) == 256 and rsa_decrypt(rsa2048, ct) == ok
    with pytest.raises(LocalProtocolError):
        rsa_encrypt(pem, b"p" * 246)


def test_rsa_refuses_pkcs1_pem(rsa2048):
    from cryptography.hazmat.primitives import serialization

    pkcs1 = rsa2048.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)
    assert pkcs1.startswith(b"-----BEGIN RSA PUBLIC KEY-----")
    with pytest.raises(RemoteProtocolError, match="bad rsa key"):
        rsa_encrypt(pkcs1, b"x")
    with pytest.raises(RemoteProtocolError, match="bad rsa key"):
        rsa_encrypt(b"-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n", b"x")


def test_rsa_decrypt_wrong_length(rsa2048):
    with pytest.raises(RemoteProtocolError, match="failed private decrypt"):
        rsa_decrypt(rsa2048, b"\0" * 255)


def test_manager_request_vector():
    wire = wrap_manager_request(b"getversion", MKEY)
    assert wire.hex() == "6165732d3132382d6362633a4ee97a0284ba7834b9cec0aa100930123a736561"
    assert unwrap_manager_request(wire + b"trailing", MKEY) == ("aes-128-cbc", b"getversion")


@pytest.mark.parametrize("name", ["aes-256-cbc", "aes-192-ctr", "aes-128-ecb", "aes-256-cfb", "AES-128-OFB", "aesxyz"])
def test_manager_request_other_ciphers(name):
    key = ManagerAesKey(b"0123456789abcdef" * 2, b"fedcba9876543210")
    assert unwrap_manager_request(wrap_manager_request(b"list_active_clients", key, name), key) == (
        name,
        b"list_active_clients",
    )


def test_unknown_cipher_name_falls_back_to_aes128cbc():
    assert wrap_manager_request(b"getversion", MKEY, "aesfoo")[len("aesfoo:") :] == wrap_manager_request(
        b"getversion", MKEY
    )[len("aes-128-cbc:") :]


@pytest.mark.parametrize(
    "raw", [b"aes-128-cbc:", b"aes-128-cbc-with-a-very-long-name:xx:sea", b"aes:sea", b"aes-128-cbc:0123:sea"]
)
def test_manager_request_bad_framing(raw):
    with pytest.raises(RemoteProtocolError, match="failed aes decrypt"):
        unwrap_manager_request(raw, MKEY)


def test_manager_reply_lazy_and_eager():
    lazy = ManagerReplyEncryptor(MKEY)
    assert lazy.begin() == b"" and lazy.finalize() == b""  # empty reply: nothing at all
    eager = ManagerReplyEncryptor(MKEY, eager_prefix=True)
    out = eager.begin() + eager.finalize()
    assert out[:4] == b"aes:" and len(out) == 20  # aes: + one padding block
    reply = ManagerReplyEncryptor(MKEY)
    assert (reply.update(b"2026.04.0") + reply.finalize()).hex() == "6165733aa4297f8c65ee8d85093c2468e3972681"


def test_manager_key_validation():
    with pytest.raises(LocalProtocolError):
        ManagerAesKey.from_base64("!!!", "ZmVkY2JhOTg3NjU0MzIxMA==")
    with pytest.raises(LocalProtocolError):
        ManagerAesKey(b"short", b"x" * 16)
    assert "hidden" in repr(MKEY)


def test_key_string_bytes():
    from vmproto.wire.crypto import key_string_bytes

    assert key_string_bytes("0123456789:;<=>?") == b"0123456789:;<=>?"
    assert key_string_bytes("\udcff\udc80é") == b"\xff\x80\xc3\xa9"  # surrogate escapes restore raw bytes
    with pytest.raises(RemoteProtocolError, match="^aes_ckey is not a byte string$"):
        key_string_bytes("\ud800abc", "aes_ckey")
