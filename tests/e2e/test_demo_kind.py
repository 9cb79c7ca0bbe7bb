"""`make demo` as a user runs it: `swell demo` takes the kind path with real containers, and says so."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.tooling.stack import KindStack

# The first test of the tier also pays for the stack: images, cluster, chart (minutes when cold).
pytestmark = [pytest.mark.kind, pytest.mark.timeout(3600)]
ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = 400


def test_the_demo_runs_on_kind_scales_out_indexes_every_document_and_finds_one(
    kind_stack: KindStack, tmp_path: Path
) -> None:
    swell = shutil.which("swell")
    assert swell, "the `swell` command is not installed (pip install -e .)"
    finished = subprocess.run(
        [swell, "demo", "--tasks", str(DOCUMENTS), "--output", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert finished.returncode == 0, finished.stdout[-4000:] + finished.stderr[-4000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["path"].startswith(f"kind cluster {kind_stack.cluster.name}"), summary["path"]
    assert summary["tasks"] == DOCUMENTS // 4 == summary["done"] and summary["lost"] == 0, summary
    assert summary["peak_replicas"] >= 2, "the burst never scaled the pool out"
    assert summary["search"]["hits"][0]["id"] == f"doc-{DOCUMENTS // 2}", summary["search"]
    assert "ran on: kind cluster" in finished.stdout
