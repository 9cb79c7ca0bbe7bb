"""Secret keys read on the real API server, once for all the pools that name one Secret."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from kubernetes_asyncio import client, config
from swell_operator.model import RedisConnection, SecretKeyRef
from swell_operator.secrets import SecretError, SecretReads

pytestmark = pytest.mark.cluster


def _counted(reads: SecretReads) -> list[tuple[str, str]]:
    """The API reads ``reads`` makes, recorded as they go to the server."""
    calls: list[tuple[str, str]] = []
    fetch = reads._secrets._read

    async def counted(where: tuple[str, str]) -> dict[str, str]:
        calls.append(where)
        return await fetch(where)

    reads._secrets._read = counted
    return calls


async def test_many_pools_naming_one_secret_share_one_read(cluster: Any, namespace: str) -> None:
    cluster.kubectl("create", "secret", "generic", "redis", "-n", namespace, "--from-literal=url=redis://a:1/0")
    cluster.kubectl("create", "secret", "generic", "pw", "-n", namespace, "--from-literal=password=s3cret")
    redis = RedisConnection.model_validate(
        {"urlSecretRef": {"name": "redis", "key": "url"}, "passwordSecretRef": {"name": "pw", "key": "password"}}
    )
    await config.load_kube_config(config_file=str(cluster.kubeconfig))
    async with client.ApiClient() as api:
        reads = SecretReads(api, max_age=0.5)
        calls = _counted(reads)
        servers = await asyncio.gather(*(reads.redis_server(namespace, redis) for _ in range(50)))
        assert servers == [("redis://a:1/0", "s3cret")] * 50
        assert sorted(calls) == [(namespace, "pw"), (namespace, "redis")], "one read per Secret for 50 pools"

        cluster.kubectl("delete", "secret", "redis", "-n", namespace)
        cluster.kubectl("create", "secret", "generic", "redis", "-n", namespace, "--from-literal=url=redis://b:2/0")
        await asyncio.sleep(0.6)
        assert (await reads.redis_server(namespace, redis))[0] == "redis://b:2/0", "a changed Secret is read again"


async def test_a_missing_key_is_read_again_at_once_and_errors_name_no_value(cluster: Any, namespace: str) -> None:
    cluster.kubectl("create", "secret", "generic", "late", "-n", namespace, "--from-literal=wrong=hunter2")
    ref = SecretKeyRef(name="late", key="url")
    await config.load_kube_config(config_file=str(cluster.kubeconfig))
    async with client.ApiClient() as api:
        reads = SecretReads(api, max_age=3600)
        with pytest.raises(SecretError, match="has no key 'url'") as missing:
            await reads.key(namespace, ref)
        assert "hunter2" not in str(missing.value)
        cluster.kubectl("delete", "secret", "late", "-n", namespace)
        cluster.kubectl("create", "secret", "generic", "late", "-n", namespace, "--from-literal=url=redis://c:3/0")
        assert await reads.key(namespace, ref) == "redis://c:3/0", "a fixed Secret does not wait out the cache"
        with pytest.raises(SecretError, match="does not exist"):
            await reads.key(namespace, SecretKeyRef(name="absent", key="url"))
