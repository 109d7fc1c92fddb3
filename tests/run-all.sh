#!/usr/bin/env bash
# Set up and run the whole test suite: a virtual environment with hpc-sweep and its test extras, and, when run
# as root on Debian, the system packages the real-cluster and browser tests need (Slurm, MariaDB, munge,
# Chromium). The Slurm tests start their own single-node cluster and stop it by PID afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    need=()
    for pkg in slurm-wlm slurmdbd munge mariadb-server python3-venv chromium; do
        dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
    done
    if [ ${#need[@]} -gt 0 ]; then
        echo "installing ${need[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    fi
fi

python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test,plot]'
exec .venv/bin/python -m pytest -q "$@"
