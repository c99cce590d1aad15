"""Helpers of the operations tests: scrape and parse the metrics endpoint, build generated traffic."""

from __future__ import annotations

import json
from typing import Any

import trio
from prometheus_client.parser import text_string_to_metric_families

from vmproto.sensor.capture.batch import PacketBatch
from vmproto.testing.callgen import CallSpec, generate_call

LINKTYPE_RAW = 101
LINKTYPE_ETHERNET = 1


async def http_get(address: tuple[str, int], path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request to the endpoint; returns (status, headers, body)."""
    stream = await trio.open_tcp_stream(*address)
    async with stream:
        await stream.send_all(f"{method} {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
        data = bytearray()
        with trio.fail_after(10):
            while chunk := await stream.receive_some(65536):
                data += chunk
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


async def scrape(address: tuple[str, int]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """`/metrics` parsed: (sample name, sorted labels) → value. Fails the test on a non-200 answer."""
    status, headers, body = await http_get(address, "/metrics")
    assert status == 200, body
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def status_doc(address: tuple[str, int]) -> dict[str, Any]:
    status, _headers, body = await http_get(address, "/status")
    assert status == 200, body
    return json.loads(body)


def value(samples: dict, name: str, **labels: str) -> float:
    """The sample `name` with exactly `labels`; 0.0 when absent."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: dict, name: str, **labels: str) -> float:
    """Sum of the samples `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


def call_batch(seed: int, call_id: str, start_s: float, **kw: Any) -> PacketBatch:
    """One generated SIP/RTP call as a raw-IP batch."""
    packets = generate_call(CallSpec(seed=seed, call_id=call_id, start_s=start_s, rtp_seconds=1.0, **kw)).packets
    return PacketBatch(LINKTYPE_RAW, [p.ts_ns for p in packets], [p.ip_packet for p in packets],
                       [len(p.ip_packet) for p in packets])


def bad_ipv4_batch(ts_ns: int) -> PacketBatch:
    """One raw-IP frame with a version-4 nibble but a header cut to 8 bytes: the decoder must count it as an
    error (a dropped packet) and go on."""
    frame = bytes([0x45, 0, 0, 40, 0, 0, 0, 0])
    return PacketBatch(LINKTYPE_RAW, [ts_ns], [frame], [len(frame)])


def arp_batch(ts_ns: int) -> PacketBatch:
    """One Ethernet ARP frame: a mirroring sensor has no IP packet to ship and counts it as dropped (no_ip)."""
    frame = b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x01" + b"\x08\x06" + bytes(28)
    return PacketBatch(LINKTYPE_ETHERNET, [ts_ns], [frame], [len(frame)])
