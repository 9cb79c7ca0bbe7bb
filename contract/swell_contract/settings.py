"""The worker's settings: one typed model, parsed by the worker from its environment, rendered by the operator.

Each field carries its environment variable as its alias, so the variable names, their parsing, their
defaults and the docs table (``python -m swell_contract.envdoc``) all come from this one class. Every
value is checked when the worker starts, so a typo in a WorkerPool fails the pod at once with the
variable's name and the accepted values, instead of surfacing later as a stuck queue. Secrets (the
Redis password, the push token) come in by reference from Kubernetes Secrets and must never reach a log
line or an error, so ``repr`` shows URLs with their password masked and secrets only as "<set>", and a
validation error never echoes a secret's value.
"""

from __future__ import annotations

import logging
import os
import re
import socket
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal, Self, cast, get_args
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic.fields import FieldInfo

BackendKind = Literal["redis-list", "redis-streams", "pubsub"]
PubSubMode = Literal["pull", "push"]
InFlightKind = Literal["list", "zset", "hash"]

BACKENDS: tuple[str, ...] = get_args(BackendKind)
REDIS_BACKENDS = ("redis-list", "redis-streams")
IN_FLIGHT_KINDS: tuple[str, ...] = get_args(InFlightKind)

# Fields holding a URL that may embed a password, and fields that are secrets outright.
URL_FIELDS = frozenset({"redis_url", "result_redis_url"})
SECRET_FIELDS = frozenset({"redis_password", "push_token"})
# Fields the operator fills from a Secret by reference: their values never pass through it.
FROM_SECRETS = frozenset({"redis_url", "redis_password", "push_token"})

# Variables the worker's pod also gets, read by libraries or by ``default_consumer`` rather than here.
POD_NAME = "POD_NAME"
PUBSUB_EMULATOR_HOST = "PUBSUB_EMULATOR_HOST"
GOOGLE_APPLICATION_CREDENTIALS = "GOOGLE_APPLICATION_CREDENTIALS"
OTHER_VARIABLES: dict[str, str] = {
    POD_NAME: "the pod's name (downward API); the default consumer name",
    PUBSUB_EMULATOR_HOST: "`host:port` of a Pub/Sub emulator, read by google-cloud-pubsub",
    GOOGLE_APPLICATION_CREDENTIALS: "path of the mounted service-account key, read by google-auth",
}

_NAME = re.compile(r"^[^\s,]+$")


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
    return os.environ.get(POD_NAME) or f"{socket.gethostname()}-{os.getpid()}"


def _names(value: object) -> object:
    """A comma-separated variable as a tuple of its non-empty, stripped parts."""
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


def _in_flight_sources(value: object) -> object:
    if not isinstance(value, str):
        return value
    sources = []
    for entry in cast(tuple[str, ...], _names(value)):
        kind, _, key = entry.partition(":")
        if kind not in IN_FLIGHT_KINDS or not key:
            raise ConfigError(f"SWELL_EXTRA_IN_FLIGHT entries are list:KEY, zset:KEY or hash:KEY; got {entry!r}")
        sources.append((kind, key))
    return tuple(sources)


Names = Annotated[tuple[str, ...], BeforeValidator(_names)]
InFlightSources = Annotated[tuple[tuple[InFlightKind, str], ...], BeforeValidator(_in_flight_sources)]


def _setting(default: Any, env: str, doc: str, *, shown: str | None = None) -> Any:
    """A field read from variable ``env``; ``shown`` is the default as the docs table states it."""
    extra: Any = {"shown_default": shown} if shown is not None else None
    return Field(default, alias=env, description=doc, json_schema_extra=extra)


