"""Offline JSON schemas for kubeconform, from the running API server's own OpenAPI document.

kubeconform downloads schemas from GitHub by default; the tests have no network and want the schemas
of exactly the Kubernetes version they run against, so each kind's schema is cut from ``/openapi/v2``
(every definition kept, refs stay local) plus the WorkerPool CRD's schema from the model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from swell_operator.crdgen import crd_manifest

from tests.fixtures.cluster import Cluster

# kubeconform's file name template: deployment-apps-v1.json, service-v1.json, workerpool-swell.dev-v1alpha1.json
LOCATION = "{{ .ResourceKind }}{{ .KindSuffix }}.json"


def _suffix(group: str, version: str) -> str:
    """kubeconform names a group by its first label: rbac.authorization.k8s.io -> rbac."""
    return f"-{group.split('.')[0]}-{version}" if group else f"-{version}"


def _strict(node: Any) -> Any:
    """Objects with properties refuse unknown fields: kubeconform's ``-strict`` relies on such "strict" schemas."""
    if isinstance(node, dict):
        if node.get("format") == "int-or-string":  # OpenAPI v2 says "string"; the API server takes both
            rest = {k: v for k, v in node.items() if k not in ("type", "format")}
            return {**rest, "oneOf": [{"type": "string"}, {"type": "integer"}]}
        out = {k: _strict(v) for k, v in node.items()}
        if "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [_strict(v) for v in node]
    return node


def write_schemas(cluster: Cluster, directory: Path, kinds: set[str]) -> str:
    """Write the schemas of ``kinds`` into ``directory``; return the ``-schema-location`` for kubeconform."""
    openapi = json.loads(cluster.kubectl("get", "--raw", "/openapi/v2", timeout=120).stdout)
    definitions = _strict(openapi["definitions"])
    for name, schema in definitions.items():
        for gvk in schema.get("x-kubernetes-group-version-kind", []):
            if gvk["kind"] not in kinds:
                continue
            file = directory / f"{gvk['kind'].lower()}{_suffix(gvk['group'], gvk['version'])}.json"
            file.write_text(json.dumps({"$ref": f"#/definitions/{name}", "definitions": definitions}))
    crd = crd_manifest()
    version = crd["spec"]["versions"][0]
    kind, group = crd["spec"]["names"]["kind"], crd["spec"]["group"]
    schema = _strict(version["schema"]["openAPIV3Schema"])
    if kind in kinds:
        (directory / f"{kind.lower()}{_suffix(group, version['name'])}.json").write_text(json.dumps(schema))
    return str(directory / LOCATION)
