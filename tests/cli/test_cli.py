"""The `swell` command as a user meets it: one-line errors, --version, -o yaml, --watch, the operator's flags."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures.ports import free_port


def swell(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "swell_cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def assert_one_line_error(done: subprocess.CompletedProcess[str], *words: str) -> None:
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("swell: "), done.stderr
    for word in words:
        assert word in lines[0], lines[0]


def test_an_unreachable_redis_is_one_line_and_exit_1() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    for command in (("submit", "noop", "{}"), ("task", "some-id"), ("call", "noop", "{}", "--timeout", "1")):
        done = swell(*command, "--redis-url", url, "--queue", "q")
        assert_one_line_error(done, "cannot reach Redis", "--redis-url")
        assert url not in done.stderr or "password" not in done.stderr


def test_a_wrong_redis_password_is_one_line(own_redis: Any) -> None:
    own_redis.client().config_set("requirepass", "right-secret")
    url = own_redis.url.replace("redis://", "redis://default:wrong@")
    done = swell("submit", "noop", "{}", "--redis-url", url, "--queue", "q")
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "wrong" not in done.stderr, "the password leaked into the error"


def test_submit_then_task_round_trip_through_a_real_redis(redis_url: str) -> None:
    submitted = swell("submit", "noop", '{"x": 1}', "--redis-url", redis_url, "--queue", "cli-q")
    assert submitted.returncode == 0, submitted.stderr
    task_id = submitted.stdout.strip()
    shown = swell("task", task_id, "--redis-url", redis_url, "--queue", "cli-q")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["state"] == "queued"


def test_a_missing_or_broken_kubeconfig_is_one_line(tmp_path: Path) -> None:
    missing = swell("status", "--kubeconfig", str(tmp_path / "nope"))
    assert_one_line_error(missing, "kubeconfig")
    broken = tmp_path / "broken"
    broken.write_text("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\n")
    assert_one_line_error(swell("status", "--kubeconfig", str(broken)), "kubeconfig")


def test_an_unreachable_api_server_is_one_line(tmp_path: Path) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "c",
        "clusters": [
            {"name": "c", "cluster": {"server": f"https://127.0.0.1:{free_port()}", "insecure-skip-tls-verify": True}}
        ],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u", "namespace": "default"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    assert_one_line_error(swell("status", "--kubeconfig", str(path), timeout=120), "API server")


def test_version_and_the_operator_flags_are_shown() -> None:
    version = swell("--version")
    assert version.returncode == 0 and version.stdout.startswith("swell 0."), version
    operator_help = swell("operator", "run", "--help")
    assert operator_help.returncode == 0, operator_help.stderr
    assert "--metrics-port" in operator_help.stdout and "--activator-port" in operator_help.stdout


@pytest.mark.cluster
def test_status_as_yaml_and_watch_against_the_api_server(cluster: Any, namespace: str, workerpool_crd: str) -> None:
    pool = {
        "apiVersion": "swell.dev/v1alpha1",
        "kind": "WorkerPool",
        "metadata": {"name": "shown"},
        "spec": {
            "queue": {
                "backend": "redis-list",
                "redis": {"urlSecretRef": {"name": "r", "key": "url"}},
                "list": {"keys": ["q"]},
            },
            "worker": {"handlers": ["noop"]},
        },
    }
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(pool))
    shown = swell("status", "-n", namespace, "-o", "yaml", "--kubeconfig", str(cluster.kubeconfig))
    assert shown.returncode == 0, shown.stderr
    (listed,) = list(yaml.safe_load_all(shown.stdout))
    assert listed["metadata"]["name"] == "shown" and listed["spec"]["queue"]["backend"] == "redis-list"
    watcher = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "swell_cli",
            "status",
            "-n",
            namespace,
            "--watch",
            "--interval",
            "0.5",
            "--kubeconfig",
            str(cluster.kubeconfig),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(6)
    finally:
        watcher.terminate()
        out, _ = watcher.communicate(timeout=20)
    assert out.count("--- ") >= 2 and out.count("shown") >= 2, out


def test_cli_and_sdk_share_one_default_backend(redis_url: str) -> None:
    """`swell submit` and `SwellClient.for_redis` without a backend both write a Redis stream."""
    import redis
    from swell_worker.client import DEFAULT_BACKEND, SyncSwellClient

    assert DEFAULT_BACKEND == "redis-streams"
    env = {k: v for k, v in os.environ.items() if k != "SWELL_BACKEND"}
    done = subprocess.run(
        [sys.executable, "-m", "swell_cli", "submit", "noop", "{}", "--redis-url", redis_url, "--queue", "from-cli"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    with SyncSwellClient.for_redis(redis_url, "from-sdk") as client:
        client.submit("noop", {})
    plain = redis.Redis.from_url(redis_url)
    assert plain.type("from-cli") == plain.type("from-sdk") == b"stream"


async def test_sync_client_works_inside_a_running_event_loop(redis_url: str) -> None:
    """As in Jupyter, whose cell runs while its event loop does."""
    from swell_worker.client import SyncSwellClient

    asyncio.get_running_loop()  # there is one
    with SyncSwellClient.for_redis(redis_url, "notebook") as client:
        task_id = client.submit("noop", {"x": 1})
        assert client.status(task_id).state == "queued"


def test_the_client_extra_is_light() -> None:
    """A producer imports the SDK without the model, the vector store or the operator."""
    import tomllib

    heavy = ("onnxruntime", "numpy", "pymilvus", "milvus_lite", "kopf", "kubernetes_asyncio", "torch", "tokenizers")
    probe = f"import sys, swell_worker.client; print(','.join(m for m in {heavy!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "", done.stdout + done.stderr
    project = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    client = " ".join(extras["client"])
    assert "google-auth" in client and "google-cloud-pubsub" in client
    assert not any(name in client for name in ("onnxruntime", "pymilvus", "milvus-lite", "kopf", "numpy"))
    for extra in ("operator", "worker"):  # both import google.auth themselves
        assert any(d.startswith("google-auth") for d in extras[extra]), extra
