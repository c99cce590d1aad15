#!/usr/bin/env bash
# Set up (if needed) and run the demo: our central on its embedded MariaDB, a local-processing sensor and a
# mirroring sensor replaying generated captures, CDRs in the database, a PCAP fetched back through the central,
# and the recorded channel decoded by the capture inspector. Output in ./demo-out/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m vmproto.demo "$@"
