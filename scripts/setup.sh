#!/usr/bin/env bash
# Bring a fresh machine (Python 3.11 + apt) to the point where vmproto runs: system packages, then a venv.
# Safe to run again: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || need_apt+=(mariadb-server)
ldconfig -p 2>/dev/null | grep -q 'libpcap\.so ' || need_apt+=(libpcap-dev)
ldconfig -p 2>/dev/null | grep -q 'liblzo2\.so\.2' || need_apt+=(liblzo2-2)
# libsnappy: byte-identical packet-block compression with the reference (vmproto/wire/_snappy.py)
ldconfig -p 2>/dev/null | grep -q 'libsnappy\.so\.1' || need_apt+=(libsnappy1v5)
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "setup: installing system packages: ${need_apt[*]}" >&2
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
    # The packaged service is not what we use: tests and the demo start private servers.
    $SUDO systemctl disable --now mariadb >/dev/null 2>&1 || true
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
stamp=.venv/.vmproto-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    .venv/bin/python -m pip install -q --upgrade pip >/dev/null
    .venv/bin/python -m pip install -q -e '.[test]'
    echo "$want" > "$stamp"
fi
