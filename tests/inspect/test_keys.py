"""Key files: both forms, lookups, and clear errors for bad files."""

from __future__ import annotations

import json

import pytest

from tests.conftest import REFERENCE, need_shared
from vmproto.inspect.__main__ import main
from vmproto.inspect.errors import InspectError
from vmproto.inspect.keys import load_keys


def test_reference_document_form():
    keys = load_keys(need_shared(REFERENCE / "keys" / "store_zstd.json"))
    entry = keys.lookup(36444)
    assert entry is not None and entry.type_connection == "query"
    assert entry.aes_key == bytes.fromhex("62476c32534d3b40505460435e696b34")
    assert entry.credentials.startswith(b'{"password":"refpass"')
    assert entry.private_key_pem is None and entry.rsa_modulus_bits == 2048
    assert keys.lookup(1) is None


def test_jsonl_form_port_reuse_and_fallback_to_key_strings(tmp_path):
    path = tmp_path / "k.jsonl"
    lines = [
        {"conn": 40000, "type_connection": "service", "opened_ts": 10.0, "aes_ckey": "A" * 32, "aes_ivec": "B" * 16},
        {"conn": 40000, "type_connection": "query", "opened_ts": 50.0, "aes_key_hex_used": "11" * 16,
         "aes_iv_hex_used": "22" * 16},
        {"conn": 40001, "type_connection": "response", "opened_ts": 60.0},
    ]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    keys = load_keys(path)
    assert keys.lookup(40000, 11.0).type_connection == "service"
    assert keys.lookup(40000, 49.0).aes_key == b"\x11" * 16
    assert keys.lookup(40000, 11.0).aes_key == b"A" * 16  # first 16 characters of aes_ckey (spec §3)
    assert keys.service_keys_before(60.0).conn == 40000
    assert keys.service_keys_before(5.0) is None


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not JSON"),
        ('[{"conn": "x"}]', "integer `conn`"),
        ('{"conn": 1, "aes_key_hex_used": "zz"}', "not valid hex"),
    ],
)
def test_bad_key_files(tmp_path, content, message, capsys):
    path = tmp_path / "k.json"
    path.write_text(content)
    with pytest.raises(InspectError, match=message):
        load_keys(path)
    pcap = tmp_path / "empty.pcap"
    pcap.write_bytes(bytes.fromhex("d4c3b2a1020004000000000000000000ffff000001000000"))
    assert main([str(pcap), "--keys", str(path)]) == 2
    assert message in capsys.readouterr().err


def test_missing_key_file(tmp_path):
    with pytest.raises(InspectError, match="cannot read key file"):
        load_keys(tmp_path / "absent.json")
