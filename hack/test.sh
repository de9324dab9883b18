#!/usr/bin/env bash
# The whole test suite: lint, types, then every test. Installs and builds what it needs
# first (Debian packages, the virtualenv, llama-server, the Kubernetes control plane), so
# it runs on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."
# Keep the current directory off sys.path: its `operator` folder would shadow the stdlib.
export PYTHONSAFEPATH=1
hack/system-deps.sh
PYTHON=$(hack/venv.sh)
export PYTHON
echo "== llama-server"
LLAMA_SERVER=$(hack/build-llama-server.sh)
export LLAMA_SERVER
echo "$LLAMA_SERVER"
echo "== Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok)"
hack/build-kube.sh
echo "== helm (renders the chart in tests)"
hack/build-helm.sh
echo "== Jaeger v2 (the OTLP receiver of the trace tests)"
JAEGER=$(hack/build-jaeger.sh)
export JAEGER
echo "== kubectl (the e2e tests drive the user path with it)"
hack/build-kubectl.sh
echo "== the llmrouter image (needs root: mmdebstrap, chroot)"
if [ "$(id -u)" = 0 ]; then
  LLMROUTER_IMAGE=$(hack/build-image.sh)
  export LLMROUTER_IMAGE
fi
echo "== nginx, wrk, vegeta (the benchmarks' smoke runs)"
hack/bench-tools.sh --smoke
echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== mypy"
hack/typecheck.sh
echo "== pytest"
exec "$PYTHON" -m pytest "$@"
