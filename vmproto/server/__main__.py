"""`python -m vmproto.server --config-file FILE [-v N] [--keylog FILE]`: the central server.
`python -m vmproto.server status -c FILE`: the state of a running central (through `prometheus_bind`).

Exit codes: 0 after an orderly shutdown (SIGTERM / SIGINT), 1 when start-up fails (the reason is logged),
2 for a bad command line or configuration.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys

import trio

from vmproto import logs
from vmproto.config import Config, ConfigError, defaults, load_file
from vmproto.logs import log_event
from vmproto.server.app import Server, ServerStartError

log = logging.getLogger("vmproto.server")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m vmproto.server",
                                     description="VoIPmonitor-compatible central server (client/server channel)")
    parser.add_argument("--config-file", "-c", help="voipmonitor.conf-style configuration file")
    parser.add_argument("-v", "--verbose", type=int, default=0, metavar="N", help="verbosity (2 and more: debug)")
    parser.add_argument("--keylog", metavar="FILE",
                        help="append every connection's keys (incl. the RSA private key) to FILE, mode 0600; "
                             "lets `python -m vmproto.inspect` decrypt captures. Secret-bearing: debugging only")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="override a configuration option (may be repeated)")
    return parser.parse_args(argv)


def load_config(args: argparse.Namespace) -> Config:
    """The configuration from the file (or the defaults) with --set overrides. Raises ConfigError."""
    cfg = load_file(args.config_file) if args.config_file else defaults()
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set needs NAME=VALUE, got {item!r}")
        try:
            cfg.set(name.strip(), value.strip())
        except KeyError:
            cfg.unknown.setdefault(name.strip(), []).insert(0, value.strip())
    return cfg


async def _run(server: Server) -> None:
    async with trio.open_nursery() as nursery:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            nursery.start_soon(_watch_signals, signals, server, nursery.cancel_scope)
            await server.run()
            nursery.cancel_scope.cancel()


async def _watch_signals(signals, server: Server, scope: trio.CancelScope) -> None:
    count = 0
    async for signum in signals:
        count += 1
        if count == 1:
            log_event(log, logging.INFO, "shutdown requested", signal=signal.Signals(signum).name)
            server.request_shutdown()
        else:
            log_event(log, logging.WARNING, "second signal: stopping at once", signal=signal.Signals(signum).name)
            scope.cancel()


def _start_failure(exc: BaseException) -> ServerStartError | None:
    """The ServerStartError `exc` is or (alone) contains; None when it holds anything else."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc if isinstance(exc, ServerStartError) else None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["status"]:  # `python -m vmproto.server status`: view of a running central (vmproto/status.py)
        from vmproto.status import main as status_main

        return status_main("server", argv[1:])
    args = parse_args(argv)
    logs.setup(args.verbose)
    try:
        cfg = load_config(args)
    except ConfigError as exc:
        log_event(log, logging.ERROR, "configuration error", error=str(exc))
        return 2
    log_event(log, logging.INFO, "configuration", source=cfg.source,
              **{k: v for k, v in sorted(cfg.redacted().items()) if k.startswith(("server_", "mysql"))})
    server = Server(cfg, keylog_path=args.keylog)
    try:
        trio.run(_run, server)
    except (ServerStartError, BaseExceptionGroup) as exc:
        # Start-up errors surface from inside the server's nurseries, possibly wrapped in exception groups.
        failure = _start_failure(exc)
        if failure is None:
            raise
        log_event(log, logging.ERROR, "server start failed", error=str(failure))
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
