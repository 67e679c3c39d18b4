"""API keys: who is calling, and so which namespace their sessions live in.

Authentication happens once, in :class:`AuthMiddleware`, around every route: a route added later
is protected without a line of its own. The middleware leaves the caller's namespace in the ASGI
scope; routes read it with :func:`store_key` and never authenticate.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Collection

from starlette.types import ASGIApp, Receive, Scope, Send

from app.error_handlers import service_error_response
from app.errors import Unauthorized

OPEN_NAMESPACE = "public"
# Where the middleware leaves the caller's namespace for the routes.
NAMESPACE_SCOPE_KEY = "forecast.namespace"
_SHA256_PREFIX = "sha256:"
# WebSocket close code for a refused handshake: "policy violation".
_WS_POLICY_VIOLATION = 1008


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class ApiKeys:
    """Configured keys, kept only as sha256 digests; each key is its own session namespace."""

    def __init__(self, spec: str) -> None:
        digests = []
        for entry in (part.strip() for part in spec.split(",")):
            if not entry:
                continue
            if entry.startswith(_SHA256_PREFIX):
                digest = entry[len(_SHA256_PREFIX) :].lower()
                if len(digest) != 64 or any(ch not in "0123456789abcdef" for ch in digest):
                    raise ValueError("FORECAST_API_KEYS: sha256: must be followed by 64 hex digits")
                digests.append(digest)
            else:
                digests.append(_digest(entry))
        self._digests = tuple(digests)

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def namespace_for(self, authorization: str | None) -> str:
        """The caller's namespace; Unauthorized without a valid ``Authorization: Bearer <key>``."""
        if not self._digests:
            return OPEN_NAMESPACE
        if not authorization:
            raise Unauthorized.missing_key()
        scheme, _, key = authorization.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise Unauthorized.malformed_header()
        digest = _digest(key.strip())
        for known in self._digests:
            if hmac.compare_digest(known, digest):
                # The namespace is derived from the key, never from anything the client chooses.
                return "k" + digest[:24]
        raise Unauthorized.unknown_key()


class AuthMiddleware:
    """Resolves every request's namespace, or answers 401 itself; ``open_paths`` need no key."""

    def __init__(self, app: ASGIApp, api_keys: ApiKeys, open_paths: Collection[str]) -> None:
        self.app = app
        self.api_keys = api_keys
        self.open_paths = frozenset(open_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if not self.api_keys.enabled:
            scope[NAMESPACE_SCOPE_KEY] = OPEN_NAMESPACE
            await self.app(scope, receive, send)
            return
        if scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        try:
            scope[NAMESPACE_SCOPE_KEY] = self.api_keys.namespace_for(_authorization(scope))
        except Unauthorized as refusal:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": _WS_POLICY_VIOLATION})
            else:
                await service_error_response(refusal)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _authorization(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            return str(value.decode("latin-1"))
    return None


def caller_namespace(scope: Scope) -> str:
    """The namespace :class:`AuthMiddleware` resolved for this request."""
    namespace: str = scope[NAMESPACE_SCOPE_KEY]
    return namespace


def session_key(namespace: str, session_id: str) -> str:
    """Store key of a session: '/' cannot appear in a session id, so namespaces never collide."""
    return f"{namespace}/{session_id}"


def namespace_prefix(scope: Scope) -> str:
    """What every store key of the calling client's sessions starts with."""
    return session_key(caller_namespace(scope), "")


def session_id_of(key: str, prefix: str) -> str:
    """The session id of a store key that starts with ``prefix`` (see :func:`session_key`)."""
    return key[len(prefix) :]


def store_key(scope: Scope, session_id: str) -> str:
    """Store key of the calling client's session ``session_id``."""
    return session_key(caller_namespace(scope), session_id)
