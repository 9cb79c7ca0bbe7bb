"""The local control plane is a real one: Deployments get pods, scale-in picks by deletion cost, CRDs validate,
and pods have their own loopback IPs that a process can serve on and a Service can route to.
"""

from __future__ import annotations

import ipaddress
import json
import signal
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
import yaml

from tests.fixtures.cluster import Cluster
from tests.tooling.controlplane.podrunner import PodRunner
from tests.tooling.controlplane.serviceproxy import ServiceProxy

pytestmark = pytest.mark.cluster
T = TypeVar("T")


def wait_for(probe: Callable[[], T], what: str, timeout: float = 60) -> T:
    deadline = time.monotonic() + timeout
    last: T = probe()
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"{what} did not happen within {timeout}s (last: {last!r})")


def deployment(name: str, replicas: int, *, command: list[str] | None = None, grace: int = 30) -> str:
    container: dict[str, object] = {"name": "main", "image": "example.invalid/app:1"}
    annotations = {}
    if command is not None:
        container["command"] = command
        annotations = {"swell.dev/run-locally": "true"}
    return yaml.safe_dump(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}, "annotations": annotations},
                    "spec": {"containers": [container], "terminationGracePeriodSeconds": grace},
                },
            },
        }
    )


def pods(cluster: Cluster, namespace: str, app: str) -> list[dict[str, object]]:
    out = cluster.kubectl("get", "pods", "-n", namespace, "-l", f"app={app}", "-o", "json")
    items: list[dict[str, object]] = json.loads(out.stdout)["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]  # type: ignore[attr-defined]


def running(cluster: Cluster, namespace: str, app: str) -> list[str]:
    return [
        p["metadata"]["name"]
        for p in pods(cluster, namespace, app)  # type: ignore[index]
        if p["status"].get("phase") == "Running"
    ]  # type: ignore[attr-defined]


def test_deployment_gets_running_pods_scales_to_zero_and_is_garbage_collected(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=deployment("web", 3))
    names = wait_for(
        lambda: len(running(cluster, namespace, "web")) == 3 and running(cluster, namespace, "web"), "3 running pods"
    )
    nodes = {
        json.loads(cluster.kubectl("get", "pod", n, "-n", namespace, "-o", "json").stdout)["spec"]["nodeName"]
        for n in names
    }
    assert all(node.startswith("node-") for node in nodes)
    cluster.kubectl("scale", "deployment/web", "-n", namespace, "--replicas=0")
    wait_for(lambda: not cluster.kubectl("get", "pods", "-n", namespace, "-o", "name").stdout.strip(), "pods gone")
    assert cluster.kubectl("get", "rs", "-n", namespace, "-o", "name").stdout.strip()
    cluster.kubectl("delete", "deployment/web", "-n", namespace)
    wait_for(
        lambda: not cluster.kubectl("get", "rs", "-n", namespace, "-o", "name").stdout.strip(),
        "the ReplicaSet garbage-collected",
    )


SIGTERM_SCRIPT = (
    "import signal, sys, time, os\n"
    "def bye(*_):\n"
    "    print('got SIGTERM', flush=True); sys.exit(0)\n"
    "signal.signal(signal.SIGTERM, bye)\n"
    "print('running as', os.environ['POD_NAME'], flush=True)\n"
    "while True: time.sleep(0.1)\n"
)


def test_pod_runner_runs_pods_and_deletion_cost_picks_who_goes(
    cluster: Cluster, namespace: str, pod_runner: PodRunner
) -> None:
    manifest = yaml.safe_load(deployment("w", 2, command=["python", "-c", SIGTERM_SCRIPT]))
    manifest["spec"]["template"]["spec"]["containers"][0]["env"] = [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
    ]
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(manifest))
    names = wait_for(
        lambda: len(running(cluster, namespace, "w")) == 2 and running(cluster, namespace, "w"), "2 running pods"
    )
    processes = {n: pod_runner.wait_for_process(namespace, n) for n in names}
    wait_for(lambda: all("running as" in p.log() for p in processes.values()), "both processes running")
    assert {p.popen.pid for p in processes.values()}.__len__() == 2
    for name, process in processes.items():
        assert f"running as {name}" in process.log()
    keep, drop = names
    cluster.kubectl("annotate", "pod", keep, "-n", namespace, "controller.kubernetes.io/pod-deletion-cost=1000")
    cluster.kubectl("annotate", "pod", drop, "-n", namespace, "controller.kubernetes.io/pod-deletion-cost=-1000")
    cluster.kubectl("scale", "deployment/w", "-n", namespace, "--replicas=1")
    wait_for(lambda: processes[drop].exit_code is not None, f"{drop} exited")
    assert processes[drop].exit_code == 0
    assert processes[drop].signals == ["SIGTERM"]
    assert "got SIGTERM" in processes[drop].log()
    time.sleep(1)
    assert processes[keep].exit_code is None
    assert running(cluster, namespace, "w") == [keep]


