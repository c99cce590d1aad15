"""The central server's MariaDB layer: sessions (trio-mysql), schema and partitions, store execution,
remote query execution and the sensor_config options."""
