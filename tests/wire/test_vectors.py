"""Every golden vector of spec/vectors.toml against the codecs."""

from __future__ import annotations

import importlib
import struct
import tomllib
from pathlib import Path

import pytest

from vmproto.wire import vmjson
from vmproto.wire.compression import Compression, compress, detect
from vmproto.wire.crypto import (
    AesBlockCipher,
    ManagerAesKey,
    ManagerReplyEncryptor,
    generate_rsa_key,
    public_key_pem,
    rsa_encrypt,
    wrap_manager_request,
)
from vmproto.wire.errors import LocalProtocolError, RemoteProtocolError
from vmproto.wire.framing import BlockReader, byte_sum, encode_block
from vmproto.wire.opening import OpeningReader, encode_opening
from vmproto.wire.pbstore import ContainerBuilder, checksum32buf, decode_container, validate_container
from vmproto.wire.query_result import decode_result, encode_csv_result, encode_error, encode_json_result
from vmproto.wire.store_msg import (
    decode_store_message,
    encode_store_message,
    queue_full_reply,
    queue_full_usleep,
)

VECTORS_FILE = Path(__file__).resolve().parents[2] / "spec" / "vectors.toml"
with VECTORS_FILE.open("rb") as _fh:
    DATA = tomllib.load(_fh)
DEFAULTS = DATA["defaults"]
VECTORS = {v["name"]: v for v in DATA["vector"]}
CIPHER = AesBlockCipher(DEFAULTS["aes_ckey"], DEFAULTS["aes_ivec"])


def _container(v) -> bytes:
    builder = ContainerBuilder(v["hm"])
    for ts, us, data_hex, length, ip_off, encaps, dlink, vlan in v["packets"]:
        builder.add(ts, us, bytes.fromhex(data_hex), length, ip_off, encaps, dlink, vlan)
    return builder.build(counter=v["counter"], time_s=v["time_s"], sensor_id=v["sensor_id"], dlink=v["dlink"],
                         ifname=v["ifname"], compress=None)


def check_plain_block(v):
    block = encode_block(v["payload_text"].encode())
    if "expected_hex" in v:
        assert block.hex() == v["expected_hex"]
    if "expected_len" in v:
        assert len(block) == v["expected_len"]
    reader = BlockReader()
    reader.receive_data(block)
    assert reader.next_block()[1] == v["payload_text"].encode()


def check_byte_sum(v):
    for text, total in v["cases"]:
        assert byte_sum(text.encode()) == total


def check_aes_block(v):
    plain = v["payload_text"].encode()
    assert encode_block(CIPHER.encrypt(plain), byte_sum(plain)).hex() == v["expected_hex"]


def check_aes_encrypt(v):
    for plain_hex, ct_hex in v["cases"]:
        assert CIPHER.encrypt(bytes.fromhex(plain_hex)).hex() == ct_hex
        assert CIPHER.decrypt(bytes.fromhex(ct_hex)).hex() == plain_hex


def check_aes_same_iv(v):
    plain = v["payload_text"].encode()
    assert CIPHER.encrypt(plain) == CIPHER.encrypt(plain)


def check_opening(v):
    for kind, expected in v["cases"]:
        assert encode_opening({"type_connection": kind}).hex() == expected


def check_rsa_pem(v):
    for bits, pem_len, ct_len in v["cases"]:
        key = generate_rsa_key(bits)
        pem = public_key_pem(key)
        assert len(pem) == pem_len and len(rsa_encrypt(pem, b"{}")) == ct_len


def check_rsa_limit(v):
    pem = public_key_pem(generate_rsa_key(v["bits"]))
    rsa_encrypt(pem, b"x" * v["max_ok"])
    with pytest.raises(LocalProtocolError):
        rsa_encrypt(pem, b"x" * (v["max_ok"] + 1))
    base = vmjson.dumps({"password": "", "aes_ckey": "0" * 32, "aes_ivec": "0" * 16})
    assert len(base) == v["base_json_len"]


def check_json(v):
    out = vmjson.dumps(vmjson.loads(v["input_json"]))
    if "expected_text" in v:
        assert out == v["expected_text"].encode()
    if "expected_len" in v:
        assert len(out) == v["expected_len"]


def check_store_message(v):
    msg = decode_store_message(v["text"].encode())
    assert msg.id_main == v["id_main"] and msg.client_time == v.get("client_time")
    assert msg.queries == tuple(q.encode() for q in v["queries"]) and msg.batched == v["batched"]
    assert encode_store_message(msg) == v["text"].encode()


def check_store_message_error(v):
    with pytest.raises(RemoteProtocolError) as info:
        decode_store_message(v["text"].encode())
    assert info.value.reason == v["reason"]


def check_queue_full(v):
    for rnd, expected in v["cases"]:
        assert queue_full_reply(queue_full_usleep(v["sleep_ms"], rnd)) == expected.encode()


