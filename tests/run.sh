#!/usr/bin/env bash
# The project's one test command (CI runs it through .ci/run): sets up the virtualenv through
# path.sh, installs the test requirements (pytest, pytest-xdist, ruff), lints with ruff
# (pyproject.toml), and runs the whole suite in $VOXADAPT_TEST_WORKERS processes (default 2; 0:
# one process), each taking whole test files. Extra arguments go to pytest.
set -euo pipefail
help_message="Usage: tests/run.sh [pytest arguments]   e.g. tests/run.sh -k trials -x;  VOXADAPT_TEST_WORKERS=0 tests/run.sh tests/test_trials.py"
case "${1:-}" in -h|--help) echo "$help_message"; exit 0 ;; esac
cd "$(dirname "$0")/.."
. ./path.sh
want="$(sha1sum requirements-test.txt | cut -c1-40)"
stamp="$VIRTUAL_ENV/.voxadapt-test-installed"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  python -m pip install -q --disable-pip-version-check -r requirements-test.txt 2>&1 | grep -v "^WARNING: Location" || true
  python -c "import pytest" && ruff --version > /dev/null && echo "$want" > "$stamp"
fi
ruff check --quiet . || { echo "ERROR: tests/run.sh: ruff found the problems above; fix them (ruff check --fix . fixes many)" >&2; exit 1; }
# Much of the suite is single-threaded start-up (imports, subprocesses, waits on Slurm), which a
# second process overlaps; whole files per worker keep each module's fixtures built once.
workers="${VOXADAPT_TEST_WORKERS:-2}"
[[ "$workers" =~ ^[0-9]+$ ]] || { echo "ERROR: tests/run.sh: VOXADAPT_TEST_WORKERS='$workers' must be a whole number (0: one process)" >&2; exit 1; }
exec python -m pytest -n "$workers" --dist loadfile "$@"
