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
    for relative in crdgen.GENERATED[:2]:  # crds/ and the chart's template, each checked
        stale = tmp_path / relative
        fresh = stale.read_text()
        stale.write_text(fresh.replace("replicas.min must be <= replicas.max", "anything goes"))
        assert crdgen.main(["--check", "--root", str(tmp_path)]) == 1
        assert "anything goes" in capsys.readouterr().err
        stale.write_text(fresh)
    assert crdgen.main(["--check", "--root", str(tmp_path)]) == 0


def test_schema_is_structural() -> None:
    schema = crdgen.crd_manifest()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]

    def walk(node: object, path: str) -> None:
        if isinstance(node, dict):
            for banned in ("$ref", "anyOf", "title", "const", "$defs"):
                assert banned not in node, f"{banned} at {path}"
            if "properties" in node:
                assert node.get("type") == "object", f"untyped object at {path}"
                for name, sub in node["properties"].items():
                    typed = "type" in sub or sub.get("x-kubernetes-int-or-string")
                    assert typed or sub.get("x-kubernetes-preserve-unknown-fields"), f"untyped {path}.{name}"
                    walk(sub, f"{path}.{name}")
            if "items" in node:
                walk(node["items"], f"{path}[]")

    walk(schema, "")
    rules = [r["rule"] for r in schema["properties"]["spec"]["x-kubernetes-validations"]]
    assert "has(self.worker) != has(self.scaleTargetRef)" in rules


def test_every_field_is_documented() -> None:
    """The reference is generated from descriptions, so a field without one would be a blank row."""
    schema = crdgen.crd_manifest()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    blank = []

    def walk(node: dict[str, object], path: str) -> None:
        properties = node.get("properties", {})
        assert isinstance(properties, dict)
        for name, sub in properties.items():
            if not sub.get("description"):
                blank.append(f"{path}.{name}")
            walk(sub, f"{path}.{name}")
        items = node.get("items")
        if isinstance(items, dict):
            walk(items, f"{path}[]")

    for section in ("spec", "status"):
        walk(schema["properties"][section], section)
    assert blank == []
    reference = (crdgen.ROOT / "docs" / "reference.md").read_text()
    assert "| `spec.scaling.targetWaitSeconds` | number | `30.0` |" in reference
    assert "- `spec.replicas`: replicas.min must be <= replicas.max" in reference


def test_no_scale_subresource_because_swell_owns_replicas() -> None:
    version = crdgen.crd_manifest()["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    bounds = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["replicas"]
    assert set(bounds["properties"]) == {"min", "max"}  # bounds only: no count for /scale to point at
