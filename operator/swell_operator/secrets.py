"""Reads the Secret keys a WorkerPool references, so credentials never pass through a spec or a log line.

Only values are returned; every error names the Secret and key but never what is inside, because the
messages end up in the WorkerPool's status and in Kubernetes Events.
"""

from __future__ import annotations

import base64
import binascii

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from swell_operator.model import RedisConnection, SecretKeyRef
from swell_operator.shared_reads import SharedReads

# How long a Secret read serves every pool that names it: a fixed or rotated Secret is seen this much later.
SECRET_MAX_AGE_SECONDS = 10.0


class SecretError(RuntimeError):
    """A referenced Secret or key is missing or unreadable; the message is safe to show in status."""


async def _secret_data(api: client.ApiClient, namespace: str, name: str) -> dict[str, str]:
    """The Secret's base64 values by key."""
    try:
        secret = await client.CoreV1Api(api).read_namespaced_secret(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            raise SecretError(f"Secret {namespace}/{name} does not exist") from None
        raise SecretError(f"cannot read Secret {namespace}/{name}: HTTP {exc.status} {exc.reason}") from None
    return dict(secret.data or {})


def _value_of(data: dict[str, str], namespace: str, ref: SecretKeyRef) -> str:
    if ref.key not in data:
        raise SecretError(f"Secret {namespace}/{ref.name} has no key {ref.key!r}")
    try:
        return base64.b64decode(data[ref.key]).decode("utf-8").strip()
    except (binascii.Error, UnicodeDecodeError):
        raise SecretError(f"Secret {namespace}/{ref.name} key {ref.key!r} is not UTF-8 text") from None


async def read_secret_key(api: client.ApiClient, namespace: str, ref: SecretKeyRef) -> str:
    """One read, for the one-off uses (Pub/Sub set-up); pools' rounds go through ``SecretReads``."""
    return _value_of(await _secret_data(api, namespace, ref.name), namespace, ref)


class SecretReads:
    """Secret keys for every pool of the operator (one, in kopf's memo): a thousand pools naming one Secret
    cost one read per ``max_age``, not one each. A key the kept Secret lacks is read again at once, so a
    Secret being fixed is not held back by the cache."""

    def __init__(self, api: client.ApiClient, max_age: float = SECRET_MAX_AGE_SECONDS) -> None:
        self._api = api
        self._secrets: SharedReads[tuple[str, str], dict[str, str]] = SharedReads(self._read, max_age)

    async def key(self, namespace: str, ref: SecretKeyRef) -> str:
        data = await self._secrets.get((namespace, ref.name))
        if ref.key not in data:
            data = await self._secrets.get((namespace, ref.name), fresh=True)
        return _value_of(data, namespace, ref)

    async def redis_server(self, namespace: str, redis: RedisConnection) -> tuple[str, str | None]:
        """The URL and password (if it is kept apart) of a pool's Redis server."""
        url = await self.key(namespace, redis.url_secret_ref)
        if redis.password_secret_ref is None:
            return url, None
        return url, await self.key(namespace, redis.password_secret_ref)

    async def _read(self, where: tuple[str, str]) -> dict[str, str]:
        return await _secret_data(self._api, *where)
