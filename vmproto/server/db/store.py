"""Executing store messages (spec §8): the SQL a sensor sends on a `store` connection.

The reference central queues store SQL and later runs it inside a generated stored procedure
(`__insert_<id_main>_<thread>`), because the CDR message (id_main 10) is a procedure fragment:
`set @x = getIdOrInsert...(...); INSERT INTO cdr ...; if row_count() > 0 then ... end if`. vmproto does the
same where it is needed and differs where the reference is weak:

* A message whose SQL is more than one statement, or uses procedure-only syntax (IF ... END IF), runs as
  the body of a generated procedure `vmp_store_<id_main>_<session id>`; a message of single plain
  statements runs them directly (cheaper: no DDL per message).
* Each message is one transaction, committed before `StoreWriter.submit` returns, so the server acks a
  sensor only for SQL that is durable (the reference acks on enqueue).
* Each unit (the single body or one `L<len>:` item) is isolated (spec §8.9 step 3): a permanent SQL error
  rolls back that unit only and is reported in `StoreResult.failed` (the reference, which acks before running
  the SQL, loses such a statement too); a transient one (TRANSIENT_ERRNOS) rolls back the whole message and is
  raised, so the central answers queue-full and the sensor resends.
* Idempotence: the first statement of the transaction inserts (id_sensor, SHA-256 of id_main and the
  queries) into `vmproto_store_applied`. A resent message hits the primary key and is skipped; a
  concurrent duplicate waits on that row lock and is then skipped. The digest covers the queries only,
  not the `T<time>|` prefix, which a sensor refreshes on resend.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import trio

from .connection import Connection, Pool, quote_identifier
from .errors import ConnectionLostError, DatabaseError, SqlError, StoreMessageError
from .tables import STORE_APPLIED_TABLE

__all__ = [
    "StoreMessage",
    "StoreResult",
    "StoreWriter",
    "apply_store_message",
    "message_digest",
    "needs_procedure",
    "procedure_body",
    "split_statements",
]

log = logging.getLogger(__name__)

ER_DUP_ENTRY = 1062
# Errors after which the same SQL can succeed later: the whole message is rolled back and the sensor told to
# retry (spec §8.9 step 5): 1040 too many connections, 1205 lock wait timeout, 1213 deadlock, and missing
# privileges (1044, 1142, 1143, 1370) -- an operator fixes grants; dropping the CDRs meanwhile would lose them.
TRANSIENT_ERRNOS = frozenset({1040, 1044, 1142, 1143, 1205, 1213, 1370})


class _WireStoreMessage(Protocol):
    id_main: int
    queries: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class StoreMessage:
    """One decoded store message: who sent it, its id_main and its queries (the body, or the `L<len>:`
    items, as bytes exactly as received)."""

    id_sensor: int
    id_main: int
    queries: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if not self.queries or not any(q.strip() for q in self.queries):
            raise StoreMessageError("store message has no SQL")
        if not 0 <= self.id_main < 2**31 or not -(2**31) <= self.id_sensor < 2**31:
            raise StoreMessageError(f"store message ids out of range: id_main={self.id_main} id_sensor={self.id_sensor}")

    @classmethod
    def from_wire(cls, message: _WireStoreMessage, id_sensor: int) -> StoreMessage:
        """Build from a decoded wire message (vmproto.wire.store_msg.StoreMessage) and the sender's id."""
        return cls(id_sensor=id_sensor, id_main=message.id_main, queries=tuple(message.queries))

    @property
    def digest(self) -> bytes:
        return message_digest(self.id_main, self.queries)


@dataclass(frozen=True, slots=True)
class StoreResult:
    """Outcome of one message: `applied` False means it had been applied before (a resend)."""

    applied: bool
    procedure: bool
    # Units (index into the message's queries) dropped for a permanent SQL error: (index, errno, message).
    failed: tuple[tuple[int, int, str], ...] = ()


def message_digest(id_main: int, queries: Sequence[bytes]) -> bytes:
    """SHA-256 over id_main and the length-prefixed queries (so item boundaries count)."""
    h = hashlib.sha256(b"vmproto-store-v1\x00%d\x00" % id_main)
    for q in queries:
        h.update(b"%d:" % len(q))
        h.update(q)
    return h.digest()


# Tokens that only make sense inside a stored program.
_PROCEDURAL = re.compile(rb"\b(end\s+if|end\s+while|end\s+loop|declare|elseif|leave|iterate)\b", re.I)


