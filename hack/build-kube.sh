#!/usr/bin/env bash
# Builds a Kubernetes control plane for tests, from Go modules, with no container engine:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok (fake nodes whose
# pods become Ready). The binaries go into a cache outside the repository, keyed by the
# Kubernetes version; a warm run returns at once. Prints the folder of the binaries on
# stdout (progress goes to stderr), so that `BIN=$(hack/build-kube.sh)` works.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.34.4} # its kubeadm runs etcd 3.6.5 (cmd/kubeadm/app/constants)
ETCD_VERSION=${ETCD_VERSION:-v3.6.5}
KWOK_VERSION=${KWOK_VERSION:-v0.7.0}

root=${LLMROUTER_CACHE:-$HOME/.cache/llmrouter}
bin=$root/kube/$K8S_VERSION/bin
binaries=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)
# Written last: binaries built with other versions or another recipe are rebuilt.
stamp="kubernetes=$K8S_VERSION etcd=$ETCD_VERSION kwok=$KWOK_VERSION recipe=2"

complete() {
  [ -f "$bin/VERSIONS" ] && [ "$(<"$bin/VERSIONS")" = "$stamp" ] || return 1
  for b in "${binaries[@]}"; do [ -f "$bin/$b" ] && [ -x "$bin/$b" ] || return 1; done
}
if complete; then echo "$bin"; exit 0; fi

command -v go >/dev/null || { echo "go (1.24 or newer) is needed to build the control plane" >&2; exit 1; }
mkdir -p "$bin"
exec 9>"$root/kube/.lock" # one build at a time (parallel test workers)
flock 9
if complete; then echo "$bin"; exit 0; fi
stale=false
[ -f "$bin/VERSIONS" ] && [ "$(<"$bin/VERSIONS")" = "$stamp" ] || stale=true
rm -f "$bin/VERSIONS"
need() { $stale || [ ! -f "$bin/$1" ] || [ ! -x "$bin/$1" ]; }

export GOMODCACHE=$root/go/mod GOCACHE=$root/go/build GOFLAGS=-mod=mod GOTOOLCHAIN=local
export CGO_ENABLED=0
work=$(mktemp -d "$root/kube/build.XXXXXX") # same file system as $bin: `mv` is atomic
mkdir "$work/out"
trap 'rm -rf "$work"' EXIT
timed() { # timed NAME COMMAND...: runs it, logs how long it took
  local start=$SECONDS
  "${@:2}" >&2
  echo "$1: $((SECONDS - start)) s" >&2
}
install_bin() { mv -fT "$work/out/$1" "$bin/$1"; }

# Kubernetes: a wrapper module requires k8s.io/kubernetes and points every staging module
# (k8s.io/api, k8s.io/apiserver, …) at its published v0.Y.Z release, where the repository's
# own go.mod points them at ./staging/src.
if need kube-apiserver || need kube-controller-manager || need kube-scheduler; then
  minor=${K8S_VERSION#v1.}
  mkdir -p "$work/k8s"
  cd "$work/k8s"
  echo "resolving k8s.io/kubernetes $K8S_VERSION and its staging modules" >&2
  gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')
  {
    echo "module llmrouter.test/kube"
    echo "go 1.24"
    echo "require k8s.io/kubernetes $K8S_VERSION"
    grep -o 'k8s.io/[a-z0-9-]* => ./staging/src/k8s.io/[a-z0-9-]*' "$gomod" |
      awk -v v="v0.$minor" '{print "replace " $1 " => " $1 " " v}'
  } >go.mod
  grep -q '^replace k8s.io/api ' go.mod || { echo "no staging modules found in $gomod" >&2; exit 1; }
  printf '//go:build tools\n\npackage tools\n\nimport (\n' >tools.go
  for cmd in kube-apiserver kube-controller-manager kube-scheduler; do
    printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$cmd" >>tools.go
  done
  printf ')\n' >>tools.go
  timed "go mod tidy (downloads)" go mod tidy
  # What Kubernetes' own build stamps in (hack/lib/version.sh): `kubectl version` and the
  # /version endpoint then show the real version instead of v0.0.0-master.
  ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=${minor%%.*}"
    ldflags+=" -X $pkg.gitTreeState=clean"
  done
  for cmd in kube-apiserver kube-controller-manager kube-scheduler; do
    need "$cmd" || continue
    timed "build $cmd" go build -trimpath -ldflags "$ldflags" -o "$work/out/$cmd" "k8s.io/kubernetes/cmd/$cmd"
    install_bin "$cmd"
  done
fi

# etcd: a wrapper module whose main is etcd's own.
if need etcd; then
  mkdir -p "$work/etcd"
  cd "$work/etcd"
  printf 'module llmrouter.test/etcd\n\ngo 1.24\n' >go.mod
  printf 'package main\n\nimport (\n\t"os"\n\n\t"go.etcd.io/etcd/server/v3/etcdmain"\n)\n\nfunc main() { etcdmain.Main(os.Args) }\n' >main.go
  timed "resolve etcd $ETCD_VERSION" go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
  timed "go mod tidy (etcd)" go mod tidy
  timed "build etcd" go build -trimpath -ldflags "-s -w" -o "$work/out/etcd" .
  install_bin etcd
fi

# kwok installs as it is (`go install pkg@version` refuses -mod=mod).
if need kwok; then
  cd "$work"
  timed "build kwok $KWOK_VERSION" env GOBIN="$work/out" GOFLAGS= \
    go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  install_bin kwok
fi

echo "$stamp" >"$work/VERSIONS"
mv -f "$work/VERSIONS" "$bin/VERSIONS"
complete
echo "$bin"
