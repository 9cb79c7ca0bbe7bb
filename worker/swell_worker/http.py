"""The worker's HTTP side: liveness, readiness, Prometheus metrics, and routes a backend adds.

Readiness is what keeps a pod out of a push subscription's (or a Service's) rotation: it is 200 only
while the queue and the result store answer, every handler is ready, and the worker is not draining.
A backend that receives work over HTTP (Pub/Sub push) implements ``routes(runtime)`` and returns
aiohttp route definitions; its handler calls ``await runtime.admit(delivery)``, which runs the
delivery in a free slot or returns False at once (answer 429) when the worker is full or draining.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from aiohttp import web

from swell_worker import metrics
from swell_worker.backends import Backend

if TYPE_CHECKING:
    from swell_worker.runtime import WorkerRuntime


@runtime_checkable
class ServesRoutes(Protocol):
    def routes(self, runtime: WorkerRuntime) -> Iterable[web.AbstractRouteDef]:
        """Extra HTTP routes, e.g. ``POST /pubsub/push``."""
        ...


def build_app(runtime: WorkerRuntime, backend: Backend) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"alive": True, "in_flight": runtime.in_flight, "concurrency": runtime.concurrency})

    async def readyz(_: web.Request) -> web.Response:
        problems = await runtime.readiness()
        return web.json_response({"ready": not problems, "problems": problems}, status=503 if problems else 200)

    async def metrics_page(_: web.Request) -> web.Response:
        body, content_type = metrics.exposition()
        return web.Response(body=body, headers={"Content-Type": content_type})

    app = web.Application()
    app.add_routes([web.get("/healthz", healthz), web.get("/readyz", readyz), web.get("/metrics", metrics_page)])
    if isinstance(backend, ServesRoutes):
        app.add_routes(list(backend.routes(runtime)))
    return app


async def start_http(runtime: WorkerRuntime, backend: Backend, host: str, port: int) -> web.AppRunner:
    """Serve in the background; the caller awaits ``cleanup()`` on the returned runner."""
    runner = web.AppRunner(build_app(runtime, backend), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
