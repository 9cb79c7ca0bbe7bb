"""A local Kubernetes control plane on loopback: kube-apiserver, kcm, scheduler and etcd built from Go modules,
with kwok nodes, run as local processes by kwokctl's binary runtime.

``up`` reuses a healthy cluster of the same name (seconds) and creates one otherwise; nothing is
downloaded: every binary comes from ``build.sh``'s cache. Pods land on kwok nodes, which run nothing;
the pod runner (``podrunner.py``) runs the pods that opt in as local processes.

The pod network lives on loopback: Linux routes all of 127.0.0.0/8 to ``lo``, so when kwok hands out pod
IPs from 127.1.<node>.0/24 a local process can bind its own pod IP with no setup, and the operator reaches
a worker at ``http://<podIP>:<port>`` as in a real cluster. A cluster made with other settings is
recreated, never reused, since its pods would carry addresses nothing listens on.

    python -m tests.tooling.controlplane.cluster up|down|status [--name swell]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("SWELL_CACHE", Path.home() / ".cache" / "swell"))
NODES = 3
# Only what a Deployment needs; kwokctl's defaults would also try to download metrics tools.
KWOKCTL_CONFIG = """\
apiVersion: config.kwok.x-k8s.io/v1alpha1
kind: KwokctlConfiguration
options:
  bindAddress: 127.0.0.1
