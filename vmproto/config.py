"""voipmonitor.conf parsing: the reference's file syntax, option names and defaults.

Syntax rules (as the reference sniffer reads its file):
- a line whose first non-blank character is not alphanumeric is ignored (comments `#`/`;`, `[general]`);
- `name = value`; blanks around both are trimmed; ` #` or a tab + `#` starts a trailing comment;
- a line with an empty value is ignored;
- for a single-valued option the FIRST occurrence wins; multi-valued options (sipport, interface lists, ...)
  accumulate every occurrence;
- booleans follow the reference's `yesno()`: true when the value starts with `y`, `Y` or `1`.

Unknown options are kept (so `mysqlloadconfig` and future code can read them) and reported as warnings; they never
stop the process.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("vmproto.config")


class ConfigError(Exception):
    """A configuration value cannot be used (the message names the option and the value)."""


# --- value parsers -------------------------------------------------------------------------------------------------


def parse_yesno(value: str) -> bool:
    """The reference's yesno(): only the first character matters."""
    return value[:1] in ("y", "Y", "1")


def parse_int(value: str) -> int:
    text = value.strip()
    try:
        return int(text, 10)
    except ValueError:
        raise ConfigError(f"not an integer: {value!r}") from None


def parse_ports(values: Iterable[str]) -> tuple[int, ...]:
    """Parse `5060,5061-5065` style port lists (several lines accumulate) into a sorted tuple."""
    ports: set[int] = set()
    for value in values:
        for part in value.replace(";", ",").split(","):
            part = part.strip()
            if not part:
                continue
            if "-" in part:
                lo_text, hi_text = part.split("-", 1)
                lo, hi = parse_int(lo_text), parse_int(hi_text)
                if lo > hi:
                    lo, hi = hi, lo
            else:
                lo = hi = parse_int(part)
            if not (0 < lo <= hi <= 65535):
                raise ConfigError(f"port out of range: {part!r}")
            ports.update(range(lo, hi + 1))
    return tuple(sorted(ports))


def parse_list(values: Iterable[str]) -> tuple[str, ...]:
    """Comma/semicolon separated lists; several lines accumulate; empty entries dropped."""
    out: list[str] = []
    for value in values:
        out.extend(item.strip() for item in value.replace(";", ",").split(",") if item.strip())
    return tuple(out)


def parse_host_port(value: str, default_port: int) -> tuple[str, int]:
    """`host`, `host:port`, `[v6]:port` or a bare IPv6 address."""
    value = value.strip()
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        return host, parse_int(rest[1:]) if rest.startswith(":") else default_port
    if value.count(":") == 1:
        host, port = value.split(":")
        return host, parse_int(port)
    return value, default_port


# Channel compression names (spec §5): `server_type_compress` and friends.
COMPRESSION_NAMES = {"no": 0, "0": 0, "none": 0, "yes": 1, "gzip": 1, "zip": 1, "1": 1, "lzo": 2, "2": 2,
                     "zstd": 3, "3": 3}


def parse_compression(value: str) -> int:
    key = value.strip().lower()
    if key not in COMPRESSION_NAMES:
        raise ConfigError(f"unknown compression {value!r} (use zstd, gzip, lzo or no)")
    return COMPRESSION_NAMES[key]


PB_COMPRESSION_NAMES = {"snappy": 1, "s": 1, "lz4": 2, "l": 2}


def parse_pb_compression(value: str) -> int:
    key = value.strip().lower()
    if key not in PB_COMPRESSION_NAMES:
        raise ConfigError(f"unknown packetbuffer_compress_method {value!r} (use snappy or lz4)")
    return PB_COMPRESSION_NAMES[key]


def parse_auto_yesno(value: str) -> bool | None:
    """`auto` → None (decided later), else yesno."""
    return None if value.strip().lower() == "auto" else parse_yesno(value)


