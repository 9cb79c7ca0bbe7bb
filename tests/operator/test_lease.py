"""The Lease elector itself, in process: one holder at a time, release hands over at once."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from kubernetes_asyncio import client, config
from swell_operator.leader import LeaderElector

pytestmark = pytest.mark.cluster


def _electors(api: client.ApiClient, namespace: str, *identities: str) -> list[LeaderElector]:
    return [LeaderElector(api, namespace, identity=i, lease_seconds=10, renew_seconds=1) for i in identities]


async def test_only_one_elector_holds_the_lease_and_release_hands_it_over(cluster: Any, namespace: str) -> None:
    await config.load_kube_config(config_file=str(cluster.kubeconfig))
    async with client.ApiClient() as api:
        a, b = _electors(api, namespace, "a", "b")
        assert await a.try_acquire() is True
        assert await b.try_acquire() is False
        assert a.is_leader and not b.is_leader
        assert await a.try_acquire() is True  # renewing keeps it
        await a.release()
        assert not a.is_leader
        assert await b.try_acquire() is True
        assert b.is_leader
        assert await a.try_acquire() is False


async def test_a_change_of_leadership_wakes_the_listeners(cluster: Any, namespace: str) -> None:
    """Pools that went to sleep while their operator was not leading report at once when it leads again."""
    await config.load_kube_config(config_file=str(cluster.kubeconfig))
    async with client.ApiClient() as api:
        holder, waiting = _electors(api, namespace, "holder", "waiting")
        assert await holder.try_acquire() is True
        woken = asyncio.Event()
        forget = waiting.on_change(woken.set)
        stop = asyncio.Event()
        running = asyncio.create_task(waiting.run(stop))
        try:
            await asyncio.sleep(1.5)
            assert not woken.is_set(), "no change, no wake"
            await holder.release()
            await asyncio.wait_for(woken.wait(), timeout=5)
            assert waiting.is_leader
            forget()
            woken.clear()
            stop.set()
            await running
            assert not woken.is_set(), "a listener that left is not called"
        finally:
            stop.set()
            await running
