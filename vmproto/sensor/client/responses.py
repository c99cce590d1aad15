"""The `responses` sender: small task outputs over one long-lived connection (spec §11.2).

Items are `<task-id>#<output>`. `OK` → next item; `missing gui task id` / `unknown gui task id` → drop the item and
reconnect; anything else or no reply → reconnect and resend the same item. Pauses: 5 s after a failed connect,
1 s after a failed handshake step, none after a data failure.
"""

from __future__ import annotations

import collections
import logging

import trio

from vmproto.logs import log_event
from vmproto.sensor.client.connector import Connector, open_channel
from vmproto.sensor.client.errors import ChannelLost, ClientError, ConnectFailed, HandshakeRefused
from vmproto.sensor.client.machine_io import MachineStream
from vmproto.sensor.client.session import SessionState
from vmproto.sensor.client.timings import jittered
from vmproto.wire import events as ev
from vmproto.wire._state import State
from vmproto.wire.crypto import generate_aes_strings
from vmproto.wire.response import MISSING_TASK_ID, UNKNOWN_TASK_ID, ResponsesClient

__all__ = ["ResponsesSender"]

log = logging.getLogger("vmproto.sensor.client.responses")


class ResponsesSender:
    """Queue of (task id, output); `run()` delivers them. `max_items` bounds memory (oldest dropped, counted)."""

    def __init__(self, connector: Connector, session: SessionState, max_items: int = 10_000) -> None:
        self.connector = connector
        self.session = session
        self.max_items = max_items
        self._queue: collections.deque[tuple[str, bytes]] = collections.deque()
        self._wakeup = trio.Event()
        self.sent = 0
        self.dropped_unknown = 0
        self.dropped_overflow = 0

    async def put(self, task_id: str, output: bytes) -> None:
        """Queue one output. Raises ClientError for a task id with `#` (it could not be parsed back)."""
        if "#" in task_id:
            raise ClientError(f"task id {task_id!r} contains '#'")
        if len(self._queue) >= self.max_items:
            self._queue.popleft()
            self.dropped_overflow += 1
        self._queue.append((task_id, output))
        self._wakeup.set()

    def __len__(self) -> int:
        return len(self._queue)

    async def run(self) -> None:
        """Deliver queued items forever (until cancelled)."""
        t = self.connector.timings
        ms: MachineStream | None = None
        try:
            while True:
                while not self._queue:
                    self._wakeup = trio.Event()
                    await self._wakeup.wait()
                if ms is None:
                    try:
                        ckey, ivec = generate_aes_strings()
                        machine = ResponsesClient()
                        ms, _ok, _conn = await open_channel(
                            self.connector, machine, ev.Credentials(self.session.identity.password, ckey, ivec),
                            ev.HandshakeOK)
                        machine.set_timeout(State.REPLY, t.reply_timeout)
                    except ConnectFailed as exc:
                        self.connector.log_failure("responses", exc)
                        await trio.sleep(jittered(t.responses_connect_pause, t.jitter))
                        continue
                    except (HandshakeRefused, ChannelLost) as exc:
                        self.connector.log_failure("responses", exc)
                        await trio.sleep(jittered(t.responses_handshake_pause, t.jitter))
                        continue
                task_id, output = self._queue[0]
                try:
                    await ms.send(ev.ResponseItem(task_id, output))
                    reply = await ms.expect(ev.ResponseReply)
                except ChannelLost as exc:
                    log_event(log, logging.WARNING, "responses connection lost", error=str(exc))
                    await ms.aclose()
                    ms = None
                    continue
                if reply.text == "OK":
                    self._queue.popleft()
                    self.sent += 1
                    continue
                if reply.text in (MISSING_TASK_ID, UNKNOWN_TASK_ID):
                    self._queue.popleft()
                    self.dropped_unknown += 1
                log_event(log, logging.WARNING, "responses item refused", task=task_id, reply=reply.text)
                await ms.aclose()
                ms = None
        finally:
            if ms is not None:
                await ms.aclose()
