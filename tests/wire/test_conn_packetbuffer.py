"""packetbuffer block machines end to end in memory (spec §9, facts §4.7)."""

from __future__ import annotations

import pytest

from tests.wire.pair import CKEY, IVEC, Pair, rsa_key
from vmproto.wire import events as ev
from vmproto.wire._state import State
from vmproto.wire.errors import RemoteProtocolError
from vmproto.wire.framing import encode_block
from vmproto.wire.packetbuffer import PacketbufferClient, PacketbufferServer
from vmproto.wire.pbstore import ContainerBuilder

NOW = 1_795_667_292.0  # 2026-11-26 04:28:12 UTC


def creds(time: str = "2026-11-26 04:28:12") -> ev.PacketbufferCredentials:
    return ev.PacketbufferCredentials("refpass", CKEY, IVEC, time, 3, "")


def container(counter: int, confirm: bool = True, time_s: int = int(NOW)) -> bytes:
    builder = ContainerBuilder()
    builder.add(int(NOW) - 60, 0, b"\0" * 14 + b"E" + b"\0" * 40)
    return builder.build(counter=counter, time_s=time_s, sensor_id=3, require_confirmation=confirm)


def ready() -> Pair:
    pair = Pair(PacketbufferClient(), PacketbufferServer(rsa_key=rsa_key(), password="refpass"), now=NOW)
    assert pair.handshake(ev.OpenConnection("packetbuffer block"), creds(), ev.HandshakeOK()) == ev.HandshakeOK()
    return pair


def test_credentials_field_order():
    pair = Pair(PacketbufferClient(), PacketbufferServer(rsa_key=rsa_key(), password="refpass"), now=NOW)
    from vmproto.wire import vmjson

    text = vmjson.dumps(pair.client._credential_fields(creds()))
    assert text == (b'{"password":"refpass","aes_ckey":"' + CKEY.encode() + b'","aes_ivec":"' + IVEC.encode()
                    + b'","time":"2026-11-26 04:28:12","sensor_id":3,"sensor_name":""}')
    assert len(text) == 150 + len("refpass") + 1  # README item 8


@pytest.mark.parametrize(("time", "ok"), [("2026-11-26 04:28:14", True), ("2026-11-26 04:28:15", False),
                                          ("2026-11-26 05:28:13", True), ("garbage", False)])
def test_handshake_time_check_mod_1800(time, ok):
    pair = Pair(PacketbufferClient(), PacketbufferServer(rsa_key=rsa_key(), password="refpass"), now=NOW)
    pair.client_send(ev.OpenConnection("packetbuffer block"))
    pair.server_send(ev.RsaKey(pair.server.public_pem))
    pair.server.receive_data(pair.client.send(creds(time)), NOW)
    if ok:
        assert isinstance(pair.server.next_event(NOW), ev.PacketbufferCredentials)
        return
    with pytest.raises(RemoteProtocolError) as info:
        pair.server.next_event(NOW)
    assert pair.server.encode_reply(info.value) == encode_block(b"bad time")


def test_blocks_acked_dedup_and_loss():
    pair = ready()
    got = pair.client_send(ev.PacketbufferBlock(container(1)))
    assert [type(e) for e in got] == [ev.PacketbufferBlock] and got[0].counter == 1
    assert pair.server_send(ev.BlockReply()) == [ev.BlockReply("OK")]
    # same counter again: acknowledged but flagged duplicate (drop it)
    got = pair.client_send(ev.PacketbufferBlock(container(1)))
    assert got[0].duplicate
    pair.server_send(ev.BlockReply())
    # a gap: accepted with a loss warning first
    got = pair.client_send(ev.PacketbufferBlock(container(4)))
    assert got[0] == ev.BlockLoss(1, 4) and not got[1].duplicate
    pair.server_send(ev.BlockReply())
    # no confirmation requested: nothing to answer, both sides stay READY
    got = pair.client_send(ev.PacketbufferBlock(container(5, confirm=False)))
    assert got[0].require_confirmation is False
    assert pair.client.state is State.READY and pair.server.state is State.READY


def test_bad_container_is_answered_with_the_error_and_connection_stays():
    pair = ready()
    bad = bytearray(container(1))
    bad[16] = 6
    got = pair.client_send(ev.PacketbufferBlock(bytes(bad)))
    assert got == [ev.Rejected("bad version - sender and receiver must be the same version",
                               "bad version - sender and receiver must be the same version")]
    assert pair.server_send(ev.BlockReply(got[0].reply)) == [ev.BlockReply(got[0].reply)]
    old = container(2, time_s=int(NOW) - 31)
    got = pair.client_send(ev.PacketbufferBlock(old))
    assert got[0].reply.startswith("Time difference between server and client (id_sensor:3) is too big (31s)")
