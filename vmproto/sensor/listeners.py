"""Packets that arrive as messages instead of being sniffed: the HEP and IPFIX listeners (issue 4).

PBXs and SBCs push their traffic to a sensor: HEP v3 over UDP or TCP (`hep = yes`, `hep_bind_ip`, `hep_bind_port`,
`hep_bind_udp`), and Oracle-SBC-style IPFIX over TCP (`ipfix = yes`, `ipfix_bind_ip`, `ipfix_bind_port`), as the
reference sniffer receives them. Each listener turns what it receives into `DecodedPacket` records (the decoders
in vmproto.sensor.decode.hep / .ipfix) and hands them to the sensor's pipeline as lists, next to the capture's
batches. Malformed input is counted by kind in `errors` and skipped; one bad exporter never stops the listener.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable
from typing import Any

import trio

from vmproto.logs import log_event
from vmproto.sensor.decode.errors import DecodeError
from vmproto.sensor.decode.hep import HepStreamDecoder, hep_to_record, parse_hep3
from vmproto.sensor.decode.ipfix import IpfixStreamDecoder
from vmproto.sensor.decode.record import DecodedPacket

__all__ = ["Listeners"]

log = logging.getLogger("vmproto.sensor.listeners")

MAX_DATAGRAM = 65535
READ_SIZE = 65536

Records = list[DecodedPacket]


class Listeners:
    """The configured listeners. `await nursery.start(listeners.run, send)` binds them all (raising OSError when a
    port cannot be bound) and then serves until cancelled; `send` receives lists of records."""

    def __init__(self, cfg: Any, clock: Callable[[], float] = time.time) -> None:
        self.hep = bool(cfg.get("hep", False))
        self.hep_udp = bool(cfg.get("hep_bind_udp", True))
        self.hep_addr = (str(cfg.get("hep_bind_ip", "0.0.0.0")), int(cfg.get("hep_bind_port", 9060)))
        self.ipfix = bool(cfg.get("ipfix", False))
        self.ipfix_addr = (str(cfg.get("ipfix_bind_ip", "0.0.0.0")), int(cfg.get("ipfix_bind_port", 4739)))
        self._clock = clock
        self.records = 0
        self.errors: collections.Counter[str] = collections.Counter()
        self.addresses: dict[str, tuple[str, int]] = {}

    @property
    def enabled(self) -> bool:
        return self.hep or self.ipfix

    def _now_ns(self) -> int:
        return int(self._clock() * 1_000_000_000)

    def _hep_records(self, messages: list[Any]) -> Records:
        out: Records = []
        now = self._now_ns()
        for msg in messages:
            try:
                out.append(hep_to_record(msg, now))
            except DecodeError as exc:
                self.errors[exc.kind] += 1
        return out

    async def _deliver(self, send: trio.MemorySendChannel[Any], records: Records) -> None:
        if records:
            self.records += len(records)
            await send.send(records)

    async def run(self, send: trio.MemorySendChannel[Any], *,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with send, trio.open_nursery() as nursery:
            if self.hep and self.hep_udp:
                sock = trio.socket.socket(trio.socket.AF_INET6 if ":" in self.hep_addr[0] else trio.socket.AF_INET,
                                          trio.socket.SOCK_DGRAM)
                await sock.bind(self.hep_addr)
                self.addresses["hep_udp"] = sock.getsockname()[:2]
                nursery.start_soon(self._hep_udp, sock, send.clone())
            if self.hep:
                listeners = await trio.open_tcp_listeners(self.hep_addr[1], host=self.hep_addr[0])
                self.addresses["hep_tcp"] = listeners[0].socket.getsockname()[:2]
                nursery.start_soon(trio.serve_listeners, self._stream_handler(send, "hep"), listeners)
            if self.ipfix:
                listeners = await trio.open_tcp_listeners(self.ipfix_addr[1], host=self.ipfix_addr[0])
                self.addresses["ipfix_tcp"] = listeners[0].socket.getsockname()[:2]
                nursery.start_soon(trio.serve_listeners, self._stream_handler(send, "ipfix"), listeners)
            for name, addr in self.addresses.items():
                log_event(log, logging.INFO, "listening", what=name, address=f"{addr[0]}:{addr[1]}")
            task_status.started()

    async def _hep_udp(self, sock: Any, send: trio.MemorySendChannel[Any]) -> None:
        async with send:
            with sock:
                while True:
                    data, _peer = await sock.recvfrom(MAX_DATAGRAM)
                    try:
                        messages = [parse_hep3(data)]
                    except DecodeError as exc:
                        self.errors[exc.kind] += 1
                        continue
                    await self._deliver(send, self._hep_records(messages))

    def _stream_handler(self, send: trio.MemorySendChannel[Any], kind: str) -> Callable[[Any], Any]:
        async def handle(stream: trio.SocketStream) -> None:
            peer = stream.socket.getpeername()
            out = send.clone()
            decoder: HepStreamDecoder | IpfixStreamDecoder = HepStreamDecoder() if kind == "hep" \
                else IpfixStreamDecoder()
            log_event(log, logging.INFO, f"{kind} exporter connected", peer=f"{peer[0]}:{peer[1]}")
            async with out, stream:
                try:
                    while data := await stream.receive_some(READ_SIZE):
                        try:
                            if isinstance(decoder, HepStreamDecoder):
                                records = self._hep_records(decoder.feed(data))
                            else:
                                records = decoder.feed(data)
                                while decoder.replies:  # IPFIX handshake: the exporter waits for our answer
                                    await stream.send_all(decoder.replies.pop(0))
                        except DecodeError as exc:
                            self.errors[exc.kind] += 1
                            continue
                        await self._deliver(out, records)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                    log_event(log, logging.INFO, f"{kind} exporter connection lost", peer=f"{peer[0]}:{peer[1]}",
                              error=str(exc))
                    return
            log_event(log, logging.INFO, f"{kind} exporter disconnected", peer=f"{peer[0]}:{peer[1]}")

        return handle
