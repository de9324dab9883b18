#!/usr/bin/env bash
# Builds kubectl from its Go module (k8s.io/kubectl, the same release as the test control
# plane of hack/build-kube.sh) into a cache outside the repository, once per version, so that
# e2e tests drive the cluster the way users do. Prints the binary's path.
set -euo pipefail
K8S_VERSION=${K8S_VERSION:-v1.34.4} # keep in step with hack/build-kube.sh
root=${LLMROUTER_CACHE:-$HOME/.cache/llmrouter}
bin=$root/kubectl/$K8S_VERSION/kubectl
if [ ! -x "$bin" ]; then
  command -v go >/dev/null || { echo "go (1.24 or newer) is needed to build kubectl" >&2; exit 1; }
  export GOMODCACHE=$root/go/mod GOCACHE=$root/go/build GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
  mkdir -p "$root/kubectl"
  work=$(mktemp -d "$root/kubectl/build.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  minor=${K8S_VERSION#v1.}
  staging=v0.$minor # k8s.io/kubectl v0.34.4 is Kubernetes v1.34.4's
  cd "$work"
  printf 'module llmrouter.test/kubectl\n\ngo 1.24\n' >go.mod
  # Kubernetes' own cmd/kubectl/kubectl.go, which k8s.io/kubernetes' replace directives keep
  # from `go install`.
  cat >main.go <<'GO'
package main

import (
	"k8s.io/component-base/cli"
	"k8s.io/kubectl/pkg/cmd"
	"k8s.io/kubectl/pkg/cmd/util"

	_ "k8s.io/client-go/plugin/pkg/client/auth"
)

func main() {
	command := cmd.NewDefaultKubectlCommand()
	if err := cli.RunNoErrOutput(command); err != nil {
		util.CheckErr(err)
	}
}
GO
  echo "building kubectl $K8S_VERSION" >&2
  go get "k8s.io/kubectl@$staging" "k8s.io/component-base@$staging" "k8s.io/client-go@$staging" >&2
  go mod tidy >&2
  # What Kubernetes' build stamps in, so that `kubectl version` names the release.
  ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=${minor%%.*}"
  done
  go build -trimpath -ldflags "$ldflags" -o "$work/kubectl" . >&2
  mkdir -p "$(dirname "$bin")"
  mv "$work/kubectl" "$bin"
fi
echo "$bin"
