"""The ``swell`` command: one entry point for users, the worker image and the operator image.

Each subcommand imports its part lazily, so ``swell worker run`` starts without kopf and
``swell status`` without the embedding model.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path


def _payload(text: str) -> dict[str, object]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"payload is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("payload must be a JSON object")
    return value


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("swell")
    except PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="swell", description="Scale queue workers from queue depth.")
    parser.add_argument("--version", action="version", version=f"swell {_version()}")
    commands = parser.add_subparsers(dest="command", required=True)

    status = commands.add_parser("status", help="WorkerPools with depth, replicas and the last decision")
    status.add_argument("-n", "--namespace", help="namespace (default: the kubeconfig's)")
    status.add_argument("-A", "--all-namespaces", action="store_true")
    status.add_argument("--kubeconfig")
    status.add_argument("-o", "--output", choices=["table", "json", "yaml"], default="table")
    status.add_argument("-w", "--watch", action="store_true", help="print the table again every --interval seconds")
    status.add_argument("--interval", type=float, default=2.0, help="seconds between two reads with --watch")

    for name, help_text in (("submit", "enqueue a task, print its id"), ("call", "run a task, print its result")):
        sub = commands.add_parser(
            name,
            help=help_text,
            description=f"{help_text}. Queue settings come "
            "from the SWELL_* environment (docs/architecture.md) or the flags.",
        )
        sub.add_argument("handler")
        sub.add_argument("payload", type=_payload, help="JSON object")
        sub.add_argument("--id", dest="task_id", help="task id (the idempotency key); random by default")
        sub.add_argument("--priority", type=int, default=0)
        _queue_flags(sub)
        if name == "call":
            sub.add_argument("--timeout", type=float, default=30.0)

    task = commands.add_parser("task", help="the status of one task")
    task.add_argument("task_id")
    _queue_flags(task)

    worker = commands.add_parser("worker", help="the worker runtime")
    worker.add_subparsers(dest="action", required=True).add_parser("run", help="run a worker from SWELL_* env")

    operator = commands.add_parser("operator", help="the operator")
    # No help of its own: `swell operator run --help` shows the operator's flags.
    operator_run = operator.add_subparsers(dest="action", required=True).add_parser(
        "run", help="run the operator (--help lists its flags)", add_help=False
    )
    operator_run.add_argument("operator_args", nargs=argparse.REMAINDER, help="passed to the operator")

    from swell_cli.uninstall import add_parser as add_uninstall_cleanup

    add_uninstall_cleanup(commands)

    demo = commands.add_parser("demo", help="kind (or the local control plane), operator, Redis, a pool and a burst")
    demo.add_argument("--tasks", type=int, default=4000, help="documents in the burst")
    demo.add_argument("--keep", action="store_true", help="leave the cluster and the pool running afterwards")
    demo.add_argument(
        "--local",
        action="store_true",
        help="run on the local control plane (pods as processes) even where kind can run",
    )
    demo.add_argument(
        "--output",
        type=Path,
        default=None,
        help="where the plot, summary and pod logs go (default: demo-output/ in the repository)",
    )
    return parser


def _queue_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", choices=["redis-list", "redis-streams", "pubsub"])
    parser.add_argument("--redis-url", help="default: $SWELL_REDIS_URL")
    parser.add_argument("--queue", help="list key or stream name; default: $SWELL_QUEUE")


def main(argv: Sequence[str] | None = None) -> int:
    """Runs a command; an unreachable Redis or API server is one line on stderr and exit 1, never a traceback."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:2] == ["operator", "run"]:  # everything after it, --help included, is the operator's
        from swell_operator.__main__ import main as operator_main

        operator_main(arguments[2:])
        return 0
    args = build_parser().parse_args(arguments)
    from swell_cli.errors import UserFacingError, one_line

    try:
        return _dispatch(args)
    except UserFacingError as exc:
        print(f"swell: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        message = one_line(exc)
        if message is None:
            raise
        print(f"swell: {message}", file=sys.stderr)
        return 1


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "status":
        from swell_cli.status import run_status

        return run_status(args)
    if args.command in ("submit", "call", "task"):
        from swell_cli.tasks import run_task_command

        return int(run_task_command(args))
    if args.command == "worker":
        from swell_worker.runtime import run_from_env

        return int(run_from_env())
    if args.command == "uninstall-cleanup":
        import asyncio

        from swell_cli.uninstall import run_cleanup

        return asyncio.run(run_cleanup(args))
    if args.command == "demo":
        from swell_cli.demo import run_demo

        return int(run_demo(args))
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
