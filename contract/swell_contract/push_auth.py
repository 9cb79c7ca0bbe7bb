"""Who may push tasks to a worker (or to the activator): Pub/Sub's signed OIDC token, or a shared token.

A push endpoint is an open door otherwise. With ``SWELL_PUSH_AUDIENCE`` set, a request must carry
``Authorization: Bearer <JWT>`` that Google signed for the push subscription's service account, as
Google's Pub/Sub push authentication guide asks: issuer ``accounts.google.com``, the configured audience,
and the expected service-account ``email`` with ``email_verified``. The email pin is what makes the token
mean "Pub/Sub sent this": anyone can mint a Google ID token for any audience from their own account. With
``SWELL_PUSH_TOKEN`` set, a request may instead carry that token as ``?token=`` or as the bearer
(constant-time comparison). No credential is 401; a wrong one is 403.

Liveness comes first, because a push endpoint is public and shares a process with ``/healthz`` (the
worker) or with the scaling loop and the Lease (the operator):

- whatever can be refused without cryptography is refused on the event loop at once: a missing or
  malformed header, a token that is not a compact RS256 JWT, unverified claims that could never pass;
- the signature is checked in a small thread pool, never on the event loop, with a cap on waiting
  verifications (429 beyond it) and a deadline (503 after it, so Pub/Sub retries);
- Google's certificates are fetched by one background thread at a time and cached for their
  ``Cache-Control: max-age``; callers wait for that one fetch only until their own deadline, so an
  unreachable certificate endpoint costs each push at most the timeout and never a thread for longer.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import hmac
import json
import logging
import re
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

log = logging.getLogger(__name__)

GOOGLE_CERTS_URL = "https://www.googleapis.com/oauth2/v1/certs"
GOOGLE_ISSUERS = frozenset({"https://accounts.google.com", "accounts.google.com"})
# Tokens are a few hundred bytes to ~1 KB; anything far larger is not one, and is not worth decoding.
MAX_TOKEN_CHARS = 8192
CLOCK_SKEW_SECONDS = 10
DEFAULT_TIMEOUT_SECONDS = 5.0
# Without a usable max-age, certificates are kept this long; a longer one is capped at a day.
DEFAULT_CERTS_MAX_AGE_SECONDS = 300.0
MAX_CERTS_MAX_AGE_SECONDS = 86_400.0
# After a failed fetch, callers are refused at once (503) this long, so a flood cannot make a fetch storm.
CERTS_RETRY_SECONDS = 1.0
MAX_CERTS_BYTES = 1 << 20
_JWT_SEGMENT = re.compile(r"^[A-Za-z0-9_-]+$")
_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d+)\"?\s*(?:,|$)", re.IGNORECASE)


class PushAuthError(Exception):
    """The caller is refused; ``status`` is the HTTP answer (401, 403, 429 or 503)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class CertificatesUnavailable(Exception):
    """Google's certificates could not be had in time: the push cannot be judged now (503, retried)."""


def certs_max_age(cache_control: str | None) -> float:
    """Seconds the certificates may be kept, from the ``Cache-Control`` header Google sends."""
    if cache_control and "no-store" not in cache_control.lower():
        found = _MAX_AGE.search(cache_control)
        if found:
            return min(float(found.group(1)), MAX_CERTS_MAX_AGE_SECONDS)
    return DEFAULT_CERTS_MAX_AGE_SECONDS


