"""The WorkerPool resource: the one source of truth for its CRD schema, its docs and its validation.

The operator reads specs through these models, ``crdgen`` turns them into the CRD in ``crds/``, and the
README's reference table is generated from the field descriptions. Rules the API server must enforce
(min <= max, exactly one of worker or scaleTargetRef, backend-specific fields) are CEL expressions in
``x-kubernetes-validations`` so that an invalid WorkerPool is refused at ``kubectl apply`` time.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict
from swell_contract.settings import GOOGLE_APPLICATION_CREDENTIALS, POD_NAME, PUBSUB_EMULATOR_HOST, WorkerSettings

GROUP = "swell.dev"
VERSION = "v1alpha1"
KIND = "WorkerPool"
PLURAL = "workerpools"
SINGULAR = "workerpool"
SHORT_NAMES = ["wp"]
# A Milvus server's URI: never a file path, which would be one store per pod.
VECTOR_URI_PATTERN = r"^(https?|tcp|unix)://.+"


def cel(rule: str, message: str) -> JsonDict:
    return {"rule": rule, "message": message}


class Spec(BaseModel):
    """Base for every spec model: camelCase on the wire, unknown fields refused."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class SecretKeyRef(Spec):
    name: str = Field(min_length=1, max_length=253, description="Name of a Secret in the pool's namespace.")
    key: str = Field(min_length=1, max_length=253, description="Key inside the Secret.")


class RedisConnection(Spec):
    url_secret_ref: SecretKeyRef = Field(
        description="Secret key holding the Redis URL, e.g. `redis://redis.swell:6379/0`. "
        "The URL may carry the password; it is never logged."
    )
    password_secret_ref: SecretKeyRef | None = Field(
        default=None, description="Optional Secret key holding the Redis password, when not in the URL."
    )


class InFlightSource(Spec):
    kind: Literal["list", "zset", "hash"] = Field(
        description="Redis type of the key: `list` (LLEN), `zset` (ZCARD) or `hash` (HLEN)."
    )
    key: str = Field(min_length=1, max_length=512, description="Redis key counted as work in flight.")


class RedisListQueue(Spec):
    keys: list[str] = Field(
        min_length=1,
        max_length=16,
        description="List keys, highest priority first. Producers LPUSH; workers move from the right.",
    )
    in_flight_sources: list[InFlightSource] = Field(
        default_factory=list,
        max_length=16,
        description="Extra keys counted as in-flight work, for queues Swell does not consume itself: "
        "RQ's started registry (`zset rq:wip:<queue>`), Celery's unacked hash (`hash unacked`).",
    )


class RedisStreamsQueue(Spec):
    streams: list[str] = Field(min_length=1, max_length=16, description="Stream names, highest priority first.")
    group: str = Field(default="swell", min_length=1, max_length=200, description="Consumer group.")


