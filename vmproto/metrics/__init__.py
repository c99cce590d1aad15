"""Operations: the Prometheus endpoint (`prometheus_bind`) and the `/status` document of server and sensor.

Metric names and labels are a stable interface, documented in docs/metrics.md.
"""

from vmproto.metrics.endpoint import (
    MetricsConfigError,
    MetricsEndpoint,
    MetricsStartError,
    parse_bind,
    start_endpoint,
)
from vmproto.metrics.sensor import SensorCollector, sensor_status
from vmproto.metrics.server import ServerCollector, server_status

__all__ = ["MetricsConfigError", "MetricsEndpoint", "MetricsStartError", "SensorCollector", "ServerCollector",
           "parse_bind", "sensor_status", "server_status", "start_endpoint"]
