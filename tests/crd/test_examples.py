"""Every example is self-contained (it carries the Secrets it references) and is a spec the operator parses;
together they cover each backend, both Pub/Sub modes and the RQ and Celery scale targets. The API server
accepting each one is in test_crd_validation.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from swell_operator.model import WorkerPoolSpec

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


def secret_refs(node: Any) -> set[str]:
    """Names of every Secret a spec references (any ``...SecretRef`` or ``secretKeyRef``)."""
    if isinstance(node, list):
        return set().union(*(secret_refs(item) for item in node)) if node else set()
    if not isinstance(node, dict):
        return set()
    found = {value["name"] for key, value in node.items() if key.lower().endswith(("secretref", "secretkeyref"))}
    return found.union(*(secret_refs(value) for value in node.values()))


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.stem for e in EXAMPLES])
def test_every_example_is_self_contained_and_parses(example: Path) -> None:
    docs = [d for d in yaml.safe_load_all(example.read_text()) if d]
    pools = [d for d in docs if d["kind"] == "WorkerPool"]
    secrets = {d["metadata"]["name"] for d in docs if d["kind"] == "Secret"}
    assert pools, "an example without a WorkerPool"
    for pool in pools:
        WorkerPoolSpec.model_validate(pool["spec"])
        referenced = secret_refs(pool["spec"])
        assert referenced, "every backend needs a credential or address from a Secret"
        assert referenced <= secrets, f"Secrets {referenced - secrets} are referenced but not in the example"


BACKENDS = {"redis-list", "redis-streams", "pubsub"}


def test_examples_cover_every_backend_mode_and_target() -> None:
    specs = [d["spec"] for e in EXAMPLES for d in yaml.safe_load_all(e.read_text()) if d and d["kind"] == "WorkerPool"]
    assert {s["queue"]["backend"] for s in specs} == BACKENDS
    assert {s["queue"]["pubsub"]["mode"] for s in specs if s["queue"]["backend"] == "pubsub"} == {"pull", "push"}
    targets = {s["scaleTargetRef"]["name"] for s in specs if "scaleTargetRef" in s}
    assert {"rq-worker", "celery-worker"} <= targets