def test_grace_period_ends_with_sigkill(cluster: Cluster, namespace: str, pod_runner: PodRunner) -> None:
    stubborn = (
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('up', flush=True)\n"
        "while True: time.sleep(0.1)\n"
    )
    cluster.kubectl(
        "apply", "-n", namespace, "-f", "-", input=deployment("s", 1, command=[sys.executable, "-c", stubborn], grace=1)
    )
    (name,) = wait_for(lambda: running(cluster, namespace, "s"), "a running pod")
    process = pod_runner.wait_for_process(namespace, name)
    wait_for(lambda: "up" in process.log(), "the process started")
    cluster.kubectl("scale", "deployment/s", "-n", namespace, "--replicas=0")
    wait_for(lambda: process.exit_code is not None, "the process ended", timeout=30)
    assert process.exit_code == -signal.SIGKILL
    assert process.signals == ["SIGTERM", "SIGKILL"]


CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "gadgets.example.swell.dev"},
    "spec": {
        "group": "example.swell.dev",
        "scope": "Namespaced",
        "names": {"kind": "Gadget", "plural": "gadgets", "singular": "gadget"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["size"],
                                "properties": {"size": {"type": "integer", "minimum": 1, "maximum": 5}},
                            }
                        },
                    }
                },
            }
        ],
    },
}


def test_structural_crd_rejects_an_invalid_object_with_the_servers_message(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(CRD))
    cluster.kubectl("wait", "--for=condition=Established", "crd/gadgets.example.swell.dev", timeout=60)

    def gadget(size: object) -> str:
        return yaml.safe_dump(
            {
                "apiVersion": "example.swell.dev/v1",
                "kind": "Gadget",
                "metadata": {"name": f"g{size}".lower()},
                "spec": {"size": size},
            }
        )

    assert cluster.kubectl("apply", "-n", namespace, "-f", "-", input=gadget(3)).returncode == 0
    refused = wait_for(
        lambda: cluster.kubectl("apply", "-n", namespace, "-f", "-", input=gadget(9), check=False),
        "the server answered",
    )
    assert refused.returncode != 0
    assert "spec.size: Invalid value: 9: spec.size in body should be less than or equal to 5" in refused.stderr


# Answers with who it is and what it got; binds the address given as argv[1] (the pod IP, via $(HOST)).
ECHO_SERVER = textwrap.dedent("""\
    import json, os, sys
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class Echo(BaseHTTPRequestHandler):
        def answer(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
            reply = json.dumps({"pod": os.environ["POD_NAME"], "podIP": os.environ["POD_IP"],
                                "bound": self.server.server_address[0], "method": self.command,
                                "path": self.path, "body": body, "header": self.headers.get("X-Test")}).encode()
            self.send_response(int(self.path.split("/")[2]) if self.path.startswith("/status/") else 200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        do_GET = do_POST = answer

    HTTPServer((sys.argv[1], 8080), Echo).serve_forever()
""")
# Never through an http_proxy from the environment: these addresses are this machine's.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def echo_deployment(name: str, replicas: int) -> str:
    manifest = yaml.safe_load(deployment(name, replicas, command=["python", "-c", ECHO_SERVER, "$(HOST)"], grace=5))
    template = manifest["spec"]["template"]
    template["metadata"]["annotations"]["swell.dev/local-bind-env"] = "HOST"
    template["spec"]["containers"][0]["ports"] = [{"name": "http", "containerPort": 8080}]
    template["spec"]["containers"][0]["env"] = [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
    ]
    return yaml.safe_dump(manifest)


def service(name: str) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name},
            "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
        }
    )


