"""The worker's settings, read once from the environment the operator renders into the Deployment.

The model itself is the contract's (``swell_contract.settings``), shared with the operator that renders
it; this module is the worker's name for it.
"""

from __future__ import annotations

from swell_contract.settings import (
    BACKENDS,
    IN_FLIGHT_KINDS,
    REDIS_BACKENDS,
    BackendKind,
    ConfigError,
    InFlightKind,
    PubSubMode,
    WorkerSettings,
    default_consumer,
    redact_url,
)

WorkerConfig = WorkerSettings

__all__ = [
    "BACKENDS",
    "IN_FLIGHT_KINDS",
    "REDIS_BACKENDS",
    "BackendKind",
    "ConfigError",
    "InFlightKind",
    "PubSubMode",
    "WorkerConfig",
    "WorkerSettings",
    "default_consumer",
    "redact_url",
]
