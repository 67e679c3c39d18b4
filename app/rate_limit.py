"""Per-key request rates: the ``200/s burst 400`` syntax and an in-process token bucket per key.

Each replica keeps its own buckets and refills them at its *share* of the configured rate
(rate / live replicas; :mod:`app.replica_peers` counts them through Redis), so no request pays
a round trip for the check and the shares add up to the configured rate across replicas.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

from starlette.types import Scope

from app.errors import RateLimited

# Where the middleware leaves the caller's bucket, for routes that charge more than one token.
BUCKET_SCOPE_KEY = "forecast.rate_bucket"
_RATE = re.compile(
    r"^\s*(?P<rate>\d+(?:\.\d+)?)\s*/\s*s\s*(?:burst\s+(?P<burst>\d+))?\s*$", re.IGNORECASE
)
OFF = "off"


@dataclass(frozen=True)
class RateLimit:
    """Requests per second, and how many may come at once after a quiet spell."""

    per_second: float
    burst: int

    def __str__(self) -> str:
        return f"{self.per_second:g}/s burst {self.burst}"


def parse_rate_limit(text: str, what: str = "FORECAST_RATE_LIMIT") -> RateLimit | None:
    """``'200/s burst 400'`` (burst defaults to one second's worth), or ``''``/``'off'``: None."""
    if not text.strip() or text.strip().lower() == OFF:
        return None
    match = _RATE.match(text)
    if match is None:
        raise ValueError(
            f"{what}: {text!r} is not a rate; write it as '<requests>/s' or "
            "'<requests>/s burst <n>' (e.g. '200/s burst 400'), or 'off'"
        )
    per_second = float(match["rate"])
    if per_second <= 0:
        raise ValueError(f"{what}: the rate must be above 0 (or 'off' for none)")
    burst = int(match["burst"]) if match["burst"] else max(1, math.ceil(per_second))
    if burst < 1:
        raise ValueError(f"{what}: the burst must be at least 1")
    return RateLimit(per_second, burst)


class TokenBucket:
    """One key's bucket on this replica; refilled lazily when it is checked."""

    __slots__ = ("_clock", "_rate", "_size", "_tokens", "_updated")

    def __init__(self, rate: float, size: float, clock: Callable[[], float]) -> None:
        self._rate = rate
        self._size = size
        self._tokens = size
        self._clock = clock
        self._updated = clock()

    def resize(self, rate: float, size: float) -> None:
        """A new share (replicas came or went, or the key's limit changed); tokens kept."""
        self._refill()
        self._rate, self._size = rate, size
        self._tokens = min(self._tokens, size)

    def _refill(self) -> float:
        now = self._clock()
        elapsed = now - self._updated
        if elapsed > 0:  # a clock stepped back refills nothing
            self._tokens = min(self._size, self._tokens + elapsed * self._rate)
        self._updated = now
        return self._tokens

    def take(self) -> None:
        """Take one token, or raise RateLimited with how long until one is there."""
        tokens = self._refill()
        if tokens >= 1.0:
            self._tokens = tokens - 1.0
            return
        raise RateLimited(max(1, math.ceil((1.0 - tokens) / self._rate)))

    def charge(self, tokens: float) -> None:
        """Take ``tokens`` more after the request's own one was admitted; the bucket may go
        into debt, which later requests wait out (so no request is impossible)."""
        self._refill()
        self._tokens -= tokens


def charge_more(scope: Scope, tokens: int) -> None:
    """Charge the calling key ``tokens`` beyond its request's own (a batch's other values)."""
    bucket: TokenBucket | None = scope.get(BUCKET_SCOPE_KEY)
    if bucket is not None and tokens > 0:
        bucket.charge(tokens)


class RateLimiter:
    """The token buckets of this replica, one per key (by namespace), at this replica's share."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._buckets: dict[str, tuple[RateLimit, int, TokenBucket]] = {}
        self._replicas = 1

    @property
    def replicas(self) -> int:
        return self._replicas

    def set_replicas(self, replicas: int) -> None:
        """How many replicas share each key's rate (at least 1)."""
        self._replicas = max(1, replicas)

    def bucket(self, namespace: str, limit: RateLimit) -> TokenBucket:
        """The key's bucket, sized to this replica's share of ``limit``."""
        entry = self._buckets.get(namespace)
        replicas = self._replicas
        if entry is not None and entry[0] is limit and entry[1] == replicas:
            return entry[2]
        rate, size = limit.per_second / replicas, max(1.0, limit.burst / replicas)
        if entry is None:
            bucket = TokenBucket(rate, size, self._clock)
        else:
            bucket = entry[2]
            bucket.resize(rate, size)
        self._buckets[namespace] = (limit, replicas, bucket)
        return bucket

    def forget_others(self, namespaces: set[str]) -> None:
        """Drop buckets of keys no longer configured (after a keys file change)."""
        for namespace in list(self._buckets):
            if namespace not in namespaces:
                del self._buckets[namespace]
