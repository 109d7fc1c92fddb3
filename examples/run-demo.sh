#!/usr/bin/env bash
# The whole product on this machine, in about a minute: a virtual environment, then init → generate →
# smoke → submit (local backend) → poll until done → status → report, on a small genuinely training program.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
demo="${1:-$repo/demo-sweep}"

python3 -m venv "$repo/.venv"
"$repo/.venv/bin/python" -m pip install -q -e "$repo[plot]"
export PATH="$repo/.venv/bin:$PATH"

rm -rf "$demo"
hpc-sweep init "$demo" --base "$repo/examples/demo/base.toml" --site local
cp "$repo/examples/demo/sweep.toml" "$demo/sweep.toml"
cp "$repo/examples/demo_trainer/train.py" "$demo/train.py"
hpc-sweep generate "$demo"
hpc-sweep smoke "$demo"
hpc-sweep submit "$demo"
until hpc-sweep poll "$demo" --force && ! grep -qE '"(pending|running|waiting)"' "$demo/status.json"; do
    sleep 2
done
hpc-sweep status "$demo"
hpc-sweep report "$demo" --out "$demo/report.html"
