"""What a user sees when the world is not as the command expected: one line, never a traceback.

Unreachable Redis, a kubeconfig that is missing or wrong, and an API server that refuses us are the
user's environment, not our bug, so they get a sentence naming the thing to fix. Anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations


class UserFacingError(Exception):
    """Raised by a command with the whole message a user needs."""


def one_line(exc: BaseException) -> str | None:
    """The sentence for an environment error, or None for an error that is ours (and needs its traceback)."""
    import redis.exceptions
    from swell_worker.backends.base import BackendError

    if isinstance(exc, BackendError):  # already says which queue or store, with credentials redacted
        return f"{exc}; check --redis-url or SWELL_REDIS_URL"
    if isinstance(exc, redis.exceptions.AuthenticationError):
        return f"Redis refused the password: {exc}"
    if isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
        return f"cannot reach Redis ({exc}); check --redis-url or SWELL_REDIS_URL"
    kube = _kubernetes_message(exc)
    if kube is not None:
        return kube
    if isinstance(exc, ConnectionError | TimeoutError):
        return f"cannot connect: {exc}"
    return None


def _kubernetes_message(exc: BaseException) -> str | None:
    try:
        from kubernetes_asyncio.client.exceptions import ApiException
        from kubernetes_asyncio.config.config_exception import ConfigException
    except ImportError:  # the operator extra is not installed: nothing of ours raised these
        return None
    if isinstance(exc, ConfigException):
        return f"no usable kubeconfig: {exc}"
    if isinstance(exc, ApiException):
        return f"the API server answered {exc.status} {exc.reason}"
    import aiohttp

    if isinstance(exc, aiohttp.ClientError):
        return f"cannot reach the API server: {exc}"
    return None
