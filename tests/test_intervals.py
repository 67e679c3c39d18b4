"""Calibrated intervals and each session's adaptation and live skill, without HTTP."""

from __future__ import annotations

import math

import numpy as np
import pytest

from app.intervals import IntervalPolicy
from forecast_core.arrays import FloatArray
from forecast_core.calibration import Calibration


def _track_all(
    policy: IntervalPolicy, errors: list[float], naive: list[float] | None = None
) -> tuple[FloatArray, list[int]]:
    tracking = policy.fresh_tracking()
    misses = []
    for index, error in enumerate(errors):
        tracking, missed = policy.track(tracking, error, naive[index] if naive else 1.0)
        misses.append(missed)
    return tracking, misses


def test_radius_is_the_split_conformal_quantile(calibration: Calibration) -> None:
    # 40 errors 0.005 .. 0.2: level 80 takes the ceil(41 * 0.8) = 33rd smallest.
    assert calibration.quantile(80) == pytest.approx(0.165)
    assert calibration.quantile(95) == pytest.approx(0.195)


def test_a_level_too_high_for_the_calibration_takes_the_largest_error(
    calibration: Calibration,
) -> None:
    assert calibration.quantile(99.5) == pytest.approx(0.2)


def test_radii_widen_with_the_horizon_and_past_it_like_a_random_walk(
    calibration: Calibration,
) -> None:
    radii = [calibration.quantile(80, h) for h in (1, 2, 3)]
    assert radii[0] < radii[1] < radii[2]
    assert calibration.quantile(80, 12) == pytest.approx(radii[2] * math.sqrt(12 / 3))


def test_a_fresh_session_gets_the_calibrated_intervals(policy: IntervalPolicy) -> None:
    offsets = policy.current_offsets(None)
    intervals = policy.intervals(1.0, offsets)
    assert [i["level"] for i in intervals] == [80, 95]
    assert [i["lower"] for i in intervals] == pytest.approx([1.0 - 0.165, 1.0 - 0.195])
    assert [i["upper"] for i in intervals] == pytest.approx([1.0 + 0.165, 1.0 + 0.195])


def test_a_miss_widens_and_a_hit_narrows_by_the_conformal_step(policy: IntervalPolicy) -> None:
    missed, miss_bits = policy.track(policy.fresh_tracking(), 10.0, 1.0)
    hit, hit_bits = policy.track(policy.fresh_tracking(), 0.0, 1.0)
    assert miss_bits == 0b11 and hit_bits == 0
    assert missed[:2].tolist() == pytest.approx([0.05 * 0.8, 0.05 * 0.95])
    assert hit[:2].tolist() == pytest.approx([-0.05 * 0.2, -0.05 * 0.05])


def test_coverage_recovers_after_the_errors_triple(policy: IntervalPolicy) -> None:
    rng = np.random.default_rng(7)
    scale = 0.165 / 1.2816  # the calibrated 80 % radius of normal errors
    before = rng.normal(0, scale, 300).tolist()
    after = rng.normal(0, 3 * scale, 300).tolist()
    _, misses = _track_all(policy, before + after)
    hits_80 = [not missed & 1 for missed in misses[300 + 100 : 300 + 300]]
    assert sum(hits_80) / len(hits_80) >= 0.70


def test_a_level_between_adapted_ones_interpolates_their_offsets(policy: IntervalPolicy) -> None:
    assert policy.offset(87.5, [0.2, 0.4]) == pytest.approx(0.3)
    assert policy.offset(50, [0.2, 0.4]) == pytest.approx(0.2)
    assert policy.offset(99, [0.2, 0.4]) == pytest.approx(0.4)


def test_skill_over_life_and_the_recent_window(calibration: Calibration) -> None:
    policy = IntervalPolicy.build(calibration, (80, 95), rate=0.05, window=2)
    tracking, _ = _track_all(policy, [0.1, -0.3, 0.4], naive=[0.2, 0.2, 0.2])
    skill = policy.skill(tracking)
    assert skill.life is not None and skill.recent is not None
    assert skill.life.count == 3 and skill.recent.count == 2
    assert skill.life.mae == pytest.approx((0.1 + 0.3 + 0.4) / 3)
    assert skill.recent.rmse == pytest.approx(math.sqrt((0.09 + 0.16) / 2))
    assert skill.recent.persistence_rmse == pytest.approx(0.2)
    assert skill.recent.skill == pytest.approx(1 - math.sqrt(0.125) / 0.2)
    assert [c.coverage for c in skill.life.coverage] == pytest.approx([1 / 3, 1 / 3])


def test_a_session_with_no_revealed_value_has_no_skill_yet(policy: IntervalPolicy) -> None:
    skill = policy.skill(None)
    assert skill.life is None and skill.recent is None


@pytest.mark.parametrize(
    ("value", "misses", "flags"),
    [
        (0.5, 0, []),
        (1.2, 0, ["outside_training_range"]),
        (0.5, 0b10, ["outside_interval_95"]),
        (-0.5, 0b11, ["outside_training_range", "outside_interval_95"]),
    ],
    ids=["ordinary", "beyond-range", "outside-widest", "both"],
)
def test_flags(policy: IntervalPolicy, value: float, misses: int, flags: list[str]) -> None:
    assert policy.flags(value, misses) == flags


def test_without_a_calibration_there_are_no_intervals_but_skill_is_kept() -> None:
    policy = IntervalPolicy.build(None, (80, 95), rate=0.05, window=10)
    tracking, _ = _track_all(policy, [0.1, 0.2])
    assert policy.intervals(1.0, policy.current_offsets(tracking)) == []
    assert policy.skill(tracking).life is not None


def test_one_absurd_error_moves_the_scale_by_at_most_the_cap(policy: IntervalPolicy) -> None:
    assert policy.calibration is not None
    tracking, _ = policy.track(policy.fresh_tracking(), 1.7e308, 1.0)
    scale = float(tracking[policy.layout.scale])
    smoothing = policy.calibration.scale_smoothing
    assert scale == pytest.approx((1 - smoothing) * 1.0 + smoothing * policy.calibration.error_cap)


def test_interval_bounds_stay_finite(policy: IntervalPolicy) -> None:
    intervals = policy.intervals(1.7e308, [60.0, 60.0])
    assert all(math.isfinite(i["lower"]) and math.isfinite(i["upper"]) for i in intervals)


def test_a_farther_forecast_never_gets_a_narrower_interval(calibration: Calibration) -> None:
    # Horizon 2's scores smaller than horizon 1's, as a stationary seasonal model can give.
    shrinking = calibration.model_copy(
        update={"scores": [calibration.scores[0], [s / 2 for s in calibration.scores[0]]]}
    )
    assert shrinking.quantiles(80, 2) == [shrinking.quantile(80, 1)] * 2


def test_skill_figures_stay_finite_when_errors_overflow_their_squares(
    policy: IntervalPolicy,
) -> None:
    import json

    tracking = policy.fresh_tracking()
    for _ in range(3):
        tracking, _ = policy.track(tracking, 1e300, -1e300)
    skill = policy.skill(tracking)
    text = json.dumps(skill.model_dump(), allow_nan=False)  # JSON has no infinity
    assert skill.life is not None and skill.life.skill is None and skill.life.count == 3
    assert "Infinity" not in text
