#!/bin/sh
# swell-kind-cni: the pod network of Swell's kind node image, a stand-in for kindnetd (which cannot be
# pulled or built here). Runs on every node (host network, NET_ADMIN). Every 10 s it reads the nodes from
# the API server and
#   - writes this node's CNI config: ptp veth pairs with host-local addresses from the node's podCIDR;
#   - routes every other node's podCIDR via that node's InternalIP (all kind nodes share one L2 network).
# Pods reach pods and nodes on any node by their own IP. Traffic that leaves the cluster is not masqueraded.
# Env: NODE_NAME (downward API); CONTROL_PLANE_ENDPOINT (host:port, added by kind) because the kubernetes
# Service needs kube-proxy, which may not run yet.
set -eu
conf_dir="${CNI_CONF_DIR:-/etc/cni/net.d}"
conf="$conf_dir/10-swell-kind.conflist"
interval="${SYNC_SECONDS:-10}"
if [ -n "${CONTROL_PLANE_ENDPOINT:-}" ]; then
  export KUBERNETES_SERVICE_HOST="${CONTROL_PLANE_ENDPOINT%:*}" KUBERNETES_SERVICE_PORT="${CONTROL_PLANE_ENDPOINT##*:}"
fi

log() { echo "swell-kind-cni: $*" >&2; }

write_conf() {
  cat >"$conf.tmp" <<JSON
{
  "cniVersion": "0.4.0",
  "name": "swell-kind",
  "plugins": [
    {
      "type": "ptp",
      "ipMasq": false,
      "mtu": 1500,
      "ipam": {
        "type": "host-local",
        "dataDir": "/run/cni-ipam-state",
        "ranges": [[{ "subnet": "$1" }]],
        "routes": [{ "dst": "0.0.0.0/0" }]
      }
    },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}
JSON
  if ! cmp -s "$conf.tmp" "$conf"; then
    mv "$conf.tmp" "$conf"
    log "wrote $conf for $1"
  else
    rm -f "$conf.tmp"
  fi
}

sync_once() {
  nodes="$(kubectl get nodes -o jsonpath='{range .items[*]}{.metadata.name}{" "}{.spec.podCIDR}{" "}{.status.addresses[?(@.type=="InternalIP")].address}{"\n"}{end}')" || return 1
  echo "$nodes" | while read -r name cidr ip _; do
    [ -n "$name" ] && [ -n "$cidr" ] && [ -n "$ip" ] || continue
    if [ "$name" = "$NODE_NAME" ]; then
      write_conf "$cidr"
    else
      case "$(ip route show "$cidr") " in
        *" via $ip "*) ;;
        *) ip route replace "$cidr" via "$ip" && log "route $cidr via $ip ($name)" ;;
      esac
    fi
  done
}

: "${NODE_NAME:?NODE_NAME must be set}"
mkdir -p "$conf_dir"
while true; do
  sync_once || log "sync failed; retrying"
  sleep "$interval"
done
