"""`service` connection machines (spec §7, facts §3.2/§4.1): the sensor's long-lived control channel.

Client (sensor): send OpenConnection → receive RsaKey (4096-bit) → send ServiceCredentials (exact field order of
the reference) → receive ServiceAccepted (auto parameters or plain `OK`) or Refuse → data phase: receive Ping
(answer Pong, or Stop when shutting down), Task (`<task_id>/<command>`), ChartPush (`rch:`; answer ChartReply).
Server→client blocks are AES when the sensor asked for `use_encode_data`, else plain; client→server blocks are
always plain. No block for 30 s (`client_server_receiver_timeout`) → ConnectionClosed("timeout").

Server (central): checks, in the reference order, with the exact refusal texts: `password` present (else close
silently), sensor version when the server runs new store / set id (`need upgrade sensor!!!`), `bad password`,
`client sensor_id must be different from receiver sensor_id`. The duplicate-sensor check needs the registry, so
the caller does it after the ServiceCredentials event and sends `duplicate_refusal(sensor_id)` (held back 5 s, as
the reference sleeps) unless `restore` is set. After ServiceAccepted the first ping is due at once, then every
5 s after the last write; with check_ping_response the server waits 5 s for `pong` (`stop` or anything else ends
the service). Pings are written by `handle_timer()`.
"""

from __future__ import annotations

from typing import Any

from vmproto.wire import events as ev
from vmproto.wire import vmjson
from vmproto.wire._state import State
from vmproto.wire.compression import Compression, compress, decompress
from vmproto.wire.errors import LocalProtocolError, RemoteProtocolError
from vmproto.wire.framing import encode_block
from vmproto.wire.handshake import HandshakeClient, HandshakeServer, json_text

__all__ = [
    "ServiceClient",
    "ServiceServer",
    "negotiate_compression",
    "duplicate_refusal",
    "version_int",
    "NEED_UPGRADE",
    "SAME_SENSOR_ID",
    "MIN_SENSOR_VERSION_NEW_STORE",
    "DUPLICATE_REFUSAL_DELAY",
]

NEED_UPGRADE = "need upgrade sensor!!!"
SAME_SENSOR_ID = "client sensor_id must be different from receiver sensor_id"
MIN_SENSOR_VERSION_NEW_STORE = 23007000
DUPLICATE_REFUSAL_DELAY = 5.0
PING, PONG, STOP, RCH = b"ping", b"pong", b"stop", b"rch:"
_OK = b"OK"


def version_int(version: str) -> int:
    """`major*1000000 + minor*1000 + patch` of a version string like `2026.04.0` (sensor_version)."""
    parts = (version.split(".") + ["0", "0"])[:3]
    try:
        major, minor, patch = (int(p) for p in parts)
    except ValueError as exc:
        raise LocalProtocolError(f"bad version string {version!r}") from exc
    return major * 1000000 + minor * 1000 + patch


def negotiate_compression(server_type: int, compress_types: str) -> int:
    """The server's codec choice (facts §3.2 step 6): its own type, but gzip when the sensor's
    `compress_types` lacks lzo/zstd for an lzo/zstd server; 0 (none) stays 0."""
    if server_type == Compression.LZO and "lzo" not in compress_types:
        return int(Compression.GZIP)
    if server_type == Compression.ZSTD and "zstd" not in compress_types:
        return int(Compression.GZIP)
    return int(server_type)


def duplicate_refusal(sensor_id: int) -> ev.Refuse:
    """The refusal for a sensor already connected without `restore`, held back 5 s like the reference."""
    return ev.Refuse(f"client with sensor_id {sensor_id} is already connected, refusing connection",
                     delay=DUPLICATE_REFUSAL_DELAY)


def _present(fields: dict[str, Any], key: str) -> bool:
    return json_text(fields, key) != ""


def _opt_int(fields: dict[str, Any], key: str) -> int | None:
    return vmjson.atoi(fields[key]) if key in fields else None


def _parse_parameters(fields: dict[str, Any]) -> ev.ServiceParameters:
    def codec(key: str) -> int | None:
        value = _opt_int(fields, key)
        return value if value is None or 0 <= value <= 3 else None

    return ev.ServiceParameters(
        use_blocks_pb=_present(fields, "use_blocks_pb"),
        deduplicate=_opt_int(fields, "deduplicate"),
        deduplicate_ipheader=_opt_int(fields, "deduplicate_ipheader"),
        mysql_new_store=_opt_int(fields, "mysql_new_store"),
        mysql_set_id=vmjson.atoi(fields.get("mysql_set_id")) > 0,
        mysql_concat_limit=_opt_int(fields, "mysql_concat_limit"),
        csv_store_format=_opt_int(fields, "csv_store_format"),
        charts_cache_store=_present(fields, "charts_cache_store"),
        type_compress=codec("type_compress"),
        type_compress_query=codec("type_compress_query"),
        type_compress_store=codec("type_compress_store"),
        enable_responses_sender=_present(fields, "enable_responses_sender"),
    )


