"""Runs opted-in pods of the local cluster as local processes, so real workers live and die with their pods.

kwok nodes run nothing: a pod is only an object. For pods annotated ``swell.dev/run-locally: "true"``
this runner starts the first container's command and args (``python`` means this interpreter, ``$(VAR)``
is expanded) with the container's environment resolved as the kubelet would (values, Secret and ConfigMap
keys, downward API fields, envFrom). When the pod is deleted, the process gets SIGTERM, then SIGKILL after
the pod's ``terminationGracePeriodSeconds`` — what a kubelet does, minus the container.

A process starts only once kwok has given its pod an IP, which the local cluster takes from loopback
(``cluster.py``), so ``status.podIP`` is the pod's real address. A process that binds it behaves as if it
had its own network namespace: two pods can both listen on 8080, each at ``http://<podIP>:8080``, the
address the operator and EndpointSlices use. kwok hands a deleted pod's IP to the next pod at once, while
the old process may still be draining; the new one then waits for the old one to exit, or its bind fails.

Annotations it reads and writes:
- ``swell.dev/local-bind-env: "SWELL_HTTP_HOST"`` (comma list): each variable gets the pod's IP.
- ``swell.dev/local-port-env: "SWELL_HTTP_PORT"`` (comma list): each variable gets a free port on
  127.0.0.1, written back as ``swell.dev/local-port-<VAR>``: for a process that binds 127.0.0.1 rather
  than its pod IP, where every pod shares one port space.
- ``swell.dev/local-log``: written with the path of the process's log (stdout and stderr).

    python -m tests.tooling.controlplane.podrunner --kubeconfig PATH
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import ipaddress
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch

log = logging.getLogger("podrunner")

RUN_LOCALLY = "swell.dev/run-locally"
BIND_ENV = "swell.dev/local-bind-env"
PORT_ENV = "swell.dev/local-port-env"
PORT_PREFIX = "swell.dev/local-port-"
LOG_ANNOTATION = "swell.dev/local-log"


def _names(annotation: str) -> list[str]:
    return [name.strip() for name in annotation.split(",") if name.strip()]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LocalProcess:
    namespace: str
    pod: str
    uid: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    ports: dict[str, int]
    grace_seconds: float
    pod_ip: str
    host_network: bool = False
    terminated_at: float | None = None
    signals: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int | None:
        return self.popen.poll()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def terminate(self) -> None:
        """SIGTERM now, SIGKILL after the grace period, in the background (like a kubelet)."""
        if self.terminated_at is not None or self.popen.poll() is not None:
            return
        self.terminated_at = time.monotonic()
        self.signals.append("SIGTERM")
        self.popen.send_signal(signal.SIGTERM)

        def kill_after_grace() -> None:
            try:
                self.popen.wait(timeout=self.grace_seconds)
            except subprocess.TimeoutExpired:
                self.signals.append("SIGKILL")
                self.popen.kill()
                self.popen.wait()

        threading.Thread(target=kill_after_grace, daemon=True).start()


class PodRunner:
    def __init__(self, kubeconfig: Path, log_dir: Path | None = None, extra_env: dict[str, str] | None = None) -> None:
        self.kubeconfig = kubeconfig
        self.log_dir = log_dir or Path(tempfile.mkdtemp(prefix="swell-pods-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        # Local processes reach the API server through the kubeconfig, as in-cluster ones would through a token.
        self.extra_env = {"KUBECONFIG": str(kubeconfig), **(extra_env or {})}
        self._api = client.CoreV1Api(config.new_client_from_config(config_file=str(kubeconfig)))  # type: ignore[no-untyped-call]
        self._processes: dict[str, LocalProcess] = {}  # by pod uid
        self._waiting: set[str] = set()  # pod uids whose IP a previous, still running process holds
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> PodRunner:
        self._thread = threading.Thread(target=self._watch_forever, name="podrunner", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop watching and kill every process this runner started."""
        self._stop.set()
        with self._lock:
            processes = list(self._processes.values())
        for process in processes:
            if process.popen.poll() is None:
                process.popen.kill()
                process.popen.wait(timeout=10)

    # -- queries for tests -----------------------------------------------------------------------------------
    def processes(self, namespace: str) -> list[LocalProcess]:
        with self._lock:
            return [p for p in self._processes.values() if p.namespace == namespace]

    def process_for(self, namespace: str, pod: str) -> LocalProcess | None:
        with self._lock:
            found = [p for p in self._processes.values() if p.namespace == namespace and p.pod == pod]
        return found[-1] if found else None

    def wait_for_process(self, namespace: str, pod: str, timeout: float = 60) -> LocalProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            process = self.process_for(namespace, pod)
            if process is not None:
                return process
            time.sleep(0.1)
        raise AssertionError(f"no local process for pod {namespace}/{pod} within {timeout}s")

    # -- the watch -------------------------------------------------------------------------------------------
    def _watch_forever(self) -> None:
        while not self._stop.is_set():
            try:
                self._watch_once()
            except Exception as exc:  # the API server restarting must not end the runner
                if not self._stop.is_set():
                    log.warning("pod watch failed, restarting: %s", exc)
                    time.sleep(1)

    def _watch_once(self) -> None:
        listed: Any = self._api.list_pod_for_all_namespaces()
        for pod in listed.items:
            self._on_pod("ADDED", pod)
        stream: Any = watch.Watch()  # type: ignore[no-untyped-call]
        for event in stream.stream(
            self._api.list_pod_for_all_namespaces,
            resource_version=listed.metadata.resource_version,
            timeout_seconds=60,
        ):
            if self._stop.is_set():
                stream.stop()
                return
            self._on_pod(event["type"], event["object"])

    def _on_pod(self, kind: str, pod: Any) -> None:
        annotations = pod.metadata.annotations or {}
        if annotations.get(RUN_LOCALLY) != "true":
            return
        uid = pod.metadata.uid
        with self._lock:
            running = self._processes.get(uid)
        if kind == "DELETED" or pod.metadata.deletion_timestamp is not None:
            if running is not None:
                running.terminate()
            return
        if running is None and pod.spec.node_name and pod.status is not None and pod.status.pod_ip:
            with self._lock:
                if uid in self._waiting:
                    return
                holder = self._holder_of(pod)
                if holder is not None:
                    self._waiting.add(uid)
            if holder is not None:
                log.info(
                    "pod %s/%s waits for %s to free %s",
                    pod.metadata.namespace,
                    pod.metadata.name,
                    holder.pod,
                    pod.status.pod_ip,
                )
                threading.Thread(target=self._start_when_free, args=(pod,), daemon=True).start()
                return
            try:
                self._start(pod)
            except Exception as exc:
                log.error("cannot run pod %s/%s locally: %s", pod.metadata.namespace, pod.metadata.name, exc)

    def _holder_of(self, pod: Any) -> LocalProcess | None:
        """A live process of another pod with this pod's IP (call with the lock held)."""
        if pod.spec.host_network:
            return None
        for process in self._processes.values():
            if (
                process.pod_ip == pod.status.pod_ip
                and not process.host_network
                and process.uid != pod.metadata.uid
                and process.popen.poll() is None
            ):
                return process
        return None

    def _start_when_free(self, pod: Any) -> None:
        namespace, name, uid = pod.metadata.namespace, pod.metadata.name, pod.metadata.uid
        try:
            while not self._stop.is_set():
                with self._lock:
                    holder = self._holder_of(pod)
                if holder is None:
                    break
                with contextlib.suppress(subprocess.TimeoutExpired):
                    holder.popen.wait(timeout=1)
            if self._stop.is_set():
                return
            fresh: Any = self._api.read_namespaced_pod(name, namespace)
            if fresh.metadata.uid == uid and fresh.metadata.deletion_timestamp is None:
                self._start(fresh)
        except client.ApiException as exc:
            if exc.status != 404:  # deleted while it waited: nothing to run
                log.error("cannot run pod %s/%s locally: %s", namespace, name, exc)
        except Exception as exc:
            log.error("cannot run pod %s/%s locally: %s", namespace, name, exc)
        finally:
            with self._lock:
                self._waiting.discard(uid)

    def _start(self, pod: Any) -> None:
        namespace, name = pod.metadata.namespace, pod.metadata.name
        container = pod.spec.containers[0]
        command = list(container.command or []) + list(container.args or [])
        if not command:
            raise ValueError("the first container has no command: the runner cannot know the image's entrypoint")
        if command[0] in ("python", "python3"):
            command[0] = sys.executable
        annotations = pod.metadata.annotations or {}
        pod_ip: str = pod.status.pod_ip
        container_env = self._environment(pod, container)
        bind = _names(annotations.get(BIND_ENV, ""))
        if bind and not ipaddress.ip_address(pod_ip).is_loopback:
            log.error(
                "pod %s/%s has IP %s, not on loopback: its process cannot bind it (a cluster made by an "
                "older cluster.py? `python -m tests.tooling.controlplane.cluster up` recreates it)",
                namespace,
                name,
                pod_ip,
            )
        container_env.update(dict.fromkeys(bind, pod_ip))
        ports = {var: _free_port() for var in _names(annotations.get(PORT_ENV, ""))}
        container_env.update({var: str(port) for var, port in ports.items()})
        command = [_expand(arg, container_env) for arg in command]
        env = {**os.environ, **self.extra_env, **container_env}
        log_path = self.log_dir / f"{namespace}_{name}.log"
        with log_path.open("ab") as out:
            popen = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        grace = pod.spec.termination_grace_period_seconds
        process = LocalProcess(
            namespace=namespace,
            pod=name,
            uid=pod.metadata.uid,
            popen=popen,
            log_path=log_path,
            ports=ports,
            grace_seconds=30.0 if grace is None else float(grace),
            pod_ip=pod_ip,
            host_network=bool(pod.spec.host_network),
        )
        with self._lock:
            self._processes[pod.metadata.uid] = process
        log.info("started %s/%s at %s as pid %d", namespace, name, pod_ip, popen.pid)
        patch = {LOG_ANNOTATION: str(log_path), **{PORT_PREFIX + var: str(port) for var, port in ports.items()}}
        try:
            self._api.patch_namespaced_pod(name, namespace, {"metadata": {"annotations": patch}})
        except client.ApiException as exc:
            if exc.status != 404:
                raise

    def _environment(self, pod: Any, container: Any) -> dict[str, str]:
        namespace = pod.metadata.namespace
        env: dict[str, str] = {}
        for source in container.env_from or []:
            prefix = source.prefix or ""
            if source.secret_ref is not None:
                secret_data: dict[str, Any] = dict(
                    self._api.read_namespaced_secret(source.secret_ref.name, namespace).data or {}
                )
                env.update({prefix + k: base64.b64decode(v).decode() for k, v in secret_data.items()})
            if source.config_map_ref is not None:
                config_data: dict[str, str] = (
                    self._api.read_namespaced_config_map(source.config_map_ref.name, namespace).data or {}
                )
                env.update({prefix + k: v for k, v in config_data.items()})
        fields = {
            "metadata.name": pod.metadata.name,
            "metadata.namespace": namespace,
            "metadata.uid": pod.metadata.uid,
            "spec.nodeName": pod.spec.node_name or "",
            "spec.serviceAccountName": pod.spec.service_account_name or "",
            "status.podIP": pod.status.pod_ip,
            "status.podIPs": ",".join(ip.ip for ip in pod.status.pod_ips or []) or pod.status.pod_ip,
            "status.hostIP": pod.status.host_ip or "127.0.0.1",
            "status.hostIPs": ",".join(ip.ip for ip in pod.status.host_ips or []) or pod.status.host_ip or "127.0.0.1",
        }
        for var in container.env or []:
            if var.value_from is None:
                env[var.name] = _expand(var.value or "", env)
                continue
            ref = var.value_from
            if ref.field_ref is not None:
                env[var.name] = fields.get(ref.field_ref.field_path, "")
            elif ref.secret_key_ref is not None:
                secret = self._api.read_namespaced_secret(ref.secret_key_ref.name, namespace)
                env[var.name] = base64.b64decode((secret.data or {})[ref.secret_key_ref.key]).decode()
            elif ref.config_map_key_ref is not None:
                config_map = self._api.read_namespaced_config_map(ref.config_map_key_ref.name, namespace)
                env[var.name] = (config_map.data or {})[ref.config_map_key_ref.key]
        return env


def _expand(value: str, env: dict[str, str]) -> str:
    """``$(VAR)`` references to earlier variables, as Kubernetes expands them."""
    for name, replacement in env.items():
        value = value.replace(f"$({name})", replacement)
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--log-dir", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s podrunner %(message)s")
    runner = PodRunner(args.kubeconfig, args.log_dir).start()
    stopped = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopped.set())
    stopped.wait()
    runner.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
