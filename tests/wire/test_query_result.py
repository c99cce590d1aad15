"""Query result formats (spec §10)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vmproto.wire.errors import RemoteProtocolError
from vmproto.wire.query_result import (
    END,
    QueryError,
    QueryResult,
    decode_result,
    encode_csv_result,
    encode_error,
    encode_json_result,
    encode_value,
)

COLS = [("id", 3), ("name", 253)]


def test_vectors():
    assert encode_json_result(COLS, [[b"1", None]]) == (
        b'{"result":"OK","data_rows":1,"data":[["id:3","name:253"],["1",null]]}'
    )
    assert encode_csv_result(COLS, [[b"1", None]]) == b"CSV\nid:3,name:253\n1,_NULL_"
    assert encode_error(1146, "Table 'x.y' doesn't exist") == b'{"result":"1146|1|Table \'x.y\' doesn\'t exist"}'
    assert encode_error(1064, "syntax") == b'{"result":"1064|0|syntax"}'
    assert encode_json_result(COLS, []) == b'{"result":"OK"}'
    assert END == b"_END_"


def test_value_encoding():
    assert encode_value(b"plain text\r\n") == "plain text\r\n"
    assert encode_value("žluť") == "_B64_xb5sdcWl"
    assert encode_value(b"\x00") == "_B64_AA=="
    assert encode_value(None) is None and encode_value(None, csv=True) == "_NULL_"
    # printable values that would read back as tokens are protected (stricter than the reference)
    assert encode_value(b"_NULL_").startswith("_B64_") and encode_value(b"_B64_x").startswith("_B64_")


def test_duplicate_column_names_collapse_like_the_reference():
    assert encode_json_result([("a", 1), ("a", 1), ("b", 2)], [[b"1", b"2", b"3"]]).endswith(b'["2","2"]]}')


values = st.one_of(st.none(), st.binary(max_size=20))


@given(st.lists(st.lists(values, min_size=2, max_size=2), min_size=1, max_size=5))
def test_json_round_trip(rows):
    assert decode_result(encode_json_result(COLS, rows)) == QueryResult(tuple(COLS), tuple(map(tuple, rows)))


@given(st.lists(st.lists(st.binary(max_size=20).filter(lambda b: b != b""), min_size=2, max_size=2), max_size=5))
def test_csv_round_trip(rows):
    assert decode_result(encode_csv_result(COLS, rows)) == QueryResult(tuple(COLS), tuple(map(tuple, rows)))


def test_errors_decode():
    assert decode_result(encode_error(1064, "x|y")) == QueryError(1064, 0, "x|y")
    assert decode_result(b'{"result":"1205|timeout"}') == QueryError(1205, 1, "timeout")
    assert decode_result(b'{"result":"weird"}') == QueryError(0, 1, "weird")
    assert decode_result(b'{"result":" ok "}') == QueryResult((), ())


@pytest.mark.parametrize("payload", [b"", b"hello", b'{"result":"OK","data":5}', b"[1]"])
def test_bad_replies(payload):
    with pytest.raises(RemoteProtocolError):
        decode_result(payload)
