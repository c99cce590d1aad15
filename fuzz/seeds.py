"""Seed inputs for every harness, derived at run time from spec/vectors.toml and from valid dialogues run
with the wire machines themselves (nothing is copied from ../shared).

``seeds(name)`` returns the seeds of one harness in the input encoding that harness reads (see
:mod:`fuzz.source`); ``python -m fuzz.seeds OUTDIR`` (or ``fuzz/run.py --make-corpus``) writes them as files.
"""

from __future__ import annotations

import functools
import hashlib
import string
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vmproto.wire import pbstore, query_result, store_msg, vmjson
from vmproto.wire.compression import Compression, PbCompression, compress, pb_compress
from vmproto.wire.crypto import AesBlockCipher, AesStreamEncryptor, wrap_manager_request
from vmproto.wire.framing import encode_block
from vmproto.wire.opening import CONNECTION_TYPES, encode_opening

from .codec_harnesses import CKEY, IVEC, MANAGER_KEY, NOW
from .machine_harnesses import _TYPES, MACHINE_HARNESSES, Op, Rig, _credentials_fields, _opening_fields
from .source import ScriptWriter

__all__ = ["VECTORS", "seeds", "vector_payloads", "write_corpus"]

VECTORS = Path(__file__).resolve().parents[1] / "spec" / "vectors.toml"
_HEX = frozenset(string.hexdigits)

# Which harness a vector kind feeds (first matching substring wins).
_ROUTES = (
    ("container", "pbstore"),
    ("store_message", "store_msg"),
    ("query_result", "query_result"),
    ("opening", "opening"),
    ("block", "block_reader"),
    ("aes", "aes"),
    ("manager", "aes"),
    ("compress", "decompress"),
    ("detect", "decompress"),
    ("json", "vmjson"),
    ("queue_full", "vmjson"),
    ("constant", "vmjson"),
)


def _strings(value: Any, key: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield key, value
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item, key)
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(v, k)


def _as_bytes(key: str, text: str) -> bytes:
    if (key.endswith("_hex") or (len(text) >= 8 and len(text) % 2 == 0 and set(text) <= _HEX)):
        try:
            return bytes.fromhex(text)
        except ValueError:
            pass
    return text.encode("utf-8")


@functools.cache
def vector_payloads() -> dict[str, tuple[bytes, ...]]:
    """Byte strings of spec/vectors.toml grouped by the harness they feed (empty when the file is missing)."""
    out: dict[str, list[bytes]] = {}
    if not VECTORS.exists():
        return {}
    for vector in tomllib.loads(VECTORS.read_text("utf-8")).get("vector", []):
        kind = vector.get("kind", "")
        target = next((name for sub, name in _ROUTES if sub in kind), None)
        if target is None:
            continue
        for key, text in _strings(vector):
            if key in ("name", "kind", "section", "note", "base"):
                continue
            out.setdefault(target, []).append(_as_bytes(key, text))
    return {k: tuple(v) for k, v in out.items()}


# ------------------------------------------------------------------------------------- valid dialogues


@functools.cache
def dialogue_streams() -> tuple[bytes, ...]:
    """The byte streams both sides write in a complete valid dialogue of every handshake type."""
    streams: list[bytes] = []
    for ctype in _TYPES:
        for role in ("server", "client"):
            rig = Rig(ctype, role)
            log: list[bytes] = []
            write = rig.write

            def recording(machine: Any, data: bytes, write: Any = write, log: list[bytes] = log) -> None:
                log.append(data)
                write(machine, data)

            rig.write = recording  # type: ignore[method-assign]
            rig.start(attached=True)
            streams.append(b"".join(log))
    return tuple(s for s in streams if s)


_SAMPLES = (
    b"10|T2026-04-14 13:57:37|L5:abcde\nL3:xyz\n",
    b'{"result":"OK","data_rows":1,"data":[["id:3","name:253"],["1",null]]}',
    b"CSV\nid:3,name:253\n1,_NULL_",
    b"select * from cdr where id > 1",
    b"",
)


