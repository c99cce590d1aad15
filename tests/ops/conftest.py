"""Fixtures for the operations tests: the central server fixtures of tests/server (an in-process `Server` on
loopback with its own database on the session's private MariaDB)."""

from tests.server.conftest import start_server  # noqa: F401 - re-exported fixture
