#!/usr/bin/env bash
# What hack/bench_compare.py runs: nginx and wrk (Debian), vegeta (Go module), and LiteLLM's
# proxy in a virtualenv of its own, all outside the repository. Installs what is missing.
set -euo pipefail
root=${LLMROUTER_CACHE:-$HOME/.cache/llmrouter}/bench
VEGETA_VERSION=${VEGETA_VERSION:-v12.12.0}
LITELLM_VERSION=${LITELLM_VERSION:-}
missing=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
command -v wrk >/dev/null || missing+=(wrk)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
if [ ! -x "$root/bin/vegeta" ]; then
  GOBIN=$root/bin go install "github.com/tsenart/vegeta/v12@$VEGETA_VERSION"
fi
if [ ! -x "$root/litellm-venv/bin/litellm" ]; then
  python3 -I -m venv "$root/litellm-venv"
  "$root/litellm-venv/bin/pip" install -q "litellm[proxy]${LITELLM_VERSION:+==$LITELLM_VERSION}"
fi
"$root/litellm-venv/bin/pip" show litellm | sed -n 2p
