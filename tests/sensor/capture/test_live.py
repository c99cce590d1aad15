"""Live capture through libpcap driven by Trio.

The test builds its own network: a veth pair whose far end sits in a network namespace created here; UDP
is sent from inside that namespace to a documentation address, so no host address or route is touched.
Without namespaces (not root, no `ip`), it falls back to loopback.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time

import pytest
import trio

from vmproto.sensor.capture import CaptureOptions
from vmproto.sensor.capture.errors import CaptureError
from vmproto.sensor.capture.live import LiveCapture
from vmproto.sensor.decode import Decoder

PORT = 5099
COUNT = 50
NOISE = 10


def _run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=10)


class _VethLab:
    """veth pair: `host_if` in our namespace (no address), the peer in namespace `ns` with 192.0.2.2/24."""

    def __init__(self) -> None:
        tag = f"{os.getpid() % 100000}"
        self.ns = f"vmp-ns-{tag}"
        self.host_if = f"vmpa{tag}"
        self.peer_if = f"vmpb{tag}"

    def __enter__(self) -> _VethLab:
        try:
            _run("ip", "netns", "add", self.ns)
            _run("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.peer_if, "netns", self.ns)
            _run("ip", "link", "set", self.host_if, "up")
            _run("ip", "-n", self.ns, "addr", "add", "192.0.2.2/24", "dev", self.peer_if)
            _run("ip", "-n", self.ns, "link", "set", self.peer_if, "up")
            # A static neighbour: no ARP round trip needed for the first datagram.
            _run("ip", "-n", self.ns, "neigh", "add", "192.0.2.1", "lladdr", "02:00:5e:00:00:01", "dev", self.peer_if)
        except BaseException:
            self.__exit__()
            raise
        return self

    def send(self, port: int, count: int) -> None:
        code = ("import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                f"for i in range({count}): s.sendto(b'SIP/2.0 200 OK %d' % i, ('192.0.2.1', {port}))")
        _run("ip", "netns", "exec", self.ns, sys.executable, "-c", code)

    def __exit__(self, *exc: object) -> None:
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True, timeout=10)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True, timeout=10)


def _namespaces_available() -> str | None:
    if os.geteuid() != 0:
        return "not root"
    if shutil.which("ip") is None:
        return "no ip(8)"
    probe = f"vmp-probe-{os.getpid()}"
    r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, timeout=10)
    if r.returncode != 0:
        return r.stderr.decode(errors="replace").strip() or "ip netns add failed"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=10)
    return None


async def _capture(options: CaptureOptions, send_traffic, want: int) -> tuple[list, dict]:
    cap = LiveCapture(options)
    try:
        cap.open()
    except CaptureError as exc:
        pytest.skip(f"cannot open live capture: {exc}")
    records = []
    dec = Decoder()
    with cap:
        send_ch, recv_ch = trio.open_memory_channel(16)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(cap.run, send_ch)
            await trio.to_thread.run_sync(send_traffic)
            with trio.move_on_after(5):
                async for _name, batch in recv_ch:
                    records += dec.decode_batch(batch.linktype, batch.ts_ns, batch.frames)
                    if len(records) >= want:
                        break
            await trio.sleep(0.2)  # let late or unwanted packets arrive so the filter is really tested
            while True:
                try:
                    _name, batch = recv_ch.receive_nowait()
                except trio.WouldBlock:
                    break
                records += dec.decode_batch(batch.linktype, batch.ts_ns, batch.frames)
            stats = cap.stats()
            nursery.cancel_scope.cancel()
    return records, stats


async def test_live_capture_on_veth_in_own_namespace() -> None:
    reason = _namespaces_available()
    if reason is not None:
        pytest.skip(f"network namespaces unavailable ({reason}); test_live_capture_on_loopback covers lo")
    with _VethLab() as lab:
        opts = CaptureOptions(interface=lab.host_if, filter=f"udp dst port {PORT}", promisc=True)

        def traffic() -> None:
            lab.send(PORT, COUNT)
            lab.send(PORT + 1, NOISE)  # filtered out by BPF

        records, stats = await _capture(opts, traffic, COUNT)
    assert len(records) == COUNT
    assert {r.dport for r in records} == {PORT}
    assert all(r.src == bytes([192, 0, 2, 2]) and r.payload.startswith(b"SIP/2.0 200 OK") for r in records)
    ts = [r.ts_ns for r in records]
    assert ts == sorted(ts)
    assert abs(ts[0] - time.time_ns()) < 60 * 10**9  # nanosecond wall-clock stamps from the kernel
    st = stats[lab.host_if]
    assert st.received >= COUNT and st.dropped == 0


async def test_live_capture_on_loopback() -> None:
    port = 40000 + os.getpid() % 20000

    def traffic() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for i in range(COUNT):
                s.sendto(b"OPTIONS %d" % i, ("127.0.0.1", port))
            for i in range(NOISE):
                s.sendto(b"noise %d" % i, ("127.0.0.1", port + 1))

    opts = CaptureOptions(interface="lo", filter=f"udp dst port {port} and host 127.0.0.1", promisc=False)
    records, stats = await _capture(opts, traffic, COUNT)
    assert len(records) == COUNT
    assert [r.payload for r in records] == [b"OPTIONS %d" % i for i in range(COUNT)]
    assert stats["lo"].received >= COUNT and stats["lo"].dropped == 0
