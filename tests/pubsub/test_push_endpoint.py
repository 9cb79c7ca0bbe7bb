"""A push worker under hostile and odd input: OIDC pinned to the account, liveness with Google unreachable,
payload limits, malformed envelopes. Real worker processes, the Pub/Sub emulator, certificates on loopback."""

from __future__ import annotations

import base64
import http.client
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from swell_contract.keys import status_key
from swell_contract.task import decode_task
from swell_worker.backends.pubsub import parse_push

from tests.fixtures.pubsub_emulator import PubSubEmulator
from tests.fixtures.workers import StartWorker, WorkerProcess
from tests.pubsub.conftest import pubsub_worker_env
from tests.pubsub.oidc_kit import AUDIENCE, PUSHER, CertsEndpoint, SigningKey, hanging_endpoint

TOKEN_PATH = "/pubsub/push?token=s3cret"
VERIFY_TIMEOUT = 2  # seconds a worker waits for Google's certificates before answering 503
LIMIT = 1_048_576  # the worker's default SWELL_MAX_PAYLOAD_BYTES, which aiohttp's 1 MiB body limit used to undercut


@pytest.fixture(scope="module")
def google() -> SigningKey:
    return SigningKey("google-key")


def push_worker(
    start_worker: StartWorker, emulator: PubSubEmulator, names: dict[str, str], redis_url: str, **extra: str
) -> WorkerProcess:
    return start_worker(
        pubsub_worker_env(
            emulator, names, redis_url, **{"SWELL_PUBSUB_MODE": "push", "SWELL_HANDLERS": "echo", **extra}
        )
    )


def token_push_worker(
    start_worker: StartWorker, emulator: PubSubEmulator, names: dict[str, str], redis_url: str, **extra: str
) -> tuple[WorkerProcess, str]:
    """A push worker that takes the token ``s3cret``, with its dead-letter topic made; and its push URL."""
    emulator.create(names["dead"], names["dead_sub"])
    worker = push_worker(start_worker, emulator, names, redis_url, SWELL_PUSH_TOKEN="s3cret", **extra)
    return worker, worker.base_url + TOKEN_PATH


def post(url: str, body: bytes, headers: dict[str, str] | None = None, timeout: float = 30) -> int:
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def envelope(task: bytes, **fields: Any) -> bytes:
    return json.dumps(
        {
            "message": {"data": base64.b64encode(task).decode(), "messageId": "1"},
            "subscription": "projects/p/subscriptions/s",
            **fields,
        }
    ).encode()


def task_of_size(size: int, task_id: str) -> bytes:
    """An echo task whose encoded JSON is exactly ``size`` bytes."""
    empty = json.dumps({"id": task_id, "handler": "echo", "payload": {"pad": ""}}).encode()
    task = json.dumps({"id": task_id, "handler": "echo", "payload": {"pad": "x" * (size - len(empty))}}).encode()
    assert len(task) == size
    return task


def dead_letters(emulator: PubSubEmulator, subscription: str, count: int, timeout: float = 30) -> list[Any]:
    found: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(found) < count and time.monotonic() < deadline:
        found += emulator.pull_all(subscription)
        time.sleep(0.2)
    return found


async def test_oidc_pushes_pass_only_from_the_pinned_account_and_certificates_are_fetched_once(
    pubsub_emulator: PubSubEmulator,
    names: dict[str, str],
    redis_url: str,
    start_worker: StartWorker,
    google: SigningKey,
) -> None:
    with CertsEndpoint(google) as certs:
        worker = push_worker(
            start_worker,
            pubsub_emulator,
            names,
            redis_url,
            SWELL_PUSH_AUDIENCE=AUDIENCE,
            SWELL_PUSH_SERVICE_ACCOUNT=PUSHER,
            SWELL_OIDC_CERTS_URL=certs.url,
        )
        url = worker.base_url + "/pubsub/push"
        body = envelope(json.dumps({"id": "ok", "handler": "echo", "payload": {}}).encode())
        now = int(time.time())
        cases = {
            "the right token": (google.token(), 204),
            "another service account": (google.token(email="attacker@evil.iam.gserviceaccount.com"), 403),
            "no email_verified": (google.token(email_verified=None), 403),
            "another issuer": (google.token(iss="https://evil.example"), 403),
            "another audience": (google.token(aud="https://evil.example/push"), 403),
            "expired": (google.token(iat=now - 7200, exp=now - 3600), 403),
            "signed by another key": (SigningKey(google.kid).token(), 403),
        }
        seen = {what: post(url, body, {"Authorization": f"Bearer {token}"}) for what, (token, _) in cases.items()}
        assert seen == {what: expected for what, (_, expected) in cases.items()}
        assert post(url, body) == 401
        assert [post(url, body, {"Authorization": f"Bearer {google.token()}"}) for _ in range(10)] == [204] * 10
        assert certs.fetches == 1


