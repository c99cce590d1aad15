"""The HEP (UDP and TCP) and IPFIX listeners feed the sensor's call analysis, as exporters push to a live sensor."""

from __future__ import annotations

from pathlib import Path

import trio

from vmproto import config
from vmproto.sensor.app import SensorApp
from vmproto.sensor.calls import CallAnalyzer
from vmproto.testing import pcapgen
from vmproto.testing.callgen import CallSpec, generate_call


class _ListSink:
    def __init__(self) -> None:
        from vmproto.sensor.classic import SinkSummary

        self.summary = SinkSummary()
        self.cdrs: list = []

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep_forever()

    async def submit(self, cdr) -> None:
        self.summary.submitted += 1
        self.summary.committed += 1
        self.cdrs.append(cdr)

    async def aclose(self) -> None:
        return None


def _cfg(tmp_path: Path, **options: object) -> config.Config:
    text = f"spooldir = {tmp_path / 'spool'}\nmanagerport = 0\ninterface = --\n"
    return config.load_text(text + "".join(f"{k} = {v}\n" for k, v in options.items()))


async def _run_app(cfg: config.Config, push) -> list:  # type: ignore[no-untyped-def]
    """Start the app, let `push(app)` send traffic, stop it like SIGTERM; return the CDRs."""
    sink = _ListSink()
    started = trio.Event()
    app = SensorApp(cfg, sinks=[sink], on_started=lambda _a: started.set())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(app.run)
        with trio.fail_after(20):
            await started.wait()
            while not app.listeners.addresses:
                await trio.sleep(0.01)
            await push(app)
            while app.listeners.records < 1:
                await trio.sleep(0.01)
            await trio.sleep(0.3)  # let the pipeline take the last lists
        app.stop("test")
    return sink.cdrs


def _reference(call) -> list:  # type: ignore[no-untyped-def]
    analyzer = CallAnalyzer()
    for p in call.packets:
        analyzer.feed(p)
    return analyzer.terminate()  # a stopped listener sensor closes its calls as a forced stop (bye 110)


async def test_hep_over_udp_and_tcp_give_the_call(tmp_path: Path) -> None:
    call = generate_call(CallSpec(seed=31, call_id="hep-listener@192.0.2.10", rtp_seconds=1.0))
    messages = [pcapgen.hep3_message(p.ip_packet, p.ts_ns) for p in call.packets]
    half = len(messages) // 2

    async def push(app: SensorApp) -> None:
        udp = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        with udp:
            for m in messages[:half]:  # first half as datagrams
                await udp.sendto(m, app.listeners.addresses["hep_udp"])
        # One exporter sends in order; two transports at once could interleave (a BYE overtaking RTP).
        while app.listeners.records < half:
            await trio.sleep(0.01)
        stream = await trio.open_tcp_stream(*app.listeners.addresses["hep_tcp"])
        async with stream:  # the rest over one TCP stream, cut at odd places
            blob = b"".join(messages[half:])
            for i in range(0, len(blob), 977):
                await stream.send_all(blob[i:i + 977])
        while app.listeners.records < len(messages):
            await trio.sleep(0.01)

    cdrs = await _run_app(_cfg(tmp_path, hep="yes", hep_bind_ip="127.0.0.1", hep_bind_port=0), push)
    expected = _reference(call)
    assert [c.fbasename for c in cdrs] == [c.fbasename for c in expected]
    got, want = cdrs[0], expected[0]
    assert (got.bye, got.duration, got.a.received, got.b.received) == (want.bye, want.duration, want.a.received,
                                                                       want.b.received)


async def test_ipfix_listener_answers_the_handshake_and_builds_the_call(tmp_path: Path) -> None:
    call = generate_call(CallSpec(seed=32, call_id="ipfix-listener@192.0.2.10", rtp_seconds=0.5))
    sip = [p for p in call.packets if p.sport == 5060 or p.dport == 5060]
    ip = lambda b: ".".join(str(x) for x in b)  # noqa: E731
    sets = [pcapgen.ipfix_sip_in(p.ts_ns, ip(p.src), ip(p.dst), p.sport, p.dport, p.payload, seq=n)
            for n, p in enumerate(sip, 1)]

    async def push(app: SensorApp) -> None:
        stream = await trio.open_tcp_stream(*app.listeners.addresses["ipfix_tcp"])
        async with stream:
            await stream.send_all(pcapgen.ipfix_handshake())
            with trio.fail_after(5):
                reply = await stream.receive_some(4096)
            assert reply[16:18] == b"\x01\x01"  # handshake answered with set 257 (spec of the exporter)
            await stream.send_all(b"".join(sets))
            while app.listeners.records < len(sets):
                await trio.sleep(0.01)

    cdrs = await _run_app(_cfg(tmp_path, ipfix="yes", ipfix_bind_ip="127.0.0.1", ipfix_bind_port=0), push)
    assert [c.fbasename for c in cdrs] == ["ipfix-listener@192.0.2.10"]
    assert cdrs[0].last_sip_response_num == 200 and cdrs[0].a is None  # IPFIX carries signalling only, no RTP
