"""vmproto: a VoIPmonitor-compatible client/server channel, sensor and central server on Trio."""

__version__ = "0.1.0"
