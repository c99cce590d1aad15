"""`python -m tests.chaos.goodsensor PORT SECONDS`: the well-behaved sensor of the hostile-peers scenario, in its own
process so that the flood's client load cannot delay its pongs. Prints one JSON object with its measurements:
ping gaps, store ack latencies, reconnect handshake latencies, errors."""

from __future__ import annotations

import json
import sys

import trio

from tests.chaos.hostile import HostileFigures, _good_reconnects, _good_service, _good_store


async def _main(port: int, seconds: float) -> HostileFigures:
    hf = HostileFigures()
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_good_service, port, hf, stop)
        nursery.start_soon(_good_store, port, hf, stop)
        nursery.start_soon(_good_reconnects, port, hf, stop)
        await trio.sleep(seconds)
        stop.set()
    return hf


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m tests.chaos.goodsensor PORT SECONDS", file=sys.stderr)
        return 2
    hf = trio.run(_main, int(argv[0]), float(argv[1]))
    print(json.dumps({"ping_gaps": hf.ping_gaps, "ack_latencies": hf.ack_latencies,
                      "reconnect_latencies": hf.reconnect_latencies,
                      "reconnect_failures": hf.reconnect_failures, "store_errors": hf.store_errors,
                      "service_lost": hf.service_lost, "store_error_replies": hf.store_error_replies}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
