#!/usr/bin/env bash
# Smoke check of a kind cluster made by tests.tooling.kind.cluster, by hand:
#   tests/tooling/kind/smoke.sh KUBECONFIG [IMAGE]
# IMAGE (default swell/python:3.11-slim, needs python3) must be loaded first (`... cluster load IMAGE`).
# Shows: a PVC that binds, a pod on one worker reaching a pod on the other by pod IP (the CNI routes),
# CoreDNS resolving kubernetes.default, the kubernetes Service answering (kube-proxy), and a loaded image
# running with imagePullPolicy Never and IfNotPresent. Leaves nothing behind (namespace kindproof).
set -euo pipefail
export KUBECONFIG="$1"
img="${2:-swell/python:3.11-slim}"
K="${KUBECTL:-kubectl}"
$K get nodes -o wide
read -r -a workers <<<"$($K get nodes -l '!node-role.kubernetes.io/control-plane' -o jsonpath='{.items[*].metadata.name}')"
$K delete ns kindproof --ignore-not-found --wait=true >/dev/null
$K create ns kindproof >/dev/null
cat <<YAML | $K -n kindproof apply -f - >/dev/null
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
---
apiVersion: v1
kind: Pod
metadata: {name: server}
spec:
  nodeSelector: {kubernetes.io/hostname: ${workers[0]}}
  containers:
    - name: server
      image: $img
      imagePullPolicy: Never
      command: [python3, -m, http.server, "8080", -d, /data]
      volumeMounts: [{name: data, mountPath: /data}]
  volumes: [{name: data, persistentVolumeClaim: {claimName: data}}]
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  nodeSelector: {kubernetes.io/hostname: ${workers[1]}}
  containers:
    - name: client
      image: $img
      imagePullPolicy: IfNotPresent
      command: [sleep, infinity]
YAML
start=$(date +%s)
$K -n kindproof wait --for=condition=Ready pod/server pod/client --timeout=180s
echo "pods Ready after $(( $(date +%s) - start )) s"
$K -n kindproof get pvc data -o jsonpath='PVC {.metadata.name}: {.status.phase}{"\n"}'
$K -n kindproof get pods -o wide
$K -n kindproof exec server -- sh -c 'echo hello-from-pvc > /data/index.html'
ip=$($K -n kindproof get pod server -o jsonpath='{.status.podIP}')
$K -n kindproof exec client -- python3 -c "import urllib.request; print('cross-node:', urllib.request.urlopen('http://$ip:8080/index.html', timeout=5).read().decode().strip())"
$K -n kindproof exec client -- python3 -c "import socket; print('dns kubernetes.default ->', socket.gethostbyname('kubernetes.default'))"
$K -n kindproof exec client -- python3 -c "import ssl, urllib.request; c = ssl.create_default_context(); c.check_hostname = False; c.verify_mode = ssl.CERT_NONE
try:
    urllib.request.urlopen('https://kubernetes.default/version', context=c, timeout=5)
except urllib.error.HTTPError as e:
    print('service kubernetes.default answers HTTP', e.code)
else:
    print('service kubernetes.default answers 200')"
$K delete ns kindproof --wait=false >/dev/null
