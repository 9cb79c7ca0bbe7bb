"""Reads from the API server as plain JSON, for the calls the operator makes over and over.

kubernetes_asyncio turns every answer into its generated model classes, which costs far more CPU than the
request itself for a Deployment or a list (and the double-scaling guard turned the models back into dicts).
The periodic reads take the body as it came (``_preload_content=False``) and parse it once.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException


async def json_of(call: Awaitable[Any]) -> dict[str, Any]:
    """The JSON body of a client call made with ``_preload_content=False``; ApiException for a non-2xx answer."""
    response = await call
    try:
        body = await response.read()
    finally:
        response.release()
    if not 200 <= response.status <= 299:
        raise ApiException(status=response.status, reason=response.reason)
    found: dict[str, Any] = json.loads(body)
    return found
