"""The push OIDC check against tokens signed here and certificates served on loopback, as Google serves them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from swell_contract.push_auth import GoogleIdTokens, PushAuthenticator, PushAuthError, certs_max_age
from swell_worker.config import ConfigError, WorkerConfig

from tests.pubsub.oidc_kit import AUDIENCE, PUSHER, CertsEndpoint, SigningKey, hanging_endpoint


@pytest.fixture(scope="module")
def google() -> SigningKey:
    return SigningKey("google-key-1")


@pytest.fixture(scope="module")
def stranger() -> SigningKey:
    return SigningKey("stranger-key")


@pytest.fixture
def certs(google: SigningKey) -> Iterator[CertsEndpoint]:
    with CertsEndpoint(google) as endpoint:
        yield endpoint


def gate(url: str, *, timeout: float = 5.0, threads: int = 2, max_waiting: int | None = None) -> PushAuthenticator:
    tokens = GoogleIdTokens(url, threads=threads, timeout=timeout, max_waiting=max_waiting)
    return PushAuthenticator(None, AUDIENCE, PUSHER, tokens)


async def status_of(auth: PushAuthenticator, authorization: str | None) -> int:
    try:
        await auth.check(authorization, None)
    except PushAuthError as exc:
        return exc.status
    return 200


async def test_only_a_token_from_the_pinned_account_for_the_audience_from_google_passes(
    certs: CertsEndpoint, google: SigningKey, stranger: SigningKey
) -> None:
    auth = gate(certs.url)
    now = int(time.time())
    cases = {
        "the right token": (google.token(), 200),
        "issuer given without scheme": (google.token(iss="accounts.google.com"), 200),
        "another service account": (google.token(email="attacker@evil.iam.gserviceaccount.com"), 403),
        "no email_verified": (google.token(email_verified=None), 403),
        "email_verified false": (google.token(email_verified=False), 403),
        "email_verified as a string": (google.token(email_verified="true"), 403),
        "no email": (google.token(email=None), 403),
        "another issuer": (google.token(iss="https://evil.example"), 403),
        "another audience": (google.token(aud="https://other.example/push"), 403),
        "expired": (google.token(iat=now - 7200, exp=now - 3600), 403),
        "issued in the future": (google.token(iat=now + 3600, exp=now + 7200), 403),
        "signed by another key under Google's key id": (SigningKey(google.kid).token(), 403),
        "signed by a key Google does not publish": (stranger.token(), 403),
    }
    seen = {what: await status_of(auth, f"Bearer {token}") for what, (token, _) in cases.items()}
    assert seen == {what: expected for what, (_, expected) in cases.items()}
    assert await status_of(auth, None) == 401
    assert await status_of(auth, "Basic dXNlcjpwYXNz") == 401
    assert await status_of(auth, "Bearer ") == 401


async def test_what_is_cheap_to_refuse_never_reaches_the_certificates(certs: CertsEndpoint, google: SigningKey) -> None:
    auth = gate(certs.url)
    junk = [
        "junk",
        "a.b",
        "a.b.c",
        "x" * 10_000,
        "eyJhbGciOiJub25lIn0.eyJ9.",
        google.token(email="x@y.z"),
        google.token(aud="https://other.example"),
    ]
    assert [await status_of(auth, f"Bearer {token}") for token in junk] == [403] * len(junk)
    assert certs.fetches == 0


async def test_certificates_are_fetched_once_for_many_concurrent_pushes_while_max_age_holds(
    certs: CertsEndpoint, google: SigningKey
) -> None:
    auth = gate(certs.url, threads=4)
    token = google.token()
    statuses = await asyncio.gather(*(status_of(auth, f"Bearer {token}") for _ in range(50)))
    statuses += [await status_of(auth, f"Bearer {token}") for _ in range(50)]
    assert statuses == [200] * 100
    assert certs.fetches == 1


async def test_certificates_are_fetched_again_once_their_max_age_has_passed(google: SigningKey) -> None:
    with CertsEndpoint(google, max_age=1) as certs:
        auth = gate(certs.url)
        assert await status_of(auth, f"Bearer {google.token()}") == 200
        assert await status_of(auth, f"Bearer {google.token()}") == 200
        assert certs.fetches == 1
        await asyncio.sleep(1.1)
        assert await status_of(auth, f"Bearer {google.token()}") == 200
        assert certs.fetches == 2


def test_max_age_is_read_from_cache_control() -> None:
    assert certs_max_age("public, max-age=19770, must-revalidate, no-transform") == 19770
    assert certs_max_age("max-age=99999999") == 86_400  # capped at a day
    assert certs_max_age(None) == certs_max_age("no-store, max-age=60") == 300


async def test_an_unreachable_certificate_endpoint_gives_503_within_the_timeout_and_never_blocks_the_loop(
    google: SigningKey,
) -> None:
    with hanging_endpoint() as url:
        auth = gate(url, timeout=2.0, threads=2)
        token = google.token()  # right claims, so only the signature check can refuse it
        lags: list[float] = []

        async def watch_the_loop() -> None:
            while True:
                before = time.monotonic()
                await asyncio.sleep(0.01)
                lags.append(time.monotonic() - before - 0.01)

        watcher = asyncio.create_task(watch_the_loop())
        started = time.monotonic()
        statuses = await asyncio.gather(*(status_of(auth, f"Bearer {token}") for _ in range(20)))
        elapsed = time.monotonic() - started
        watcher.cancel()
    assert statuses == [503] * 20
    assert elapsed < 3.0, f"20 pushes took {elapsed:.2f}s with a 2 s verification timeout"
    # A verification on the loop would stall it for the whole 2 s timeout; scheduling noise is far less.
    assert max(lags) < 0.5, f"the event loop stalled for {max(lags):.3f}s"
    assert auth._tokens is not None and auth._tokens.certificates.fetches == 1


async def test_verifications_beyond_the_cap_are_refused_with_429(google: SigningKey) -> None:
    with hanging_endpoint() as url:
        auth = gate(url, timeout=0.5, threads=1, max_waiting=3)
        token = google.token()
        statuses = await asyncio.gather(*(status_of(auth, f"Bearer {token}") for _ in range(10)))
    assert sorted(statuses) == [429] * 7 + [503] * 3


async def test_the_shared_token_still_works_beside_oidc(certs: CertsEndpoint, google: SigningKey) -> None:
    auth = PushAuthenticator("s3cret", AUDIENCE, PUSHER, GoogleIdTokens(certs.url))
    await auth.check(None, "s3cret")
    await auth.check("Bearer s3cret", None)
    await auth.check(f"Bearer {google.token()}", None)
    with pytest.raises(PushAuthError) as refused:
        await auth.check(None, "wrong")
    assert refused.value.status == 403


def test_an_audience_without_a_service_account_or_no_rule_at_all_is_refused() -> None:
    with pytest.raises(ValueError, match="service account"):
        PushAuthenticator(None, AUDIENCE)
    with pytest.raises(ValueError, match="refusing an open endpoint"):
        PushAuthenticator(None, None)


def test_a_worker_with_an_audience_but_no_push_account_refuses_to_start() -> None:
    env = {
        "SWELL_BACKEND": "pubsub",
        "SWELL_PUBSUB_PROJECT": "p",
        "SWELL_PUBSUB_MODE": "push",
        "SWELL_PUSH_AUDIENCE": AUDIENCE,
    }
    with pytest.raises(ConfigError, match="SWELL_PUSH_AUDIENCE needs SWELL_PUSH_SERVICE_ACCOUNT"):
        WorkerConfig.from_env(env)
    config = WorkerConfig.from_env(
        {**env, "SWELL_PUSH_SERVICE_ACCOUNT": PUSHER, "SWELL_OIDC_CERTS_URL": "http://127.0.0.1:1/certs"}
    )
    assert (config.push_service_account, config.oidc_certs_url) == (PUSHER, "http://127.0.0.1:1/certs")
    assert config.oidc_timeout_seconds == 5.0
