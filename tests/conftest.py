"""Fixtures live in tests/fixtures, one module per real service; each is registered here once."""

pytest_plugins = [
    "tests.fixtures.redis_server",
    "tests.fixtures.cluster",
    "tests.fixtures.pubsub_emulator",
    "tests.fixtures.operator",
    "tests.fixtures.workers",
    "tests.fixtures.milvus",
]
