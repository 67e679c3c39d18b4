"""What the job prints: the search table, the scores per part, the guard line."""

from __future__ import annotations

from collections.abc import Sequence

from forecast_core.artifact import ErrorMetrics, Metrics
from training.search import CandidateResult


def search_table(results: Sequence[CandidateResult], chosen: CandidateResult) -> list[str]:
    """One line per candidate with its selection-window score; the chosen one marked."""
    lines = ["search (selection-window one-step RMSE, lower is better):"]
    for result in results:
        shrink = f" shrink {result.transform.shrink:.3f}" if result.transform.is_difference else ""
        mark = "  <- chosen" if result is chosen else ""
        lines.append(
            f"  {result.label:<22} epochs {result.best_epoch:>4} of {result.epochs_run:>4} run"
            f"  {result.seconds:5.1f} s  RMSE {result.selection_rmse:.4g}{shrink}{mark}"
        )
    return lines


def _skill(scores: ErrorMetrics) -> str:
    return "n/a" if scores.skill is None else f"{scores.skill:+.3f}"


def metrics_table(metrics: Metrics) -> list[str]:
    """RMSE and MAE per part next to persistence, and the skill 1 - RMSE / persistence RMSE."""
    lines = []
    for part, scores in (
        ("train", metrics.train),
        ("selection", metrics.selection),
        ("validation", metrics.validation),
    ):
        if scores is not None:
            lines.append(
                f"{part:>10}: RMSE {scores.rmse:.4g} (persistence {scores.persistence_rmse:.4g}), "
                f"skill {_skill(scores)}, MAE {scores.mae:.4g} "
                f"(persistence {scores.persistence_mae:.4g}), {scores.count} forecasts"
            )
    return lines


def guard_line(beats_persistence: bool) -> str | None:
    """The one line a user must not miss, or None when the model beats next = last."""
    if beats_persistence:
        return None
    return (
        "WARNING: the chosen model does not beat the persistence forecast (next = last) on the "
        "selection window; serve it only if that is acceptable (recorded in the manifest)"
    )
