"""The activator checks a push as a worker would and never runs it: every good push is a 429 that wakes the pool."""

from __future__ import annotations

import base64
import json

from aiohttp.test_utils import TestClient, TestServer
from swell_operator.activator import Activator, activated_at, activation_path
from swell_worker.push_auth import PushAuthenticator


def envelope() -> dict[str, object]:
    task = {"id": "t1", "handler": "echo", "payload": {}}
    return {"message": {"data": base64.b64encode(json.dumps(task).encode()).decode(), "messageId": "1"},
            "subscription": "projects/p/subscriptions/s"}


async def test_pushes_are_checked_then_refused_with_429_and_the_wake_is_throttled() -> None:
    activator = Activator()
    woken: list[tuple[str, str]] = []

    async def wake(namespace: str, pool: str, at: float) -> None:
        woken.append((namespace, pool))

    activator.mark_activated = wake  # type: ignore[method-assign]
    activator.register("ns", "pool", PushAuthenticator("s3cret", None))
    async with TestClient(TestServer(activator.app())) as http:
        path = activation_path("ns", "pool")
        assert (await http.post(activation_path("ns", "other"), json=envelope())).status == 404
        assert (await http.post(path, json=envelope())).status == 401
        assert (await http.post(path + "?token=wrong", json=envelope())).status == 403
        assert (await http.post(path + "?token=s3cret", json={"not": "an envelope"})).status == 400
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
