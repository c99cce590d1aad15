"""Minimal reproducers of what the fuzz campaign found (fuzz/checks.py KNOWN_ISSUES names each of them).

Each test states the behaviour the spec asks for. Those that fail today are bugs in vmproto/wire (not in
this directory's paths): they are marked xfail(strict=True) with the reason, so the fix turns them into a
failure that says "remove the marker".
"""

from __future__ import annotations

import struct
import subprocess
import sys
import textwrap

import pytest

from fuzz.checks import KNOWN_ISSUES
from fuzz.codec_harnesses import CKEY, IVEC
from fuzz.keys import rsa_key, rsa_pem
from vmproto.wire import events as ev
from vmproto.wire import pbstore, query_result, store_msg, vmjson
from vmproto.wire.crypto import rsa_encrypt
from vmproto.wire.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from vmproto.wire.framing import byte_sum, encode_block
from vmproto.wire.opening import OpeningReader
from vmproto.wire.query import QueryServer

LONG_DIGITS = b"9" * 5000


def test_every_known_issue_has_a_regression_test():
    names = {name for name in globals() if name.startswith("test_")}
    for issue in KNOWN_ISSUES:
        path, _, test = issue.test.partition("::")
        assert path == "tests/fuzz/test_regressions.py" and test in names, issue


# --- atoi-digit-limit ----------------------------------------------------------------------------------

@pytest.mark.parametrize("entry", ["atoi", "store_id_main", "store_item_length", "query_errno"])
def test_atoi_long_digit_run(entry):
    calls = {
        "atoi": lambda: vmjson.atoi(LONG_DIGITS.decode()),
        "store_id_main": lambda: store_msg.decode_store_message(LONG_DIGITS + b"|select 1"),
        "store_item_length": lambda: store_msg.decode_store_message(b"10|L" + LONG_DIGITS + b":x\n"),
        "query_errno": lambda: query_result.decode_result(b'{"result":"' + LONG_DIGITS + b'|1|x"}'),
    }
    try:
        calls[entry]()
    except ProtocolError:
        pass


# --- pb-uncompressed-size-cap -------------------------------------------------------------------------

def _compressed_container(size: int) -> bytes:
    """One LZ4/snappy-flagged container whose header declares an uncompressed area of ``size`` bytes."""
    header = struct.pack("<16sB3sIIIHh10sb1sIIB3sI", b"pcap_block_store", 7, b"\0" * 3, size, 1, 1, 1, 0,
                         b"\0" * 10, 0, b"\0", 0, 1, 1, b"\0" * 3, 0)
    return header + struct.pack("<I", 0) + b"\0"


def test_container_declared_size_over_cap():
    with pytest.raises(RemoteProtocolError) as info:
        pbstore.validate_container(_compressed_container(256 * 1024 * 1024 + 1), now=0)
    assert info.value.reason == "too big"


def test_container_decode_does_not_allocate_declared_size():
    code = textwrap.dedent(f"""
        import resource, struct
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
        from vmproto.wire import pbstore
        from vmproto.wire.compression import PbCompression
        from vmproto.wire.errors import RemoteProtocolError
        payload = bytes.fromhex({_compressed_container(0xF0000000).hex()!r})
        try:
            pbstore.decode_container(payload, PbCompression.LZ4)
        except RemoteProtocolError as exc:
            print("refused", exc.reason)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("refused"), (proc.returncode, proc.stderr[-300:])


# --- opening-line-cap -----------------------------------------------------------------------------------

def test_opening_line_cap_single_read():
    reader = OpeningReader(max_size=1024)
    line = b'{"type_connection":"query","x":"' + b"a" * 100_000 + b'"}\r\n'
    with pytest.raises(RemoteProtocolError):
        reader.receive_data(line)
        reader.next_opening()


def test_opening_line_cap_across_reads_holds():
    reader = OpeningReader(max_size=1024)
    reader.receive_data(b'{"type_connection":"query","x":"' + b"a" * 900)
    with pytest.raises(RemoteProtocolError):
        reader.receive_data(b"a" * 200)


# --- surrogate-key-strings ------------------------------------------------------------------------------

def test_credentials_lone_surrogate_key():
    server = QueryServer(rsa_key=rsa_key(1024), password="pw")
    server.receive_data(b'{"type_connection":"query"}\r\n', 0)
    server.next_event(0)
    server.send(ev.RsaKey(server.public_pem))
    text = b'{"password":"pw","aes_ckey":"\\ud800' + CKEY[1:].encode() + b'","aes_ivec":"' + IVEC.encode() + b'"}'
    server.receive_data(encode_block(rsa_encrypt(rsa_pem(1024), text), byte_sum(text)), 0)
    with pytest.raises(RemoteProtocolError):
        server.next_event(0)


# --- store-encode-nonascii-time -------------------------------------------------------------------------

def test_store_encode_non_ascii_time():
    # Strict decoding (spec §8.3, §8.6) no longer lets such a time part in; the encoder must refuse it all the same.
    with pytest.raises(RemoteProtocolError):
        store_msg.decode_store_message(b"10|T2026-04-14 13:57:3\xff|select 1")
    with pytest.raises(LocalProtocolError):
        store_msg.encode_store_message(store_msg.StoreMessage(10, "2026-04-14 13:57:3\xff", (b"select 1",)))


# --- store-item-amplification ---------------------------------------------------------------------------

def test_store_item_length_wrap_amplification():
    text = b"10|" + b"L4294967295:" * 2000
    try:
        message = store_msg.decode_store_message(text)
    except store_msg.BadStoreItems as exc:
        message = exc.partial
    except RemoteProtocolError:
        return
    total = sum(len(q) for q in message.queries)
    assert total <= len(text), f"{len(text)}-byte message decoded into {total} bytes of queries"


# --- pb-layout-unchecked --------------------------------------------------------------------------------

def test_container_caplen_past_area_refused():
    payload = bytearray(pbstore.encode_container([(1_700_000_000, 0, b"ABCD")], hm=1, counter=1, compress=None,
                                                 checksum=False))
    payload[64 + 4 + 8 : 64 + 4 + 12] = struct.pack("<I", 15360)  # first packet's caplen, area is 62 bytes
    with pytest.raises(RemoteProtocolError) as validated:
        pbstore.validate_container(bytes(payload), now=1_700_000_000)
    with pytest.raises(RemoteProtocolError) as decoded:  # validation and decoding must agree
        pbstore.decode_container(bytes(payload), None)
    assert validated.value.reason == decoded.value.reason == "bad offsets"  # spec §9.3, §9.8 row 10
