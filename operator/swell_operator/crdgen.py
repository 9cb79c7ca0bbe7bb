"""The WorkerPool CRD and its field reference, generated from the pydantic model.

pydantic writes JSON Schema 2020-12; the API server wants a *structural* OpenAPI v3.0 schema: every node
typed, no ``$ref``, no ``anyOf`` with a null branch (``nullable`` instead), no ``title``, no ``const``, and
``exclusiveMinimum`` as a flag. This module does that translation once, so the model stays the only
place a field is declared. ``python -m swell_operator.crdgen`` writes the files; ``--check`` fails when
a committed file differs from what the model generates (the tests run it).
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from swell_operator.model import (
    GROUP,
    KIND,
    PLURAL,
    PRINTER_COLUMNS,
    SHORT_NAMES,
    SINGULAR,
    VERSION,
    WorkerPoolSpec,
    WorkerPoolStatus,
)

ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = f"{PLURAL}.{GROUP}.yaml"
# The chart's crds/ directory holds the same file, so `helm install` installs it and never deletes it.
GENERATED = (Path("crds") / CRD_FILE, Path("charts/swell/crds") / CRD_FILE, Path("docs/reference.md"))


def structural(schema: dict[str, Any]) -> dict[str, Any]:
    """The model's JSON Schema as a structural OpenAPI v3.0 schema, ``$defs`` inlined."""
    definitions = schema.get("$defs", {})

    def convert(node: Any) -> Any:
        if isinstance(node, list):
            return [convert(item) for item in node]
        if not isinstance(node, dict):
            return node
        node = dict(node)
        ref = node.pop("$ref", None)
        if ref is not None:
            node = {**definitions[ref.rsplit("/", 1)[-1]], **node}
        branches = node.get("anyOf")
        if branches is not None:
            kept = [b for b in branches if b.get("type") != "null"]
            if len(kept) == 1 and len(kept) < len(branches):
                del node["anyOf"]
                node = {**kept[0], **node, "nullable": True}
                if node.get("default", 0) is None:
                    del node["default"]
                return convert(node)
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in ("title", "$defs"):
                continue
            if key == "const":
                out["enum"] = [value]
            elif key == "exclusiveMinimum":
                out["minimum"], out["exclusiveMinimum"] = value, True
            elif key == "exclusiveMaximum":
                out["maximum"], out["exclusiveMaximum"] = value, True
            elif key == "additionalProperties":
                if value is True and "properties" not in node:
                    out["x-kubernetes-preserve-unknown-fields"] = True
                elif isinstance(value, dict):
                    out[key] = convert(value)
            elif key == "properties":
                required = set(node.get("required", ()))
                out[key] = {name: _default_empty(convert(sub), name in required) for name, sub in value.items()}
            elif key == "patternProperties":
                out[key] = {name: convert(sub) for name, sub in value.items()}
            else:
                out[key] = convert(value)
        if out.get("x-kubernetes-preserve-unknown-fields") and "type" not in out:
            out["type"] = "object"
        return out

    converted: dict[str, Any] = convert(schema)
    return converted


def _default_empty(node: dict[str, Any], required: bool) -> dict[str, Any]:
    """An optional, non-nullable object field came from a ``default_factory``: give it a default built from
    its fields' defaults (the API server only defaults inside objects that exist, and checks CEL rules
    against the default as written)."""
    if required or node.get("type") != "object" or node.get("nullable") or "default" in node:
        return node
    if "properties" not in node:
        return node
    defaults = {name: sub["default"] for name, sub in node["properties"].items() if "default" in sub}
    return {**node, "default": defaults}


