"""The images users run, built by scripts/images/build.sh and started with the real Docker engine.

The worker embeds with the int8 model as uid 65532 on a read-only root filesystem without a network,
and has no torch; the operator starts the same way; neither carries the build host's pip configuration
or CA certificates. A machine where Docker cannot run fails these tests with the reason (never a skip:
a skipped image test proves nothing).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "scripts" / "images" / "build.sh"
MB = 1000 * 1000  # `docker images` counts sizes in decimal megabytes
WORKER_MAX_BYTES = 600 * MB
OPERATOR_MAX_BYTES = 200 * MB
HARDENED = ("--rm", "--user", "65532:65532", "--read-only", "--tmpfs", "/tmp", "--network", "none")
TEXT = "Autoscaling adds replicas under load."

pytestmark = pytest.mark.timeout(3600)  # a cold build downloads and installs every dependency


def docker(*args: str, timeout: float = 300, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["docker", *args], capture_output=True, timeout=timeout, input=stdin, check=False)


def must(result: subprocess.CompletedProcess[bytes]) -> str:
    assert result.returncode == 0, f"{result.args!r} failed ({result.returncode}):\n{result.stderr.decode()[-4000:]}"
    return result.stdout.decode()


def image_id(ref: str) -> str:
    return must(docker("image", "inspect", "-f", "{{.Id}}", ref)).strip()


def build() -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BUILD)], capture_output=True, text=True, timeout=3000, cwd=ROOT, check=False)


@pytest.fixture(scope="module")
def images() -> Iterator[dict[str, str]]:
    """The refs build.sh printed, by target; fails (never skips) when Docker cannot run here."""
    if shutil.which("docker") is None:
        pytest.fail("the docker client is not installed; these tests need a Docker engine", pytrace=False)
    engine = docker("version", "--format", "{{.Server.Version}}", timeout=30)
    if engine.returncode != 0:
        pytest.fail(f"the Docker engine cannot be reached: {engine.stderr.decode().strip()}", pytrace=False)
    built = build()
    assert built.returncode == 0, f"build.sh failed:\n{built.stderr[-4000:]}"
    refs = built.stdout.split()
    yield {ref.split(":")[0].removeprefix("swell-"): ref for ref in refs}


def chart_app_version() -> str:
    chart = (ROOT / "charts" / "swell" / "Chart.yaml").read_text()
    found = re.search(r'^appVersion:\s*"?([^"\n]+)"?', chart, re.MULTILINE)
    assert found is not None
    return found.group(1).strip()


def test_build_script_tags_both_images_with_the_chart_version_and_skips_an_unchanged_rebuild(
    images: dict[str, str],
) -> None:
    version = chart_app_version()
    assert images == {
        "operator": f"swell-operator:{version}",
        "worker": f"swell-worker:{version}",
        "vector-store": f"swell-vector-store:{version}",
    }
    before = {ref: image_id(ref) for ref in images.values()}
    again = build()
    assert again.returncode == 0, again.stderr
    assert again.stdout.split() == list(images.values())
    assert again.stderr.count("is up to date") == 3, again.stderr
    after = {ref: image_id(ref) for ref in images.values()}
    assert after == before
    for ref in images.values():
        labels = json.loads(must(docker("image", "inspect", "-f", "{{json .Config.Labels}}", ref)))
        assert re.fullmatch(r"[0-9a-f]{64}", labels["dev.swell.content-hash"])


def test_a_rebuild_removes_the_image_and_build_stage_it_replaces(images: dict[str, str]) -> None:
    """Each rebuild used to leave its predecessor's image and venv stage untagged on disk (about 1 GB per
    rebuild of all targets), until a day of work filled the disk of the machine the suite ran on."""
    ref, stage = images["operator"], "swell-build-stage:operator"
    old_image, old_stage = image_id(ref), image_id(stage)
    old_image_tags = json.loads(must(docker("image", "inspect", "-f", "{{json .RepoTags}}", old_image)))
    probe = ROOT / "contract" / "rebuild-probe.txt"
    try:
        probe.write_text("a source change, so that the operator image is built again\n")
        rebuilt = subprocess.run([str(BUILD), "operator"], capture_output=True, text=True, timeout=3000, cwd=ROOT)
        assert rebuilt.returncode == 0, rebuilt.stderr[-4000:]
        assert rebuilt.stdout.split() == [ref]
        assert image_id(ref) != old_image and image_id(stage) != old_stage
        assert docker("image", "inspect", old_stage).returncode != 0, "the replaced build stage is still on disk"
        kept = docker("image", "inspect", old_image).returncode == 0
        # Another tag (a content tag made by tests/tooling/stack.py) keeps the old image; nothing else may.
        assert kept == (old_image_tags != [ref]), f"old image kept={kept} with tags {old_image_tags}"
    finally:
        probe.unlink(missing_ok=True)
        restored = subprocess.run([str(BUILD), "operator"], capture_output=True, text=True, timeout=3000, cwd=ROOT)
        assert restored.returncode == 0, restored.stderr[-4000:]


def test_images_fit_their_size_budgets(images: dict[str, str]) -> None:
    sizes = {target: int(must(docker("image", "inspect", "-f", "{{.Size}}", ref))) for target, ref in images.items()}
    assert sizes["worker"] <= WORKER_MAX_BYTES, f"worker image is {sizes['worker'] / MB:.0f} MB"
    assert sizes["operator"] <= OPERATOR_MAX_BYTES, f"operator image is {sizes['operator'] / MB:.0f} MB"


def test_images_run_as_uid_65532(images: dict[str, str]) -> None:
    for ref in images.values():
        assert must(docker("image", "inspect", "-f", "{{.Config.User}}", ref)).strip() == "65532:65532"


WORKER_PROBE = f"""
import importlib.util, json, os, time
started = time.perf_counter()
from swell_worker.embedder import OnnxInt8Embedder
embedder = OnnxInt8Embedder()
loaded = time.perf_counter() - started
vectors = embedder.embed([{TEXT!r}])
print(json.dumps({{
    "uid": os.getuid(), "model": embedder.model_id, "shape": list(vectors.shape),
    "vector": vectors[0].tolist(), "load_seconds": loaded,
    "torch": importlib.util.find_spec("torch") is not None,
    "sentence_transformers": importlib.util.find_spec("sentence_transformers") is not None,
    "hf_offline": os.environ.get("HF_HUB_OFFLINE"),
}}))
"""


def test_worker_embeds_with_the_int8_model_read_only_offline_and_without_torch(images: dict[str, str]) -> None:
    out = must(docker("run", *HARDENED, "--entrypoint", "python", images["worker"], "-c", WORKER_PROBE))
    probe = json.loads(out.strip().splitlines()[-1])
    assert probe["uid"] == 65532
    assert probe["model"] == "all-MiniLM-L6-v2-onnx-int8"
    assert probe["shape"] == [1, 384]
    assert not probe["torch"] and not probe["sentence_transformers"]
    assert probe["hf_offline"] == "1"
    vector = np.asarray(probe["vector"], dtype=np.float32)
    assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-3
    # The same model as the host's packages: the vectors agree.
    from swell_worker.embedder import OnnxInt8Embedder

    host = OnnxInt8Embedder().embed([TEXT])[0]
    assert float(np.dot(host, vector)) > 0.999


async def test_worker_container_serves_embed_tasks_from_a_loopback_redis(
    images: dict[str, str], redis_url: str
) -> None:
    """The image's own entrypoint, hardened as the operator runs it, on the host network to reach Redis."""
    from swell_worker.client import SwellClient

    env = {
        "SWELL_BACKEND": "redis-streams",
        "SWELL_REDIS_URL": redis_url,
        "SWELL_QUEUE": "embed",
        "SWELL_HANDLERS": "embed",
        "SWELL_HTTP_PORT": str(free_port()),
        "SWELL_CONSUMER": "image-test",
    }
    flags = [item for key, value in env.items() for item in ("--env", f"{key}={value}")]
    started = must(docker("run", "--detach", *HARDENED[1:-2], "--network", "host", *flags, images["worker"]))
    container = started.strip()
    try:
        async with SwellClient.for_redis(redis_url, "embed", backend="redis-streams") as swell:
            answer = await swell.call("embed", {"texts": [TEXT, "another"]}, timeout=120)
        assert answer["model"] == "all-MiniLM-L6-v2-onnx-int8"
        assert answer["dim"] == 384 and len(answer["vectors"]) == 2
    finally:
        logs = docker("logs", container).stderr.decode()
        docker("rm", "--force", container)
    assert "Traceback" not in logs, logs


