"""Refusals worth an operator's attention: authentication failures and limit refusals.

Counted in /metrics by kind and reason (never by key: a label per key would grow without bound
and tell one tenant's activity to whoever reads the metrics), and logged at most once per reason
every ``interval_s``, with how many were not logged since: a flood of bad requests cannot flood
the log.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, Metric

from app.errors import ServiceError

logger = logging.getLogger("app.audit")

AUTH_KINDS = frozenset({401, 403})
# Seconds between two log lines for one reason.
LOG_INTERVAL_S = 10.0


class Audit:
    """Counts refusals by (kind, reason) and logs them rate-limited; a Prometheus collector."""

    def __init__(self, clock: Callable[[], float], interval_s: float = LOG_INTERVAL_S) -> None:
        self._clock = clock
        self._interval_s = interval_s
        self._counts: dict[tuple[str, str], int] = {}
        # reason -> (when last logged, refusals since then not logged)
        self._logged: dict[str, tuple[float, int]] = {}

    def refused(self, error: ServiceError, path: str) -> None:
        """Record one refusal (errors without an audit reason are not refusals of this kind)."""
        reason = error.audit_reason
        if reason is None:
            return
        kind = "auth" if error.status_code in AUTH_KINDS else "limit"
        self._counts[(kind, reason)] = self._counts.get((kind, reason), 0) + 1
        now = self._clock()
        last, unlogged = self._logged.get(reason, (-float("inf"), 0))
        if now - last < self._interval_s:
            self._logged[reason] = (last, unlogged + 1)
            return
        self._logged[reason] = (now, 0)
        extra = f" ({unlogged} more since the last line)" if unlogged else ""
        logger.warning("refused %s: %s %s on %s%s", kind, error.status_code, reason, path, extra)

    def count(self, kind: str, reason: str) -> int:
        return self._counts.get((kind, reason), 0)

    def collect(self) -> Iterator[Metric]:
        auth = CounterMetricFamily(
            "forecast_auth_failures",
            "Requests refused for their key (401) or its scope (403), by reason",
            labels=["reason"],
        )
        limits = CounterMetricFamily(
            "forecast_limit_refusals",
            "Requests refused by a session quota, the session cap or a rate limit, by reason",
            labels=["reason"],
        )
        for (kind, reason), count in sorted(self._counts.items()):
            (auth if kind == "auth" else limits).add_metric([reason], count)
        yield auth
        yield limits
