#!/usr/bin/env bash
# Install (if needed), lint, and run the whole test suite, slow real-data tests included.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not slow"` for the quick loop.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The Postgres-backed MLflow test needs Debian's postgresql (server binaries; not started as a service).
if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
  echo "==> installing PostgreSQL for the tracking-backend test (apt-get install postgresql)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
fi
# The UI tests open the MLflow and Prefect UIs in Debian's chromium (driven by Playwright).
if ! command -v chromium >/dev/null 2>&1; then
  echo "==> installing Chromium for the browser tests (apt-get install chromium)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
echo "==> ruff check"
.venv/bin/ruff check .
# Two pytest-xdist workers: most of the suite waits on servers, subprocesses and Ray, so the second
# core has work. A module's tests stay on one worker (tests/conftest.py groups them).
start=$(date +%s)
status=0
.venv/bin/python -m pytest -n "${SIMSIAM_TEST_WORKERS:-2}" --dist loadgroup --no-loadscope-reorder --durations=30 "$@" || status=$?
echo "==> pytest: $(( $(date +%s) - start )) s in all, exit status $status"
exit "$status"
