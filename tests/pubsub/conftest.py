"""What the Pub/Sub tests share: fresh resource names per test, and a worker's environment on the emulator."""

from __future__ import annotations

import uuid

import pytest

from tests.fixtures.pubsub_emulator import PubSubEmulator


@pytest.fixture
def names() -> dict[str, str]:
    """A topic, its subscription and a dead-letter pair, unique to the test, so tests share one emulator."""
    suffix = uuid.uuid4().hex[:8]
    return {
        "topic": f"tasks-{suffix}",
        "sub": f"tasks-sub-{suffix}",
        "dead": f"dead-{suffix}",
        "dead_sub": f"dead-sub-{suffix}",
    }


def pubsub_worker_env(emulator: PubSubEmulator, names: dict[str, str], redis_url: str, **extra: str) -> dict[str, str]:
    """A Pub/Sub worker on ``names``'s subscription, dead-lettering to ``names``'s topic, results in Redis."""
    return {
        **emulator.env(),
        "SWELL_BACKEND": "pubsub",
        "SWELL_PUBSUB_SUBSCRIPTION": names["sub"],
        "SWELL_PUBSUB_TOPIC": names["topic"],
        "SWELL_PUBSUB_DEAD_LETTER_TOPIC": names["dead"],
        "SWELL_RESULT_REDIS_URL": redis_url,
        **extra,
    }
