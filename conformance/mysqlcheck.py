"""Database-side checks for --mysql (what landed in the central's database), through trio_mysql."""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

from .model import CaseFailed

__all__ = ["DsnError", "count_rows", "parse_dsn"]


class DsnError(ValueError):
    """The --mysql value is not mysql://user:pass@host:port/db or mysql://user:pass@/db?unix_socket=PATH."""


def parse_dsn(dsn: str) -> dict[str, object]:
    """Return trio_mysql.connect keyword arguments for a DSN. Raises DsnError."""
    parts = urlsplit(dsn)
    if parts.scheme != "mysql" or not parts.path.strip("/"):
        raise DsnError(f"expected mysql://user:pass@host:port/db, got {dsn!r}")
    kw: dict[str, object] = {"user": unquote(parts.username or "root"), "password": unquote(parts.password or ""),
                             "db": parts.path.strip("/")}
    query = dict(p.split("=", 1) for p in parts.query.split("&") if "=" in p)
    if "unix_socket" in query:
        kw["unix_socket"] = unquote(query["unix_socket"])
    else:
        kw["host"] = parts.hostname or "127.0.0.1"
        kw["port"] = parts.port or 3306
    return kw


async def count_rows(dsn: str, table: str, value: str) -> int:
    """COUNT(*) of rows of `table` whose column v equals `value`. Raises CaseFailed on database errors."""
    import trio_mysql

    if not re.fullmatch(r"\w+", table):
        raise CaseFailed(f"bad table name {table!r}")
    try:
        conn = trio_mysql.connect(**parse_dsn(dsn))
        await conn.connect()
        try:
            async with conn.cursor() as cur:
                await cur.execute(f"SELECT COUNT(*) FROM {table} WHERE v = %s", (value,))
                row = await cur.fetchone()
        finally:
            await conn.aclose()
    except DsnError:
        raise
    except Exception as exc:  # trio_mysql raises its own error tree plus OSError
        raise CaseFailed(f"--mysql check failed: {exc}") from None
    return int(row[0])
