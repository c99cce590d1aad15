import dpkt

from vmproto.testing.tcprecord import MSS, TcpConversation, write_pcap


def test_written_pcap_reassembles(tmp_path):
    conv = TcpConversation(("127.0.0.1", 40000), ("127.0.0.1", 60024))
    conv.open(1.0)
    conv.data(1.1, "c2s", b'{"type_connection":"store"}\r\n')
    big = bytes(range(256)) * 300  # 76,800 bytes > MSS: split into two segments
    conv.data(1.2, "s2c", big)
    conv.fin(1.3, "c2s")
    conv.fin(1.3, "s2c")
    path = tmp_path / "c.pcap"
    n = write_pcap(path, [conv])
    assert n == 3 + 1 + 2 + 2
    streams = {"c2s": b"", "s2c": b""}
    with open(path, "rb") as fh:
        for _ts, frame in dpkt.pcap.Reader(fh):
            tcp = dpkt.ethernet.Ethernet(frame).data.data
            direction = "c2s" if tcp.dport == 60024 else "s2c"
            streams[direction] += tcp.data
            assert len(tcp.data) <= MSS
    assert streams["c2s"] == b'{"type_connection":"store"}\r\n'
    assert streams["s2c"] == big
