"""The JSON dialect of the reference (spec §4).

Writing: compact, keys in insertion order, strings escape only ``\\ " / \\b \\f \\n \\r \\t``
(other control bytes and non-ASCII go out raw, never as ``\\u``), booleans are the numbers 1/0.
Reading: like the reference's json-c wrapper -- trailing CR/LF ignored, the text must start with
``{``/``[`` and end with ``}``/``]``, raw control characters inside strings are accepted.

Bytes that are not UTF-8 survive a round trip: text is decoded with ``surrogateescape``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from .errors import LocalProtocolError, RemoteProtocolError

__all__ = ["atoi", "dumps", "escape", "loads", "text_value"]

_ESCAPES = {
    ord("\\"): "\\\\",
    ord('"'): '\\"',
    ord("/"): "\\/",
    ord("\b"): "\\b",
    ord("\f"): "\\f",
    ord("\n"): "\\n",
    ord("\r"): "\\r",
    ord("\t"): "\\t",
}
_DECODER = json.JSONDecoder(strict=False)
# json-c refuses nesting deeper than 32; deeper input is hostile, and it also protects Python's stack.
_MAX_DEPTH = 32


def escape(text: str) -> str:
    """Return ``text`` escaped the reference's way (without the surrounding quotes).

    Raises :class:`LocalProtocolError` for a NUL character: the reference handles C strings and
    cannot send one.
    """
    if "\0" in text:
        raise LocalProtocolError("JSON strings of this protocol cannot contain NUL")
    return text.translate(_ESCAPES)


def _text(value: str | bytes | bytearray | memoryview) -> str:
    if isinstance(value, str):
        return value
    return bytes(value).decode("utf-8", "surrogateescape")


def _emit(obj: Any, out: list[str], depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise LocalProtocolError("JSON nesting too deep")
    if obj is None:
        out.append("null")
    elif obj is True:
        out.append("1")
    elif obj is False:
        out.append("0")
    elif isinstance(obj, int):
        out.append(str(int(obj)))
    elif isinstance(obj, str | bytes | bytearray | memoryview):
        out.append('"' + escape(_text(obj)) + '"')
    elif isinstance(obj, float):
        if not math.isfinite(obj):
            raise LocalProtocolError(f"cannot encode {obj!r} in JSON")
        # C++ ostream default formatting of a double: %g with 6 significant digits.
        out.append(f"{obj:g}")
    elif isinstance(obj, Mapping):
        out.append("{")
        first = True
        for key, value in obj.items():
            if not isinstance(key, str | bytes):
                raise LocalProtocolError(f"JSON object keys must be strings, not {type(key).__name__}")
            if not first:
                out.append(",")
            first = False
            out.append('"' + escape(_text(key)) + '":')
            _emit(value, out, depth + 1)
        out.append("}")
    elif isinstance(obj, list | tuple):
        out.append("[")
        for i, value in enumerate(obj):
            if i:
                out.append(",")
            _emit(value, out, depth + 1)
        out.append("]")
    else:
        raise LocalProtocolError(f"cannot encode {type(obj).__name__} in JSON")


def dumps(obj: Any) -> bytes:
    """Encode ``obj`` in the reference dialect and return the UTF-8 bytes.

    Accepts dict (str keys), list/tuple, str, bytes (sent raw), int, bool (1/0), float, None.
    Raises :class:`LocalProtocolError` for anything else, NaN/inf, NUL in strings.
    """
    out: list[str] = []
    _emit(obj, out, 0)
    return "".join(out).encode("utf-8", "surrogateescape")


def _depth_ok(text: str) -> bool:
    # Cheap upper bound: brackets inside strings count too, so only texts with many brackets get
    # the exact (slower) scan.
    if text.count("[") + text.count("{") <= _MAX_DEPTH:
        return True
    depth = 0
    in_str = esc = False
    for ch in text:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            if depth > _MAX_DEPTH:
                return False
        elif ch in "]}":
            depth -= 1
    return True


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    """Parse one JSON object or array the way the reference's JsonItem::parse accepts it.

    Trailing CR/LF are ignored; the text must then start with ``{``/``[`` and end with ``}``/``]``.
    Like json-c, text after the first complete value is ignored. Returns the Python value (strings
    may hold surrogate escapes for non-UTF-8 bytes). Raises :class:`RemoteProtocolError` ``"bad json"``.
    """
    text = _text(data).rstrip("\r\n")
    if not text or (text[0], text[-1]) not in (("{", "}"), ("[", "]")):
        raise RemoteProtocolError("bad json")
    if not _depth_ok(text):
        raise RemoteProtocolError("bad json")
    try:
        value, _end = _DECODER.raw_decode(text)
    except (ValueError, RecursionError):
        raise RemoteProtocolError("bad json") from None
    return value


def text_value(value: Any) -> str:
    """Return the text json-c's ``json_object_get_string`` gives for a parsed value.

    Strings as they are, numbers in decimal, booleans ``true``/``false``, ``None`` as ``""`` (the
    reference's getValue of a null or missing field), objects/arrays as compact JSON.
    """
    if value is None:
        return ""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


_INT_MIN, _INT_MAX = -(1 << 31), (1 << 31) - 1
_LONG_MIN, _LONG_MAX = -(1 << 63), (1 << 63) - 1
# 10**19 > LONG_MAX: a run of more significant digits than this saturates without being converted. This keeps
# the conversion cost bounded and stays clear of Python's int-from-string digit limit (4 300 digits by default),
# which would otherwise raise ValueError on a long digit run from the peer.
_LONG_DIGITS = len(str(_LONG_MAX))


def _to_c_int(number: int) -> int:
    # glibc: strtol saturates to 64 bits, then atoi's cast keeps the low 32 bits, signed.
    number = max(_LONG_MIN, min(_LONG_MAX, number))
    number &= 0xFFFFFFFF
    return number - (1 << 32) if number > _INT_MAX else number


def atoi(value: Any) -> int:
    """C ``atoi`` applied to the text form of a parsed JSON value (how the reference reads flags).

    ``"1"`` -> 1, ``2`` -> 2, ``"12abc"`` -> 12, ``"true"``/``True`` -> 0, ``None`` -> 0. glibc's
    atoi is ``(int)strtol``: saturate to 64 bits, then keep the low 32 bits, signed. Any digit run,
    however long, is accepted: past 19 significant digits the value saturates at once (``LONG_MAX`` /
    ``LONG_MIN``, so the result is -1 / 0) without converting the digits. Never raises.
    """
    if type(value) is int:  # a Python int from a caller: no text round trip (str() of a huge int raises)
        return _to_c_int(value)
    text = text_value(value)
    i, n = 0, len(text)
    while i < n and text[i] in " \t\n\v\f\r":
        i += 1
    sign = 1
    if i < n and text[i] in "+-":
        sign = -1 if text[i] == "-" else 1
        i += 1
    start = i
    while i < n and text[i] == "0":
        i += 1
    first = i  # first significant digit
    while i < n and "0" <= text[i] <= "9":
        i += 1
    if i == start:
        return 0
    if i - first > _LONG_DIGITS:
        return _to_c_int(sign * (_LONG_MAX + 1))
    return _to_c_int(sign * int(text[first:i] or "0"))