def split_statements(sql: bytes) -> list[bytes]:
    """Split SQL text at top-level semicolons, honouring '...', "...", `...` (with backslash and doubled
    quote escapes) and -- / # / /* */ comments. Returns the non-empty statements, stripped, without `;`.

    Raises StoreMessageError for an unterminated quote or comment.
    """
    out: list[bytes] = []
    start = i = 0
    n = len(sql)
    while i < n:
        c = sql[i]
        if c in b"'\"`":
            i += 1
            while i < n and sql[i] != c:
                i += 2 if sql[i] == 0x5C and c != 0x60 else 1  # backslash escapes, not in `identifiers`
            if i >= n:
                raise StoreMessageError("unterminated quoted string in store SQL")
            i += 1
            continue
        if c == 0x2D and sql[i:i + 2] == b"--" and (i + 2 >= n or sql[i + 2] in b" \t\r\n") or c == 0x23:
            nl = sql.find(b"\n", i)
            i = n if nl < 0 else nl + 1
            continue
        if c == 0x2F and sql[i:i + 2] == b"/*":
            end = sql.find(b"*/", i + 2)
            if end < 0:
                raise StoreMessageError("unterminated comment in store SQL")
            i = end + 2
            continue
        if c == 0x3B:
            stmt = sql[start:i].strip()
            if stmt:
                out.append(stmt)
            start = i + 1
        i += 1
    tail = sql[start:].strip()
    if tail:
        out.append(tail)
    return out


def needs_procedure(queries: Sequence[bytes]) -> bool:
    """True when the queries must run as a procedure body: several statements in one query (a plain
    session has no multi-statement support) or procedural syntax such as IF ... END IF."""
    return any(_PROCEDURAL.search(q) or len(split_statements(q)) > 1 for q in queries)


def procedure_body(queries: Sequence[bytes]) -> bytes:
    """The queries as a procedure body, each unit isolated (spec §8.9 step 3).

    Every unit runs in its own block: a savepoint before it, and an exit handler that, on a permanent error,
    rolls back to the savepoint, appends `<index> <errno> <text>` to the session variable `@vmp_failed` and
    carries on with the next unit. Transient errors (TRANSIENT_ERRNOS) are re-signalled so the whole message
    is rolled back and retried. Each statement ends with `;` (added when missing, as the reference does).
    """
    blocks = []
    transient = ",".join(str(n) for n in sorted(TRANSIENT_ERRNOS))
    for index, q in enumerate(queries):
        q = q.rstrip()
        if not q:
            continue
        stmt = q if q.endswith(b";") else q + b";"
        blocks.append(
            b"BEGIN\n"
            b"DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN\n"
            b"GET DIAGNOSTICS CONDITION 1 @vmp_errno = MYSQL_ERRNO, @vmp_text = MESSAGE_TEXT;\n"
            b"IF @vmp_errno IN (" + transient.encode() + b") THEN RESIGNAL; END IF;\n"
            b"ROLLBACK TO SAVEPOINT vmp_unit;\n"
            b"SET @vmp_failed = CONCAT_WS('\\n', @vmp_failed, CONCAT(" + str(index).encode()
            + b", ' ', @vmp_errno, ' ', @vmp_text));\n"
            b"END;\n"
            b"SAVEPOINT vmp_unit;\n" + stmt + b"\nEND;"
        )
    return b"\n".join(blocks)


def _parse_failed(value: bytes | None) -> tuple[tuple[int, int, str], ...]:
    out = []
    for line in (value or b"").split(b"\n"):
        parts = line.split(b" ", 2)
        if len(parts) == 3 and parts[0].isdigit():
            out.append((int(parts[0]), int(parts[1]) if parts[1].isdigit() else 0,
                        parts[2].decode("utf-8", "replace")))
    return tuple(out)


async def apply_store_message(conn: Connection, message: StoreMessage) -> StoreResult:
    """Execute `message` in one transaction on `conn` and commit it. Returns whether it was applied
    (False: the digest was already recorded). Raises SqlError/PrivilegeError when the SQL fails (nothing
    of the message is kept), ConnectionLostError when the session died (outcome unknown: resubmit; the
    digest makes that safe), StoreMessageError for unusable SQL.
    """
    use_proc = needs_procedure(message.queries)
    units: list[list[bytes]] = []
    failed: list[tuple[int, int, str]] = []
    proc_name = ""
    if use_proc:
        session = (await conn.execute("SELECT CONNECTION_ID()")).rows[0][0] or b"0"
        proc_name = quote_identifier(f"vmp_store_{message.id_main}_{session.decode()}")
        # CREATE/DROP PROCEDURE commit implicitly, so they stay outside the transaction.
        await conn.execute(f"DROP PROCEDURE IF EXISTS {proc_name}", privilege="ALTER ROUTINE")
        await conn.execute(
            b"CREATE PROCEDURE " + proc_name.encode() + b"()\nBEGIN\n" + procedure_body(message.queries)
            + b"\nEND",
            privilege="CREATE ROUTINE",
        )
    else:
        units = [split_statements(q) for q in message.queries]
    applied = False
    await conn.execute("START TRANSACTION")
    try:
        try:
            await conn.execute(
                f"INSERT INTO {quote_identifier(STORE_APPLIED_TABLE.name)} (id_sensor, digest, id_main, applied_at) "
                f"VALUES ({message.id_sensor:d}, x'{message.digest.hex()}', {message.id_main:d}, NOW())",
                privilege="INSERT",
            )
        except SqlError as exc:
            if exc.errno != ER_DUP_ENTRY:
                raise
            log.info("store: sensor %d id_main %d: message already applied, skipped",
                     message.id_sensor, message.id_main)
        else:
            if use_proc:
                await conn.execute("SET @vmp_failed = NULL")
                await conn.execute_all(f"CALL {proc_name}()", privilege="EXECUTE")
                failed = list(_parse_failed((await conn.execute("SELECT @vmp_failed")).rows[0][0]))
            else:
                for index, unit in enumerate(units):
                    await _run_unit(conn, index, unit, failed)
            applied = True
        await conn.execute("COMMIT")
    except BaseException:
        if not conn.broken:
            with trio.CancelScope(shield=True):
                try:
                    await conn.execute("ROLLBACK")
                except DatabaseError:
                    pass
        raise
    finally:
        if use_proc and not conn.broken:
            with trio.CancelScope(shield=True):
                try:
                    await conn.execute(f"DROP PROCEDURE IF EXISTS {proc_name}")
                except DatabaseError as exc:
                    log.warning("store: could not drop %s: %s", proc_name, exc)
    for index, errno, text in failed:
        log.error("store statement failed: id_main %d unit %d errno %d: %s", message.id_main, index, errno, text)
    return StoreResult(applied=applied, procedure=use_proc, failed=tuple(failed))


