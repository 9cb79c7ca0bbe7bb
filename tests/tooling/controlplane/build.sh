#!/usr/bin/env bash
# Builds the local control plane (kube-apiserver, kube-controller-manager, kube-scheduler, etcd)
# and the tools around it (kwok, kwokctl, helm, kubeconform) from Go modules, once per version.
# A warm cache makes this a no-op. Prints the directory of each tool set, one per line, as NAME=DIR.
# `build.sh kube CMD...` builds only these k8s.io/kubernetes commands (or etcd), e.g. the node binaries
# scripts/kind/build.sh needs; builders of one version folder take turns (flock), so none compiles twice.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
cache="${SWELL_CACHE:-$HOME/.cache/swell}/bin"
k8s_version="$(awk '$1=="k8s.io/kubernetes"{print $2}' "$here/go.mod")"
etcd_version="$(awk '$1=="go.etcd.io/etcd/server/v3"{print $2}' "$here/go.mod")"
export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:--mod=mod}"

log() { echo "build.sh: $*" >&2; }

build_kube() {
  local dir="$cache/kubernetes-$k8s_version" cmds=("$@")
  [ "${#cmds[@]}" -gt 0 ] || cmds=(kube-apiserver kube-controller-manager kube-scheduler etcd)
  local minor="${k8s_version#v1.}"; minor="${minor%%.*}"
  local ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$k8s_version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
  mkdir -p "$dir"
  exec 9>"$dir/.lock"
  flock 9
  for cmd in "${cmds[@]}"; do
    if [ -x "$dir/$cmd" ]; then
      continue
    elif [ "$cmd" = etcd ]; then
      log "building etcd $etcd_version"
      (cd "$here" && go build -trimpath -ldflags "-s -w" -o "$dir/etcd.tmp" ./cmd/etcd) && mv "$dir/etcd.tmp" "$dir/etcd"
    else
      log "building $cmd $k8s_version"
      (cd "$here" && go build -trimpath -ldflags "$ldflags" -o "$dir/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd") && mv "$dir/$cmd.tmp" "$dir/$cmd"
    fi
  done
  flock -u 9
  echo "KUBERNETES_BIN=$dir"
}

# go install of a published main package into its own versioned folder.
install_tool() {
  local name="$1" version="$2"; shift 2
  local dir="$cache/$name-$version"
  mkdir -p "$dir"
  local pkg
  for pkg in "$@"; do
    if [ ! -x "$dir/$(basename "${pkg%@*}")" ]; then
      log "installing $pkg"
      GOBIN="$dir" go install -trimpath -ldflags "-s -w" "$pkg"
    fi
  done
  echo "$(echo "$name" | tr 'a-z' 'A-Z')_BIN=$dir"
}

if [ "${1:-}" = kube ]; then
  shift
  build_kube "$@"
  exit 0
fi
build_kube
install_tool kwok "$KWOK_VERSION" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" "sigs.k8s.io/kwok/cmd/kwokctl@$KWOK_VERSION"
install_tool helm "$HELM_VERSION" "$HELM_MODULE/cmd/helm@$HELM_VERSION"
install_tool kubeconform "$KUBECONFORM_VERSION" "github.com/yannh/kubeconform/cmd/kubeconform@$KUBECONFORM_VERSION"
