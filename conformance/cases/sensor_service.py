"""Sensor role: opening lines, credentials, the service channel, tasks, reconnects and failover (spec §1, §3, §6,
§7, §11, §13, §14). The suite plays the central."""

from __future__ import annotations

import re
import secrets
import signal

import trio

from ..central import Conn, service_params
from ..model import CaseFailed, Level, Quirk, case, check, check_eq, fail, skip
from ..sensorctx import FAILOVER_HOSTS, SensorContext

# spec §1.3: the exact opening lines
OPENING = {
    "service": b'{"type_connection":"service"}\r\n',
    "store": b'{"type_connection":"store"}\r\n',
    "packetbuffer block": b'{"type_connection":"packetbuffer block"}\r\n',
    "query": b'{"type_connection":"query"}\r\n',
    "responses": b'{"type_connection":"responses"}\r\n',
    "keycheck": b'{"type_connection":"keycheck"}\r\n',
}
_RESPONSE_OPEN = re.compile(rb'\{"type_connection":"response","gui_task_id":"(\d+:\d+)"\}\r\n')

# spec §4.1 vm-string (compact JSON string, "/" escaped) and vm-int; §6.2 / §7.2 key characters
_STR = rb'"(?:[^"\\\x00-\x1f/]|\\["\\/bfnrt]|\\u[0-9a-f]{4})*"'
_INT = rb"-?(?:0|[1-9]\d*)"
_KEY = rb'(?:[0-\[\]-z]|\\\\)'
_CKEY = rb'"aes_ckey":"' + _KEY + rb'{32}","aes_ivec":"' + _KEY + rb'{16}"'
SERVICE_CREDS = re.compile(
    rb'\{"sensor_id":(' + _INT + rb')(,"sensor_string":' + _STR + rb')?,"password":' + _STR + rb"," + _CKEY
    + rb',"sensor_version":(' + _INT + rb')(,"restore":1)?,"check_ping_response":1,"auto_parameters":1,'
    rb'"compress_types":"(gzip(?:,zstd)?(?:,lzo)?)"(,"remote_chart_server":1,"use_encode_data":1)?\}')
GENERIC_CREDS = re.compile(rb'\{"password":' + _STR + rb"," + _CKEY + rb"\}")
PB_CREDS = re.compile(rb'\{"password":' + _STR + rb"," + _CKEY
                      + rb',"time":"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)","sensor_id":(' + _INT
                      + rb'),"sensor_name":(' + _STR + rb")\}")


def service_creds(conn: Conn) -> re.Match[bytes]:
    """Check the service credentials of `conn` against spec §7.2; return the match."""
    text = conn.creds_text or b""
    m = SERVICE_CREDS.fullmatch(text)
    if m is None:
        raise CaseFailed(f"service credentials do not follow spec §7.2 (members, order, compact JSON): {text!r}")
    check(len(text) <= 501, f"service credentials are {len(text)} bytes, spec §7.1 allows 501")
    return m


# --- opening line and credentials ----------------------------------------------------------------------------------

@case("sensor-opening-lines", "every connection starts with the exact opening line of its type, nothing before "
      "the rsa_key", ("§1.3", "§1.2"), mode="sensor")
async def opening_lines(ctx: SensorContext) -> None:
    async with ctx.session() as s:
        await s.conn("service", accepted=True)
        await s.conn("store", accepted=True)
        for c in s.central.conns:
            expected = OPENING.get(c.kind)
            if c.kind == "response":
                check(_RESPONSE_OPEN.fullmatch(c.line), f"response opening line {c.line!r}")
            elif expected is None:
                fail(f"connection {c.index} opened with an unknown type: {c.line[:80]!r}")
            else:
                check_eq(c.line, expected, f"opening line of connection {c.index}")
        s.check_clean()


@case("sensor-service-credentials", "service credentials: members and order of §7.2, configured sensor_id, no "
      "`restore` on the first session", ("§7.2", "§4.1", "§3.3"), mode="sensor")
async def service_credentials(ctx: SensorContext) -> None:
    async with ctx.session() as s:
        conn = await s.conn("service")
        await s.creds(conn)
        m = service_creds(conn)
        check_eq(int(m.group(1)), ctx.options.id_sensor, "sensor_id (the configured id_sensor)")
        check(m.group(4) is None, "the first service session of a process must not carry `restore`")
        check_eq(conn.creds.get("password") if conn.creds else None, ctx.options.password, "password")
        s.check_clean()


@case("sensor-store-credentials", "store credentials: exactly password, aes_ckey, aes_ivec (§6.2)", ("§6.2", "§8.2"),
      mode="sensor")
