"""What the service handshake negotiated, shared by every channel of one sensor process (spec §7.4, §5.6).

Store connections wait for `accepted` (spec §8.1: never before the service handshake succeeded); `response`
connections go to `service_host` with the service connection's AES strings (spec §11.1).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import trio

from vmproto.wire.compression import Compression
from vmproto.wire.events import ServiceParameters

__all__ = ["SessionState", "SensorIdentity"]


@dataclass(frozen=True, slots=True)
class SensorIdentity:
    """Who the sensor is on the wire: `id_sensor` (-1 = not set), `name_sensor`, `server_password`."""

    id_sensor: int = -1
    name: str = ""
    password: str = ""
    version: str = "2026.04.0"
    packetbuffer_sender: bool = False

    def __repr__(self) -> str:  # the password never reaches a log line (spec §17.4)
        return f"SensorIdentity(id_sensor={self.id_sensor}, name={self.name!r}, pb={self.packetbuffer_sender})"


@dataclass
class SessionState:
    """Negotiated parameters and the live service connection's details."""

    identity: SensorIdentity = field(default_factory=SensorIdentity)
    parameters: ServiceParameters | None = None
    accepted_plain_ok: bool = False  # the central answered plain `OK` (no auto parameters)
    service_host: str | None = None
    service_keys: tuple[str, str] | None = None
    accepted: trio.Event = field(default_factory=trio.Event)
    service_sessions: int = 0

    def apply(self, parameters: ServiceParameters | None, host: str, keys: tuple[str, str]) -> None:
        """Record a successful service handshake (spec §7.4)."""
        self.parameters = parameters
        self.accepted_plain_ok = parameters is None
        self.service_host = host
        self.service_keys = keys
        self.service_sessions += 1
        self.accepted.set()

    def lost(self) -> None:
        """The service connection ended: responses cannot be routed until the next handshake."""
        self.service_keys = None

    @property
    def compression_confirmed(self) -> bool:
        return self.parameters is not None

    @property
    def store_compression(self) -> Compression:
        """type_compress_store (else type_compress, else gzip); gzip before confirmation (spec §5.6)."""
        if self.parameters is None:
            return Compression.GZIP
        return _supported(self.parameters.store_compression)

    @property
    def query_compression(self) -> Compression:
        """gzip for packetbuffer sensors and before confirmation; else type_compress_query (README item 4)."""
        if self.parameters is None or self.identity.packetbuffer_sender:
            return Compression.GZIP
        return _supported(self.parameters.query_compression)

    @property
    def concat_limit(self) -> int:
        """mysql_concat_limit, 0 when absent (no batching, spec §8.11)."""
        if self.parameters is None or not self.parameters.mysql_concat_limit:
            return 0
        return max(self.parameters.mysql_concat_limit, 0)

    @property
    def responses_enabled(self) -> bool:
        return self.parameters is not None and self.parameters.enable_responses_sender


def _supported(code: int) -> Compression:
    """A code we cannot produce falls back to gzip (spec §5.6); lzo needs liblzo2 at run time."""
    kind = Compression(code)
    if kind is Compression.LZO:
        from vmproto.wire import _lzo

        try:
            _lzo.compress(b"x")
        except _lzo.LzoUnavailable:
            return Compression.GZIP
    return kind
