"""The kind tier: one kind cluster for the whole tier, running what a user runs (images, chart, Redis).

A machine where Docker cannot run fails these tests with the reason; they are never skipped, because a
skipped end-to-end test proves nothing. ``SWELL_E2E_NAMESPACE`` picks the namespace (default swell-e2e).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.tooling.kind.cluster import KindUnavailable
from tests.tooling.stack import KindStack, bring_up

NAMESPACE = os.environ.get("SWELL_E2E_NAMESPACE", "swell-e2e")


@pytest.fixture(scope="session")
def kind_stack() -> KindStack:
    try:
        return bring_up(NAMESPACE, log=lambda message: print(f"[kind] {message}", flush=True))
    except KindUnavailable as exc:
        pytest.fail(f"the kind tier cannot run on this machine: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def redis_url(kind_stack: KindStack) -> Iterator[str]:
    """The in-cluster Redis, reached from the test through ``kubectl port-forward``."""
    with kind_stack.port_forward("redis", 6379) as port:
        yield f"redis://127.0.0.1:{port}/0"
