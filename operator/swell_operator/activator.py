"""Pub/Sub push for pools at zero: answer 429 so Pub/Sub keeps the message, and wake the pool at once.

Knative's activator idea, without holding requests: while a push pool has no ready worker, the operator
points the subscription's push endpoint here, at ``/pubsub/push/<namespace>/<pool>``. A push is checked as
the worker would check it (shared token or OIDC audience) and never run: the answer is always 429, so
Pub/Sub keeps the message and redelivers it with backoff, by which time the subscription points at the
workers again. The wake is an annotation on the WorkerPool, so it reaches the scaling leader whichever
operator replica Pub/Sub called; it is written at most once a second per pool. The scalers of every
replica register their push pools here, so each replica knows how to check a push.

The activator is public and shares the operator's event loop with the scaling loop and the Lease, so
nothing it does may hold that loop: it never reads a body (the worker judges envelopes), refuses what
needs no cryptography at once, verifies OIDC tokens in its own small thread pool with a deadline (503
when Google's certificates cannot be had in time), and answers 429 beyond a cap on requests in progress
or on verifications waiting for a thread.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from swell_contract.push_auth import (
    DEFAULT_TIMEOUT_SECONDS,
    GOOGLE_CERTS_URL,
    GoogleIdTokens,
    PushAuthenticator,
    PushAuthError,
)

from swell_operator.model import GROUP, PLURAL, VERSION
from swell_operator.status import MERGE_PATCH

log = logging.getLogger(__name__)

# The WorkerPool annotation that carries the latest activation (unix seconds).
ACTIVATED_AT = "swell.dev/activated-at"
WAKE_MIN_INTERVAL_SECONDS = 1.0
ROUTE = "/pubsub/push/{namespace}/{pool}"
# Requests in progress beyond which the activator answers 429 at once (Pub/Sub backs off and retries).
MAX_IN_FLIGHT = 64
# Threads that check token signatures, and verifications that may wait for one (429 beyond).
VERIFY_THREADS = 2
MAX_WAITING_VERIFICATIONS = 16


def activation_path(namespace: str, pool: str) -> str:
    return ROUTE.format(namespace=namespace, pool=pool)


def activated_at(annotations: object) -> float | None:
    """The pool's latest activation time, or None where there is none (or it is unreadable)."""
    if not isinstance(annotations, dict):
        return None
    try:
        return float(annotations[ACTIVATED_AT])
    except (KeyError, TypeError, ValueError):
        return None


@dataclass
class Activator:
    api: client.ApiClient | None = None
    gates: dict[tuple[str, str], PushAuthenticator] = field(default_factory=dict)
    woken: dict[tuple[str, str], float] = field(default_factory=dict)
    tokens: GoogleIdTokens = field(
        default_factory=lambda: GoogleIdTokens(threads=VERIFY_THREADS, max_waiting=MAX_WAITING_VERIFICATIONS)
    )
    max_in_flight: int = MAX_IN_FLIGHT
    in_flight: int = 0

    def register(
        self, namespace: str, pool: str, *, shared_token: str | None, audience: str | None, service_account: str | None
    ) -> None:
        """How pushes for this pool are checked; ValueError for a rule that would leave the endpoint open."""
        gate = PushAuthenticator(shared_token, audience, service_account, self.tokens)
        self.gates[(namespace, pool)] = gate

    def forget(self, namespace: str, pool: str) -> None:
        self.gates.pop((namespace, pool), None)
        self.woken.pop((namespace, pool), None)

    async def push(self, request: web.Request) -> web.Response:
        if self.in_flight >= self.max_in_flight:
            return web.json_response({"error": "the activator is busy; retry later"}, status=429)
        self.in_flight += 1
        try:
            return await self._answer(request)
        finally:
            self.in_flight -= 1

    async def _answer(self, request: web.Request) -> web.Response:
        key = (request.match_info["namespace"], request.match_info["pool"])
        gate = self.gates.get(key)
        if gate is None:
            # Unknown here (yet): Pub/Sub retries; nothing is lost and nothing is woken.
            return web.json_response({"error": "no push pool of that name is known here"}, status=404)
        try:
            await gate.check(request.headers.get("Authorization"), request.query.get("token"))
        except PushAuthError as exc:
            return web.json_response({"error": str(exc)}, status=exc.status)
        await self._wake(*key)
        return web.json_response({"error": "the pool is waking up; retry later"}, status=429)

    async def _wake(self, namespace: str, pool: str) -> None:
        now = time.time()
        if now - self.woken.get((namespace, pool), 0.0) < WAKE_MIN_INTERVAL_SECONDS:
            return
        self.woken[(namespace, pool)] = now
        try:
            await self.mark_activated(namespace, pool, now)
        except ApiException as exc:
            log.warning("cannot mark %s/%s activated: HTTP %s", namespace, pool, exc.status)
            self.woken.pop((namespace, pool), None)
        else:
            log.info("%s/%s: push at zero, waking the pool", namespace, pool)

    async def mark_activated(self, namespace: str, pool: str, at: float) -> None:
        """The annotation the scaling leader reads; the one write the activator makes."""
        if self.api is None:
            raise RuntimeError("the activator is not serving: no API client")
        patch = {"metadata": {"annotations": {ACTIVATED_AT: f"{at:.3f}"}}}
        custom: Any = client.CustomObjectsApi(self.api)  # merge patch: the client would pick JSON Patch
        await custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, pool, patch, _content_type=MERGE_PATCH
        )

    def app(self) -> web.Application:
        app = web.Application()
        app.add_routes([web.post(ROUTE, self.push)])

        async def close_tokens(_: web.Application) -> None:
            self.tokens.close()

        app.on_cleanup.append(close_tokens)
        return app


def from_environment(api: client.ApiClient) -> Activator:
    """The operator's activator; ``SWELL_OIDC_CERTS_URL`` and ``SWELL_OIDC_TIMEOUT_SECONDS`` as on the worker."""
    tokens = GoogleIdTokens(
        os.environ.get("SWELL_OIDC_CERTS_URL") or GOOGLE_CERTS_URL,
        threads=VERIFY_THREADS,
        timeout=float(os.environ.get("SWELL_OIDC_TIMEOUT_SECONDS") or DEFAULT_TIMEOUT_SECONDS),
        max_waiting=MAX_WAITING_VERIFICATIONS,
    )
    return Activator(api=api, tokens=tokens)


async def serve(activator: Activator, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(activator.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
