"""Conformance cases, one module per area; importing this package registers them all in model.CASES."""

from . import (  # noqa: F401  (imported for their @case registrations)
    sensor_packetbuffer,
    sensor_service,
    sensor_store,
    server_framing,
    server_gui,
    server_opening,
    server_packetbuffer,
    server_query,
    server_service,
    server_store,
)
