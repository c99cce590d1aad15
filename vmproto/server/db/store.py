"""Executing store messages (spec §8): the SQL a sensor sends on a `store` connection.

The reference central queues store SQL and later runs it inside a generated stored procedure
(`__insert_<id_main>_<thread>`), because the CDR message (id_main 10) is a procedure fragment:
`set @x = getIdOrInsert...(...); INSERT INTO cdr ...; if row_count() > 0 then ... end if`. vmproto runs the
same SQL as an anonymous compound statement (`BEGIN NOT ATOMIC ... END`), which needs no DDL: creating and
dropping a procedure per message costs two implicit commits and a write to the routine catalogue each.

* Each message is one transaction, committed before `StoreWriter.submit` returns, so the server acks a
  sensor only for SQL that is durable (the reference acks on enqueue). START TRANSACTION, the dedup record,
  the units and COMMIT travel as one multi-statement batch: one round trip for a message of up to
  ROUND_TRIP_BYTES of SQL.
* Each unit (the single body or one `L<len>:` item) is isolated (spec §8.9 step 3) in its own block with a
  savepoint and an exit handler: a permanent SQL error rolls back that unit only and is reported in
  `StoreResult.failed` (the reference, which acks before running the SQL, loses such a statement too); a
  transient one (TRANSIENT_ERRNOS) rolls back the whole message and is raised, so the central answers
  queue-full and the sensor resends. A unit the server cannot parse fails the whole compound statement
  before anything runs; the message is then run again unit by unit so only that unit is dropped.
* Idempotence: the first statement of the transaction inserts (id_sensor, SHA-256 of id_main and the
  queries) into `vmproto_store_applied`. A resent message hits the primary key and is skipped; a
  concurrent duplicate waits on that row lock and is then skipped. The digest covers the queries only,
  not the `T<time>|` prefix, which a sensor refreshes on resend.
* `StoreWriter` runs several sessions per id_main, so one message's fsync overlaps the next one's work.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import trio

from .connection import BatchResult, Connection, Pool, quote_identifier
from .errors import ConnectionLostError, DatabaseError, PrivilegeError, SqlError, StoreMessageError
from .tables import STORE_APPLIED_TABLE

__all__ = [
    "StoreMessage",
    "StoreResult",
    "StoreWriter",
    "TransientStoreError",
    "apply_store_message",
    "is_transient",
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
    """Outcome of one message: `applied` False means it had been applied before (a resend); `procedure` that
    its SQL is procedural (several statements or IF ... END IF in a unit, see needs_procedure)."""

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
    """True when the queries are procedural: several statements in one query, or procedural syntax such as
    IF ... END IF. (Every message runs as a compound statement; this only classifies it, see
    StoreResult.procedure.)"""
    for q in queries:
        if _PROCEDURAL.search(q):
            return True
        # Without a `;` before the trailing ones there is at most one statement: skip the (slow) splitter.
        if b";" in q.rstrip(b" \t\r\n;") and len(split_statements(q)) > 1:
            return True
    return False


def _unit_block(index: int, query: bytes) -> bytes:
    """One unit as a block of a compound statement, isolated (spec §8.9 step 3): a savepoint before it, and
    an exit handler that on a permanent error rolls back to the savepoint, appends `<index> <errno>
    <length>:<text>` to the session variable `@vmp_failed` and lets the next unit run. Transient errors
    (TRANSIENT_ERRNOS) are re-signalled so the whole message is rolled back and retried. The statement gets
    the `;` the reference also adds when missing."""
    q = query.rstrip()
    stmt = q if q.endswith(b";") else q + b";"
    return (
        b"BEGIN\n"
        b"DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN\n"
        b"GET DIAGNOSTICS CONDITION 1 @vmp_errno = MYSQL_ERRNO, @vmp_text = MESSAGE_TEXT;\n"
        b"IF @vmp_errno IN (" + _TRANSIENT_LIST + b") THEN RESIGNAL; END IF;\n"
        b"ROLLBACK TO SAVEPOINT vmp_unit;\n"
        b"SET @vmp_failed = CONCAT(IFNULL(@vmp_failed, ''), '" + b"%d" % index
        + b" ', @vmp_errno, ' ', LENGTH(@vmp_text), ':', @vmp_text);\n"
        b"END;\n"
        b"SAVEPOINT vmp_unit;\n" + stmt + b"\nEND;"
    )


_TRANSIENT_LIST = ",".join(str(n) for n in sorted(TRANSIENT_ERRNOS)).encode()


def procedure_body(queries: Sequence[bytes]) -> bytes:
    """The queries as the body of a compound statement, each unit in its own isolated block (see
    `_unit_block`); empty units are left out."""
    return b"\n".join(_unit_block(i, q) for i, q in enumerate(queries) if q.strip())


def _parse_failed(value: bytes | None) -> list[tuple[int, int, str]]:
    """Decode `@vmp_failed`: repeated `<index> <errno> <length>:<text>` (length-prefixed, so a message text
    may hold any byte). Stops at the first malformed record."""
    out: list[tuple[int, int, str]] = []
    data = value or b""
    pos = 0
    while pos < len(data):
        m = _FAILED_RECORD.match(data, pos)
        if m is None:
            log.warning("store: cannot decode unit failures at %r", data[pos:pos + 40])
            break
        start = m.end()
        end = start + int(m.group(3))
        out.append((int(m.group(1)), int(m.group(2)), data[start:end].decode("utf-8", "replace")))
        pos = end
    return out


_FAILED_RECORD = re.compile(rb"(\d+) (\d+) (\d+):")

# SQL text per round trip: large enough that the per-round-trip cost vanishes, far below MariaDB's default
# max_allowed_packet (16 MiB), so a large message is sent as several compound statements.
ROUND_TRIP_BYTES = 1 << 20
# Alias of the failed-units read-back; unusual enough not to be a column some unit SELECTs.
_FAILED_ALIAS = b"vmp_failed_units"
_ER_NET_PACKET_TOO_LARGE = 1153


class TransientStoreError(SqlError):
    """The message was rolled back as a whole and may succeed when resent (spec §8.9 step 5): a deadlock,
    lock wait timeout or missing privilege in a unit, or a failed START TRANSACTION / COMMIT."""


def is_transient(exc: BaseException) -> bool:
    """True when a failure of `apply_store_message` / `StoreWriter.submit` means "resend later" (queue-full
    reply), False for a permanent error (the message is acknowledged and logged, as the reference does)."""
    if isinstance(exc, ConnectionLostError | PrivilegeError | TransientStoreError):
        return True
    return isinstance(exc, SqlError) and exc.errno in TRANSIENT_ERRNOS


def _transient(error: SqlError | PrivilegeError, what: str) -> DatabaseError:
    if isinstance(error, PrivilegeError) or isinstance(error, TransientStoreError):
        return error
    return TransientStoreError(f"{what}: {error.message}", error.errno)


async def apply_store_message(conn: Connection, message: StoreMessage) -> StoreResult:
    """Execute `message` in one transaction on `conn` and commit it (spec §8.9).

    The dedup record, every unit (each in its own isolated block) and the COMMIT go to the server as one
    multi-statement batch of compound statements: one round trip for a message up to ROUND_TRIP_BYTES, no
    DDL. Should a block fail as a whole (a unit the server cannot even parse), the message is rolled back and
    run again unit by unit, so only the bad unit is dropped. The session is left in multi-statement mode
    (the Pool switches it back for other borrowers).

    Returns whether it was applied (False: the digest was already recorded) and the units dropped for a
    permanent error. Raises TransientStoreError / PrivilegeError (nothing of the message is kept: resend),
    ConnectionLostError when the session died (outcome unknown: resubmit; the digest makes that safe).
    """
    procedural = needs_procedure(message.queries)
    await conn.set_multi_statements(True)
    limit = await _unit_limit(conn)
    failed: list[tuple[int, int, str]] = []
    blocks: list[tuple[int, bytes]] = []  # (unit index, its block)
    for index, query in enumerate(message.queries):
        if not query.strip():
            continue
        if len(query) > limit:
            # The server would drop the connection (and the writer resend forever): this unit cannot run.
            failed.append((index, _ER_NET_PACKET_TOO_LARGE, f"unit of {len(query)} bytes exceeds max_allowed_packet"))
            continue
        blocks.append((index, _unit_block(index, query)))
    try:
        outcome = await _run_fast(conn, message, blocks)
        if outcome is _Fallback:
            log.warning("store: id_main %d: a unit failed to compile; running the message unit by unit",
                        message.id_main)
            outcome = await _run_unit_by_unit(conn, message, blocks)
    except BaseException:
        if not conn.broken:
            with trio.CancelScope(shield=True):
                try:
                    await conn.execute("ROLLBACK")
                except DatabaseError:
                    pass
        raise
    if outcome is None:
        log.info("store: sensor %d id_main %d: message already applied, skipped", message.id_sensor, message.id_main)
        return StoreResult(applied=False, procedure=procedural)
    failed = sorted(failed + outcome)
    for index, errno, text in failed:
        log.error("store statement failed: id_main %d unit %d errno %d: %s", message.id_main, index, errno, text)
    return StoreResult(applied=True, procedure=procedural, failed=tuple(failed))


class _Fallback:
    """Marker: the fast path hit an error no unit handler caught; run unit by unit."""


async def _unit_limit(conn: Connection) -> int:
    value = await conn.variable("max_allowed_packet")
    # Room for the unit's block wrapper and the statements around it.
    return max(0, int(value or 16 << 20) - 4096)


def _chunks(blocks: list[tuple[int, bytes]]) -> list[list[bytes]]:
    chunks: list[list[bytes]] = [[]]
    size = 0
    for _index, block in blocks:
        if chunks[-1] and size + len(block) > ROUND_TRIP_BYTES:
            chunks.append([])
            size = 0
        chunks[-1].append(block)
        size += len(block)
    return chunks


def _begin_sql(message: StoreMessage) -> bytes:
    # START, dedup record, reset of the failure list: exactly one result each, so the number of results
    # before an error tells which failed.
    return (b"START TRANSACTION;\nINSERT INTO " + quote_identifier(STORE_APPLIED_TABLE.name).encode()
            + b" (id_sensor, digest, id_main, applied_at) VALUES (%d, x'%s', %d, NOW());\nSET @vmp_failed = NULL;\n"
            % (message.id_sensor, message.digest.hex().encode(), message.id_main))


_END_SQL = b"SELECT @vmp_failed AS " + _FAILED_ALIAS + b";\nCOMMIT"


def _check_begin(batch: BatchResult) -> bool | None:
    """After a batch that starts with _begin_sql: None = duplicate (dedup key exists), True = the three
    opening statements ran. Raises for a failed START (transient) or another dedup-insert error."""
    if batch.error is not None and len(batch.results) < 3:
        if len(batch.results) == 1 and batch.error.errno == ER_DUP_ENTRY:
            return None
        if len(batch.results) == 0:
            raise _transient(batch.error, "START TRANSACTION failed")
        raise batch.error
    return True


def _failed_of(batch: BatchResult) -> list[tuple[int, int, str]] | None:
    """The decoded failure list if the batch reached the SELECT of _END_SQL, else None."""
    for result in batch.results:
        if result.columns and result.columns[0][0] == _FAILED_ALIAS.decode():
            return _parse_failed(result.rows[0][0])
    return None


async def _run_fast(conn: Connection, message: StoreMessage,
                    blocks: list[tuple[int, bytes]]) -> list[tuple[int, int, str]] | type[_Fallback] | None:
    """The whole message as compound statements: returns the unit failures after COMMIT, None for a
    duplicate, _Fallback (transaction still open) when a block failed as a whole."""
    chunks = _chunks(blocks)
    for n, chunk in enumerate(chunks):
        parts = []
        if n == 0:
            parts.append(_begin_sql(message))
        if chunk:
            parts.append(b"BEGIN NOT ATOMIC\n" + b"\n".join(chunk) + b"\nEND;\n")
        if n == len(chunks) - 1:
            parts.append(_END_SQL)
        batch = await conn.execute_batch(b"".join(parts))
        if n == 0 and _check_begin(batch) is None:
            await conn.execute_batch(b"ROLLBACK")
            return None
        if batch.error is None:
            continue
        if n == len(chunks) - 1 and _failed_of(batch) is not None:
            raise _transient(batch.error, "COMMIT failed")
        if is_transient(batch.error):
            raise _transient(batch.error, "unit failed")
        return _Fallback
    return _failed_of(batch) or []


async def _run_unit_by_unit(conn: Connection, message: StoreMessage,
                            blocks: list[tuple[int, bytes]]) -> list[tuple[int, int, str]] | None:
    """Slow path: a fresh transaction, one round trip per unit; a unit whose block fails as a whole is
    recorded as failed and the others run. Returns the failures, None for a duplicate."""
    await conn.execute_batch(b"ROLLBACK")
    begin = await conn.execute_batch(_begin_sql(message))
    if _check_begin(begin) is None:
        await conn.execute_batch(b"ROLLBACK")
        return None
    failed: list[tuple[int, int, str]] = []
    for index, block in blocks:
        # Our own savepoint first: the one a unit's block sets is not reached when the block fails to
        # compile, and rolling back to the previous unit's would undo that unit.
        batch = await conn.execute_batch(b"SAVEPOINT vmp_unit;\nBEGIN NOT ATOMIC\n" + block + b"\nEND")
        if batch.error is None:
            continue
        if is_transient(batch.error) or not batch.results:
            raise _transient(batch.error, "unit failed")
        failed.append((index, batch.error.errno, batch.error.message))
        # A parse error ran nothing; anything else may have run part of the unit before failing.
        undo = await conn.execute_batch(b"ROLLBACK TO SAVEPOINT vmp_unit")
        if undo.error is not None:
            raise _transient(undo.error, "rollback of a failed unit failed")
    end = await conn.execute_batch(_END_SQL)
    if end.error is not None:
        raise _transient(end.error, "COMMIT failed")
    return failed + (_failed_of(end) or [])



# Transient errors the writer retries itself before telling the sensor to resend: the transaction was rolled
# back, and running it again a moment later usually succeeds (concurrent writers touching the same lookup rows).
_RETRY_IN_WRITER = frozenset({1205, 1213})
_WRITER_RETRIES = 3


class StoreWriter:
    """The writers of one id_main: a queue of messages executed by `sessions` tasks, each on its own pooled
    session, so commits overlap (InnoDB group commit) while one message waits for its fsync.

    Order: messages of one store connection are strictly sequential (one in flight, spec §8.1), so running
    different connections' messages in parallel changes no order the protocol defines; a resend racing its
    original blocks on the dedup row lock and is then skipped (spec §8.9 step 2).

    Start it with `await nursery.start(writer.run)`. `submit` waits until the message is committed.
    A lost connection is retried (reconnect with back-off: 0.1 s doubling to `max_backoff`) until it
    succeeds or the submitter is cancelled; a deadlock or lock wait timeout is retried up to
    _WRITER_RETRIES times; other SQL errors are raised to the submitter.
    """

    def __init__(self, pool: Pool, id_main: int, *, queue_limit: int = 1000, max_backoff: float = 10.0,
                 sessions: int | None = None) -> None:
        if queue_limit < 1:
            raise ValueError("queue_limit must be at least 1")
        if sessions is not None and sessions < 1:
            raise ValueError("sessions must be at least 1")
        self.pool = pool
        self.id_main = id_main
        self.queue_limit = queue_limit
        self.max_backoff = max_backoff
        # Default: a quarter of the pool, at most 4: enough overlap for group commit, and sessions left for
        # the other id_mains and the query channel.
        self.sessions = sessions if sessions is not None else max(1, min(4, pool.size // 4))
        self._send, self._receive = trio.open_memory_channel[tuple[StoreMessage, _Pending]](math.inf)
        self._queued = 0
        self.applied = 0
        self.duplicates = 0
        self.retried = 0
        self._stopped = False

    @property
    def queue_length(self) -> int:
        """Messages submitted and not yet finished (including the ones executing)."""
        return self._queued

    @property
    def is_full(self) -> bool:
        """True when the server should answer the sensor with the queue-full reply (spec §8)."""
        return self._queued >= self.queue_limit

    async def submit(self, message: StoreMessage) -> StoreResult:
        """Queue `message` and wait until it is committed (or found already applied).

        Raises StoreMessageError for a message of another id_main, SqlError/PrivilegeError when its SQL
        fails (see is_transient), ConnectionLostError only when the writer stops before it could run.
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
        """Execute queued messages with `sessions` parallel tasks, forever (until cancelled)."""
        try:
            async with trio.open_nursery() as nursery:
                for _ in range(self.sessions):
                    nursery.start_soon(self._work)
                task_status.started()
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

    async def _work(self) -> None:
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

    async def _execute(self, message: StoreMessage) -> StoreResult:
        backoff = 0.1
        retries = 0
        while True:
            try:
                async with self.pool.connection(multi_statements=True) as conn:
                    return await apply_store_message(conn, message)
            except ConnectionLostError as exc:
                log.warning("store: id_main %d: %s; retrying in %.1fs", self.id_main, exc, backoff)
                await trio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff)
            except SqlError as exc:
                if exc.errno not in _RETRY_IN_WRITER or retries >= _WRITER_RETRIES:
                    raise
                retries += 1
                self.retried += 1
                log.info("store: id_main %d: %s; running the message again (%d)", self.id_main, exc, retries)
                await trio.sleep(0.005 * retries + random.random() * 0.01)


class _Pending:
    __slots__ = ("done", "error", "result")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.result: StoreResult | None = None
        self.error: BaseException | None = None
