"""Live capture driven by Trio: non-blocking libpcap handles woken by `trio.lowlevel.wait_readable`.

libpcap itself stays synchronous (`libpcap.PcapHandle`); this module only waits for the selectable
descriptor and drains what is buffered with a pcap_next_ex loop per wake-up, so a busy link costs one
wake-up per batch, not per packet.
"""

from __future__ import annotations

import math

import trio

from .batch import PacketBatch
from .libpcap import PcapHandle, PcapStats
from .options import CaptureOptions


async def read_batch(handle: PcapHandle, max_packets: int = 4096, poll_interval: float = 0.1) -> PacketBatch:
    """Wait until `handle` (non-blocking, live) has packets; return them (at most `max_packets`).

    `poll_interval` bounds each wait: some kernels signal the descriptor only when a whole ring block is
    full, so we also look after that long. Raises `CaptureError` on read errors.
    """
    fd = handle.fileno()
    while True:
        # pcap_next_ex loops beat pcap_dispatch with a cffi callback (bench/decode.py: ~0.8M vs ~0.65M/s).
        batch = handle.next_ex_batch(max_packets)
        if batch is None:  # offline handle at its end: nothing will ever come
            return PacketBatch(handle.linktype, [], [], [])
        if batch.frames:
            return batch
        with trio.move_on_after(poll_interval if poll_interval > 0 else math.inf):
            await trio.lowlevel.wait_readable(fd)


class LiveCapture:
    """Captures on every interface of `options.interface` (one handle each, same settings).

    Open with `open()` (sync, may raise `CaptureError`), then `await run(send_channel)`, which sends
    ``(interface name, PacketBatch)`` until cancelled. `stats()` gives the kernel drop counters.
    """

    def __init__(self, options: CaptureOptions, max_packets: int = 4096) -> None:
        self.options = options
        self.max_packets = max_packets
        self.handles: dict[str, PcapHandle] = {}

    def open(self) -> None:
        """Create, configure and activate the handles. On error, the ones already open are closed."""
        o = self.options
        try:
            for name in o.interfaces:
                self.handles[name] = PcapHandle.open_live(
                    name, snaplen=o.snaplen, promisc=o.promisc, buffer_bytes=o.ringbuffer_mb << 20,
                    immediate=o.immediate, timeout_ms=o.timeout_ms, bpf=o.filter, nonblocking=True)
        except BaseException:
            self.close()
            raise

    async def run(self, send: trio.MemorySendChannel) -> None:
        """Send ``(interface, batch)`` tuples into `send` until cancelled; back-pressure comes from `send`."""
        async with trio.open_nursery() as nursery:
            for name, handle in self.handles.items():
                nursery.start_soon(self._pump, name, handle, send)

    async def _pump(self, name: str, handle: PcapHandle, send: trio.MemorySendChannel) -> None:
        poll = max(self.options.timeout_ms, 1) / 1000
        while True:
            batch = await read_batch(handle, self.max_packets, poll)
            await send.send((name, batch))

    def stats(self) -> dict[str, PcapStats]:
        """Return pcap_stats per interface (packets received, dropped by the kernel, by the interface)."""
        return {name: h.stats() for name, h in self.handles.items()}

    def close(self) -> None:
        """Close every handle (idempotent)."""
        for h in self.handles.values():
            h.close()
        self.handles.clear()

    def __enter__(self) -> LiveCapture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
