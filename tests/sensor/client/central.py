"""A scriptable in-process central for the client tests, built on the vmproto.wire server machines and driven over
real loopback sockets (until vmproto.server lands). Every knob is a plain attribute the test sets."""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from typing import Any

import trio

from vmproto.sensor.client.errors import ChannelLost
from vmproto.sensor.client.machine_io import MachineStream
from vmproto.wire import events as ev
from vmproto.wire._state import State
from vmproto.wire.acceptor import Acceptor
from vmproto.wire.crypto import generate_rsa_key
from vmproto.wire.errors import ProtocolError, RemoteProtocolError
from vmproto.wire.pbstore import decode_container, peek_header
from vmproto.wire.service import ServiceServer

PASSWORD = "testpw"


@functools.cache
def rsa_key() -> Any:
    return generate_rsa_key(2048)


@dataclass
class StoreRecord:
    id_main: int
    client_time: str | None
    queries: tuple[bytes, ...]
    batched: bool
    conn: int


@dataclass
class Central:
    password: str = PASSWORD
    ping_interval: float = 5.0
    concat_limit: int | None = 1000
    type_compress: int = 3
    auto_ok_plain: bool = False
    store_queue_full: int = 0  # answer this many data messages with the queue-full JSON
    store_drop_before_reply: int = 0  # close this many store connections after reading a message, no reply
    store_check_full: int = 0  # answer this many `check`s with queue-full
    store_usleep: int = 1000
    pb_drop_before_reply: int = 0
    refuse_service: str | None = None
    tasks: list[tuple[str, bytes]] = field(default_factory=list)
    # what arrived
    store: list[StoreRecord] = field(default_factory=list)
    store_raw: list[bytes] = field(default_factory=list)
    checks: int = 0
    service_creds: list[ev.ServiceCredentials] = field(default_factory=list)
    pongs: int = 0
    stops: int = 0
    service_ends: list[str] = field(default_factory=list)
    responses: dict[str, bytes] = field(default_factory=dict)
    response_done: dict[str, trio.Event] = field(default_factory=dict)
    responses_items: list[tuple[str, bytes]] = field(default_factory=list)
    pb_blocks: list[bytes] = field(default_factory=list)
    pb_creds: list[ev.PacketbufferCredentials] = field(default_factory=list)
    queries: list[bytes] = field(default_factory=list)
    connections: dict[str, int] = field(default_factory=dict)
    machine_refusals: list[str] = field(default_factory=list)
    port: int = 0
    _keys: tuple[str, str] | None = None
    _task_wakeup: trio.Event = field(default_factory=trio.Event)
    _conn_no: int = 0
    _service_scopes: list[trio.CancelScope] = field(default_factory=list)

    def kick_service(self) -> None:
        """Close every service connection (the sensor sees EOF and reconnects with restore)."""
        for scope in self._service_scopes:
            scope.cancel()

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED, port: int = 0,
                    host: str = "127.0.0.1") -> None:
        listeners = await trio.open_tcp_listeners(port, host=host)
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self.port)
        await trio.serve_listeners(self._handle, listeners)

    def push_task(self, task_id: str, command: bytes) -> None:
        self.tasks.append((task_id, command))
        self.response_done.setdefault(task_id, trio.Event())
        self._task_wakeup.set()

    async def _handle(self, stream: trio.SocketStream) -> None:
        self._conn_no += 1
        conn_no = self._conn_no
        acceptor = Acceptor()
        try:
            opening = None
            while opening is None:
                data = await stream.receive_some(65536)
                acceptor.receive_data(data, time.time())
                opening = acceptor.next_opening(time.time())
            kind = opening.type_connection
            self.connections[kind] = self.connections.get(kind, 0) + 1
            if kind == "response":
                await self._response(stream, acceptor, opening)
                return
            config: dict[str, Any] = {"rsa_key": rsa_key(), "password": self.password}
            machine = acceptor.build(opening, **config)
            if isinstance(machine, ServiceServer):
                machine._server_type_compress = self.type_compress  # noqa: SLF001 - test knob
            ms = MachineStream(stream, machine)
            handler = getattr(self, "_" + kind.replace(" ", "_"))
            try:
                await handler(ms, conn_no)
            except ChannelLost as exc:
                err = exc.protocol_error
                if isinstance(err, RemoteProtocolError) and err.reply is not None:
                    self.machine_refusals.append(err.reason)
                    await ms.send_raw(machine.encode_reply(err))
        except (ChannelLost, ProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            with trio.CancelScope(shield=True):
                await stream.aclose()

    async def _handshake(self, ms: MachineStream) -> Any:
        await ms.send(ev.RsaKey(ms.machine.public_pem))  # type: ignore[attr-defined]
        event = await ms.next_event()
        while isinstance(event, ev.OpenConnection):
            event = await ms.next_event()
        return event

    # -------------------------------------------------------------------------------------------------- types
    async def _service(self, ms: MachineStream, conn_no: int) -> None:
        machine: ServiceServer = ms.machine  # type: ignore[assignment]
        creds = await self._handshake(ms)
        if not isinstance(creds, ev.ServiceCredentials):
            return
        self.service_creds.append(creds)
        if self.refuse_service:
            await ms.send(ev.Refuse(self.refuse_service))
            return
        if self.auto_ok_plain or not creds.auto_parameters:
            params = None
        else:
            extra = {} if self.concat_limit is None else {"mysql_concat_limit": self.concat_limit}
            params = machine.parameters(**extra)
        machine.set_timeout(State.READY, self.ping_interval)
        await ms.send(ev.ServiceAccepted(params))
        self._keys = (creds.aes_ckey, creds.aes_ivec)
        with trio.CancelScope() as scope:
            self._service_scopes.append(scope)
            await self._service_loop(ms, machine)
        self._service_scopes.remove(scope)
        if scope.cancelled_caught:
            self.service_ends.append("kicked")

    async def _service_loop(self, ms: MachineStream, machine: ServiceServer) -> None:
        async with trio.open_nursery() as nursery:
            async def pusher() -> None:
                while True:
                    while self.tasks and machine.state is State.READY:
                        task_id, command = self.tasks.pop(0)
                        await ms.send(ev.Task(task_id, command))
                    self._task_wakeup = trio.Event()
                    with trio.move_on_after(0.05):
                        await self._task_wakeup.wait()
            nursery.start_soon(pusher)
            try:
                while True:
                    event = await ms.next_event()
                    if isinstance(event, ev.Pong):
                        self.pongs += 1
                    elif isinstance(event, ev.Stop):
                        self.stops += 1
                        self.service_ends.append("stop")
                        return
                    elif isinstance(event, ev.ConnectionClosed):
                        self.service_ends.append(event.reason)
                        return
            finally:
                nursery.cancel_scope.cancel()

    async def _response(self, stream: trio.SocketStream, acceptor: Acceptor, opening: Any) -> None:
        machine = acceptor.build(opening)
        ms = MachineStream(stream, machine)
        event = await ms.next_event()
        assert isinstance(event, ev.OpenConnection)
        task_id = machine.gui_task_id  # type: ignore[attr-defined]
        assert self._keys is not None
        await ms.send(ev.ResponseKeys(*self._keys))
        out = bytearray()
        while True:
            event = await ms.next_event()
            if isinstance(event, ev.ResponseData):
                out += event.data
            elif isinstance(event, ev.ResponseEnd | ev.ConnectionClosed):
                break
        self.responses[task_id] = bytes(out)
        self.response_done.setdefault(task_id, trio.Event()).set()

    async def _responses(self, ms: MachineStream, conn_no: int) -> None:
        if not isinstance(await self._handshake(ms), ev.Credentials):
            return
        await ms.send(ev.HandshakeOK())
        while True:
            event = await ms.next_event()
            if isinstance(event, ev.ResponseItem):
                self.responses_items.append((event.task_id, event.output))
                self.response_done.setdefault(event.task_id, trio.Event()).set()
                await ms.send(ev.ResponseReply("OK"))
            elif isinstance(event, ev.ConnectionClosed):
                return

    async def _store(self, ms: MachineStream, conn_no: int) -> None:
        if not isinstance(await self._handshake(ms), ev.Credentials):
            return
        await ms.send(ev.StoreAccepted(True, True))
        while True:
            event = await ms.next_event()
            if isinstance(event, ev.StoreCheck):
                self.checks += 1
                if self.store_check_full > 0:
                    self.store_check_full -= 1
                    await ms.send(ev.StoreError("sql queue is full", usleep=self.store_usleep, quietly=True,
                                                keep_connect=True))
                else:
                    await ms.send(ev.StoreOK())
            elif isinstance(event, ev.StoreQueries):
                m = event.message
                if self.store_queue_full > 0:
                    self.store_queue_full -= 1
                    await ms.send(ev.StoreError("sql queue is full", usleep=self.store_usleep, quietly=True,
                                                keep_connect=True))
                    continue
                self.store.append(StoreRecord(m.id_main, m.client_time, m.queries, m.batched, conn_no))
                if self.store_drop_before_reply > 0:
                    # Applied but the OK is lost: the sensor must resend (a vmproto central dedups it).
                    self.store_drop_before_reply -= 1
                    return
                await ms.send(ev.StoreOK())
            elif isinstance(event, ev.ConnectionClosed):
                return

    async def _packetbuffer_block(self, ms: MachineStream, conn_no: int) -> None:
        creds = await self._handshake(ms)
        if not isinstance(creds, ev.PacketbufferCredentials):
            return
        self.pb_creds.append(creds)
        await ms.send(ev.HandshakeOK())
        while True:
            event = await ms.next_event()
            if isinstance(event, ev.PacketbufferBlock):
                if self.pb_drop_before_reply > 0 and event.require_confirmation:
                    self.pb_drop_before_reply -= 1
                    return
                self.pb_blocks.append(event.payload)
                if event.require_confirmation:
                    await ms.send(ev.BlockReply("OK"))
            elif isinstance(event, ev.Rejected):
                if event.reply is not None:
                    await ms.send(ev.BlockReply(event.reply))
            elif isinstance(event, ev.ConnectionClosed):
                return

    async def _query(self, ms: MachineStream, conn_no: int) -> None:
        if not isinstance(await self._handshake(ms), ev.Credentials):
            return
        await ms.send(ev.HandshakeOK())
        while True:
            event = await ms.next_event()
            if isinstance(event, ev.QueryRequest):
                self.queries.append(event.sql)
                if b"sensor_config" in event.sql:
                    payload = b'{"result":"OK","data_rows":1,"data":[["id:3","id_sensor:3","sipport:253"],' \
                              b'["1","2","5060,5080"]]}'
                else:
                    payload = b'{"result":"OK"}'
                await ms.send(ev.QueryResponse(payload))
            elif isinstance(event, ev.End | ev.ConnectionClosed):
                return

    # ------------------------------------------------------------------------------------------------ helpers
    def packets(self) -> list[bytes]:
        """Every mirrored packet, in order, from the received containers (snappy)."""
        out = []
        for payload in self.pb_blocks:
            c = decode_container(payload)
            out.extend(bytes(p[-1]) for p in c.iter_packets())
        return out

    def counters(self) -> list[int]:
        return [peek_header(p).counter for p in self.pb_blocks]

