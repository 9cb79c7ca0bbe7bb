"""Worker settings, read once from the environment the operator renders into the Deployment.

Every value is checked when the worker starts, so a typo in a WorkerPool fails the pod at once with
the variable's name and the accepted values, instead of surfacing later as a stuck queue. Secrets (the
Redis password, the push token) come in by reference from Kubernetes Secrets and must never reach a log
line, so ``repr`` shows URLs with their password masked and secrets only as "<set>".
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal, TypeVar, cast, get_args
from urllib.parse import urlsplit, urlunsplit

BackendKind = Literal["redis-list", "redis-streams", "pubsub"]
PubSubMode = Literal["pull", "push"]
InFlightKind = Literal["list", "zset", "hash"]

BACKENDS: tuple[str, ...] = get_args(BackendKind)
REDIS_BACKENDS = ("redis-list", "redis-streams")
IN_FLIGHT_KINDS: tuple[str, ...] = get_args(InFlightKind)

# Fields holding a URL that may embed a password, and fields that are secrets outright.
_URL_FIELDS = frozenset({"redis_url", "result_redis_url"})
_SECRET_FIELDS = frozenset({"redis_password", "push_token"})
_NAME = re.compile(r"^[^\s,]+$")

T = TypeVar("T")


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable and what it accepts."""


def redact_url(url: str | None) -> str | None:
    """The URL with any password replaced by ``***``, safe to log and to show in errors."""
    if url is None:
        return None
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return "<unparseable URL>"


