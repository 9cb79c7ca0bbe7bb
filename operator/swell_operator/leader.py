"""Leader election on a coordination.k8s.io Lease, so that with two operator replicas only one scales.

Why a Lease rather than kopf peering: peering pauses a whole operator only when a peer has a higher
priority, and two replicas of one Deployment share a priority, so both would act. A Lease gives one
holder at a time while the standby stays warm (it keeps reading queues and serving metrics) and takes
over within one lease duration when the holder dies, or at once when it shuts down and releases.

Expiry is judged as client-go does: by how long the Lease record has gone unchanged on *our* clock,
never by comparing another machine's timestamp with ours. The holder stops acting once it has failed
to renew for ``lease_seconds - renew_seconds``, before anyone else may take over.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any, cast

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

log = logging.getLogger(__name__)

LEASE_NAME = "swell-operator"


def default_identity() -> str:
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"


def _now_micro() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(
        self,
        api: client.ApiClient,
        namespace: str,
        *,
        name: str = LEASE_NAME,
        identity: str | None = None,
        lease_seconds: int = 10,
        renew_seconds: float = 2.0,
    ) -> None:
        self._api = api
        self.namespace = namespace
        self.name = name
        self.identity = identity or default_identity()
        self._lease_seconds = lease_seconds
        self._renew_seconds = renew_seconds
        self._renewed_at: float | None = None
        self._seen: tuple[Any, ...] | None = None
        self._seen_at = 0.0
        self._listeners: set[Callable[[], None]] = set()

    @property
    def is_leader(self) -> bool:
        if self._renewed_at is None:
            return False
        return time.monotonic() - self._renewed_at < self._lease_seconds - self._renew_seconds

    def on_change(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener`` whenever this replica takes or loses the Lease; returns what removes it.

        A pool's round run while not leading neither scales nor reports, and a sleeping pool then waits
        minutes: its scaler listens, so a replica that (re)takes the Lease acts on every pool at once."""
        self._listeners.add(listener)
        return lambda: self._listeners.discard(listener)

    async def run(self, stop: asyncio.Event) -> None:
        """Try to take or renew the Lease every ``renew_seconds`` until ``stop``; release it on the way out."""
        try:
            while not stop.is_set():
                was = self.is_leader
                try:
                    await self.try_acquire()
                except ApiException as exc:
                    log.warning("lease %s/%s: HTTP %s %s", self.namespace, self.name, exc.status, exc.reason)
                except (TimeoutError, OSError) as exc:
                    log.warning("lease %s/%s: %s", self.namespace, self.name, exc)
                if self.is_leader != was:
                    log.info(
                        "%s %s leadership of %s/%s",
                        self.identity,
                        "took" if self.is_leader else "lost",
                        self.namespace,
                        self.name,
                    )
                    for listener in list(self._listeners):
                        listener()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), self._renew_seconds)
        finally:
            await self.release()

    async def try_acquire(self) -> bool:
        leases = client.CoordinationV1Api(self._api)
        try:
            lease = await leases.read_namespaced_lease(self.name, self.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            return await self._create(leases)
        spec = lease.spec
        record = (spec.holder_identity, spec.renew_time, spec.lease_transitions)
        now = time.monotonic()
        if record != self._seen:
            self._seen, self._seen_at = record, now
        holder = spec.holder_identity
        duration = spec.lease_duration_seconds or self._lease_seconds
        expired = now - self._seen_at > duration
        if holder and holder != self.identity and not expired:
            self._renewed_at = None
            return False
        transitions = (spec.lease_transitions or 0) + (0 if holder == self.identity else 1)
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "resourceVersion": lease.metadata.resource_version,
            },
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": self._lease_seconds,
                "acquireTime": _micro(spec.acquire_time) if holder == self.identity else _now_micro(),
                "renewTime": _now_micro(),
                "leaseTransitions": transitions,
            },
        }
        try:
            await leases.replace_namespaced_lease(self.name, self.namespace, cast(Any, body))
        except ApiException as exc:
            if exc.status == 409:  # someone else wrote it first
                self._renewed_at = None
                return False
            raise
        self._renewed_at = now
        return True

    async def release(self) -> None:
        """Hand the Lease back at shutdown so the standby takes over at once, not after expiry."""
        if self._renewed_at is None:
            return
        self._renewed_at = None
        leases = client.CoordinationV1Api(self._api)
        try:
            lease = await leases.read_namespaced_lease(self.name, self.namespace)
            if lease.spec.holder_identity != self.identity:
                return
            await leases.patch_namespaced_lease(
                self.name,
                self.namespace,
                {
                    "metadata": {"resourceVersion": lease.metadata.resource_version},
                    "spec": {"holderIdentity": None, "renewTime": None, "acquireTime": None},
                },
            )
        except (TimeoutError, ApiException, OSError) as exc:
            log.warning("could not release lease %s/%s: %s", self.namespace, self.name, exc)

    async def _create(self, leases: client.CoordinationV1Api) -> bool:
        now = _now_micro()
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": self._lease_seconds,
                "acquireTime": now,
                "renewTime": now,
                "leaseTransitions": 0,
            },
        }
        try:
            await leases.create_namespaced_lease(self.namespace, cast(Any, body))
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        self._renewed_at = time.monotonic()
        return True


def _micro(value: Any) -> str:
    if isinstance(value, datetime.datetime):
        return value.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return _now_micro() if value is None else str(value)