class PubSubQueue(Spec):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.mode != 'push' || has(self.pushTokenSecretRef) || has(self.pushAudience)",
                    "push mode needs pushTokenSecretRef or pushAudience: a push endpoint must not be open",
                ),
                cel("!has(self.pushEndpoint) || self.mode == 'push'", "pushEndpoint is for push mode only"),
                cel(
                    "!has(self.pushAudience) || has(self.pushServiceAccount)",
                    "pushAudience needs pushServiceAccount, the email of the service account the push "
                    "subscription signs its OIDC tokens as: without it any Google account could mint a token "
                    "for the audience",
                ),
                cel(
                    "!has(self.pushServiceAccount) || has(self.pushAudience)",
                    "pushServiceAccount needs pushAudience, the audience the push subscription's OIDC tokens carry",
                ),
            ]
        }
    )

    project: str = Field(min_length=1, max_length=100, description="Google Cloud project id.")
    subscription: str = Field(min_length=1, max_length=255, description="Subscription id.")
    topic: str | None = Field(default=None, max_length=255, description="Topic id, for `swell submit`.")
    mode: Literal["pull", "push"] = Field(
        default="pull",
        description="`pull`: workers pull with flow control. `push`: Pub/Sub pushes to the pool's endpoint; "
        "while the pool is at zero the operator's activator answers and wakes it.",
    )
    dead_letter_topic: str | None = Field(
        default=None,
        max_length=255,
        description="Dead-letter topic id; validated or set up by the operator. A push subscription without "
        "one gets `<subscription>-dead-letter`, created by the operator.",
    )
    max_delivery_attempts: int = Field(
        default=5, ge=5, le=100, description="Deliveries before dead-letter (Pub/Sub allows 5 to 100)."
    )
    credentials_secret_ref: SecretKeyRef | None = Field(
        default=None,
        description="Secret key holding a service-account JSON key; omit to use Workload Identity.",
    )
    push_token_secret_ref: SecretKeyRef | None = Field(
        default=None, description="Secret key holding the shared token a push must carry (push mode)."
    )
    push_audience: str | None = Field(
        default=None, max_length=512, description="OIDC audience a push token must carry (push mode)."
    )
    push_service_account: str | None = Field(
        default=None,
        max_length=254,
        pattern=r"^[^@\s]+@[^@\s]+$",
        description="Push mode with pushAudience: the email of the service account the push subscription "
        "signs its OIDC tokens as. Only tokens from Google (issuer accounts.google.com) for pushAudience "
        "and this account, with a verified email, are accepted.",
    )
    push_endpoint: str | None = Field(
        default=None,
        max_length=2048,
        pattern=r"^https?://[^?#]+$",
        description="Push mode: the URL Pub/Sub should push to while workers run, i.e. your Ingress to the "
        "pool's Service `<pool>` with path `/pubsub/push` (no query: the token is added from "
        "pushTokenSecretRef). With the operator's activator on, the operator points the subscription "
        "here while a worker is ready and at the activator while none is; unset, the subscription is left "
        "as you configured it and a pool at zero cannot be woken by a push.",
    )
    emulator_host: str | None = Field(
        default=None, max_length=255, description="`host:port` of a Pub/Sub emulator, for local clusters."
    )

    def dead_letter_topic_in_use(self) -> str | None:
        """Where dead letters go: the spec's topic, or for push the one the operator creates for it."""
        if self.dead_letter_topic or self.mode != "push":
            return self.dead_letter_topic
        return f"{self.subscription}-dead-letter"[:255]


class Queue(Spec):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.backend == 'pubsub' ? has(self.pubsub) && !has(self.redis) : has(self.redis)",
                    "redis-list and redis-streams need queue.redis; pubsub needs queue.pubsub and no queue.redis",
                ),
                cel(
                    "self.backend != 'redis-list' || has(self.list)",
                    "backend redis-list needs queue.list",
                ),
                cel(
                    "self.backend != 'redis-streams' || has(self.streams)",
                    "backend redis-streams needs queue.streams",
                ),
            ]
        }
    )

    backend: Literal["redis-list", "redis-streams", "pubsub"] = Field(
        description="Queue backend: `redis-list`, `redis-streams` or `pubsub`."
    )
    redis: RedisConnection | None = Field(default=None, description="Redis connection (Redis backends).")
    list: RedisListQueue | None = Field(default=None, description="Redis list queue (`redis-list`).")
    streams: RedisStreamsQueue | None = Field(default=None, description="Redis Streams queue (`redis-streams`).")
    pubsub: PubSubQueue | None = Field(default=None, description="Pub/Sub subscription (`pubsub`).")


class Replicas(Spec):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [cel("self.min <= self.max", "replicas.min must be <= replicas.max")]
        }
    )

    min: int = Field(default=0, ge=0, le=1000, description="Fewest replicas; 0 lets the pool sleep when idle.")
    max: int = Field(default=10, ge=1, le=1000, description="Most replicas.")