class GoogleCertificates:
    """Google's signing certificates (key id -> PEM), fetched by at most one thread at a time."""

    def __init__(
        self,
        url: str = GOOGLE_CERTS_URL,
        *,
        fetch_timeout: float = DEFAULT_TIMEOUT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.fetches = 0  # fetches started, for tests and logs
        self._fetch_timeout = fetch_timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._certs: Mapping[str, str] = {}
        self._fresh_until = float("-inf")
        self._retry_at = float("-inf")
        self._error = "not fetched yet"
        self._fetched: threading.Event | None = None  # set by the fetch in progress, if any

    def get(self, wait: float) -> Mapping[str, str]:
        """Fresh certificates, waiting at most ``wait`` seconds for a fetch; CertificatesUnavailable else."""
        with self._lock:
            now = self._clock()
            if now < self._fresh_until:
                return self._certs
            if self._fetched is None:
                if now < self._retry_at:
                    raise CertificatesUnavailable(f"Google's certificates are unavailable: {self._error}")
                self._fetched = threading.Event()
                self.fetches += 1
                threading.Thread(
                    target=self._fetch, args=(self._fetched,), name="swell-oidc-certs", daemon=True
                ).start()
            fetched = self._fetched
        fetched.wait(max(wait, 0.0))
        with self._lock:
            if self._clock() < self._fresh_until:
                return self._certs
            state = self._error if fetched.is_set() else f"no answer from {self.url} within {wait:.3g}s"
        raise CertificatesUnavailable(f"Google's certificates are unavailable: {state}")

    def _fetch(self, done: threading.Event) -> None:
        try:
            request = urllib.request.Request(self.url, headers={"Accept": "application/json"})
            with urllib.request.urlopen(request, timeout=self._fetch_timeout) as answer:
                raw = answer.read(MAX_CERTS_BYTES + 1)
                max_age = certs_max_age(answer.headers.get("Cache-Control"))
            if len(raw) > MAX_CERTS_BYTES:
                raise ValueError("the certificate document is too large")
            certs = json.loads(raw)
            if (
                not isinstance(certs, dict)
                or not certs
                or not all(isinstance(k, str) and isinstance(v, str) for k, v in certs.items())
            ):
                raise ValueError("the certificate document is not a map of key ids to PEM certificates")
        except Exception as exc:  # any failure means "unavailable"; the reason goes to the log and the 503
            with self._lock:
                self._error = f"{type(exc).__name__}: {exc}"
                self._retry_at = self._clock() + CERTS_RETRY_SECONDS
                self._fetched = None
            log.warning("cannot fetch Google's OIDC certificates from %s: %s", self.url, self._error)
        else:
            with self._lock:
                self._certs, self._fresh_until = certs, self._clock() + max_age
                self._fetched = None
        finally:
            done.set()


def _segment(encoded: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))


def unverified_parts(token: str) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    """The header and claims of a compact JWT, unverified; PushAuthError(403) if it is not one."""
    segments = token.split(".")
    if len(token) > MAX_TOKEN_CHARS or len(segments) != 3 or not all(_JWT_SEGMENT.match(s) for s in segments):
        raise PushAuthError(403, "the bearer token is not a JWT")
    try:
        header, claims = _segment(segments[0]), _segment(segments[1])
    except (ValueError, binascii.Error, UnicodeDecodeError, RecursionError):
        raise PushAuthError(403, "the bearer token is not a JWT") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise PushAuthError(403, "the bearer token is not a JWT")
    if header.get("alg") != "RS256" or not isinstance(header.get("kid"), str):
        raise PushAuthError(403, "the bearer token is not an RS256 token with a key id, as Google signs")
    return header, claims


def check_claims(claims: Mapping[str, Any], audience: str, service_account: str, now: float) -> None:
    """Google's push authentication rules on a token's claims; PushAuthError(403) says which one failed."""
    if claims.get("iss") not in GOOGLE_ISSUERS:
        raise PushAuthError(403, "the token's issuer is not accounts.google.com")
    aud = claims.get("aud")
    if aud != audience and not (isinstance(aud, list) and audience in aud):
        raise PushAuthError(403, "the token is for another audience")
    email = claims.get("email")
    if not isinstance(email, str) or email.lower() != service_account.lower():
        raise PushAuthError(403, "the token is not from the push subscription's service account")
    if claims.get("email_verified") is not True:
        raise PushAuthError(403, "the token's email is not verified")
    exp, iat = claims.get("exp"), claims.get("iat")
    if not isinstance(exp, int | float) or exp + CLOCK_SKEW_SECONDS < now:
        raise PushAuthError(403, "the token has expired")
    if not isinstance(iat, int | float) or iat - CLOCK_SKEW_SECONDS > now:
        raise PushAuthError(403, "the token is not valid yet")


