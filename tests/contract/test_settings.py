"""The worker settings model: what the operator renders, the worker parses back to the same settings.

The operator path goes from a WorkerPool spec through the rendered Deployment, resolving its
``secretKeyRef`` and ``fieldRef`` entries the way the kubelet would, into ``WorkerSettings.from_env``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from swell_contract import envdoc
from swell_contract.settings import FROM_SECRETS, ConfigError, WorkerSettings
from swell_operator.deployment import PoolDefaults, render_deployment
from swell_operator.model import WorkerPoolSpec

POD = "pool-7d9f8-x2x4q"
SECRETS = {
    ("redis", "url"): "redis://:hunter2@redis.data:6379/0",
    ("redis", "password"): "s3cret-password",
    ("push", "token"): "push-token-value",
}


def kubelet_env(manifest: dict[str, Any]) -> dict[str, str]:
    """The container's environment as the kubelet resolves it (fieldRef to the pod name, Secrets read)."""
    resolved: dict[str, str] = {}
    for item in manifest["spec"]["template"]["spec"]["containers"][0]["env"]:
        source = item.get("valueFrom")
        if source is None:
            resolved[item["name"]] = item["value"]
        elif "fieldRef" in source:
            assert source["fieldRef"] == {"fieldPath": "metadata.name"}
            resolved[item["name"]] = POD
        else:
            ref = source["secretKeyRef"]
            resolved[item["name"]] = SECRETS[(ref["name"], ref["key"])]
    return resolved


REDIS = {"urlSecretRef": {"name": "redis", "key": "url"}, "passwordSecretRef": {"name": "redis", "key": "password"}}
WORKER = {
    "handlers": ["embed", "noop"],
    "maxAttempts": 7,
    "taskTimeoutSeconds": 12.5,
    "terminationGracePeriodSeconds": 40,
}

POOLS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "redis-list": (
        {"backend": "redis-list", "redis": REDIS, "list": {"keys": ["urgent", "tasks"]}},
        {"queues": ("urgent", "tasks")},
    ),
    "redis-streams": (
        {"backend": "redis-streams", "redis": REDIS, "streams": {"streams": ["jobs"], "group": "g1"}},
        {"queues": ("jobs",), "group": "g1"},
    ),
    "pubsub-pull": (
        {"backend": "pubsub", "pubsub": {"project": "p", "subscription": "s", "topic": "t", "deadLetterTopic": "d"}},
        {
            "pubsub_project": "p",
            "pubsub_subscription": "s",
            "pubsub_topic": "t",
            "pubsub_dead_letter_topic": "d",
            "pubsub_mode": "pull",
        },
    ),
    "pubsub-push": (
        {
            "backend": "pubsub",
            "pubsub": {
                "project": "p",
                "subscription": "s",
                "mode": "push",
                "pushTokenSecretRef": {"name": "push", "key": "token"},
                "pushAudience": "https://push.example",
                "pushServiceAccount": "pusher@p.iam.gserviceaccount.com",
            },
        },
        {
            "pubsub_project": "p",
            "pubsub_subscription": "s",
            "pubsub_mode": "push",
            "pubsub_dead_letter_topic": "s-dead-letter",  # the topic the operator gives the subscription
            "push_token": "push-token-value",
            "push_audience": "https://push.example",
            "push_service_account": "pusher@p.iam.gserviceaccount.com",
        },
    ),
}


@pytest.mark.parametrize("pool", sorted(POOLS))
def test_the_operator_renders_what_the_worker_parses_back(pool: str) -> None:
    queue, expected_queue = POOLS[pool]
    spec = WorkerPoolSpec.model_validate({"queue": queue, "concurrency": 6, "worker": WORKER})
    manifest = render_deployment("pool", spec, 0, PoolDefaults(vector_uri="http://milvus:19530"))

    parsed = WorkerSettings.from_env(kubelet_env(manifest))

    for item in manifest["spec"]["template"]["spec"]["containers"][0]["env"]:
        if item["name"] in {WorkerSettings.env_name(field) for field in FROM_SECRETS}:
            assert "value" not in item and "secretKeyRef" in item["valueFrom"], item

    redis = {}
    if queue["backend"] != "pubsub":
        redis = {"redis_url": SECRETS[("redis", "url")], "redis_password": SECRETS[("redis", "password")]}
    expected = WorkerSettings(
        backend=queue["backend"],
        consumer=POD,
        concurrency=6,
        handlers=("embed", "noop"),
        max_attempts=7,
        task_timeout_seconds=12.5,
        drain_seconds=35,
        http_port=8080,
        vector_uri="http://milvus:19530",
        **redis,
        **expected_queue,
    )
    assert parsed == expected
    assert "hunter2" not in repr(parsed) and "s3cret" not in repr(parsed) and "push-token" not in str(parsed)


