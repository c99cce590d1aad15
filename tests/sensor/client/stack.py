"""Helpers: a sensor client stack (connector, session, service, store) pointed at test centrals."""

from __future__ import annotations

import socket
from pathlib import Path

import trio

from tests.sensor.client.central import PASSWORD
from vmproto.sensor.client.connector import Connector
from vmproto.sensor.client.journal import Journal
from vmproto.sensor.client.responses import ResponsesSender
from vmproto.sensor.client.service import ServiceClient
from vmproto.sensor.client.session import SensorIdentity, SessionState
from vmproto.sensor.client.store import StoreClient
from vmproto.sensor.client.tasks import CommandRunner, TaskRunner
from vmproto.sensor.client.timings import Timings

FAST = Timings().scaled(0.01)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stack:
    def __init__(self, port: int, journal_dir: Path | None = None, *, hosts: tuple[str, ...] = ("127.0.0.1",),
                 id_sensor: int = 2, runner: CommandRunner | None = None, timings: Timings = FAST,
                 password: str = PASSWORD, packetbuffer_sender: bool = False) -> None:
        self.connector = Connector(hosts, port, timings)
        self.session = SessionState(SensorIdentity(id_sensor=id_sensor, name="s1", password=password,
                                                   packetbuffer_sender=packetbuffer_sender))
        self.responses = ResponsesSender(self.connector, self.session)
        self.tasks = TaskRunner(self.connector, self.session, runner, self.responses)
        self.service = ServiceClient(self.connector, self.session, self.tasks)
        self.store = (StoreClient(self.connector, self.session, Journal(journal_dir, fsync=False))
                      if journal_dir is not None else None)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.service.run)
            nursery.start_soon(self.responses.run)
            if self.store is not None:
                await nursery.start(self.store.run)
            task_status.started()


async def wait_for(predicate, timeout: float = 5.0, step: float = 0.01) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(step)
