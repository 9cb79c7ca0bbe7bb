"""A kind cluster for Swell's e2e tests, demo and benchmarks, made the same way on every machine.

`ensure_kind_cluster` starts Docker where needed (scripts/docker-up.sh), builds kind, kubectl and, where
the official `kindest/node` image cannot be pulled, a node image from Go modules and Debian packages
(scripts/kind/build.sh), then creates the cluster or reuses a healthy one. `load_images` puts local
Docker images on every node; kind skips nodes that already hold an image with the same ID.
Anything that makes a kind cluster impossible here raises `KindUnavailable` with a one-line reason, so a
test can skip on it and a demo can say why.

CLI: `python -m tests.tooling.kind.cluster up|down|load IMAGE...` (prints the KUBECONFIG path on `up`).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[3]
DOCKER_UP = REPO_ROOT / "scripts" / "docker-up.sh"
BUILD = REPO_ROOT / "scripts" / "kind" / "build.sh"
DEFAULT_CONFIG = REPO_ROOT / "kind-config.yaml"
CACHE = Path(os.environ.get("SWELL_CACHE", Path.home() / ".cache" / "swell"))
log = logging.getLogger(__name__)
# Set to an image reference to skip the choice between kind's default image and our own build.
NODE_IMAGE_ENV = "SWELL_KIND_NODE_IMAGE"


class KindUnavailable(Exception):
    """A kind cluster cannot be made on this machine; `reason` is one line fit for a skip message."""

    def __init__(self, reason: str) -> None:
        self.reason = " ".join(reason.split()) or "unknown reason"
        super().__init__(self.reason)


@dataclass(frozen=True)
class KindCluster:
    """A running kind cluster and the tools that talk to it."""

    name: str
    kubeconfig: Path
    kubectl: Path
    kind: Path

    def kubectl_command(self, *args: str) -> list[str]:
        """A kubectl command line aimed at this cluster."""
        return [str(self.kubectl), f"--kubeconfig={self.kubeconfig}", *args]


@dataclass(frozen=True)
class _Tools:
    kind: Path
    kubectl: Path
    official_node_image: str


def _run(command: Sequence[str | Path], *, timeout: float, what: str) -> str:
    """Runs a command to completion; a failure becomes KindUnavailable with its last stderr line."""
    started = time.monotonic()
    try:
        done = subprocess.run(
            [str(part) for part in command],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise KindUnavailable(f"{what}: no result within {timeout:.0f} s") from error
    except OSError as error:
        raise KindUnavailable(f"{what}: {error}") from error
    log.info("%s: %.1f s", what, time.monotonic() - started)
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        raise KindUnavailable(f"{what}: {lines[-1] if lines else f'exit {done.returncode}'}")
    return done.stdout


def _key_values(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line)
    return {key.strip(): value.strip() for key, value in pairs}


def _can_use(image: str) -> bool:
    """True when the image is here or can be pulled (fails in well under a second without a registry)."""
    inspect = subprocess.run(["docker", "image", "inspect", image], capture_output=True, check=False)
    if inspect.returncode == 0:
        return True
    try:
        pull = subprocess.run(["docker", "pull", "-q", image], capture_output=True, timeout=900, check=False)
    except subprocess.TimeoutExpired:
        return False
    return pull.returncode == 0


def _tools() -> _Tools:
    """A Docker engine that runs privileged containers, kind and kubectl (cached builds)."""
    _run([DOCKER_UP], timeout=900, what="Docker")
    tools = _key_values(_run([BUILD, "tools"], timeout=1800, what="kind/kubectl build"))
    return _Tools(
        kind=Path(tools["KIND"]),
        kubectl=Path(tools["KUBECTL"]),
        official_node_image=tools.get("OFFICIAL_NODE_IMAGE", ""),
    )


def _node_image(tools: _Tools) -> str:
    """$SWELL_KIND_NODE_IMAGE, else kind's own node image where it can be pulled, else one built here."""
    chosen = os.environ.get(NODE_IMAGE_ENV, "")
    if chosen:
        return chosen
    if tools.official_node_image and _can_use(tools.official_node_image):
        return tools.official_node_image
    return _key_values(_run([BUILD], timeout=3600, what="kind node image build"))["NODE_IMAGE"]


def _node_count(config: Path) -> int:
    document = yaml.safe_load(config.read_text()) or {}
    nodes = document.get("nodes") or [{"role": "control-plane"}]
    return len(nodes)


def _kubeconfig_path(name: str) -> Path:
    return CACHE / "kind" / name / "kubeconfig"


def _clusters(kind: Path) -> set[str]:
    return set(_run([kind, "get", "clusters"], timeout=60, what="kind get clusters").split())


