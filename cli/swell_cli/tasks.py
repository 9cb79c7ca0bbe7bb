"""``swell submit``, ``swell call`` and ``swell task``: the client SDK from a shell.

Queue settings come from the same SWELL_* variables the worker reads, so a shell that can run a
worker can talk to it; flags override them.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys

from swell_worker.client import DEFAULT_BACKEND, SwellClient, TaskFailed, TaskTimeout
from swell_worker.config import ConfigError, WorkerConfig


def client_config(args: argparse.Namespace) -> WorkerConfig:
    overrides = {
        "SWELL_BACKEND": args.backend,
        "SWELL_REDIS_URL": args.redis_url,
        "SWELL_QUEUE": args.queue,
    }
    environ = {**os.environ, **{k: v for k, v in overrides.items() if v}}
    environ.setdefault("SWELL_BACKEND", DEFAULT_BACKEND)
    return WorkerConfig.from_env(environ)


async def _run(args: argparse.Namespace) -> int:
    async with SwellClient.from_config(client_config(args)) as client:
        if args.command == "submit":
            print(await client.submit(args.handler, args.payload, task_id=args.task_id, priority=args.priority))
            return 0
        if args.command == "call":
            try:
                result = await client.call(args.handler, args.payload, timeout=args.timeout, priority=args.priority)
            except (TaskTimeout, TaskFailed) as exc:
                print(f"swell: {exc}", file=sys.stderr)
                return 1
            print(json.dumps(result))
            return 0
        status = await client.status(args.task_id)
        print(json.dumps(dataclasses.asdict(status)))
        return 0 if status.state != "unknown" else 1


def run_task_command(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_run(args))
    except ConfigError as exc:
        print(f"swell: {exc}", file=sys.stderr)
        return 2
