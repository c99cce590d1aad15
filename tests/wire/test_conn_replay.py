"""Replay the recorded conversations of the real sniffer (../shared/reference/transcripts) through our server
machines: the c2s bytes go in as recorded (only the RSA credentials block is re-encrypted, to our RSA key), and
every s2c block our machine writes must equal the recorded bytes (except the RSA key block: another key).
The decoded events must show what the transcripts show: store queries, packetbuffer containers, query texts."""

from __future__ import annotations

import json

import pytest

from tests.conftest import REFERENCE, need_shared
from tests.wire.pair import drain, rsa_key
from vmproto.wire import events as ev
from vmproto.wire import vmjson
from vmproto.wire._state import State
from vmproto.wire.compression import Compression, decompress, detect
from vmproto.wire.crypto import rsa_encrypt
from vmproto.wire.errors import RemoteProtocolError
from vmproto.wire.framing import byte_sum, encode_block
from vmproto.wire.packetbuffer import PacketbufferClient, PacketbufferServer
from vmproto.wire.query import QueryClient, QueryServer
from vmproto.wire.service import ServiceClient, ServiceServer
from vmproto.wire.store import StoreClient, StoreServer
from vmproto.wire.store_msg import decode_store_message

SCENARIOS = ["store_zstd", "store_gzip", "store_nocomp", "store_badpass", "pb_zstd", "pb_nocomp",
             "pb_blocks_nocomp", "pb_blocks_lz4"]
MACHINES = {"store": StoreServer, "query": QueryServer, "packetbuffer block": PacketbufferServer,
            "service": ServiceServer}


def _connections(scenario: str) -> dict[int, list[dict]]:
    path = need_shared(REFERENCE / "transcripts" / f"{scenario}.jsonl")
    conns: dict[int, list[dict]] = {}
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        conns.setdefault(rec["conn"], []).append(rec)
    return conns


def _reply_event(server, rec: dict, request: ev.Event | None) -> ev.Event:
    text = rec.get("text")
    state = server.state
    if state is State.RSA_KEY:
        return ev.RsaKey(server.public_pem)
    if state is State.HANDSHAKE_REPLY:
        if isinstance(server, StoreServer):
            return ev.StoreAccepted(False, False) if text == "OK" else ev.StoreAccepted()
        if isinstance(server, ServiceServer):
            return ev.ServiceAccepted(server.parameters(mysql_concat_limit=1000))
        return ev.HandshakeOK()
    if isinstance(server, ServiceServer):
        assert text == "ping"
        return ev.Ping()
    if isinstance(server, StoreServer):
        assert text == "OK"
        return ev.StoreOK()
    if isinstance(server, PacketbufferServer):
        return ev.BlockReply(text)
    assert isinstance(request, ev.QueryRequest)
    _kind, payload = decompress(bytes.fromhex(rec["plain_hex"]))
    error = rec["decompressed"] == "none" and request.compression != Compression.NONE
    return ev.QueryResponse(payload, error=error)


# server_type_compress per scenario (README table); the default build is zstd.
SERVER_CODEC = {"store_gzip": 1, "store_nocomp": 0, "pb_nocomp": 0}


def replay(records: list[dict], scenario: str):
    """Yield (record, events) per c2s record, answering s2c records with our machine; assert byte equality."""
    cls = MACHINES[records[0]["type_connection"]]
    config = {"server_type_compress": SERVER_CODEC.get(scenario, 3)} if cls is ServiceServer else {}
    server = cls(rsa_key=rsa_key(2048), password="refpass", **config)
    last_request = None
    pending_error = None
    for rec in records:
        now = rec["ts"]
        if rec["dir"] == "c2s":
            if rec["kind"] == "rsa_block":
                plain = bytes.fromhex(rec["plain_hex"])
                data = encode_block(rsa_encrypt(server.public_pem, plain), byte_sum(plain))
            else:
                data = bytes.fromhex(rec["wire_hex"])
            server.receive_data(data, now)
            try:
                events = drain(server, now)
            except RemoteProtocolError as exc:
                pending_error = exc
                events = []
            for event in events:
                if isinstance(event, ev.QueryRequest):
                    last_request = event
            yield rec, events
        else:
            if pending_error is not None:
                out = server.encode_reply(pending_error)
                pending_error = None
            else:
                out = server.send(_reply_event(server, rec, last_request), now)
            if server.state is not State.CREDENTIALS:  # every block but the RSA key must match byte for byte
                assert out == bytes.fromhex(rec["wire_hex"]), (rec["seq"], rec.get("text"))


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_replay_every_connection(scenario):
    conns = _connections(scenario)
    seen = {"store": 0, "packetbuffer block": 0, "query": 0, "service": 0}
    for records in conns.values():
        kind = records[0]["type_connection"]
        for rec, events in replay(records, scenario):
            seen[kind] += 1
            if rec["kind"] == "aes_block" and kind == "store":
                (queries,) = [e for e in events if isinstance(e, ev.StoreQueries)]
                info = rec["store"]
                msg = queries.message
                assert msg.id_main == info["id_main"] and msg.client_time == info["time"]
                if "items" in info:
                    assert [len(q) for q in msg.queries] == [i["length"] for i in info["items"]]
                    assert all(q.decode().startswith(i["starts"]) for q, i in zip(msg.queries, info["items"], strict=True))
                else:
                    assert len(msg.queries) == 1 and len(msg.queries[0]) == info["body_len"]
            elif rec["kind"] == "aes_block" and kind == "packetbuffer block":
                (block,) = [e for e in events if isinstance(e, ev.PacketbufferBlock)]
                info = rec["pcap_block_store"]
                assert block.counter == info["counter"] and not block.duplicate
                assert block.require_confirmation == bool(info["require_confirmation"])
                assert not any(isinstance(e, ev.BlockLoss) for e in events)
            elif rec["kind"] == "aes_block" and kind == "query":
                (event,) = events[:1]
                if rec.get("text") == "_END_":
                    assert event == ev.End()
                else:
                    assert isinstance(event, ev.QueryRequest)
                    expected = rec["text"].encode()
                    assert (b"CSV:" + event.sql if event.csv else event.sql) == expected
    main = "packetbuffer block" if scenario.startswith("pb_") else ("query" if scenario.endswith("badpass") else "store")
    assert seen[main] >= 3, seen


