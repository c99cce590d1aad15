"""The sensor: capture, decode, call analysis, and the client side of the channel."""
