#!/usr/bin/env bash
# The whole test suite: lint, types, then every test. Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
hack/system-deps.sh
PYTHON=$(hack/venv.sh)
export PYTHON
echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== mypy"
hack/typecheck.sh
echo "== pytest"
exec "$PYTHON" -m pytest "$@"
