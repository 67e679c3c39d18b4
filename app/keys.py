"""The configured API keys: each one's digest, scope, session quota and request rate.

Keys come from ``FORECAST_API_KEYS`` (comma-separated; ``admin:`` before an entry makes it an
admin key) or from the TOML file ``FORECAST_API_KEYS_FILE`` (re-read on change, see
:mod:`app.keys_file`)::

    [[keys]]
    name = "acme"                  # optional; shown to admins, never in metrics
    sha256 = "<64 hex digits>"     # or: key = "<the key itself>"
    scope = "client"               # or "admin"
    max_sessions = 2000            # optional: this key's session quota
    rate_limit = "50/s burst 100"  # optional: this key's rate ("off": none)

Only sha256 digests are kept in memory. A key's namespace is derived from its digest, so a key
keeps its sessions across rotations of the file.
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from app.rate_limit import RateLimit, parse_rate_limit

OPEN_NAMESPACE = "public"
_SHA256_PREFIX = "sha256:"
_ADMIN_PREFIX = "admin:"
HEX_DIGEST = r"^[0-9a-fA-F]{64}$"
Scope = Literal["client", "admin"]


def digest_of(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def namespace_of_digest(digest: str) -> str:
    """The namespace of a key: from its digest, never from anything the client chooses."""
    return "k" + digest[:24]


@dataclass(frozen=True)
class KeyEntry:
    """What one key may do."""

    digest: str
    namespace: str
    scope: Scope
    max_sessions: int | None  # None: no quota of its own (open mode)
    rate_limit: RateLimit | None
    name: str | None = None

    @property
    def admin(self) -> bool:
        return self.scope == "admin"


@dataclass(frozen=True)
class KeyDefaults:
    """The settings that apply to every key without an override."""

    max_sessions: int
    max_sessions_per_key: int | None
    rate_limit: RateLimit | None

    def quota(self, keys: int) -> int:
        """``FORECAST_MAX_SESSIONS_PER_KEY``, else the cap shared out evenly between the keys
        (rounded down, so the quotas never add up to more than the cap)."""
        if self.max_sessions_per_key is not None:
            return self.max_sessions_per_key
        return max(1, self.max_sessions // max(1, keys))


@dataclass(frozen=True)
class KeyTable:
    """The keys in force, by digest; empty means the service is open."""

    by_digest: dict[str, KeyEntry]
    open_entry: KeyEntry
    by_namespace: dict[str, KeyEntry]

    @property
    def enabled(self) -> bool:
        return bool(self.by_digest)

    def quota(self, namespace: str) -> int | None:
        """Session quota of the key owning ``namespace`` (None: none known, e.g. removed)."""
        if not self.by_digest:
            return self.open_entry.max_sessions
        entry = self.by_namespace.get(namespace)
        return entry.max_sessions if entry is not None else None

    def names(self) -> dict[str, str | None]:
        """Namespace -> configured name, for the admin listing."""
        return {entry.namespace: entry.name for entry in self.by_digest.values()}

    def oversubscribed(self, max_sessions: int) -> bool:
        """The quotas add up to more than the service's cap: keys can crowd each other out."""
        quotas = [entry.max_sessions or 0 for entry in self.by_digest.values()]
        return sum(quotas) > max_sessions


@dataclass(frozen=True)
class _Spec:
    digest: str
    scope: Scope
    max_sessions: int | None = None
    rate_limit: RateLimit | None = None
    rate_set: bool = False
    name: str | None = None


def build_table(specs: Iterable[_Spec], defaults: KeyDefaults) -> KeyTable:
    specs = list(specs)
    seen: set[str] = set()
    for spec in specs:
        if spec.digest in seen:
            raise ValueError(f"the key {spec.name or spec.digest[:8] + '...'} is listed twice")
        seen.add(spec.digest)
    quota = defaults.quota(len(specs))
    by_digest = {
        spec.digest: KeyEntry(
            digest=spec.digest,
            namespace=namespace_of_digest(spec.digest),
            scope=spec.scope,
            max_sessions=spec.max_sessions if spec.max_sessions is not None else quota,
            rate_limit=spec.rate_limit if spec.rate_set else defaults.rate_limit,
            name=spec.name,
        )
        for spec in specs
    }
    # Open mode: one namespace for every caller, the service's cap (no quota unless one is
    # set), and the configured rate; no scopes, as before keys existed.
    open_entry = KeyEntry(
        digest="",
        namespace=OPEN_NAMESPACE,
        scope="admin",
        max_sessions=defaults.max_sessions_per_key,
        rate_limit=defaults.rate_limit,
    )
    by_namespace = {entry.namespace: entry for entry in by_digest.values()}
    return KeyTable(by_digest, open_entry, by_namespace)


def _digest_entry(text: str, what: str) -> str:
    if text.startswith(_SHA256_PREFIX):
        digest = text[len(_SHA256_PREFIX) :].lower()
        if len(digest) != 64 or any(ch not in "0123456789abcdef" for ch in digest):
            raise ValueError(f"{what}: sha256: must be followed by 64 hex digits")
        return digest
    return digest_of(text)


def parse_env_keys(spec: str, defaults: KeyDefaults) -> KeyTable:
    """``FORECAST_API_KEYS``: ``key``, ``sha256:<hex>``, either after ``admin:`` for an admin."""
    specs = []
    for entry in (part.strip() for part in spec.split(",")):
        if not entry:
            continue
        scope: Scope = "client"
        if entry.startswith(_ADMIN_PREFIX):
            scope, entry = "admin", entry[len(_ADMIN_PREFIX) :]
        specs.append(_Spec(_digest_entry(entry, "FORECAST_API_KEYS"), scope))
    return build_table(specs, defaults)


class _FileKey(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = Field(default=None, min_length=1, max_length=64)
    key: str | None = Field(default=None, min_length=1)
    sha256: str | None = Field(default=None, pattern=HEX_DIGEST)
    scope: Scope = "client"
    max_sessions: int | None = Field(default=None, ge=1)
    rate_limit: str | None = None

    @model_validator(mode="after")
    def _one_key(self) -> _FileKey:
        if (self.key is None) == (self.sha256 is None):
            raise ValueError("give exactly one of 'key' and 'sha256'")
        if self.rate_limit is not None:
            parse_rate_limit(self.rate_limit, "rate_limit")
        return self


class _KeysFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    keys: list[_FileKey] = Field(min_length=1)


def parse_keys_file(text: str, defaults: KeyDefaults) -> KeyTable:
    """The keys file's content as a table; ValueError with one line saying what to fix."""
    try:
        document = _KeysFile.model_validate(tomllib.loads(text))
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"not valid TOML ({error})") from None
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "file"
        more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
        raise ValueError(f"{where}: {first['msg']}{more}") from None
    specs = [
        _Spec(
            digest=(item.sha256.lower() if item.sha256 else digest_of(item.key or "")),
            scope=item.scope,
            max_sessions=item.max_sessions,
            rate_limit=parse_rate_limit(item.rate_limit) if item.rate_limit else None,
            rate_set=item.rate_limit is not None,
            name=item.name,
        )
        for item in document.keys
    ]
    return build_table(specs, defaults)


def read_keys_file(path: Path, defaults: KeyDefaults) -> tuple[bytes, KeyTable]:
    """Read and parse the keys file (blocking: call it off the event loop once serving)."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise ValueError(f"cannot read it ({error.strerror or error})") from None
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 text") from None
    return raw, parse_keys_file(text, defaults)
