"""The service client: the sensor's long-lived control connection (spec §7).

Connect with failover, send the credentials (reference fields and order: sensor_id, password, AES strings,
sensor_version 2026004000, `restore` after a first session, check_ping_response, auto_parameters, compress_types
"gzip,zstd,lzo"), apply the auto parameters, then answer every `ping` with `pong` at once from the reader task and
start pushed tasks in their own Trio tasks. Lost connection → reconnect with `restore`. Shutdown (`stop()`): stop
taking tasks, answer the next ping within the grace period with `stop`, else close with FIN (spec §7.9).
"""

from __future__ import annotations

import logging

import trio

from vmproto.logs import log_event
from vmproto.sensor.client.connector import Connector, open_channel
from vmproto.sensor.client.errors import ChannelLost, ConnectFailed, HandshakeRefused
from vmproto.sensor.client.machine_io import MachineStream
from vmproto.sensor.client.session import SessionState
from vmproto.sensor.client.tasks import TaskRunner
from vmproto.sensor.client.timings import jittered
from vmproto.wire import events as ev
from vmproto.wire._state import State
from vmproto.wire.crypto import generate_aes_strings
from vmproto.wire.service import ServiceClient as ServiceMachine
from vmproto.wire.service import version_int

__all__ = ["ServiceClient", "COMPRESS_TYPES"]

log = logging.getLogger("vmproto.sensor.client.service")

COMPRESS_TYPES = "gzip,zstd,lzo"


class ServiceClient:
    """Keeps one service session alive. `tasks` runs pushed GUI tasks (None: tasks are logged and ignored)."""

    def __init__(self, connector: Connector, session: SessionState, tasks: TaskRunner | None = None, *,
                 compress_types: str = COMPRESS_TYPES) -> None:
        self.connector = connector
        self.session = session
        self.tasks = tasks
        self.compress_types = compress_types
        self._stopping = False
        self._stop_scope: trio.CancelScope | None = None
        self.pings = 0
        self.stopped_with_stop = False
        self.handshakes = 0
        self.refusals: list[str] = []
        self.last_error = ""

    def credentials(self, ckey: str, ivec: str) -> ev.ServiceCredentials:
        """The credentials event of the next handshake (spec §7.2)."""
        ident = self.session.identity
        return ev.ServiceCredentials(
            sensor_id=ident.id_sensor if ident.id_sensor > 0 else 0,
            password=ident.password, aes_ckey=ckey, aes_ivec=ivec,
            sensor_version=version_int(ident.version),
            restore=self.session.service_sessions > 0,
            check_ping_response=True, auto_parameters=True, compress_types=self.compress_types,
        )

    def stop(self) -> None:
        """Begin shutdown: no new tasks; the session ends at the next ping (answered `stop`) or after the grace
        period (spec §7.9)."""
        self._stopping = True
        if self._stop_scope is not None:
            self._stop_scope.deadline = min(self._stop_scope.deadline,
                                            trio.current_time() + self.connector.timings.service_stop_grace)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, serve, reconnect, until `stop()` completes or the task is cancelled. `task_status.started()`
        fires after the first successful handshake."""
        t = self.connector.timings
        started = False
        async with trio.open_nursery() as nursery:
            while not self._stopping:
                ckey, ivec = generate_aes_strings()
                machine = ServiceMachine(receive_timeout=t.service_receive_timeout)
                try:
                    ms, accepted, conn = await open_channel(self.connector, machine, self.credentials(ckey, ivec),
                                                            ev.ServiceAccepted)
                except ConnectFailed as exc:
                    self.last_error = str(exc)
                    self.connector.log_failure("service", exc)
                    await trio.sleep(jittered(t.service_pass_pause, t.jitter))
                    continue
                except HandshakeRefused as exc:
                    self.last_error = exc.text
                    self.refusals.append(exc.text)
                    level = logging.ERROR if exc.text == "bad password" else logging.WARNING
                    if self.connector.allow_log(f"service refused {exc.text}"):
                        log_event(log, level, "service handshake refused", reply=exc.text)
                    await trio.sleep(jittered(t.service_handshake_pause, t.jitter))
                    continue
                except ChannelLost as exc:
                    self.last_error = str(exc)
                    self.connector.log_failure("service", exc)
                    await trio.sleep(jittered(t.service_handshake_pause, t.jitter))
                    continue
                self.handshakes += 1
                self.session.apply(accepted.parameters, conn.host, (ckey, ivec))
                log_event(log, logging.INFO, "service connected", host=conn.host, peer=conn.address,
                          restore=self.session.service_sessions > 1)
                if not started:
                    started = True
                    task_status.started()
                try:
                    await self._serve(ms, nursery)
                except ChannelLost as exc:
                    self.last_error = str(exc)
                    log_event(log, logging.WARNING, "connection to the server has been lost - trying again",
                              error=str(exc))
                finally:
                    self.session.lost()
                    await ms.aclose()
                if not self._stopping:
                    await trio.sleep(jittered(t.service_handshake_pause, t.jitter))
            nursery.cancel_scope.cancel()

    async def _serve(self, ms: MachineStream, nursery: trio.Nursery) -> None:
        machine: ServiceMachine = ms.machine  # type: ignore[assignment]
        machine.set_timeout(State.READY, self.connector.timings.service_receive_timeout)
        with trio.CancelScope() as scope:
            self._stop_scope = scope
            if self._stopping:
                scope.deadline = trio.current_time() + self.connector.timings.service_stop_grace
            try:
                while True:
                    event = await ms.next_event()
                    if isinstance(event, ev.Ping):
                        self.pings += 1
                        if self._stopping:
                            await ms.send(ev.Stop())
                            self.stopped_with_stop = True
                            log_event(log, logging.INFO, "service stopped", reply="stop")
                            return
                        await ms.send(ev.Pong())
                    elif isinstance(event, ev.Task):
                        if self._stopping or self.tasks is None:
                            log_event(log, logging.INFO, "task ignored", task=event.task_id,
                                      reason="stopping" if self._stopping else "no task runner")
                            continue
                        nursery.start_soon(self.tasks.run_task, event.task_id, event.command)
                    elif isinstance(event, ev.ChartPush):
                        # We never announce remote_chart_server; a central pushing anyway gets a polite refusal.
                        await ms.send(ev.ChartReply("queue is full"))
                    elif isinstance(event, ev.Rejected):
                        if event.reply is not None:
                            await ms.send(ev.ChartReply(event.reply))
                    elif isinstance(event, ev.ConnectionClosed):
                        raise ChannelLost(f"service connection closed ({event.reason})")
            finally:
                self._stop_scope = None
        if scope.cancelled_caught:
            log_event(log, logging.INFO, "service stopped", reply="none (grace period over)")