# --- the option registry -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Option:
    name: str
    default: Any
    parse: Callable[[str], Any] | None = None  # single-valued parser
    parse_multi: Callable[[list[str]], Any] | None = None  # multi-valued: gets every occurrence
    aliases: tuple[str, ...] = ()
    secret: bool = False  # never logged
    help: str = ""

    @property
    def multi(self) -> bool:
        return self.parse_multi is not None


def _s(value: str) -> str:
    return value


def _opt(name: str, default: Any, parse: Callable[[str], Any] = _s, **kw: Any) -> Option:
    return Option(name, default, parse=parse, **kw)


def _multi(name: str, default: Any, parse_multi: Callable[[list[str]], Any], **kw: Any) -> Option:
    return Option(name, default, parse_multi=parse_multi, **kw)


OPTIONS: tuple[Option, ...] = (
    # central server (spec §1, §6-§9)
    _opt("server_bind", ""),
    _opt("server_bind_port", 60024, parse_int),
    _opt("server_password", "", secret=True),
    _opt("server_type_compress", 3, parse_compression),
    _opt("server_sql_queue_limit", 1_000_000, parse_int),
    _opt("server_sql_redirect_queue_limit", 0, parse_int),
    _opt("server_sql_concat_limit", 1000, parse_int),
    _opt("server_cp_store_simple_connect_response", False, parse_yesno),
    _opt("client_server_connect_maximum_time_diff_s", 2, parse_int),
    _opt("client_server_sleep_ms_if_queue_is_full", 1000, parse_int),
    _opt("receive_packetbuffer_maximum_time_diff_s", 30, parse_int),
    _opt("keycheck", ""),
    _opt("mysql_enable_new_store", 0, lambda v: 2 if v.strip() == "per_query" else int(parse_yesno(v))),
    _opt("mysql_enable_set_id", False, parse_yesno),
    _opt("csv_store_format", False, parse_yesno),
    _opt("charts_cache_store", False, parse_yesno),
    _opt("pcap_queue_use_blocks", False, parse_yesno, aliases=("use_blocks",)),
    _opt("deduplicate", False, parse_yesno),
    _opt("deduplicate_ipheader", "yes", lambda v: "ip_only" if v.strip().lower() == "ip_only" else ("yes" if parse_yesno(v) else "no")),
    # vmproto hardening (spec §17): not in the reference, defaults keep interop
    _opt("server_opening_line_timeout_s", 30, parse_int),
    _opt("server_max_block_size", 64 * 1024 * 1024, parse_int),
    _opt("server_max_connections_per_ip", 256, parse_int),
    _opt("server_rsa_key_pool", 8, parse_int),
    _opt("server_sql_allowlist", False, parse_yesno),
    _opt("server_opening_line_max", 65536, parse_int),
    _opt("server_write_timeout_s", 60, parse_int),
    _opt("server_shutdown_grace_s", 10, parse_int),
    _opt("server_db_pool_size", 16, parse_int),
    _opt("server_pb_spool", ""),
    _opt("server_pb_analysis", True, parse_yesno),
    _opt("store_ack_deadline", 120, parse_int),
    _opt("store_dedup_scope", "address"),
    _opt("prometheus_bind", ""),
    # sensor / client (spec §6-§9, §14)
    _opt("server_destination", ""),
    _opt("server_destination_port", 60024, parse_int),
    _opt("remote_query", True, parse_yesno),
    _opt("remote_store", True, parse_yesno),
    _opt("packetbuffer_sender", False, parse_yesno),
    _opt("client_server_receiver_timeout", 0, parse_int),
    _opt("next_server_connections", 0, parse_int),
    _opt("id_sensor", -1, parse_int),
    _opt("name_sensor", ""),
    _opt("mirror_require_confirmation", True, parse_yesno, aliases=("packetbuffer_sender_require_confirmation",)),
    _opt("mirror_use_checksum", True, parse_yesno),
    _opt("packetbuffer_compress", None, parse_auto_yesno),
    _opt("packetbuffer_compress_method", 1, parse_pb_compression),
    _opt("packetbuffer_compress_ratio", 100, parse_int),
    _opt("packetbuffer_block_maxsize", 1024, parse_int),
    _opt("packetbuffer_block_maxtime", 100, parse_int),
    _opt("journal_dir", ""),
    _opt("max_buffer_mem", 0, parse_int),  # MB; 0 = the sender's default
    _opt("packetbuffer_file_path", ""),
    _opt("packetbuffer_file_totalmaxsize", 0, parse_int),  # MB
    # vmproto sensor extensions (spec §8.10, §7.9, §14)
    _opt("store_journal_max", 1024, parse_int),  # MB
    _opt("service_stop_grace", 7, parse_int),  # s
    _opt("connect_timeout", 10, parse_int),  # s
    # capture (issue 4)
    _multi("interface", (), parse_list),
    _opt("promisc", True, parse_yesno),
    _opt("filter", ""),
    _opt("snaplen", 0, parse_int),  # 0: the capture layer picks its default (65535)
    _multi("sipport", (5060,), parse_ports),
    _opt("udp_port_tzsp", 37008, parse_int),
    _opt("udp_port_l2tp", 1701, parse_int),
    _opt("udp_port_vxlan", 4789, parse_int),
    _opt("audiocodes", False, parse_yesno),
    _opt("udp_port_audiocodes", 925, parse_int),
    _opt("tcp_port_audiocodes", 925, parse_int),
    _opt("hep", False, parse_yesno),
    _opt("hep_bind_ip", "0.0.0.0"),
    _opt("hep_bind_port", 9060, parse_int),
    _opt("hep_bind_udp", True, parse_yesno),
    _opt("ipfix", False, parse_yesno),
    _opt("ipfix_bind_ip", "0.0.0.0"),
    _opt("ipfix_bind_port", 4739, parse_int),
    # call analysis: when calls close (vmproto.sensor.calls.timers; seconds unless said)
    _opt("rtptimeout", 300, parse_int),
    _opt("sipwithoutrtptimeout", 3600, parse_int),
    _opt("absolute_timeout", 4 * 3600, parse_int),
    _opt("bye_timeout", 20 * 60, parse_int),
    _opt("bye_confirmed_timeout", 10 * 60, parse_int),
    _opt("response_default_timeout", 5, parse_int),
    _opt("redirect_response_300_timeout", 5 * 60, parse_int),
    # no = 0, yes = 1, quick = 2 (the reference's quick_save_cdr)
    _opt("quick_save_cdr", 0, lambda v: 2 if v.strip().lower() == "quick" else int(parse_yesno(v))),
    _opt("ignore_rtp_after_bye_confirmed", True, parse_yesno),
    _opt("ignore_rtp_after_auth_failed", True, parse_yesno),
    _opt("ignore_duration_after_bye_confirmed", True, parse_yesno),
    _opt("cleanup_calls_period", None, parse_int),  # None: the analyzer's default (10 s, 1 s with quick_save_cdr)
    # spool and manager (issue 5)
    _opt("spooldir", "/var/spool/voipmonitor"),
    _opt("savesip", False, parse_yesno),
    _opt("savertp", "no"),
    _opt("spooldir_2", ""),
    _opt("savertcp", False, parse_yesno),
    _opt("pcap_split", True, parse_yesno),
    _opt("tar", False, parse_yesno),
    _opt("cleanspool", True, parse_yesno),
    _opt("cleanspool_interval", 0, parse_int),
    _opt("maxpoolsize", 0, parse_int),
    _opt("maxpooldays", 0, parse_int),
    _opt("maxpoolsipsize", 0, parse_int),
    _opt("maxpoolsipdays", 0, parse_int),
    _opt("maxpoolrtpsize", 0, parse_int),
    _opt("maxpoolrtpdays", 0, parse_int),
    _opt("managerip", "127.0.0.1"),
    _opt("managerport", 5029, parse_int),
    _opt("manager_aes_key", "", secret=True),
    _opt("manager_aes_iv", "", secret=True),
    _opt("manager_enable_unencrypted", False, parse_yesno),
    # database
    _opt("mysqlhost", ""),
    _opt("mysqlport", 3306, parse_int),
    _opt("mysqlsocket", ""),
    _opt("mysqlusername", "root"),
    _opt("mysqlpassword", "", secret=True),
    _opt("mysqldb", "voipmonitor"),
    _opt("mysqlloadconfig", True, parse_yesno),
    _opt("cdr_partition", True, parse_yesno),
    _opt("ipv6", False, parse_yesno),
    _opt("datadir", ""),
    _opt("mysql_connect_timeout_s", 60, parse_int),
)

