"""Two operators on one namespace: one Lease holder scales, the other waits and takes over when it goes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.operator.kube import apply, drain, pool_manifest, push_tasks, redis_secret, replicas_of, wait_for

pytestmark = pytest.mark.cluster


def lease_holder(cluster: Any, namespace: str) -> str | None:
    found = cluster.kubectl("get", "lease", "swell-operator", "-n", namespace, "-o", "json", check=False)
    if found.returncode != 0:
        return None
    holder = json.loads(found.stdout)["spec"].get("holderIdentity")
    return str(holder) if holder else None


def test_two_operators_do_not_fight_and_the_standby_takes_over(
    cluster: Any, namespace: str, redis_url: str, start_operator: Any
) -> None:
    first = start_operator(identity="op-a")
    second = start_operator(identity="op-b")
    holder = wait_for(lambda: lease_holder(cluster, namespace), 30, "a Lease holder")
    leaders = wait_for(
        lambda: (found := [op for op in (first, second) if op.is_leader()]) and found,
        30,
        "a leader reported by the health probe",
    )
    assert [op.identity for op in leaders] == [holder]
    leader, standby = (first, second) if holder == first.identity else (second, first)
    assert not standby.is_leader()

    redis_secret(cluster, namespace, redis_url)
    apply(cluster, namespace, pool_manifest("pool", "redis-streams", "jobs"))
    push_tasks(redis_url, "redis-streams", "jobs", 100)
    wait_for(lambda: (replicas_of(cluster, namespace, "pool") or 0) >= 1, 30, "scale-out by the leader")
    scaled = f"{namespace}/pool: replicas"
    assert scaled in leader.log()
    assert scaled not in standby.log(), "the standby scaled although it does not hold the Lease"

    leader.stop()  # releases the Lease on the way out
    wait_for(lambda: lease_holder(cluster, namespace) == standby.identity, 30, "the standby taking the Lease")
    wait_for(standby.is_leader, 30, "the standby acting as leader")
    drain(redis_url, "redis-streams", "jobs")
    wait_for(lambda: replicas_of(cluster, namespace, "pool") == 0, 60, "the new leader scaling to zero")
