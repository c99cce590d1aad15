"""End to end on captures built in the test: conversations encoded with vmproto.wire, framed as TCP/IP/Ethernet
with small segments, reordering and retransmissions, then decoded by the inspector. No ../shared needed."""

from __future__ import annotations

import base64
import json
import random
import struct

import pytest
from cryptography.hazmat.primitives import serialization

from tests.inspect.pcapbuild import Conversation, Packet, write_pcap
from vmproto import keylog
from vmproto.inspect.__main__ import main
from vmproto.inspect.keys import load_keys
from vmproto.inspect.pipeline import inspect_capture
from vmproto.wire import vmjson
from vmproto.wire.compression import Compression, PbCompression, compress
from vmproto.wire.crypto import (
    AesBlockCipher,
    AesStreamEncryptor,
    ManagerAesKey,
    ManagerReplyEncryptor,
    generate_rsa_key,
    public_key_pem,
    rsa_encrypt,
    wrap_manager_request,
)
from vmproto.wire.framing import byte_sum, encode_block
from vmproto.wire.opening import encode_opening
from vmproto.wire.pbstore import ContainerBuilder
from vmproto.wire.store_msg import StoreMessage, encode_store_message

SERVICE_KEY, SERVICE_IV = "S" * 16 + "0123456789abcdef", "serviceiv0123456"
QUERY_KEY, QUERY_IV = "q1w2e3r4t5y6u7i8" + "o" * 16, "ivivivivivivivi0"
STORE_KEY, STORE_IV = "st0re;key<with>[]" + "z" * 15, "store_iv_16bytes"
SQL = b"SELECT * FROM sensor_config WHERE id_sensor = 7"
STORE_MSG = StoreMessage(10, "2026-11-26 04:21:36", (b"INSERT INTO t VALUES (1)", b"INSERT INTO t VALUES (2)"), True)
RESPONSE_OUTPUT = b"manager output line 1\nline 2\n" * 30


@pytest.fixture(scope="module")
def rsa_key():
    return generate_rsa_key(2048)


def _aes_block(cipher: AesBlockCipher, plain: bytes) -> bytes:
    return encode_block(cipher.encrypt(plain), plain_sum=byte_sum(plain))


def _rsa_handshake(conv: Conversation, type_connection: str, creds: dict, rsa_key, reply: bytes) -> None:
    conv.send("c2s", encode_opening({"type_connection": type_connection}))
    pem = public_key_pem(rsa_key)
    conv.send("s2c", encode_block(vmjson.dumps({"rsa_key": pem.decode()})))
    cred_bytes = vmjson.dumps(creds)
    conv.send("c2s", encode_block(rsa_encrypt(pem, cred_bytes), plain_sum=byte_sum(cred_bytes)))
    conv.send("s2c", encode_block(reply))


