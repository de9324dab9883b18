#!/usr/bin/env bash
# Fetches prometheus-operator's PrometheusRule CRD from its Go module into a cache outside
# the repository, once per version, for tests of the operator's SLAPolicy rules. Prints the
# YAML file's path.
set -euo pipefail
VERSION=${PROMETHEUS_OPERATOR_VERSION:-v0.85.0}
root=${LLMROUTER_CACHE:-$HOME/.cache/llmrouter}
out=$root/prometheus-operator/$VERSION/monitoring.coreos.com_prometheusrules.yaml
if [ ! -s "$out" ]; then
  export GOMODCACHE=$root/go/mod GOTOOLCHAIN=local GOFLAGS=-mod=mod
  echo "fetching github.com/prometheus-operator/prometheus-operator@$VERSION" >&2
  dir=$(go mod download -json "github.com/prometheus-operator/prometheus-operator@$VERSION" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  mkdir -p "$(dirname "$out")"
  cp "$dir/example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml" "$out.tmp"
  mv "$out.tmp" "$out"
fi
echo "$out"
