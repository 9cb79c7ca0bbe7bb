"""Result files for the benchmarks that compare systems side by side: JSON plus a bar chart, with the command."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def save_comparison(name: str, rows: list[dict[str, Any]], value: str, xlabel: str, **extra: Any) -> None:
    """Write bench/results/<name>.json (machine, command, rows) and <name>.png (one bar per row's ``value``)."""
    command = f"python -m bench.{name}"
    report = {
        "name": name,
        "command": command,
        "machine": platform.platform(),
        "cores": os.cpu_count(),
        **extra,
        "rows": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3))
    ax.barh([r["system"] for r in rows][::-1], [r[value] for r in rows][::-1], color="tab:blue")
    ax.set_xlabel(xlabel)
    fig.tight_layout()
    fig.savefig(RESULTS / f"{name}.png", dpi=90)
    print(f"wrote bench/results/{name}.json and .png ({command})")
