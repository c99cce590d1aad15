"""Command line: `python -m vmproto.inspect CAPTURE.pcap --keys KEYS.json [--json] [--conn PORT] [--port 60024]`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from vmproto.inspect.errors import InspectError
from vmproto.inspect.keys import KeyStore, load_keys
from vmproto.inspect.pipeline import DEFAULT_PORT, inspect_capture
from vmproto.inspect.render import render, to_json_line


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m vmproto.inspect",
        description="Decode VoIPmonitor client/server channel connections in a capture.",
    )
    p.add_argument("capture", help="pcap or pcapng file")
    p.add_argument("--keys", help="key file (recordings' JSON document or our --keylog JSON lines)")
    p.add_argument("--json", action="store_true", help="one JSON object per message (transcript format)")
    p.add_argument("--conn", type=int, metavar="PORT", help="only the connection(s) from this client port")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"channel port (default {DEFAULT_PORT})")
    p.add_argument("--full", action="store_true", help="do not shorten texts and packet lists")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the inspector; return the exit status (0 ok, 1 some message could not be decoded, 2 cannot run)."""
    args = _parser().parse_args(argv)
    if not 0 < args.port < 65536:
        print(f"inspect: --port {args.port} is not a TCP port", file=sys.stderr)
        return 2
    try:
        keys = load_keys(args.keys) if args.keys else KeyStore.empty()
        messages = list(inspect_capture(args.capture, keys, server_port=args.port, client_port=args.conn))
    except InspectError as exc:
        print(f"inspect: {exc}", file=sys.stderr)
        return 2
    out = sys.stdout
    try:
        if args.json:
            for msg in messages:
                out.write(to_json_line(msg) + "\n")
        else:
            if not messages:
                out.write(f"no connection to port {args.port} in the capture\n")
            for line in render(messages, full=args.full):
                out.write(line + "\n")
        out.flush()
    except BrokenPipeError:  # `| head` closed the pipe: not an error of ours
        return 0
    return 1 if any(m.get("kind") == "error" for m in messages) else 0


if __name__ == "__main__":
    sys.exit(main())
