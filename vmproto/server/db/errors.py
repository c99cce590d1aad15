"""Errors of the central server's database layer.

Every failure that leaves vmproto.server.db is one of these, never a trio_mysql or socket exception, so the
server can decide per type: retry later (ConnectionLostError), tell the operator what to grant
(PrivilegeError), or report an SQL error to the sensor (SqlError).
"""

from __future__ import annotations

__all__ = [
    "ConnectionLostError",
    "DatabaseError",
    "PrivilegeError",
    "SchemaError",
    "SqlError",
    "StoreMessageError",
]

# MySQL/MariaDB server error numbers we treat specially (mysqld_error.h).
ER_DBACCESS_DENIED = 1044
ER_ACCESS_DENIED = 1045
ER_TABLEACCESS_DENIED = 1142
ER_COLUMNACCESS_DENIED = 1143
ER_PROCACCESS_DENIED = 1370
ER_SPECIFIC_ACCESS_DENIED = 1227
ER_PARSE_ERROR = 1064
ER_SP_ALREADY_EXISTS = 1304
ER_SP_DOES_NOT_EXIST = 1305
# Client-side error numbers (errmsg.h): the connection is gone, the statement may not have run.
CR_CONNECTION_ERROR = 2002
CR_CONN_HOST_ERROR = 2003
CR_SERVER_GONE_ERROR = 2006
CR_SERVER_LOST = 2013
LOST_CONNECTION_CODES = frozenset({CR_CONNECTION_ERROR, CR_CONN_HOST_ERROR, CR_SERVER_GONE_ERROR, CR_SERVER_LOST})


class DatabaseError(Exception):
    """Base of the database layer's errors. `errno` is the server or client error number (0 if none)."""

    def __init__(self, message: str, errno: int = 0) -> None:
        super().__init__(message)
        self.errno = errno
        self.message = message


class ConnectionLostError(DatabaseError):
    """The server could not be reached or the connection broke; the statement's outcome is unknown."""


class SqlError(DatabaseError):
    """The server rejected a statement. `errno` and `message` are the server's own."""


class PrivilegeError(DatabaseError):
    """The account lacks a privilege. `privilege` names it (e.g. "CREATE ROUTINE"), `user` and `database` say
    for whom and where, so the message tells the operator exactly what to GRANT."""

    def __init__(self, privilege: str, user: str, database: str, detail: str, errno: int = 0) -> None:
        message = f"{privilege} privilege missing for user {user} on db {database} ({detail})"
        super().__init__(message, errno)
        self.privilege = privilege
        self.user = user
        self.database = database


class SchemaError(DatabaseError):
    """The schema could not be created or upgraded (a step failed for a reason other than a privilege)."""


class StoreMessageError(DatabaseError):
    """A store message is not usable (empty, no `|`, bad `L<len>:` items); it is never executed."""
