"""The Helm chart: lint, schema-valid manifests (kubeconform -strict, offline), a restricted pod, least-privilege
RBAC proven with `kubectl auth can-i` on the real API server, and a CRD that outlives `helm uninstall`."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY
from swell_operator import metrics as operator_metrics
from swell_operator.deployment import render_deployment
from swell_operator.model import WorkerPoolSpec
from swell_worker import metrics as _worker_metrics  # noqa: F401  (registers the worker's series)

from tests.chart.schemas import write_schemas
from tests.fixtures.cluster import Cluster

CHART = Path(__file__).resolve().parents[2] / "charts" / "swell"
KINDS = {
    "Deployment",
    "Service",
    "ServiceAccount",
    "Role",
    "RoleBinding",
    "ClusterRole",
    "ClusterRoleBinding",
    "ConfigMap",
    "CustomResourceDefinition",
    "PodDisruptionBudget",
    "Job",
    "Pod",
}
VALID_SPEC = {
    "queue": {
        "backend": "redis-streams",
        "redis": {"urlSecretRef": {"name": "redis", "key": "url"}},
        "streams": {"streams": ["tasks"]},
    },
    "worker": {"handlers": ["noop"]},
}
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


def install_into(cluster: Cluster, release: str, namespace: str, *values: str) -> None:
    """Install the chart watching only ``namespace``; the session's CRD (tests/fixtures/operator.py) stays."""
    helm(
        cluster,
        "install",
        release,
        str(CHART),
        "--namespace",
        namespace,
        "--set",
        f"watchNamespaces={{{namespace}}}",
        "--set",
        "crds.install=false",
        *values,
        "--wait=false",
    )


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
    checked = subprocess.run(
        [str(cluster.kubeconform), "-strict", "-summary", "-schema-location", schema_location],
        input=text,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "Invalid: 0, Errors: 0, Skipped: 0" in checked.stdout


def test_kubeconform_catches_a_misspelt_field(cluster: Cluster, schema_location: str) -> None:
    text = helm(cluster, "template", "swell", str(CHART), "--namespace", "swell-system").stdout
    broken = text.replace("readOnlyRootFilesystem: true", "readOnlyRootFilesytem: true", 1)
    checked = subprocess.run(
        [str(cluster.kubeconform), "-strict", "-schema-location", schema_location],
        input=broken,
        capture_output=True,
        text=True,
        timeout=120,
    )
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
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
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


def test_ports_must_not_clash(cluster: Cluster) -> None:
    refused = helm(cluster, "template", "swell", str(CHART), "--set", "healthPort=9090", check=False)
    assert refused.returncode != 0 and "metrics.port, healthPort and activator.port must differ" in refused.stderr


def test_the_activator_flags_reach_the_operator_and_parse(cluster: Cluster) -> None:
    from swell_operator.__main__ import parse_args

    def args(*values: str) -> list[str]:
        (deployment,) = [d for d in render(cluster, *values) if d["kind"] == "Deployment"]
        return list(deployment["spec"]["template"]["spec"]["containers"][0]["args"])

    url = "https://activator.example.com"
    on = args("--set", "activator.enabled=true", "--set", f"activator.url={url}")
    parsed = parse_args(on)
    assert (parsed.activator_port, parsed.activator_url) == (8082, url)
    assert not [a for a in args() if a.startswith("--activator")]
    refused = helm(cluster, "template", "swell", str(CHART), "--set", "activator.url=https://x/?token=a", check=False)
    assert refused.returncode != 0  # a token never goes into the activator URL


def test_two_replicas_prefer_different_nodes(cluster: Cluster) -> None:
    def affinity(*values: str) -> Any:
        (deployment,) = [d for d in render(cluster, *values) if d["kind"] == "Deployment"]
        return deployment["spec"]["template"]["spec"].get("affinity")

    spread = affinity()["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert affinity("--set", "replicaCount=1") is None


def test_monitors_select_the_operator_service_and_the_worker_pods(cluster: Cluster) -> None:
    docs = render(
        cluster,
        "--set",
        "metrics.serviceMonitor.enabled=true",
        "--set",
        "metrics.podMonitor.enabled=true",
        "--set",
        "activator.enabled=true",
        "--set",
        "watchNamespaces={team-a}",
    )
    (monitor,) = [d for d in docs if d["kind"] == "ServiceMonitor"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    services = [d for d in docs if d["kind"] == "Service"]
    selected = [s for s in services if selector.items() <= s["metadata"]["labels"].items()]
    assert [s["metadata"]["name"] for s in selected] == ["swell-operator"]  # not the activator
    assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in selected[0]["spec"]["ports"]}
    (pods,) = [d for d in docs if d["kind"] == "PodMonitor"]
    assert pods["spec"]["namespaceSelector"] == {"matchNames": ["team-a"]}
    # The labels and port name the operator gives the bundled worker's pods.
    worker = render_deployment("pool", WorkerPoolSpec.model_validate(VALID_SPEC), replicas=1)["spec"]["template"]
    assert pods["spec"]["selector"]["matchLabels"].items() <= worker["metadata"]["labels"].items()
    port_names = {p["name"] for c in worker["spec"]["containers"] for p in c.get("ports", [])}
    assert pods["spec"]["podMetricsEndpoints"][0]["port"] in port_names
    assert not [d for d in render(cluster) if d["kind"] in {"ServiceMonitor", "PodMonitor"}]  # off by default


def test_dashboard_reads_the_series_the_code_exports(cluster: Cluster) -> None:
    (configmap,) = [d for d in render(cluster) if d["kind"] == "ConfigMap"]
    dashboard = json.loads(configmap["data"]["swell.json"])
    queries = " ".join(t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", []))
    exported = {m.name for m in operator_metrics.REGISTRY.collect()} | {
        m.name for m in REGISTRY.collect() if m.name.startswith("swell_")
    }
    used = set(re.findall(r"\b(swell_[a-z_]+?)(?:_bucket|_total)?\b", queries))
    assert used and used <= exported, used - exported
    titles = " ".join(panel["title"].lower() for panel in dashboard["panels"])
    for topic in ("backlog", "replicas", "latency", "failures", "dead"):
        assert topic in titles


@pytest.fixture
def installed(cluster: Cluster, namespace: str) -> Iterator[str]:
    release = f"swell-{namespace}"
    install_into(cluster, release, namespace)
    yield release
    helm(cluster, "uninstall", release, "--namespace", namespace, check=False)


SUBRESOURCES = ("status", "scale", "finalizers")


def can_i(cluster: Cluster, sa: str, verb: str, resource: str, *args: str) -> bool:
    """Whether ``sa`` may: ``resource`` is ``plural[.group][/subresource or name]``; args ``-n NS`` or none.

    A SubjectAccessReview, not ``kubectl auth can-i``: that resolves the type through discovery and answers
    "no" for one the API server does not serve yet (a CRD another release installs, KEDA's ScaledObject)."""
    kind, _, rest = resource.partition("/")
    plural, _, group = kind.partition(".")
    attributes = {"verb": verb, "resource": plural, "group": group}
    if rest in SUBRESOURCES:
        attributes["subresource"] = rest
    elif rest:
        attributes["name"] = rest
    if "-n" in args:
        attributes["namespace"] = args[args.index("-n") + 1]
    account_namespace = sa.split(":")[2]
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": sa,
            "groups": ["system:serviceaccounts", f"system:serviceaccounts:{account_namespace}", "system:authenticated"],
            "resourceAttributes": attributes,
        },
    }
    answer = cluster.kubectl("create", "-o", "jsonpath={.status.allowed}", "-f", "-", input=json.dumps(review))
    return answer.stdout.strip() == "true"


# Every verb the operator's code (and kopf) calls, and the ones it must not have: deployments are removed by
# owner references, pods are never watched, status is only merge-patched.
GRANTED = (
    ("list", "workerpools.swell.dev"),
    ("watch", "workerpools.swell.dev"),
    ("patch", "workerpools.swell.dev"),
    ("patch", "workerpools.swell.dev/status"),
    ("update", "workerpools.swell.dev/finalizers"),
    ("get", "deployments.apps"),
    ("create", "deployments.apps"),
    ("patch", "deployments.apps"),
    ("patch", "deployments.apps/scale"),
    ("list", "pods"),
    ("patch", "pods"),
    ("get", "secrets"),
    ("create", "events"),
    ("create", "services"),
    ("patch", "services"),
    ("list", "horizontalpodautoscalers.autoscaling"),
    ("list", "scaledobjects.keda.sh"),
)
REFUSED = (
    ("delete", "deployments.apps"),
    ("update", "deployments.apps"),
    ("list", "deployments.apps"),
    ("watch", "deployments.apps"),
    ("get", "deployments.apps/scale"),
    ("update", "deployments.apps/scale"),
    ("watch", "pods"),
    ("get", "pods"),
    ("delete", "pods"),
    ("create", "pods"),
    ("update", "workerpools.swell.dev/status"),
    ("get", "workerpools.swell.dev/status"),
    ("update", "workerpools.swell.dev"),
    ("get", "workerpools.swell.dev"),
    ("create", "workerpools.swell.dev"),
    ("delete", "workerpools.swell.dev"),
    ("list", "secrets"),
    ("watch", "secrets"),
    ("delete", "services"),
    ("get", "services"),
    ("patch", "events"),
    ("create", "events.events.k8s.io"),
    ("patch", "horizontalpodautoscalers.autoscaling"),
    ("get", "scaledobjects.keda.sh"),
)


def test_install_grants_what_the_operator_needs_and_nothing_more(
    cluster: Cluster, namespace: str, installed: str
) -> None:
    sa = f"system:serviceaccount:{namespace}:{installed}-operator"
    cluster.kubectl("get", "deployment", f"{installed}-operator", "-n", namespace)
    for verb_resource in GRANTED:
        assert can_i(cluster, sa, *verb_resource, "-n", namespace), verb_resource
    for verb_resource in REFUSED:
        assert not can_i(cluster, sa, *verb_resource, "-n", namespace), verb_resource
    assert can_i(cluster, sa, "create", "leases.coordination.k8s.io", "-n", namespace)
    assert can_i(cluster, sa, "update", "leases.coordination.k8s.io/swell-operator", "-n", namespace)
    assert not can_i(cluster, sa, "update", "leases.coordination.k8s.io/someone-elses", "-n", namespace)
    assert not can_i(cluster, sa, "list", "secrets", "--all-namespaces")
    assert not can_i(cluster, sa, "get", "secrets", "-n", "kube-system")
    assert not can_i(cluster, sa, "create", "deployments.apps", "-n", "kube-system")
    assert not can_i(cluster, sa, "watch", "workerpools.swell.dev", "--all-namespaces")
    assert not can_i(cluster, sa, "update", "leases.coordination.k8s.io", "-n", "kube-system")
    assert not can_i(cluster, sa, "delete", "nodes")


def test_the_granted_verbs_are_the_ones_the_code_calls() -> None:
    """A grep of the operator's API calls: a new call without its grant (or a dropped one) fails here."""
    verbs = {
        "read": "get",
        "list": "list",
        "create": "create",
        "patch": "patch",
        "replace": "update",
        "delete": "delete",
    }
    resources = {
        "deployment": "deployments.apps",
        "deployment_scale": "deployments.apps/scale",
        "pod": "pods",
        "service": "services",
        "secret": "secrets",
        "custom_object": "workerpools.swell.dev",
        "custom_object_status": "workerpools.swell.dev/status",
        "lease": "leases.coordination.k8s.io",
        "horizontal_pod_autoscaler": "horizontalpodautoscalers.autoscaling",
    }
    source = " ".join(p.read_text() for p in (CHART.parents[1] / "operator" / "swell_operator").glob("*.py"))
    called = {
        (verbs[verb], resources[kind])
        for verb, kind in re.findall(r"\.(read|list|create|patch|replace|delete)_namespaced_(\w+?)\(", source)
    }
    called.discard(("update", "leases.coordination.k8s.io"))  # the Lease is granted in its own Role
    called.discard(("create", "leases.coordination.k8s.io"))
    called.discard(("get", "leases.coordination.k8s.io"))
    called.discard(("patch", "leases.coordination.k8s.io"))
    assert called <= set(GRANTED), called - set(GRANTED)
    assert not called & set(REFUSED), called & set(REFUSED)


def test_a_clusterwide_install_reaches_every_namespace_but_no_further(cluster: Cluster, namespace: str) -> None:
    release = f"cw-{namespace}"
    helm(
        cluster, "install", release, str(CHART), "--namespace", namespace, "--set", "crds.install=false", "--wait=false"
    )
    try:
        sa = f"system:serviceaccount:{namespace}:{release}-operator"
        for verb_resource in (
            ("watch", "workerpools.swell.dev"),
            ("patch", "workerpools.swell.dev/status"),
            ("create", "deployments.apps"),
            ("patch", "pods"),
            ("get", "secrets"),
        ):
            assert can_i(cluster, sa, *verb_resource, "--all-namespaces"), verb_resource
        assert can_i(cluster, sa, "watch", "customresourcedefinitions.apiextensions.k8s.io")
        assert can_i(cluster, sa, "update", "leases.coordination.k8s.io/swell-operator", "-n", namespace)
        for verb_resource in (
            ("delete", "deployments.apps"),
            ("watch", "pods"),
            ("update", "workerpools.swell.dev/status"),
            ("list", "secrets"),
            ("watch", "secrets"),
            ("list", "namespaces"),
            ("delete", "nodes"),
            ("update", "workerpools.swell.dev"),
            ("update", "leases.coordination.k8s.io"),
            ("patch", "customresourcedefinitions.apiextensions.k8s.io"),
            ("create", "clusterrolebindings.rbac.authorization.k8s.io"),
            ("create", "pods"),
        ):
            assert not can_i(cluster, sa, *verb_resource, "--all-namespaces"), verb_resource
    finally:
        helm(cluster, "uninstall", release, "--namespace", namespace, check=False)


CRD = "workerpools.swell.dev"


def printer_columns(cluster: Cluster) -> list[str]:
    crd = json.loads(cluster.kubectl("get", "crd", CRD, "-o", "json").stdout)
    return [c["name"] for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]]


