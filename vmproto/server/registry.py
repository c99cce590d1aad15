"""Live services and GUI tasks of the central (spec §7.7, §11, §12).

The registry is plain in-memory state touched only from the Trio thread, so it needs no locks. A service is
registered under its key (`"<sensor_id>"` or `"<sensor_id>/<sensor_string>"`); a `restore` connection replaces
the entry and the old connection is told to end (it is then an orphan and must not unregister the new one).
A GUI task lives from the gui_command request until its output was relayed or its 5 minutes ran out.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio

__all__ = ["GuiTask", "Registry", "ServiceEntry", "TaskOutput"]


@dataclass(eq=False)
class ServiceEntry:
    """One registered service connection.

    `push(item)` hands an item (a `vmproto.wire.events.Task`, or a control object) to the connection's handler;
    `aes_ckey`/`aes_ivec` are the service's key strings, needed to decrypt the sensor's `response` streams.
    """

    key: str
    sensor_id: int
    sensor_string: str
    ip: str
    port: int
    aes_ckey: str
    aes_ivec: str
    push: Callable[[Any], None]
    remote_chart_server: bool = False
    orphaned: bool = False
    connected_at: float = field(default_factory=time.time)
    sensor_version: int = 0  # major*1000000 + minor*1000 + patch, as announced (status, metrics)
    last_pong: float | None = None  # UNIX time of the last pong (status, metrics); None before the first


@dataclass(frozen=True, slots=True)
class TaskOutput:
    """One piece of a task's output for the waiting GUI: `kind` "data" (from a `response` stream, may be
    re-encrypted for AES GUIs), "end" (stream finished) or "raw" (a `responses` output, written as is)."""

    kind: str
    data: bytes = b""


@dataclass(eq=False)
class GuiTask:
    """A gui_command waiting for its sensor's answer. Output travels through a small bounded channel, so a slow
    GUI slows the sensor's `response` stream down instead of filling memory (spec §11.1)."""

    task_id: str
    sensor_id: int
    command: str
    created_at: float = field(default_factory=time.time)
    started: bool = False  # a response/responses connection took the task
    completed: bool = False

    def __post_init__(self) -> None:
        self._send, self.output = trio.open_memory_channel[TaskOutput](16)

    async def deliver(self, item: TaskOutput) -> bool:
        """Queue output for the GUI; False when the GUI is gone (the task was dropped)."""
        try:
            await self._send.send(item)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        return True

    def close(self) -> None:
        """No more output (called by the GUI side when it finishes or gives up)."""
        self._send.close()
        self.output.close()


class Registry:
    """Services by key and GUI tasks by id."""

    def __init__(self) -> None:
        self.services: dict[str, ServiceEntry] = {}
        self.tasks: dict[str, GuiTask] = {}
        self._task_counter = itertools.count(1)

    # services -------------------------------------------------------------------------------------------------
    def find_service(self, key: str) -> ServiceEntry | None:
        return self.services.get(key)

    def register(self, entry: ServiceEntry) -> ServiceEntry | None:
        """Register `entry`; return the entry it replaced (now orphaned), if any."""
        old = self.services.get(entry.key)
        if old is not None:
            old.orphaned = True
        self.services[entry.key] = entry
        return old

    def unregister(self, entry: ServiceEntry) -> None:
        """Remove `entry` unless it was replaced by a restore (orphans leave the new entry alone)."""
        if not entry.orphaned and self.services.get(entry.key) is entry:
            del self.services[entry.key]

    def active(self) -> tuple[tuple[str, int, int], ...]:
        """(ip, port, sensor_id) of every service, ordered by key text (spec §12.5)."""
        return tuple((e.ip, e.port, e.sensor_id) for _k, e in sorted(self.services.items()))

    # tasks ----------------------------------------------------------------------------------------------------
    def new_task(self, sensor_id: int, command: str) -> GuiTask:
        """Create and register a task with a process-unique id `<µs time>:<counter>` (spec §7.5)."""
        task_id = f"{time.time_ns() // 1000}:{next(self._task_counter)}"
        task = GuiTask(task_id, sensor_id, command)
        self.tasks[task_id] = task
        return task

    def find_task(self, task_id: str) -> GuiTask | None:
        return self.tasks.get(task_id)

    def drop_task(self, task: GuiTask) -> None:
        if self.tasks.get(task.task_id) is task:
            del self.tasks[task.task_id]
        task.close()
