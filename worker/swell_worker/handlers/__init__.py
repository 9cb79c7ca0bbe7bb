"""Handler names and the factories behind them.

A factory is a class constructed as ``Factory(config, resources)`` that satisfies the ``Handler``
protocol (base.py). Factories are named by "module:Class" and imported only when a worker is configured
to run them, so the ML handlers' dependencies stay out of workers that do not need them. A name in
SWELL_HANDLERS may also be a "module:Class" reference of the user's own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from swell_worker.config import ConfigError, WorkerConfig
from swell_worker.handlers.base import Handler, PermanentTaskError
from swell_worker.handlers.resources import Resources
from swell_worker.imports import load_object

__all__ = [
    "HANDLER_FACTORIES",
    "Handler",
    "HandlerFactory",
    "PermanentTaskError",
    "Resources",
    "create_handlers",
]

HandlerFactory = Callable[[WorkerConfig, Resources], Handler]

HANDLER_FACTORIES: dict[str, str] = {
    "noop": "swell_worker.handlers.noop:NoopHandler",
    "sleep": "swell_worker.handlers.noop:SleepHandler",
    "fail": "swell_worker.handlers.noop:FailHandler",
    "echo": "swell_worker.handlers.noop:EchoHandler",
    "embed": "swell_worker.handlers.embed:EmbedHandler",
    "index": "swell_worker.handlers.index:IndexHandler",
    "search": "swell_worker.handlers.search:SearchHandler",
}


def handler_factory(name: str) -> HandlerFactory:
    """The factory for a registered name or a "module:Class" reference; ConfigError says which failed."""
    reference = HANDLER_FACTORIES.get(name, name)
    if ":" not in reference:
        known = ", ".join(sorted(HANDLER_FACTORIES))
        raise ConfigError(f"unknown handler {name!r} in SWELL_HANDLERS; known: {known}, or a 'module:Class'")
    try:
        factory: HandlerFactory = load_object(reference)
    except (ImportError, ValueError) as exc:
        raise ConfigError(f"handler {name!r} could not be loaded from {reference}: {exc}") from exc
    return factory


def create_handlers(names: Iterable[str], config: WorkerConfig, resources: Resources) -> dict[str, Handler]:
    """Instantiate the configured handlers, keyed by the name tasks use to reach them."""
    handlers: dict[str, Handler] = {}
    for name in names:
        handler = handler_factory(name)(config, resources)
        handlers[name if name in HANDLER_FACTORIES else handler.name] = handler
    return handlers
