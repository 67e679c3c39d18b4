"""Forecast intervals: the model's calibrated radii, scaled by each session's own adaptation.

The configured levels (``FORECAST_INTERVAL_LEVELS``) are the ones each session adapts (see
:mod:`app.session_tracking`). A request may ask for other levels: their offset is interpolated
between the adapted levels around them (the nearest one outside their range), so they follow
the session's adaptation without a guarantee of their own. Forecasts ``h`` steps ahead use the
model's calibrated radius for ``h`` with the session's one-step offsets.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.schemas import Interval, LevelCoverage, SessionSkill, SkillFigures
from app.session_history import compiled_push_one
from app.session_tracking import (
    TrackingLayout,
    compiled_track,
    summarize,
    track,
    tracking_parameters,
)
from app.settings import Settings
from forecast_core.arrays import FloatArray
from forecast_core.calibration import DEFAULT_SCALE_SMOOTHING, Calibration
from forecast_core.lstm_step import FINITE_BOUND, finite


@dataclass(frozen=True)
class IntervalPolicy:
    """How one served model sizes intervals and tracks sessions, under the service settings."""

    levels: tuple[float, ...]  # adapted per session, ascending; empty without a calibration
    calibration: Calibration | None
    layout: TrackingLayout
    # The adapted levels' one-step calibrated scores, as floats (the hot path) and packed with
    # the rest of the tracking step's parameters (one array argument for the compiled step).
    scores: tuple[float, ...] = field(repr=False)
    parameters: FloatArray = field(repr=False)
    fresh: FloatArray = field(repr=False)  # a fresh session's tracking, shared and read-only
    level_labels: tuple[str, ...] = field(repr=False)  # as metric label values: 80, not 80.0
    range_bounds: tuple[float, float] = field(repr=False)  # beyond them: outside_training_range
    widest_flag: str = field(repr=False)
    widest_bit: int = field(repr=False)  # the widest adapted level's bit in a misses mask
    training_span: float = field(repr=False)  # errors are scaled by it in the metrics

    @classmethod
    def for_settings(cls, calibration: Calibration | None, settings: Settings) -> IntervalPolicy:
        """The policy of a model's calibration under the service's interval settings."""
        return cls.build(
            calibration,
            settings.interval_level_values,
            settings.interval_adaptation_rate,
            settings.skill_window,
        )

    @classmethod
    def build(
        cls,
        calibration: Calibration | None,
        levels: Sequence[float],
        rate: float,
        window: int,
    ) -> IntervalPolicy:
        """The policy, with its compiled tracking step ready (compiling in a request would
        stall the event loop)."""
        adapted = tuple(sorted(set(levels))) if calibration is not None else ()
        scores = tuple(calibration.quantile(level) for level in adapted) if calibration else ()
        layout = TrackingLayout(levels=len(adapted), window=window)
        smoothing = calibration.scale_smoothing if calibration else DEFAULT_SCALE_SMOOTHING
        alphas = [1.0 - level / 100.0 for level in adapted]
        policy = cls(
            levels=adapted,
            calibration=calibration,
            layout=layout,
            scores=scores,
            parameters=tracking_parameters(
                scores, alphas, rate, smoothing, calibration.error_cap if calibration else math.inf
            ),
            fresh=layout.fresh(calibration.initial_scale if calibration else 1.0),
            level_labels=tuple(f"{level:g}" for level in adapted),
            range_bounds=(
                calibration.training_range_bounds() if calibration else (-math.inf, math.inf)
            ),
            widest_flag=f"outside_interval_{adapted[-1]:g}" if adapted else "",
            widest_bit=1 << (len(adapted) - 1) if adapted else 0,
            training_span=(
                calibration.value_maximum - calibration.value_minimum if calibration else 1.0
            ),
        )
        # Both argument variants serving uses: a fresh session's shared read-only tracking, and
        # a tracking array a request or a store produced.
        tracked, _ = policy.track(policy.fresh_tracking(), 0.0, 0.0)
        policy.track(tracked, 0.0, 0.0)
        # And the history window's step, with either kind of tracking array.
        empty = np.empty((0, 2 + layout.levels))
        for tracking in (policy.fresh_tracking(), tracked):
            pushed = compiled_push_one(
                empty, 2, 0.0, 0.0, tracking, policy.parameters, len(adapted)
            )
            compiled_push_one(pushed, 2, 0.0, 0.0, tracking, policy.parameters, len(adapted))
        return policy

    def fresh_tracking(self) -> FloatArray:
        return self.fresh

    def track(
        self, tracking: FloatArray, error: float, naive_error: float
    ) -> tuple[FloatArray, int]:
        """Fold a revealed value's error in; return the new tracking and the levels it missed."""
        return track(tracking, error, naive_error, self.parameters, self.layout.levels)

    def track_values(
        self,
        tracking: FloatArray,
        previous: tuple[float, float] | None,
        values: Sequence[float],
        forecasts: Sequence[float],
    ) -> tuple[FloatArray, tuple[float, ...], tuple[int, ...], tuple[float, ...]]:
        """Fold in the values a request revealed, each against the forecast before it
        (``previous``: the session's last forecast and value, None if it has none).

        Returns the new tracking, the log multipliers of the calibrated scores in force after
        each value (per adapted level: the level's offset plus the log of the session's scale),
        the levels each value missed (a bit each) and each value's absolute error (NaN where
        no forecast preceded it)."""
        compiled, parameters, adapted = compiled_track, self.parameters, self.layout.levels
        multipliers = self.layout.multipliers
        if len(values) == 1:  # /predict: the common case, without the loop's bookkeeping
            if previous is None:
                return tracking, tuple(tracking[multipliers].tolist()), (0,), (math.nan,)
            error = values[0] - previous[0]
            tracking, missed = compiled(
                tracking, error, values[0] - previous[1], parameters, adapted
            )
            return tracking, tuple(tracking[multipliers].tolist()), (missed,), (abs(error),)
        offsets: list[float] = []
        misses: list[int] = []
        errors: list[float] = []
        for value, forecast in zip(values, forecasts, strict=True):
            if previous is None:
                missed, error = 0, math.nan
            else:
                error = value - previous[0]
                tracking, missed = compiled(
                    tracking, error, value - previous[1], parameters, adapted
                )
                error = abs(error)
            offsets.extend(tracking[multipliers].tolist())
            misses.append(missed)
            errors.append(error)
            previous = (forecast, value)
        return tracking, tuple(offsets), tuple(misses), tuple(errors)

    def without_skill(self, tracking: FloatArray) -> FloatArray:
        """``tracking`` with its live-skill figures (life totals and the recent window) cleared
        and its interval adaptation (offsets, scale) kept."""
        out = tracking.copy()
        out[self.layout.totals :] = 0.0
        return out

    def judge(self, value: float, served: FloatArray | None) -> tuple[int, float]:
        """The levels ``value`` missed (a bit each) and its absolute error, against a forecast
        served with its radii (a history row: value, forecast, radius per level); no misses
        and a NaN error without one."""
        if served is None or math.isnan(served[1]):
            return 0, math.nan
        error = abs(value - float(served[1]))
        misses = 0
        if served.shape[0] == 2 + self.layout.levels:
            for level in range(self.layout.levels):
                if error > served[2 + level]:  # False for a NaN radius
                    misses |= 1 << level
        return misses, error

    def current_offsets(self, tracking: FloatArray | None) -> Sequence[float]:
        """A session's log multipliers of the calibrated scores now (per adapted level: its
        offset plus the log of its scale; fresh ones if it has none under these settings)."""
        if tracking is None or tracking.shape[0] != self.layout.size:
            tracking = self.fresh_tracking()
        multipliers: list[float] = tracking[self.layout.multipliers].tolist()
        return multipliers

    def offset(self, level: float, offsets: Sequence[float]) -> float:
        """The session's offset for ``level``: its own if adapted, else interpolated."""
        levels = self.levels
        index = bisect.bisect_left(levels, level)
        if index < len(levels) and levels[index] == level:
            return offsets[index]
        if index == 0:
            return offsets[0]
        if index == len(levels):
            return offsets[-1]
        low, high = levels[index - 1], levels[index]
        weight = (level - low) / (high - low)
        return offsets[index - 1] * (1.0 - weight) + offsets[index] * weight

    def intervals(
        self, forecast: float, offsets: Sequence[float], levels: Sequence[float] | None = None
    ) -> list[Interval]:
        """One-step intervals around ``forecast`` at ``levels`` (default: the adapted ones)."""
        calibration = self.calibration
        if calibration is None:
            return []
        if levels is None:
            # The common case, on every request: scores and offsets line up level by level, and
            # the arithmetic is inlined (each function call here shows in the throughput). The
            # in-place step (app.session_rows) computes the same in compiled code.
            exp = math.exp
            intervals: list[Interval] = []
            for level, score, offset in zip(self.levels, self.scores, offsets, strict=True):
                radius = score * exp(offset)
                lower, upper = forecast - radius, forecast + radius
                if not -FINITE_BOUND <= lower <= upper <= FINITE_BOUND:
                    lower, upper = finite(lower), finite(upper)
                intervals.append({"level": level, "lower": lower, "upper": upper})
            return intervals
        return [
            _interval(level, forecast, calibration.quantile(level), self.offset(level, offsets))
            for level in levels
        ]

    def intervals_of_bounds(self, lower: FloatArray, upper: FloatArray) -> list[list[Interval]]:
        """One-step intervals at the adapted levels from their bounds, a row per forecast."""
        if self.calibration is None or not self.levels:
            return [[] for _ in range(lower.shape[0])]
        count, levels = lower.shape
        # One flat comprehension, cut into rows: a comprehension per row costs a call each.
        flat: list[Interval] = [
            {"level": level, "lower": low, "upper": high}
            for level, low, high in zip(
                self.levels * count, lower.ravel().tolist(), upper.ravel().tolist(), strict=True
            )
        ]
        return [flat[start : start + levels] for start in range(0, count * levels, levels)]

    def forecast_intervals(
        self, forecasts: Sequence[float], offsets: Sequence[float], levels: Sequence[float] | None
    ) -> list[list[Interval]]:
        """Intervals around forecasts 1 .. h steps ahead: one list per step, widening."""
        calibration = self.calibration
        if calibration is None:
            return [[] for _ in forecasts]
        chosen = self.levels if levels is None else levels
        per_level = [
            (level, calibration.quantiles(level, len(forecasts)), self.offset(level, offsets))
            for level in chosen
        ]
        return [
            [
                _interval(level, forecast, scores[step], offset)
                for level, scores, offset in per_level
            ]
            for step, forecast in enumerate(forecasts)
        ]

    def skill(self, tracking: FloatArray | None) -> SessionSkill:
        """A session's live skill: over its life and its last window of values."""
        if tracking is None or tracking.shape[0] != self.layout.size:
            tracking = self.fresh_tracking()
        life, recent = summarize(tracking, self.layout)
        return SessionSkill(life=self._figures(life), recent=self._figures(recent))

    def _figures(self, figures: dict[str, Any] | None) -> SkillFigures | None:
        if figures is None:
            return None
        coverage = [
            LevelCoverage(level=level, coverage=share)
            for level, share in zip(self.levels, figures.pop("coverage"), strict=True)
        ]
        # Errors of huge values overflow (to infinity, or NaN once infinities meet), which JSON
        # cannot carry: report them as the largest finite error, as interval bounds are clamped
        # (the schema promises numbers; these figures are never negative).
        for name in ("mae", "rmse", "persistence_rmse"):
            if not math.isfinite(figures[name]):
                figures[name] = FINITE_BOUND
        skill = figures["skill"]
        if skill is not None and not math.isfinite(skill):  # infinity over infinity
            figures["skill"] = None
        return SkillFigures(coverage=coverage, **figures)

    def flags(self, value: float, misses: int) -> list[str]:
        """What is unusual about a revealed value: outside the training range (by the margin in
        forecast_core.calibration), outside the widest interval forecast for it."""
        low, high = self.range_bounds
        inside = low <= value <= high
        outside_widest = misses & self.widest_bit
        if inside and not outside_widest:  # the common case, on every request
            return []
        flags = [] if inside else ["outside_training_range"]
        if outside_widest:
            flags.append(self.widest_flag)
        return flags


def _interval(level: float, forecast: float, score: float, log_multiplier: float) -> Interval:
    radius = score * math.exp(log_multiplier)
    return {"level": level, "lower": finite(forecast - radius), "upper": finite(forecast + radius)}
