#!/usr/bin/env bash
# mypy over the package as it is installed (llmrouter.operator ← operator/,
# llmrouter.gateway ← gateway/): mypy cannot follow setuptools' package-dir mapping of an
# editable install, so it reads a view of symlinks laid out like the installed package.
set -euo pipefail
cd "$(dirname "$0")/.."
# Keep the current directory off sys.path: its `operator` folder would shadow the stdlib.
export PYTHONSAFEPATH=1
view=.typecheck
rm -rf "$view" && mkdir -p "$view/llmrouter"
for f in llmrouter/*.py llmrouter/py.typed; do ln -s "../../$f" "$view/llmrouter/"; done
ln -s ../../operator "$view/llmrouter/operator"
ln -s ../../gateway "$view/llmrouter/gateway"
MYPYPATH="$view" exec "${PYTHON:-python3}" -m mypy -p llmrouter -p tests "$@"
