"""Stored functions the reference sensors' SQL calls, with vmproto's own bodies.

The store SQL of a sensor resolves lookup values to ids inline, e.g.
`set @uaA_id = getIdOrInsertUA('ref-pcap-gen');`. Each function returns the id of the lookup row holding
the value, inserting it first when it is new. Signatures (names, parameter types, return type) follow the
reference database; the bodies are ours:

* a plain read first, because nearly every call finds an existing row;
* then `INSERT IGNORE` (the lookup tables have a unique key on the value, so two writers racing to add the
  same value end up with one row) and a locking read, which sees the row even when another transaction
  committed it after ours started;
* NULL in gives NULL out, rather than adding a NULL row per call.
"""

from __future__ import annotations

from dataclasses import dataclass

from .connection import quote_identifier as q

__all__ = ["LOOKUP_FUNCTIONS", "LookupFunction", "create_function_sql"]


@dataclass(frozen=True, slots=True)
class LookupFunction:
    """getIdOrInsert<suffix>(...): the id of `value_column` = val in `table` (plus `type_column` = the
    first argument for the two-key cdr_reason table)."""

    name: str
    table: str
    value_column: str
    charset: str = "latin1"
    type_column: str | None = None


LOOKUP_FUNCTIONS: tuple[LookupFunction, ...] = (
    LookupFunction("getIdOrInsertUA", "cdr_ua", "ua"),
    LookupFunction("getIdOrInsertSIPRES", "cdr_sip_response", "lastSIPresponse"),
    LookupFunction("getIdOrInsertSIPREQUEST", "cdr_sip_request", "request"),
    LookupFunction("getIdOrInsertREASON", "cdr_reason", "reason", type_column="type"),
    LookupFunction("getIdOrInsertCONTENTTYPE", "contenttype", "contenttype", charset="utf8mb3"),
)


def create_function_sql(fn: LookupFunction) -> str:
    """Return the CREATE FUNCTION statement for `fn` (no DELIMITER needed: one statement per call)."""
    params = f"val VARCHAR(255) CHARACTER SET {fn.charset}"
    match = f"{q(fn.value_column)} = val"
    columns, values = q(fn.value_column), "val"
    if fn.type_column:
        params = "type_input TINYINT, " + params
        match = f"{q(fn.type_column)} <=> type_input AND " + match
        columns, values = f"{q(fn.type_column)}, {columns}", "type_input, val"
    table = q(fn.table)
    return (
        f"CREATE FUNCTION {q(fn.name)}({params}) RETURNS INT DETERMINISTIC MODIFIES SQL DATA\n"
        "BEGIN\n"
        "  DECLARE found_id INT DEFAULT NULL;\n"
        "  IF val IS NULL THEN\n"
        "    RETURN NULL;\n"
        "  END IF;\n"
        f"  SELECT id INTO found_id FROM {table} WHERE {match} LIMIT 1;\n"
        "  IF found_id IS NULL THEN\n"
        f"    INSERT IGNORE INTO {table} ({columns}) VALUES ({values});\n"
        f"    SELECT id INTO found_id FROM {table} WHERE {match} LIMIT 1 LOCK IN SHARE MODE;\n"
        "  END IF;\n"
        "  RETURN found_id;\n"
        "END"
    )