def test_the_crd_is_a_template_behind_crds_install_and_kept_by_default(cluster: Cluster) -> None:
    (crd,) = [d for d in render(cluster) if d["kind"] == "CustomResourceDefinition"]
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    from swell_operator.crdgen import crd_manifest

    assert crd["spec"] == crd_manifest()["spec"], "the chart's CRD is not the one the model generates"
    (gone,) = [d for d in render(cluster, "--set", "crds.keep=false") if d["kind"] == "CustomResourceDefinition"]
    assert "helm.sh/resource-policy" not in gone["metadata"]["annotations"]
    assert not [d for d in render(cluster, "--set", "crds.install=false") if d["kind"] == "CustomResourceDefinition"]
    assert not (CHART / "crds").exists(), "Helm never upgrades crds/: the CRD must not be there too"


def test_helm_upgrade_updates_the_crd_and_uninstall_keeps_it(
    cluster: Cluster, namespace: str, workerpool_crd: str, tmp_path: Path
) -> None:
    release = f"crd-{namespace}"
    old = tmp_path / "swell"
    shutil.copytree(CHART, old)
    template = old / "templates" / "crds" / f"{CRD}.yaml"
    template.write_text(template.read_text().replace("name: Degraded", "name: Unhealthy"))
    values = ("--namespace", namespace, "--set", f"watchNamespaces={{{namespace}}}", "--wait=false")
    # The CRD exists, applied by kubectl (as after a chart that shipped it in crds/): docs/upgrade.md's flags.
    helm(cluster, "install", release, str(old), *values, "--take-ownership", "--force-conflicts")
    try:
        assert "Unhealthy" in printer_columns(cluster) and "Degraded" not in printer_columns(cluster)
        helm(cluster, "upgrade", release, str(CHART), *values)
        assert "Degraded" in printer_columns(cluster) and "Unhealthy" not in printer_columns(cluster)
    finally:
        helm(cluster, "uninstall", release, "--namespace", namespace)
    assert cluster.kubectl("get", "crd", CRD).returncode == 0
    assert "workerpools" in cluster.kubectl("api-resources", "--api-group=swell.dev").stdout


