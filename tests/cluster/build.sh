#!/usr/bin/env bash
# Builds the local control plane's binaries from Go modules, once per
# version, into ~/.cache/usher-testenv/<version>/bin: kube-apiserver,
# kube-controller-manager, kube-scheduler and kubectl (k8s.io/kubernetes),
# etcd (go.etcd.io/etcd/server/v3), kwok (sigs.k8s.io/kwok) and helm.
# Skips everything already built. Prints the bin directory.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-1.36.3}
ETCD_VERSION=${ETCD_VERSION:-3.6.6}
KWOK_VERSION=${KWOK_VERSION:-0.8.0}
HELM_VERSION=${HELM_VERSION:-3.22.0}
root=${USHER_TESTENV_CACHE:-$HOME/.cache/usher-testenv}/v$K8S_VERSION
bin=$root/bin
mkdir -p "$bin"
export GOFLAGS=-mod=mod CGO_ENABLED=0

log() { echo "build.sh: $*" >&2; }

# k8s.io/kubernetes replaces its staging modules with local paths, so it is
# built from a module of our own that pins every staging module instead.
build_kubernetes() {
  local want=(kube-apiserver kube-controller-manager kube-scheduler kubectl) missing=()
  for b in "${want[@]}"; do [ -x "$bin/$b" ] || missing+=("$b"); done
  [ ${#missing[@]} -eq 0 ] && return
  log "building ${missing[*]} v$K8S_VERSION (first time: several minutes)"
  local mod=$root/src/kubernetes staging
  mkdir -p "$mod"
  staging="api apiextensions-apiserver apimachinery apiserver cli-runtime client-go cloud-provider cluster-bootstrap
    code-generator component-base component-helpers controller-manager cri-api cri-client cri-streaming
    csi-translation-lib dynamic-resource-allocation endpointslice externaljwt kms kube-aggregator
    kube-controller-manager kube-proxy kube-scheduler kubectl kubelet metrics mount-utils
    pod-security-admission sample-apiserver sample-cli-plugin sample-controller streaming"
  {
    echo "module usher.dev/testenv/kubernetes"
    echo
    echo "go 1.26.0"
    echo
    echo "godebug default=go1.26"
    for m in $staging; do echo "replace k8s.io/$m => k8s.io/$m v0.${K8S_VERSION#1.}"; done
  } > "$mod/go.mod"
  printf '//go:build tools\n\npackage tools\n\nimport (\n' > "$mod/tools.go"
  for b in "${missing[@]}"; do printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$b" >> "$mod/tools.go"; done
  printf ')\n' >> "$mod/tools.go"
  local minor=${K8S_VERSION#1.}; minor=${minor%%.*}
  local ldflags="" pkg
  for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
    ldflags+=" -X $pkg.gitVersion=v$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
  done
  (cd "$mod" && go get "k8s.io/kubernetes@v$K8S_VERSION" && go mod tidy &&
    go build -trimpath -tags selinux,notest -ldflags "$ldflags" -o "$bin/" \
      $(printf 'k8s.io/kubernetes/cmd/%s ' "${missing[@]}"))
}

# A tool whose module builds with plain `go build` from a module of our own.
build_tool() {
  local name=$1 module=$2 version=$3 pkg=$4
  [ -x "$bin/$name" ] && return
  log "building $name $version"
  local mod=$root/src/$name
  mkdir -p "$mod"
  printf 'module usher.dev/testenv/%s\n\ngo 1.26.0\n' "$name" > "$mod/go.mod"
  (cd "$mod" && go get -tool "$module@$version" && go build -trimpath -o "$bin/$name" "$pkg")
}

build_kubernetes
build_tool etcd go.etcd.io/etcd/server/v3 "v$ETCD_VERSION" go.etcd.io/etcd/server/v3
build_tool kwok sigs.k8s.io/kwok "v$KWOK_VERSION" sigs.k8s.io/kwok/cmd/kwok
build_tool helm helm.sh/helm/v3 "v$HELM_VERSION" helm.sh/helm/v3/cmd/helm
# kwok's stages (fake node heartbeats, Ready pods) ship in its module.
stages=$root/kwok-stages
if [ ! -d "$stages" ]; then
  src=$(cd "$root/src/kwok" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)
  mkdir -p "$stages"
  for s in node-initialize node-heartbeat-with-lease pod-ready pod-complete pod-delete; do
    cp "$src"/kustomize/stage/*/"$s".yaml "$stages/" 2>/dev/null || find "$src/kustomize/stage" -name "$s.yaml" -exec cp {} "$stages/" \;
  done
fi
echo "$bin"