# --- client side: our client machines, fed the recorded server bytes, must write the recorded client bytes ------

CLIENTS = {"store": StoreClient, "query": QueryClient, "packetbuffer block": PacketbufferClient,
           "service": ServiceClient}


def _credentials_event(kind: str, text: bytes) -> ev.Event:
    fields = vmjson.loads(text)
    if kind == "service":
        flags = {k: fields.get(k) == 1 for k in ("restore", "check_ping_response", "auto_parameters",
                                                 "remote_chart_server", "use_encode_data")}
        return ev.ServiceCredentials(fields["sensor_id"], fields["password"], fields["aes_ckey"], fields["aes_ivec"],
                                     fields["sensor_version"], fields.get("sensor_string", ""),
                                     compress_types=fields["compress_types"], **flags)
    if kind == "packetbuffer block":
        return ev.PacketbufferCredentials(fields["password"], fields["aes_ckey"], fields["aes_ivec"], fields["time"],
                                          fields["sensor_id"], fields["sensor_name"])
    return ev.Credentials(fields["password"], fields["aes_ckey"], fields["aes_ivec"])


def _client_event(kind: str, rec: dict) -> ev.Event:
    plain = bytes.fromhex(rec["plain_hex"])
    if rec["kind"] == "opening_line":
        return ev.OpenConnection(kind)
    if kind == "service":
        return {b"pong": ev.Pong(), b"stop": ev.Stop()}[plain]
    if kind == "packetbuffer block":
        return ev.PacketbufferBlock(plain)
    _codec, text = decompress(plain)
    if kind == "store":
        return ev.StoreQueries(decode_store_message(text))
    if text == b"_END_":
        return ev.End()
    return ev.QueryRequest(text[4:], csv=True) if text.startswith(b"CSV:") else ev.QueryRequest(text)


def _client_codec(kind: str, records: list[dict]) -> dict:
    codecs = {detect(bytes.fromhex(r["plain_hex"])) for r in records
              if r["dir"] == "c2s" and r["kind"] == "aes_block" and r.get("text") != "_END_"}
    assert len(codecs) <= 1, codecs  # one codec per connection
    return {"compression": codecs.pop()} if codecs and kind in ("store", "query") else {}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_client_machines_write_the_recorded_bytes(scenario):
    checked = 0
    for records in _connections(scenario).values():
        kind = records[0]["type_connection"]
        client = CLIENTS[kind](**_client_codec(kind, records))
        for rec in records:
            if rec["dir"] == "s2c":
                client.receive_data(bytes.fromhex(rec["wire_hex"]), rec["ts"])
                drain(client, rec["ts"])
                continue
            if rec["kind"] == "rsa_block":
                plain = bytes.fromhex(rec["plain_hex"])
                event = _credentials_event(kind, plain)
                assert vmjson.dumps(client._credential_fields(event)) == plain  # field order and escapes
                out = client.send(event, rec["ts"])
                assert out[32:40] == bytes.fromhex(rec["header_hex"])[32:40]  # length and plaintext sum
            else:
                out = client.send(_client_event(kind, rec), rec["ts"])
                assert out == bytes.fromhex(rec["wire_hex"]), (kind, rec["seq"])
            checked += 1
    assert checked > 10
