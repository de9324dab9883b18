#!/usr/bin/env bash
# Builds helm from its Go module into a cache outside the repository, once per version, so
# tests can render the chart with the real `helm template`. Prints the binary's path.
set -euo pipefail
HELM_VERSION=${HELM_VERSION:-v3.19.0}
root=${LLMROUTER_CACHE:-$HOME/.cache/llmrouter}
bin=$root/helm/$HELM_VERSION/helm
if [ ! -x "$bin" ]; then
  export GOMODCACHE=$root/go/mod GOCACHE=$root/go/build GOTOOLCHAIN=local CGO_ENABLED=0
  work=$(mktemp -d "$root/helm-build.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  echo "building helm $HELM_VERSION" >&2
  GOBIN=$work go install -trimpath -ldflags "-s -w" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >&2
  mkdir -p "$(dirname "$bin")"
  mv "$work/helm" "$bin"
fi
echo "$bin"
