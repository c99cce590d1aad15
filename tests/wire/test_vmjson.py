"""The reference JSON dialect (spec §4)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vmproto.wire import vmjson
from vmproto.wire.errors import LocalProtocolError, RemoteProtocolError


def test_reference_escapes_only():
    assert vmjson.dumps({"k": 'a\\b"c/d\b\f\n\r\t'}) == b'{"k":"a\\\\b\\"c\\/d\\b\\f\\n\\r\\t"}'
    assert vmjson.dumps(["\x01\x1f", "é"]) == '["\x01\x1f","é"]'.encode()


def test_bools_are_numbers_and_order_is_kept():
    assert vmjson.dumps({"z": True, "a": False, "m": None, "n": -5}) == b'{"z":1,"a":0,"m":null,"n":-5}'


def test_bytes_values_go_out_raw():
    assert vmjson.dumps({"v": b"\xff\x00"[:1]}) == b'{"v":"\xff"}'


@pytest.mark.parametrize("bad", [{"k": float("nan")}, {1: 2}, {"k": object()}, {"k": "a\0b"}])
def test_unencodable(bad):
    with pytest.raises(LocalProtocolError):
        vmjson.dumps(bad)


json_values = st.recursive(
    st.none() | st.integers(-(2**63), 2**63) | st.text(st.characters(blacklist_characters="\0", codec="utf-8")),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(st.characters(blacklist_characters="\0", codec="utf-8"), max_size=5), inner, max_size=4),
    max_leaves=20,
)


@given(st.dictionaries(st.text(st.characters(blacklist_characters="\0", codec="utf-8"), max_size=8), json_values, max_size=6))
def test_round_trip(obj):
    assert vmjson.loads(vmjson.dumps(obj)) == obj
    assert vmjson.loads(vmjson.dumps(obj) + b"\r\n\r\n") == obj


def test_non_utf8_round_trip():
    raw = b'{"k":"\xff\xfe"}'
    assert vmjson.dumps(vmjson.loads(raw)) == raw


@pytest.mark.parametrize(
    "text", [b"", b"x", b" {}", b'{"a":1', b'{"a":1} x', b"[1,2", b"{'a':1}", b"\r\n", b"[" * 40 + b"]" * 40]
)
def test_bad_json(text):
    with pytest.raises(RemoteProtocolError, match="bad json"):
        vmjson.loads(text)


def test_trailing_text_after_a_complete_value_is_ignored_like_json_c():
    assert vmjson.loads(b'{"a":1}{"b":}') == {"a": 1}


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1", 1), (2, 2), ("12abc", 12), ("  -7", -7), ("true", 0), (True, 0), (False, 0), (None, 0), ("", 0),
     (1.9, 1), ("+3", 3), ("4294967297", 1), ("99999999999999999999", -1), ([1], 0)],
)
def test_atoi(value, expected):
    assert vmjson.atoi(value) == expected


def test_text_value():
    assert vmjson.text_value(True) == "true" and vmjson.text_value(5) == "5" and vmjson.text_value(None) == ""


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("9" * 5000, -1),  # LONG_MAX saturated, low 32 bits all ones
        ("-" + "9" * 5000, 0),  # LONG_MIN: low 32 bits zero
        ("0" * 5000 + "42", 42),  # leading zeros are not significant digits
        ("0" * 5000, 0),
        (" \t+" + "0" * 100 + "9223372036854775807x", -1),
        ("9223372036854775808", -1),  # one past LONG_MAX saturates
        ("-9223372036854775809", 0),
        ("1" * 19, vmjson.atoi(int("1" * 19))),
        pytest.param(10**5000, -1, id="int-past-digit-limit"),  # a Python int: str() of it would raise
        pytest.param(-(10**5000), 0, id="negative-int-past-digit-limit"),
    ],
)
def test_atoi_long_digit_runs_saturate_without_raising(value, expected):
    """C atoi on any input (fuzz finding atoi-digit-limit): no ValueError from Python's 4 300-digit limit."""
    assert vmjson.atoi(value) == expected


@given(st.text(alphabet=" +-0123456789x", max_size=40))
def test_atoi_matches_strtol_then_int_cast(text):
    stripped = text.lstrip(" ")
    digits = ""
    sign = 1
    rest = stripped
    if rest[:1] in ("+", "-"):
        sign = -1 if rest[0] == "-" else 1
        rest = rest[1:]
    for ch in rest:
        if not ch.isdigit():
            break
        digits += ch
    value = max(-(2**63), min(2**63 - 1, sign * int(digits or "0")))
    expected = ((value & 0xFFFFFFFF) ^ 0x80000000) - 0x80000000
    assert vmjson.atoi(text) == expected
