"""What a server-mode case gets: how to reach the central, the password, time scaling, helpers for handshakes."""

from __future__ import annotations

import itertools
import os
import re
from dataclasses import dataclass, field
from typing import Any

import trio

from vmproto.wire import vmjson
from vmproto.wire.errors import ProtocolError

from .model import CaseFailed, skip
from .specdata import Spec
from .wirekit import Wire, new_keys, opening, rsa_block, rsa_key_bits

__all__ = ["RSA_BITS", "FreshTime", "ServerContext", "ServerOptions", "local_time_text"]

# spec §1.2 / §3.1: key size per type
RSA_BITS = {"service": 4096, "store": 2048, "packetbuffer block": 2048, "query": 2048, "responses": 2048,
            "keycheck": 2048}
# spec §3.2: the exact shape of the rsa_key message (compact, "/" escaped, \n as the 2-char escape)
_RSA_KEY_MSG = re.compile(
    rb'\{"rsa_key":"-----BEGIN PUBLIC KEY-----\\n(?:(?:[A-Za-z0-9+=]|\\/){1,64}\\n)+-----END PUBLIC KEY-----\\n"\}'
)
SENSOR_VERSION = 2026004000


class FreshTime:
    """A `time` credential resolved when the block is written (the central allows only 2 s of difference, and the
    rsa_key may take seconds to arrive)."""

    __slots__ = ("offset",)

    def __init__(self, offset: float = 0.0) -> None:
        self.offset = offset


def local_time_text(offset: float = 0.0) -> str:
    """Local wall-clock time `YYYY-MM-DD HH:MM:SS` shifted by offset seconds (the sensors' `time` format)."""
    import time

    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(time.time() + offset))


_PROCESS_IDS = itertools.count(3000 + (os.getpid() * 7) % 20000)


@dataclass(slots=True)
class ServerOptions:
    """Command-line options of the server mode."""

    host: str
    port: int
    password: str
    time_scale: float = 1.0
    mysql: str | None = None
    central_sensor_id: int = -1
    manager_key: bytes | None = None
    manager_iv: bytes | None = None
    max_wait: float = 20.0  # cases whose scaled waits exceed this are skipped
    sensor_id_base: int = 0


