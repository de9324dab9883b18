#!/usr/bin/env bash
# Creates .venv (Python 3.11+) with llmrouter and its development dependencies, once;
# later runs only reinstall when pyproject.toml changed. Prints the venv's python.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
# The repository has a folder named `operator`, which shadows the standard library module
# for any Python started here with the current directory on sys.path: -I keeps it off.
"$py" -I -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "llmrouter needs Python 3.11 or newer ($py is $("$py" --version))" >&2; exit 1; }
if [ ! -x .venv/bin/python ]; then
  "$py" -I -m venv .venv >&2
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -e "$stamp" ]; then
  .venv/bin/python -I -m pip install --quiet --upgrade pip >&2
  .venv/bin/python -I -m pip install --quiet -e '.[dev]' >&2
  rm -f .venv/.installed-* && touch "$stamp"
fi
echo "$PWD/.venv/bin/python"
