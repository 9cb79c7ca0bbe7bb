"""Registers the shared fixtures; each lives in tests/fixtures/ under the name of what it provides."""

pytest_plugins = [
    "tests.fixtures.redis_server",
]
