"""Test-only decoding of the recorded store messages (the protocol decoder proper is vmproto.wire's)."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

from vmproto.server.db.store import StoreMessage

_TIME = re.compile(rb"^T\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\|")


def parse_store_text(raw: bytes, id_sensor: int) -> StoreMessage:
    """`<id_main>|[T<time>|]<body>`; the body is one query or `L<len>:<query>\\n` items."""
    head, _, rest = raw.partition(b"|")
    rest = _TIME.sub(b"", rest, count=1)
    queries = []
    if re.match(rb"^L\d", rest):
        pos = 0
        while pos < len(rest):
            assert rest[pos:pos + 1] == b"L", rest[pos:pos + 20]
            colon = rest.index(b":", pos)
            length = int(rest[pos + 1:colon])
            queries.append(rest[colon + 1:colon + 1 + length])
            pos = colon + 1 + length + 1  # the "\n" separator is not counted in the length
    else:
        queries.append(rest)
    return StoreMessage(id_sensor=id_sensor, id_main=int(head), queries=tuple(queries))


def store_messages(transcript: Path, id_sensor: int) -> list[StoreMessage]:
    """Every client-to-server store message of a transcript, in wire order."""
    out = []
    for line in transcript.read_text().splitlines():
        rec = json.loads(line)
        if rec["type_connection"] == "store" and rec["dir"] == "c2s" and rec.get("store"):
            out.append(parse_store_text(rec["text"].encode("utf-8"), id_sensor))
    return out


def expected_rows(tsv: Path) -> dict[str, list[dict[str, str | None]]]:
    """{table: [{column: value or None}]} from a reference cdr/<s>.tsv (long format, \\N = NULL)."""
    rows: dict[str, dict[int, dict[str, str | None]]] = {}
    with tsv.open(newline="") as f:
        for rec in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            table = rec["table"].removesuffix(" (lookup)")
            value = None if rec["value"] == "\\N" else rec["value"]
            rows.setdefault(table, {}).setdefault(int(rec["row"]), {})[rec["column"]] = value
    return {t: [r[i] for i in sorted(r)] for t, r in rows.items()}
