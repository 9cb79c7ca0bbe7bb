"""Who may push tasks to a worker: Pub/Sub's signed OIDC token for the subscription, or a shared token.

A push endpoint is an open door otherwise. With ``SWELL_PUSH_AUDIENCE`` set, a request must carry
``Authorization: Bearer <JWT>`` signed by Google for that audience (what a push subscription with an
OIDC service account sends). With ``SWELL_PUSH_TOKEN`` set, a request may instead carry that token as
``?token=`` (how a push endpoint URL can embed it) or as the bearer. Comparison is constant-time. No
credential at all is 401; a wrong one is 403. The OIDC verifier is a parameter so that tests can check
tokens against a locally made key instead of Google's published certificates.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping
from typing import Any

OidcVerifier = Callable[[str, str], Mapping[str, Any]]


class PushAuthError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def google_oidc_verifier(token: str, audience: str) -> Mapping[str, Any]:
    """Verify a Google-signed ID token (fetches Google's public certificates, cached by google-auth)."""
    from google.auth.transport import requests
    from google.oauth2 import id_token

    claims: Mapping[str, Any] = id_token.verify_oauth2_token(  # type: ignore[no-untyped-call]
        token, requests.Request(), audience=audience
    )
    return claims


class PushAuthenticator:
    def __init__(self, shared_token: str | None, audience: str | None,
                 verify_oidc: OidcVerifier = google_oidc_verifier) -> None:
        if not shared_token and not audience:
            raise ValueError("push mode needs SWELL_PUSH_TOKEN or SWELL_PUSH_AUDIENCE: refusing an open endpoint")
        self._token = shared_token
        self._audience = audience
        self._verify_oidc = verify_oidc

    def check(self, authorization: str | None, query_token: str | None) -> None:
        """Return if the caller is allowed; raise PushAuthError(401 or 403) otherwise."""
        bearer = None
        if authorization:
            scheme, _, value = authorization.partition(" ")
            if scheme.lower() != "bearer" or not value:
                raise PushAuthError(401, "Authorization must be 'Bearer <token>'")
            bearer = value.strip()
        presented = [t for t in (query_token, bearer) if t]
        if not presented:
            raise PushAuthError(401, "no credentials: a push needs an OIDC bearer token or the shared token")
        if self._token and any(hmac.compare_digest(t.encode(), self._token.encode()) for t in presented):
            return
        if self._audience and bearer:
            try:
                self._verify_oidc(bearer, self._audience)
            except Exception as exc:
                raise PushAuthError(403, f"the bearer token was refused: {type(exc).__name__}") from None
            return
        raise PushAuthError(403, "the token does not match")
