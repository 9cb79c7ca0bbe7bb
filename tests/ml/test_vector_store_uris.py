"""Which vector store a URI opens, and a quiet start: embedded Milvus Lite logs no gRPC error.

Embedded Milvus Lite leaves AllocTimestamp unimplemented; pymilvus calls it while a new collection's
index is built and ignores the answer, but gRPC's server logged it as an ERROR with a traceback at
every worker start ("Exception calling application: Method not implemented!").
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pytest
from swell_worker.config import ConfigError
from swell_worker.vectorstore import Document, QuietUnimplemented, VectorStore, is_embedded

pytestmark = pytest.mark.model


async def test_embedded_store_starts_without_a_grpc_error_and_works(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    store = VectorStore(str(tmp_path / "v.db"), "docs", dimensions=4)  # creates the collection and its index
    try:
        vector = np.array([[1.0, 0.0, 0.0, 0.0]], dtype=np.float32)
        assert await store.upsert([Document("a", "alpha", {})], vector) == 1
        (hit,) = await store.search(vector[0], k=1)
        assert hit.id == "a"
    finally:
        store.close()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


def _record_raised_in(function_name: str) -> logging.LogRecord:
    namespace: dict[str, object] = {}
    exec(f"def {function_name}():\n    raise NotImplementedError('Method not implemented!')", namespace)
    try:
        namespace[function_name]()  # type: ignore[operator]
    except NotImplementedError:
        exc_info = sys.exc_info()
    return logging.LogRecord("grpc._server", logging.ERROR, __file__, 1, "Exception calling application: %s",
                             ("Method not implemented!",), exc_info)


def test_only_the_methods_pymilvus_ignores_are_silenced() -> None:
    quiet = QuietUnimplemented()
    assert not quiet.filter(_record_raised_in("AllocTimestamp"))
    assert quiet.filter(_record_raised_in("Search"))  # a real gap stays visible
    assert quiet.filter(logging.LogRecord("grpc._server", logging.ERROR, __file__, 1, "other", (), None))


def test_uris_name_a_server_or_an_embedded_file() -> None:
    assert is_embedded("/tmp/swell-vectors.db")
    assert is_embedded("vectors.db")
    for server in ("http://milvus:19530", "https://milvus.example", "tcp://10.0.0.1:19530", "unix:///run/m.sock"):
        assert not is_embedded(server)


def test_a_file_without_milvus_lite_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "milvus_lite", None)  # what an image without the lite extra sees
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "milvus_lite" else real(name, *a))
    with pytest.raises(ConfigError, match=r"swell\[lite\].*http://milvus:19530"):
        VectorStore(str(tmp_path / "v.db"), "docs", dimensions=4)
