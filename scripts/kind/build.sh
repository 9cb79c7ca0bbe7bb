#!/usr/bin/env bash
# Builds everything a kind cluster needs on a machine that cannot pull kindest/node, once per version:
#   the kind and crictl binaries, kubeadm/kubelet/kubectl/kube-proxy (k8s.io/kubernetes, the module pinned in
#   tests/tooling/controlplane/go.mod, same flags as its build.sh), CoreDNS and local-path-provisioner (Go
#   proxy), a pause binary (scripts/kind/pause.c), the images kubeadm and the default add-ons run, the node
#   base image (scripts/kind/base.Dockerfile on swell/debian:bookworm) and the node image itself.
# Binaries are cached under ~/.cache/swell/bin/<name>-<version>/; images are skipped when their tag exists.
# The node image tag carries a hash of everything in it, so a change to any input makes a new one.
# Prints NAME=VALUE lines: KIND, KUBECTL, OFFICIAL_NODE_IMAGE (kind's default kindest/node), BASE_IMAGE,
# NODE_IMAGE. `build.sh tools` builds and prints only the first three (for machines that can pull kindest/node).
# Step timings go to stderr. Needs Go and gcc; starts Docker with scripts/docker-up.sh (except for `tools`).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
controlplane="$root/tests/tooling/controlplane"
# shellcheck source=versions.env
source "$here/versions.env"
cache="${SWELL_CACHE:-$HOME/.cache/swell}"
bin="$cache/bin"
k8s_version="$(awk '$1=="k8s.io/kubernetes"{print $2}' "$controlplane/go.mod")"
kube_bin="$bin/kubernetes-$k8s_version"
debian_image="swell/debian:bookworm"
export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:--mod=mod}"

log() { echo "build.sh: $*" >&2; }
now() { date +%s.%N; }
# step NAME FUNCTION...: runs FUNCTION and logs how long it took.
step() {
  local name="$1" start
  shift
  start="$(now)"
  "$@"
  log "$(awk -v name="$name" -v start="$start" -v end="$(now)" 'BEGIN { printf "%-22s %6.1f s", name, end - start }')"
}
have_image() { docker image inspect "$1" >/dev/null 2>&1; }
short_hash() { sha256sum | cut -c1-12; }
# quiet COMMAND...: runs COMMAND; shows its output only when it fails (docker build's legacy-builder notice).
quiet() {
  local output
  if ! output="$("$@" 2>&1)"; then
    echo "$output" >&2
    return 1
  fi
}

# go_install NAME VERSION PACKAGE@VERSION: a published main package into $bin/NAME-VERSION/.
go_install() {
  local name="$1" version="$2" pkg="$3"
  local dir="$bin/$name-$version"
  if [ ! -x "$dir/$name" ]; then
    log "installing $pkg"
    mkdir -p "$dir"
    (cd /tmp && GOBIN="$dir" go install -trimpath -ldflags "-s -w" "$pkg")
  fi
}

# The control plane binaries may be under way in tests/tooling/controlplane/build.sh (same cache folder);
# its lock makes us wait for it instead of compiling the same packages twice.
kube_commands() { "$controlplane/build.sh" kube "$@" >/dev/null; }

tools() {
  go_install kind "$KIND_VERSION" "sigs.k8s.io/kind@$KIND_VERSION"
  kube_commands kubectl
}

kubernetes() {
  go_install crictl "$CRICTL_VERSION" "sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION"
  kube_commands kube-apiserver kube-controller-manager kube-scheduler etcd kubeadm kubelet kube-proxy
}

official_node_image() {
  sed -n 's/^const Image = "\(.*\)"$/\1/p' \
    "$(cd /tmp && go env GOMODCACHE)/sigs.k8s.io/kind@$KIND_VERSION/pkg/apis/config/defaults/image.go"
}

addons() {
  go_install coredns "$COREDNS_VERSION" "github.com/coredns/coredns@$COREDNS_VERSION"
  go_install local-path-provisioner "$LOCAL_PATH_PROVISIONER_VERSION" \
    "github.com/rancher/local-path-provisioner@$LOCAL_PATH_PROVISIONER_VERSION"
  local dir="$bin/pause-$PAUSE_IMAGE_TAG"
  if [ ! -x "$dir/pause" ]; then
    if ! command -v gcc >/dev/null || ! dpkg -s libc6-dev >/dev/null 2>&1; then
      log "apt-get install gcc libc6-dev"
      apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc libc6-dev >/dev/null
    fi
    mkdir -p "$dir"
    gcc -static -Os -s -o "$dir/pause.tmp" "$here/pause.c" && mv "$dir/pause.tmp" "$dir/pause"
  fi
}

# A fresh temporary build context; all are removed on exit. (They live under one directory made here:
# new_context runs in a $(...) subshell, which cannot add to a list this shell would clean up.)
contexts="$(mktemp -d /tmp/swell-kind-contexts.XXXXXX)"
trap 'rm -rf "$contexts"' EXIT
new_context() { mktemp -d "$contexts/context.XXXXXX"; }