def test_worker_image_and_default_vector_store_are_operator_settings(cluster: Cluster) -> None:
    from swell_operator.__main__ import parse_args

    def operator_args(*values: str) -> Any:
        (deployment,) = [d for d in render(cluster, *values) if d["kind"] == "Deployment"]
        return parse_args(deployment["spec"]["template"]["spec"]["containers"][0]["args"])

    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    defaults = operator_args()
    assert defaults.worker_image == f"swell-worker:{chart['appVersion']}"  # the tag scripts/images/build.sh makes
    assert defaults.default_vector_uri is None
    chosen = operator_args(
        "--set",
        "worker.image.repository=registry.example/swell-worker",
        "--set",
        "worker.image.tag=2.0.1",
        "--set",
        "vectorStore.defaultUri=http://milvus.db:19530",
    )
    assert chosen.worker_image == "registry.example/swell-worker:2.0.1"
    assert chosen.default_vector_uri == "http://milvus.db:19530"
    refused = helm(
        cluster, "template", "swell", str(CHART), "--set", "vectorStore.defaultUri=/tmp/vectors.db", check=False
    )
    assert refused.returncode != 0 and "defaultUri" in refused.stderr


def test_the_chart_works_as_a_subchart_with_global_values(cluster: Cluster, tmp_path: Path) -> None:
    parent = tmp_path / "platform"
    (parent / "charts").mkdir(parents=True)
    shutil.copytree(CHART, parent / "charts" / "swell")
    (parent / "Chart.yaml").write_text("apiVersion: v2\nname: platform\nversion: 1.0.0\n")
    (parent / "values.yaml").write_text("global:\n  imageRegistry: registry.example\nswell:\n  replicaCount: 1\n")
    text = helm(cluster, "template", "platform", str(parent), "--namespace", "platform").stdout
    kinds = {doc["kind"] for doc in yaml.safe_load_all(text) if doc}
    assert {"Deployment", "CustomResourceDefinition"} <= kinds


