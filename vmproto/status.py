"""`python -m vmproto.server status` / `python -m vmproto.sensor status`: a one-screen view of a running process.

Transport: the process's metrics endpoint (`prometheus_bind = host:port`) serves `/status`, a JSON document built
from the same live objects as `/metrics` (vmproto.metrics.server_status / sensor_status). This command finds the
address in the configuration file (or takes `--url`), fetches the document and renders it. `--json` prints the
document as is, for scripts.

Exit status: 0 shown; 1 the process could not be reached or answered something unexpected; 2 bad command line or
configuration (no `prometheus_bind`).
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from vmproto.config import ConfigError, load_file
from vmproto.metrics.endpoint import MetricsConfigError, parse_bind

__all__ = ["StatusError", "fetch_status", "main", "render", "render_sensor", "render_server", "url_for_bind"]


class StatusError(Exception):
    """The status could not be obtained (the message says from where and why)."""


def url_for_bind(bind: str) -> str:
    """The base URL to reach an endpoint bound at `bind` from this host (wildcards → loopback).
    Raises MetricsConfigError for a bad value."""
    host, port = parse_bind(bind)
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def fetch_status(base_url: str, timeout: float = 5.0) -> dict[str, Any]:
    """GET `<base_url>/status` and return the decoded document. Raises StatusError."""
    url = base_url.rstrip("/") + "/status"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - http(s) URL built above
            body = resp.read(16 * 1024 * 1024)
    except urllib.error.HTTPError as exc:
        raise StatusError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise StatusError(f"{url}: cannot reach the process ({reason}); is it running with prometheus_bind "
                          "set to this address?") from None
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise StatusError(f"{url}: not a status document ({exc})") from None
    if not isinstance(doc, dict) or doc.get("role") not in ("server", "sensor"):
        raise StatusError(f"{url}: not a vmproto status document")
    return doc


# --- rendering ---------------------------------------------------------------------------------------------------

def _dur(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _kv(mapping: dict[str, Any], empty: str = "none") -> str:
    items = [f"{k}={v}" for k, v in mapping.items()]
    return " ".join(items) if items else empty


def render_server(doc: dict[str, Any]) -> str:
    """The central's status as text (about one screen for a few dozen sensors)."""
    lines = [f"vmproto central {doc['version']}  pid {doc['pid']}  up {_dur(doc['uptime_s'])}  "
             f"listening {', '.join(doc['listening']) or '-'}"
             + ("  SHUTTING DOWN" if doc.get("shutting_down") else "")]
    sensors = doc["sensors"]
    lines.append(f"sensors connected: {len(sensors)}")
    if sensors:
        lines.append(f"  {'ID':>6}  {'ADDRESS':<22} {'MODE':<17} {'VERSION':<10} {'LAST PONG':<10} "
                     f"{'CONNECTED':<10} CHANNELS")
        for s in sensors:
            pong = "never" if s["last_pong_age_s"] is None else _dur(s["last_pong_age_s"]) + " ago"
            lines.append(f"  {s['sensor_id']:>6}  {s['address']:<22} {s['mode']:<17} {s['version']:<10} "
                         f"{pong:<10} {_dur(s['connected_s']):<10} {_kv(s['channels'], '-')}")
    st = doc["store"]
    lines.append(f"connections open: {_kv(doc['connections_open'])}")
    lines.append(f"store: queued {st['queued']}, committed {st['committed']}, duplicates {st['duplicates']}, "
                 f"acknowledged {st['acknowledged']}, failed statements {st['failed_statements']}, "
                 f"queue-full replies {st['queue_full_replies']}, writer queue {st['writer_queue']}")
    pb = doc["packetbuffer"]
    lines.append(f"mirroring: blocks {pb['blocks']}, packets {pb['packets']}; blocks dropped: duplicate "
                 f"{pb['duplicates']}, rejected {pb['rejected']}, undecodable {pb['undecodable']}")
    lines.append(f"handshake failures: {_kv(doc['handshake_failures'])}")
    lines.append(f"refused before dispatch: {_kv(doc['refused'])}")
    lines.append(f"database errors by code: {_kv(doc['db_errors'])}")
    return "\n".join(lines) + "\n"