async def store_credentials(ctx: SensorContext) -> None:
    async with ctx.session() as s:
        conn = await s.conn("store")
        text = await s.creds(conn)
        check(GENERIC_CREDS.fullmatch(text), f"store credentials do not follow spec §6.2: {text!r}")
        check(len(text) <= 245, f"credentials are {len(text)} bytes, RSA-2048 allows 245 (spec §3.3)")
        s.check_clean()


@case("sensor-aes-keys", "aes_ckey 32 / aes_ivec 16 characters from 0x30-0x7A, fresh for every connection",
      ("§3.4", "§16 Q17"), mode="sensor")
async def aes_keys(ctx: SensorContext) -> None:
    async with ctx.session() as s:
        await s.conn("store", accepted=True)
        conns = [c for c in s.central.conns if c.creds is not None]
        check(len(conns) >= 2, "fewer than two handshakes to compare")
        seen: set[str] = set()
        for c in conns:
            ckey, ivec = c.creds.get("aes_ckey"), c.creds.get("aes_ivec")  # type: ignore[union-attr]
            for name, value, n in (("aes_ckey", ckey, 32), ("aes_ivec", ivec, 16)):
                check(isinstance(value, str) and len(value) == n, f"{name} of connection {c.index}: {value!r}")
                bad = [ch for ch in value if not 0x30 <= ord(ch) <= 0x7A]
                check(not bad, f"{name} of connection {c.index} has characters outside 0x30-0x7A: {bad!r}")
            check(ckey not in seen, f"connection {c.index} reuses an aes_ckey of an earlier connection")
            seen.add(ckey)
        s.check_clean()


@case("sensor-version", "sensor_version is major·10⁶+minor·10³+patch and new enough for new-store centrals",
      ("§7.2", "§7.3"), Level.SHOULD, mode="sensor")
