"""A worker stopped while it is still starting exits at once, also as PID 1 (a container's first process).

PID 1 ignores every signal it has no handler for, so a worker that installs its SIGTERM handler only once
it has started would keep running through ``terminationGracePeriodSeconds`` and take tasks meanwhile.
The worker runs here as PID 1 of its own PID namespace, as in a container without an init.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures.ports import free_port

ROOT = Path(__file__).resolve().parents[2]


def _pid1_namespace_works() -> bool:
    try:
        return subprocess.run(["unshare", "--pid", "--fork", "true"], capture_output=True).returncode == 0
    except FileNotFoundError:
        return False


def _child_of(pid: int, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        if children:
            return int(children[0])
        time.sleep(0.05)
    raise AssertionError("unshare started no child")


@pytest.mark.skipif(not _pid1_namespace_works(), reason="needs unshare --pid (root or user namespaces)")
def test_sigterm_while_starting_stops_a_pid1_worker(redis_url: str) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(str(ROOT / p) for p in ("operator", "worker", "cli", "contract", ".")),
        "SWELL_BACKEND": "redis-streams",
        "SWELL_REDIS_URL": redis_url,
        "SWELL_QUEUE": "tasks",
        "SWELL_HANDLERS": "tests.worker.slow_import_handler:SlowToImport",
        "SWELL_HTTP_PORT": str(free_port()),
    }
    wrapper = subprocess.Popen(["unshare", "--pid", "--fork", sys.executable, "-m", "swell_worker"], cwd=ROOT, env=env)
    try:
        worker = _child_of(wrapper.pid)
        time.sleep(3.0)  # inside the handler module's import
        assert wrapper.poll() is None, "the worker exited before the test stopped it"
        started = time.monotonic()
        os.kill(worker, signal.SIGTERM)
        wrapper.wait(timeout=15)
        assert time.monotonic() - started < 10, "SIGTERM was ignored while the worker was starting"
    finally:
        if wrapper.poll() is None:
            wrapper.kill()
            wrapper.wait()
