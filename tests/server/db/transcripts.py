"""Reading the recorded store messages and CDR rows of the reference data for the store tests."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from vmproto.server.db.store import StoreMessage
from vmproto.wire.store_msg import decode_store_message


def store_messages(transcript: Path, id_sensor: int) -> list[StoreMessage]:
    """Every client-to-server store message of a transcript, in wire order."""
    out = []
    for line in transcript.read_text().splitlines():
        rec = json.loads(line)
        if rec["type_connection"] == "store" and rec["dir"] == "c2s" and rec.get("store"):
            wire = decode_store_message(rec["text"].encode("utf-8"))
            out.append(StoreMessage.from_wire(wire, id_sensor))
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
