"""Result formats of the query channel (spec §10).

Success: ``{"result":"OK"}`` without rows, else ``{"result":"OK","data_rows":N,"data":[[<col>:<type>,
...],[v,...],...]}``; CSV on request: ``CSV\\n<col>:<type>,...`` then ``\\n<v>,<v>`` per row.
Error: ``{"result":"<errno>|<retry>|<message>"}``. Values that are not printable ASCII (CR/LF
allowed) travel as ``_B64_<base64>``; a CSV NULL is ``_NULL_``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass

from . import vmjson
from .errors import RemoteProtocolError

__all__ = [
    "END",
    "ER_PARSE_ERROR",
    "QueryError",
    "QueryResult",
    "decode_result",
    "decode_value",
    "encode_csv_result",
    "encode_error",
    "encode_json_result",
    "encode_value",
]

END = b"_END_"
ER_PARSE_ERROR = 1064
NULL_TOKEN = "_NULL_"
B64_PREFIX = "_B64_"

# C isprint() in the C locale (0x20..0x7E) plus CR and LF: those values go out as they are.
_PRINTABLE = frozenset(range(0x20, 0x7F)) | {0x0A, 0x0D}
_NONPRINT_DELETE = bytes(b for b in range(256) if b not in _PRINTABLE)
# CSV has no quoting: a comma or line break inside a value would split it, so those go base64 too.
_CSV_UNSAFE_DELETE = _NONPRINT_DELETE + b",\r\n"

Value = bytes | str | None


@dataclass(frozen=True, slots=True)
class QueryResult:
    """Rows of a successful query: ``columns`` as ``(name, mysql_type)``, ``rows`` of bytes/None."""

    columns: tuple[tuple[str, int], ...]
    rows: tuple[tuple[bytes | None, ...], ...]


@dataclass(frozen=True, slots=True)
class QueryError:
    """A failed query: MySQL ``code``, ``retry`` (0 = do not retry) and the server's ``message``."""

    code: int
    retry: int
    message: str


def _as_bytes(value: bytes | str) -> bytes:
    return value.encode("utf-8", "surrogateescape") if isinstance(value, str) else bytes(value)


def encode_value(value: Value, *, csv: bool = False) -> str | None:
    """Return a value's wire text: as is when printable, ``_B64_...`` otherwise; ``None`` for NULL in
    JSON and ``_NULL_`` in CSV.

    Unlike the reference, a printable value that would be read back as a token (``_NULL_`` or
    ``_B64_...``) is sent base64 too, and so is a CSV value holding ``,``/CR/LF (the reference
    sends those raw and its client splits them): both survive the round trip, and reference clients
    decode base64 anyway.
    """
    if value is None:
        return NULL_TOKEN if csv else None
    raw = _as_bytes(value)
    if raw.translate(None, _CSV_UNSAFE_DELETE if csv else _NONPRINT_DELETE) == raw and raw != b"_NULL_" and not raw.startswith(b"_B64_"):
        return raw.decode("ascii")
    return B64_PREFIX + base64.b64encode(raw).decode("ascii")


def decode_value(text: str | None) -> bytes | None:
    """Inverse of :func:`encode_value` (the reference client's rules; lenient base64)."""
    if text is None or text == NULL_TOKEN:
        return None
    if text.startswith(B64_PREFIX):
        try:
            return base64.b64decode(text[5:] + "=" * (-len(text[5:]) % 4))
        except (binascii.Error, ValueError):
            raise RemoteProtocolError("bad base64 value in query result") from None
    return text.encode("utf-8", "surrogateescape")


def _row_values(columns: Sequence[tuple[str, int]], row: Sequence[Value]) -> list[Value]:
    """The values the reference emits for one row.

    It keys rows by column name, so duplicate names collapse: the row has one entry per distinct
    name (the last value wins) and only ``min(distinct, columns)`` values are written, each looked
    up by the name of column j (spec §16 quirk). Without duplicates this is the row itself.
    """
    by_name: dict[str, Value] = {}
    for (name, _type), value in zip(columns, row, strict=False):
        by_name[name] = value
    count = min(len(by_name), len(columns))
    return [by_name.get(columns[j][0]) for j in range(count)]


