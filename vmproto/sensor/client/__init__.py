"""The sensor's client side of the C/S channel (spec §6-§14): service, store (with its journal), query,
response/responses and packet mirroring, over the sans-IO machines of `vmproto.wire`."""
