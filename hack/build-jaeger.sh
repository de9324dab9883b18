#!/usr/bin/env bash
# Builds Jaeger v2 (an OpenTelemetry Collector distribution) from its Go module into a cache
# outside the repository, once per version: trace tests send it OTLP and read spans back
# through its query API. Prints the binary's path.
set -euo pipefail
JAEGER_VERSION=${JAEGER_VERSION:-v1.76.0}
root=${LLMROUTER_CACHE:-$HOME/.cache/llmrouter}
bin=$root/jaeger/$JAEGER_VERSION/jaeger
if [ ! -x "$bin" ]; then
  export GOMODCACHE=$root/go/mod GOCACHE=$root/go/build GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
  mkdir -p "$root"
  work=$(mktemp -d "$root/jaeger-build.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  echo "building jaeger $JAEGER_VERSION" >&2
  # Jaeger is a program, not a library: a small module takes it as a tool.
  (cd "$work" && go mod init jaeger-build >&2 \
    && go get -tool "github.com/jaegertracing/jaeger/cmd/jaeger@$JAEGER_VERSION" >&2 \
    && go build -trimpath -ldflags "-s -w" -o jaeger github.com/jaegertracing/jaeger/cmd/jaeger >&2)
  mkdir -p "$(dirname "$bin")"
  mv "$work/jaeger" "$bin"
fi
echo "$bin"
