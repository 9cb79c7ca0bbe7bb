"""Print which extension modules (paths on stdin) import; with --all, fail unless every one does.

slim-venv.sh strips extension modules between two runs: the first lists what imports as shipped, the
second proves stripping broke none of them. A module that never imported (an optional backend whose
system library is absent) is no reason to fail the first run.
Usage: python importable.py SITE_PACKAGES [--all] < paths
"""

import importlib
import sys
from pathlib import Path

site = Path(sys.argv[1])
strict = "--all" in sys.argv[2:]
failed = []
for line in sys.stdin:
    path = Path(line.strip())
    if not line.strip():
        continue
    dotted = ".".join(path.relative_to(site).parts)
    name = dotted.split(".cpython-")[0].removesuffix(".abi3.so")
    try:
        importlib.import_module(name)
    except Exception as exc:
        failed.append(f"{name}: {exc}")
        continue
    print(path)
if strict and failed:
    sys.exit("stripped extension modules no longer import:\n" + "\n".join(failed))