def crd_manifest() -> dict[str, Any]:
    """The apiextensions.k8s.io/v1 CRD for WorkerPools.

    No ``scale`` subresource, on purpose: Swell owns the replica count and the spec holds only bounds
    (``replicas.min``/``max``). A ``/scale`` endpoint would invite ``kubectl scale`` or an HPA to write a
    number the next decision overwrites within a second; pausing (``scaling.paused``) is the supported way
    to take the wheel. The ``all`` category lists pools in ``kubectl get all``.
    """
    spec = structural(WorkerPoolSpec.model_json_schema(by_alias=True))
    status = structural(WorkerPoolStatus.model_json_schema(by_alias=True))
    status.pop("required", None)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{PLURAL}.{GROUP}",
            "annotations": {"swell.dev/generated-by": "python -m swell_operator.crdgen"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": list(SHORT_NAMES),
                "categories": ["swell", "all"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [dict(column) for column in PRINTER_COLUMNS],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A pool of queue workers that Swell scales from the depth of their queue.",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec,
                                "status": status,
                            },
                        }
                    },
                }
            ],
        },
    }


def _shown_default(node: dict[str, Any]) -> str:
    if "default" not in node:
        return ""
    value = node["default"]
    if isinstance(value, dict):
        return "its fields' defaults"
    return f"`{json.dumps(value)}`"


def _fields(schema: dict[str, Any], path: str) -> Iterator[tuple[str, str, str, str]]:
    for name, node in schema.get("properties", {}).items():
        here = f"{path}.{name}"
        kind = node.get("type", "object")
        if kind == "array" and "items" in node:
            kind = f"array of {node['items'].get('type', 'object')}"
        if "enum" in node:
            kind += " (" + ", ".join(f"`{v}`" for v in node["enum"]) + ")"
        elif kind.startswith("array") and "enum" in node.get("items", {}):
            kind += " (" + ", ".join(f"`{v}`" for v in node["items"]["enum"]) + ")"
        required = name in schema.get("required", ())
        default = "required" if required else _shown_default(node)
        description = " ".join(str(node.get("description", "")).split())
        yield here, kind, default, description
        yield from _fields(node, here)
        if "items" in node:
            yield from _fields(node["items"], f"{here}[]")


def _rules(schema: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, str]]]:
    """Every CEL rule in the tree, with the path of the object it is attached to."""
    for rule in schema.get("x-kubernetes-validations", []):
        yield path, rule
    for name, node in schema.get("properties", {}).items():
        yield from _rules(node, f"{path}.{name}")
    if "items" in schema:
        yield from _rules(schema["items"], f"{path}[]")


def reference_markdown(crd: dict[str, Any]) -> str:
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    lines = [
        "# WorkerPool reference",
        "",
        f"`{GROUP}/{VERSION}`, kind `{KIND}`, short name `{SHORT_NAMES[0]}`. Generated from "
        "`operator/swell_operator/model.py` by `python -m swell_operator.crdgen`; do not edit by hand.",
        "",
    ]
    rules = list(_rules(schema["properties"]["spec"], "spec"))
    for section in ("spec", "status"):
        lines += [f"## {section}", "", "| field | type | default | description |", "|---|---|---|---|"]
        for path, kind, default, description in _fields(schema["properties"][section], section):
            lines.append(f"| `{path}` | {kind} | {default} | {description} |")
        lines.append("")
        if section == "spec" and rules:
            lines += ["Rules the API server enforces on `spec`:", ""]
            lines += [f"- `{path}`: {rule['message']}" for path, rule in rules] + [""]
    return "\n".join(lines)


def render() -> dict[Path, str]:
    crd = crd_manifest()
    text = "# Generated by `python -m swell_operator.crdgen` from the pydantic model; do not edit.\n"
    text += yaml.safe_dump(crd, sort_keys=False, width=120)
    crd_path, chart_path, reference_path = GENERATED
    return {crd_path: text, chart_path: text, reference_path: reference_markdown(crd)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if a generated file is stale")
    parser.add_argument("--root", type=Path, default=ROOT)
    args = parser.parse_args(argv)
    stale = 0
    for relative, text in render().items():
        path = args.root / relative
        current = path.read_text() if path.exists() else ""
        if current == text:
            continue
        if args.check:
            stale += 1
            diff = difflib.unified_diff(
                current.splitlines(), text.splitlines(), str(relative), "generated", lineterm=""
            )
            print("\n".join(list(diff)[:40]), file=sys.stderr)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {relative}")
    if stale:
        print(f"{stale} generated file(s) are stale: run `python -m swell_operator.crdgen`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