base_image_tag() {
  { cat "$here/base.Dockerfile"; echo "$KIND_VERSION $CRICTL_VERSION"; docker image inspect -f '{{.Id}}' "$debian_image"; } | short_hash
}

debian() { have_image "$debian_image" || "$root/scripts/images/debian-base.sh" >/dev/null; }

base_image() {
  base="swell/kind-base:$KIND_VERSION-$(base_image_tag)"
  have_image "$base" && return 0
  local context kind_files
  context="$(new_context)"
  kind_files="$(cd /tmp && go env GOMODCACHE)/sigs.k8s.io/kind@$KIND_VERSION/images/base/files"
  [ -d "$kind_files" ] || (cd /tmp && go mod download "sigs.k8s.io/kind@$KIND_VERSION")
  cp -r "$kind_files" "$context/files"
  # The module cache is read-only; kind's Dockerfile sets these modes with COPY --chmod (BuildKit only).
  chmod -R u+w "$context/files"
  find "$context/files" -type d -exec chmod 0755 {} +
  find "$context/files" -type f -exec chmod 0644 {} +
  chmod 0755 "$context"/files/usr/local/bin/* "$context"/files/kind/bin/*
  install -m 0755 "$bin/crictl-$CRICTL_VERSION/crictl" "$context/crictl"
  cp "$here/base.Dockerfile" "$context/Dockerfile"
  log "building $base"
  quiet docker build -q --build-arg "BASE_IMAGE=$debian_image" -t "$base" "$context"
}

# image TAG DOCKERFILE [FILE...]: builds TAG from DOCKERFILE (text) with FILEs in its context.
image() {
  local tag="$1" dockerfile="$2" context
  shift 2
  have_image "$tag" && return 0
  context="$(new_context)"
  [ "$#" = 0 ] || cp "$@" "$context/"
  printf '%s\n' "$dockerfile" >"$context/Dockerfile"
  log "building $tag"
  quiet docker build -q -t "$tag" "$context"
}

# Tags of our own images carry a hash of what they are made of.
own_tag() { cat "$@" | short_hash; }

images() {
  local cmd
  for cmd in kube-apiserver kube-controller-manager kube-scheduler; do
    image "registry.k8s.io/$cmd:$k8s_version" "FROM $debian_image
COPY $cmd /usr/local/bin/$cmd" "$kube_bin/$cmd"
  done
  image "registry.k8s.io/kube-proxy:$k8s_version" "FROM $debian_image
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends iptables conntrack >/dev/null && apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /usr/share/doc/* /usr/share/man/*
COPY iptables-wrapper /usr/sbin/iptables-wrapper
RUN for name in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do ln -sf iptables-wrapper /usr/sbin/\$name; done
COPY kube-proxy /usr/local/bin/kube-proxy" "$kube_bin/kube-proxy" "$here/iptables-wrapper"
  image "registry.k8s.io/etcd:$ETCD_IMAGE_TAG" "FROM $debian_image
COPY etcd /usr/local/bin/etcd" "$kube_bin/etcd"
  image "registry.k8s.io/coredns/coredns:$COREDNS_VERSION" "FROM scratch
COPY coredns /coredns
ENTRYPOINT [\"/coredns\"]" "$bin/coredns-$COREDNS_VERSION/coredns"
  image "registry.k8s.io/pause:$PAUSE_IMAGE_TAG" "FROM scratch
COPY pause /pause
ENTRYPOINT [\"/pause\"]" "$bin/pause-$PAUSE_IMAGE_TAG/pause"
  local cni_dockerfile="FROM $debian_image
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends iproute2 >/dev/null && apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /usr/share/doc/* /usr/share/man/*
COPY kubectl /usr/local/bin/kubectl
COPY cni.sh /usr/local/bin/swell-kind-cni
ENTRYPOINT [\"/usr/local/bin/swell-kind-cni\"]"
  cni_image="swell/kind-cni:$(own_tag "$here/cni.sh" "$kube_bin/kubectl" <(echo "$cni_dockerfile") <(docker image inspect -f '{{.Id}}' "$debian_image"))"
  image "$cni_image" "$cni_dockerfile" "$kube_bin/kubectl" "$here/cni.sh"
  storage_image="swell/local-path-provisioner:$LOCAL_PATH_PROVISIONER_VERSION"
  image "$storage_image" "FROM $debian_image
COPY local-path-provisioner /usr/local/bin/local-path-provisioner" \
    "$bin/local-path-provisioner-$LOCAL_PATH_PROVISIONER_VERSION/local-path-provisioner"
  # The helper pod only runs the setup/teardown shell scripts from the provisioner's ConfigMap.
  storage_helper_image="swell/local-path-helper:bookworm"
  have_image "$storage_helper_image" || docker tag "$debian_image" "$storage_helper_image"
  node_images=(
    "registry.k8s.io/kube-apiserver:$k8s_version" "registry.k8s.io/kube-controller-manager:$k8s_version"
    "registry.k8s.io/kube-scheduler:$k8s_version" "registry.k8s.io/kube-proxy:$k8s_version"
    "registry.k8s.io/etcd:$ETCD_IMAGE_TAG" "registry.k8s.io/coredns/coredns:$COREDNS_VERSION"
    "registry.k8s.io/pause:$PAUSE_IMAGE_TAG" "$cni_image" "$storage_image" "$storage_helper_image"
  )
}

# What kind's `build node-image` does (pkg/build/nodeimage), minus its image pulls, which need a registry:
# binaries into /usr/bin, /kind/version, the default CNI and storage manifests, every image imported into
# the node's containerd, committed with kind's entrypoint.
node_manifests() {
  local context="$1"
  mkdir -p "$context/manifests"
  sed -e "s#__CNI_IMAGE__#$cni_image#g" "$here/manifests/default-cni.yaml" >"$context/manifests/default-cni.yaml"
  sed -e "s#__STORAGE_IMAGE__#$storage_image#g" -e "s#__STORAGE_HELPER_IMAGE__#$storage_helper_image#g" \
    "$here/manifests/default-storage.yaml" >"$context/manifests/default-storage.yaml"
}

node_image() {
  local context key container
  context="$(new_context)"
  node_manifests "$context"
  key="$({
    echo "$k8s_version"
    docker image inspect -f '{{.Id}}' "$base" "${node_images[@]}"
    cat "$context"/manifests/*
    stat -c '%n %s %Y' "$kube_bin/kubeadm" "$kube_bin/kubelet" "$kube_bin/kubectl"
  } | short_hash)"
  node="swell/kind-node:$k8s_version-$key"
  have_image "$node" && return 0
  log "building $node"
  container="swell-kind-build-$$"
  docker rm -f "$container" >/dev/null 2>&1 || true
  docker run -d --name "$container" --entrypoint=sleep --security-opt seccomp=unconfined "$base" infinity >/dev/null
  # shellcheck disable=SC2064
  trap "docker rm -f $container >/dev/null 2>&1 || true; rm -rf \"$contexts\"" EXIT
  local cmd
  for cmd in kubeadm kubelet kubectl; do
    docker cp "$kube_bin/$cmd" "$container:/usr/bin/$cmd"
  done
  docker exec "$container" sh -c "chown root:root /usr/bin/kubeadm /usr/bin/kubelet /usr/bin/kubectl \
    && chmod 0755 /usr/bin/kubeadm /usr/bin/kubelet /usr/bin/kubectl \
    && echo $k8s_version >/kind/version && mkdir -p /kind/manifests"
  docker cp "$context/manifests/." "$container:/kind/manifests/"
  docker exec "$container" sh -c 'nohup containerd >/dev/null 2>&1 &
    for i in $(seq 1 50); do [ -S /run/containerd/containerd.sock ] && ctr version >/dev/null 2>&1 && exit 0; sleep 0.2; done
    echo "containerd did not start in the build container" >&2; exit 1'
  docker save "${node_images[@]}" | docker exec -i "$container" \
    ctr --namespace=k8s.io images import --label=io.cri-containerd.pinned=pinned --all-platforms --no-unpack --digests - >/dev/null
  # pid 1 here is sleep, which reaps nothing: wait until containerd is gone or a zombie.
  docker exec "$container" sh -c 'pkill -x containerd
    while ps -o stat= -C containerd | grep -qv "^Z"; do sleep 0.2; done'
  docker commit --change 'ENTRYPOINT [ "/usr/local/bin/entrypoint", "/sbin/init" ]' "$container" "$node" >/dev/null
  docker rm -f "$container" >/dev/null
  remove_older swell/kind-node "$node"
  remove_older swell/kind-cni "$cni_image"
}

# remove_older REPOSITORY KEEP: drops the repository's other tags; images that containers use stay.
remove_older() {
  docker images "$1" --format '{{.Repository}}:{{.Tag}}' | grep -vxF "$2" | xargs -r docker rmi >/dev/null 2>&1 || true
}

print_tools() {
  echo "KIND=$bin/kind-$KIND_VERSION/kind"
  echo "KUBECTL=$kube_bin/kubectl"
  echo "OFFICIAL_NODE_IMAGE=$(official_node_image)"
}

main() {
  step "kind+kubectl binaries" tools
  if [ "${1:-}" = tools ]; then
    print_tools
    return 0
  fi
  step "node binaries" kubernetes
  step "addon binaries" addons
  step "docker engine" "$root/scripts/docker-up.sh"
  step "debian image" debian
  step "base image" base_image
  step "component images" images
  step "node image" node_image
  print_tools
  echo "BASE_IMAGE=$base"
  echo "NODE_IMAGE=$node"
}

# Sourcing this file (for one step at a time) defines the steps without running them.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then main "$@"; fi