class Fallback(Spec):
    after_failed_reads: int = Field(
        default=3, ge=1, le=100, description="Consecutive failed queue reads before the fallback applies."
    )
    replicas: int | None = Field(
        default=None, ge=0, le=1000, description="Replicas to run while the queue cannot be read; unset holds."
    )


class Scaling(Spec):
    target_wait_seconds: float = Field(
        default=30.0, gt=0, le=86400, description="Queue-wait objective: drain the backlog within this time."
    )
    activation_backlog: int = Field(
        default=1, ge=1, le=1_000_000, description="At zero replicas, wake only when this many tasks wait."
    )
    idle_seconds_before_zero: float = Field(
        default=30.0, ge=0, le=86400, description="Seconds with nothing queued or in flight before going to 0."
    )
    scale_down_stabilization_seconds: float = Field(
        default=60.0, ge=0, le=3600, description="Scale down to the highest recommendation of this window."
    )
    max_step_up: int | None = Field(
        default=None, ge=1, le=1000, description="Most replicas added in one decision; unset is unlimited."
    )
    max_step_down: int | None = Field(
        default=None, ge=1, le=1000, description="Most replicas removed in one decision; unset is unlimited."
    )
    poll_interval_seconds: float = Field(
        default=1.0, ge=0.05, le=300, description="Seconds between queue reads while the pool runs."
    )
    task_seconds_hint: float = Field(
        default=1.0, gt=0, le=86400, description="Service-time guess per task until a rate is measured."
    )
    fallback: Fallback = Field(default_factory=Fallback, description="What to do when the queue cannot be read.")
    paused: bool = Field(default=False, description="Hold replicas as they are and make no decisions.")


# A quantity as core types take it: `cpu: 1` and `cpu: 500m` alike.
Quantity = Annotated[
    int | str,
    WithJsonSchema({"x-kubernetes-int-or-string": True}),
]


class ResourceRequirements(Spec):
    requests: dict[str, Quantity] | None = Field(
        default=None, description="Resource requests, e.g. `cpu: 1` or `cpu: 500m`."
    )
    limits: dict[str, Quantity] | None = Field(default=None, description="Resource limits, e.g. memory: 1Gi.")


class KeyRef(Spec):
    name: str = Field(min_length=1, max_length=253, description="Name of the Secret or ConfigMap.")
    key: str = Field(min_length=1, max_length=253, description="Key inside it.")
    optional: bool | None = Field(default=None, description="Start even when the key is missing.")


class FieldRef(Spec):
    field_path: str = Field(min_length=1, description="Pod field, e.g. `metadata.name` or `status.podIP`.")
    api_version: str | None = Field(default=None, description="Defaults to v1.")


class ResourceFieldRef(Spec):
    resource: str = Field(min_length=1, description="e.g. `limits.memory`.")
    container_name: str | None = Field(default=None, description="Defaults to the worker container.")
    divisor: Quantity | None = Field(default=None, description="Unit, e.g. `1Mi`.")


