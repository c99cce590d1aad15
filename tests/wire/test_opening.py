"""The opening line and its end rules (spec §1)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vmproto.wire.crypto import ManagerAesKey, wrap_manager_request
from vmproto.wire.errors import LocalProtocolError, RemoteProtocolError
from vmproto.wire.opening import (
    CONNECTION_TYPES,
    PACKETBUFFER,
    RESPONSE,
    OpeningReader,
    encode_opening,
)

MKEY = ManagerAesKey(b"0123456789abcdef", b"fedcba9876543210")

SIZES = {"service": 31, "query": 29, "store": 29, "packetbuffer block": 42, "responses": 33, "keycheck": 32}


@pytest.mark.parametrize(("kind", "size"), SIZES.items())
def test_sensor_opening_lines(kind, size):
    line = encode_opening({"type_connection": kind})
    assert line == b'{"type_connection":"' + kind.encode() + b'"}\r\n' and len(line) == size


def test_unknown_type_cannot_be_encoded():
    with pytest.raises(LocalProtocolError):
        encode_opening({"type_connection": "sniffer_service"})


def _read(*chunks, key=None):
    reader = OpeningReader(manager_key=key)
    for chunk in chunks:
        reader.receive_data(chunk)
    return reader.next_opening()


@settings(max_examples=40)
@given(st.sampled_from(sorted(CONNECTION_TYPES)), st.integers(1, 40))
def test_any_split(kind, cut):
    line = encode_opening({"type_connection": kind, "sensor_id": 2})
    reader = OpeningReader()
    opening = None
    for i in range(0, len(line), cut):
        reader.receive_data(line[i : i + cut])
        # The line may end before its CRLF: a complete JSON object already ends it (reference rule).
        opening = reader.next_opening()
        if opening is not None:
            assert i + cut >= len(line) - 2
            break
    assert opening.type_connection == kind and opening.fields["sensor_id"] == 2 and opening.remainder == b""


def test_complete_json_without_crlf_ends_the_line():
    assert _read(b'{"type_connection":"query"}').type_connection == "query"


def test_remainder_kept_only_for_response_and_leading_crlf_skipped():
    tail = b"\r\n\n\x0a\x0dCIPHER"
    resp = _read(b'{"type_connection":"response","gui_task_id":"1:2"}\r\n' + tail)
    assert resp.type_connection == RESPONSE and resp.remainder == b"CIPHER"
    assert resp.get_text("gui_task_id") == "1:2"
    assert _read(b'{"type_connection":"store"}\r\nXYZ').remainder == b""


def test_aes_wrapped_gui_command():
    text = b'{"type_connection":"gui_command","sensor_id":2,"command":"getversion"}'
    ok = _read(wrap_manager_request(text, MKEY), key=MKEY)
    assert ok.type_connection == "gui_command" and ok.aes_cipher == "aes-128-cbc" and ok.get_text("sensor_id") == "2"


def test_aes_line_waits_for_sea_not_crlf():
    reader = OpeningReader(manager_key=MKEY)
    wire = wrap_manager_request(b'{"type_connection":"manager_command","command":"active"}', MKEY)
    reader.receive_data(wire[:-4] + b"\r\n")
    assert reader.next_opening() is None


@pytest.mark.parametrize(
    "data",
    [b'{"type_connection":"sniffer_service"}\r\n', b'{"type_connection":"Query"}\r\n', b"hello\r\n",
     b'["query"]\r\n', b'\r\n{"type_connection":"query"}\r\n', b'{"type_connection":5}\r\n'],
)
def test_refused_without_reply(data):
    with pytest.raises(RemoteProtocolError) as info:
        _read(data)
    assert info.value.close and info.value.reply is None


def test_aes_without_key_or_with_wrong_key():
    wire = wrap_manager_request(b'{"type_connection":"manager_command","command":"active"}', MKEY)
    with pytest.raises(RemoteProtocolError):
        _read(wire)
    with pytest.raises(RemoteProtocolError):
        _read(wire, key=ManagerAesKey(b"x" * 16, b"y" * 16))


def test_size_cap():
    reader = OpeningReader(max_size=100)
    with pytest.raises(RemoteProtocolError, match="too long"):
        reader.receive_data(b"{" + b"a" * 200)
    assert reader.buffered == 0


@pytest.mark.parametrize(
    "line",
    [
        b'{"type_connection":"query","x":"' + b"a" * 1000 + b'"}\r\n',  # CRLF in the same read
        b'{"type_connection":"query","x":"' + b"a" * 1000 + b'"}',  # complete JSON object, no CRLF
        b"aes" + b"A" * 2000 + b":sea",  # AES-wrapped line ending at :sea
        b"\r\n" + b"a" * 2000 + b"\r\n",  # CRLF first: the whole buffer is the text (reference rule)
    ],
)
def test_size_cap_holds_when_the_terminator_arrives_in_the_same_read(line):
    """spec §1.4 (fuzz finding opening-line-cap): the line is capped wherever its terminator lands."""
    reader = OpeningReader(max_size=1024, manager_key=MKEY)
    with pytest.raises(RemoteProtocolError, match="opening line too long"):
        reader.receive_data(line)
    assert reader.buffered == 0


def test_line_at_the_cap_is_accepted_and_remainder_does_not_count():
    line = b'{"type_connection":"response","gui_task_id":"1:2","x":"'
    line += b"a" * (1024 - len(line) - 2) + b'"}'
    assert len(line) == 1024
    reader = OpeningReader(max_size=1024)
    reader.receive_data(line + b"\r\n" + b"S" * 5000)  # a response's stream may follow in the same read
    opening = reader.next_opening()
    assert opening.text == line and opening.remainder == b"S" * 5000
    reader = OpeningReader(max_size=1023)
    with pytest.raises(RemoteProtocolError, match="opening line too long"):
        reader.receive_data(line + b"\r\n")


def test_reader_is_single_use():
    reader = OpeningReader()
    reader.receive_data(encode_opening({"type_connection": PACKETBUFFER}))
    assert reader.next_opening().type_connection == PACKETBUFFER
    with pytest.raises(LocalProtocolError):
        reader.next_opening()


def test_raw_remainder_keeps_what_the_reference_skips():
    reader = OpeningReader()
    reader.receive_data(b'{"type_connection":"response","gui_task_id":"1:2"}\r\n\n\rCIPHER')
    opening = reader.next_opening()
    assert opening.remainder == b"CIPHER"
    assert opening.raw_remainder == b"\n\rCIPHER"
