"""GUI tasks pushed on the service channel (spec §7.5, §11, §13): run the manager command, stream its output on a
`response` connection, or queue it for the `responses` connection (file_exists / fileexists when enabled).

The commands themselves come from the sensor's manager (`CommandRunner`: `await runner(command_line, out)`, which
writes its output with `await out.write(bytes)`). Without one, only `getversion` answers; everything else gets
`command not found\\n`, as the reference does for unknown commands.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

import trio

from vmproto.logs import log_event
from vmproto.sensor.client.connector import Connector
from vmproto.sensor.client.errors import ChannelLost, ClientError
from vmproto.sensor.client.machine_io import MachineStream
from vmproto.sensor.client.responses import ResponsesSender
from vmproto.sensor.client.session import SessionState
from vmproto.wire import events as ev
from vmproto.wire.response import ResponseClient

__all__ = ["TaskOutput", "CommandRunner", "TaskRunner", "builtin_commands", "uses_responses"]

log = logging.getLogger("vmproto.sensor.client.tasks")

_CR_LF = (0x0D, 0x0A)


class TaskOutput(Protocol):
    """Where a command writes its output."""

    async def write(self, data: bytes) -> None: ...


CommandRunner = Callable[[str, TaskOutput], Awaitable[None]]


def builtin_commands(version: str) -> CommandRunner:
    """The minimal command set of a sensor without a manager: `getversion`; anything else `command not found`."""

    async def run(command: str, out: TaskOutput) -> None:
        word = command.split(None, 1)[0] if command.split() else ""
        if word == "getversion":
            await out.write(version.encode("ascii"))
        else:
            await out.write(b"command not found\n")

    return run


def uses_responses(command: str, session: SessionState) -> bool:
    """spec §11.3: the `responses` path for file_exists / fileexists when the central enabled it."""
    return session.responses_enabled and ("file_exists" in command or "fileexists" in command)


class _Collect:
    def __init__(self) -> None:
        self.parts: list[bytes] = []

    async def write(self, data: bytes) -> None:
        self.parts.append(bytes(data))


class _ResponseStream:
    """A `response` connection as a TaskOutput: AES stream, flushed as the command writes."""

    def __init__(self, ms: MachineStream, crlf_pause: float) -> None:
        self.ms = ms
        self.crlf_pause = crlf_pause
        self.first = True
        self.written = 0

    async def write(self, data: bytes) -> None:
        if not data:
            return
        cipher = self.ms.machine.send(ev.ResponseData(bytes(data)), self.ms.clock())
        self.written += len(data)
        await self._out(cipher)

    async def finish(self) -> None:
        await self._out(self.ms.machine.send(ev.ResponseEnd(), self.ms.clock()))

    async def _out(self, cipher: bytes) -> None:
        if not cipher:
            return
        if self.first:
            self.first = False
            if cipher[0] in _CR_LF:
                # spec §11.1 / §16 Q2: a reference central would skip this byte as part of the opening's CRLF.
                await trio.sleep(self.crlf_pause)
        await self.ms.send_raw(cipher)


class TaskRunner:
    """Runs tasks as they arrive; each task in its own Trio task so the service reader keeps answering pings."""

    def __init__(self, connector: Connector, session: SessionState, runner: CommandRunner | None = None,
                 responses: ResponsesSender | None = None) -> None:
        self.connector = connector
        self.session = session
        self.runner = runner or builtin_commands(session.identity.version)
        self.responses = responses
        self.started = 0
        self.completed = 0
        self.failed = 0

    async def run_task(self, task_id: str, command: bytes) -> None:
        """Execute one task and deliver its output. Never raises (failures are logged and counted)."""
        self.started += 1
        text = command.decode("utf-8", "surrogateescape")
        try:
            if uses_responses(text, self.session) and self.responses is not None:
                out = _Collect()
                await self.runner(text, out)
                await self.responses.put(task_id, b"".join(out.parts))
            else:
                await self._response(task_id, text)
            self.completed += 1
        except (ClientError, OSError) as exc:
            self.failed += 1
            log_event(log, logging.WARNING, "task failed", task=task_id, error=str(exc))

    async def _response(self, task_id: str, command: str) -> None:
        keys, host = self.session.service_keys, self.session.service_host
        if keys is None or host is None:
            raise ChannelLost("no service connection: the central cannot route this response")
        conn = await self.connector.connect((host,))
        ms = MachineStream(conn.stream, ResponseClient(aes_ckey=keys[0], aes_ivec=keys[1]),
                           write_timeout=self.connector.timings.write_timeout, peer=conn.address)
        try:
            await ms.send(ev.OpenConnection("response", {"gui_task_id": task_id}))
            out = _ResponseStream(ms, self.connector.timings.response_crlf_pause)
            await self.runner(command, out)
            await out.finish()
            log_event(log, logging.DEBUG, "response sent", task=task_id, bytes=out.written)
        finally:
            await ms.aclose()


