"""Black-box conformance suite for implementations of the channel (see conformance/README.md)."""