class GoogleIdTokens:
    """Verifies Google-signed ID tokens off the event loop: a bounded thread pool, a cap, a deadline.

    One instance serves one event loop (the worker's, or the activator's); the pool starts on first use.
    """

    def __init__(
        self,
        certs_url: str = GOOGLE_CERTS_URL,
        *,
        threads: int = 2,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        max_waiting: int | None = None,
    ) -> None:
        self.certificates = GoogleCertificates(certs_url, fetch_timeout=timeout)
        self.timeout = timeout
        self._threads = threads
        self._max_waiting = max_waiting if max_waiting is not None else 16 * threads
        self._waiting = 0
        self._pool: ThreadPoolExecutor | None = None

    def verify_now(self, token: str, audience: str, service_account: str, deadline: float) -> Mapping[str, Any]:
        """The blocking check (signature, then every claim); deadline is ``time.monotonic()`` based."""
        from google.auth import jwt

        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise CertificatesUnavailable("the verification waited past its deadline for a thread")
        certs = self.certificates.get(remaining)
        try:
            claims: Mapping[str, Any] = jwt.decode(  # type: ignore[no-untyped-call]
                token, certs=certs, audience=audience, clock_skew_in_seconds=CLOCK_SKEW_SECONDS
            )
        except Exception as exc:  # google-auth raises several types for a bad token; all mean "refused"
            raise PushAuthError(403, f"the bearer token was refused: {type(exc).__name__}") from None
        check_claims(claims, audience, service_account, time.time())
        return claims

    async def verify(self, token: str, audience: str, service_account: str) -> Mapping[str, Any]:
        """The claims of a valid token; PushAuthError 403 (refused), 429 (too many waiting) or 503 (try later)."""
        if self._waiting >= self._max_waiting:
            raise PushAuthError(429, "too many token verifications in progress; retry later")
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="swell-oidc")
        self._waiting += 1
        try:
            deadline = time.monotonic() + self.timeout
            job = functools.partial(self.verify_now, token, audience, service_account, deadline)
            async with asyncio.timeout(self.timeout):
                return await asyncio.get_running_loop().run_in_executor(self._pool, job)
        except TimeoutError:
            raise PushAuthError(503, f"the token could not be verified within {self.timeout:g}s") from None
        except CertificatesUnavailable as exc:
            raise PushAuthError(503, str(exc)) from None
        finally:
            self._waiting -= 1

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


class PushAuthenticator:
    """One endpoint's rule: a shared token, an OIDC audience pinned to a service account, or both."""

    def __init__(
        self,
        shared_token: str | None,
        audience: str | None,
        service_account: str | None = None,
        tokens: GoogleIdTokens | None = None,
    ) -> None:
        if not shared_token and not audience:
            raise ValueError(
                "push mode needs a shared token (SWELL_PUSH_TOKEN, pushTokenSecretRef) or an OIDC "
                "audience (SWELL_PUSH_AUDIENCE, pushAudience): refusing an open endpoint"
            )
        if audience and not service_account:
            raise ValueError(
                "an OIDC push audience needs the push subscription's service account "
                "(SWELL_PUSH_SERVICE_ACCOUNT, pushServiceAccount): "
                "without it any Google account could mint a token for the audience"
            )
        self._token = shared_token
        self._audience = audience
        self._service_account = service_account or ""
        self._tokens = tokens if tokens is not None or not audience else GoogleIdTokens()

    async def check(self, authorization: str | None, query_token: str | None) -> None:
        """Return if the caller is allowed; raise PushAuthError otherwise (no crypto for what is cheap to refuse)."""
        bearer = None
        if authorization:
            scheme, _, value = authorization.partition(" ")
            if scheme.lower() != "bearer" or not value.strip():
                raise PushAuthError(401, "Authorization must be 'Bearer <token>'")
            bearer = value.strip()
        presented = [t for t in (query_token, bearer) if t]
        if not presented:
            raise PushAuthError(401, "no credentials: a push needs an OIDC bearer token or the shared token")
        if self._token and any(hmac.compare_digest(t.encode(), self._token.encode()) for t in presented):
            return
        if self._audience and self._tokens is not None and bearer:
            _, claims = unverified_parts(bearer)
            check_claims(claims, self._audience, self._service_account, time.time())
            await self._tokens.verify(bearer, self._audience, self._service_account)
            return
        raise PushAuthError(403, "the token does not match")
