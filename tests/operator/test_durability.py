"""A Redis that would lose accepted tasks on a crash is named in a Warning Event; a durable one is not."""

from __future__ import annotations

from typing import Any

import pytest
from swell_operator.durability import durability_problem

from tests.operator.kube import apply, events_for, pool_manifest, redis_secret, wait_for


@pytest.mark.parametrize(
    ("info", "warned"),
    [
        ({"aof_enabled": 1, "connected_slaves": 0}, False),
        ({"aof_enabled": 0, "connected_slaves": 2}, False),
        ({"aof_enabled": 0, "connected_slaves": 0, "rdb_last_bgsave_status": "ok"}, True),
        ({"aof_enabled": "0", "connected_slaves": "0"}, True),
        ({}, False),  # a managed Redis that hides INFO persistence gets the benefit of the doubt
    ],
)
def test_durability_problem_from_info(info: dict[str, Any], warned: bool) -> None:
    problem = durability_problem(info, "redis://cache:6379/0")
    assert (problem is not None) == warned
    if problem:
        assert "appendonly yes" in problem and "redis://cache:6379/0" in problem


@pytest.mark.cluster
def test_a_pool_on_a_redis_without_aof_gets_one_warning_event(
    cluster: Any, namespace: str, own_redis: Any, redis_url: str, operator_process: Any
) -> None:
    own_redis.client().config_set("appendonly", "no")
    redis_secret(cluster, namespace, own_redis.url, name="fragile")
    redis_secret(cluster, namespace, redis_url, name="durable")
    apply(cluster, namespace, pool_manifest("fragile", "redis-streams", "jobs", secret="fragile"))
    apply(cluster, namespace, pool_manifest("durable", "redis-streams", "jobs", secret="durable"))

    def warnings(pool: str) -> list[dict[str, Any]]:
        return [e for e in events_for(cluster, namespace, pool) if e.get("reason") == "RedisNotDurable"]

    (event,) = wait_for(lambda: warnings("fragile"), 30, "a RedisNotDurable Event on the pool without AOF")
    assert event["type"] == "Warning" and "appendonly yes" in event["message"]
    assert "127.0.0.1" in event["message"] and "password" not in event["message"]
    wait_for(
        lambda: "lastDecision" in (cluster.kubectl("get", "wp", "durable", "-n", namespace, "-o", "json").stdout),
        30,
        "the durable pool read and decided",
    )
    assert warnings("durable") == [], "a Redis with AOF was reported as not durable"
    assert len(warnings("fragile")) == 1, "the warning is posted once, not per poll"
