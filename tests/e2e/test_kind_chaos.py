"""Pod-level chaos on kind, short: worker pods deleted (graceful and forced) and a node drained mid-burst.

The same scenarios as ``python -m bench.chaos --scenarios kind_pod_deletes kind_node_drain`` with a short
burst on Redis Streams; times are reported by the bench (bench/results/chaos.json), not asserted here.
"""

from __future__ import annotations

from urllib.parse import urlparse

import pytest

from bench import chaos_kind
from tests.tooling.stack import KindStack

pytestmark = [pytest.mark.kind, pytest.mark.timeout(900)]


def test_worker_pods_deleted_and_a_node_drained_mid_burst_lose_no_task(kind_stack: KindStack, redis_url: str) -> None:
    redis = chaos_kind.forwarded_redis(int(urlparse(redis_url).port or 0))
    deleted = chaos_kind.pod_deletes(kind_stack, redis, "redis-streams", tasks=600, deletes=2, max_replicas=4)
    assert deleted.details["forced_deletes"] == 1 and deleted.details["graceful_deletes"] == 1, deleted
    assert (deleted.lost, deleted.dead_lettered, deleted.done) == (0, 0, deleted.sent), deleted
    drained = chaos_kind.node_drain(kind_stack, redis, "redis-streams", tasks=600, max_replicas=4)
    assert drained.details["drain_succeeded"] and drained.details["pool_pods_on_node"] >= 1, drained
    assert (drained.lost, drained.dead_lettered, drained.done) == (0, 0, drained.sent), drained
    nodes = kind_stack.json("nodes", namespace="default")["items"]
    assert not any(node["spec"].get("unschedulable") for node in nodes), "a node was left cordoned"
