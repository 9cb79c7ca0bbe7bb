"""``python -m bench [name ...]``: run the benchmarks (all by default); each writes bench/results/<name>.json."""

from __future__ import annotations

import runpy
import sys

# name -> the module that runs it; the reaction bench needs the local control plane (make cluster-up).
BENCHES = {
    "policy": "bench.policy",
    "worker_throughput": "bench.worker_throughput",
    "embedding": "bench.embedding",
    "reaction": "bench.reaction_local",
    "pubsub_wake": "bench.pubsub_wake",
    "cold_start": "bench.cold_start",
    "keda_side_by_side": "bench.keda_side_by_side",
    "operator_scale": "bench.operator_scale",
    "chaos": "bench.chaos",
}


def main(argv: list[str]) -> int:
    names = argv or list(BENCHES)
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        print(f"unknown bench {unknown}; known: {', '.join(BENCHES)}", file=sys.stderr)
        return 2
    for name in names:
        print(f"== {name}")
        sys.argv = [BENCHES[name]]
        try:
            runpy.run_module(BENCHES[name], run_name="__main__")
        except SystemExit as exc:
            if exc.code not in (0, None):
                return int(exc.code) if isinstance(exc.code, int) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