def check_constant(v):
    module, _, name = v["constant"].rpartition(".")
    assert getattr(importlib.import_module(module), name) == v["expected_text"].encode()


def check_compress(v):
    assert compress(Compression[v["codec"]], v["input_text"].encode()).hex() == v["expected_hex"]


def check_compress_prefix(v):
    assert compress(Compression[v["codec"]], v["input_text"].encode()).hex().startswith(v["expected_prefix_hex"])


def check_detect(v):
    for data_hex, kind in v["cases"]:
        assert detect(bytes.fromhex(data_hex)) is Compression[kind]


def check_checksum32buf(v):
    for data_hex, value in v["cases"]:
        assert checksum32buf(bytes.fromhex(data_hex)) == value


def check_container(v):
    payload = _container(v)
    assert payload.hex() == v["expected_hex"]
    assert struct.unpack_from("<I", payload, 48)[0] == v["expected_checksum"]
    if "expected_packet_header_hex" in v:
        count = struct.unpack_from("<I", payload, 28)[0]
        start = 64 + 4 * count
        assert payload[start : start + 36].hex() == v["expected_packet_header_hex"]
    validate_container(payload, now=v["time_s"])
    assert len(decode_container(payload, None)) == len(v["packets"])


def _with_checksum(payload: bytearray) -> bytes:
    struct.pack_into("<I", payload, 48, max(checksum32buf(payload[64:]), 1))
    return bytes(payload)


def check_container_errors(v):
    base = bytes.fromhex(VECTORS[v["base"]]["expected_hex"])
    for offset, patch_hex, time_s, reason in v["cases"]:
        payload = bytearray(base)
        payload[offset : offset + len(patch_hex) // 2] = bytes.fromhex(patch_hex)
        if time_s >= 0:
            struct.pack_into("<I", payload, 60, time_s)
        data = _with_checksum(payload) if offset >= 64 else bytes(payload)
        with pytest.raises(RemoteProtocolError) as info:
            validate_container(data, now=v["now"])
        assert info.value.reason == reason
    for delta, reason in v["time_cases"]:
        payload = bytearray(base)
        struct.pack_into("<I", payload, 60, v["now"] + delta)
        if reason:
            with pytest.raises(RemoteProtocolError) as info:
                validate_container(bytes(payload), now=v["now"])
            assert info.value.reason == reason
        else:
            validate_container(bytes(payload), now=v["now"])


def check_manager_request(v):
    key = ManagerAesKey.from_base64(v["key_b64"], v["iv_b64"])
    assert wrap_manager_request(v["plain_text"].encode(), key).hex() == v["expected_hex"]


def check_manager_reply(v):
    enc = ManagerReplyEncryptor(ManagerAesKey.from_base64(v["key_b64"], v["iv_b64"]))
    assert (enc.update(v["plain_text"].encode()) + enc.finalize()).hex() == v["expected_hex"]


def check_version_int(v):
    for text, value in v["cases"]:
        major, minor, patch = (int(p) for p in text.split("."))
        assert major * 1_000_000 + minor * 1000 + patch == value


def check_time_diff(v):
    # The same |delta| mod 1800 rule as the container time check, with the handshake's limit.
    base = bytes.fromhex(VECTORS["container_plus2_facts_doc"]["expected_hex"])
    for delta, accepted in v["cases"]:
        payload = bytearray(base)
        struct.pack_into("<I", payload, 60, 1_700_000_000 + delta)
        if accepted:
            validate_container(bytes(payload), now=1_700_000_000, max_time_diff=v["limit"])
        else:
            with pytest.raises(RemoteProtocolError):
                validate_container(bytes(payload), now=1_700_000_000, max_time_diff=v["limit"])


def check_opening_remainder(v):
    reader = OpeningReader()
    reader.receive_data(bytes.fromhex(v["input_hex"]))
    assert reader.next_opening().remainder.hex() == v["expected_remainder_hex"]


def check_query_result(v):
    columns = [tuple(c) for c in v["columns"]]
    row = [None if x == "NULL" else x.encode() for x in v["row"]]
    assert encode_json_result(columns, [row]) == v["expected_json"].encode()
    assert encode_csv_result(columns, [row]) == v["expected_csv"].encode()
    assert decode_result(v["expected_json"].encode()) == decode_result(v["expected_csv"].encode())
    for code, message, expected in v["errors"]:
        assert encode_error(code, message) == expected.encode()


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_vector(name):
    vector = VECTORS[name]
    checker = globals().get(f"check_{vector['kind']}")
    assert checker is not None, f"no checker for kind {vector['kind']!r}"
    assert vector["section"]
    checker(vector)


def test_every_facts_vector_is_present():
    # facts §10 has 23 numbered vectors; each maps to at least one entry here.
    assert len(VECTORS) >= 23