def test_worker_without_settings_stops_with_a_clear_error(images: dict[str, str]) -> None:
    result = docker("run", *HARDENED, images["worker"])
    assert result.returncode == 2
    assert b"SWELL_BACKEND is required" in result.stdout + result.stderr


def test_worker_image_refuses_an_embedded_store_and_names_the_fix(images: dict[str, str]) -> None:
    probe = "from swell_worker.vectorstore import VectorStore\nVectorStore('/tmp/v.db', 'docs')"
    result = docker("run", *HARDENED, "--entrypoint", "python", images["worker"], "-c", probe)
    assert result.returncode != 0
    assert b"http://milvus:19530" in result.stderr and b"swell[lite]" in result.stderr


def test_operator_starts_read_only(images: dict[str, str]) -> None:
    out = must(docker("run", *HARDENED, images["operator"], "--help"))
    assert "--worker-image" in out and "--default-vector-uri" in out


PEM = re.compile(rb"-----BEGIN CERTIFICATE-----(.+?)-----END CERTIFICATE-----", re.DOTALL)


def certificates(data: bytes) -> set[bytes]:
    return {b"".join(body.split()) for body in PEM.findall(data)}


def host_certificates() -> set[bytes]:
    """The CA bundle pip uses on the build host ($PIP_CERT), which build.sh hands to the builder stage."""
    bundle = os.environ.get("PIP_CERT") or ""
    return certificates(Path(bundle).read_bytes()) if bundle and Path(bundle).is_file() else set()


def exported_files(ref: str) -> dict[str, bytes]:
    container = must(docker("create", ref)).strip()
    try:
        exported = subprocess.run(["docker", "export", container], capture_output=True, timeout=600, check=True)
    finally:
        docker("rm", container)
    files: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(exported.stdout)) as tar:
        for member in tar:
            handle = tar.extractfile(member) if member.isfile() else None
            if handle is not None:
                files[member.name] = handle.read()
    return files


def test_images_carry_no_pip_configuration_or_certificate_of_the_build_host(images: dict[str, str]) -> None:
    host = host_certificates()
    for ref in images.values():
        files = exported_files(ref)
        assert any(name.startswith("venv/lib/") for name in files)  # the scan sees the venv
        # The distro's own certificates (its ca-certificates package) may be there; no other of the host's.
        distro: set[bytes] = set()
        for name, data in files.items():
            if name.startswith("usr/share/ca-certificates/"):
                distro |= certificates(data)
        host_only = host - distro
        for name, data in files.items():
            assert not name.startswith("build-host/"), f"{ref} has {name}"
            assert Path(name).name != "pip.conf", f"{ref} has {name}"
            if b"BEGIN CERTIFICATE" in data:
                leaked = certificates(data) & host_only
                assert not leaked, f"{ref}: {name} holds {len(leaked)} CA certificate(s) of the build host"