def _ready_nodes(cluster: KindCluster) -> int:
    """Nodes with condition Ready=True, or -1 when the API server does not answer."""
    done = subprocess.run(
        cluster.kubectl_command(
            "get",
            "nodes",
            "--request-timeout=5s",
            "-o",
            'jsonpath={range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\\n"}{end}',
        ),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        return -1
    return sum(1 for line in done.stdout.splitlines() if line.strip() == "True")


def _running_node_containers(name: str) -> int:
    done = subprocess.run(
        ["docker", "ps", "-q", "--filter", f"label=io.x-k8s.kind.cluster={name}", "--filter", "status=running"],
        capture_output=True,
        text=True,
        check=False,
    )
    return len(done.stdout.split()) if done.returncode == 0 else -1


def _healthy(cluster: KindCluster, nodes: int) -> bool:
    """Every node container running and every node Ready.

    The containers are checked too because the API server keeps a stopped node Ready for about 40 s.
    The kubeconfig is exported again first: the API server's host port changes when Docker restarts.
    """
    if _running_node_containers(cluster.name) != nodes:
        return False
    exported = subprocess.run(
        [str(cluster.kind), "export", "kubeconfig", "--name", cluster.name, "--kubeconfig", str(cluster.kubeconfig)],
        capture_output=True,
        check=False,
    )
    return exported.returncode == 0 and _ready_nodes(cluster) == nodes


def _wait_ready(cluster: KindCluster, nodes: int, timeout: float) -> None:
    """Every node Ready, then CoreDNS and the volume provisioner available (so PVCs bind)."""
    deadline = time.monotonic() + timeout
    while (ready := _ready_nodes(cluster)) != nodes:
        if time.monotonic() > deadline:
            raise KindUnavailable(f"kind cluster {cluster.name}: {max(ready, 0)}/{nodes} nodes Ready")
        time.sleep(1)
    for namespace, deployment in (
        ("kube-system", "coredns"),
        ("local-path-storage", "local-path-provisioner"),
    ):
        left = max(deadline - time.monotonic(), 1.0)
        _run(
            cluster.kubectl_command(
                "-n", namespace, "rollout", "status", f"deployment/{deployment}", f"--timeout={left:.0f}s"
            ),
            timeout=left + 10,
            what=f"kind cluster {cluster.name}: {deployment}",
        )


@contextmanager
def _cluster_lock(name: str) -> Iterator[None]:
    """One process at a time makes, checks or deletes cluster `name` (e.g. parallel test workers)."""
    path = CACHE / "kind" / f"{name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def ensure_kind_cluster(name: str = "swell", config: Path = DEFAULT_CONFIG, *, timeout: float = 600.0) -> KindCluster:
    """A healthy kind cluster `name` from `config`: the existing one if all its nodes are Ready, else new.

    Raises KindUnavailable when Docker, the builds or the cluster cannot be made to work here.
    """
    tools = _tools()
    cluster = KindCluster(name=name, kubeconfig=_kubeconfig_path(name), kubectl=tools.kubectl, kind=tools.kind)
    nodes = _node_count(config)
    with _cluster_lock(name):
        if name in _clusters(tools.kind):
            if _healthy(cluster, nodes):
                log.info("kind cluster %s: reusing, %d nodes Ready", name, nodes)
                return cluster
            log.info("kind cluster %s: not healthy, recreating", name)
            _delete(tools.kind, name)
        cluster.kubeconfig.parent.mkdir(parents=True, exist_ok=True)
        create: list[str | Path] = [tools.kind, "create", "cluster", "--name", name, "--config", config]
        create += ["--kubeconfig", cluster.kubeconfig, "--wait", "0s", "--image", _node_image(tools)]
        _run(create, timeout=timeout, what=f"kind create cluster {name}")
        started = time.monotonic()
        _wait_ready(cluster, nodes, timeout)
        log.info(
            "kind cluster %s: %d nodes Ready, DNS and volumes available after %.1f s more",
            name,
            nodes,
            time.monotonic() - started,
        )
    return cluster


def load_images(cluster: KindCluster, images: Sequence[str]) -> None:
    """Puts local Docker images on every node of the cluster, skipping nodes that have them already.

    One image per `kind load` call, so that one new image does not resend the others. Each rebuild is
    loaded under a new tag, so the other tags of the same repositories are then removed from the nodes
    unless a container uses them: without that, the nodes kept every build ever loaded (20 GB after a
    day of work, which filled the disk of the machine the suite ran on).
    """
    nodes = ",".join(_nodes_that_run_pods(cluster))
    for image in dict.fromkeys(images):
        _run(
            [cluster.kind, "load", "docker-image", "--name", cluster.name, "--nodes", nodes, image],
            timeout=1800,
            what=f"kind load {image}",
        )
    for node in node_names(cluster):
        _remove_replaced_images(node, images)


def node_names(cluster: KindCluster) -> list[str]:
    """The names of the cluster's node containers."""
    return _run([cluster.kind, "get", "nodes", "--name", cluster.name], timeout=60, what="kind get nodes").split()


# Taints the node controllers put on and take off with a node's conditions (not-ready, unreachable,
# pressure) or until a cloud provider initialises it: a node carrying one now will run pods in seconds.
PASSING_TAINT_PREFIXES = ("node.kubernetes.io/", "node.cloudprovider.kubernetes.io/")


def nodes_that_run_pods(listed: dict[str, Any]) -> list[str]:
    """The nodes of ``kubectl get nodes -o json`` that pods may land on: a copy on the control plane is unused disk.

    Only lasting taints exclude a node. A new node is Ready a few seconds before the node controller lifts
    its not-ready taint; skipping it then left the images off a node that ran the vector store a moment later.
    """
    return [
        node["metadata"]["name"]
        for node in listed["items"]
        if not any(
            taint.get("effect") in {"NoSchedule", "NoExecute"}
            and not str(taint.get("key", "")).startswith(PASSING_TAINT_PREFIXES)
            for taint in node["spec"].get("taints") or []
        )
    ]


def _nodes_that_run_pods(cluster: KindCluster) -> list[str]:
    listed = json.loads(
        _run(cluster.kubectl_command("get", "nodes", "-o", "json"), timeout=60, what="kubectl get nodes")
    )
    return nodes_that_run_pods(listed)


def node_image_tags(node: str) -> list[tuple[str, list[str]]]:
    """(image ID, its tags) for every image in the node's containerd."""
    listed = json.loads(_crictl(node, "images", "-o", "json"))
    return [(image["id"], list(image.get("repoTags") or [])) for image in listed.get("images") or []]


def canonical_reference(image: str) -> str:
    """`image` as containerd names it: `swell-worker:1` is docker.io/library/swell-worker:1."""
    first, _, rest = image.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return image
    return f"docker.io/{image}" if rest else f"docker.io/library/{image}"


def _crictl(node: str, *args: str) -> str:
    return _run(["docker", "exec", node, "crictl", *args], timeout=120, what=f"crictl {args[0]} on {node}")


def _remove_replaced_images(node: str, loaded: Sequence[str]) -> None:
    """Removes the node's images whose every tag is in a repository of `loaded` but is not one of them.

    An image a container uses (running or not) is kept, and so is one also tagged in another repository.
    """
    wanted = {canonical_reference(image) for image in loaded}
    repositories = {reference.rpartition(":")[0] for reference in wanted}
    containers = json.loads(_crictl(node, "ps", "-a", "-o", "json")).get("containers") or []
    in_use = {container.get("imageRef", "") for container in containers}
    in_use |= {(container.get("image") or {}).get("image", "") for container in containers}
    replaced = [
        image_id
        for image_id, tags in node_image_tags(node)
        if tags
        and image_id not in in_use
        and not in_use.intersection(tags)
        and not wanted.intersection(tags)
        and all(tag.rpartition(":")[0] in repositories for tag in tags)
    ]
    if replaced:
        # Freeing space must not fail the load that asked for it: a refusal is logged and left.
        removed = subprocess.run(
            ["docker", "exec", node, "crictl", "rmi", *replaced], capture_output=True, text=True, check=False
        )
        log.info("%s: removed %d replaced images (%s)", node, len(replaced), removed.stderr.strip() or "ok")


def delete_kind_cluster(name: str = "swell") -> None:
    """Deletes the cluster's nodes and its kubeconfig; nothing happens when it does not exist."""
    kind = Path(_key_values(_run([BUILD, "tools"], timeout=1800, what="kind build"))["KIND"])
    with _cluster_lock(name):
        _delete(kind, name)


def _delete(kind: Path, name: str) -> None:
    kubeconfig = _kubeconfig_path(name)
    _run(
        [kind, "delete", "cluster", "--name", name, "--kubeconfig", kubeconfig],
        timeout=300,
        what=f"kind delete cluster {name}",
    )
    kubeconfig.unlink(missing_ok=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.tooling.kind.cluster", description=__doc__)
    parser.add_argument("--name", default="swell")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("up", help="create or reuse the cluster; print its KUBECONFIG path")
    commands.add_parser("down", help="delete the cluster")
    load = commands.add_parser("load", help="load local Docker images into the cluster")
    load.add_argument("images", nargs="+")
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        if arguments.command == "down":
            delete_kind_cluster(arguments.name)
            return 0
        cluster = ensure_kind_cluster(arguments.name, arguments.config)
        if arguments.command == "load":
            load_images(cluster, arguments.images)
        print(cluster.kubeconfig)
    except KindUnavailable as error:
        print(f"kind unavailable: {error.reason}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
