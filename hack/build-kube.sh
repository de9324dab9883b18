#!/usr/bin/env bash
# Builds a Kubernetes control plane for tests, from Go modules, with no container engine:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok (fake nodes whose
# pods become Ready). Binaries go into a cache outside the repository, keyed by version;
# a warm run returns at once. Prints the folder of the binaries.
set -euo pipefail
K8S_VERSION=${K8S_VERSION:-v1.34.4}
ETCD_VERSION=${ETCD_VERSION:-v3.6.5}
KWOK_VERSION=${KWOK_VERSION:-v0.7.0}
root=${LLMROUTER_CACHE:-$HOME/.cache/llmrouter}
bin=$root/kube/$K8S_VERSION-etcd$ETCD_VERSION-kwok$KWOK_VERSION/bin
binaries=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)

complete() { for b in "${binaries[@]}"; do [ -x "$bin/$b" ] || return 1; done; }
if complete; then echo "$bin"; exit 0; fi

export GOMODCACHE=$root/go/mod GOCACHE=$root/go/build GOFLAGS=-mod=mod GOTOOLCHAIN=local
export CGO_ENABLED=0
command -v go >/dev/null || { echo "go is needed to build the control plane" >&2; exit 1; }
mkdir -p "$bin"
work=$(mktemp -d "$root/kube-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
ldflags="-s -w"

# Kubernetes: a wrapper module pins k8s.io/kubernetes and points every staging module
# (k8s.io/api, k8s.io/apiserver, …) at its published v0.x release, as the repository's own
# go.mod points them at ./staging.
minor=v0.${K8S_VERSION#v1.}
mkdir -p "$work/k8s"
(
  cd "$work/k8s"
  gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')
  {
    echo "module llmrouter.test/kube"
    echo "go 1.24"
    echo "require k8s.io/kubernetes $K8S_VERSION"
    grep -o 'k8s.io/[a-z0-9-]* => ./staging/src/k8s.io/[a-z0-9-]*' "$gomod" \
      | awk -v v="$minor" '{print "replace " $1 " => " $1 " " v}'
  } > go.mod
  printf '//go:build tools\n\npackage tools\n\nimport (\n' > tools.go
  for cmd in kube-apiserver kube-controller-manager kube-scheduler; do
    printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$cmd" >> tools.go
  done
  printf ')\n' >> tools.go
  echo "resolving k8s.io/kubernetes $K8S_VERSION modules" >&2
  go mod tidy >&2
  for cmd in kube-apiserver kube-controller-manager kube-scheduler; do
    [ -x "$bin/$cmd" ] && continue
    echo "building $cmd" >&2
    go build -trimpath -ldflags "$ldflags" -o "$work/$cmd" "k8s.io/kubernetes/cmd/$cmd" >&2
    mv "$work/$cmd" "$bin/$cmd"
  done
)

if [ ! -x "$bin/etcd" ]; then
  echo "building etcd $ETCD_VERSION" >&2
  mkdir -p "$work/etcd"
  (
    cd "$work/etcd"
    printf 'module llmrouter.test/etcd\n\ngo 1.24\n' > go.mod
    printf 'package main\n\nimport (\n\t"os"\n\n\t"go.etcd.io/etcd/server/v3/etcdmain"\n)\n\nfunc main() { etcdmain.Main(os.Args) }\n' > main.go
    go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >&2
    go mod tidy >&2
    go build -trimpath -ldflags "$ldflags" -o "$work/etcd-bin" . >&2
    mv "$work/etcd-bin" "$bin/etcd"
  )
fi

if [ ! -x "$bin/kwok" ]; then
  echo "building kwok $KWOK_VERSION" >&2
  GOBIN=$work/gobin GOFLAGS= go install -trimpath -ldflags "$ldflags" \
    "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" >&2
  mv "$work/gobin/kwok" "$bin/kwok"
fi

complete
echo "$bin"
