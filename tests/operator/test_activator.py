"""The activator checks a push as a worker would and never runs it: every good push is a 429 that wakes the pool."""

from __future__ import annotations

import asyncio
import base64
import json
import time

from aiohttp.test_utils import TestClient, TestServer
from swell_operator.activator import Activator, activated_at, activation_path
from swell_worker.push_auth import GoogleIdTokens

from tests.pubsub.oidc_kit import AUDIENCE, PUSHER, CertsEndpoint, SigningKey, hanging_endpoint


def envelope() -> dict[str, object]:
    task = {"id": "t1", "handler": "echo", "payload": {}}
    return {
        "message": {"data": base64.b64encode(json.dumps(task).encode()).decode(), "messageId": "1"},
        "subscription": "projects/p/subscriptions/s",
    }


async def test_pushes_are_checked_then_refused_with_429_and_the_wake_is_throttled() -> None:
    activator = Activator()
    woken: list[tuple[str, str]] = []

    async def wake(namespace: str, pool: str, at: float) -> None:
        woken.append((namespace, pool))

    activator.mark_activated = wake  # type: ignore[method-assign]
    activator.register("ns", "pool", shared_token="s3cret", audience=None, service_account=None)
    async with TestClient(TestServer(activator.app())) as http:
        path = activation_path("ns", "pool")
        assert (await http.post(activation_path("ns", "other"), json=envelope())).status == 404
        assert (await http.post(path, json=envelope())).status == 401
        assert (await http.post(path + "?token=wrong", json=envelope())).status == 403
        assert woken == []
        for _ in range(3):
            answer = await http.post(path, json=envelope(), headers={"Authorization": "Bearer s3cret"})
            assert answer.status == 429
    assert woken == [("ns", "pool")], "three pushes within a second wake the pool once"
    activator.forget("ns", "pool")
    assert activator.gates == {}


def test_activation_time_is_read_from_the_annotation_or_ignored() -> None:
    assert activated_at({"swell.dev/activated-at": "1700000000.5"}) == 1700000000.5
    assert activated_at({"swell.dev/activated-at": "soon"}) is None
    assert activated_at(None) is None


async def test_oidc_pushes_wake_only_with_the_pinned_account_and_junk_costs_the_loop_nothing() -> None:
    """Certificates unreachable: a signed-looking token gets 503 within the timeout, beyond the cap 429,
    and the event loop the scaling loop and the Lease share never stalls."""
    google = SigningKey("google-key")
    woken: list[tuple[str, str]] = []

    async def wake(namespace: str, pool: str, at: float) -> None:
        woken.append((namespace, pool))

    with CertsEndpoint(google) as certs:
        activator = Activator(tokens=GoogleIdTokens(certs.url, threads=2, timeout=1.0))
        activator.mark_activated = wake  # type: ignore[method-assign]
        activator.register("ns", "pool", shared_token=None, audience=AUDIENCE, service_account=PUSHER)
        async with TestClient(TestServer(activator.app())) as http:
            path = activation_path("ns", "pool")

            async def push(token: str) -> int:
                return (await http.post(path, json=envelope(), headers={"Authorization": f"Bearer {token}"})).status

            assert await push(google.token(email="someone@else.iam.gserviceaccount.com")) == 403
            assert await push(google.token(email_verified=None)) == 403
            assert woken == []
            assert await push(google.token()) == 429
            assert woken == [("ns", "pool")]

    with hanging_endpoint() as url:
        activator = Activator(tokens=GoogleIdTokens(url, threads=2, timeout=0.5, max_waiting=8))
        activator.mark_activated = wake  # type: ignore[method-assign]
        activator.register("ns", "pool", shared_token=None, audience=AUDIENCE, service_account=PUSHER)
        lags: list[float] = []

        async def watch_the_loop() -> None:
            while True:
                before = time.monotonic()
                await asyncio.sleep(0.01)
                lags.append(time.monotonic() - before - 0.01)

        async with TestClient(TestServer(activator.app())) as http:
            path = activation_path("ns", "pool")
            forged = SigningKey("google-key").token()  # the right claims, a key Google never published
            watcher = asyncio.create_task(watch_the_loop())
            started = time.monotonic()
            answers = await asyncio.gather(
                *(http.post(path, json=envelope(), headers={"Authorization": f"Bearer {forged}"}) for _ in range(30))
            )
            elapsed = time.monotonic() - started
            assert (await http.post(path, json=envelope())).status == 401  # no credentials: no crypto at all
            watcher.cancel()
        statuses = sorted(answer.status for answer in answers)
    assert statuses == [429] * 22 + [503] * 8, statuses
    assert elapsed < 1.5, f"30 junk pushes took {elapsed:.2f}s with a 0.5 s timeout"
    assert max(lags) < 0.1, f"the event loop stalled for {max(lags):.3f}s"
    assert woken == [("ns", "pool")], "junk woke nothing"
    assert activator.tokens.certificates.fetches == 1
