"""The numpy KPSS test gives what statsmodels' gives."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from tests.conftest import NILE_CSV
from training.data import load_csv_series
from training.stationarity import kpss_level

_rng = np.random.default_rng(0)
SERIES = {
    "white-noise": _rng.normal(size=200),
    "random-walk": np.cumsum(_rng.normal(size=300)),
    "tutorial": np.arange(10) / 10.0,
    "noisy-sine": np.sin(np.arange(100) / 3.0) + _rng.normal(size=100) * 0.1,
    "nile": load_csv_series(NILE_CSV, None).values,
}


@pytest.mark.parametrize("name", list(SERIES))
def test_matches_statsmodels(name: str) -> None:
    stattools = pytest.importorskip("statsmodels.tsa.stattools")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # p-value at the edge of KPSS's table
        statistic, p_value, lags, _ = stattools.kpss(SERIES[name], regression="c", nlags="auto")
    ours = kpss_level(SERIES[name])
    assert ours.statistic == pytest.approx(statistic, rel=1e-12)
    assert ours.p_value == pytest.approx(p_value, rel=1e-12)
    assert ours.lags == lags