"""
# kwok v0.8.0 takes a pod's IP from its node's spec.podCIDRs (pkg/kwok/controllers/pod_controller.go,
# funcPodIPsWith); a KwokConfiguration's options.cidr is only the fallback for a node without one, which
# `kwokctl scale node` never makes (and v0.8.0 applies no defaults to a KwokConfiguration it is given, so
# one with only a cidr leaves the pod controller with zero workers). That command renders
# kustomize/kwokctl/resource/node.yaml, whose parameters default to podCIDRs 10.0.0.0/24 + fd00::/64 and
# nodeIPs 192.0.2.1 + 2001:db8::1, each shifted by the node's index. These make node i own pod IPs
# 127.1.i.0/24 and have address 127.0.0.(1+i): IPv4 only, all on loopback.
NODE_PARAMS = ('.podCIDRs=["127.1.0.0/24"]', '.nodeIPs=["127.0.0.1"]')


class ControlPlaneUnavailable(RuntimeError):
    """The control plane cannot be built or started here; the message says what to do."""


@dataclass(frozen=True)
class ClusterInfo:
    name: str
    kubeconfig: Path
    binaries: dict[str, Path]

    @property
    def kubectl(self) -> Path:
        return self.binaries["kubectl"]


def binaries() -> dict[str, Path]:
    """Build (or find in the cache) every binary; ``build.sh`` prints NAME_BIN=dir lines."""
    try:
        built = subprocess.run([str(HERE / "build.sh")], capture_output=True, text=True, check=True, timeout=60 * 60)
    except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        raise ControlPlaneUnavailable(
            f"could not build the control plane with {HERE / 'build.sh'} (needs Go and the module proxy): {detail}"
        ) from exc
    dirs = dict(line.split("=", 1) for line in built.stdout.splitlines() if "_BIN=" in line)
    kube, kwok = Path(dirs["KUBERNETES_BIN"]), Path(dirs["KWOK_BIN"])
    found = {
        "kube-apiserver": kube / "kube-apiserver",
        "kube-controller-manager": kube / "kube-controller-manager",
        "kube-scheduler": kube / "kube-scheduler",
        "etcd": kube / "etcd",
        "kwok": kwok / "kwok",
        "kwokctl": kwok / "kwokctl",
        "helm": Path(dirs["HELM_BIN"]) / "helm",
        "kubeconform": Path(dirs["KUBECONFORM_BIN"]) / "kubeconform",
    }
    kubectl = kube / "kubectl" if (kube / "kubectl").exists() else shutil.which("kubectl")
    if kubectl is None:
        raise ControlPlaneUnavailable("kubectl not found on PATH (scripts/setup.sh installs it)")
    found["kubectl"] = Path(kubectl)
    return found


def workdir() -> Path:
    return CACHE / "kwok"


def kubeconfig_path(name: str) -> Path:
    return CACHE / "clusters" / name / "kubeconfig"


def _digest_path(name: str) -> Path:
    return CACHE / "clusters" / name / "config.sha256"


def config_digest() -> str:
    """What a cluster was made with; a running cluster made with anything else is stale."""
    made_with = json.dumps({"config": KWOKCTL_CONFIG, "node_params": NODE_PARAMS}, sort_keys=True)
    return hashlib.sha256(made_with.encode()).hexdigest()


def _current(name: str) -> bool:
    digest = _digest_path(name)
    return digest.exists() and digest.read_text().strip() == config_digest()


def _kwokctl(tools: dict[str, Path], name: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KWOK_WORKDIR": str(workdir())}
    config = CACHE / "clusters" / name / "kwokctl.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(KWOKCTL_CONFIG)
    return subprocess.run(
        [str(tools["kwokctl"]), "--name", name, "--config", str(config), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def healthy(tools: dict[str, Path], kubeconfig: Path) -> bool:
    if not kubeconfig.exists():
        return False
    probe = subprocess.run(
        [str(tools["kubectl"]), "--kubeconfig", str(kubeconfig), "get", "--raw", "/readyz"],
        capture_output=True,
        text=True,
        timeout=20,
    )
    return probe.returncode == 0 and probe.stdout.strip() == "ok"


def _ready_nodes(tools: dict[str, Path], kubeconfig: Path) -> int:
    listed = subprocess.run(
        [str(tools["kubectl"]), "--kubeconfig", str(kubeconfig), "get", "nodes", "--no-headers"],
        capture_output=True,
        text=True,
        timeout=20,
    )
    return sum(" Ready " in f" {line} " for line in listed.stdout.splitlines())


def ensure_cluster(name: str = "swell") -> ClusterInfo:
    """A healthy cluster with ``NODES`` ready kwok nodes; reused when one is already up."""
    tools = binaries()
    kubeconfig = kubeconfig_path(name)
    cluster_dir = workdir() / "clusters" / name
    if cluster_dir.exists() and not _current(name):
        # Made by an older cluster.py (e.g. before pods had loopback IPs): nodes and pods would keep the old shape.
        deleted = _kwokctl(tools, name, "delete", "cluster", "--kubeconfig", str(kubeconfig))
        if deleted.returncode != 0:
            raise ControlPlaneUnavailable(f"cannot delete the stale cluster {name}: {deleted.stderr}")
        kubeconfig.unlink(missing_ok=True)
    if not healthy(tools, kubeconfig):
        if cluster_dir.exists():
            started = _kwokctl(tools, name, "start", "cluster", "--kubeconfig", str(kubeconfig))
            if started.returncode != 0 or not _wait_healthy(tools, kubeconfig, 60):
                _kwokctl(tools, name, "delete", "cluster", "--kubeconfig", str(kubeconfig))
        if not healthy(tools, kubeconfig):
            _create(tools, name, kubeconfig)
    if _ready_nodes(tools, kubeconfig) < NODES:
        params = [arg for param in NODE_PARAMS for arg in ("--param", param)]
        scaled = _kwokctl(tools, name, "scale", "node", "--replicas", str(NODES), *params)
        if scaled.returncode != 0:
            raise ControlPlaneUnavailable(f"kwokctl scale node failed: {scaled.stderr}")
        _wait(lambda: _ready_nodes(tools, kubeconfig) >= NODES, 120, f"{NODES} ready kwok nodes")
    return ClusterInfo(name=name, kubeconfig=kubeconfig, binaries=tools)


def _create(tools: dict[str, Path], name: str, kubeconfig: Path) -> None:
    kubeconfig.parent.mkdir(parents=True, exist_ok=True)
    created = _kwokctl(
        tools,
        name,
        "create",
        "cluster",
        "--runtime",
        "binary",
        "--kubeconfig",
        str(kubeconfig),
        "--kube-apiserver-binary",
        str(tools["kube-apiserver"]),
        "--kube-controller-manager-binary",
        str(tools["kube-controller-manager"]),
        "--kube-scheduler-binary",
        str(tools["kube-scheduler"]),
        "--etcd-binary",
        str(tools["etcd"]),
        "--kwok-controller-binary",
        str(tools["kwok"]),
        "--wait",
        "3m",
        timeout=600,
    )
    if created.returncode != 0:
        raise ControlPlaneUnavailable(f"kwokctl create cluster failed:\n{created.stdout}\n{created.stderr}")
    if not _wait_healthy(tools, kubeconfig, 120):
        raise ControlPlaneUnavailable(f"the API server of cluster {name} never became ready")
    _digest_path(name).write_text(config_digest() + "\n")


def _wait_healthy(tools: dict[str, Path], kubeconfig: Path, timeout: float) -> bool:
    try:
        _wait(lambda: healthy(tools, kubeconfig), timeout, "API server ready")
    except ControlPlaneUnavailable:
        return False
    return True


def _wait(check: object, timeout: float, what: str) -> None:
    assert callable(check)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise ControlPlaneUnavailable(f"{what}: not within {timeout:g}s")


def delete_cluster(name: str = "swell") -> None:
    tools = binaries()
    _kwokctl(tools, name, "delete", "cluster", "--kubeconfig", str(kubeconfig_path(name)))
    kubeconfig_path(name).unlink(missing_ok=True)
    _digest_path(name).unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument("--name", default="swell")
    args = parser.parse_args(argv)
    try:
        if args.action == "up":
            started = time.monotonic()
            info = ensure_cluster(args.name)
            print(f"cluster {info.name} is up in {time.monotonic() - started:.1f}s")
            print(f"export KUBECONFIG={info.kubeconfig}")
        elif args.action == "down":
            delete_cluster(args.name)
            print(f"cluster {args.name} deleted")
        else:
            up = healthy(binaries(), kubeconfig_path(args.name))
            print(f"cluster {args.name}: {'up' if up else 'down'} ({kubeconfig_path(args.name)})")
            return 0 if up else 1
    except ControlPlaneUnavailable as exc:
        print(f"control plane: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