_BY_NAME: dict[str, Option] = {}
for _o in OPTIONS:
    _BY_NAME[_o.name] = _o
    for _a in _o.aliases:
        _BY_NAME[_a] = _o


def option(name: str) -> Option:
    """The registered option for `name` or one of its aliases (KeyError when unknown)."""
    return _BY_NAME[name]


# --- the file reader ------------------------------------------------------------------------------------------------


def read_pairs(text: str) -> list[tuple[int, str, str]]:
    """Split config text into (line number, name, raw value) following the reference's rules."""
    pairs: list[tuple[int, str, str]] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        stripped = line.lstrip(" \t")
        if not stripped[:1].isalnum():
            continue
        name, sep, value = stripped.partition("=")
        if not sep:
            continue
        name = name.rstrip(" \t")
        value = value.strip(" \t\r\n")
        for marker in (" #", "\t#"):
            pos = value.find(marker)
            if pos >= 0:
                value = value[:pos].rstrip(" \t")
                break
        if name and value:
            pairs.append((lineno, name, value))
    return pairs


@dataclass
class Config:
    """Resolved option values. Attribute access by option name: `cfg.server_bind_port`."""

    values: dict[str, Any] = field(default_factory=dict)
    unknown: dict[str, list[str]] = field(default_factory=dict)
    source: str = "<defaults>"

    def __getattr__(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None

    def get(self, name: str, default: Any = None) -> Any:
        if name in self.values:
            return self.values[name]
        if name in self.unknown:
            return self.unknown[name][0]
        return default

    def set(self, name: str, raw: str) -> None:
        """Set an option from its text form (command line, database): replaces any earlier value."""
        opt = option(name)
        self.values[opt.name] = opt.parse_multi([raw]) if opt.multi else opt.parse(raw)  # type: ignore[misc]

    def redacted(self) -> dict[str, Any]:
        """The values safe to log: secrets replaced by '***' when set."""
        return {k: ("***" if option(k).secret and v else v) for k, v in self.values.items()}


def defaults() -> Config:
    return Config(values={o.name: o.default for o in OPTIONS})


def load_text(text: str, *, source: str = "<text>") -> Config:
    """Parse config text; raises ConfigError naming the line for values of the wrong type."""
    cfg = defaults()
    cfg.source = source
    multi: dict[str, list[str]] = {}
    seen: set[str] = set()
    for lineno, name, raw in read_pairs(text):
        opt = _BY_NAME.get(name)
        if opt is None:
            cfg.unknown.setdefault(name, []).append(raw)
            continue
        if opt.multi:
            multi.setdefault(opt.name, []).append(raw)
            continue
        if opt.name in seen:  # the reference keeps the first occurrence
            log.warning("config: %s line %d: %s given again, keeping the first value", source, lineno, name)
            continue
        seen.add(opt.name)
        try:
            cfg.values[opt.name] = opt.parse(raw)  # type: ignore[misc]
        except ConfigError as exc:
            raise ConfigError(f"{source} line {lineno}: {name} = {raw!r}: {exc}") from None
    for name, raws in multi.items():
        try:
            cfg.values[name] = option(name).parse_multi(raws)  # type: ignore[misc]
        except ConfigError as exc:
            raise ConfigError(f"{source}: {name}: {exc}") from None
    for name in cfg.unknown:
        log.warning("config: %s: unknown option %s ignored", source, name)
    return cfg


def load_file(path: str | Path) -> Config:
    """Read a voipmonitor.conf file (ConfigError when it cannot be read or a value is bad)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8", errors="surrogateescape")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc.strerror}") from None
    return load_text(text, source=str(p))