def encode_parameters(params: ev.ServiceParameters) -> bytes:
    """The auto-parameter reply JSON in the reference's key order (facts §3.2 step 7)."""
    out: dict[str, Any] = {"result": "OK"}
    if params.use_blocks_pb:
        out["use_blocks_pb"] = 1
    if params.deduplicate is not None:
        out["deduplicate"] = params.deduplicate
        out["deduplicate_ipheader"] = params.deduplicate_ipheader if params.deduplicate_ipheader is not None else 1
    if params.mysql_new_store:
        out["mysql_new_store"] = params.mysql_new_store
    if params.mysql_set_id:
        out["mysql_set_id"] = 1
    if params.mysql_concat_limit:
        out["mysql_concat_limit"] = params.mysql_concat_limit
    if params.csv_store_format:
        out["csv_store_format"] = params.csv_store_format
    if params.charts_cache_store:
        out["charts_cache_store"] = 1
    for key in ("type_compress", "type_compress_query", "type_compress_store"):
        value = getattr(params, key)
        if value is not None:
            out[key] = value
    if params.enable_responses_sender:
        out["enable_responses_sender"] = 1
    return vmjson.dumps(out)


class ServiceClient(HandshakeClient):
    """Sensor side of `service`. `receive_timeout` = client_server_receiver_timeout (30 s)."""

    connection_type = "service"
    _credentials_event = ev.ServiceCredentials
    _rsa_key_marker = b"rsa_key"

    def __init__(self, *, receive_timeout: float = 30.0, **caps: Any) -> None:
        super().__init__(**caps)
        self.set_timeout(State.READY, receive_timeout)
        self._encode_data_flag = False
        self.parameters: ev.ServiceParameters | None = None

    def _credential_fields(self, event: Any) -> dict[str, Any]:
        fields: dict[str, Any] = {"sensor_id": event.sensor_id}
        if event.sensor_string:
            fields["sensor_string"] = event.sensor_string
        fields.update(password=event.password, aes_ckey=event.aes_ckey, aes_ivec=event.aes_ivec,
                      sensor_version=event.sensor_version)
        if event.restore:
            fields["restore"] = 1
        if event.check_ping_response:
            fields["check_ping_response"] = 1
        if event.auto_parameters:
            fields["auto_parameters"] = 1
        fields["compress_types"] = event.compress_types
        if event.remote_chart_server:
            fields["remote_chart_server"] = 1
        if event.use_encode_data:
            fields["use_encode_data"] = 1
        return fields

    def _encode_credentials(self, event: Any) -> bytes:
        data = super()._encode_credentials(event)
        self._encode_data_flag = event.use_encode_data
        return data

    def _handshake_reply(self, payload: bytes) -> ev.Event:
        if payload == _OK:
            return ev.ServiceAccepted(None)
        if payload[:1] == b"{":
            try:
                fields = vmjson.loads(payload)
            except RemoteProtocolError:
                fields = None
            if isinstance(fields, dict) and json_text(fields, "result") == "OK":
                self.parameters = _parse_parameters(fields)
                return ev.ServiceAccepted(self.parameters)
        return ev.Refuse(payload.decode("utf-8", "replace") or "(empty reply)")

    def _data_mode(self) -> str:
        return "aes" if self._encode_data_flag else "plain"

    def _data_events(self, payload: bytes) -> list[ev.Event]:
        if payload == PING:
            return [ev.Ping()]
        if payload.startswith(RCH) and len(payload) > len(RCH):
            try:
                _kind, body = decompress(payload[len(RCH):], max_size=self._max_decompressed)
            except RemoteProtocolError as exc:
                return [ev.Rejected(exc.reason, exc.reason, b"")]
            return [ev.ChartPush(body)] if body else [ev.Rejected("empty chart push", "error in decompress", b"")]
        slash = payload.find(b"/")
        if slash <= 0:
            return [ev.Rejected("service payload without task id", None, payload[:256])]
        return [ev.Task(payload[:slash].decode("utf-8", "surrogateescape"), payload[slash + 1:])]

    def _input_name(self, event: ev.Event) -> str:
        if isinstance(event, ev.Rejected):
            # A chart push that fails to decompress must be answered (ChartReply with the reply text).
            return "Rejected/reply" if event.reply is not None else "Rejected/noreply"
        return super()._input_name(event)

    def _encode_data(self, event: ev.Event) -> bytes:
        if isinstance(event, ev.Pong):
            return encode_block(PONG)
        if isinstance(event, ev.Stop):
            return encode_block(STOP)
        if isinstance(event, ev.ChartReply):
            return encode_block(event.text.encode("utf-8"))
        return super()._encode_data(event)


