"""Sans-IO core of the VoIPmonitor client/server channel (spec/): bytes in, events out.

Nothing in this package opens sockets, imports trio, or reads the clock.
"""