async def test_with_google_unreachable_junk_pushes_get_503_in_time_and_healthz_answers_at_once(
    pubsub_emulator: PubSubEmulator,
    names: dict[str, str],
    redis_url: str,
    start_worker: StartWorker,
) -> None:
    forged = SigningKey("google-key").token()  # right claims, so only the certificates could refuse it
    body = envelope(b'{"id": "x", "handler": "echo"}')
    with hanging_endpoint() as unreachable:
        worker = push_worker(
            start_worker,
            pubsub_emulator,
            names,
            redis_url,
            SWELL_PUSH_AUDIENCE=AUDIENCE,
            SWELL_PUSH_SERVICE_ACCOUNT=PUSHER,
            SWELL_OIDC_CERTS_URL=unreachable,
            SWELL_OIDC_TIMEOUT_SECONDS=str(VERIFY_TIMEOUT),
            SWELL_CONCURRENCY="4",
        )
        url = worker.base_url + "/pubsub/push"
        answers: list[tuple[int, float]] = []
        health: list[float] = []
        stop = threading.Event()

        def junk() -> None:
            while not stop.is_set():
                started = time.monotonic()
                status = post(url, body, {"Authorization": f"Bearer {forged}"}, timeout=10)
                answers.append((status, time.monotonic() - started))

        def probe() -> None:
            while not stop.is_set():
                started = time.monotonic()
                assert worker.get("/healthz")[0] == 200
                health.append(time.monotonic() - started)
                time.sleep(0.05)

        with ThreadPoolExecutor(5) as pool:
            running = [pool.submit(junk) for _ in range(4)] + [pool.submit(probe)]
            try:
                time.sleep(4)
            finally:
                stop.set()
            for job in running:
                job.result()
    assert answers and {status for status, _ in answers} == {503}, answers
    slowest = max(seconds for _, seconds in answers)
    assert slowest < VERIFY_TIMEOUT + 1, (
        f"a junk push took {slowest:.2f}s with a {VERIFY_TIMEOUT} s verification timeout"
    )
    # A verification on the event loop would hold /healthz for the whole timeout; a shared core costs far less.
    assert len(health) > 20 and max(health) < VERIFY_TIMEOUT / 4, f"/healthz took up to {max(health):.3f}s"
    print(
        f"\n{len(answers)} junk pushes: all 503, slowest {slowest:.2f}s; "
        f"{len(health)} /healthz probes, slowest {max(health) * 1000:.1f} ms"
    )


async def test_tasks_up_to_the_payload_limit_go_through_and_larger_ones_are_dead_lettered_with_a_reason(
    pubsub_emulator: PubSubEmulator,
    names: dict[str, str],
    redis_url: str,
    start_worker: StartWorker,
) -> None:
    worker, url = token_push_worker(start_worker, pubsub_emulator, names, redis_url)
    assert post(url, envelope(task_of_size(900_000, "900kb"))) == 204
    assert post(url, envelope(task_of_size(LIMIT, "at-the-limit"))) == 204
    _, metrics = worker.get("/metrics")
    assert "swell_tasks_succeeded_total 2.0" in metrics
    assert post(url, envelope(task_of_size(LIMIT + 1, "one-byte-over"))) == 204
    assert post(url, envelope(task_of_size(4 * LIMIT, "far-over"))) == 204
    dead = {m.attributes["reason"]: m for m in dead_letters(pubsub_emulator, names["dead_sub"], 2)}
    assert len(dead) == 2, dead.keys()
    over = next(m for r, m in dead.items() if r.startswith("payload of"))
    assert f"payload of {LIMIT + 1} bytes is over SWELL_MAX_PAYLOAD_BYTES ({LIMIT})" in over.attributes["reason"]
    assert json.loads(over.data)["id"] == "one-byte-over"
    assert any(r.startswith("push body of ") and "over the limit" in r for r in dead), dead.keys()
    assert worker.get("/healthz")[0] == 200


