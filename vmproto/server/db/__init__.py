"""The central server's MariaDB layer (spec §8 store, §10 query): sessions over trio-mysql, the schema and
its partitions, store execution with per-id_main writers, remote query execution and the sensor_config
options."""

from .connection import Connection, ConnectParams, Pool, ResultSet
from .errors import (
    ConnectionLostError,
    DatabaseError,
    PrivilegeError,
    SchemaError,
    SqlError,
    StoreMessageError,
)
from .maintenance import maintenance_loop, prepare_database, prune_applied_digests
from .query import run_query
from .schema import SchemaReport, ensure_partitions, ensure_schema
from .sensor_config import load_sensor_config
from .store import StoreMessage, StoreResult, StoreWriter, apply_store_message

__all__ = [
    "ConnectParams",
    "Connection",
    "ConnectionLostError",
    "DatabaseError",
    "Pool",
    "PrivilegeError",
    "ResultSet",
    "SchemaError",
    "SchemaReport",
    "SqlError",
    "StoreMessage",
    "StoreMessageError",
    "StoreResult",
    "StoreWriter",
    "apply_store_message",
    "ensure_partitions",
    "ensure_schema",
    "load_sensor_config",
    "maintenance_loop",
    "prepare_database",
    "prune_applied_digests",
    "run_query",
]
