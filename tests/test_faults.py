"""The fault drill of bench/fault_load.py, shortened: kill -9 a replica and restart Redis (or kill
a Redis Cluster master), then switch the served model under load."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.fault_load import Report, run


def _check_switch(report: Report, sessions: int) -> None:
    """Both replicas served the new model within the poll interval plus a second, nothing
    failed with a 5xx after the switch, and every session's first forecast under the new model
    equals a fresh new-model session fed the session's window and the new value."""
    switch = report.switch
    assert switch is not None
    assert all(d is not None and d <= switch.poll_s + 1.0 for d in switch.delays_s)
    assert switch.server_errors == 0, switch.errors_after
    assert switch.switched_sessions == sessions
    assert switch.first_forecasts_equal == switch.switched_sessions


@pytest.mark.slow
def test_no_acknowledged_step_is_lost_or_duplicated_under_faults_and_a_model_switch(
    tutorial_models_dir: Path, other_models_dir: Path, tmp_path: Path
):
    report = run(
        duration=12,
        clients=6,
        sessions=24,
        models=tutorial_models_dir,
        workdir=tmp_path,
        switch_to=other_models_dir,
        poll_s=1.0,
    )
    print("\n".join(report.lines()))
    _check_switch(report, sessions=24)
    # The faults really happened: requests failed and were retried.
    assert sum(report.errors.values()) > 0
    assert report.acknowledged_steps > 500
    assert report.lost_steps == 0
    assert report.duplicated_steps == 0
    assert report.mismatched_sessions == 0


@pytest.mark.slow
def test_a_cluster_master_killed_under_load_loses_no_acknowledged_step(
    tutorial_models_dir: Path, other_models_dir: Path, tmp_path: Path
):
    report = run(
        duration=16,
        clients=6,
        sessions=24,
        models=tutorial_models_dir,
        workdir=tmp_path,
        cluster=True,
        switch_to=other_models_dir,
        poll_s=1.0,
    )
    print("\n".join(report.lines()))
    _check_switch(report, sessions=24)
    assert report.failover_s is not None  # a replica really was promoted
    assert sum(report.errors.values()) > 0
    assert report.acknowledged_steps > 500
    assert report.lost_steps == 0
    assert report.duplicated_steps == 0
    assert report.mismatched_sessions == 0