class WorkerSettings(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="forbid")

    backend: BackendKind = Field(
        alias="SWELL_BACKEND", description="`redis-list`, `redis-streams` or `pubsub`", json_schema_extra={}
    )
    redis_url: str | None = _setting(None, "SWELL_REDIS_URL", "Redis URL (from a Secret, never logged)")
    redis_password: str | None = _setting(None, "SWELL_REDIS_PASSWORD", "optional password (from a Secret)")
    queues: Names = _setting(
        (),
        "SWELL_QUEUE",
        "comma-separated list keys or stream names, highest priority first",
        shown="required for Redis",
    )
    group: str = _setting("swell", "SWELL_GROUP", "Streams consumer group")
    consumer: str = Field(
        default_factory=default_consumer,
        alias="SWELL_CONSUMER",
        description="consumer name; the operator sets it to the pod name",
        json_schema_extra={"shown_default": "`$POD_NAME` or hostname-pid"},
    )
    concurrency: int = _setting(4, "SWELL_CONCURRENCY", "tasks in flight per worker")
    handlers: Names = _setting(("noop",), "SWELL_HANDLERS", "comma-separated handler names")
    max_attempts: int = _setting(5, "SWELL_MAX_ATTEMPTS", "deliveries before dead-letter")
    task_timeout_seconds: float = _setting(300.0, "SWELL_TASK_TIMEOUT_SECONDS", "per-task timeout")
    max_payload_bytes: int = _setting(1_048_576, "SWELL_MAX_PAYLOAD_BYTES", "larger bodies are dead-lettered")
    http_host: str = _setting("0.0.0.0", "SWELL_HTTP_HOST", "address the HTTP server listens on")
    http_port: int = _setting(8080, "SWELL_HTTP_PORT", "`/healthz`, `/readyz`, `/metrics`, `/pubsub/push`")
    drain_seconds: float = _setting(
        25.0,
        "SWELL_DRAIN_SECONDS",
        "grace after SIGTERM for in-flight tasks; what does not finish is given back (the operator sets "
        "it to the pod's termination grace minus 5 s)",
    )
    retry_base_seconds: float = _setting(1.0, "SWELL_RETRY_BASE_SECONDS", "first retry backoff (doubles per attempt)")
    retry_cap_seconds: float = _setting(60.0, "SWELL_RETRY_CAP_SECONDS", "longest retry backoff")
    consumer_timeout_seconds: float = _setting(
        30.0,
        "SWELL_CONSUMER_TIMEOUT_SECONDS",
        "a consumer silent this long is presumed dead and its tasks go to others",
    )
    result_ttl_seconds: int = _setting(86_400, "SWELL_RESULT_TTL_SECONDS", "how long a succeeded task's record lives")
    failure_ttl_seconds: int = _setting(604_800, "SWELL_FAILURE_TTL_SECONDS", "how long any other task record lives")
    extra_in_flight: InFlightSources = _setting(
        (),
        "SWELL_EXTRA_IN_FLIGHT",
        "keys Swell watches but does not consume, counted in flight: comma-separated `list:KEY`, "
        "`zset:KEY` or `hash:KEY` (Celery's `unacked` hash, RQ's `rq:wip:<queue>` zset)",
    )
    pubsub_project: str | None = _setting(None, "SWELL_PUBSUB_PROJECT", "Pub/Sub project", shown="required for Pub/Sub")
    pubsub_subscription: str | None = _setting(None, "SWELL_PUBSUB_SUBSCRIPTION", "Pub/Sub subscription")
    pubsub_topic: str | None = _setting(None, "SWELL_PUBSUB_TOPIC", "Pub/Sub topic (for publishing)")
    pubsub_mode: PubSubMode = _setting("pull", "SWELL_PUBSUB_MODE", "`pull` or `push`")
    pubsub_dead_letter_topic: str | None = _setting(
        None,
        "SWELL_PUBSUB_DEAD_LETTER_TOPIC",
        "topic that receives dead letters, with `reason`, `attempts`, `failed_at` attributes",
    )
    push_token: str | None = _setting(None, "SWELL_PUSH_TOKEN", "shared token a push must carry (from a Secret)")
    push_audience: str | None = _setting(None, "SWELL_PUSH_AUDIENCE", "OIDC audience a push token must carry")
    push_service_account: str | None = _setting(
        None,
        "SWELL_PUSH_SERVICE_ACCOUNT",
        "the push subscription's service account; OIDC tokens from any other are refused (required with "
        "`SWELL_PUSH_AUDIENCE`)",
    )
    oidc_certs_url: str = _setting(
        "https://www.googleapis.com/oauth2/v1/certs",
        "SWELL_OIDC_CERTS_URL",
        "where Google's ID-token certificates are fetched",
    )
    oidc_timeout_seconds: float = _setting(
        5.0, "SWELL_OIDC_TIMEOUT_SECONDS", "a push whose token is not verified in this time gets 503"
    )
    result_redis_url: str | None = _setting(
        None,
        "SWELL_RESULT_REDIS_URL",
        "Redis for task records and replies (needed when the backend is Pub/Sub)",
        shown="`SWELL_REDIS_URL`",
    )
    embedder: str = _setting("onnx-int8", "SWELL_EMBEDDER", "`onnx-int8` (no torch) or `sentence-transformers`")
    model_threads: int = _setting(
        0,
        "SWELL_MODEL_THREADS",
        "threads for the model; the int8 runtime runs that many single-threaded calls at once, the fp32 one"
        " puts them all in one call; 0: the pod's CPU limit (its cgroup quota), else the CPUs it may run on",
    )
    vector_uri: str = _setting(
        "/tmp/swell-vectors.db",
        "SWELL_VECTOR_URI",
        "Milvus URI: a file path (Milvus Lite, embedded) or `http://host:19530` (server)",
    )
    vector_collection: str = _setting("swell_documents", "SWELL_VECTOR_COLLECTION", "collection name")
    log_level: str = _setting("INFO", "SWELL_LOG_LEVEL", "`DEBUG`, `INFO`, `WARNING`, `ERROR` or `CRITICAL`")

    # Checked to be greater than 0 (the rest of the numbers have their own rules below).
    _POSITIVE: ClassVar[tuple[str, ...]] = (
        "concurrency",
        "max_attempts",
        "task_timeout_seconds",
        "max_payload_bytes",
        "retry_base_seconds",
        "consumer_timeout_seconds",
        "result_ttl_seconds",
        "failure_ttl_seconds",
        "oidc_timeout_seconds",
    )

    def __init__(self, **values: Any) -> None:
        """Settings by field name or by variable name; any problem is a ConfigError naming the variable."""
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise ConfigError(_explain(exc)) from None

    def model_post_init(self, context: Any, /) -> None:
        # pydantic wraps the ConfigError (with every input, secrets too); ``__init__`` unwraps it.
        self._validate()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
        """The settings from environment variables; unset and blank variables take the default."""
        environ = os.environ if environ is None else environ
        values: dict[str, str] = {}
        for field in cls.model_fields.values():
            assert field.alias is not None
            value = environ.get(field.alias, "").strip()
            if value:
                values[field.alias] = value
        if "SWELL_BACKEND" not in values:
            raise ConfigError(f"SWELL_BACKEND is required: one of {', '.join(BACKENDS)}")
        return cls(**values)

    def to_env(self, *, only_set: bool = True) -> dict[str, str]:
        """The variables that ``from_env`` reads back into these settings (secrets included: handle with care).

        ``only_set`` renders just the fields given when the settings were made, so a pod's environment
        shows what its pool chose and takes the worker's defaults for the rest.
        """
        rendered: dict[str, str] = {}
        for name, field in type(self).model_fields.items():
            if only_set and name not in self.model_fields_set:
                continue
            value = getattr(self, name)
            if value is None:
                continue
            assert field.alias is not None
            rendered[field.alias] = render_value(value)
        return rendered

    @classmethod
    def env_name(cls, field: str) -> str:
        alias = cls.model_fields[field].alias
        assert alias is not None
        return alias

    @classmethod
    def render(cls, **values: Any) -> dict[str, str]:
        """The variables for these field values, as ``to_env`` would render them, without checking them.

        For the operator, which never holds the Secret-backed values (``FROM_SECRETS``: the pod reads them
        from Secrets by reference) and so cannot build whole settings. The worker checks the whole when it
        starts and exits with the variable's name if a value is wrong.
        """
        rendered: dict[str, str] = {}
        for name, value in values.items():
            if value is not None:
                rendered[cls.env_name(name)] = render_value(value)
        return rendered

    def __repr__(self) -> str:
        shown = []
        for name in type(self).model_fields:
            value = getattr(self, name)
            if name in URL_FIELDS:
                value = redact_url(value)
            elif name in SECRET_FIELDS and value is not None:
                value = "<set>"
            shown.append(f"{name}={value!r}")
        return f"{type(self).__name__}({', '.join(shown)})"

    __str__ = __repr__

    @property
    def result_redis(self) -> str | None:
        """Where task records and replies live."""
        return self.result_redis_url or self.redis_url

    def _validate(self) -> None:
        if self.backend in REDIS_BACKENDS:
            if not self.redis_url:
                raise ConfigError(f"SWELL_REDIS_URL is required for SWELL_BACKEND={self.backend}")
            if not self.queues:
                raise ConfigError(f"SWELL_QUEUE is required for SWELL_BACKEND={self.backend}")
        if self.backend == "pubsub" and not self.pubsub_project:
            raise ConfigError("SWELL_PUBSUB_PROJECT is required for SWELL_BACKEND=pubsub")
        for url in (self.redis_url, self.result_redis_url):
            if url is not None and urlsplit(url).scheme not in ("redis", "rediss", "unix"):
                raise ConfigError(f"Redis URLs must start with redis://, rediss:// or unix://; got {redact_url(url)!r}")
        for queue in self.queues:
            if not _NAME.match(queue):
                raise ConfigError(f"SWELL_QUEUE names must be non-empty without spaces; got {queue!r}")
        if len(set(self.queues)) != len(self.queues):
            raise ConfigError(f"SWELL_QUEUE lists a queue twice: {','.join(self.queues)}")
        if not self.handlers:
            raise ConfigError("SWELL_HANDLERS must name at least one handler")
        if not self.consumer or not _NAME.match(self.consumer):
            raise ConfigError(f"SWELL_CONSUMER must be non-empty without spaces; got {self.consumer!r}")
        if self.push_audience and not self.push_service_account:
            raise ConfigError(
                "SWELL_PUSH_AUDIENCE needs SWELL_PUSH_SERVICE_ACCOUNT, the email of the push subscription's "
                "service account: without it any Google account could mint a token for the audience"
            )
        if self.retry_cap_seconds < self.retry_base_seconds:
            raise ConfigError(
                f"SWELL_RETRY_CAP_SECONDS ({self.retry_cap_seconds}) must be at least "
                f"SWELL_RETRY_BASE_SECONDS ({self.retry_base_seconds})"
            )
        if self.model_threads < 0:
            raise ConfigError(f"SWELL_MODEL_THREADS must be 0 (the CPU limit) or more; got {self.model_threads}")
        if not 1 <= self.http_port <= 65535:
            raise ConfigError(f"SWELL_HTTP_PORT must be between 1 and 65535; got {self.http_port}")
        if logging.getLevelName(self.log_level.upper()) not in (10, 20, 30, 40, 50):
            raise ConfigError(
                f"SWELL_LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL; got {self.log_level!r}"
            )
        for name in self._POSITIVE:
            value = getattr(self, name)
            if value <= 0:
                raise ConfigError(f"{self.env_name(name)} must be greater than 0; got {value}")
        if self.drain_seconds < 0:
            raise ConfigError(f"SWELL_DRAIN_SECONDS must be 0 or more; got {self.drain_seconds}")