@dataclass(slots=True)
class ServerContext:
    """Per-run state shared by the server-mode cases."""

    options: ServerOptions
    spec: Spec
    notes: list[str] = field(default_factory=list)
    _ids: Any = None

    def __post_init__(self) -> None:
        # One id sequence per process unless a base is given: several contexts (runs) against the same central
        # must not reuse an id whose service may still be registered there (a duplicate is refused, spec §7.3).
        self._ids = itertools.count(self.options.sensor_id_base) if self.options.sensor_id_base else _PROCESS_IDS

    # time -----------------------------------------------------------------------------------------------------
    def t(self, seconds: float) -> float:
        """A protocol duration as the target runs it (scaled by --time-scale)."""
        return seconds * self.options.time_scale

    def wait(self, seconds: float) -> float:
        """How long to wait for something the spec says happens within `seconds` (scaled, plus slack)."""
        return self.t(seconds) + 1.0 + 0.2 * self.t(seconds)

    def need_wait(self, seconds: float) -> None:
        """Skip the case when a spec duration, scaled, is longer than --max-wait allows."""
        if self.t(seconds) > self.options.max_wait:
            skip(f"needs a {self.t(seconds):.0f} s wait (spec {seconds:.0f} s x time scale "
                 f"{self.options.time_scale}); raise --max-wait or lower the target's timeouts with --time-scale")

    # identities -----------------------------------------------------------------------------------------------
    def new_sensor_id(self) -> int:
        """A sensor id no other case of this run uses."""
        return next(self._ids)

    # connections ----------------------------------------------------------------------------------------------
    async def connect(self, label: str = "") -> Wire:
        """A new TCP connection to the central."""
        return await Wire.connect(self.options.host, self.options.port, label)

    async def open(self, type_connection: str, *, line: bytes | None = None, **fields: object) -> Wire:
        """Connect and write the opening line (the exact sensor form unless `line` is given)."""
        wire = await self.connect(type_connection)
        await wire.send(line if line is not None else opening(type_connection, **fields))
        return wire

    async def read_rsa_key(self, wire: Wire, bits: int) -> bytes:
        """Read the central's first block: plain `rsa_key` message of spec §3.2 with a key of `bits`.

        Returns the PEM. Raises CaseFailed for any deviation.
        """
        # reference centrals answer within 3.1 s (4096-bit key generation); a pool may run dry under load
        payload = await wire.read_plain(self.wait(10), "the rsa_key block")
        if not _RSA_KEY_MSG.fullmatch(payload):
            raise CaseFailed(f"rsa_key message does not follow spec §3.2 (compact, \\/ escapes): {payload[:90]!r}")
        try:
            pem = vmjson.loads(payload)["rsa_key"].encode("ascii")
        except (ProtocolError, KeyError, UnicodeEncodeError) as exc:
            raise CaseFailed(f"rsa_key message does not parse: {exc}") from None
        got = rsa_key_bits(pem)
        if got != bits:
            raise CaseFailed(f"RSA key has {got} bits, spec §3.1 wants {bits}")
        expected_len = {2048: 451, 4096: 800}[bits]
        if len(pem) != expected_len:
            raise CaseFailed(f"PEM is {len(pem)} bytes, spec §3.1 says {expected_len}")
        return pem

    def credentials(self, *, password: str | None = None, keys: tuple[str, str] | None = None) -> dict[str, Any]:
        """Generic credentials (spec §6.2) in the exact member order."""
        ckey, ivec = keys or new_keys()
        return {"password": self.options.password if password is None else password, "aes_ckey": ckey,
                "aes_ivec": ivec}

    def pb_credentials(self, *, password: str | None = None, time_text: str | None = None,
                       time_offset: float = 0.0, sensor_id: int = 0, sensor_name: str = "") -> dict[str, Any]:
        """Packetbuffer credentials (spec §6.2) in the exact member order; `time` is the local time at sending
        (shifted by `time_offset`) unless `time_text` is given."""
        creds = self.credentials(password=password)
        creds.update(time=FreshTime(time_offset) if time_text is None else time_text, sensor_id=sensor_id,
                     sensor_name=sensor_name)
        return creds

    def service_credentials(self, sensor_id: int, *, password: str | None = None, sensor_string: str = "",
                            restore: bool = False, check_ping_response: bool = True, auto_parameters: bool = True,
                            compress_types: str = "gzip,zstd,lzo", use_encode_data: bool = False,
                            sensor_version: int = SENSOR_VERSION) -> dict[str, Any]:
        """Service credentials (spec §7.2) in the exact member order."""
        ckey, ivec = new_keys()
        creds: dict[str, Any] = {"sensor_id": sensor_id}
        if sensor_string:
            creds["sensor_string"] = sensor_string
        creds.update(password=self.options.password if password is None else password, aes_ckey=ckey,
                     aes_ivec=ivec, sensor_version=sensor_version)
        if restore:
            creds["restore"] = 1
        if check_ping_response:
            creds["check_ping_response"] = 1
        if auto_parameters:
            creds["auto_parameters"] = 1
        creds["compress_types"] = compress_types
        if use_encode_data:
            creds["remote_chart_server"] = 1
            creds["use_encode_data"] = 1
        return creds

    async def handshake(self, type_connection: str, creds: dict[str, Any] | bytes | None = None, *,
                        expect: bytes | None = b"OK") -> tuple[Wire, bytes]:
        """Opening line, rsa_key, RSA credentials, plain result (spec §6.1).

        `creds` defaults to correct credentials for the type; bytes are sent as the JSON text as is. Installs the
        AES keys on the Wire. Returns (wire, result payload). With `expect` set, anything else raises CaseFailed.
        """
        bits = RSA_BITS[type_connection]
        wire = await self.open(type_connection)
        pem = await self.read_rsa_key(wire, bits)
        if creds is None:
            creds = self.pb_credentials() if type_connection == "packetbuffer block" else self.credentials()
        if isinstance(creds, dict):
            creds = {k: local_time_text(v.offset) if isinstance(v, FreshTime) else v for k, v in creds.items()}
        text = creds if isinstance(creds, bytes) else vmjson.dumps(creds)
        if isinstance(creds, dict):
            wire.install_keys(creds["aes_ckey"], creds["aes_ivec"])
        await wire.send(rsa_block(pem, text))
        result = await wire.read_plain(self.wait(5), f"the {type_connection} handshake result")
        if expect is not None and result != expect:
            raise CaseFailed(f"{type_connection} handshake: expected {expect!r}, got {result!r}")
        return wire, result

    async def service(self, sensor_id: int | None = None, **kw: Any) -> tuple[Wire, bytes, dict[str, Any]]:
        """A registered service connection. Returns (wire, result payload, credentials sent)."""
        sid = self.new_sensor_id() if sensor_id is None else sensor_id
        creds = self.service_credentials(sid, **kw)
        wire, result = await self.handshake("service", creds, expect=None)
        if result != b"OK" and not result.startswith(b'{"result":"OK"'):
            raise CaseFailed(f"service handshake of sensor {sid} refused: {result!r}")
        return wire, result, creds

    async def sleep(self, seconds: float) -> None:
        """Sleep in real time."""
        await trio.sleep(seconds)