def default_consumer() -> str:
    """The pod name in Kubernetes; elsewhere hostname plus pid, so two local workers never share one."""
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True, repr=False)
class WorkerConfig:
    backend: BackendKind
    redis_url: str | None = None
    redis_password: str | None = None
    # Queue keys or stream names, highest priority first.
    queues: tuple[str, ...] = ()
    group: str = "swell"
    consumer: str = field(default_factory=default_consumer)
    concurrency: int = 4
    handlers: tuple[str, ...] = ("noop",)
    max_attempts: int = 5
    task_timeout_seconds: float = 300.0
    max_payload_bytes: int = 1_048_576
    http_host: str = "0.0.0.0"
    http_port: int = 8080
    # Grace period after SIGTERM for in-flight tasks; what does not finish is given back.
    drain_seconds: float = 25.0
    retry_base_seconds: float = 1.0
    retry_cap_seconds: float = 60.0
    # A consumer silent this long is presumed dead and its tasks are delivered to others.
    consumer_timeout_seconds: float = 30.0
    result_ttl_seconds: int = 86_400
    failure_ttl_seconds: int = 604_800
    # Keys Swell watches but does not consume (Celery's "unacked" hash, RQ's "rq:wip:<queue>" zset).
    extra_in_flight: tuple[tuple[InFlightKind, str], ...] = ()
    pubsub_project: str | None = None
    pubsub_subscription: str | None = None
    pubsub_topic: str | None = None
    pubsub_mode: PubSubMode = "pull"
    pubsub_dead_letter_topic: str | None = None
    push_token: str | None = None
    push_audience: str | None = None
    # The push subscription's service account: an OIDC token from any other account is refused.
    push_service_account: str | None = None
    # Where Google's ID-token certificates are fetched (a loopback server in tests), and how long a
    # push may wait for its token to be verified before it is answered 503.
    oidc_certs_url: str = "https://www.googleapis.com/oauth2/v1/certs"
    oidc_timeout_seconds: float = 5.0
    result_redis_url: str | None = None
    embedder: str = "onnx-int8"
    vector_uri: str = "/tmp/swell-vectors.db"
    vector_collection: str = "swell_documents"
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        self._validate()

    def __repr__(self) -> str:
        shown = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in _URL_FIELDS:
                value = redact_url(value)
            elif f.name in _SECRET_FIELDS and value is not None:
                value = "<set>"
            shown.append(f"{f.name}={value!r}")
        return f"WorkerConfig({', '.join(shown)})"

    __str__ = __repr__

    @property
    def result_redis(self) -> str | None:
        """Where status, results, idempotency markers and replies live."""
        return self.result_redis_url or self.redis_url

    def _validate(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(f"SWELL_BACKEND must be one of {', '.join(BACKENDS)}; got {self.backend!r}")
        if self.backend in REDIS_BACKENDS:
            if not self.redis_url:
                raise ConfigError(f"SWELL_REDIS_URL is required for SWELL_BACKEND={self.backend}")
            if not self.queues:
                raise ConfigError(f"SWELL_QUEUE is required for SWELL_BACKEND={self.backend}")
        if self.backend == "pubsub" and not self.pubsub_project:
            raise ConfigError("SWELL_PUBSUB_PROJECT is required for SWELL_BACKEND=pubsub")
        for name in (self.redis_url, self.result_redis_url):
            if name is not None and urlsplit(name).scheme not in ("redis", "rediss", "unix"):
                raise ConfigError(
                    f"Redis URLs must start with redis://, rediss:// or unix://; got {redact_url(name)!r}"
                )
        for queue in self.queues:
            if not _NAME.match(queue):
                raise ConfigError(f"SWELL_QUEUE names must be non-empty without spaces; got {queue!r}")
        if len(set(self.queues)) != len(self.queues):
            raise ConfigError(f"SWELL_QUEUE lists a queue twice: {','.join(self.queues)}")
        if not self.handlers:
            raise ConfigError("SWELL_HANDLERS must name at least one handler")
        if not self.consumer or not _NAME.match(self.consumer):
            raise ConfigError(f"SWELL_CONSUMER must be non-empty without spaces; got {self.consumer!r}")
        if self.pubsub_mode not in get_args(PubSubMode):
            raise ConfigError(f"SWELL_PUBSUB_MODE must be pull or push; got {self.pubsub_mode!r}")
        if self.push_audience and not self.push_service_account:
            raise ConfigError(
                "SWELL_PUSH_AUDIENCE needs SWELL_PUSH_SERVICE_ACCOUNT, the email of the push subscription's "
                "service account: without it any Google account could mint a token for the audience"
            )
        for kind, key in self.extra_in_flight:
            if kind not in IN_FLIGHT_KINDS or not key:
                raise ConfigError(f"SWELL_EXTRA_IN_FLIGHT entries are list:KEY, zset:KEY or hash:KEY; got {kind}:{key}")
        if self.retry_cap_seconds < self.retry_base_seconds:
            raise ConfigError(
                f"SWELL_RETRY_CAP_SECONDS ({self.retry_cap_seconds}) must be at least "
                f"SWELL_RETRY_BASE_SECONDS ({self.retry_base_seconds})"
            )
        if not 1 <= self.http_port <= 65535:
            raise ConfigError(f"SWELL_HTTP_PORT must be between 1 and 65535; got {self.http_port}")
        if logging.getLevelName(self.log_level.upper()) not in (10, 20, 30, 40, 50):
            raise ConfigError(
                f"SWELL_LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL; got {self.log_level!r}"
            )
        for var, value in (
            ("SWELL_CONCURRENCY", self.concurrency),
            ("SWELL_MAX_ATTEMPTS", self.max_attempts),
            ("SWELL_TASK_TIMEOUT_SECONDS", self.task_timeout_seconds),
            ("SWELL_MAX_PAYLOAD_BYTES", self.max_payload_bytes),
            ("SWELL_RETRY_BASE_SECONDS", self.retry_base_seconds),
            ("SWELL_CONSUMER_TIMEOUT_SECONDS", self.consumer_timeout_seconds),
            ("SWELL_RESULT_TTL_SECONDS", self.result_ttl_seconds),
            ("SWELL_FAILURE_TTL_SECONDS", self.failure_ttl_seconds),
            ("SWELL_OIDC_TIMEOUT_SECONDS", self.oidc_timeout_seconds),
        ):
            if value <= 0:
                raise ConfigError(f"{var} must be greater than 0; got {value}")
        if self.drain_seconds < 0:
            raise ConfigError(f"SWELL_DRAIN_SECONDS must be 0 or more; got {self.drain_seconds}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> WorkerConfig:
        """Build the settings from environment variables (docs/architecture.md lists them)."""
        env = Env(os.environ if environ is None else environ)
        backend = env.text("SWELL_BACKEND")
        if backend is None:
            raise ConfigError(f"SWELL_BACKEND is required: one of {', '.join(BACKENDS)}")
        defaults = cls.__dataclass_fields__
        return cls(
            backend=cast(BackendKind, backend),
            redis_url=env.text("SWELL_REDIS_URL"),
            redis_password=env.text("SWELL_REDIS_PASSWORD"),
            queues=env.names("SWELL_QUEUE") or (),
            group=env.text("SWELL_GROUP") or "swell",
            consumer=env.text("SWELL_CONSUMER") or default_consumer(),
            concurrency=env.number("SWELL_CONCURRENCY", int, 4),
            handlers=env.names("SWELL_HANDLERS") or ("noop",),
            max_attempts=env.number("SWELL_MAX_ATTEMPTS", int, 5),
            task_timeout_seconds=env.number("SWELL_TASK_TIMEOUT_SECONDS", float, 300.0),
            max_payload_bytes=env.number("SWELL_MAX_PAYLOAD_BYTES", int, 1_048_576),
            http_host=env.text("SWELL_HTTP_HOST") or "0.0.0.0",
            http_port=env.number("SWELL_HTTP_PORT", int, 8080),
            drain_seconds=env.number("SWELL_DRAIN_SECONDS", float, 25.0),
            retry_base_seconds=env.number("SWELL_RETRY_BASE_SECONDS", float, 1.0),
            retry_cap_seconds=env.number("SWELL_RETRY_CAP_SECONDS", float, 60.0),
            consumer_timeout_seconds=env.number("SWELL_CONSUMER_TIMEOUT_SECONDS", float, 30.0),
            result_ttl_seconds=env.number("SWELL_RESULT_TTL_SECONDS", int, 86_400),
            failure_ttl_seconds=env.number("SWELL_FAILURE_TTL_SECONDS", int, 604_800),
            extra_in_flight=env.in_flight_sources("SWELL_EXTRA_IN_FLIGHT"),
            pubsub_project=env.text("SWELL_PUBSUB_PROJECT"),
            pubsub_subscription=env.text("SWELL_PUBSUB_SUBSCRIPTION"),
            pubsub_topic=env.text("SWELL_PUBSUB_TOPIC"),
            pubsub_mode=cast(PubSubMode, env.text("SWELL_PUBSUB_MODE") or "pull"),
            pubsub_dead_letter_topic=env.text("SWELL_PUBSUB_DEAD_LETTER_TOPIC"),
            push_token=env.text("SWELL_PUSH_TOKEN"),
            push_audience=env.text("SWELL_PUSH_AUDIENCE"),
            push_service_account=env.text("SWELL_PUSH_SERVICE_ACCOUNT"),
            oidc_certs_url=env.text("SWELL_OIDC_CERTS_URL") or str(defaults["oidc_certs_url"].default),
            oidc_timeout_seconds=env.number("SWELL_OIDC_TIMEOUT_SECONDS", float, 5.0),
            result_redis_url=env.text("SWELL_RESULT_REDIS_URL"),
            embedder=env.text("SWELL_EMBEDDER") or str(defaults["embedder"].default),
            vector_uri=env.text("SWELL_VECTOR_URI") or str(defaults["vector_uri"].default),
            vector_collection=env.text("SWELL_VECTOR_COLLECTION") or str(defaults["vector_collection"].default),
            log_level=env.text("SWELL_LOG_LEVEL") or "INFO",
        )


class Env:
    """Typed reads of environment variables whose errors name the variable."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def text(self, name: str) -> str | None:
        value = self._environ.get(name, "").strip()
        return value or None

    def names(self, name: str) -> tuple[str, ...] | None:
        value = self.text(name)
        if value is None:
            return None
        return tuple(part.strip() for part in value.split(",") if part.strip())

    def number(self, name: str, kind: Callable[[str], T], default: T) -> T:
        value = self.text(name)
        if value is None:
            return default
        try:
            return kind(value)
        except ValueError:
            noun = "an integer" if kind is int else "a number"
            raise ConfigError(f"{name} must be {noun}; got {value!r}") from None

    def in_flight_sources(self, name: str) -> tuple[tuple[InFlightKind, str], ...]:
        sources: list[tuple[InFlightKind, str]] = []
        for entry in self.names(name) or ():
            kind, _, key = entry.partition(":")
            if kind not in IN_FLIGHT_KINDS or not key:
                raise ConfigError(f"{name} entries are list:KEY, zset:KEY or hash:KEY; got {entry!r}")
            sources.append((cast(InFlightKind, kind), key))
        return tuple(sources)