def encode_json_result(columns: Sequence[tuple[str, int]], rows: Sequence[Sequence[Value]]) -> bytes:
    """Return the JSON result the reference server sends for a successful query."""
    if not rows:
        return b'{"result":"OK"}'
    distinct = len({name for name, _ in columns}) == len(columns)
    data: list[list[str | None]] = [[f"{name}:{int(ftype)}" for name, ftype in columns]]
    for row in rows:
        values = list(row[: len(columns)]) if distinct else _row_values(columns, row)
        data.append([encode_value(v) for v in values])
    return vmjson.dumps({"result": "OK", "data_rows": len(rows), "data": data})


def encode_csv_result(columns: Sequence[tuple[str, int]], rows: Sequence[Sequence[Value]]) -> bytes:
    """Return the CSV result (requested with a ``CSV:`` query prefix). No quoting, as the reference."""
    distinct = len({name for name, _ in columns}) == len(columns)
    lines = ["CSV\n" + ",".join(f"{name}:{int(ftype)}" for name, ftype in columns)]
    for row in rows:
        values = list(row[: len(columns)]) if distinct else _row_values(columns, row)
        lines.append(",".join(encode_value(v, csv=True) or "" for v in values))
    return "\n".join(lines).encode("utf-8", "surrogateescape")


def encode_error(code: int, message: str) -> bytes:
    """Return ``{"result":"<code>|<retry>|<message>"}``; retry is 0 only for ER_PARSE_ERROR (1064)."""
    retry = 0 if code == ER_PARSE_ERROR else 1
    return vmjson.dumps({"result": f"{int(code) & 0xFFFFFFFF}|{retry}|{message}"})


def _split_column(text: str) -> tuple[str, int]:
    name, sep, ftype = text.partition(":")
    return (name, vmjson.atoi(ftype)) if sep else (name, 0)


def _decode_json(payload: bytes) -> QueryResult | QueryError:
    obj = vmjson.loads(payload)
    if not isinstance(obj, dict):
        raise RemoteProtocolError("bad query result")
    result = vmjson.text_value(obj.get("result")).strip()
    if result.lower() != "ok":
        code = vmjson.atoi(result) & 0xFFFFFFFF
        first = result.find("|")
        retry, message = 1, result
        if first >= 0:
            second = result.find("|", first + 1)
            if second >= 0:
                retry = vmjson.atoi(result[first + 1 :])
                message = result[second + 1 :]
            else:
                message = result[first + 1 :]
        return QueryError(code, retry, message)
    data = obj.get("data")
    if data is None:
        return QueryResult((), ())
    if not isinstance(data, list) or not all(isinstance(r, list) for r in data):
        raise RemoteProtocolError("bad query result")
    if not data:
        return QueryResult((), ())
    columns = tuple(_split_column(vmjson.text_value(c)) for c in data[0])
    rows = tuple(
        tuple(None if v is None else decode_value(vmjson.text_value(v)) for v in r) for r in data[1:]
    )
    return QueryResult(columns, rows)


def _decode_csv(payload: bytes) -> QueryResult:
    text = payload.decode("utf-8", "surrogateescape")
    lines = text[4:].split("\n")
    columns: tuple[tuple[str, int], ...] = ()
    rows: list[tuple[bytes | None, ...]] = []
    for i, line in enumerate(lines):
        if not line:
            continue  # the reference skips empty lines (but still counts them as rows read)
        cells = line.split(",")
        if i == 0:
            columns = tuple(_split_column(c) for c in cells)
        else:
            rows.append(tuple(decode_value(c) for c in cells))
    return QueryResult(columns, tuple(rows))


def decode_result(payload: bytes) -> QueryResult | QueryError:
    """Parse a (decompressed) query reply as the reference client does.

    A JSON object is a result or an error, text starting with ``CSV`` is a CSV result. Raises
    :class:`RemoteProtocolError` for an empty or unrecognised reply (the client then reconnects).
    """
    payload = bytes(payload)
    if not payload:
        raise RemoteProtocolError("response is empty")
    if payload[:1] == b"{" and payload.rstrip(b"\r\n")[-1:] == b"}":
        return _decode_json(payload)
    if payload[:3] == b"CSV":
        return _decode_csv(payload)
    raise RemoteProtocolError("bad query result")
