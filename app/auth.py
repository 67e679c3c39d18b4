"""API keys: who is calling, and so which namespace their sessions live in."""

from __future__ import annotations

import hashlib
import hmac

from starlette.exceptions import HTTPException

OPEN_TENANT = "public"
_SHA256_PREFIX = "sha256:"


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

    def tenant_for(self, authorization: str | None) -> str:
        """The caller's namespace; 401 without a valid ``Authorization: Bearer <key>``."""
        if not self._digests:
            return OPEN_TENANT
        if not authorization:
            raise HTTPException(
                401,
                "missing API key: send 'Authorization: Bearer <key>'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        scheme, _, key = authorization.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise HTTPException(
                401,
                "malformed Authorization header: expected 'Bearer <key>'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        digest = _digest(key.strip())
        for known in self._digests:
            if hmac.compare_digest(known, digest):
                # The namespace is derived from the key, never from anything the client chooses.
                return "k" + digest[:24]
        raise HTTPException(401, "unknown API key", headers={"WWW-Authenticate": "Bearer"})


def session_key(tenant: str, session_id: str) -> str:
    """Store key of a session: '/' cannot appear in a session id, so namespaces never collide."""
    return f"{tenant}/{session_id}"
