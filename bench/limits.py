"""The physical limits of this machine alone: python bench/limits.py [--quick] [--json-only] [--out PATH]

AES-128-CBC per-block encrypt/decrypt at 1 KiB and 64 KiB, raw snappy / lz4 block / zstd level 1 compress and
decompress on the same G.711 RTP data, one Trio TCP connection over loopback. Every other bench script measures
the same limits in its own run; this one is for looking at the machine (or comparing two machines) by itself.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import BenchRun, bench_parser  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    args = bench_parser(__doc__).parse_args(argv)
    with BenchRun("limits", args):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