def _scenario(rsa_key, mss: int = 100) -> tuple[list[Packet], list[dict]]:
    """Four connections (service, query, store, response); return packets and key entries."""
    t0 = 1_790_000_000.0
    service = Conversation(cport=50001, isn_c=0xFFFFFFF0, ts=t0)
    service.handshake()
    svc_creds = {"sensor_id": 7, "password": "pw", "aes_ckey": SERVICE_KEY, "aes_ivec": SERVICE_IV,
                 "sensor_version": 2026004000, "check_ping_response": 1, "auto_parameters": 1}
    _rsa_handshake(service, "service", svc_creds, rsa_key, b'{"result":"OK","type_compress":1}')
    for _ in range(2):
        service.send("s2c", encode_block(b"ping"))
        service.send("c2s", encode_block(b"pong"))

    query = Conversation(cport=50002, isn_c=123456, ts=t0 + 1)
    query.handshake()
    _rsa_handshake(query, "query", {"password": "pw", "aes_ckey": QUERY_KEY, "aes_ivec": QUERY_IV}, rsa_key, b"OK")
    qc = AesBlockCipher(QUERY_KEY, QUERY_IV)
    query.send("c2s", _aes_block(qc, compress(Compression.GZIP, SQL)), mss=mss)
    query.send("s2c", _aes_block(qc, compress(Compression.GZIP, b'{"result":"OK"}')), mss=mss)
    query.send("c2s", _aes_block(qc, b"_END_"), mss=mss)
    query.close("c2s")
    query.close("s2c")

    store = Conversation(cport=50003, isn_c=99, ts=t0 + 2)
    store.handshake()
    _rsa_handshake(store, "store", {"password": "pw", "aes_ckey": STORE_KEY, "aes_ivec": STORE_IV}, rsa_key,
                   b'{"rslt":"OK","check_store":1,"check_time":1}')
    sc = AesBlockCipher(STORE_KEY, STORE_IV)
    store.send("c2s", _aes_block(sc, compress(Compression.ZSTD, encode_store_message(STORE_MSG))), mss=mss)
    store.send("s2c", _aes_block(sc, b"OK"), mss=mss)
    store.close("c2s")

    response = Conversation(cport=50004, isn_c=5, ts=t0 + 3)
    response.handshake()
    enc = AesStreamEncryptor(SERVICE_KEY.encode()[:16], SERVICE_IV.encode())
    opening = encode_opening({"type_connection": "response", "gui_task_id": "1713095857123456:42"})
    response.send("c2s", opening + enc.update(RESPONSE_OUTPUT) + enc.finalize(), mss=mss)
    response.close("c2s")

    pem = rsa_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    entries = [
        # service and store: the private key is in the key file, so the RSA block is decrypted for real.
        keylog.connection_entry(conn=50001, type_connection="service", opened_ts=t0, aes_ckey=SERVICE_KEY,
                                aes_ivec=SERVICE_IV, server_rsa_private_key_pem=pem),
        # query: only the credentials plaintext, as in the recordings.
        keylog.connection_entry(conn=50002, type_connection="query", opened_ts=t0 + 1, aes_ckey=QUERY_KEY,
                                aes_ivec=QUERY_IV, credentials_json=vmjson.dumps(
                                    {"password": "pw", "aes_ckey": QUERY_KEY, "aes_ivec": QUERY_IV}).decode()),
        keylog.connection_entry(conn=50003, type_connection="store", opened_ts=t0 + 2, aes_ckey=None, aes_ivec=None,
                                server_rsa_private_key_pem=pem),
        keylog.connection_entry(conn=50004, type_connection="response", opened_ts=t0 + 3, aes_ckey=None,
                                aes_ivec=None),
    ]
    packets = service.packets + query.packets + store.packets + response.packets
    return packets, entries


def _keys(tmp_path, entries):
    path = tmp_path / "keys.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in entries))
    return path


def _disturb(packets: list[Packet], seed: int) -> list[Packet]:
    """Reorder data segments within a window and retransmit some, keeping timestamps in capture order."""
    rnd = random.Random(seed)
    out = packets[:]
    for i in range(0, len(out) - 3, 3):
        window = out[i : i + 3]
        rnd.shuffle(window)
        out[i : i + 3] = window
    with_data = [p for p in packets if p.payload]
    for p in rnd.sample(with_data, min(8, len(with_data))):
        out.insert(rnd.randrange(len(out)), Packet(**vars(p)))
    return out


def _summary(messages):
    # Reordering may change which frame carries a message's first byte, hence the interleaving of the two
    # directions; within one direction the decoding must not change at all.
    rows = [(m["conn"], m["dir"], m["stream_offset"], m["kind"], m.get("text"), m.get("wire_hex")) for m in messages]
    return sorted(rows, key=lambda r: (r[0], r[1], r[2]))


def test_decodes_every_connection_type(rsa_key, tmp_path):
    packets, entries = _scenario(rsa_key)
    keys = load_keys(_keys(tmp_path, entries))
    clean = list(inspect_capture(write_pcap(packets), keys))
    assert [m for m in clean if m["kind"] == "error"] == []
    by_conn = {}
    for m in clean:
        by_conn.setdefault(m["conn"], []).append(m)
    service = by_conn[50001]
    assert [m["kind"] for m in service] == ["opening_line", "plain_block", "rsa_block", "plain_block"] + [
        "plain_block"] * 4
    assert service[2]["plaintext_source"] == ["decrypted with server_rsa_private_key_pem of the key file"]
    assert json.loads(service[2]["text"])["aes_ckey"] == SERVICE_KEY
    assert [m["text"] for m in service[4:]] == ["ping", "pong", "ping", "pong"]
    query = by_conn[50002]
    assert query[4]["kind"] == "aes_block" and query[4]["text"] == SQL.decode() and query[4]["decompressed"] == "gzip"
    assert query[4]["compression_info"]["gzip_os"] == 3
    assert query[5]["text"] == '{"result":"OK"}' and query[6]["text"] == "_END_"
    store = by_conn[50003]
    assert store[4]["decompressed"] == "zstd"
    assert store[4]["store"] == {
        "id_main": 10, "time": "2026-11-26 04:21:36", "format": "L<len>:<query>\\n items", "items_parse_ok": True,
        "items": [{"length": 24, "separator_after_hex": "0a", "starts": "INSERT INTO t VALUES (1)"},
                  {"length": 24, "separator_after_hex": "0a", "starts": "INSERT INTO t VALUES (2)"}],
    }
    (opening, raw) = by_conn[50004]
    assert opening["kind"] == "opening_line" and raw["kind"] == "raw"
    assert bytes.fromhex(raw["plain_hex"]) == RESPONSE_OUTPUT
    # Sequence numbers are the wire order within each connection.
    assert all([m["seq"] for m in msgs] == list(range(len(msgs))) for msgs in by_conn.values())


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_reordering_and_retransmission_do_not_change_the_decoding(rsa_key, tmp_path, seed):
    packets, entries = _scenario(rsa_key, mss=37)
    keys = load_keys(_keys(tmp_path, entries))
    clean = list(inspect_capture(write_pcap(packets), keys))
    disturbed = list(inspect_capture(write_pcap(_disturb(packets, seed)), keys))
    assert [m for m in disturbed if m["kind"] == "error"] == []
    assert _summary(disturbed) == _summary(clean)


