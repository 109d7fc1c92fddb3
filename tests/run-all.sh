#!/usr/bin/env bash
# The whole test suite, against the package users get:
#   1. as root on Debian, the system packages the real-cluster and browser tests need (Slurm, MariaDB, munge,
#      Chromium), and the scrontab client Debian leaves out, built from its source (tests/cluster/build_scrontab.sh);
#   2. the sdist and, from it, the wheel (python -m build, in a throwaway virtual environment), checked by
#      tests/check_dist.py: every module, the job templates (*.j2) and site profiles (*.toml), no top-level
#      package besides hpc_sweep;
#   3. the wheel with its test extras installed into a fresh virtual environment made from the system Python;
#   4. pytest from outside the checkout, so the repository's source folders cannot shadow the installed package
#      (tests find examples/ and tests/fixtures/ by their own path). The Slurm tests start their own single-node
#      cluster, whose test user gets the same wheel ($HPC_SWEEP_TEST_WHEEL), and stop it by PID.
# Arguments go to pytest; test paths may be given relative to the repository (tests/test_render.py -k dcu).
# Everything built lives in one temporary folder, removed at the end. PYTHON picks the interpreter (default python3).
# Quicker while developing: an editable install, see README "Development".
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-python3}"

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    need=()
    for pkg in slurm-wlm slurmdbd munge mariadb-server python3-venv chromium gcc make; do
        dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
    done
    if [ ${#need[@]} -gt 0 ]; then
        echo "installing ${need[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    fi
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/hpc-sweep-ci.XXXXXX")"
trap 'rm -rf "$work"' EXIT
started=$SECONDS

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    # Debian ships no scrontab client: build it for the scrontab test on the real cluster (cached; ~30 s once).
    if scrontab_bin="$(bash "$repo/tests/cluster/build_scrontab.sh" 2>"$work/scrontab.log")"; then
        export HPC_SWEEP_TEST_SCRONTAB="$scrontab_bin"
    else  # the scrontab test fails, quoting this
        export HPC_SWEEP_EXPECT_SCRONTAB="build failed: $(tail -n 3 "$work/scrontab.log" | tr '\n' ' ')"
        echo "scrontab could not be built (its test will fail): $HPC_SWEEP_EXPECT_SCRONTAB"
    fi
fi

echo "building the sdist and the wheel in $work/dist"
"$python" -m venv "$work/build-venv"
"$work/build-venv/bin/python" -m pip install -q build 'tomli; python_version < "3.11"'
"$work/build-venv/bin/python" -m build -q --outdir "$work/dist" "$repo" >"$work/build.log" 2>&1 \
    || { cat "$work/build.log"; exit 1; }
"$work/build-venv/bin/python" "$repo/tests/check_dist.py" "$repo" "$work/dist"
wheels=("$work"/dist/*.whl)
wheel="${wheels[0]}"

echo "installing $(basename "$wheel") with its test extras into a fresh virtual environment"
"$python" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q --upgrade pip
"$work/venv/bin/python" -m pip install -q "$wheel[test,plot,search]"  # search: Optuna, for the [search] tests
echo "built and installed in $((SECONDS - started)) s"

args=()
has_path=no
for arg in "$@"; do  # pytest runs elsewhere: test paths become absolute (from here or from the repository)
    file="${arg%%::*}"
    if [[ $arg != -* && -e $file ]]; then
        arg="$(cd "$(dirname "$file")" && pwd)/$(basename "$file")${arg#"$file"}"
        has_path=yes
    elif [[ $arg != -* && -e $repo/$file ]]; then
        arg="$repo/$arg"
        has_path=yes
    fi
    args+=("$arg")
done
[ $has_path = yes ] || args+=("$repo/tests")

cd "$work"  # outside the checkout: only the installed package is importable
HPC_SWEEP_TEST_WHEEL="$wheel" "$work/venv/bin/python" -m pytest -q -p no:cacheprovider \
    --rootdir "$repo" -c "$repo/pyproject.toml" "${args[@]}"