class EnvVarSource(Spec):
    """A container's ``valueFrom``, as core/v1 has it."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "[has(self.secretKeyRef), has(self.configMapKeyRef), has(self.fieldRef), "
                    "has(self.resourceFieldRef)].filter(x, x).size() == 1",
                    "valueFrom: set exactly one of secretKeyRef, configMapKeyRef, fieldRef, resourceFieldRef",
                )
            ]
        }
    )

    secret_key_ref: KeyRef | None = Field(default=None, description="A Secret key.")
    config_map_key_ref: KeyRef | None = Field(default=None, description="A ConfigMap key.")
    field_ref: FieldRef | None = Field(default=None, description="A field of the pod (downward API).")
    resource_field_ref: ResourceFieldRef | None = Field(default=None, description="A container resource.")


# The variables the operator renders from a pool's spec (swell_operator.deployment.worker_env). worker.env
# may not set one as well: the API server refuses a container that names a variable twice, so the pool
# would never get its Deployment, and the spec field is the one place each is set.
OPERATOR_RENDERED_ENV: tuple[str, ...] = (
    POD_NAME,
    PUBSUB_EMULATOR_HOST,
    GOOGLE_APPLICATION_CREDENTIALS,
    *(
        WorkerSettings.env_name(field)
        for field in (
            "backend",
            "consumer",
            "concurrency",
            "handlers",
            "max_attempts",
            "task_timeout_seconds",
            "drain_seconds",
            "http_port",
            "embedder",
            "queues",
            "group",
            "redis_url",
            "redis_password",
            "pubsub_project",
            "pubsub_subscription",
            "pubsub_mode",
            "pubsub_topic",
            "pubsub_dead_letter_topic",
            "push_token",
            "push_audience",
            "push_service_account",
            "vector_uri",
        )
    ),
)
_RENDERED_LIST = ", ".join(f"'{name}'" for name in OPERATOR_RENDERED_ENV)


class EnvVar(Spec):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "[has(self.value), has(self.secretKeyRef), has(self.valueFrom)].filter(x, x).size() <= 1",
                    "env: set at most one of value, secretKeyRef, valueFrom",
                ),
                cel(
                    f"!(self.name in [{_RENDERED_LIST}])",
                    "env: this variable is set by the operator from the pool's spec; set its spec field instead "
                    "(the description of worker.env lists them)",
                ),
            ]
        }
    )

    name: str = Field(min_length=1, max_length=253, description="Variable name.")
    value: str | None = Field(default=None, description="Plain value.")
    secret_key_ref: SecretKeyRef | None = Field(
        default=None, description="Value from a Secret key (short for `valueFrom.secretKeyRef`)."
    )
    value_from: EnvVarSource | None = Field(default=None, description="As a container's `env[].valueFrom`.")

    @field_validator("name")
    @classmethod
    def _not_rendered_by_the_operator(cls, name: str) -> str:
        if name in OPERATOR_RENDERED_ENV:
            raise ValueError(
                f"{name} is set by the operator from the pool's spec; set its spec field instead "
                "(the description of worker.env lists them)"
            )
        return name


# The worker's own handlers (swell_worker.handlers.HANDLER_FACTORIES), or a `module:Class` of the user's.
BUILTIN_HANDLERS = ("embed", "index", "search", "noop", "sleep", "echo", "fail")
_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
HANDLER_PATTERN = rf"^({'|'.join(BUILTIN_HANDLERS)}|{_IDENTIFIER}(\.{_IDENTIFIER})*:{_IDENTIFIER})$"
HandlerName = Annotated[str, Field(pattern=HANDLER_PATTERN, max_length=253)]


class PodTemplateMetadata(Spec):
    labels: dict[str, str] | None = Field(
        default=None, description="Extra pod labels (the pool's selector label is always Swell's)."
    )
    annotations: dict[str, str] | None = Field(default=None, description="Extra pod annotations.")


class LocalObjectReference(Spec):
    name: str = Field(min_length=1, max_length=253, description="Object name.")


def _core_object(description: str) -> Any:
    """A core/v1 structure passed through as is (the API server validates it when the Deployment is applied)."""
    return Field(
        default=None, description=description, json_schema_extra={"x-kubernetes-preserve-unknown-fields": True}
    )


class PodTemplateSpec(Spec):
    """What a pool may change in its workers' pod; the container, probes, volumes and ports stay Swell's."""

    node_selector: dict[str, str] | None = Field(default=None, description="Node labels the pods need.")
    tolerations: list[dict[str, Any]] | None = _core_object("core/v1 tolerations.")
    affinity: dict[str, Any] | None = _core_object("core/v1 affinity.")
    topology_spread_constraints: list[dict[str, Any]] | None = _core_object("core/v1 topologySpreadConstraints.")
    service_account_name: str | None = Field(default=None, max_length=253, description="ServiceAccount of the pods.")
    automount_service_account_token: bool | None = Field(
        default=None, description="Mount the ServiceAccount's token (off by default: workers need no API access)."
    )
    priority_class_name: str | None = Field(default=None, max_length=253, description="PriorityClass.")
    runtime_class_name: str | None = Field(default=None, max_length=253, description="RuntimeClass.")
    scheduler_name: str | None = Field(default=None, max_length=253, description="Scheduler.")
    image_pull_secrets: list[LocalObjectReference] | None = Field(
        default=None, max_length=20, description="Secrets to pull the worker image with."
    )
    security_context: dict[str, Any] | None = _core_object(
        "core/v1 PodSecurityContext, merged over Swell's (e.g. unset runAsUser on OpenShift)."
    )


class PodTemplate(Spec):
    metadata: PodTemplateMetadata | None = Field(default=None, description="Pod labels and annotations.")
    spec: PodTemplateSpec | None = Field(default=None, description="Pod scheduling and identity.")


class BundledWorker(Spec):
    image: str | None = Field(
        default=None,
        min_length=1,
        description="Worker image. Unset: the operator's worker image (the chart's `worker.image` values), "
        "so a chart upgrade moves the pool to the new worker.",
    )
    handlers: list[HandlerName] = Field(
        default=["embed", "index", "search"],  # a plain default so the CRD carries it (pydantic copies it)
        min_length=1,
        max_length=32,
        description="Handlers the worker serves: `embed`, `index`, `search`, `noop`, `sleep`, `echo`, `fail`, "
        "or your own as `package.module:Class` (in your worker image).",
    )
    max_attempts: int = Field(default=5, ge=1, le=100, description="Deliveries before dead-letter.")
    task_timeout_seconds: float = Field(default=300.0, gt=0, le=86400, description="Per-task timeout.")
    termination_grace_period_seconds: int = Field(
        default=60, ge=1, le=3600, description="Time a worker gets to finish in-flight work when scaled in."
    )
    embedder: Literal["onnx-int8", "sentence-transformers"] = Field(
        default="onnx-int8", description="Embedding runtime: int8 ONNX (light) or sentence-transformers (fp32)."
    )
    vector_uri: str | None = Field(
        default=None,
        pattern=VECTOR_URI_PATTERN,
        description="Milvus server every worker of the pool shares, e.g. `http://milvus.milvus:19530`. Unset: the "
        "operator's default (the chart's `vectorStore.defaultUri`). A pool serving `index` or `search` with "
        "neither gets no workers and a Degraded condition (NoVectorStore): a per-pod file would be lost at zero.",
    )
    resources: ResourceRequirements | None = Field(default=None, description="Container resources.")
    env: list[EnvVar] = Field(
        default_factory=list,
        max_length=100,
        description="Extra environment. It may not set a variable the operator renders from the spec: "
        + ", ".join(f"`{name}`" for name in OPERATOR_RENDERED_ENV)
        + ".",
    )
    pod_template: PodTemplate | None = Field(
        default=None,
        description="Pod template fields merged into the worker Deployment: `metadata` (labels, annotations) "
        "and the scheduling and identity fields of `spec`. Anything else (containers, volumes) is refused.",
    )


class ScaleTargetRef(Spec):
    name: str = Field(min_length=1, max_length=253, description="Name of the Deployment Swell scales.")
    kind: Literal["Deployment"] = Field(default="Deployment", description="Only Deployments, for now.")
    api_version: Literal["apps/v1"] = Field(default="apps/v1", description="API version of the target.")


class WorkerPoolSpec(Spec):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "has(self.worker) != has(self.scaleTargetRef)",
                    "set exactly one of worker (the bundled worker) or scaleTargetRef (your own Deployment)",
                ),
            ]
        }
    )

    queue: Queue = Field(description="Where the tasks wait.")
    concurrency: int = Field(default=4, ge=1, le=10000, description="Tasks one worker runs at once.")
    replicas: Replicas = Field(default_factory=Replicas, description="Replica bounds.")
    scaling: Scaling = Field(default_factory=Scaling, description="Scaling policy.")
    worker: BundledWorker | None = Field(default=None, description="Run Swell's bundled worker.")
    scale_target_ref: ScaleTargetRef | None = Field(
        default=None, description="Scale an existing Deployment (Celery, RQ, your own workers) instead."
    )


class Condition(Spec):
    """As the Kubernetes API conventions have it (metav1.Condition): keyed by type, reason always set."""

    # metav1.Condition's required fields; status.conditions() always sets lastTransitionTime before writing.
    model_config = ConfigDict(json_schema_extra={"required": ["type", "status", "reason", "lastTransitionTime"]})

    type: str = Field(description="`Ready`, `Active`, `Degraded` or `Paused`.")
    status: Literal["True", "False", "Unknown"] = Field(description="Whether the condition holds.")
    reason: str = Field(min_length=1, description="One CamelCase word for machines.")
    message: str = Field(default="", description="What happened, for people (never a credential).")
    last_transition_time: str | None = Field(
        default=None, description="When `status` last changed.", json_schema_extra={"format": "date-time"}
    )
    observed_generation: int | None = Field(
        default=None, description="The `metadata.generation` the condition was set from."
    )


class LastDecision(Spec):
    replicas: int = Field(description="Replicas the decision asked for.")
    reason: str = Field(description="Why, in words: the backlog, rates and rule that set the number.")
    time: str = Field(description="When the decision was made (RFC 3339).")


class WorkerPoolStatus(Spec):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    observed_generation: int | None = Field(default=None, description="The `metadata.generation` last acted on.")
    backlog: int | None = Field(default=None, description="Tasks waiting.")
    in_flight: int | None = Field(default=None, description="Tasks delivered and not yet settled.")
    arrival_rate: float | None = Field(default=None, description="Tasks arriving per second.")
    service_rate: float | None = Field(default=None, description="Tasks one replica completes per second.")
    desired_replicas: int | None = Field(default=None, description="Replicas the last decision asked for.")
    current_replicas: int | None = Field(default=None, description="Replicas the Deployment has now.")
    ready_replicas: int | None = Field(default=None, description="Replicas ready to take tasks.")
    last_decision: LastDecision | None = Field(default=None, description="The latest scaling decision.")
    target: str | None = Field(
        default=None, description="What is scaled: the bundled Deployment or the scaleTargetRef."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Ready, Active, Degraded and Paused.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    scaler_memory: dict[str, Any] | None = Field(
        default=None,
        description="The decision's memory between reads (stabilisation window, idle clock).",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    dead_letter: dict[str, Any] | None = Field(
        default=None,
        description="Dead-letter setup as found or made (Pub/Sub).",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )


PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Backend", "type": "string", "jsonPath": ".spec.queue.backend"},
    {"name": "Target", "type": "string", "jsonPath": ".status.target"},
    {"name": "Backlog", "type": "integer", "jsonPath": ".status.backlog"},
    {"name": "InFlight", "type": "integer", "jsonPath": ".status.inFlight"},
    {"name": "Desired", "type": "integer", "jsonPath": ".status.desiredReplicas"},
    {"name": "Replicas", "type": "integer", "jsonPath": ".status.readyReplicas", "description": "Ready replicas."},
    {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
    {"name": "Degraded", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Degraded")].status'},
    {"name": "Min", "type": "integer", "jsonPath": ".spec.replicas.min", "priority": 1},
    {"name": "Max", "type": "integer", "jsonPath": ".spec.replicas.max", "priority": 1},
    {"name": "Reason", "type": "string", "jsonPath": ".status.lastDecision.reason", "priority": 1},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]
