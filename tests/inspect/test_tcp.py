"""Capture reading and TCP reassembly, with captures built in the test (no ../shared needed)."""

from __future__ import annotations

import random

import pytest

from tests.inspect.pcapbuild import ACK, PSH, RST, Conversation, Packet, write_pcap
from vmproto.inspect.errors import InspectError
from vmproto.inspect.pcapread import parse_capture
from vmproto.inspect.tcp import connections

C2S = bytes(range(256)) * 40  # 10240 bytes
S2C = b"reply-" * 1000


def _conversation(**kw) -> Conversation:
    conv = Conversation(**kw)
    conv.handshake()
    conv.send("c2s", C2S[:5000], mss=700)
    conv.send("s2c", S2C, mss=1000)
    conv.send("c2s", C2S[5000:], mss=1300)
    conv.close("c2s")
    conv.close("s2c")
    return conv


@pytest.mark.parametrize("linktype", [1, 113, 0])
def test_in_order_all_link_types(linktype):
    conv = _conversation()
    (conn,) = connections(parse_capture(write_pcap(conv.packets, linktype)), 60024)
    assert conn.client_port == 40000 and conn.syn_seen
    assert conn.c2s.data == C2S and conn.s2c.data == S2C
    assert conn.c2s.hole is None and conn.c2s.fin is not None and not conn.c2s.missing_start


def test_reordered_and_retransmitted_segments_first_copy_wins():
    conv = _conversation()
    head, data = conv.packets[:3], conv.packets[3:]
    rnd = random.Random(7)
    shuffled = data[:]
    rnd.shuffle(shuffled)
    # Retransmit some segments, and add one that overlaps two earlier ones half-way.
    dup = [Packet(**{**vars(p), "ts": p.ts + 1}) for p in data[2:5]]
    a, b = data[0], data[1]
    overlap = Packet(**{**vars(a), "seq": a.seq + len(a.payload) // 2,
                        "payload": a.payload[len(a.payload) // 2 :] + b.payload[:100], "ts": a.ts + 2})
    packets = head + shuffled + dup + [overlap]
    (conn,) = connections(parse_capture(write_pcap(packets)), 60024)
    assert conn.c2s.data == C2S and conn.s2c.data == S2C
    assert conn.c2s.conflicts == []
    # Every byte maps to the frame that carried it first.
    frame_of = {p.seq: i + 1 for i, p in enumerate(packets) if p.payload and p not in dup and p is not overlap}
    first_c2s = data[0]
    assert conn.c2s.origin(0)[0] == frame_of[first_c2s.seq]


def test_conflicting_retransmission_is_recorded():
    conv = _conversation()
    seg = conv.packets[3]
    bad = Packet(**{**vars(seg), "payload": b"X" * len(seg.payload), "ts": seg.ts + 5})
    (conn,) = connections(parse_capture(write_pcap(conv.packets + [bad])), 60024)
    assert conn.c2s.data == C2S
    assert [c.offset for c in conn.c2s.conflicts] == [0]


def test_lost_segment_leaves_a_hole_and_islands():
    conv = _conversation()
    lost = conv.packets[5]  # third c2s data segment
    (conn,) = connections(parse_capture(write_pcap([p for p in conv.packets if p is not lost])), 60024)
    assert conn.c2s.data == C2S[:1400]
    assert conn.c2s.hole == (1400, 2100)
    assert conn.c2s.islands[0].start == 2100


def test_missing_start_and_rst_and_port_reuse():
    conv = _conversation()
    no_syn = conv.packets[4:]  # capture started after the handshake and the first segment
    (conn,) = connections(parse_capture(write_pcap(no_syn)), 60024)
    assert conn.c2s.missing_start and conn.c2s.data == C2S[700:]
    # A second connection from the same port after a RST is a new connection.
    first = Conversation(cport=41000)
    first.handshake()
    first.send("c2s", b"one")
    first.close("c2s", RST | ACK)
    second = Conversation(cport=41000, isn_c=777, ts=first.ts + 1)
    second.handshake()
    second.send("c2s", b"two")
    conns = connections(parse_capture(write_pcap(first.packets + second.packets)), 60024)
    assert [c.c2s.data for c in conns] == [b"one", b"two"]
    assert conns[0].c2s.rst is not None


def test_data_after_fin_and_keepalive_are_ignored():
    conv = Conversation()
    conv.handshake()
    conv.send("c2s", b"hello")
    keepalive = Packet(conv.ts + 1, conv.client, conv.cport, conv.server, conv.sport, conv.next["c2s"] - 1,
                       0, ACK, b"\0")
    conv.close("c2s")
    late = Packet(conv.ts + 2, conv.client, conv.cport, conv.server, conv.sport, conv.next["c2s"], 0, PSH | ACK,
                  b"late")
    (conn,) = connections(parse_capture(write_pcap(conv.packets[:4] + [keepalive] + conv.packets[4:] + [late])), 60024)
    assert conn.c2s.data == b"hello"


def test_truncated_capture_keeps_complete_frames():
    conv = _conversation()
    raw = write_pcap(conv.packets)
    cap = parse_capture(raw[:-10])
    assert len(cap.frames) == len(conv.packets) - 1
    assert "truncated" in cap.problem


def test_not_a_capture():
    with pytest.raises(InspectError, match="not a pcap"):
        parse_capture(b"hello world, not a pcap")
