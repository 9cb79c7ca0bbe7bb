"""Reads the Secret keys a WorkerPool references, so credentials never pass through a spec or a log line.

Only values are returned; every error names the Secret and key but never what is inside, because the
messages end up in the WorkerPool's status and in Kubernetes Events.
"""

from __future__ import annotations

import base64
import binascii

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from swell_operator.model import SecretKeyRef


class SecretError(RuntimeError):
    """A referenced Secret or key is missing or unreadable; the message is safe to show in status."""


async def read_secret_key(api: client.ApiClient, namespace: str, ref: SecretKeyRef) -> str:
    try:
        secret = await client.CoreV1Api(api).read_namespaced_secret(ref.name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            raise SecretError(f"Secret {namespace}/{ref.name} does not exist") from None
        raise SecretError(f"cannot read Secret {namespace}/{ref.name}: HTTP {exc.status} {exc.reason}") from None
    data = secret.data or {}
    if ref.key not in data:
        raise SecretError(f"Secret {namespace}/{ref.name} has no key {ref.key!r}")
    try:
        return base64.b64decode(data[ref.key]).decode("utf-8").strip()
    except (binascii.Error, UnicodeDecodeError):
        raise SecretError(f"Secret {namespace}/{ref.name} key {ref.key!r} is not UTF-8 text") from None
