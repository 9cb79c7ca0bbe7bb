"""``swell status``: what ``kubectl get wp`` shows, plus rates, conditions and the last decision."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

from swell_operator.model import GROUP, PLURAL, VERSION

COLUMNS = (
    "NAMESPACE",
    "NAME",
    "BACKEND",
    "BACKLOG",
    "INFLIGHT",
    "ARRIVALS/S",
    "DESIRED",
    "READY",
    "STATE",
    "LAST DECISION",
)


async def list_pools(namespace: str | None, all_namespaces: bool, kubeconfig: str | None) -> list[dict[str, Any]]:
    import os

    from kubernetes_asyncio import client, config

    from swell_cli.errors import UserFacingError

    path = kubeconfig or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or os.path.expanduser("~/.kube/config")
    if not os.path.isfile(path):
        raise UserFacingError(f"no kubeconfig at {path} (set --kubeconfig or KUBECONFIG)")
    await config.load_kube_config(config_file=kubeconfig)
    async with client.ApiClient() as api:
        custom = client.CustomObjectsApi(api)
        if all_namespaces:
            result = await custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)
        else:
            if namespace is None:
                _, context = config.list_kube_config_contexts(config_file=kubeconfig)
                namespace = str(((context or {}).get("context") or {}).get("namespace", "default"))
            result = await custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
    items: list[dict[str, Any]] = result.get("items", [])
    return items


def pool_row(pool: dict[str, Any]) -> tuple[str, ...]:
    meta, spec, status = pool["metadata"], pool.get("spec", {}), pool.get("status", {})
    true_conditions = [c["type"] for c in status.get("conditions", []) if c.get("status") == "True"]
    decision = status.get("lastDecision") or {}
    rate = status.get("arrivalRate")

    def show(value: object) -> str:
        return "-" if value is None else str(value)

    return (
        meta.get("namespace", ""),
        meta["name"],
        spec.get("queue", {}).get("backend", "?"),
        show(status.get("backlog")),
        show(status.get("inFlight")),
        "-" if rate is None else f"{rate:.1f}",
        show(status.get("desiredReplicas")),
        show(status.get("readyReplicas")),
        ",".join(true_conditions) or "-",
        decision.get("reason", "-"),
    )


def format_table(rows: list[tuple[str, ...]]) -> str:
    table = [COLUMNS, *rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS) - 1)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1] for row in table
    ]
    return "\n".join(lines)


def render(pools: list[dict[str, Any]], output: str) -> str:
    if output == "json":
        return json.dumps(pools, indent=2)
    if output == "yaml":
        import yaml

        return str(yaml.safe_dump_all(pools, sort_keys=False)).rstrip()
    if not pools:
        return "No WorkerPools found."
    return format_table([pool_row(p) for p in pools])


def run_status(args: argparse.Namespace) -> int:
    """Once, or with --watch until interrupted (Ctrl-C ends it with exit 0)."""
    try:
        while True:
            pools = asyncio.run(list_pools(args.namespace, args.all_namespaces, args.kubeconfig))
            if args.watch:
                print(f"--- {time.strftime('%H:%M:%S')}", flush=True)
            print(render(pools, args.output), flush=True)
            if not args.watch:
                return 0
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0