def test_security_context_is_overridable_for_openshift(cluster: Cluster, schema_location: str) -> None:
    values = ("--set", "podSecurityContext.runAsUser=null", "--set", "podSecurityContext.runAsGroup=null")
    docs = render(cluster, *values)
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]["securityContext"]
    assert "runAsUser" not in pod and "runAsGroup" not in pod and pod["runAsNonRoot"] is True
    (job,) = [d for d in docs if d["kind"] == "Job"]
    assert "runAsUser" not in job["spec"]["template"]["spec"]["securityContext"]
    text = helm(cluster, "template", "swell", str(CHART), "--namespace", "swell-system", *values).stdout
    checked = subprocess.run(
        [str(cluster.kubeconform), "-strict", "-summary", "-schema-location", schema_location],
        input=text,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert checked.returncode == 0 and "Invalid: 0, Errors: 0, Skipped: 0" in checked.stdout, checked.stdout


def test_a_disruption_budget_only_for_more_than_one_replica(cluster: Cluster) -> None:
    (pdb,) = [d for d in render(cluster) if d["kind"] == "PodDisruptionBudget"]
    (deployment,) = [d for d in render(cluster) if d["kind"] == "Deployment"]
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert not [d for d in render(cluster, "--set", "replicaCount=1") if d["kind"] == "PodDisruptionBudget"]


def test_kube_version_is_enforced(cluster: Cluster) -> None:
    refused = helm(cluster, "template", "swell", str(CHART), "--kube-version", "1.28.0", check=False)
    assert refused.returncode != 0 and "kubeVersion" in refused.stderr
    helm(cluster, "template", "swell", str(CHART), "--kube-version", "1.29.0")


def test_the_readme_documents_every_value() -> None:
    def leaves(values: dict[str, Any], prefix: str = "") -> list[str]:
        out = []
        for key, value in values.items():
            path = f"{prefix}{key}"
            nested = isinstance(value, dict) and value and key not in ("resources", "labels", "podSecurityContext")
            out += leaves(value, f"{path}.") if nested and key != "securityContext" else [path]
        return out

    readme = (CHART / "README.md").read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    missing = [path for path in leaves(values) if f"`{path}`" not in readme]
    assert not missing, missing


def test_helm_test_hook_checks_a_real_operators_metrics(cluster: Cluster, operator_process: Any) -> None:
    docs = render(cluster)
    (pod,) = [d for d in docs if d["kind"] == "Pod"]
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (container,) = pod["spec"]["containers"]
    command, url = container["command"][:-1], container["command"][-1]
    (service,) = [d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "swell-operator"]
    assert url == f"http://swell-operator.swell-system.svc:{service['spec']['ports'][0]['port']}/metrics"
    assert command[0] == "python"
    local = f"http://127.0.0.1:{operator_process.metrics_port}/metrics"
    passed = subprocess.run([sys.executable, *command[1:], local], capture_output=True, text=True, timeout=60)
    assert passed.returncode == 0 and "ok:" in passed.stdout, passed.stderr
    failed = subprocess.run(
        [sys.executable, *command[1:], f"http://127.0.0.1:{operator_process.health_port}/healthz"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert failed.returncode != 0, "the test passes against something that is not the operator's metrics"


def test_alerts_read_the_series_the_code_exports(cluster: Cluster) -> None:
    from swell_operator.metrics import expected_wait

    (rule,) = [
        d for d in render(cluster, "--set", "metrics.prometheusRule.enabled=true") if d["kind"] == "PrometheusRule"
    ]
    alerts = {r["alert"]: r for group in rule["spec"]["groups"] for r in group["rules"]}
    assert set(alerts) == {"SwellPoolDegraded", "SwellBacklogOverWaitTarget", "SwellDeadLettersGrowing"}
    exported = {m.name for m in operator_metrics.REGISTRY.collect()} | {
        m.name for m in REGISTRY.collect() if m.name.startswith("swell_")
    }
    used = set(re.findall(r"\b(swell_[a-z_]+?)(?:_total)?\b", " ".join(r["expr"] for r in alerts.values())))
    assert used and used <= exported, used - exported
    assert not [d for d in render(cluster) if d["kind"] == "PrometheusRule"]  # off by default
    assert expected_wait(0, 0, None) == 0.0
    assert expected_wait(10, 0, 2.0) == float("inf")  # a backlog and nobody to serve it
    assert expected_wait(10, 2, None) is None
    assert expected_wait(100, 2, 5.0) == 10.0
