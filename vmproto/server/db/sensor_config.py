"""`mysqlloadconfig`: configuration options kept in the central's sensor_config table.

The table has `id`, `id_sensor` and one column per option that the GUI has set (the reference adds
columns as needed, all TEXT). A sensor reads the first row for its id (or the row with a NULL id_sensor
when it has none); every non-NULL option column overrides its configuration file.
"""

from __future__ import annotations

from .connection import Connection

__all__ = ["load_sensor_config"]

_NOT_OPTIONS = frozenset({"id", "id_sensor"})


async def load_sensor_config(conn: Connection, id_sensor: int | None) -> dict[str, str]:
    """Return {option name: value} from sensor_config for `id_sensor` (None or <= 0: the shared row).

    Options whose value is NULL are left out (they keep the file's value). Values are decoded as UTF-8
    with replacement. Raises SqlError (e.g. 1146 when the table does not exist) or PrivilegeError.
    """
    if id_sensor is not None and not isinstance(id_sensor, int):
        raise TypeError("id_sensor must be an int or None")
    where = f"= {id_sensor:d}" if id_sensor is not None and id_sensor > 0 else "IS NULL"
    result = await conn.execute(f"SELECT * FROM sensor_config WHERE id_sensor {where} LIMIT 1")
    if not result.rows:
        return {}
    options: dict[str, str] = {}
    for (name, _type), value in zip(result.columns, result.rows[0], strict=True):
        if name.lower() in _NOT_OPTIONS or value is None:
            continue
        options[name] = value.decode("utf-8", "replace")
    return options
