#!/usr/bin/env bash
# Bring a fresh machine (Python 3.11 + apt) to the point where vmproto runs: system packages, then a venv.
# Safe to run again: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || need_apt+=(mariadb-server)
ldconfig -p 2>/dev/null | grep 'libpcap\.so ' >/dev/null || need_apt+=(libpcap-dev)
ldconfig -p 2>/dev/null | grep 'liblzo2\.so\.2' >/dev/null || need_apt+=(liblzo2-2)
# libsnappy: byte-identical packet-block compression with the reference (vmproto/wire/_snappy.py)
ldconfig -p 2>/dev/null | grep 'libsnappy\.so\.1' >/dev/null || need_apt+=(libsnappy1v5)
# A C compiler and the Python headers build the packet and RTP kernels (vmproto/sensor/*/_kernel.c) on first use;
# without them vmproto still works, on its slower pure-Python paths.
command -v cc >/dev/null 2>&1 || need_apt+=(gcc libc6-dev)
PY=${PYTHON:-python3}
[ -f "$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')/Python.h" ] || need_apt+=(python3-dev)
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "setup: installing system packages: ${need_apt[*]}" >&2
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
    # The packaged service is not what we use: tests and the demo start private servers.
    $SUDO systemctl disable --now mariadb >/dev/null 2>&1 || true
fi

if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
stamp=.venv/.vmproto-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "setup: installing Python packages into .venv (log: .venv/install.log)" >&2
    if ! { .venv/bin/python -m pip install -q --upgrade pip && .venv/bin/python -m pip install -q -e '.[test]'; } \
            >.venv/install.log 2>&1; then
        cat .venv/install.log >&2
        echo "setup: pip install failed (see above)" >&2
        exit 1
    fi
    echo "$want" > "$stamp"
fi
