"""The Deployment, deletion costs and conditions are pure functions of the spec: checked without a cluster."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError
from swell_operator.deletion_cost import deletion_costs
from swell_operator.deployment import POOL_LABEL, deep_merge, render_deployment, render_push_service
from swell_operator.model import OPERATOR_RENDERED_ENV, WorkerPoolSpec
from swell_operator.status import Health, conditions


def pool_spec(**overrides: Any) -> WorkerPoolSpec:
    raw: dict[str, Any] = {
        "queue": {
            "backend": "redis-streams",
            "redis": {
                "urlSecretRef": {"name": "redis", "key": "url"},
                "passwordSecretRef": {"name": "redis", "key": "password"},
            },
            "streams": {"streams": ["high", "low"], "group": "g"},
        },
        "concurrency": 3,
        "replicas": {"min": 0, "max": 10},
        "worker": {"image": "example/worker:1", "handlers": ["sleep", "noop"], "terminationGracePeriodSeconds": 40},
    }
    raw.update(overrides)
    return WorkerPoolSpec.model_validate(raw)


def env_of(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    return {item["name"]: item for item in container["env"]}


def test_secrets_enter_the_pod_only_by_reference() -> None:
    env = env_of(render_deployment("pool", pool_spec(), 0))
    assert env["SWELL_REDIS_URL"] == {
        "name": "SWELL_REDIS_URL",
        "valueFrom": {"secretKeyRef": {"name": "redis", "key": "url"}},
    }
    assert env["SWELL_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "redis", "key": "password"}
    assert "value" not in env["SWELL_REDIS_URL"]
    assert env["SWELL_CONSUMER"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}


def test_worker_environment_follows_the_spec() -> None:
    env = env_of(render_deployment("pool", pool_spec(), 0))
    assert env["SWELL_BACKEND"]["value"] == "redis-streams"
    assert env["SWELL_QUEUE"]["value"] == "high,low"
    assert env["SWELL_GROUP"]["value"] == "g"
    assert env["SWELL_CONCURRENCY"]["value"] == "3"
    assert env["SWELL_HANDLERS"]["value"] == "sleep,noop"
    # The worker must finish draining before the kubelet's SIGKILL.
    assert float(env["SWELL_DRAIN_SECONDS"]["value"]) < 40


def test_deployment_is_restricted_and_probed() -> None:
    manifest = render_deployment("pool", pool_spec(), 0)
    assert manifest["spec"]["replicas"] == 0
    assert manifest["spec"]["selector"] == {"matchLabels": {POOL_LABEL: "pool"}}
    pod = manifest["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"] == ["python", "-m", "swell_worker"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert pod["terminationGracePeriodSeconds"] == 40


def test_pod_template_merges_without_losing_the_selector_label() -> None:
    spec = pool_spec(
        worker={
            "image": "w",
            "podTemplate": {
                "metadata": {"labels": {POOL_LABEL: "other", "team": "ml"}, "annotations": {"a": "b"}},
                "spec": {"nodeSelector": {"gpu": "yes"}},
            },
        }
    )
    template = render_deployment("pool", spec, 2)["spec"]["template"]
    assert template["metadata"]["labels"][POOL_LABEL] == "pool"
    assert template["metadata"]["labels"]["team"] == "ml"
    assert template["metadata"]["annotations"] == {"a": "b"}
    assert template["spec"]["nodeSelector"] == {"gpu": "yes"}
    assert template["spec"]["containers"][0]["name"] == "worker"


def test_deep_merge_replaces_lists_and_merges_mappings() -> None:
    assert deep_merge({"a": {"b": 1, "c": [1]}}, {"a": {"c": [2], "d": 3}}) == {"a": {"b": 1, "c": [2], "d": 3}}


def test_scale_target_pools_own_no_deployment() -> None:
    spec = pool_spec(worker=None, scaleTargetRef={"name": "celery"})
    with pytest.raises(ValueError, match="scaleTargetRef"):
        render_deployment("pool", spec, 0)


def pubsub_queue(mode: str) -> dict[str, Any]:
    return {
        "backend": "pubsub",
        "pubsub": {
            "project": "p",
            "subscription": "s",
            "mode": mode,
            "deadLetterTopic": "dead",
            "pushAudience": "https://a",
        },
    }


def test_a_push_pool_gets_a_service_over_its_workers_and_a_pull_pool_none() -> None:
    spec = pool_spec(queue=pubsub_queue("push"))
    service = render_push_service("pool", spec)
    assert service is not None
    pods = render_deployment("pool", spec, 0)["spec"]["template"]
    assert service["spec"]["selector"].items() <= pods["metadata"]["labels"].items()
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] in {p["name"] for p in pods["spec"]["containers"][0]["ports"]}
    assert render_push_service("pool", pool_spec(queue=pubsub_queue("pull"))) is None
    assert render_push_service("pool", pool_spec()) is None
    assert env_of(render_deployment("pool", spec, 0))["SWELL_PUBSUB_DEAD_LETTER_TOPIC"]["value"] == "dead"


def test_idle_pods_cost_nothing_and_busy_pods_cost_their_tasks() -> None:
    costs = deletion_costs(["a", "b", "c"], {"b": 3, "gone": 9})
    assert costs == {"a": 0, "b": 3, "c": 0}


def test_degraded_condition_carries_the_error_and_keeps_transition_times() -> None:
    health = Health(paused=False, error="cannot reach Redis at redis://h:1/0", desired=2, current=2, ready=1)
    first = conditions(health, [], "T1")
    by_type = {c["type"]: c for c in first}
    assert by_type["Degraded"]["status"] == "True"
    assert "cannot reach Redis" in by_type["Degraded"]["message"]
    assert by_type["Ready"]["status"] == "False"
    assert by_type["Active"]["status"] == "True"
    again = {c["type"]: c for c in conditions(health, first, "T2")}
    assert again["Degraded"]["lastTransitionTime"] == "T1"
    healed = {
        c["type"]: c for c in conditions(Health(paused=False, error=None, desired=0, current=0, ready=0), first, "T3")
    }
    assert healed["Degraded"]["status"] == "False"
    assert healed["Degraded"]["lastTransitionTime"] == "T3"
    assert healed["Active"]["status"] == "False"


def test_policy_carries_every_scaling_setting_of_the_spec() -> None:
    from swell_operator.scaler import policy_of, target_of

    spec = pool_spec(
        replicas={"min": 1, "max": 7},
        scaling={
            "targetWaitSeconds": 5,
            "activationBacklog": 3,
            "idleSecondsBeforeZero": 9,
            "scaleDownStabilizationSeconds": 11,
            "maxStepUp": 2,
            "maxStepDown": 1,
            "taskSecondsHint": 0.5,
        },
    )
    policy = policy_of(spec)
    assert (policy.min_replicas, policy.max_replicas, policy.concurrency) == (1, 7, 3)
    assert (policy.target_wait_seconds, policy.activation_backlog, policy.idle_seconds_before_zero) == (5, 3, 9)
    assert (policy.scale_down_stabilization_seconds, policy.max_step_up, policy.max_step_down) == (11, 2, 1)
    assert policy.task_seconds_hint == 0.5
    assert target_of("pool", spec) == "pool"
    assert target_of("pool", pool_spec(worker=None, scaleTargetRef={"name": "celery"})) == "celery"


def test_a_push_pools_workers_dead_letter_where_the_operator_points_the_subscription() -> None:
    push = {
        "backend": "pubsub",
        "pubsub": {
            "project": "p",
            "subscription": "jobs",
            "mode": "push",
            "pushAudience": "a",
            "pushServiceAccount": "pusher@p.iam.gserviceaccount.com",
        },
    }
    env = env_of(render_deployment("pool", pool_spec(queue=push), 0))
    assert env["SWELL_PUBSUB_DEAD_LETTER_TOPIC"]["value"] == "jobs-dead-letter"
    pull = {"backend": "pubsub", "pubsub": {"project": "p", "subscription": "jobs"}}
    assert "SWELL_PUBSUB_DEAD_LETTER_TOPIC" not in env_of(render_deployment("pool", pool_spec(queue=pull), 0))


SEARCH_WORKER = {"image": "w:1", "handlers": ["search"], "vectorUri": "http://milvus:19530"}


@pytest.mark.parametrize(
    "queue",
    [
        pool_spec().queue.model_dump(by_alias=True, exclude_none=True),
        {"backend": "redis-list", "redis": {"urlSecretRef": {"name": "r", "key": "u"}}, "list": {"keys": ["q"]}},
        {
            **pubsub_queue("push"),
            "pubsub": {
                **pubsub_queue("push")["pubsub"],
                "topic": "t",
                "pushServiceAccount": "pusher@p.iam.gserviceaccount.com",
                "emulatorHost": "127.0.0.1:8085",
                "credentialsSecretRef": {"name": "gcp", "key": "key.json"},
            },
        },
    ],
    ids=["streams", "list", "pubsub-push"],
)
def test_every_variable_the_operator_renders_is_one_worker_env_may_not_set(queue: dict[str, Any]) -> None:
    rendered = set(env_of(render_deployment("pool", pool_spec(queue=queue, worker=SEARCH_WORKER), 0)))
    assert rendered <= set(OPERATOR_RENDERED_ENV), rendered - set(OPERATOR_RENDERED_ENV)


def test_worker_env_may_not_set_what_the_operator_renders_and_says_which_field_does() -> None:
    def with_env(name: str) -> WorkerPoolSpec:
        return pool_spec(worker={**SEARCH_WORKER, "env": [{"name": name, "value": "1"}]})

    with pytest.raises(ValidationError, match="SWELL_MAX_ATTEMPTS is set by the operator from the pool's spec"):
        with_env("SWELL_MAX_ATTEMPTS")
    assert env_of(render_deployment("pool", with_env("SWELL_MODEL_THREADS"), 0))["SWELL_MODEL_THREADS"]["value"] == "1"
