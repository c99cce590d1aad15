import dpkt
import trio

from vmproto.testing.recproxy import RecordingProxy


async def _echo_server(task_status=trio.TASK_STATUS_IGNORED):
    async def handler(stream):
        async with stream:
            while data := await stream.receive_some(1024):
                await stream.send_all(data.upper())

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(handler, listeners)


async def test_proxy_forwards_and_records(tmp_path):
    async with trio.open_nursery() as nursery:
        target_port = await nursery.start(_echo_server)
        proxy = RecordingProxy("127.0.0.1", target_port)
        port = await nursery.start(proxy.serve)
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(b"hello")
        got = b""
        with trio.fail_after(5):
            while len(got) < 5:
                got += await stream.receive_some(1024)
        assert got == b"HELLO"
        await stream.aclose()
        with trio.fail_after(5):
            while not any(s.flags & dpkt.tcp.TH_FIN for c in proxy.conversations for s in c.segments
                          if s.direction == "s2c"):
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    path = tmp_path / "p.pcap"
    assert proxy.write(path) > 0
    payload = {"c2s": b"", "s2c": b""}
    with open(path, "rb") as fh:
        for _ts, frame in dpkt.pcap.Reader(fh):
            tcp = dpkt.ethernet.Ethernet(frame).data.data
            payload["c2s" if tcp.dport == target_port else "s2c"] += tcp.data
    assert payload == {"c2s": b"hello", "s2c": b"HELLO"}