def test_truncated_capture_gives_error_entries(rsa_key, tmp_path):
    packets, entries = _scenario(rsa_key)
    keys = load_keys(_keys(tmp_path, entries))
    raw = write_pcap(packets)
    # Cut inside the frame carrying the last 20 bytes of the store connection's 120-byte AES block.
    store_data = [p for p in packets if p.sport == 50003 and p.payload]
    cut_at = raw.index(store_data[-1].payload) + 10
    messages = list(inspect_capture(raw[:cut_at], keys))
    errors = [m for m in messages if m["kind"] == "error"]
    assert errors[0]["conn"] == 50003 and "incomplete" in errors[0]["reason"]
    assert errors[-1]["conn"] is None and "truncated" in errors[-1]["reason"]
    # Everything before the cut is still decoded.
    assert any(m["conn"] == 50002 and m.get("text") == "_END_" for m in messages)


def test_missing_start_resyncs_on_block_magic(rsa_key, tmp_path):
    packets, entries = _scenario(rsa_key)
    keys = load_keys(_keys(tmp_path, entries))
    query = [p for p in packets if 50002 in (p.sport, p.dport)]
    ok_reply = next(i for i, p in enumerate(query) if p.payload == encode_block(b"OK"))
    late = query[ok_reply + 1 :]  # no handshake, no opening line, no RSA block
    messages = list(inspect_capture(write_pcap(late), keys))
    assert messages[0]["kind"] == "error" and "start not captured" in messages[0]["reason"]
    texts = [m.get("text") for m in messages if m.get("resynced")]
    assert SQL.decode() in texts and "_END_" in texts


def test_wrong_key_gives_error_entries_not_tracebacks(rsa_key, tmp_path):
    packets, entries = _scenario(rsa_key)
    entries[1] = keylog.connection_entry(conn=50002, type_connection="query", opened_ts=entries[1]["opened_ts"],
                                         aes_ckey="W" * 32, aes_ivec="X" * 16,
                                         credentials_json=entries[1]["credentials_json"])
    keys = load_keys(_keys(tmp_path, entries))
    messages = [m for m in inspect_capture(write_pcap(packets), keys) if m["conn"] == 50002]
    aes = [m for m in messages if m.get("expected") == "aes_block"]
    assert len(aes) == 3 and all(m["kind"] == "error" for m in aes)
    assert all("failed aes decrypt" in m["reason"] or "bad checksum" in m["reason"] for m in aes)


def test_without_keys_only_encrypted_parts_fail(rsa_key):
    packets, _ = _scenario(rsa_key)
    messages = list(inspect_capture(write_pcap(packets)))
    service = [m for m in messages if m["conn"] == 50001]
    assert [m["text"] for m in service[-4:]] == ["ping", "pong", "ping", "pong"]
    errors = [m for m in messages if m["kind"] == "error"]
    assert errors and all(m.get("reason") for m in errors)


