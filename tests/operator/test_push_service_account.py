"""pushServiceAccount: required beside pushAudience at apply time (the API server's CEL), rendered into the worker."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from swell_operator.deployment import render_deployment
from swell_operator.model import WorkerPoolSpec

PUSHER = "pusher@project.iam.gserviceaccount.com"


def push_pool(**pubsub: Any) -> dict[str, Any]:
    return {
        "apiVersion": "swell.dev/v1alpha1",
        "kind": "WorkerPool",
        "metadata": {"name": "pool"},
        "spec": {
            "queue": {"backend": "pubsub", "pubsub": {"project": "p", "subscription": "s", "mode": "push", **pubsub}},
            "replicas": {"min": 0, "max": 2},
            "worker": {"handlers": ["noop"]},
        },
    }


def test_the_worker_is_told_which_account_may_push() -> None:
    spec = WorkerPoolSpec.model_validate(push_pool(pushAudience="https://a", pushServiceAccount=PUSHER)["spec"])
    container = render_deployment("pool", spec, 0)["spec"]["template"]["spec"]["containers"][0]
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["SWELL_PUSH_AUDIENCE"] == "https://a"
    assert env["SWELL_PUSH_SERVICE_ACCOUNT"] == PUSHER


@pytest.mark.cluster
def test_an_audience_without_the_push_account_is_refused_at_apply_time(
    cluster: Any, namespace: str, workerpool_crd: str
) -> None:
    def apply(manifest: dict[str, Any]) -> tuple[int, str]:
        result = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(manifest), check=False)
        return result.returncode, result.stderr

    code, error = apply(push_pool(pushAudience="https://a"))
    assert code != 0 and "pushAudience needs pushServiceAccount" in error, error
    code, error = apply(push_pool(pushTokenSecretRef={"name": "t", "key": "k"}, pushServiceAccount=PUSHER))
    assert code != 0 and "pushServiceAccount needs pushAudience" in error, error
    code, error = apply(push_pool(pushAudience="https://a", pushServiceAccount="not-an-email"))
    assert code != 0 and "pushServiceAccount" in error, error
    assert apply(push_pool(pushAudience="https://a", pushServiceAccount=PUSHER)) == (0, "")
