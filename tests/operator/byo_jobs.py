"""Jobs for the bring-your-own worker tests: real RQ and Celery workers import these (run by the pod runner)."""

from __future__ import annotations

import os
import time

import redis
from celery import Celery

REDIS_URL = os.environ.get("BYO_REDIS_URL", "redis://127.0.0.1:6379/0")

celery_app = Celery("swell_byo", broker=REDIS_URL)
celery_app.conf.update(
    task_ignore_result=True, task_acks_late=True, worker_prefetch_multiplier=1, worker_hijack_root_logger=False
)


def record(job: str, seconds: float) -> None:
    """Work a little, then count the job once per run (a repeated run would show as 2)."""
    time.sleep(seconds)
    redis.Redis.from_url(REDIS_URL).hincrby("byo:done", job, 1)


@celery_app.task(name="byo.record")
def celery_record(job: str, seconds: float) -> None:
    record(job, seconds)