def test_cli_json_and_text(rsa_key, tmp_path, capsys):
    packets, entries = _scenario(rsa_key)
    pcap = tmp_path / "c.pcap"
    pcap.write_bytes(write_pcap(packets))
    keys = _keys(tmp_path, entries)
    assert main([str(pcap), "--keys", str(keys), "--json", "--conn", "50002"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {m["conn"] for m in lines} == {50002} and lines[4]["text"] == SQL.decode()
    assert main([str(pcap), "--keys", str(keys)]) == 0
    out = capsys.readouterr().out
    assert "== connection from port 50003: store" in out and "INSERT INTO t VALUES (2)" in out
    assert main([str(tmp_path / "missing.pcap")]) == 2
    assert "cannot read capture" in capsys.readouterr().err


def test_mutated_and_cut_captures_never_raise(rsa_key, tmp_path):
    """Any damage to the capture gives entries (possibly errors), never an exception."""
    packets, entries = _scenario(rsa_key, mss=300)
    keys = load_keys(_keys(tmp_path, entries))
    raw = write_pcap(packets)
    rnd = random.Random(42)
    for _ in range(150):
        data = bytearray(raw)
        for _ in range(rnd.randint(1, 6)):
            pos = rnd.randrange(24, len(data))
            data[pos] = rnd.randrange(256)
        cut = rnd.randrange(len(data) // 2, len(data) + 1)
        for msg in inspect_capture(bytes(data[:cut]), keys):
            assert msg["kind"] in {"opening_line", "plain_block", "rsa_block", "aes_block", "raw", "error"}
            if msg["kind"] == "error":
                assert msg["reason"]


def _sip_frame(i: int) -> bytes:
    payload = f"OPTIONS sip:{i}@198.51.100.20 SIP/2.0\r\nCall-ID: x{i}\r\n\r\n".encode()
    udp = struct.pack("!HHHH", 5060, 5060, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), i, 0, 64, 17, 0, bytes([192, 0, 2, 10]),
                     bytes([198, 51, 100, 20])) + udp
    return b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip


@pytest.mark.parametrize(("method", "name"), [(PbCompression.SNAPPY, "snappy"), (PbCompression.LZ4, "lz4"),
                                              (None, "none")])
def test_packetbuffer_containers(rsa_key, tmp_path, method, name):
    conv = Conversation(cport=50010, ts=1_790_000_100.0)
    conv.handshake()
    creds = {"time": "2026-11-26 04:00:00", "password": "pw", "sensor_id": 3, "sensor_name": "",
             "aes_ckey": QUERY_KEY, "aes_ivec": QUERY_IV}
    _rsa_handshake(conv, "packetbuffer block", creds, rsa_key, b"OK")
    cipher = AesBlockCipher(QUERY_KEY, QUERY_IV)
    builder = ContainerBuilder()
    for i in range(5):
        builder.add(1_790_000_000 + i, 1000 * i, _sip_frame(i))
    container = builder.build(counter=1, time_s=1_790_000_100, sensor_id=3, ifname="read_from", compress=method)
    conv.send("c2s", _aes_block(cipher, container), mss=200)
    conv.send("s2c", _aes_block(cipher, b"OK"))
    entries = [keylog.connection_entry(conn=50010, type_connection="packetbuffer block", opened_ts=conv.packets[0].ts,
                                       aes_ckey=QUERY_KEY, aes_ivec=QUERY_IV,
                                       credentials_json=vmjson.dumps(creds).decode())]
    messages = list(inspect_capture(write_pcap(_disturb(conv.packets, 5)), load_keys(_keys(tmp_path, entries))))
    assert [m for m in messages if m["kind"] == "error"] == []
    (block,) = [m for m in messages if "pcap_block_store" in m]
    pb = block["pcap_block_store"]
    assert block["text"] is None and pb["data_compression"] == name
    assert (pb["count"], pb["counter"], pb["sensor_id"], pb["ifname"], pb["hm"]) == (5, 1, 3, "read_from", 0)
    assert pb["checksum_matches"] == ["signed8_mod65536"]
    assert pb["packets_contiguous_no_padding"] and pb["offsets_strictly_increasing"]
    assert [p["summary"] for p in pb["packets"]] == [
        f"UDP 192.0.2.10:5060 > 198.51.100.20:5060 len {len(_sip_frame(i)) - 42} SIP OPTIONS sip:{i}@198.51.100.20 SIP/2.0"
        for i in range(5)
    ]
    assert [p["ts_tv_usec"] for p in pb["packets"]] == [0, 1000, 2000, 3000, 4000]


def test_hole_in_the_middle_resyncs_after_it(rsa_key, tmp_path):
    packets, entries = _scenario(rsa_key)
    keys = load_keys(_keys(tmp_path, entries))
    # Drop the segment carrying the start of the query connection's first AES block.
    query_c2s = [p for p in packets if p.sport == 50002 and p.payload]
    lost = query_c2s[2]
    messages = [m for m in inspect_capture(write_pcap([p for p in packets if p is not lost]), keys)
                if m["conn"] == 50002 and m["dir"] == "c2s"]
    kinds = [m["kind"] for m in messages]
    assert kinds[:2] == ["opening_line", "rsa_block"] and kinds[2] == "error"
    assert "never captured" in messages[2]["reason"]
    assert messages[-1]["text"] == "_END_" and messages[-1]["resynced"] is True


def test_pcapng_capture(rsa_key, tmp_path):
    packets, entries = _scenario(rsa_key)
    keys = load_keys(_keys(tmp_path, entries))
    shb = struct.pack("<IIIHHq", 0x0A0D0D0A, 28, 0x1A2B3C4D, 1, 0, -1) + struct.pack("<I", 28)
    idb_body = struct.pack("<HHI", 1, 0, 262144) + struct.pack("<HHB3x", 9, 1, 9) + struct.pack("<HH", 0, 0)
    idb = struct.pack("<II", 1, 12 + len(idb_body)) + idb_body + struct.pack("<I", 12 + len(idb_body))
    blocks = [shb, idb]
    for p in packets:
        frame = p.frame()
        ns = round(p.ts * 1e9)
        body = struct.pack("<IIIII", 0, ns >> 32, ns & 0xFFFFFFFF, len(frame), len(frame)) + frame
        body += b"\0" * (-len(body) % 4)
        blocks.append(struct.pack("<II", 6, 12 + len(body)) + body + struct.pack("<I", 12 + len(body)))
    from_ng = list(inspect_capture(b"".join(blocks), keys))
    from_pcap = list(inspect_capture(write_pcap(packets), keys))
    assert from_ng == from_pcap


def test_conflicting_retransmission_is_reported(rsa_key, tmp_path):
    packets, entries = _scenario(rsa_key)
    keys = load_keys(_keys(tmp_path, entries))
    seg = next(p for p in packets if p.sport == 50002 and p.payload)
    forged = Packet(**{**vars(seg), "payload": b"{" * len(seg.payload), "ts": seg.ts + 100})
    messages = list(inspect_capture(write_pcap(packets + [forged]), keys))
    (conflict,) = [m for m in messages if m["kind"] == "error"]
    assert conflict["conn"] == 50002 and "different bytes" in conflict["reason"]
    assert conflict["pcap_frame"] == len(packets) + 1
    assert messages[[m["conn"] for m in messages].index(50002)]["text"] == '{"type_connection":"query"}\r\n'


def test_gui_command_with_manager_aes(tmp_path):
    manager = ManagerAesKey(b"K" * 16, b"I" * 16)
    conv = Conversation(cport=50020)
    conv.handshake()
    request = wrap_manager_request(vmjson.dumps({"type_connection": "gui_command", "sensor_id": 7,
                                                 "command": "listcalls"}), manager)
    conv.send("c2s", request)
    reply = ManagerReplyEncryptor(manager, eager_prefix=True)
    conv.send("s2c", reply.begin() + reply.update(b"[[call list]]") + reply.finalize())
    conv.close("s2c")
    key_b64 = {"manager_aes_key": base64.b64encode(manager.key).decode(),
               "manager_aes_iv": base64.b64encode(manager.iv).decode()}
    keys = load_keys(_keys(tmp_path, [{"conn": 50020, "type_connection": "gui_command", **key_b64}]))
    opening, raw = inspect_capture(write_pcap(conv.packets), keys)
    assert opening["kind"] == "opening_line" and opening["aes_cipher"] == "aes-128-cbc"
    assert json.loads(opening["text"])["command"] == "listcalls"
    assert opening["wire_hex"] == request.hex()
    assert raw["kind"] == "raw" and raw["text"] == "[[call list]]"
    # Without the manager key: the opening line is an error entry, not an exception.
    (err, raw2) = inspect_capture(write_pcap(conv.packets))
    assert err["kind"] == "error" and "failed aes decrypt" in err["reason"]
    assert raw2["kind"] == "raw"


def test_hole_inside_a_block_resyncs_after_it(rsa_key, tmp_path):
    packets, entries = _scenario(rsa_key, mss=40)
    keys = load_keys(_keys(tmp_path, entries))
    query_c2s = [p for p in packets if p.sport == 50002 and p.payload]
    lost = query_c2s[3]  # the second segment of the first AES block (its first one carries the header)
    messages = [m for m in inspect_capture(write_pcap([p for p in packets if p is not lost]), keys)
                if m["conn"] == 50002 and m["dir"] == "c2s"]
    assert [m["kind"] for m in messages] == ["opening_line", "rsa_block", "error", "aes_block"]
    assert "block of 64 bytes incomplete" in messages[2]["reason"] and "never captured" in messages[2]["reason"]
    assert messages[3]["text"] == "_END_" and messages[3]["resynced"] is True