async def sensor_version(ctx: SensorContext) -> None:
    async with ctx.session() as s:
        conn = await s.conn("service")
        await s.creds(conn)
        version = int(service_creds(conn).group(3))
        check(version >= 23_007_000, f"sensor_version {version} < 23007000: centrals with new store refuse it "
              "with `need upgrade sensor!!!`")
        check(version % 1000 < 1000 and (version // 1000) % 1000 < 1000 and version // 10**6 >= 1,
              f"sensor_version {version} is not major·10⁶+minor·10³+patch")


@case("sensor-compress-types", "compress_types announces gzip, then zstd / lzo if supported, in that order",
      ("§5.1", "§7.2"), mode="sensor")
async def compress_types(ctx: SensorContext) -> None:
    async with ctx.session() as s:
        conn = await s.conn("service")
        await s.creds(conn)
        m = service_creds(conn)
        ctx.notes.append(f"sensor-compress-types: {m.group(5).decode()}")


# --- service data phase ------------------------------------------------------------------------------------------

@case("sensor-pong", "every `ping` is answered with a plain `pong` within the central's 5 s wait; nothing "
      "unsolicited on the service connection", ("§7.6", "§7.5", "§16 Q3", "§16 Q26"), mode="sensor")
async def pong(ctx: SensorContext) -> None:
    async with ctx.session(ping_interval=1.0) as s:
        conn = await s.conn("service", accepted=True)
        await s.wait_until(lambda: len(conn.pongs) >= 3 or conn.closed_at, ctx.wait(6), "three ping/pong rounds")
        check(len(conn.pongs) >= 3, f"service ended after {len(conn.pongs)} pings: {conn.end}")
        for n, (latency, reply) in enumerate(conn.pongs[:3], 1):
            check_eq(reply, b"pong", f"reply to ping {n}")
            check(latency <= ctx.t(5), f"pong {n} came after {latency:.2f} s")
        check(not conn.unsolicited, f"unsolicited bytes on the service connection: {conn.unsolicited[:1]!r}")
        ctx.notes.append(f"sensor-pong: slowest pong {max(lat for lat, _ in conn.pongs[:3]) * 1000:.0f} ms")
        s.check_clean()


@case("sensor-restore-on-reconnect", "a dropped service connection is reconnected (≈ 1 s pause) with "
      "`\"restore\":1` in the §7.2 position", ("§7.2", "§7.6", "§14.2"), mode="sensor")
async def restore_on_reconnect(ctx: SensorContext) -> None:
    async with ctx.session() as s:
        first = await s.conn("service", accepted=True)
        await s.wait_until(lambda: first.pongs, ctx.wait(2), "the first pong")
        s.central.drop_service()
        await s.wait_until(lambda: first.closed_at, 5, "the suite's close")
        second = await s.conn("service", 2, timeout=ctx.wait(1) + ctx.wait(5))
        await s.creds(second)
        m = service_creds(second)
        check(m.group(4) is not None, f"reconnect without `restore`: {second.creds_text!r}")
        gap = second.accepted_at - (first.closed_at or 0)
        check(gap >= ctx.t(0.5), f"reconnected after {gap:.2f} s; spec §14.2 pauses 1 s after a lost service")
        await s.wait_until(lambda: second.pongs, ctx.wait(2), "a pong on the restored service")
        s.check_clean()


@case("sensor-receiver-timeout", "no block for client_server_receiver_timeout → the sensor closes and reconnects "
      "with `restore`", ("§7.6", "§14.1", "§14.4"), mode="sensor")
async def receiver_timeout(ctx: SensorContext) -> None:
    timeout = max(2, round(ctx.t(3)))
    async with ctx.session(pings=False, config={"client_server_receiver_timeout": timeout}) as s:
        first = await s.conn("service", accepted=True)
        result_at = trio.current_time()
        try:
            await s.wait_until(lambda: first.closed_at, timeout * 1.5 + 2,
                               f"the sensor closing a silent service (client_server_receiver_timeout = {timeout})")
        except CaseFailed as exc:
            raise CaseFailed(f"{exc}; a sensor that ignores client_server_receiver_timeout waits 30 s") from None
        waited = (first.closed_at or 0) - result_at
        check(waited >= timeout * 0.8, f"closed after {waited:.1f} s, before the {timeout} s receiver timeout")
        second = await s.conn("service", 2, timeout=ctx.wait(1) + ctx.wait(5))
        await s.creds(second)
        check(service_creds(second).group(4) is not None, "reconnect after the receiver timeout lacks `restore`")


@case("sensor-shutdown", "on shutdown the sensor answers the next ping with `stop` (vmproto) or just closes "
      "(reference); never `stop` unsolicited", ("§7.9", "§16 Q4"), Level.QUIRK, mode="sensor",
      quirk=Quirk("Q4", "closes with FIN (or RST) without `stop`", "answers the next ping with `stop`, then closes"))
async def shutdown(ctx: SensorContext) -> str:
    async with ctx.session(ping_interval=3600) as s:
        conn = await s.conn("service", accepted=True)
        await s.wait_until(lambda: conn.pongs, ctx.wait(2), "the first pong")
        await s.conn("store", accepted=True)
        await s.wait_until(lambda: s.central.data_msgs(), s.busy_allowance, "the first store message")
        await trio.sleep(ctx.t(0.5))
        s.proc.signal(signal.SIGTERM)
        await trio.sleep(ctx.t(1.0))
        check(not conn.unsolicited, f"bytes sent unsolicited after SIGTERM: {conn.unsolicited[:1]!r}")
        if conn.closed_at is None:
            s.central.ping_now()
        await s.wait_until(lambda: conn.closed_at, ctx.wait(8), "the end of the service connection after SIGTERM")
        replies = [r for _lat, r in conn.pongs[1:]]
        if replies and replies[-1] == b"stop":
            return "vmproto"
        if not replies or replies[-1] in (b"", b"pong"):
            return "reference"
        fail(f"after SIGTERM the ping was answered {replies[-1][:20]!r}")
    return "reference"


@case("sensor-bad-password", "`bad password` → the sensor keeps retrying with a pause (never a flood) and sends "
      "no data-phase block", ("§6.5", "§14.2", "§15.2"), mode="sensor")
async def bad_password(ctx: SensorContext) -> None:
    window = max(ctx.t(6), 4.0)
    async with ctx.session(password="not-the-sensors-password") as s:
        await s.wait_until(lambda: any(c.result == b"bad password" for c in s.central.conns), s.busy_allowance,
                           "the first refused handshake")
        start = trio.current_time()
        await trio.sleep(window)
        refused = [c for c in s.central.conns if c.result == b"bad password"]
        check(len(refused) >= 2, f"only {len(refused)} attempt(s) in {window:.0f} s after `bad password`: the "
              "sensor must keep retrying")
        by_kind: dict[str, list[float]] = {}
        for c in refused:
            by_kind.setdefault(c.kind, []).append(c.accepted_at)
        for kind, times in by_kind.items():
            recent = [t for t in times if t >= start]
            limit = 2 + window / (0.9 * ctx.t(1))
            check(len(recent) <= limit, f"{len(recent)} {kind} attempts in {window:.0f} s: a flood (spec §14.2 "
                  f"pauses ≥ 1 s after a failed handshake)")
        check(not s.central.store_msgs and not s.central.pb_blocks, "data-phase blocks after `bad password`")
        ctx.notes.append("sensor-bad-password: attempts in the window: "
                         + ", ".join(f"{k} {len(v)}" for k, v in by_kind.items()))
        s.check_clean()


@case("sensor-store-after-service", "store connections open only after the service handshake succeeded",
      ("§8.1", "§6.5"), Level.SHOULD, mode="sensor")
async def store_after_service(ctx: SensorContext) -> None:
    def refuse_twice(conn: Conn, n: int) -> bytes:
        return b"bad password" if n <= 2 else service_params()

    async with ctx.session(service_result=refuse_twice) as s:
        svc = await s.conn("service", accepted=True, timeout=ctx.options.startup + ctx.wait(10))
        store = await s.conn("store")
        check(store.accepted_at > svc.accepted_at, f"store connection {store.index} opened before the service "
              "handshake succeeded")


@case("sensor-failover", "failover in list order: first central down → second; first back → the next connection "
      "goes to the first again", ("§14.3", "§14.2"), mode="sensor")
async def failover(ctx: SensorContext) -> None:
    if not ctx.options.host.startswith("127."):
        skip("needs the loopback addresses 127.0.0.2 and 127.0.0.3 next to the sensor")
    first, second = FAILOVER_HOSTS
    async with ctx.session(hosts=FAILOVER_HOSTS, up=(second,)) as s:
        svc = await s.conn("service", accepted=True)
        check_eq(svc.local[0], second, "address of the first service connection while the first central is down")
        await s.wait_until(lambda: svc.pongs, ctx.wait(2), "the first pong")
        await s.central.listen_again(first, s.port)
        s.central.drop_service()
        again = await s.conn("service", 2, accepted=True, timeout=ctx.wait(1) + ctx.wait(5))
        check_eq(again.local[0], first, "address of the service connection after the first central came back")
        check(service_creds(again).group(4) is not None, "the failover reconnect lacks `restore`")
        s.check_clean()


# --- tasks ---------------------------------------------------------------------------------------------------------

async def _task(ctx: SensorContext, s, command: str):  # noqa: ANN001, ANN202
    svc = await s.conn("service", accepted=True)
    await s.wait_until(lambda: svc.pongs, ctx.wait(2), "the first pong")
    task_id = s.central.push_task(command)
    result = await s.wait_until(lambda: s.central.tasks.get(task_id), s.busy_allowance,
                                f"the output of task {command!r}")
    check(not svc.unsolicited, f"task output written on the service connection: {svc.unsolicited[:1]!r}")
    return task_id, result


@case("sensor-task-getversion", "task `<id>/getversion` → one `response` connection with the task id, output AES "
      "stream under the service keys, FIN", ("§7.6", "§11.1", "§13.3", "§3.7"), mode="sensor")
async def task_getversion(ctx: SensorContext) -> None:
    async with ctx.session() as s:
        task_id, result = await _task(ctx, s, "getversion")
        check_eq(result.path, "response", "path of the getversion output")
        check_eq(result.line, b'{"type_connection":"response","gui_task_id":"%s"}\r\n' % task_id.encode(),
                 "response opening line")
        check(not result.error, result.error)
        check(re.fullmatch(rb"\d+\.\d+(\.\d+)?[\w.\-]*", result.output), f"getversion output {result.output!r}")
        ctx.notes.append(f"sensor-task-getversion: {result.output.decode('ascii', 'replace')}")


@case("sensor-task-getfile", "task `getfile <spool path>` streams the file's bytes on `response`",
      ("§13.3", "§11.1", "§13.4"), mode="sensor")
async def task_getfile(ctx: SensorContext) -> None:
    data = secrets.token_bytes(70_000)
    async with ctx.session() as s:
        s.spool_file("conformance/probe.bin", data)
        _tid, result = await _task(ctx, s, "getfile conformance/probe.bin")
        check(not result.error, result.error)
        check_eq(result.path, "response", "path of the getfile output")
        check(result.output == data, f"getfile returned {len(result.output)} bytes, not the file's {len(data)}")


@case("sensor-task-responses", "with enable_responses_sender, `file_exists` output goes as `<id>#<output>` on "
      "`responses`; without it on `response`", ("§11.2", "§11.3", "§13.3"), mode="sensor")
async def task_responses(ctx: SensorContext) -> None:
    for enabled in (True, False):
        async with ctx.session(responses_enabled=enabled) as s:
            s.spool_file("conformance/probe.bin", b"x" * 1234)
            _tid, result = await _task(ctx, s, "file_exists conformance/probe.bin")
            check_eq(result.path, "responses" if enabled else "response",
                     f"path of file_exists output with enable_responses_sender {'on' if enabled else 'off'}")
            check(result.output.startswith(b"1234"), f"file_exists output {result.output!r}")
            s.check_clean()
