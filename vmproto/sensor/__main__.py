"""`python -m vmproto.sensor --config-file FILE [-r PCAP] [-v N] [--keylog FILE]`
`python -m vmproto.sensor status -c FILE`: the state of a running sensor (through `prometheus_bind`).

Exit status: 0 when everything was processed and stored; 1 when the run ended but something was not
done (capture error, CDRs not committed, spool write errors; each is printed); 2 when the sensor could
not start (bad configuration, database unreachable or refusing the schema, manager port in use).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import trio

from vmproto import config, logs
from vmproto.keylog import KeyLog
from vmproto.sensor.app import SensorApp, SensorSetupError
from vmproto.sensor.capture.options import Replay
from vmproto.sensor.remote import RemoteSetupError, apply_sensor_config, client_mode, fetch_sensor_config
from vmproto.server.db.errors import DatabaseError

log = logging.getLogger("vmproto.sensor")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m vmproto.sensor", description="vmproto sensor")
    p.add_argument("--config-file", "-c", required=True, type=Path, help="voipmonitor.conf-style file")
    p.add_argument("-r", "--read-pcap", dest="replay", type=Path,
                   help="process this pcap/pcapng file instead of capturing live")
    p.add_argument("--pace", action="store_true",
                   help="with -r: replay at the pace the packets were captured (default: as fast as possible)")
    p.add_argument("-v", dest="verbosity", type=int, default=0, help="verbosity (2 or more: debug)")
    p.add_argument("--keylog", type=Path, help="append session keys of C/S connections to this file (0600)")
    p.add_argument("--stay", action="store_true",
                   help="with -r: once the file is processed and delivered, keep serving the central (service "
                        "channel, GUI tasks such as PCAP fetches from the spool) until SIGTERM")
    return p


def _startup_failures(exc: BaseException) -> list[str] | None:
    """The messages of a start-up failure (possibly grouped by the nursery), or None when `exc` holds
    anything else (a bug: let it propagate with its traceback)."""
    leaves: list[BaseException] = []
    stack = [exc]
    while stack:
        e = stack.pop()
        if isinstance(e, BaseExceptionGroup):
            stack.extend(e.exceptions)
        else:
            leaves.append(e)
    messages = []
    for e in leaves:
        if isinstance(e, DatabaseError):
            messages.append(f"database: {e.message}")
        elif isinstance(e, (SensorSetupError, RemoteSetupError, OSError)):
            messages.append(str(e))
        else:
            return None
    return messages


def main(argv: list[str] | None = None) -> int:
    """Run the sensor (or `status`: show a running sensor's state); return the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["status"]:  # `python -m vmproto.sensor status`: view of a running sensor (vmproto/status.py)
        from vmproto.status import main as status_main

        return status_main("sensor", argv[1:])
    args = build_parser().parse_args(argv)
    logs.setup(args.verbosity)
    try:
        cfg = config.load_file(args.config_file)
    except config.ConfigError as exc:
        print(f"vmproto sensor: {exc}", file=sys.stderr)
        return 2
    if args.replay is not None and not args.replay.is_file():
        print(f"vmproto sensor: -r {args.replay}: no such file", file=sys.stderr)
        return 2
    keylog = None
    try:
        if args.keylog is not None:
            keylog = KeyLog(args.keylog)
        if client_mode(cfg) and cfg.get("mysqlloadconfig", True):
            # As a reference sensor: the configuration row in the central's database overrides the file.
            apply_sensor_config(cfg, trio.run(fetch_sensor_config, cfg))
        app = SensorApp(cfg, replay=args.replay, keylog=keylog, stay=args.stay,
                        replay_mode=Replay.PACE if args.pace else Replay.FAST)
        report = trio.run(app.run)
    except (SensorSetupError, RemoteSetupError, DatabaseError, OSError, BaseExceptionGroup) as exc:
        messages = _startup_failures(exc)
        if messages is None:
            raise
        for message in messages:
            print(f"vmproto sensor: {message}", file=sys.stderr)
        return 2
    finally:
        if keylog is not None:
            keylog.close()
    for problem in report.problems:
        print(f"vmproto sensor: {problem}", file=sys.stderr)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
