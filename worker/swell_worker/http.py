"""The worker's HTTP side: liveness, readiness, Prometheus metrics, and the routes a push receiver adds.

Liveness fails only for what a restart fixes: every slot held by handler threads stuck past the task
timeout for longer than a bound (a thread cannot be cancelled, a new process frees them). Readiness is
what keeps a pod out of a push subscription's (or a Service's) rotation: it is 200 only while the queue
and the result store answer, every handler is ready, a slot can ever free up, and the worker is not
draining. A worker given a ``PushReceiver`` serves its routes; their handler calls
``await runtime.admit(delivery)``, which runs the delivery in a free slot or answers "refused" at once
(429) when the worker is full or draining.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from swell_worker import metrics
from swell_worker.backends import PushReceiver

if TYPE_CHECKING:
    from swell_worker.runtime import WorkerRuntime


def build_app(runtime: WorkerRuntime, receiver: PushReceiver | None) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        problems = runtime.liveness()
        body = {"alive": not problems, "problems": problems, "in_flight": runtime.in_flight}
        return web.json_response({**body, "concurrency": runtime.concurrency}, status=503 if problems else 200)

    async def readyz(_: web.Request) -> web.Response:
        problems = await runtime.readiness()
        return web.json_response({"ready": not problems, "problems": problems}, status=503 if problems else 200)

    async def metrics_page(_: web.Request) -> web.Response:
        body, content_type = metrics.exposition()
        return web.Response(body=body, headers={"Content-Type": content_type})

    app = web.Application()
    app.add_routes([web.get("/healthz", healthz), web.get("/readyz", readyz), web.get("/metrics", metrics_page)])
    if receiver is not None:
        app.add_routes(list(receiver.routes(runtime)))
    return app


async def start_http(runtime: WorkerRuntime, receiver: PushReceiver | None, host: str, port: int) -> web.AppRunner:
    """Serve in the background; the caller awaits ``cleanup()`` on the returned runner."""
    runner = web.AppRunner(build_app(runtime, receiver), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
