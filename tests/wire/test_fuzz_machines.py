"""Fuzz every machine in both roles (h11 fuzz/ style): random bytes, random framed blocks (plain and AES with the
connection's key) and mutated valid conversations. Only vmproto.wire errors may escape, a RemoteProtocolError
leaves the machine CLOSED, and buffering stays bounded by the configured caps."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.wire.pair import CKEY, IVEC, Pair, drain, rsa_key
from vmproto.wire import events as ev
from vmproto.wire._state import State
from vmproto.wire.acceptor import Acceptor
from vmproto.wire.crypto import AesBlockCipher
from vmproto.wire.errors import ProtocolError, RemoteProtocolError
from vmproto.wire.framing import HEADER_SIZE, byte_sum, encode_block
from vmproto.wire.gui import GuiCommandClient, GuiCommandServer, ManagerCommandClient, ManagerCommandServer
from vmproto.wire.keycheck import KeycheckClient, KeycheckServer
from vmproto.wire.packetbuffer import PacketbufferClient, PacketbufferServer
from vmproto.wire.query import QueryClient, QueryServer
from vmproto.wire.response import ResponseClient, ResponsesClient, ResponseServer, ResponsesServer
from vmproto.wire.service import ServiceClient, ServiceServer
from vmproto.wire.store import StoreClient, StoreServer

CAPS = {"max_block_payload": 4096, "max_decompressed": 65536, "opening_max": 1024}
NOW = 1_800_000_000.0
SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CIPHER = AesBlockCipher(CKEY, IVEC)

HANDSHAKE = {
    "query": (QueryClient, QueryServer, ev.Credentials("pw", CKEY, IVEC), ev.HandshakeOK()),
    "store": (StoreClient, StoreServer, ev.Credentials("pw", CKEY, IVEC), ev.StoreAccepted()),
    "packetbuffer block": (PacketbufferClient, PacketbufferServer,
                           ev.PacketbufferCredentials("pw", CKEY, IVEC, "", 3, "s"), ev.HandshakeOK()),
    "responses": (ResponsesClient, ResponsesServer, ev.Credentials("pw", CKEY, IVEC), ev.HandshakeOK()),
    "keycheck": (KeycheckClient, KeycheckServer, ev.Credentials("pw", CKEY, IVEC), ev.HandshakeOK()),
    "service": (ServiceClient, ServiceServer, ev.ServiceCredentials(2, "pw", CKEY, IVEC, 2026004000,
                                                                   use_encode_data=True), None),
}


def ready_pair(ctype: str) -> Pair:
    client_cls, server_cls, creds, accept = HANDSHAKE[ctype]
    pair = Pair(client_cls(**CAPS), server_cls(rsa_key=rsa_key(2048), password="pw", **CAPS), now=NOW)
    if accept is None:
        accept = ev.ServiceAccepted(ev.ServiceParameters(type_compress=1))
    pair.handshake(ev.OpenConnection(ctype), creds, accept)
    return pair


def feed(conn, chunks: list[bytes]) -> None:
    """Feed chunks, draining after each; assert the error discipline and the buffering bound."""
    for chunk in chunks:
        try:
            conn.receive_data(chunk, NOW)
            drain(conn, NOW)
        except RemoteProtocolError:
            assert conn.state is State.CLOSED
            return
        except ProtocolError:
            return
        assert conn._blocks.buffered <= HEADER_SIZE + CAPS["max_block_payload"]
    try:
        conn.receive_data(b"", NOW)
        drain(conn, NOW)
    except RemoteProtocolError:
        assert conn.state is State.CLOSED
    except ProtocolError:
        pass


chunks = st.lists(st.binary(max_size=600), min_size=1, max_size=6)
payloads = st.lists(st.binary(max_size=300), min_size=1, max_size=4)


def fresh_machines():
    yield QueryServer(rsa_key=rsa_key(2048), password="pw", **CAPS)
    yield StoreServer(rsa_key=rsa_key(2048), password="pw", **CAPS)
    yield PacketbufferServer(rsa_key=rsa_key(2048), password="pw", **CAPS)
    yield ServiceServer(rsa_key=rsa_key(2048), password="pw", **CAPS)
    yield ResponsesServer(rsa_key=rsa_key(2048), password="pw", **CAPS)
    yield KeycheckServer(rsa_key=rsa_key(2048), password="pw", **CAPS)
    yield ResponseServer(**CAPS)
    yield GuiCommandServer(**CAPS)
    yield ManagerCommandServer(**CAPS)


@SETTINGS
@given(data=chunks, prefix=st.sampled_from([b"", b'{"type_connection":"query"}\r\n',
                                            b'{"type_connection":"response","gui_task_id":"1:2"}\r\n',
                                            b'{"type_connection":"gui_command","sensor_id":2,"command":"x"}\r\n',
                                            b'{"type_connection":"manager_command","command":"active"}\r\n']))
def test_fresh_servers_take_random_bytes(data, prefix):
    for conn in fresh_machines():
        feed(conn, [prefix + data[0], *data[1:]])
    acceptor = Acceptor(max_size=1024)
    try:
        for chunk in data:
            acceptor.receive_data(chunk)
            acceptor.next_opening()
    except ProtocolError:
        pass


@SETTINGS
@given(data=chunks)
def test_clients_waiting_for_the_server_take_random_bytes(data):
    for cls in (QueryClient, StoreClient, PacketbufferClient, ServiceClient, ResponsesClient, KeycheckClient):
        conn = cls(**CAPS)
        conn.send(ev.OpenConnection(cls.connection_type))
        feed(conn, data)
        conn = cls(**CAPS)
        conn.send(ev.OpenConnection(cls.connection_type))
        feed(conn, [encode_block(b'{"rsa_key":"-----BEGIN PUBLIC KEY-----\\nAAAA"}'), *data])
    for cls in (GuiCommandClient, ManagerCommandClient):
        conn = cls(**CAPS)
        fields = {"sensor_id": 2, "command": "x"} if cls is GuiCommandClient else {"command": "x"}
        conn.send(ev.OpenConnection(cls.connection_type, fields))
        feed(conn, data)
    conn = ResponseClient(aes_ckey=CKEY, aes_ivec=IVEC, **CAPS)
    feed(conn, data)


@SETTINGS
@given(ctype=st.sampled_from(sorted(HANDSHAKE)), payload_list=payloads, aes=st.booleans(),
       to_server=st.booleans(), flip=st.integers(min_value=0, max_value=10_000))
def test_data_phase_takes_random_blocks(ctype, payload_list, aes, to_server, flip):
    pair = ready_pair(ctype)
    conn = pair.server if to_server else pair.client
    if to_server and ctype == "packetbuffer block":
        # Give some payloads a real container header so the validation paths are reached.
        payload_list = [b"pcap_block_store\x07" + p for p in payload_list]
    blocks = []
    for payload in payload_list:
        body = CIPHER.encrypt(payload) if aes else payload
        blocks.append(bytearray(encode_block(body, byte_sum(payload))))
    if flip and blocks:
        target = blocks[flip % len(blocks)]
        target[flip % len(target)] ^= 0x5A
    feed(conn, [bytes(b) for b in blocks])
