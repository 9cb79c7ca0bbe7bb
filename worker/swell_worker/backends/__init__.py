"""Picks the backend class for a configuration, importing only the one in use.

Besides the ``Backend`` protocol (base.py), a backend may offer two optional capabilities that the
runtime uses when present: ``ping()`` for readiness, and ``keep_alive(deliveries)`` to show it is
alive while it holds tasks. A third, ``routes(runtime)``, lets a backend add HTTP endpoints (see
``swell_worker.http``); a backend whose work only arrives that way sets ``receives_by_push = True`` and
the runtime does not pull from it. Each backend class has ``from_config(config)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from swell_contract.depth import Depth

from swell_worker.backends.base import Backend, BackendError, Delivery
from swell_worker.config import WorkerConfig
from swell_worker.imports import load_object

__all__ = ["Backend", "BackendError", "Delivery", "Depth", "KeepsAlive", "Pingable", "make_backend"]

# "module:Class" per backend kind; imported on demand so Redis workers never import google-cloud.
BACKEND_CLASSES = {
    "redis-list": "swell_worker.backends.redis_list:RedisListBackend",
    "redis-streams": "swell_worker.backends.redis_streams:RedisStreamsBackend",
    "pubsub": "swell_worker.backends.pubsub:PubSubBackend",
}


@runtime_checkable
class Pingable(Protocol):
    async def ping(self) -> None:
        """Raise BackendError unless the queue answers now."""
        ...


@runtime_checkable
class KeepsAlive(Protocol):
    async def keep_alive(self, deliveries: Sequence[Delivery]) -> None:
        """Called every third of the consumer timeout with every delivery the worker holds."""
        ...


def make_backend(config: WorkerConfig) -> Backend:
    backend_class = load_object(BACKEND_CLASSES[config.backend])
    backend: Backend = backend_class.from_config(config)
    return backend