def answer_to_headers_alone(worker: WorkerProcess, path: str, length: int) -> int:
    """The status a push gets when its headers promise ``length`` bytes and no byte of the body is sent."""
    connection = http.client.HTTPConnection("127.0.0.1", worker.port, timeout=5)
    try:
        connection.putrequest("POST", path)
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Content-Length", str(length))
        connection.endheaders()
        return connection.getresponse().status  # a worker waiting for the body would time out here
    finally:
        connection.close()


async def test_the_slot_and_content_length_are_checked_before_the_body_is_read(
    pubsub_emulator: PubSubEmulator,
    names: dict[str, str],
    redis_url: str,
    start_worker: StartWorker,
) -> None:
    worker, _ = token_push_worker(
        start_worker, pubsub_emulator, names, redis_url, SWELL_CONCURRENCY="1", SWELL_HANDLERS="echo,sleep"
    )
    path = TOKEN_PATH
    assert answer_to_headers_alone(worker, path, 100 * LIMIT) == 204
    [dead] = dead_letters(pubsub_emulator, names["dead_sub"], 1)
    assert dead.attributes["reason"].startswith(f"push body of {100 * LIMIT} bytes is over the limit")
    slow = json.dumps({"id": "slow", "handler": "sleep", "payload": {"seconds": 3}}).encode()
    with ThreadPoolExecutor(1) as pool:
        holding = pool.submit(post, worker.base_url + path, envelope(slow))
        deadline = time.monotonic() + 10
        while worker.get_json("/healthz")[1]["in_flight"] != 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert answer_to_headers_alone(worker, path, LIMIT) == 429
        assert answer_to_headers_alone(worker, "/pubsub/push", LIMIT) == 429  # no credentials: full comes first
        assert holding.result() == 204


MALFORMED = {
    "deliveryAttempt 1e400": b'{"message": {"data": "e30=", "messageId": "1"}, "deliveryAttempt": 1e400}',
    "deliveryAttempt a string": b'{"message": {"data": "e30="}, "deliveryAttempt": "many"}',
    "deliveryAttempt 0": b'{"message": {"data": "e30="}, "deliveryAttempt": 0}',
    "deliveryAttempt a float": b'{"message": {"data": "e30="}, "deliveryAttempt": 2.5}',
    "no message": b'{"subscription": "s"}',
    "message a list": b'{"message": []}',
    "data not base64": b'{"message": {"data": "%%%"}}',
    "data a number": b'{"message": {"data": 12}}',
    "attributes not strings": b'{"message": {"data": "", "attributes": {"a": 1}}}',
    "not JSON": b"not json at all",
    "a JSON array": b"[1, 2, 3]",
    "not UTF-8": b'{"message": {"data": "\xff\xfe"}}',
    "deeply nested": b'{"message": {"data": "", "attributes": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}",
    "empty": b"",
}


async def test_malformed_envelopes_are_acked_and_dead_lettered_with_the_parse_error(
    pubsub_emulator: PubSubEmulator,
    names: dict[str, str],
    redis_url: str,
    start_worker: StartWorker,
) -> None:
    worker, url = token_push_worker(start_worker, pubsub_emulator, names, redis_url)
    statuses = {what: post(url, body) for what, body in MALFORMED.items()}
    assert statuses == dict.fromkeys(MALFORMED, 204)
    dead = dead_letters(pubsub_emulator, names["dead_sub"], len(MALFORMED))
    reasons = [m.attributes["reason"] for m in dead]
    assert len(reasons) == len(MALFORMED) and all(r.startswith("not a Pub/Sub push envelope") for r in reasons)
    assert any("deliveryAttempt" in r and "finite" in r for r in reasons), reasons
    # A good envelope around a task that cannot be decoded: the runtime's own dead-letter reason.
    nested = b'{"id": "deep", "handler": "echo", "payload": {"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}"
    assert post(url, envelope(nested)) == 204
    [deep] = dead_letters(pubsub_emulator, names["dead_sub"], 1)
    assert deep.attributes["reason"] == "malformed task: body is JSON nested too deeply to decode"
    assert worker.get("/healthz")[0] == 200


