"""A deliberately broken vmproto sensor, used by the suite's own tests to prove that sensor-mode cases can fail.

    python -m conformance.peers.brokensensor FAULT -- --config-file F -r PCAP --stay

runs `vmproto.sensor` with one fault patched in (process-local monkeypatching; nothing on disk changes). Each
fault breaks exactly one rule, named in FAULTS, so the matching case must fail while the others still pass.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Callable

__all__ = ["FAULTS", "install", "main"]


def _creds_order() -> None:
    # spec §7.2: sensor_id first; this puts the password first.
    from vmproto.wire import service

    original = service.ServiceClient._credential_fields

    def fields(self, event):  # noqa: ANN001, ANN202
        out = original(self, event)
        return {"password": out.pop("password"), **out}

    service.ServiceClient._credential_fields = fields


def _no_pong() -> None:
    # spec §7.6: every ping answered; this never writes the pong.
    from vmproto.sensor.client import machine_io
    from vmproto.wire import events as ev

    original = machine_io.MachineStream.send

    async def send(self, event):  # noqa: ANN001, ANN202
        if isinstance(event, ev.Pong):
            return None
        return await original(self, event)

    machine_io.MachineStream.send = send


def _changed_resend() -> None:
    # spec §8.10: a resend repeats the body byte for byte; this appends a space to every resent body.
    from vmproto.sensor.client import store

    original = store.message_for
    seen: set[bytes] = set()

    def message_for(id_main, body, client_time):  # noqa: ANN001, ANN202
        msg = original(id_main, body, client_time)
        if body in seen:
            msg = store.StoreMessage(msg.id_main, msg.client_time, (*msg.queries[:-1], msg.queries[-1] + b" "),
                                     msg.batched)
        seen.add(body)
        return msg

    store.message_for = message_for


def _always_time() -> None:
    # spec §8.2: the time part only when check_time was announced; this always sends it.
    from vmproto.sensor.client import store

    original = store.message_for

    def message_for(id_main, body, client_time):  # noqa: ANN001, ANN202
        return original(id_main, body, client_time or store._local_time())

    store.message_for = message_for


def _no_restore() -> None:
    # spec §7.2: `restore` on every reconnect; this never sends it.
    import dataclasses

    from vmproto.sensor.client import service

    original = service.ServiceClient.credentials

    def credentials(self, ckey, ivec):  # noqa: ANN001, ANN202
        return dataclasses.replace(original(self, ckey, ivec), restore=False)

    service.ServiceClient.credentials = credentials


def _no_check() -> None:
    # spec §8.8: `check` before the resend after a JSON reply; this forgets check_store after the handshake.
    from vmproto.sensor.client import store

    original = store.StoreClient._connect

    async def connect(self, id_main):  # noqa: ANN001, ANN202
        ms = await original(self, id_main)
        ms.machine.check_store = False
        return ms

    store.StoreClient._connect = connect


def _patch_pb_send(change: Callable[[bytes, bool], bytes]) -> None:
    """Rewrite every packetbuffer container just before it is written; `change(payload, resend)`."""
    import dataclasses

    from vmproto.sensor.client import machine_io
    from vmproto.wire import events as ev

    original = machine_io.MachineStream.send
    seen: set[bytes] = set()

    async def send(self, event):  # noqa: ANN001, ANN202
        if isinstance(event, ev.PacketbufferBlock):
            body = bytes(event.payload[64:])
            event = dataclasses.replace(event, payload=change(bytes(event.payload), body in seen))
            seen.add(body)
        return await original(self, event)

    machine_io.MachineStream.send = send


def _bump_counter(payload: bytes, resend: bool) -> bytes:
    if not resend:
        return payload
    out = bytearray(payload)
    struct.pack_into("<I", out, 52, struct.unpack_from("<I", out, 52)[0] + 1000)
    return bytes(out)


def _wrong_checksum(payload: bytes, _resend: bool) -> bytes:
    out = bytearray(payload)
    value = struct.unpack_from("<I", out, 48)[0]
    struct.pack_into("<I", out, 48, (value % 65535) + 1 if value else 7)
    return bytes(out)


def _pb_counter() -> None:
    # spec §9.10: a resend keeps the counter; this bumps it on every resend.
    _patch_pb_send(_bump_counter)


def _pb_checksum() -> None:
    # spec §9.6: the checksum covers bytes 64…end; this sends a wrong one.
    _patch_pb_send(_wrong_checksum)


FAULTS: dict[str, tuple[Callable[[], None], str]] = {
    "creds-order": (_creds_order, "sensor-service-credentials"),
    "no-pong": (_no_pong, "sensor-pong"),
    "changed-resend": (_changed_resend, "sensor-store-lost-ok"),
    "always-time": (_always_time, "sensor-store-no-time-part"),
    "no-restore": (_no_restore, "sensor-restore-on-reconnect"),
    "no-check": (_no_check, "sensor-store-queue-full-check"),
    "pb-counter": (_pb_counter, "sensor-pb-resend"),
    "pb-checksum": (_pb_checksum, "sensor-pb-container"),
}


def install(fault: str) -> None:
    """Patch `fault` into this process. Raises KeyError for an unknown fault."""
    FAULTS[fault][0]()


def main(argv: list[str] | None = None) -> int:
    """Install the fault named by the first argument and run the sensor with the arguments after `--`."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 2 or args[1] != "--" or args[0] not in FAULTS:
        print(f"usage: python -m conformance.peers.brokensensor {{{','.join(FAULTS)}}} -- SENSOR ARGS",
              file=sys.stderr)
        return 2
    install(args[0])
    from vmproto.sensor.__main__ import main as sensor_main

    return sensor_main(args[2:])


if __name__ == "__main__":
    sys.exit(main())
