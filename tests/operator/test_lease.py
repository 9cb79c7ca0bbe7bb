"""The Lease elector itself, in process: one holder at a time, release hands over at once."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes_asyncio import client, config
from swell_operator.leader import LeaderElector

pytestmark = pytest.mark.cluster


async def test_only_one_elector_holds_the_lease_and_release_hands_it_over(cluster: Any, namespace: str) -> None:
    await config.load_kube_config(config_file=str(cluster.kubeconfig))
    async with client.ApiClient() as api:
        a = LeaderElector(api, namespace, identity="a", lease_seconds=10, renew_seconds=1)
        b = LeaderElector(api, namespace, identity="b", lease_seconds=10, renew_seconds=1)
        assert await a.try_acquire() is True
        assert await b.try_acquire() is False
        assert a.is_leader and not b.is_leader
        assert await a.try_acquire() is True  # renewing keeps it
        await a.release()
        assert not a.is_leader
        assert await b.try_acquire() is True
        assert b.is_leader
        assert await a.try_acquire() is False