def render_value(value: object) -> str:
    """A setting as its variable's text: lists comma-separated, in-flight sources as ``kind:key``."""
    if isinstance(value, tuple):
        return ",".join(f"{item[0]}:{item[1]}" if isinstance(item, tuple) else str(item) for item in value)
    return str(value)


def _explain(exc: ValidationError) -> str:
    """The first problem, in the variable's words; a secret's value is never repeated."""
    error = exc.errors()[0]
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, ConfigError):
        return str(cause)
    name = str(error["loc"][0]) if error["loc"] else ""
    field = _field(name)
    variable = field.alias if field is not None and field.alias else name
    secret = name in SECRET_FIELDS | URL_FIELDS or variable in {
        WorkerSettings.env_name(f) for f in SECRET_FIELDS | URL_FIELDS
    }
    shown = "" if secret else f"; got {error.get('input')!r}"
    kind = error["type"]
    if kind == "int_parsing" or kind == "int_from_float":
        return f"{variable} must be an integer{shown}"
    if kind == "float_parsing":
        return f"{variable} must be a number{shown}"
    if kind == "literal_error":
        expected = (error.get("ctx") or {}).get("expected", "")
        return f"{variable} must be one of {expected}{shown}"
    if kind == "extra_forbidden":
        return f"{variable} is not a worker setting"
    return f"{variable}: {error['msg']}{shown}"


def _field(name: str) -> FieldInfo | None:
    fields = WorkerSettings.model_fields
    if name in fields:
        return fields[name]
    return next((f for f in fields.values() if f.alias == name), None)
