"""Prometheus metrics: requests and latency by route and status, sessions, steps served.

A registry per app (no process-global state), recorded by a pure ASGI middleware because
Starlette's BaseHTTPMiddleware costs more per request than the LSTM step itself.
"""

from __future__ import annotations

import bisect
import itertools
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import anyio.to_thread
import numpy as np
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.metrics_share import MergedFamilies, MetricsShare, Snapshot, snapshot_of

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Label values must stay few: unknown methods and paths are pooled, never copied from the request.
_KNOWN_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class RequestStats:
    """Request counts and latency by (route, method, status), and steps served, in plain numbers.

    prometheus_client's Counter and Histogram take a lock and walk every bucket per update;
    these are only ever updated from the event loop's thread, so plain
    integers do, and the registry reads them through :meth:`collect` when /metrics is scraped.
    """

    def __init__(self, buckets: tuple[float, ...] = _LATENCY_BUCKETS) -> None:
        self.buckets = buckets
        # labels -> [count, sum of seconds, then one count per bucket (non-cumulative)]
        self._series: dict[tuple[str, str, str], list[Any]] = {}
        self.steps = 0  # values fed through the LSTM, replays excluded
        self.stream_messages = [0, 0]  # /stream messages answered, then refused (per message)

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        labels = (route, method, str(status))
        series = self._series.get(labels)
        if series is None:
            series = self._series[labels] = [0, 0.0] + [0] * (len(self.buckets) + 1)
        series[0] += 1
        series[1] += seconds
        series[2 + bisect.bisect_left(self.buckets, seconds)] += 1

    def collect(self) -> Iterator[Metric]:
        names = ["route", "method", "status"]
        requests = CounterMetricFamily(
            "forecast_http_requests",
            "HTTP requests by route template, method and status",
            labels=names,
        )
        latency = HistogramMetricFamily(
            "forecast_http_request_duration_seconds",
            "Time from request to the end of the response, by route, method and status",
            labels=names,
        )
        bounds = [*(repr(bound) for bound in self.buckets), "+Inf"]
        for labels, (count, total, *per_bucket) in list(self._series.items()):
            requests.add_metric(list(labels), count)
            latency.add_metric(
                list(labels),
                list(zip(bounds, itertools.accumulate(per_bucket), strict=True)),
                total,
            )
        yield requests
        yield latency
        yield CounterMetricFamily(
            "forecast_steps", "Values fed through the LSTM (replays excluded)", value=self.steps
        )
        messages = CounterMetricFamily(
            "forecast_stream_messages",
            "Messages received on /stream, by outcome (answered, or refused with an error)",
            labels=["outcome"],
        )
        messages.add_metric(["answered"], self.stream_messages[0])
        messages.add_metric(["refused"], self.stream_messages[1])
        yield messages


# Absolute errors of revealed values, as a fraction of the model's training range.
_SCALED_ERROR_BUCKETS = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)


