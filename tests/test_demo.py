"""`make demo`'s program on the fast tier: `swell demo --local` on its own local control plane, a small burst.

The default path, kind with real containers, runs in the kind tier (tests/e2e/test_demo_kind.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.cluster
ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = 400


def test_the_demo_scales_out_indexes_every_document_returns_to_zero_and_finds_one(tmp_path: Path) -> None:
    swell = shutil.which("swell")
    assert swell, "the `swell` command is not installed (pip install -e .)"
    finished = subprocess.run(
        [swell, "demo", "--local", "--tasks", str(DOCUMENTS), "--output", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert finished.returncode == 0, finished.stdout[-4000:] + finished.stderr[-4000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["tasks"] == DOCUMENTS // 4 == summary["done"] and summary["lost"] == 0, summary
    assert summary["peak_replicas"] >= 2, "the burst never scaled the pool out"
    assert summary["search"]["hits"][0]["id"] == f"doc-{DOCUMENTS // 2}", summary["search"]
    assert (tmp_path / "demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "back at zero after" in finished.stdout and "lost 0" in finished.stdout
    assert summary["path"].startswith("local control plane"), summary["path"]
