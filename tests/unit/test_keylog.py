import os
import stat

import pytest

from tests.conftest import REFERENCE, need_shared
from vmproto import keylog


def test_jsonl_roundtrip_and_permissions(tmp_path):
    path = tmp_path / "keys.jsonl"
    kl = keylog.KeyLog(path)
    e1 = keylog.connection_entry(conn=40000, type_connection="store", opened_ts=1.5, aes_ckey="0123456789:;<=>?@ABCDEFGHIJKLMNO",
                                 aes_ivec="PQRSTUVWXYZ[]^_`", rsa_modulus_bits=2048)
    kl.write(e1)
    kl.write(keylog.connection_entry(conn=40001, type_connection="response", opened_ts=2.0, aes_ckey=None, aes_ivec=None))
    kl.close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    entries = keylog.load(path)
    assert [e["conn"] for e in entries] == [40000, 40001]
    assert entries[0]["aes_key_hex_used"] == b"0123456789:;<=>?".hex()
    assert entries[0]["aes_iv_hex_used"] == b"PQRSTUVWXYZ[]^_`".hex()


def test_reads_the_recordings_document_form():
    path = need_shared(REFERENCE / "keys" / "store_zstd.json")
    entries = keylog.load(path)
    assert entries and all("conn" in e and "type_connection" in e for e in entries)


@pytest.mark.parametrize("bad", ["{not json", "[1,2"])
def test_garbage_raises_value_error(tmp_path, bad):
    p = tmp_path / "k"
    p.write_text(bad)
    with pytest.raises(ValueError):
        keylog.load(p)