class ForecastStats:
    """Forecast quality over all sessions: scaled errors, interval hits and misses, flags.

    Aggregates only (no label per session), in plain numbers like :class:`RequestStats`.
    """

    def __init__(self, buckets: tuple[float, ...] = _SCALED_ERROR_BUCKETS) -> None:
        self.buckets = buckets
        self._errors = [0] * (len(buckets) + 1)
        self._error_sum = 0.0
        # levels -> per level, hits then misses
        self._intervals: dict[tuple[str, ...], list[int]] = {}
        self._flags: dict[str, int] = {}

    def observe(
        self, scaled_error: float, missed: int, levels: tuple[str, ...], flags: list[str]
    ) -> None:
        """One revealed value: its error, the levels it missed (a bit each), its flags."""
        self._error_sum += scaled_error
        self._errors[bisect.bisect_left(self.buckets, scaled_error)] += 1
        counts = self._intervals.get(levels)
        if counts is None:
            counts = self._intervals[levels] = [0] * (2 * len(levels))
        for index in range(len(levels)):
            counts[2 * index + (missed >> index & 1)] += 1
        for flag in flags:
            self._flags[flag] = self._flags.get(flag, 0) + 1

    def observe_many(
        self,
        scaled_errors: Sequence[float],
        misses: Sequence[int],
        levels: tuple[str, ...],
        flags: Sequence[list[str]],
    ) -> None:
        """:meth:`observe` for many revealed values at once (a NaN error: no forecast before
        that value, which is left out, flags and all)."""
        errors = np.asarray(scaled_errors, dtype=np.float64)
        kept = ~np.isnan(errors)
        errors = errors[kept]
        if not errors.shape[0]:
            return
        total = self._error_sum
        for error in errors.tolist():  # in order, as observe adds them (a float sum's order shows)
            total += error
        self._error_sum = total
        # side="left" as bisect_left: a bucket counts the errors up to its bound.
        per_bucket = np.bincount(
            np.searchsorted(self.buckets, errors, side="left"), minlength=len(self._errors)
        ).tolist()
        for bucket, count in enumerate(per_bucket):
            self._errors[bucket] += count
        counts = self._intervals.get(levels)
        if counts is None:
            counts = self._intervals[levels] = [0] * (2 * len(levels))
        missed = np.asarray(misses, dtype=np.int64)[kept]
        for index in range(len(levels)):
            level_misses = int(((missed >> index) & 1).sum())
            counts[2 * index] += errors.shape[0] - level_misses
            counts[2 * index + 1] += level_misses
        if not any(flags):  # the common case: no value flagged
            return
        for value_flags, counted in zip(flags, kept.tolist(), strict=True):
            if counted:
                for flag in value_flags:
                    self._flags[flag] = self._flags.get(flag, 0) + 1

    def collect(self) -> Iterator[Metric]:
        errors = HistogramMetricFamily(
            "forecast_absolute_scaled_error",
            "Absolute one-step error of each revealed value, as a fraction of the training range",
        )
        bounds = [*(repr(bound) for bound in self.buckets), "+Inf"]
        errors.add_metric(
            [], list(zip(bounds, itertools.accumulate(self._errors), strict=True)), self._error_sum
        )
        yield errors
        intervals = CounterMetricFamily(
            "forecast_interval_outcomes",
            "Revealed values inside (hit) or outside (miss) the interval forecast for them",
            labels=["level", "outcome"],
        )
        totals: dict[str, list[int]] = {}
        for levels, counts in self._intervals.items():
            for index, level in enumerate(levels):
                total = totals.setdefault(level, [0, 0])
                total[0] += counts[2 * index]
                total[1] += counts[2 * index + 1]
        for level, (hits, misses) in sorted(totals.items()):
            intervals.add_metric([level, "hit"], hits)
            intervals.add_metric([level, "miss"], misses)
        yield intervals
        flags = CounterMetricFamily(
            "forecast_flags", "Flags raised on revealed values, by flag", labels=["flag"]
        )
        for flag, count in sorted(self._flags.items()):
            flags.add_metric([flag], count)
        yield flags


# Gauges that count something of each worker (its open sockets): a scrape answered for every
# worker adds them up; the other gauges describe what the workers share (app.metrics_share).
PER_WORKER_GAUGES = frozenset({"forecast_stream_sockets"})


class ServiceMetrics:
    """The service's collectors, in their own registry; with ``share``, every worker's numbers
    in a scrape (app.metrics_share)."""

    def __init__(
        self, share: MetricsShare | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self.share = share
        self._clock = clock
        # Numbers each snapshot, so that a late write of an older one never replaces a newer.
        self._snapshots = itertools.count(1)
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = RequestStats()
        self.registry.register(self.requests)
        self.forecasts = ForecastStats()
        self.registry.register(self.forecasts)
        self.active_sessions = Gauge(
            "forecast_active_sessions", "Live sessions in the store", registry=self.registry
        )
        self.stream_sockets = Gauge(
            "forecast_stream_sockets", "Open /stream WebSockets", registry=self.registry
        )
        self.model_ready = Gauge(
            "forecast_model_ready", "1 when a checked model is loaded", registry=self.registry
        )

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.observe(route, method, status, seconds)

    def count_steps(self, steps: int) -> None:
        self.requests.steps += steps

    def count_stream_message(self, refused: bool) -> None:
        self.requests.stream_messages[refused] += 1

    def render(self) -> bytes:
        """This worker's numbers alone."""
        return generate_latest(self.registry)

    def snapshot(self) -> Snapshot:
        return snapshot_of(self.registry.collect(), self._clock(), next(self._snapshots))

    async def publish(self) -> None:
        """Write this worker's numbers for the others (nothing without a share)."""
        if self.share is not None:
            await anyio.to_thread.run_sync(self.share.publish, self.snapshot())

    async def render_all(self) -> bytes:
        """A scrape's answer: every worker's numbers with a share, else this worker's."""
        if self.share is None:
            return self.render()
        others = await anyio.to_thread.run_sync(self.share.others)
        return generate_latest(MergedFamilies(self.snapshot(), others, PER_WORKER_GAUGES))


class MetricsMiddleware:
    """Times every HTTP request and counts it under its route template (not its raw path)."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope["method"] if scope["method"] in _KNOWN_METHODS else "other"
            self.metrics.observe(template, method, status, time.perf_counter() - started)
