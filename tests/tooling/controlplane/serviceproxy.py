"""A stand-in for kube-proxy (or an Ingress) in front of one Service of the local cluster.

No kube-proxy can run here: the local pods live on loopback IPs (``cluster.py`` gives node i the pod range
127.1.i.0/24) of nodes that route nothing, and a Service's ClusterIP leads nowhere. A test that needs
"the Service" talks to this proxy instead. It listens on a free 127.0.0.1 port and sends each HTTP request
to one ready endpoint of the Service, chosen at random.

It cannot read those endpoints from EndpointSlices as kube-proxy does: the API server refuses loopback
addresses in EndpointSlices and Endpoints (``ValidateEndpointIP`` in k8s.io/kubernetes
pkg/apis/core/validation), so for these pods the EndpointSlice controller only logs
FailedToUpdateEndpointSlices. The proxy makes the controller's choice itself instead: the pods the Service
selects that have an IP, are not terminating and are Ready (or all of them with publishNotReadyAddresses),
each at the Service port's targetPort resolved by name or number against the pod's containers. It reads
the Service and the pods again for every request rather than watching them, so its answer always follows
the latest scale and readiness, at the price of two API calls per request (nothing for a test).

    with ServiceProxy(kubeconfig, "ns", "web") as proxy:
        urllib.request.urlopen(proxy.url + "/healthz")

503 with a JSON error means no ready endpoint (or the Service could not be read), 502 that the chosen
endpoint refused or broke the connection, 504 that it did not answer in time.
"""

from __future__ import annotations

import http.client
import json
import logging
import random
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Self

import urllib3
from kubernetes import client, config

log = logging.getLogger("serviceproxy")

# RFC 9110 7.6.1, plus what a proxy consumes itself (Expect: it has already answered 100-continue).
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "expect",
    }
)


@dataclass(frozen=True)
class Endpoint:
    address: str
    port: int


class ServiceProxy:
    def __init__(
        self, kubeconfig: Path, namespace: str, service: str, *, port_name: str | None = None, timeout: float = 30
    ) -> None:
        """``port_name`` picks the Service port by name; without it the Service's first port is used."""
        self.namespace = namespace
        self.service = service
        self.port_name = port_name
        self.timeout = timeout
        self._api = client.CoreV1Api(config.new_client_from_config(config_file=str(kubeconfig)))  # type: ignore[no-untyped-call]
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> Self:
        handler = type("ServiceProxyHandler", (_Forwarder,), {"proxy": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"serviceproxy-{self.service}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self._api.api_client.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the proxy is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    # -- endpoints -------------------------------------------------------------------------------------------
    def endpoints(self) -> list[Endpoint]:
        """The Service's ready endpoints now: what the EndpointSlice controller would publish."""
        service: Any = self._api.read_namespaced_service(self.service, self.namespace)
        service_port = next(
            (port for port in service.spec.ports or [] if self.port_name is None or port.name == self.port_name), None
        )
        if not service.spec.selector or service_port is None:
            return []
        selector = ",".join(f"{key}={value}" for key, value in sorted(service.spec.selector.items()))
        pods: Any = self._api.list_namespaced_pod(self.namespace, label_selector=selector)
        found: set[Endpoint] = set()
        for pod in pods.items:
            if _serving(pod, bool(service.spec.publish_not_ready_addresses)):
                port = _target_port(pod, service_port)
                if port is not None:
                    found.add(Endpoint(pod.status.pod_ip, port))
        return sorted(found, key=lambda e: (e.address, e.port))


def _serving(pod: Any, publish_not_ready: bool) -> bool:
    """The EndpointSlice controller's test: an IP, not finished, not terminating, and Ready."""
    status = pod.status
    if status is None or not status.pod_ip or status.phase in ("Succeeded", "Failed"):
        return False
    if pod.metadata.deletion_timestamp is not None:
        return False
    return publish_not_ready or any(c.type == "Ready" and c.status == "True" for c in status.conditions or [])


def _target_port(pod: Any, service_port: Any) -> int | None:
    """targetPort as a number, or the container port of that name and protocol (unset means the port itself)."""
    target = service_port.target_port if service_port.target_port is not None else service_port.port
    if isinstance(target, int) or str(target).isdigit():
        return int(target)
    protocol = service_port.protocol or "TCP"
    for container in pod.spec.containers:
        for port in container.ports or []:
            if port.name == target and (port.protocol or "TCP") == protocol:
                return int(port.container_port)
    return None


class _Forwarder(BaseHTTPRequestHandler):
    """One request in, the same request to a random ready endpoint, its answer back."""

    proxy: ClassVar[ServiceProxy]
    protocol_version = "HTTP/1.1"

    def _forward(self) -> None:
        body = self._read_body()
        name = f"{self.proxy.namespace}/{self.proxy.service}"
        try:
            endpoints = self.proxy.endpoints()
        except (client.ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
            self._error(503, f"cannot read service {name} or its pods: {exc}")
            return
        if not endpoints:
            self._error(503, f"no ready endpoint for service {name}")
            return
        target = random.choice(endpoints)
        connection = http.client.HTTPConnection(target.address, target.port, timeout=self.proxy.timeout)
        try:
            connection.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for header, value in self._end_to_end(self.headers.items()):
                if header.lower() != "content-length":
                    connection.putheader(header, value)
            if "host" not in self.headers:
                connection.putheader("Host", f"{target.address}:{target.port}")
            if body or self.command in ("POST", "PUT", "PATCH"):
                connection.putheader("Content-Length", str(len(body)))
            connection.endheaders(body or None)
            response = connection.getresponse()
            payload = response.read()
        except ConnectionRefusedError as exc:
            self._error(502, f"{target.address}:{target.port} of service {name} refused the connection: {exc}")
            return
        except TimeoutError:
            self._error(
                504, f"{target.address}:{target.port} of service {name} did not answer within {self.proxy.timeout:g}s"
            )
            return
        except (OSError, http.client.HTTPException) as exc:
            self._error(502, f"{target.address}:{target.port} of service {name} failed: {exc!r}")
            return
        finally:
            connection.close()
        self._relay(response, payload)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _forward

    def _relay(self, response: http.client.HTTPResponse, payload: bytes) -> None:
        bodiless = self.command == "HEAD" or response.status in (204, 304) or response.status < 200
        self.send_response_only(response.status, response.reason)
        for header, value in self._end_to_end(response.getheaders()):
            if bodiless or header.lower() != "content-length":  # the length of a HEAD answer is the GET's
                self.send_header(header, value)
        if not bodiless:
            self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if not bodiless:
            self.wfile.write(payload)

    def _end_to_end(self, headers: Any) -> list[tuple[str, str]]:
        pairs: list[tuple[str, str]] = list(headers)
        named = {
            token.strip().lower()
            for header, value in pairs
            if header.lower() == "connection"
            for token in value.split(",")
        }
        return [(h, v) for h, v in pairs if h.lower() not in HOP_BY_HOP and h.lower() not in named]

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while size := int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                pass
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _error(self, status: int, message: str) -> None:
        payload = json.dumps({"error": message}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)
