"""Connection handlers of the central server, one module per connection type (spec §7-§12), on top of the
sans-IO machines of vmproto.wire: `dispatch.handle_connection` is the entry point for an accepted socket."""
