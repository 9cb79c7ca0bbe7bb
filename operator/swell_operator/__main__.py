"""`python -m swell_operator`: run the operator for some namespaces (or all), with metrics and health ports."""

from __future__ import annotations

import argparse
import logging
import os
import re
from collections.abc import Sequence

import kopf

from swell_operator import handlers, metrics
from swell_operator.deployment import DEFAULT_WORKER_IMAGE
from swell_operator.model import VECTOR_URI_PATTERN


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="swell-operator", description="Scale WorkerPools from queue depth.")
    parser.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[],
        help="Namespace to watch; repeat for several. Default: all namespaces.",
    )
    parser.add_argument("--metrics-port", type=int, default=9090, help="Prometheus metrics port (0: off).")
    parser.add_argument("--health-port", type=int, default=8081, help="Liveness endpoint port (/healthz).")
    parser.add_argument(
        "--lease-namespace",
        default=None,
        help="Namespace of the leader-election Lease. Default: $POD_NAMESPACE, else the first "
        "watched namespace, else 'default'.",
    )
    parser.add_argument("--identity", default=None, help="Leader-election identity. Default: $POD_NAME or host-pid.")
    parser.add_argument(
        "--no-leader-election", action="store_true", help="Act without a Lease (only safe with a single replica)."
    )
    parser.add_argument(
        "--activator-port", type=int, default=0, help="Serve the Pub/Sub push activator on this port (0: off)."
    )
    parser.add_argument(
        "--activator-url",
        default=None,
        help="URL at which Pub/Sub reaches the activator (e.g. your Ingress to the activator "
        "Service); push pools at zero have their subscription pointed there.",
    )
    parser.add_argument(
        "--worker-image",
        default=os.environ.get("SWELL_WORKER_IMAGE") or DEFAULT_WORKER_IMAGE,
        help="Image of the bundled worker for pools that do not name one (default: "
        f"$SWELL_WORKER_IMAGE, else {DEFAULT_WORKER_IMAGE}). Pools follow it when it changes.",
    )
    parser.add_argument(
        "--default-vector-uri",
        default=os.environ.get("SWELL_DEFAULT_VECTOR_URI") or None,
        help="Shared Milvus server for pools serving index or search that name none "
        "(default: $SWELL_DEFAULT_VECTOR_URI). Without either such a pool gets no workers.",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="Debug logging.")
    args = parser.parse_args(argv)
    if args.default_vector_uri and not re.match(VECTOR_URI_PATTERN, args.default_vector_uri):
        parser.error(
            f"--default-vector-uri must be a Milvus server URI (http://host:19530); got {args.default_vector_uri!r}"
        )
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    options = handlers.OperatorOptions(
        lease_namespace=args.lease_namespace
        or os.environ.get("POD_NAMESPACE")
        or (args.namespace[0] if args.namespace else "default"),
        identity=args.identity,
        leader_election=not args.no_leader_election,
        activator_port=args.activator_port,
        activator_url=args.activator_url,
        worker_image=args.worker_image,
        default_vector_uri=args.default_vector_uri,
    )
    if args.metrics_port:
        metrics.serve(args.metrics_port)
    kopf.run(
        standalone=True,  # leadership is the Lease's job (see leader.py), not kopf peering
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        liveness_endpoint=f"http://0.0.0.0:{args.health_port}/healthz",
        memo=kopf.Memo(options=options),
    )


if __name__ == "__main__":
    main()