async def _run_unit(conn: Connection, index: int, statements: list[bytes],
                    failed: list[tuple[int, int, str]]) -> None:
    """Run one unit under a savepoint; a permanent error drops only this unit (spec §8.9 step 3)."""
    if not statements:
        return
    await conn.execute("SAVEPOINT vmp_unit")
    try:
        for stmt in statements:
            await conn.execute(stmt)
    except SqlError as exc:
        if exc.errno in TRANSIENT_ERRNOS:
            raise
        await conn.execute("ROLLBACK TO SAVEPOINT vmp_unit")
        failed.append((index, exc.errno, exc.message))


class StoreWriter:
    """The single writer of one id_main: a bounded queue of messages executed in order on one session.

    Start it with `await nursery.start(writer.run)`. `submit` waits until the message is committed.
    A lost connection is retried (reconnect with back-off: 0.1 s doubling to `max_backoff`) until it
    succeeds or the submitter is cancelled; SQL errors are raised to the submitter.
    """

    def __init__(self, pool: Pool, id_main: int, *, queue_limit: int = 1000, max_backoff: float = 10.0) -> None:
        if queue_limit < 1:
            raise ValueError("queue_limit must be at least 1")
        self.pool = pool
        self.id_main = id_main
        self.queue_limit = queue_limit
        self.max_backoff = max_backoff
        self._send, self._receive = trio.open_memory_channel[tuple[StoreMessage, _Pending]](math.inf)
        self._queued = 0
        self.applied = 0
        self.duplicates = 0
        self._stopped = False

    @property
    def queue_length(self) -> int:
        """Messages submitted and not yet finished (including the one executing)."""
        return self._queued

    @property
    def is_full(self) -> bool:
        """True when the server should answer the sensor with the queue-full reply (spec §8)."""
        return self._queued >= self.queue_limit

    async def submit(self, message: StoreMessage) -> StoreResult:
        """Queue `message` and wait until it is committed (or found already applied).

        Raises StoreMessageError for a message of another id_main, SqlError/PrivilegeError when its SQL
        fails, ConnectionLostError only when the writer stops before it could run.
        """
        if message.id_main != self.id_main:
            raise StoreMessageError(f"message for id_main {message.id_main} sent to writer {self.id_main}")
        if self._stopped:
            raise ConnectionLostError("store writer is stopped")
        pending = _Pending()
        self._queued += 1
        try:
            await self._send.send((message, pending))
            await pending.done.wait()
        finally:
            self._queued -= 1
        if pending.error is not None:
            raise pending.error
        assert pending.result is not None
        return pending.result

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Execute queued messages forever (until cancelled)."""
        task_status.started()
        try:
            async for message, pending in self._receive:
                try:
                    pending.result = await self._execute(message)
                    if pending.result.applied:
                        self.applied += 1
                    else:
                        self.duplicates += 1
                except DatabaseError as exc:
                    log.error("store: sensor %d id_main %d failed: %s", message.id_sensor, message.id_main, exc)
                    pending.error = exc
                except BaseException as exc:
                    pending.error = ConnectionLostError(f"store writer stopped: {exc!r}")
                    pending.done.set()
                    raise
                pending.done.set()
        finally:
            # Submitters still waiting must not hang once the writer is gone.
            self._stopped = True
            while True:
                try:
                    _message, pending = self._receive.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                    break
                pending.error = ConnectionLostError("store writer stopped before the message ran")
                pending.done.set()

    async def _execute(self, message: StoreMessage) -> StoreResult:
        backoff = 0.1
        while True:
            try:
                async with self.pool.connection() as conn:
                    return await apply_store_message(conn, message)
            except ConnectionLostError as exc:
                log.warning("store: id_main %d: %s; retrying in %.1fs", self.id_main, exc, backoff)
                await trio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff)


class _Pending:
    __slots__ = ("done", "error", "result")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.result: StoreResult | None = None
        self.error: BaseException | None = None
