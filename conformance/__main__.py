"""Command line: `python -m conformance server ...` and `python -m conformance sensor ...` (see conformance/README.md)."""

from __future__ import annotations

import argparse
import base64
import binascii
import sys
from collections.abc import Sequence

import trio

from .model import Outcome
from .report import exit_code, format_result, junit_xml, matrix_markdown, summary, write
from .runner import run_cases, select_cases
from .specdata import SpecError, load_spec


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise argparse.ArgumentTypeError("not valid base64") from None


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--time-scale", type=float, default=1.0,
                   help="multiply every protocol duration by this (the target's timeouts must be scaled alike)")
    p.add_argument("--max-wait", type=float, default=20.0,
                   help="skip cases whose scaled waits are longer than this many seconds (default 20)")
    p.add_argument("--only", action="append", default=[], metavar="PATTERN",
                   help="run only cases whose id, sections or title match this regular expression (repeatable)")
    p.add_argument("--skip", action="append", default=[], metavar="PATTERN",
                   help="leave out cases matching this regular expression (repeatable)")
    p.add_argument("--junit", metavar="FILE", help="write JUnit XML here")
    p.add_argument("--matrix", metavar="FILE", help="write the coverage matrix (Markdown) here")
    p.add_argument("--parallel", type=int, default=8, help="cases run at the same time (default 8)")
    p.add_argument("--case-timeout", type=float, default=120.0, help="hard limit per case in seconds")
    p.add_argument("--spec-dir", help="directory holding errors.toml and vectors.toml (default: ../spec)")
    p.add_argument("--list", action="store_true", help="list the cases and exit")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the summary")


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of the suite."""
    parser = argparse.ArgumentParser(prog="python -m conformance", description=__doc__)
    sub = parser.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("server", help="play sensor and GUI against a central")
    s.add_argument("--target", type=_host_port, required=True, metavar="HOST:PORT")
    s.add_argument("--password", required=True, help="the central's server_password")
    s.add_argument("--mysql", metavar="DSN", help="also check the central's database (mysql://user:pass@host:port/db)")
    s.add_argument("--central-sensor-id", type=int, default=-1, help="the central's own id_sensor (default -1)")
    s.add_argument("--manager-key", type=_b64, help="the central's manager AES key (base64), enables AES GUI cases")
    s.add_argument("--manager-iv", type=_b64, help="the central's manager AES IV (base64)")
    _common(s)
    n = sub.add_parser("sensor", help="play the central against a sensor started from a command template")
    n.add_argument("--command", required=True, metavar="CMD",
                   help="command starting the sensor; placeholders {host} {port} {password} {id_sensor} {workdir} "
                        "{pcap} (the suite writes {workdir}/sensor.conf)")
    n.add_argument("--listen", type=_host_port, default=("127.0.0.1", 0), metavar="HOST:PORT",
                   help="address of the suite's central (default 127.0.0.1:0 = a free port per case; a fixed port "
                        "makes the cases run one at a time)")
    n.add_argument("--password", default="conformance-secret", help="server_password given to the sensor")
    n.add_argument("--id-sensor", type=int, default=7, help="id_sensor given to the sensor (default 7)")
    n.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="extra option for the generated sensor.conf (repeatable), e.g. --set interface=eth0")
    n.add_argument("--startup", type=float, default=20.0,
                   help="seconds a sensor may take to open its first connection (default 20)")
    n.add_argument("--workdir", help="where case directories are made (default: a temporary directory)")
    n.add_argument("--keep-workdirs", action="store_true", help="keep configs, spools and sensor logs")
    _common(n)
    return parser


class UsageError(Exception):
    """A command-line value the parser cannot check by itself is wrong."""


def _extra_options(items: list[str]) -> dict[str, str]:
    extra: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"--set wants NAME=VALUE, got {item!r}")
        extra[name.strip()] = value.strip()
    return extra


def _check_sensor_args(args: argparse.Namespace) -> None:
    """Raise UsageError for a bad --command template or --set item."""
    from .sensorproc import TemplateError, expand_command

    try:
        expand_command(args.command, {})
    except TemplateError as exc:
        raise UsageError(f"--command: {exc}") from None
    _extra_options(args.set)


def _sensor_context(args: argparse.Namespace, spec):  # noqa: ANN001, ANN202
    from pathlib import Path

    from .sensorctx import SensorContext, SensorOptions

    extra = _extra_options(args.set)
    host, port = args.listen
    opts = SensorOptions(args.command, host, port, args.time_scale, args.max_wait, args.password, args.id_sensor,
                         args.startup, Path(args.workdir) if args.workdir else None, args.keep_workdirs, extra)
    if port:
        args.parallel = 1  # one listening port: one case at a time
    return SensorContext(opts, spec), f"sensor `{args.command}`"


async def _main(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec_dir)
    cases = select_cases(args.mode, args.only, skip=args.skip)
    if args.list:
        for c in cases:
            print(f"{c.id:40} {c.level.value:15} {' '.join(c.sections):30} {c.title}")
        return 0
    if args.mode == "server":
        from .context import ServerContext, ServerOptions

        host, port = args.target
        opts = ServerOptions(host, port, args.password, args.time_scale, args.mysql, args.central_sensor_id,
                             args.manager_key, args.manager_iv, args.max_wait)
        ctx = ServerContext(opts, spec)
        target = f"central {host}:{port}"
    else:
        ctx, target = _sensor_context(args, spec)

    def progress(r) -> None:  # noqa: ANN001
        if not args.quiet:
            print(format_result(r), flush=True)

    try:
        results = await run_cases(cases, ctx, parallel=args.parallel,
                                  case_timeout=args.case_timeout, progress=progress)
    finally:
        if hasattr(ctx, "cleanup"):
            ctx.cleanup()
    text = summary(results, target)
    if getattr(ctx, "notes", None):
        text += "notes:\n" + "".join(f"  {n}\n" for n in ctx.notes)
    print("\n" + text if not args.quiet else text, end="")
    if args.junit:
        write(args.junit, junit_xml(results, f"conformance.{args.mode}"))
    if args.matrix:
        # Both modes in one table, so every spec section shows who covers it; only this run's cases have results.
        other = "sensor" if args.mode == "server" else "server"
        write(args.matrix, f"# Coverage matrix, both modes; results of the {args.mode} mode ({target})\n\n"
              + matrix_markdown(cases + select_cases(other), results, spec.sections))
    if not any(r.outcome is not Outcome.SKIP for r in results) and results:
        print("every selected case was skipped", file=sys.stderr)
    return exit_code(results)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code (0 only when every MUST case passed; 2 for usage errors)."""
    args = build_parser().parse_args(argv)
    try:
        if args.mode == "sensor":
            _check_sensor_args(args)
        return trio.run(_main, args)
    except UsageError as exc:
        print(f"conformance: {exc}", file=sys.stderr)
        return 2
    except SpecError as exc:
        print(f"conformance: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