class ServiceServer(HandshakeServer):
    """Central side of `service`.

    `server_sensor_id`: the central's own id_sensor (−1 by default; a sensor may not use max(it, 0));
    `require_new_store_version`: the central runs new store or set id (then sensors < 23.7.0 are refused);
    `server_type_compress`: the central's `server_type_compress` code (zstd = 3 by default).
    After ServiceCredentials, `credentials` holds the event and `type_compress` the negotiated codec.
    """

    connection_type = "service"

    def __init__(self, *, server_sensor_id: int = -1, require_new_store_version: bool = False,
                 server_type_compress: int = Compression.ZSTD, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._server_sensor_id = server_sensor_id
        self._require_new_store_version = require_new_store_version
        self._server_type_compress = int(server_type_compress)
        self.credentials: ev.ServiceCredentials | None = None
        self.type_compress = int(Compression.GZIP)

    # handshake ----------------------------------------------------------------------------------------------
    def _check_credentials(self, payload: bytes) -> ev.Event:
        fields = self._load_credentials(payload)
        version = vmjson.atoi(fields.get("sensor_version"))
        if self._require_new_store_version and (version & 0xFFFFFFFF) < MIN_SENSOR_VERSION_NEW_STORE:
            raise RemoteProtocolError(NEED_UPGRADE, reply=NEED_UPGRADE.encode(), reply_mode="plain")
        self._check_password(fields)
        sensor_id = vmjson.atoi(fields.get("sensor_id"))
        sensor_string = json_text(fields, "sensor_string")
        if sensor_id == max(self._server_sensor_id, 0) and not sensor_string:
            raise RemoteProtocolError(SAME_SENSOR_ID, reply=SAME_SENSOR_ID.encode(), reply_mode="plain")
        creds = ev.ServiceCredentials(
            sensor_id=sensor_id,
            password=json_text(fields, "password"),
            aes_ckey=json_text(fields, "aes_ckey"),
            aes_ivec=json_text(fields, "aes_ivec"),
            sensor_version=version,
            sensor_string=sensor_string,
            restore=_present(fields, "restore"),
            check_ping_response=vmjson.atoi(fields.get("check_ping_response")) > 0,
            auto_parameters=vmjson.atoi(fields.get("auto_parameters")) > 0,
            compress_types=json_text(fields, "compress_types"),
            remote_chart_server=vmjson.atoi(fields.get("remote_chart_server")) > 0,
            use_encode_data=vmjson.atoi(fields.get("use_encode_data")) > 0,
        )
        if creds.use_encode_data:
            self._install_keys(fields)
        self.credentials = creds
        self.type_compress = negotiate_compression(self._server_type_compress, creds.compress_types)
        return creds

    def parameters(self, **extra: Any) -> ev.ServiceParameters:
        """ServiceParameters with the negotiated codec in all three type_compress fields plus `extra`
        (e.g. `mysql_concat_limit=1000`). Call after the ServiceCredentials event."""
        codec = self.type_compress
        return ev.ServiceParameters(type_compress=codec, type_compress_query=codec, type_compress_store=codec,
                                    **extra)

    # data phase ---------------------------------------------------------------------------------------------
    def _parse(self) -> None:
        if self._state in (State.OPENING, State.CREDENTIALS):
            super()._parse()
            return
        payload = self._next_block("plain")  # sensor → central blocks are never encrypted
        if payload is None:
            return
        if self._state is State.CHART_REPLY:
            self._receive(ev.ChartReply(payload.decode("utf-8", "replace")))
        elif payload == PONG:
            self._receive(ev.Pong())
        elif payload == STOP and self._state is State.PONG:
            self._receive(ev.Stop())
        elif self._state is State.PONG:
            raise RemoteProtocolError("bad ping response")
        else:
            raise RemoteProtocolError("unexpected data on service connection")

    def _input_name(self, event: ev.Event) -> str:
        if isinstance(event, ev.Ping):
            return "Ping/await" if self.credentials is not None and self.credentials.check_ping_response \
                else "Ping/noawait"
        return super()._input_name(event)

    def _out(self, payload: bytes) -> bytes:
        return self._aes_block(payload) if self.credentials is not None and self.credentials.use_encode_data \
            else encode_block(payload)

    def _encode_data(self, event: ev.Event) -> bytes:
        if isinstance(event, ev.ServiceAccepted):
            assert self.credentials is not None
            if not self.credentials.auto_parameters:
                return encode_block(_OK)
            if event.parameters is None:
                raise LocalProtocolError("the sensor asked for auto_parameters: pass ServiceParameters")
            return encode_block(encode_parameters(event.parameters))
        if isinstance(event, ev.Ping):
            return self._out(PING)
        if isinstance(event, ev.Task):
            return self._out(event.task_id.encode("utf-8", "surrogateescape") + b"/" + event.command)
        if isinstance(event, ev.ChartPush):
            return self._out(RCH + compress(Compression(self.type_compress), event.body))
        return super()._encode_data(event)

    def _move(self, name: str, *, sent: bool) -> None:
        super()._move(name, sent=sent)
        if name == "ServiceAccepted" and self._now is not None:
            self._deadline = self._now  # the reference's "last write" starts at 0: first ping at once

    def _on_timer_action(self, action: str, now: float) -> bytes:
        if action == "ping":
            return self.send(ev.Ping(), now)
        if action == "chart_timeout":
            self._receive(ev.ChartReply(""))
            return b""
        return super()._on_timer_action(action, now)