def _codec_seeds(name: str) -> list[bytes]:
    vec = vector_payloads().get(name, ())
    out: list[bytes] = []
    if name == "block_reader":
        for stream in (*vec, *dialogue_streams()):
            out.append(ScriptWriter().choice(3, 4).u8(0).raw(stream).build())
            out.append(ScriptWriter().choice(3, 4).u8(2).u16(7).u16(41).raw(stream).build())
        out.append(ScriptWriter().choice(1, 4).u8(0).raw(encode_block(b"x" * 17)).build())
    elif name == "opening":
        lines = list(vec)
        for ctype in sorted(CONNECTION_TYPES):
            lines.append(encode_opening({"type_connection": ctype, **_opening_fields(ctype)}))
        lines.append(wrap_manager_request(b'{"type_connection":"gui_command","sensor_id":2,"command":"x"}',
                                          MANAGER_KEY))
        lines.append(b'{"type_connection":"response","gui_task_id":"1:2"}\r\n\r\n' + bytes(range(32)))
        for line in lines:
            out.append(ScriptWriter().choice(1, 2).u8(1).u8(0).raw(line).build())
            if len(line) <= 64:  # the small cap (64 bytes), split into two reads
                out.append(ScriptWriter().choice(0, 2).u8(1).u8(1).u16(5).raw(line).build())
    elif name == "aes":
        cipher = AesBlockCipher(CKEY, IVEC)
        for text in (b"OK", b"", b"ping", b"0123456789abcdef", *_SAMPLES):
            out.append(ScriptWriter().u8(0).u8(1).u8(0).u8(0).raw(cipher.encrypt(text)).build())
            enc = AesStreamEncryptor(MANAGER_KEY.key, MANAGER_KEY.iv)
            ct = enc.update(text * 3) + enc.finalize()
            out.append(ScriptWriter().u8(1).u8(1).u8(0).u8(2).u16(5).u16(17).raw(ct).build())
            out.append(ScriptWriter().u8(2).u8(1).u8(0).u8(0)
                       .raw(wrap_manager_request(text or b"x", MANAGER_KEY)).build())
        out.extend(ScriptWriter().u8(0).u8(1).u8(0).u8(0).raw(v).build() for v in vec)
    elif name == "decompress":
        bodies = [*_SAMPLES, b"\0" * (2 << 20), bytes(range(256)) * 64]
        for kind in (Compression.GZIP, Compression.ZSTD, Compression.LZO, Compression.NONE):
            for body in bodies:
                packed = compress(kind, body)
                if len(packed) <= 65536:
                    out.append(ScriptWriter().u8(0).choice(4, 5).u32(0).raw(packed).build())
        for method, parity in ((PbCompression.SNAPPY, 1), (PbCompression.LZ4, 0)):
            for body in bodies[:4]:
                data = body + b"!" * ((len(body) + parity) % 2)
                out.append(ScriptWriter().u8(3).choice(4, 5).u32(len(data)).raw(pb_compress(method, data)).build())
        out.extend(ScriptWriter().u8(0).choice(4, 5).u32(0).raw(v).build() for v in vec)
    elif name == "vmjson":
        out.extend(vec)
        for ctype in _TYPES:
            out.append(vmjson.dumps(_credentials_fields(ctype)))
        out += [b'{"a":[1,[2,[3]]],"b":null,"c":"\\u00e9\\ud83d\\ude00","d":-12abc}', b'["x",1.5e3,true]']
    elif name == "store_msg":
        out.extend(vec)
        out += [store_msg.encode_store_message(store_msg.StoreMessage(10, "2026-04-14 13:57:37", (b"a|b", b"L1:"),
                                                                      batched=True)),
                b"1010|L2:ab\nL-1:rest", b"10|T1|x", b"|", b"10|L5:abc"]
    elif name == "query_result":
        out.extend(vec)
        cols = [("id", 3), ("blob", 252)]
        rows = [[b"1", b"\0\xff,\n"], [None, b"_NULL_"]]
        out += [query_result.encode_json_result(cols, rows), query_result.encode_csv_result(cols, rows),
                query_result.encode_error(1146, "Table 'x' doesn't exist")]
    elif name == "pbstore":
        for raw in vec:
            out.append(ScriptWriter().u8(0).raw(raw).build())
        for method in (None, PbCompression.SNAPPY, PbCompression.LZ4):
            for hm in (0, 1):
                container = pbstore.encode_container([(NOW - 1, 5, b"\x45" * 60), (NOW - 1, 6, b"\x45" * 200)],
                                                     hm=hm, counter=7, time_s=NOW, compress=method)
                out.append(ScriptWriter().u8(0).raw(container).build())
                script = ScriptWriter().u8(1).u8(hm).choice([None, PbCompression.SNAPPY, PbCompression.LZ4]
                                                            .index(method), 3)
                script.choice(1, 6)
                for size in (60, 200):
                    script.blob(b"\x45" * size).u16(5).choice(0, 5)
                script.u16(6).choice(1, 3).u8(1).choice(0, 4).u8(0)
                out.append(script.build())
    return out


