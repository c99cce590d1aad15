"""The store client: SQL from call processing to the central's database over `store` connections (spec §8).

    sink = StoreClient(connector, session, journal)
    nursery.start_soon(sink.run)
    await sink.submit(10, sql_bytes)       # the CDR sink interface (back-pressure when the journal is full)

Flow: `submit` queues statement units in memory; the former task turns what is queued into messages (a single
unit, or up to `mysql_concat_limit` units as L-items, spec §8.11), appends them to the journal with one fsync
(group commit) and hands them to the sender of their `id_main`. One sender per `id_main` opens its `store`
connection lazily (spec §8.1), after the service handshake, and sends the journaled messages in journal order,
strictly one request, one reply. A message leaves the journal only on `OK` (spec §8.10); retries follow spec §8.8.
"""

from __future__ import annotations

import collections
import logging
import time
from dataclasses import dataclass
from typing import Any

import trio

from vmproto.logs import log_event
from vmproto.sensor.client.connector import Connector, open_channel
from vmproto.sensor.client.errors import (
    ChannelLost,
    ClientError,
    ConnectFailed,
    HandshakeRefused,
    JournalError,
)
from vmproto.sensor.client.journal import Journal, JournalEntry
from vmproto.sensor.client.machine_io import MachineStream
from vmproto.sensor.client.session import SessionState
from vmproto.sensor.client.timings import Timings, jittered, store_retry_delay
from vmproto.wire import events as ev
from vmproto.wire._state import State
from vmproto.wire.crypto import generate_aes_strings
from vmproto.wire.store import StoreClient as StoreMachine
from vmproto.wire.store_msg import StoreMessage, decode_store_message, encode_store_message

__all__ = ["StoreClient", "StoreStats", "encode_body", "message_for"]

log = logging.getLogger("vmproto.sensor.client.store")

# The central refuses blocks over 64 MiB (spec §8.11); compressed SQL is far smaller than its text, so cutting
# batches at this many uncompressed bytes keeps every message under the cap even with no compression.
MAX_MESSAGE_TEXT = 48 * 1024 * 1024
_DEFAULT_PENDING_MAX = 100_000


def encode_body(units: list[bytes], batched: bool) -> bytes:
    """The journaled body: the bytes after `<id_main>|` (and the time part) of the message (spec §8.10.3).

    Computed without a time part so that a body the central could misread as a time is always wrapped as an
    L-item, whatever `check_time` the next connection announces.
    """
    text = encode_store_message(StoreMessage(0, None, tuple(units), batched))
    return text[2:]  # drop "0|"


def message_for(id_main: int, body: bytes, client_time: str | None) -> StoreMessage:
    """Rebuild the wire message of a journaled body; its encoding repeats `body` byte for byte after the time part."""
    parsed = decode_store_message(b"0|" + body)
    return StoreMessage(id_main, client_time, parsed.queries, parsed.batched)


def _local_time() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())


@dataclass
class StoreStats:
    """Counters of the store path (metrics, status and tests)."""

    units_submitted: int = 0
    messages_formed: int = 0
    messages_sent: int = 0
    messages_acked: int = 0
    queue_full_replies: int = 0
    error_replies: int = 0
    dead_letters: int = 0
    checks_sent: int = 0
    connections: int = 0
    connection_failures: int = 0
    replayed: int = 0
    journal_write_failures: int = 0


class _Sender:
    """Journaled messages of one id_main waiting for their `OK`, in journal order."""

    def __init__(self, id_main: int) -> None:
        self.id_main = id_main
        self.queue: collections.deque[JournalEntry] = collections.deque()
        self.wakeup = trio.Event()
        self.running = False

    def push(self, entry: JournalEntry) -> None:
        self.queue.append(entry)
        self.wakeup.set()


