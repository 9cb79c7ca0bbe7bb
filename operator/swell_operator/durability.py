"""Whether a Redis keeps what it acknowledged through a crash, from its own INFO.

Swell's at-least-once promise holds only while Redis keeps the tasks it accepted: an append-only file
(``appendonly yes``; ``appendfsync everysec`` loses at most about a second of writes, ``always`` none)
or a replica. An RDB-only Redis loses everything since its last snapshot, and one with neither loses
the whole queue. Managed Redis services that hide INFO fields are given the benefit of the doubt.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def durability_problem(info: Mapping[str, Any], where: str) -> str | None:
    """A warning when ``info`` (INFO persistence + replication) shows a Redis that can lose tasks on a crash."""
    if "aof_enabled" not in info:
        return None
    if str(info.get("aof_enabled")) == "1" or int(info.get("connected_slaves") or 0) > 0:
        return None
    snapshots = "RDB snapshots only" if str(info.get("rdb_last_bgsave_status", "")) == "ok" else "no persistence"
    return (
        f"Redis at {where} has no append-only file and no replica ({snapshots}): a crash loses every task "
        "accepted since its last snapshot; set appendonly yes with appendfsync everysec (docs/redis.md)"
    )