def _machine_seeds(name: str) -> list[bytes]:
    ctype = next(t for t in _TYPES if name.startswith(f"conn_{t.replace(' ', '_')}_"))
    role = name.rsplit("_", 1)[1]
    fields = _credentials_fields(ctype)
    out = [ScriptWriter().u8(1).build(), ScriptWriter().u8(0).build()]
    # The whole dialogue from structured ops (peer detached): opening, credentials, then data of each kind.
    opening_fields = {"type_connection": ctype, **_opening_fields(ctype)}
    canonical = ScriptWriter().u8(0)
    if role == "server":
        canonical.u8(Op.OPENING).u8(len(opening_fields)).blob(b"").u8(0)
        canonical.u8(Op.CREDENTIALS).u8(len(fields)).blob(b"")
    else:
        canonical.u8(Op.RSA_KEY).u8(1).blob(b"").u8(0)
        canonical.u8(Op.PLAIN).blob(b"OK" if ctype != "store" else store_msg.STORE_CONNECT_REPLY)
    prefix = canonical.build()
    data_ops = [
        ScriptWriter().u8(Op.AES).blob(b"OK"),
        ScriptWriter().u8(Op.AES).blob(b"ping"),
        ScriptWriter().u8(Op.PLAIN).blob(b"ping"),
        ScriptWriter().u8(Op.PLAIN).blob(b"pong"),
        ScriptWriter().u8(Op.STORE).u8(1).blob(b"10").blob(b"L5:abcde\nL3:xyz\n"),
        ScriptWriter().u8(Op.COMPRESSED).u8(3).blob(b"select 1").u8(1),
        ScriptWriter().u8(Op.BOMB).u8(0).u8(1).u8(1),
        ScriptWriter().u8(Op.BOMB).u8(1).u8(2).u8(0),
        ScriptWriter().u8(Op.CONTAINER).u8(0).u8(1).u8(0).blob(b"\x45" * 80).u16(1).u8(0).u16(3).u8(1).u8(1)
        .u8(2).u8(3).u8(0).u32(0xFFFFFFFF).u8(0),
        ScriptWriter().u8(Op.AES).blob(b"1:2#output"),
        ScriptWriter().u8(Op.TIME).u16(4 * 6),
        ScriptWriter().u8(Op.BIG_HEADER).u32(0xFFFFFFFF).blob(b"x"),
        ScriptWriter().u8(Op.RSA).u16(256).blob(b"\x01"),
        ScriptWriter().u8(Op.PEER).u8(0).blob(b"select 1"),
        ScriptWriter().u8(Op.EOF),
    ]
    for op in data_ops:
        out.append(prefix + op.build())
        out.append(ScriptWriter().u8(1).build() + op.build())
    out.append(prefix + b"".join(op.build() for op in data_ops))
    out.append(ScriptWriter().u8(1).u8(Op.PEER).u8(3).blob(b"payload").u8(Op.PEER).u8(1).blob(b"x").build())
    return out


def seeds(name: str) -> list[bytes]:
    """Return the seed inputs of harness ``name`` (deduplicated, in a stable order)."""
    raw = _machine_seeds(name) if name in MACHINE_HARNESSES else _codec_seeds(name)
    return list(dict.fromkeys(raw))


def write_corpus(root: Path, names: list[str]) -> int:
    """Write the seeds of ``names`` to ``root/<name>/<sha1>``; return how many files were new."""
    new = 0
    for name in names:
        directory = root / name
        directory.mkdir(parents=True, exist_ok=True)
        for seed in seeds(name):
            path = directory / hashlib.sha1(seed).hexdigest()
            if not path.exists():
                path.write_bytes(seed)
                new += 1
    return new


if __name__ == "__main__":  # pragma: no cover - manual use
    from .harnesses import HARNESSES

    count = write_corpus(Path(sys.argv[1] if len(sys.argv) > 1 else "fuzz/corpus"), list(HARNESSES))
    print(f"{count} new seed files")
