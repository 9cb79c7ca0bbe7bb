"""``swell uninstall-cleanup``: what the chart's pre-delete hook runs, so ``helm uninstall`` strands no WorkerPool.

kopf keeps a finalizer (``swell.dev/scaler``) on every pool while its scaling daemon runs. Once the operator
is gone nobody removes it, and deleting a pool hangs. The order here makes that impossible:

1. Stop the operator (its Deployment to zero, then wait for its pods to be gone), so nothing re-adds the
   finalizer or scales anything while the rest happens.
2. Remove Swell's finalizer from every pool it managed. Other finalizers are left alone.
3. Only with ``--delete-pools``: delete the pools; their worker Deployments and Services follow through
   owner references (garbage collection), so no worker is left running.

Without ``--delete-pools`` the pools and their workers stay as they are (the CRD is kept too), deletable at
any time, and a reinstalled operator picks them up again.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from typing import Any

FINALIZER = "swell.dev/scaler"  # handlers.startup sets kopf's finalizer to this name
MERGE_PATCH = "application/merge-patch+json"


async def _load_config() -> None:
    from kubernetes_asyncio import config

    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    else:
        await config.load_kube_config()


async def stop_operator(api: Any, namespace: str, deployment: str, timeout: float) -> int:
    """Scale the operator to zero and wait for its pods to be gone; returns how many were waited for."""
    from kubernetes_asyncio import client
    from kubernetes_asyncio.client.exceptions import ApiException

    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    try:
        found = await apps.read_namespaced_deployment(deployment, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return 0  # already gone: nothing can re-add a finalizer
        raise
    await apps.patch_namespaced_deployment_scale(deployment, namespace, {"spec": {"replicas": 0}})
    selector = ",".join(f"{k}={v}" for k, v in sorted((found.spec.selector.match_labels or {}).items()))
    deadline = time.monotonic() + timeout
    seen = 0
    while True:
        pods = (await core.list_namespaced_pod(namespace, label_selector=selector)).items
        seen = max(seen, len(pods))
        if not pods:
            return seen
        if time.monotonic() > deadline:
            raise TimeoutError(f"the operator's pods are still there after {timeout:g}s: {len(pods)} left")
        await asyncio.sleep(0.5)


async def release_pools(api: Any, namespaces: list[str], delete: bool) -> list[str]:
    """Remove Swell's finalizer from every pool (and delete the pools with ``delete``); returns what was done."""
    from kubernetes_asyncio import client
    from kubernetes_asyncio.client.exceptions import ApiException
    from swell_operator.model import GROUP, PLURAL, VERSION

    custom: Any = client.CustomObjectsApi(api)
    if namespaces:
        pools = []
        for namespace in namespaces:
            listed = await custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
            pools += listed.get("items", [])
    else:
        pools = (await custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)).get("items", [])
    done = []
    for pool in pools:
        meta = pool["metadata"]
        name, namespace = meta["name"], meta["namespace"]
        finalizers = list(meta.get("finalizers") or [])
        try:
            if FINALIZER in finalizers:
                kept = [f for f in finalizers if f != FINALIZER]
                # resourceVersion: a merge patch replaces the whole list, so never over a concurrent change.
                patch = {"metadata": {"finalizers": kept, "resourceVersion": meta["resourceVersion"]}}
                await custom.patch_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, name, patch, _content_type=MERGE_PATCH
                )
            if delete:
                await custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except ApiException as exc:
            if exc.status != 404:
                raise
        done.append(f"{namespace}/{name}: {'deleted' if delete else 'released'}")
    return done


async def run_cleanup(args: argparse.Namespace) -> int:
    from kubernetes_asyncio import client

    await _load_config()
    async with client.ApiClient() as api:
        waited = await stop_operator(api, args.operator_namespace, args.operator_deployment, args.timeout)
        print(f"operator {args.operator_namespace}/{args.operator_deployment} stopped ({waited} pods waited for)")
        for line in await release_pools(api, list(args.namespace or []), args.delete_pools):
            print(line)
    return 0


def add_parser(commands: Any) -> None:
    cleanup = commands.add_parser(
        "uninstall-cleanup",
        help="stop the operator and release its WorkerPools (the chart's pre-delete hook)",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    cleanup.add_argument("--operator-namespace", required=True)
    cleanup.add_argument("--operator-deployment", required=True)
    cleanup.add_argument(
        "-n", "--namespace", action="append", help="namespace whose pools to release; repeat; default: all"
    )
    cleanup.add_argument(
        "--delete-pools", action="store_true", help="also delete the pools (their workers go with them)"
    )
    cleanup.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the operator to stop")