def fetch(
    url: str, *, method: str = "GET", body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    """Status and JSON body, for any status."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with OPENER.open(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def answer_from(url: str) -> dict[str, Any] | None:
    try:
        status, reply = fetch(url)
    except OSError:  # not listening yet
        return None
    return reply if status == 200 else None


def pod_ips(cluster: Cluster, namespace: str, app: str, count: int) -> dict[str, str]:
    def assigned() -> dict[str, str]:
        found = {
            p["metadata"]["name"]: p["status"].get("podIP", "")  # type: ignore[index]
            for p in pods(cluster, namespace, app)
            if p["status"].get("phase") == "Running"
        }  # type: ignore[attr-defined]
        return found if len(found) == count and all(found.values()) else {}

    return wait_for(assigned, f"{count} running pods with IPs")


def test_pods_get_loopback_ips_and_each_process_serves_on_its_own(
    cluster: Cluster, namespace: str, pod_runner: PodRunner
) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=echo_deployment("echo", 2))
    ips = pod_ips(cluster, namespace, "echo", 2)
    assert len(set(ips.values())) == 2, f"two pods share an IP: {ips}"
    for ip in ips.values():
        assert ipaddress.ip_address(ip) in ipaddress.ip_network("127.1.0.0/16"), f"{ip} is not a loopback pod IP"
    for name, ip in ips.items():  # both on port 8080, each on its own address, as with a network namespace each
        reply = wait_for(lambda ip=ip: answer_from(f"http://{ip}:8080/whoami"), f"{name} serving at {ip}:8080")
        assert reply["pod"] == name
        assert reply["podIP"] == ip == reply["bound"]
        assert pod_runner.wait_for_process(namespace, name).pod_ip == ip


def test_service_proxy_forwards_to_ready_pods_and_answers_503_without_any(
    cluster: Cluster, namespace: str, pod_runner: PodRunner
) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=echo_deployment("echo", 2))
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=service("echo"))
    ips = pod_ips(cluster, namespace, "echo", 2)
    for ip in ips.values():
        wait_for(lambda ip=ip: answer_from(f"http://{ip}:8080/"), f"the pod at {ip} serving")
    with ServiceProxy(cluster.kubeconfig, namespace, "echo") as proxy:
        assert proxy.url.startswith("http://127.0.0.1:")
        wait_for(lambda: len(proxy.endpoints()) == 2, "both pods ready behind the Service")
        assert {e.address for e in proxy.endpoints()} == set(ips.values())
        assert {e.port for e in proxy.endpoints()} == {8080}

        status, reply = fetch(
            f"{proxy.url}/submit?x=1&y=two",
            method="POST",
            body=b'{"n": 1}',
            headers={"X-Test": "kept", "Content-Type": "application/json"},
        )
        assert status == 200
        assert (reply["method"], reply["path"], reply["body"], reply["header"]) == (
            "POST",
            "/submit?x=1&y=two",
            '{"n": 1}',
            "kept",
        )
        assert ips[reply["pod"]] == reply["podIP"]
        status, reply = fetch(f"{proxy.url}/status/418")
        assert status == 418, "the upstream status must pass through"
        assert reply["path"] == "/status/418"
        seen = {fetch(f"{proxy.url}/")[1]["pod"] for _ in range(40)}
        assert seen == set(ips), "requests should spread over both ready pods"

        cluster.kubectl("scale", "deployment/echo", "-n", namespace, "--replicas=0")
        status, reply = wait_for(
            lambda: (answer := fetch(f"{proxy.url}/"))[0] == 503 and answer, "503 once no pod is ready"
        )
        assert "no ready endpoint" in reply["error"]


def test_service_proxy_answers_502_when_the_pod_refuses(cluster: Cluster, namespace: str) -> None:
    """kwok marks a pod ready that nothing runs: its IP is real and refuses every connection."""
    manifest = yaml.safe_load(deployment("idle", 1))
    manifest["spec"]["template"]["spec"]["containers"][0]["ports"] = [{"name": "http", "containerPort": 8080}]
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(manifest))
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=service("idle"))
    (ip,) = pod_ips(cluster, namespace, "idle", 1).values()
    with ServiceProxy(cluster.kubeconfig, namespace, "idle") as proxy:
        wait_for(lambda: proxy.endpoints(), "the pod ready behind the Service")
        status, reply = fetch(f"{proxy.url}/")
    assert status == 502
    assert f"{ip}:8080" in reply["error"] and "refused" in reply["error"]