@pytest.fixture
def fuzz_target(
    pubsub_emulator: PubSubEmulator, names: dict[str, str], redis_url: str, start_worker: StartWorker
) -> Iterator[str]:
    worker, url = token_push_worker(start_worker, pubsub_emulator, names, redis_url, SWELL_CONCURRENCY="8")
    yield url
    assert worker.get("/healthz")[0] == 200, "the worker did not survive the fuzzing"


JSON_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=2**63), st.floats(), st.text(max_size=12)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=8,
)
TASKS = st.fixed_dictionaries(
    {"id": st.one_of(st.uuids().map(str), JSON_VALUES), "handler": st.one_of(st.just("echo"), JSON_VALUES)},
    optional={
        "payload": st.one_of(st.dictionaries(st.text(max_size=6), JSON_VALUES, max_size=3), JSON_VALUES),
        "priority": JSON_VALUES,
        "submitted_at": JSON_VALUES,
        "reply_to": JSON_VALUES,
        "extra": JSON_VALUES,
    },
)
DATA = st.one_of(
    TASKS.map(lambda task: base64.b64encode(json.dumps(task).encode()).decode()),
    st.binary(max_size=48).map(lambda raw: base64.b64encode(raw).decode()),
    JSON_VALUES,
)
MESSAGES = st.fixed_dictionaries(
    {},
    optional={
        "data": DATA,
        "messageId": JSON_VALUES,
        "publishTime": JSON_VALUES,
        "deliveryAttempt": JSON_VALUES,
        "attributes": st.one_of(
            st.dictionaries(st.text(max_size=6), st.one_of(st.text(max_size=6), JSON_VALUES), max_size=3), JSON_VALUES
        ),
    },
)
ENVELOPES = st.one_of(
    st.fixed_dictionaries(
        {"message": st.one_of(MESSAGES, JSON_VALUES)},
        optional={"subscription": JSON_VALUES, "deliveryAttempt": JSON_VALUES},
    ),
    JSON_VALUES,
).map(lambda envelope: json.dumps(envelope).encode())  # NaN and Infinity come out as bare literals
FINITE_JSON = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**53), 2**53),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=12),
    ),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=8,
)
VALID_TASKS = st.fixed_dictionaries(
    {
        "id": st.uuids().map(str),
        "handler": st.just("echo"),
        "payload": st.dictionaries(st.text(max_size=6), FINITE_JSON, max_size=3),
    },
    optional={"priority": st.integers(-10, 10), "submitted_at": st.floats(0, 2e9)},
)
VALID_PUSHES = st.fixed_dictionaries(
    {
        "message": st.fixed_dictionaries(
            {"data": VALID_TASKS.map(lambda task: base64.b64encode(json.dumps(task).encode()).decode())},
            optional={
                "messageId": st.text(max_size=20),
                "publishTime": st.text(max_size=30),
                "attributes": st.dictionaries(st.text(max_size=6), st.text(max_size=6), max_size=3),
            },
        )
    },
    optional={"subscription": st.text(max_size=30), "deliveryAttempt": st.integers(1, 100)},
).map(lambda envelope: json.dumps(envelope).encode())
BODIES = st.one_of(VALID_PUSHES, ENVELOPES, st.binary(max_size=64))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=BODIES)
def test_fuzzed_envelopes_and_tasks_never_get_a_5xx(fuzz_target: str, redis_url: str, body: bytes) -> None:
    status = post(fuzz_target, body)
    assert status < 500, (status, body[:300])
    assert status == 204, (status, body[:300])  # every push is settled: run, or acked and dead-lettered
    valid = runnable_task(body)
    if valid is not None:  # no valid task lost: it ran and was committed, not dead-lettered
        assert redis.Redis.from_url(redis_url).hget(status_key(valid), "state") == b"succeeded", body[:300]


def runnable_task(body: bytes) -> str | None:
    """The id of the echo task this push carries, if the envelope and the task are both valid; else None."""
    try:
        task = decode_task(parse_push(body).body)
    except ValueError:
        return None
    return task.id if task.handler == "echo" else None


def test_pushes_are_counted_by_the_worker_not_by_deliveryattempt() -> None:
    """Pub/Sub counts every push it sends, the 429s of a full or waking pool included, so its count would
    spend a task's retries on refusals; the worker counts the starts in the task's record instead."""
    body = b'{"message": {"data": "e30=", "messageId": "7"}, "deliveryAttempt": 6, "subscription": "s"}'
    delivery = parse_push(body)
    assert delivery.attempt_known is False
    assert delivery.receipt == "7"
