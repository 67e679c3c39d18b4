"""API keys: who is calling, and so which namespace their sessions live in.

Authentication happens once, in :class:`AuthMiddleware`, around every route: a route added later
is protected without a line of its own. The middleware leaves the caller's namespace in the ASGI
scope; routes read it with :func:`store_key` and never authenticate.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Collection

from starlette.types import ASGIApp, Receive, Scope, Send

from app.audit import Audit
from app.error_handlers import service_error_response
from app.errors import RateLimited, ServiceError, Unauthorized
from app.keys import OPEN_NAMESPACE, KeyDefaults, KeyEntry, KeyTable, digest_of, parse_env_keys
from app.rate_limit import BUCKET_SCOPE_KEY, RateLimiter
from app.schemas import DEFAULT_MODEL

__all__ = ["OPEN_NAMESPACE", "ApiKeys", "AuthMiddleware", "store_key"]

# Where the middleware leaves the caller's namespace and key entry for the routes.
NAMESPACE_SCOPE_KEY = "forecast.namespace"
KEY_SCOPE_KEY = "forecast.key"
# Accepted header values remembered at most (spellings of the configured keys).
_ACCEPTED_LIMIT = 1024
# WebSocket close code for a refused handshake: "policy violation".
_WS_POLICY_VIOLATION = 1008
# A browser cannot set headers on a WebSocket: it offers its key as a subprotocol instead, the
# key base64url-encoded (a subprotocol is a token: no '/', '+', '=' or spaces) after this prefix,
# beside the real subprotocol (as Kubernetes' API server takes bearer tokens on WebSockets).
BEARER_SUBPROTOCOL_PREFIX = "base64url.bearer."
# The ASGI extension that lets a refused handshake be answered with an HTTP response.
_WS_DENIAL_RESPONSE = "websocket.http.response"


class ApiKeys:
    """The keys in force, kept only as sha256 digests; each key is its own session namespace.

    The table is replaced whole when the keys file changes (:mod:`app.keys_file`): a request
    reads one attribute, so it sees either the old keys or the new ones, never a mixture.
    """

    def __init__(self, table: KeyTable) -> None:
        self._table = table
        # Authorization header values already accepted -> their key: the common request skips
        # decoding and hashing. Only accepted values go in (bounded below), and the dict's
        # SipHash with a per-process seed cannot be steered to time a guess against them.
        self._accepted: dict[bytes, KeyEntry] = {}

    @property
    def table(self) -> KeyTable:
        return self._table

    @table.setter
    def table(self, table: KeyTable) -> None:
        self._table = table
        self._accepted = {}  # a removed key must not stay accepted

    def entry_for_header(self, header: bytes | None) -> KeyEntry:
        """The caller's key from the raw Authorization header; Unauthorized if none is valid."""
        if header is not None:
            entry = self._accepted.get(header)
            if entry is not None:
                return entry
        accepted = self._accepted
        entry = self.entry_for(header.decode("latin-1") if header is not None else None)
        if header is not None and len(accepted) < _ACCEPTED_LIMIT:
            accepted[header] = entry
        return entry

    @classmethod
    def from_spec(cls, spec: str, defaults: KeyDefaults | None = None) -> ApiKeys:
        """Keys from a ``FORECAST_API_KEYS`` value (ValueError saying what is wrong)."""
        return cls(parse_env_keys(spec, defaults or KeyDefaults(1, None, None)))

    @property
    def enabled(self) -> bool:
        return self.table.enabled

    def entry_for(self, authorization: str | None) -> KeyEntry:
        """The caller's key; Unauthorized without a valid ``Authorization: Bearer <key>``."""
        table = self.table
        if not table.enabled:
            return table.open_entry
        if not authorization:
            raise Unauthorized.missing_key()
        scheme, _, key = authorization.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise Unauthorized.malformed_header()
        digest = digest_of(key.strip())
        entry = table.by_digest.get(digest)
        # The dict lookup found it by equal digests; compare again in constant time anyway.
        if entry is not None and hmac.compare_digest(entry.digest, digest):
            return entry
        raise Unauthorized.unknown_key()

    def namespace_for(self, authorization: str | None) -> str:
        """The caller's namespace; Unauthorized without a valid key."""
        return self.entry_for(authorization).namespace