EVERY_FIELD = {
    "redis_url": "redis://:pw@h:1/2",
    "redis_password": "pw2",
    "queues": ("a", "b"),
    "group": "grp",
    "consumer": "c-1",
    "concurrency": 9,
    "handlers": ("x", "y"),
    "max_attempts": 2,
    "task_timeout_seconds": 0.25,
    "max_payload_bytes": 10,
    "http_host": "127.0.0.1",
    "http_port": 9999,
    "drain_seconds": 0.0,
    "retry_base_seconds": 0.5,
    "retry_cap_seconds": 0.5,
    "consumer_timeout_seconds": 3.0,
    "result_ttl_seconds": 5,
    "failure_ttl_seconds": 6,
    "extra_in_flight": (("hash", "unacked"), ("zset", "rq:wip:q"), ("list", "l")),
    "pubsub_project": "proj",
    "pubsub_subscription": "sub",
    "pubsub_topic": "top",
    "pubsub_mode": "push",
    "pubsub_dead_letter_topic": "dead",
    "push_token": "tok",
    "push_audience": "aud",
    "push_service_account": "sa@x",
    "oidc_certs_url": "http://127.0.0.1:1/certs",
    "oidc_timeout_seconds": 1.5,
    "result_redis_url": "redis://r:1/0",
    "embedder": "sentence-transformers",
    "vector_uri": "/v.db",
    "vector_collection": "docs",
    "model_threads": 3,
    "log_level": "DEBUG",
}


@pytest.mark.parametrize("backend", ["redis-list", "redis-streams", "pubsub"])
def test_every_field_survives_rendering_and_parsing(backend: str) -> None:
    settings = WorkerSettings(backend=backend, **EVERY_FIELD)
    assert set(WorkerSettings.model_fields) == {"backend", *EVERY_FIELD}, "a new field needs a value here"
    every = settings.to_env(only_set=False)
    assert len(every) == len(WorkerSettings.model_fields)
    assert WorkerSettings.from_env(every) == settings
    assert WorkerSettings.from_env(settings.to_env()) == settings


def test_only_the_fields_given_are_rendered_and_defaults_come_back() -> None:
    settings = WorkerSettings(backend="redis-list", redis_url="redis://h", queues=("q",), consumer="c")
    assert settings.to_env() == {
        "SWELL_BACKEND": "redis-list",
        "SWELL_REDIS_URL": "redis://h",
        "SWELL_QUEUE": "q",
        "SWELL_CONSUMER": "c",
    }
    assert WorkerSettings.from_env(settings.to_env()) == settings


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "SWELL_BACKEND is required"),
        (
            {"SWELL_BACKEND": "kafka"},
            "SWELL_BACKEND must be one of 'redis-list', 'redis-streams' or 'pubsub'; got 'kafka'",
        ),
        ({"SWELL_CONCURRENCY": "four"}, "SWELL_CONCURRENCY must be an integer; got 'four'"),
        ({"SWELL_TASK_TIMEOUT_SECONDS": "soon"}, "SWELL_TASK_TIMEOUT_SECONDS must be a number; got 'soon'"),
        ({"SWELL_MAX_ATTEMPTS": "0"}, "SWELL_MAX_ATTEMPTS must be greater than 0; got 0"),
        ({"SWELL_EXTRA_IN_FLIGHT": "set:k"}, "SWELL_EXTRA_IN_FLIGHT entries are list:KEY, zset:KEY or hash:KEY"),
        ({"SWELL_QUEUE": "a,a"}, "SWELL_QUEUE lists a queue twice"),
        ({"SWELL_QUEUE": " , "}, "SWELL_QUEUE is required for SWELL_BACKEND=redis-list"),
        ({"SWELL_RETRY_CAP_SECONDS": "0.1"}, "SWELL_RETRY_CAP_SECONDS (0.1) must be at least SWELL_RETRY_BASE_SECONDS"),
        ({"SWELL_REDIS_URL": "http://:hunter2@h"}, "redis://, rediss:// or unix://; got 'http://:***@h'"),
        (
            {"SWELL_REDIS_PASSWORD": "hunter2", "SWELL_HTTP_PORT": "70000"},
            "SWELL_HTTP_PORT must be between 1 and 65535",
        ),
    ],
)
def test_a_bad_variable_is_named_and_no_secret_is_repeated(env: dict[str, str], message: str) -> None:
    base = {"SWELL_BACKEND": "redis-list", "SWELL_REDIS_URL": "redis://:hunter2@h", "SWELL_QUEUE": "q"} if env else {}
    with pytest.raises(ConfigError) as raised:
        WorkerSettings.from_env({**base, **env})
    assert message in str(raised.value)
    assert "hunter2" not in str(raised.value)


def test_a_secret_that_fails_to_parse_is_not_echoed() -> None:
    with pytest.raises(ConfigError) as raised:
        WorkerSettings(backend="redis-list", redis_url="redis://h", queues=("q",), redis_password=["hunter2"])
    assert "SWELL_REDIS_PASSWORD" in str(raised.value) and "hunter2" not in str(raised.value)


def test_the_docs_table_is_generated_from_the_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert envdoc.main(["--check"]) == 0, capsys.readouterr().err
    page = (envdoc.ROOT / envdoc.PAGE).read_text()
    for field in WorkerSettings.model_fields.values():
        assert f"| `{field.alias}` |" in page


def test_check_fails_on_a_stale_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    page = tmp_path / envdoc.PAGE
    page.parent.mkdir(parents=True)
    page.write_text((envdoc.ROOT / envdoc.PAGE).read_text().replace("| `SWELL_LOG_LEVEL` |", "| `SWELL_LOGLEVEL` |"))
    assert envdoc.main(["--check", "--root", str(tmp_path)]) == 1
    assert "SWELL_LOGLEVEL" in capsys.readouterr().err
    assert envdoc.main(["--root", str(tmp_path)]) == 0
    assert envdoc.main(["--check", "--root", str(tmp_path)]) == 0