def render_sensor(doc: dict[str, Any]) -> str:
    """A sensor's status as text."""
    ident = f"id {doc['id_sensor']}" + (f" ({doc['name_sensor']})" if doc.get("name_sensor") else "")
    lines = [f"vmproto sensor {doc['version']}  pid {doc['pid']}  up {_dur(doc['uptime_s'])}  {ident}  "
             f"mode {doc['mode']}  capture {doc['capture']}"]
    central = doc.get("central")
    if central is not None:
        where = central["host"] or ",".join(central["destinations"])
        lines.append(f"central: service {central['service']} ({where}:{central['port']}), handshakes "
                     f"{central['handshakes']}, pings {central['pings']}, last error "
                     f"{central['last_error'] or '-'}")
    journal = doc.get("journal")
    if journal is not None:
        lines.append(f"journal: {journal['messages']} messages waiting ({_bytes(journal['bytes'])}), oldest "
                     f"{_dur(journal['oldest_age_s'])}; unacknowledged units+messages {journal['unacked']}, "
                     f"acknowledged {journal['acknowledged']}, queue-full replies {journal['queue_full_replies']}")
    mirror = doc.get("mirror")
    if mirror is not None:
        lines.append(f"mirroring: blocks confirmed {mirror['blocks_confirmed']}, queued {mirror['queued_blocks']}, "
                     f"buffer {mirror['buffer_fill'] * 100:.1f}% full, packets sent {mirror['packets_sent']}")
    lines.append(f"packets: captured {doc['packets']}, decoded {doc['records']}; calls active "
                 f"{doc['calls_active']}; CDRs {doc['cdrs']}")
    for name, s in doc["sinks"].items():
        lines.append(f"cdr sink {name}: submitted {s['submitted']}, written {s['written']}, duplicates "
                     f"{s['duplicates']}, failed {s['failed']}")
    for name, k in doc["kernel"].items():
        lines.append(f"kernel {name}: received {k['received']}, dropped {k['dropped']}, "
                     f"interface dropped {k['if_dropped']}")
    drops = {k: v for k, v in doc["drops"].items() if v}
    lines.append(f"drops (stage/reason): {_kv(drops)}")
    lines.append(f"spool: packets {doc['spool']['packets']}, write errors {doc['spool']['write_errors']}")
    return "\n".join(lines) + "\n"


def render(doc: dict[str, Any]) -> str:
    """Render a status document of either role."""
    return render_server(doc) if doc["role"] == "server" else render_sensor(doc)


# --- command line ------------------------------------------------------------------------------------------------

def _parser(role: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python -m vmproto.{role} status",
                                description=f"show the state of a running vmproto {role} (needs prometheus_bind)")
    p.add_argument("--config-file", "-c", type=Path, help="the process's voipmonitor.conf (for prometheus_bind)")
    p.add_argument("--url", help="base URL of the metrics endpoint, e.g. http://127.0.0.1:9101 (instead of -c)")
    p.add_argument("--json", action="store_true", help="print the status document as JSON")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the answer (default 5)")
    return p


def main(role: str, argv: list[str] | None = None) -> int:
    """Run the status command for `role` ("server" or "sensor"); return the exit status."""
    args = _parser(role).parse_args(argv)
    prog = f"vmproto {role} status"
    if args.url:
        base = args.url
    elif args.config_file is not None:
        try:
            bind = str(load_file(args.config_file).get("prometheus_bind", "") or "").strip()
            if not bind:
                print(f"{prog}: {args.config_file}: prometheus_bind is not set; the status is served on the "
                      "metrics endpoint (see docs/operations.md)", file=sys.stderr)
                return 2
            base = url_for_bind(bind)
        except (ConfigError, MetricsConfigError) as exc:
            print(f"{prog}: {exc}", file=sys.stderr)
            return 2
    else:
        print(f"{prog}: give --config-file FILE or --url URL", file=sys.stderr)
        return 2
    try:
        doc = fetch_status(base, args.timeout)
    except StatusError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    if doc["role"] != role:
        print(f"{prog}: {base} is a {doc['role']}, not a {role}", file=sys.stderr)
        return 1
    if args.json:
        sys.stdout.write(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    else:
        try:
            sys.stdout.write(render(doc))
        except (KeyError, TypeError, ValueError) as exc:
            print(f"{prog}: unexpected status document ({exc!r}); try --json", file=sys.stderr)
            return 1
    return 0