class AuthMiddleware:
    """Resolves every request's key and namespace and applies its rate limit, or answers 401 or
    429 itself; ``open_paths`` need no key and are not rate limited."""

    def __init__(
        self,
        app: ASGIApp,
        api_keys: ApiKeys,
        open_paths: Collection[str],
        limiter: RateLimiter,
        audit: Audit,
    ) -> None:
        self.app = app
        self.api_keys = api_keys
        self.open_paths = frozenset(open_paths)
        self.limiter = limiter
        self.audit = audit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        try:
            table = self.api_keys.table
            # Open mode: no header to look for (this runs on every request).
            if table.enabled:
                entry = self.api_keys.entry_for_header(_authorization(scope))
            else:
                entry = table.open_entry
            scope[NAMESPACE_SCOPE_KEY] = entry.namespace
            scope[KEY_SCOPE_KEY] = entry
            if entry.rate_limit is not None:
                bucket = self.limiter.bucket(entry.namespace, entry.rate_limit)
                bucket.take()
                scope[BUCKET_SCOPE_KEY] = bucket
        except (Unauthorized, RateLimited) as refusal:
            await self._refuse(refusal, scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _refuse(
        self, refusal: ServiceError, scope: Scope, receive: Receive, send: Send
    ) -> None:
        self.audit.refused(refusal, scope["path"])
        if scope["type"] == "websocket" and _WS_DENIAL_RESPONSE not in scope.get("extensions", {}):
            await send({"type": "websocket.close", "code": _WS_POLICY_VIOLATION})
        else:  # on a WebSocket handshake too, where the server can answer it (a 401 or 429)
            await service_error_response(refusal)(scope, receive, send)


def _authorization(scope: Scope) -> bytes | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            return bytes(value)
    if scope["type"] == "websocket":
        return _subprotocol_authorization(scope.get("subprotocols", ()))
    return None


def _subprotocol_authorization(subprotocols: Collection[str]) -> bytes | None:
    """``Bearer <key>`` (the header a client would have sent, UTF-8) from a
    ``base64url.bearer.<key>`` subprotocol, if one is offered."""
    for offered in subprotocols:
        if offered.startswith(BEARER_SUBPROTOCOL_PREFIX):
            encoded = offered[len(BEARER_SUBPROTOCOL_PREFIX) :]
            try:
                key = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
            except binascii.Error:
                return b"Bearer"  # refused as a malformed header would be
            return b"Bearer " + key
    return None


def caller_key(scope: Scope) -> KeyEntry:
    """The key :class:`AuthMiddleware` resolved for this request."""
    entry: KeyEntry = scope[KEY_SCOPE_KEY]
    return entry


def caller_namespace(scope: Scope) -> str:
    """The namespace :class:`AuthMiddleware` resolved for this request."""
    namespace: str = scope[NAMESPACE_SCOPE_KEY]
    return namespace


def session_key(namespace: str, session_id: str, model: str | None = None) -> str:
    """Store key of a session of (namespace, model, session id): ``namespace/session`` for the
    default model (the key sessions had before there were several models, so they survive the
    upgrade), ``namespace/model/session`` for another. '/' cannot appear in a session id or a
    model name, so no two sessions ever share a key."""
    if model is None or model == DEFAULT_MODEL:
        return f"{namespace}/{session_id}"
    return f"{namespace}/{model}/{session_id}"


def namespace_prefix(scope: Scope) -> str:
    """What every store key of the calling client's sessions starts with (the default model's
    key of an empty session id: ``session_key`` stays the one definition of the format)."""
    return session_key(caller_namespace(scope), "")


def namespace_of(key: str) -> str:
    """The namespace of a store key (what comes before its first '/')."""
    return key.partition("/")[0]


def model_and_session_of(key: str, prefix: str) -> tuple[str, str]:
    """(model, session id) of a store key that starts with ``prefix`` (see :func:`session_key`)."""
    rest = key[len(prefix) :]
    model, separator, session_id = rest.partition("/")
    return (model, session_id) if separator else (DEFAULT_MODEL, rest)


def store_key(scope: Scope, session_id: str, model: str | None = None) -> str:
    """Store key of the calling client's session ``session_id`` of ``model``."""
    return session_key(caller_namespace(scope), session_id, model)