class StoreClient:
    """Store client for all id_mains of one sensor. `journal` is opened by `run()` if it is not open yet."""

    def __init__(self, connector: Connector, session: SessionState, journal: Journal, *,
                 timings: Timings | None = None, pending_max: int = _DEFAULT_PENDING_MAX) -> None:
        self.connector = connector
        self.session = session
        self.journal = journal
        self.timings = timings or connector.timings
        self.stats = StoreStats()
        self._pending: dict[int, collections.deque[bytes]] = {}
        self._pending_count = 0
        # Messages taken out of _pending and not yet in the journal (the append runs in a worker thread);
        # counted by `unacked` so nobody sees an empty client while units are between the two.
        self._forming = 0
        self._pending_max = pending_max
        self._pending_changed = trio.Event()
        self._room = trio.Condition()
        self._senders: dict[int, _Sender] = {}
        self._journal_lock = trio.Lock()
        self._nursery: trio.Nursery | None = None

    # ----------------------------------------------------------------------------------------------- sink API
    async def submit(self, id_main: int, statement: bytes | str) -> None:
        """Queue one statement unit for `id_main` (10 = CDR, spec §8.4). Waits while the in-memory queue is full
        (back-pressure towards call processing). Raises ClientError for an empty statement or bad id."""
        data = statement.encode("utf-8") if isinstance(statement, str) else bytes(statement)
        if not data:
            raise ClientError("empty store statement")
        if not 0 <= id_main <= 0xFFFFFFFF:
            raise ClientError(f"bad id_main {id_main}")
        async with self._room:
            while self._pending_count >= self._pending_max:
                await self._room.wait()
        self._pending.setdefault(id_main, collections.deque()).append(data)
        self._pending_count += 1
        self.stats.units_submitted += 1
        self._pending_changed.set()

    @property
    def unacked(self) -> int:
        """Units queued in memory plus journaled messages without `OK`."""
        return self._pending_count + self._forming + len(self.journal)

    async def wait_idle(self) -> None:
        """Return once everything submitted so far has been acknowledged (tests, orderly shutdown)."""
        while self.unacked:
            await trio.sleep(0.01 * max(self.timings.retry_step, 0.01))

    # -------------------------------------------------------------------------------------------------- tasks
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Replay the journal, then form and send messages until cancelled. Raises JournalError when the journal
        cannot be used (a durable sensor must not run without it)."""
        if not self.journal.is_open:
            report = await trio.to_thread.run_sync(self.journal.open)
            log_event(log, logging.INFO, "store journal replayed", live=report.live, torn=report.torn_records,
                      corrupt_bytes=report.corrupt_bytes, dead_letters=report.dead_letters)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for entry in self.journal.live():
                self.stats.replayed += 1
                self._sender_for(entry.id_main).push(entry)
            nursery.start_soon(self._former)
            task_status.started()

    def _sender_for(self, id_main: int) -> _Sender:
        sender = self._senders.get(id_main)
        if sender is None:
            sender = self._senders[id_main] = _Sender(id_main)
        if not sender.running and self._nursery is not None:
            sender.running = True
            self._nursery.start_soon(self._send_loop, sender)
        return sender

    async def _former(self) -> None:
        while True:
            await self._pending_changed.wait()
            self._pending_changed = trio.Event()
            while self._pending_count:
                messages = self._form_messages()
                self._forming += len(messages)
                try:
                    while not self.journal.has_room(sum(len(b) for _i, b in messages)):
                        # Back-pressure (spec §8.10.1): wait for acknowledgements instead of dropping anything.
                        await trio.sleep(0.05)
                    entries = await self._append_until_written(messages)
                    self.stats.messages_formed += len(entries)
                    for entry in entries:
                        self._sender_for(entry.id_main).push(entry)
                finally:
                    self._forming -= len(messages)
                async with self._room:
                    self._room.notify_all()

    async def _append_until_written(self, messages: list[tuple[int, bytes]]) -> list[Any]:
        """Journal `messages`; while the disk refuses (full, read-only), wait and retry instead of dropping them or
        dying (spec §8.10.1: back-pressure, never loss). Call processing waits meanwhile (the queue is bounded)."""
        delay = 1.0
        while True:
            try:
                async with self._journal_lock:
                    return await trio.to_thread.run_sync(self.journal.append, messages)
            except JournalError as exc:
                self.stats.journal_write_failures += 1
                if self.stats.journal_write_failures == 1 or self.stats.journal_write_failures % 60 == 0:
                    log_event(log, logging.ERROR, "store journal cannot be written; holding CDRs until it can",
                              error=str(exc), failures=self.stats.journal_write_failures)
                await trio.sleep(delay)
                delay = min(delay * 2, 10.0)

    def _form_messages(self) -> list[tuple[int, bytes]]:
        """Cut everything pending into messages (spec §8.11): one unit → single; several and a limit > 1 →
        L-items, at most `limit` per message and under MAX_MESSAGE_TEXT."""
        limit = self.session.concat_limit
        out: list[tuple[int, bytes]] = []
        for id_main, units in self._pending.items():
            while units:
                if len(units) == 1 or limit <= 1:
                    unit = units.popleft()
                    self._pending_count -= 1
                    out.append((id_main, encode_body([unit], False)))
                    continue
                batch: list[bytes] = []
                size = 0
                while units and len(batch) < limit and (not batch or size + len(units[0]) <= MAX_MESSAGE_TEXT):
                    unit = units.popleft()
                    batch.append(unit)
                    size += len(unit) + 16
                self._pending_count -= len(batch)
                out.append((id_main, encode_body(batch, len(batch) > 1)))
        return out

    # ------------------------------------------------------------------------------------------------ sending
    async def _send_loop(self, sender: _Sender) -> None:
        await self.session.accepted.wait()
        attempt = 0
        need_check = False
        while True:
            while not sender.queue:
                sender.wakeup = trio.Event()
                await sender.wakeup.wait()
            try:
                ms = await self._connect(sender.id_main)
            except (ConnectFailed, HandshakeRefused, ChannelLost) as exc:
                attempt += 1
                self.stats.connection_failures += 1
                self.connector.log_failure(f"store {sender.id_main}", exc)
                await trio.sleep(jittered(store_retry_delay(self.timings, attempt), self.timings.jitter))
                continue
            try:
                attempt, need_check = await self._serve(ms, sender, attempt, need_check)
            except ChannelLost as exc:
                attempt += 1
                log_event(log, logging.WARNING, "store connection lost", id_main=sender.id_main, error=str(exc))
                await trio.sleep(jittered(store_retry_delay(self.timings, attempt), self.timings.jitter))
            finally:
                await ms.aclose()

    async def _connect(self, id_main: int) -> MachineStream:
        ckey, ivec = generate_aes_strings()
        machine = StoreMachine(compression=self.session.store_compression)
        ms, _accepted, _conn = await open_channel(
            self.connector, machine, ev.Credentials(self.session.identity.password, ckey, ivec), ev.StoreAccepted)
        machine.set_timeout(State.REPLY, self.timings.reply_timeout)
        self.stats.connections += 1
        log_event(log, logging.DEBUG, "store connected", id_main=id_main, peer=ms.peer)
        return ms

    async def _serve(self, ms: MachineStream, sender: _Sender, attempt: int, need_check: bool) -> tuple[int, bool]:
        """Send until the queue is empty (then wait) or the connection must be replaced. Returns the retry state
        for the next connection; raises ChannelLost when the connection failed."""
        machine: StoreMachine = ms.machine  # type: ignore[assignment]
        while True:
            while not sender.queue:
                sender.wakeup = trio.Event()
                await sender.wakeup.wait()
            if need_check and machine.check_store:
                await ms.send(ev.StoreCheck())
                self.stats.checks_sent += 1
                reply = await ms.expect(ev.StoreOK, ev.StoreError)
                if isinstance(reply, ev.StoreError):
                    attempt += 1
                    keep = await self._after_error(reply, attempt)
                    if not keep:
                        return attempt, True
                    continue
            entry = sender.queue[0]
            client_time = _local_time() if machine.check_time else None
            await ms.send(ev.StoreQueries(message_for(entry.id_main, entry.body, client_time)))
            self.stats.messages_sent += 1
            reply = await ms.expect(ev.StoreOK, ev.StoreError)
            if isinstance(reply, ev.StoreOK):
                sender.queue.popleft()
                async with self._journal_lock:
                    self.journal.ack(entry.seq)
                self.stats.messages_acked += 1
                attempt, need_check = 0, False
                continue
            if not reply.next_attempt:
                sender.queue.popleft()
                async with self._journal_lock:
                    await trio.to_thread.run_sync(self.journal.dead_letter, entry.seq, reply.error)
                self.stats.dead_letters += 1
                log_event(log, logging.ERROR, "store message dead-lettered", id_main=entry.id_main, seq=entry.seq,
                          error=reply.error)
                continue
            attempt += 1
            need_check = True
            if not await self._after_error(reply, attempt):
                return attempt, need_check

    async def _after_error(self, reply: ev.StoreError, attempt: int) -> bool:
        """Pause per spec §8.8; return True when the connection is kept."""
        if reply.error == "sql queue is full":
            self.stats.queue_full_replies += 1
        else:
            self.stats.error_replies += 1
        if not reply.quietly:
            log_event(log, logging.WARNING, "send store query error", error=reply.error)
        await trio.sleep(jittered(store_retry_delay(self.timings, attempt, reply.usleep), self.timings.jitter))
        return reply.keep_connect

    async def close(self) -> None:
        """fsync the journal's pending acknowledgements and close it (call after cancelling `run`)."""
        async with self._journal_lock:
            try:
                await trio.to_thread.run_sync(self.journal.close)
            except JournalError as exc:
                log_event(log, logging.ERROR, "store journal close failed", error=str(exc))
