"""The committed CRD, the chart's copy and the field reference are exactly what the model generates."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from swell_operator import crdgen


def test_committed_files_match_the_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert crdgen.main(["--check"]) == 0, capsys.readouterr().err


def test_check_fails_on_a_stale_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for relative in crdgen.GENERATED:
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(crdgen.ROOT / relative, tmp_path / relative)
    stale = tmp_path / crdgen.GENERATED[0]
    stale.write_text(stale.read_text().replace("replicas.min must be <= replicas.max", "anything goes"))
    assert crdgen.main(["--check", "--root", str(tmp_path)]) == 1
    assert "anything goes" in capsys.readouterr().err


def test_schema_is_structural() -> None:
    schema = crdgen.crd_manifest()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]

    def walk(node: object, path: str) -> None:
        if isinstance(node, dict):
            for banned in ("$ref", "anyOf", "title", "const", "$defs"):
                assert banned not in node, f"{banned} at {path}"
            if "properties" in node:
                assert node.get("type") == "object", f"untyped object at {path}"
                for name, sub in node["properties"].items():
                    assert "type" in sub or sub.get("x-kubernetes-preserve-unknown-fields"), f"untyped {path}.{name}"
                    walk(sub, f"{path}.{name}")
            if "items" in node:
                walk(node["items"], f"{path}[]")

    walk(schema, "")
    rules = [r["rule"] for r in schema["properties"]["spec"]["x-kubernetes-validations"]]
    assert "has(self.worker) != has(self.scaleTargetRef)" in rules
