"""The fault drill of bench/fault_load.py, shortened: kill -9 a replica and restart Redis."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.fault_load import run


@pytest.mark.slow
def test_no_acknowledged_step_is_lost_or_duplicated_under_faults(
    tutorial_models_dir: Path, tmp_path: Path
):
    report = run(duration=12, clients=6, sessions=24, models=tutorial_models_dir, workdir=tmp_path)
    print("\n".join(report.lines()))
    # The faults really happened: requests failed and were retried.
    assert sum(report.errors.values()) > 0
    assert report.acknowledged_steps > 500
    assert min(report.by_kind.values()) > 0  # /predict, /predict/many and /stream all served
    assert report.lost_steps == 0
    assert report.duplicated_steps == 0
    assert report.mismatched_sessions == 0


@pytest.mark.slow
def test_a_cluster_master_killed_under_load_loses_no_acknowledged_step(
    tutorial_models_dir: Path, tmp_path: Path
):
    report = run(
        duration=16,
        clients=6,
        sessions=24,
        models=tutorial_models_dir,
        workdir=tmp_path,
        cluster=True,
    )
    print("\n".join(report.lines()))
    assert report.failover_s is not None  # a replica really was promoted
    assert sum(report.errors.values()) > 0
    assert report.acknowledged_steps > 500
    assert min(report.by_kind.values()) > 0  # /predict, /predict/many and /stream all served
    assert report.lost_steps == 0
    assert report.duplicated_steps == 0
    assert report.mismatched_sessions == 0
