"""The tests' own Redis keeps its data across a restart and leaves nothing in /tmp once dropped."""

from __future__ import annotations

import gc

from tests.fixtures.redis_server import RedisServer


def test_a_restarted_redis_keeps_its_data_and_a_dropped_one_removes_its_directory() -> None:
    server = RedisServer()
    server.start()
    client = server.client()
    client.set("kept", "1")
    server.stop()
    server.start()
    assert client.get("kept") == b"1"
    client.close()
    server.stop()
    directory = server.dir
    assert directory.is_dir()
    del server
    gc.collect()
    assert not directory.exists()
