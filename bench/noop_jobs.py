"""No-op jobs for RQ and Celery, importable by their worker processes (the throughput bench starts them)."""

from __future__ import annotations

import os

from celery import Celery

celery_app = Celery("swell_bench", broker=os.environ.get("SWELL_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
celery_app.conf.update(task_ignore_result=True, worker_prefetch_multiplier=4, worker_hijack_root_logger=False)


@celery_app.task(name="noop")
def celery_noop() -> None:
    return None


def rq_noop() -> None:
    return None
