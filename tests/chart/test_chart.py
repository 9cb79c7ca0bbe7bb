"""The Helm chart: lint, schema-valid manifests (kubeconform -strict, offline), a restricted pod, least-privilege
RBAC proven with `kubectl auth can-i` on the real API server, and a CRD that outlives `helm uninstall`."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.schemas import write_schemas
from tests.fixtures.cluster import Cluster

CHART = Path(__file__).resolve().parents[2] / "charts" / "swell"
KINDS = {"Deployment", "Service", "ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding",
         "ConfigMap"}
VARIANTS = {
    "defaults": [],
    "namespaced": ["--set", "watchNamespaces={team-a,team-b}"],
    "everything-on": ["--set", "activator.enabled=true", "--set", "logLevel=debug", "--set", "replicaCount=1"],
}


def helm(cluster: Cluster, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(cluster.helm), *args], capture_output=True, text=True, env=cluster.env(), timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stderr}")
    return result


def render(cluster: Cluster, *values: str) -> list[dict[str, Any]]:
    text = helm(cluster, "template", "swell", str(CHART), "--namespace", "swell-system", *values).stdout
    return [doc for doc in yaml.safe_load_all(text) if doc]


@pytest.fixture(scope="module")
def schema_location(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> str:
    return write_schemas(cluster, tmp_path_factory.mktemp("schemas"), KINDS)


def test_helm_lint_is_clean(cluster: Cluster) -> None:
    linted = helm(cluster, "lint", "--strict", str(CHART))
    assert "1 chart(s) linted, 0 chart(s) failed" in linted.stdout


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_manifests_are_valid_for_this_kubernetes(cluster: Cluster, schema_location: str, variant: str) -> None:
    text = helm(cluster, "template", "swell", str(CHART), "--namespace", "swell-system", *VARIANTS[variant]).stdout
    checked = subprocess.run([str(cluster.kubeconform), "-strict", "-summary", "-schema-location", schema_location],
                             input=text, capture_output=True, text=True, timeout=120)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "Invalid: 0, Errors: 0, Skipped: 0" in checked.stdout


def test_kubeconform_catches_a_misspelt_field(cluster: Cluster, schema_location: str) -> None:
    text = helm(cluster, "template", "swell", str(CHART), "--namespace", "swell-system").stdout
    broken = text.replace("readOnlyRootFilesystem: true", "readOnlyRootFilesytem: true", 1)
    checked = subprocess.run([str(cluster.kubeconform), "-strict", "-schema-location", schema_location],
                             input=broken, capture_output=True, text=True, timeout=120)
    assert checked.returncode == 1 and "readOnlyRootFilesytem" in checked.stdout


def test_values_schema_refuses_bad_values(cluster: Cluster) -> None:
    for bad in (["--set", "replicaCount=-1"], ["--set", "watchNamespaces={Not_A_Namespace}"], ["--set", "typo=1"]):
        refused = helm(cluster, "template", "swell", str(CHART), *bad, check=False)
        assert refused.returncode != 0 and "values don't meet the specifications of the schema" in refused.stderr


def test_the_operator_pod_is_restricted(cluster: Cluster) -> None:
    (deployment,) = [d for d in render(cluster) if d["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]},
    }
    assert container["command"] == ["python", "-m", "swell_operator"]


def test_rbac_is_namespaced_when_namespaces_are_listed(cluster: Cluster) -> None:
    kinds = {d["kind"] for d in render(cluster, "--set", "watchNamespaces={team-a}")}
    assert "ClusterRole" not in kinds and "ClusterRoleBinding" not in kinds
    rules = next(d for d in render(cluster) if d["kind"] == "ClusterRole")["rules"]
    granted = {(r, v) for rule in rules for r in rule["resources"] for v in rule["verbs"]}
    assert ("secrets", "get") in granted
    assert ("secrets", "list") not in granted and ("secrets", "watch") not in granted
    assert not any("*" in rule["verbs"] or "*" in rule["resources"] for rule in rules)


@pytest.fixture
def installed(cluster: Cluster, namespace: str) -> Iterator[str]:
    release = f"swell-{namespace}"
    helm(cluster, "install", release, str(CHART), "--namespace", namespace, "--set", f"watchNamespaces={{{namespace}}}",
         "--wait=false")
    yield release
    helm(cluster, "uninstall", release, "--namespace", namespace, check=False)


def can_i(cluster: Cluster, sa: str, *args: str) -> bool:
    answer = cluster.kubectl("auth", "can-i", *args, f"--as={sa}", check=False)
    return answer.stdout.strip() == "yes"


def test_install_grants_what_the_operator_needs_and_nothing_more(
    cluster: Cluster, namespace: str, installed: str
) -> None:
    sa = f"system:serviceaccount:{namespace}:{installed}-operator"
    cluster.kubectl("get", "deployment", f"{installed}-operator", "-n", namespace)
    for verb_resource in (
        ("watch", "workerpools.swell.dev"), ("patch", "workerpools.swell.dev/status"),
        ("create", "deployments.apps"), ("patch", "deployments.apps/scale"), ("patch", "pods"),
        ("get", "secrets"), ("create", "events"), ("update", "leases.coordination.k8s.io"),
    ):
        assert can_i(cluster, sa, *verb_resource, "-n", namespace), verb_resource
    assert not can_i(cluster, sa, "list", "secrets", "-n", namespace)
    assert not can_i(cluster, sa, "get", "secrets", "-n", "kube-system")
    assert not can_i(cluster, sa, "create", "deployments.apps", "-n", "kube-system")
    assert not can_i(cluster, sa, "delete", "nodes")


def test_uninstall_keeps_the_crd(cluster: Cluster, namespace: str) -> None:
    release = f"keep-{namespace}"
    helm(cluster, "install", release, str(CHART), "--namespace", namespace, "--set", f"watchNamespaces={{{namespace}}}")
    cluster.kubectl("get", "crd", "workerpools.swell.dev")
    helm(cluster, "uninstall", release, "--namespace", namespace)
    assert cluster.kubectl("get", "crd", "workerpools.swell.dev").returncode == 0
    assert "workerpools" in cluster.kubectl("api-resources", "--api-group=swell.dev").stdout
