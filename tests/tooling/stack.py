"""Swell as a user runs it on kind: images built from the Dockerfile, the chart, Redis and a shared vector store.

One function brings the whole stack up and is shared by ``make demo``, the e2e tier and the cold-start
benchmark, so all three run exactly what the README tells a user to run. Each step is idempotent and fast
when warm: images are skipped when their content did not change, a healthy cluster is reused, images
already on the nodes are not loaded again, and ``helm upgrade --install`` / ``kubectl apply`` converge.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.tooling.controlplane.cluster import binaries
from tests.tooling.kind.cluster import KindCluster, KindUnavailable, ensure_kind_cluster, load_images

ROOT = Path(__file__).resolve().parents[2]
RELEASE_NAMESPACE = "swell-system"
VECTOR_PORT = 19530


def _run(command: list[str], *, timeout: float, what: str, input: str | None = None) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, input=input, cwd=ROOT)
    except subprocess.TimeoutExpired as exc:
        raise KindUnavailable(f"{what} took longer than {timeout:.0f}s") from exc
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-15:]
        raise KindUnavailable(f"{what} failed ({done.returncode}): " + "\n".join(tail))
    return done.stdout


@dataclass(frozen=True)
class Images:
    worker: str
    operator: str
    vector_store: str
    redis: str


def ensure_docker() -> None:
    """A working Docker engine (started here when none runs), or KindUnavailable with the reason."""
    _run([str(ROOT / "scripts" / "docker-up.sh")], timeout=600, what="scripts/docker-up.sh")


def _content_tag(ref: str) -> str:
    """``ref`` tagged again with its image ID, so a rebuilt image rolls the pods that run the old one."""
    image_id = _run(["docker", "image", "inspect", "-f", "{{.Id}}", ref], timeout=60, what=f"inspect {ref}").strip()
    repository, tag = _repository_and_tag(ref)
    unique = f"{repository}:{tag}-{image_id.removeprefix('sha256:')[:12]}"
    _run(["docker", "tag", ref, unique], timeout=60, what=f"docker tag {unique}")
    _untag_older_builds(repository, tag, keep=unique)
    return unique


def _untag_older_builds(repository: str, tag: str, *, keep: str) -> None:
    """Removes the content tags of `repository`'s earlier builds, so their images can leave the disk.

    `docker rmi` without --force keeps an image that a container still uses.
    """
    listed = _run(
        ["docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}", repository],
        timeout=60,
        what=f"docker image ls {repository}",
    )
    content_tag = re.compile(rf"{re.escape(repository)}:{re.escape(tag)}-[0-9a-f]{{12}}")
    older = [ref for ref in listed.split() if ref != keep and content_tag.fullmatch(ref)]
    if older:
        subprocess.run(["docker", "rmi", *older], capture_output=True, timeout=300, check=False)


def build_images() -> Images:
    """The worker, operator and vector-store images from the Dockerfile, and Redis; skipped when nothing changed.

    Each is returned under a tag that names its content: a fixed tag would leave running pods (and
    crash-looping ones) on the image they started with after a rebuild is loaded.
    """
    built = _run([str(ROOT / "scripts" / "images" / "build.sh")], timeout=3600, what="scripts/images/build.sh")
    refs = [line.strip() for line in built.splitlines() if ":" in line and " " not in line.strip()]
    named = {ref.rsplit("/", 1)[-1].rsplit(":", 1)[0]: ref for ref in refs}
    missing = {"swell-worker", "swell-operator", "swell-vector-store"} - set(named)
    if missing:
        raise KindUnavailable(f"scripts/images/build.sh printed no {sorted(missing)} image: {built!r}")
    redis = _run([str(ROOT / "scripts" / "images" / "redis.sh")], timeout=900, what="scripts/images/redis.sh")
    return Images(
        worker=_content_tag(named["swell-worker"]),
        operator=_content_tag(named["swell-operator"]),
        vector_store=_content_tag(named["swell-vector-store"]),
        redis=_content_tag(redis.strip().splitlines()[-1]),
    )


def _repository_and_tag(ref: str) -> tuple[str, str]:
    repository, _, tag = ref.rpartition(":")
    return repository, tag


@dataclass
class KindStack:
    """A kind cluster running the Swell chart, with Redis and the vector store in ``namespace``."""

    cluster: KindCluster
    images: Images
    namespace: str
    helm: Path

    @property
    def kubeconfig(self) -> Path:
        return self.cluster.kubeconfig

    @property
    def redis_url_in_cluster(self) -> str:
        return f"redis://redis.{self.namespace}.svc:6379/0"

    @property
    def vector_uri_in_cluster(self) -> str:
        """The chart's default store: one per cluster, in the release namespace, shared by every pool."""
        return f"http://swell-vectors.{RELEASE_NAMESPACE}.svc:{VECTOR_PORT}"

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(self.cluster.kubectl), "--kubeconfig", str(self.kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
        return done

    def wait_rolled_out(self, deployment: str, namespace: str, *, timeout: float = 300) -> None:
        """Waits for ``deployment``'s rollout; when it does not finish, says why (pods, claims, events, logs)."""
        done = self.kubectl(
            "rollout",
            "status",
            f"deployment/{deployment}",
            "-n",
            namespace,
            f"--timeout={timeout:.0f}s",
            check=False,
            timeout=timeout + 20,
        )
        if done.returncode == 0:
            return
        selector = ",".join(
            f"{key}={value}"
            for key, value in self.json(f"deployment/{deployment}", namespace=namespace)["spec"]["selector"][
                "matchLabels"
            ].items()
        )
        report = [f"deployment/{deployment} in {namespace} did not roll out in {timeout:.0f}s: {done.stderr.strip()}"]
        for args in (
            ("get", "pods", "-o", "wide", "-l", selector),
            ("get", "pvc"),
            ("describe", "pods", "-l", selector),
            ("get", "events", "--sort-by=.lastTimestamp"),
            ("logs", "-l", selector, "--all-containers", "--tail=40", "--previous"),
            ("logs", "-l", selector, "--all-containers", "--tail=40"),
        ):
            shown = self.kubectl(*args, "-n", namespace, check=False, timeout=60)
            report.append(f"$ kubectl {' '.join(args)}\n{(shown.stdout + shown.stderr).strip()[-4000:]}")
        raise AssertionError("\n".join(report))

    def apply(self, manifest: dict[str, Any] | list[dict[str, Any]], namespace: str | None = None) -> None:
        documents = manifest if isinstance(manifest, list) else [manifest]
        self.kubectl("apply", "-n", namespace or self.namespace, "-f", "-", input=yaml.safe_dump_all(documents))

    def json(self, *args: str, namespace: str | None = None) -> dict[str, Any]:
        found: dict[str, Any] = json.loads(
            self.kubectl("get", *args, "-n", namespace or self.namespace, "-o", "json").stdout
        )
        return found

    @contextlib.contextmanager
    def port_forward(self, service: str, port: int, namespace: str | None = None) -> Iterator[int]:
        """``kubectl port-forward`` to a Service on a free loopback port, for as long as the block runs."""
        process = subprocess.Popen(
            [
                str(self.cluster.kubectl),
                "--kubeconfig",
                str(self.kubeconfig),
                "port-forward",
                "-n",
                namespace or self.namespace,
                "--address",
                "127.0.0.1",
                f"svc/{service}",
                f":{port}",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            found = re.search(r"127\.0\.0\.1:(\d+)", line)
            if not found:
                raise AssertionError(f"kubectl port-forward to {service} did not start: {line}{process.stdout.read()}")
            yield int(found.group(1))
        finally:
            process.terminate()
            process.wait(timeout=10)


def example_manifests(name: str, namespace: str, image: str) -> list[dict[str, Any]]:
    """A file of examples/kind in ``namespace``, its one container image set to what this run built."""
    documents: list[dict[str, Any]] = []
    for document in yaml.safe_load_all((ROOT / "examples" / "kind" / name).read_text()):
        for container in document.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
            container["image"] = image
        document["metadata"]["namespace"] = namespace
        documents.append(document)
    return documents


def install_chart(stack: KindStack, *, extra: tuple[str, ...] = ()) -> None:
    """``helm upgrade --install`` of charts/swell with the images built here; waits for the operator."""
    operator_repo, operator_tag = _repository_and_tag(stack.images.operator)
    worker_repo, worker_tag = _repository_and_tag(stack.images.worker)
    _run(
        [
            str(stack.helm),
            "upgrade",
            "--install",
            "swell",
            str(ROOT / "charts" / "swell"),
            "--namespace",
            RELEASE_NAMESPACE,
            "--create-namespace",
            "--kubeconfig",
            str(stack.kubeconfig),
            "--set",
            f"image.repository={operator_repo}",
            "--set",
            f"image.tag={operator_tag}",
            "--set",
            f"worker.image.repository={worker_repo}",
            "--set",
            f"worker.image.tag={worker_tag}",
            "--set",
            f"vectorStore.defaultUri={stack.vector_uri_in_cluster}",
            "--set",
            "replicaCount=1",
            # A cluster kept from before the CRD became a chart template has it unowned (docs/upgrade.md).
            "--take-ownership",
            "--server-side=true",
            "--force-conflicts",
            "--wait",
            "--timeout",
            "5m",
            *extra,
        ],
        timeout=400,
        what="helm upgrade --install swell",
    )


def bring_up(namespace: str, *, cluster_name: str = "swell", log: Any = print) -> KindStack:
    """Docker, images, the kind cluster, the chart, Redis and the vector store; each step reused when warm."""
    began = time.monotonic()
    ensure_docker()
    log(f"docker engine ready ({time.monotonic() - began:.0f}s)")
    images = build_images()
    log(f"images {images} ready ({time.monotonic() - began:.0f}s)")
    cluster = ensure_kind_cluster(cluster_name, ROOT / "kind-config.yaml")
    log(f"kind cluster {cluster.name} ready ({time.monotonic() - began:.0f}s)")
    load_images(cluster, [images.worker, images.operator, images.vector_store, images.redis])
    log(f"images loaded on the nodes ({time.monotonic() - began:.0f}s)")
    stack = KindStack(cluster=cluster, images=images, namespace=namespace, helm=binaries()["helm"])
    for name in (namespace, RELEASE_NAMESPACE):
        stack.kubectl("create", "namespace", name, check=False)
    stack.apply(example_manifests("redis.yaml", namespace, images.redis))
    # The Secret pools name (urlSecretRef {name: redis, key: url}), beside the Redis it points at.
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "redis", "namespace": namespace},
        "type": "Opaque",
        "stringData": {"url": stack.redis_url_in_cluster},
    }
    stack.apply(secret)
    stack.apply(example_manifests("vector-store.yaml", RELEASE_NAMESPACE, images.vector_store), RELEASE_NAMESPACE)
    install_chart(stack)
    for deployment, where in (("redis", namespace), ("swell-vectors", RELEASE_NAMESPACE)):
        stack.wait_rolled_out(deployment, where)
    log(f"chart, Redis and vector store ready ({time.monotonic() - began:.0f}s)")
    return stack
