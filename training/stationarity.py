"""The KPSS test of level stationarity, in numpy (statsmodels costs seconds to import).

Kwiatkowski, Phillips, Schmidt and Shin (1992), the level-stationary case: residuals
e_t = x_t - mean(x), partial sums S_t = e_1 + ... + e_t, statistic
eta = sum(S_t^2) / (T^2 * s^2(l)), where s^2(l) is the Newey-West long-run variance with
Bartlett weights 1 - i / (l + 1) (their eq. 10) and the lag l is chosen by the method of Hobijn,
Franses and Ooms (1998). The p-value is interpolated in KPSS's table of critical values (0.347,
0.463, 0.574, 0.739 for 10 %, 5 %, 2.5 %, 1 %) and clipped to [0.01, 0.10]. This is what
``statsmodels.tsa.stattools.kpss(x, regression="c", nlags="auto")`` computes; a test checks it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from forecast_core.arrays import FloatArray

CRITICAL_VALUES = (0.347, 0.463, 0.574, 0.739)
P_VALUES = (0.10, 0.05, 0.025, 0.01)


@dataclass(frozen=True)
class KpssResult:
    statistic: float
    p_value: float
    lags: int


def _autocovariance_sum(resids: FloatArray, lag: int) -> float:
    return float(np.dot(resids[lag:], resids[: len(resids) - lag]))


def _auto_lags(resids: FloatArray) -> int:
    # Hobijn et al. (1998): a bandwidth from the first covariances, Bartlett kernel.
    nobs = len(resids)
    s0 = float(np.sum(resids**2)) / nobs
    s1 = 0.0
    for i in range(1, int(nobs ** (2.0 / 9.0)) + 1):
        product = _autocovariance_sum(resids, i) / (nobs / 2.0)
        s0 += product
        s1 += i * product
    gamma = 1.1447 * ((s1 / s0) ** 2) ** (1.0 / 3.0)
    return min(int(gamma * nobs ** (1.0 / 3.0)), nobs - 1)


def kpss_level(values: FloatArray) -> KpssResult:
    """KPSS statistic and p-value for the null hypothesis that ``values`` are level-stationary."""
    x = np.asarray(values, dtype=np.float64)
    nobs = len(x)
    resids = x - x.mean()
    lags = _auto_lags(resids)
    long_run = float(np.sum(resids**2))
    for i in range(1, lags + 1):
        long_run += 2.0 * _autocovariance_sum(resids, i) * (1.0 - i / (lags + 1.0))
    long_run /= nobs
    eta = float(np.sum(np.cumsum(resids) ** 2)) / nobs**2
    statistic = eta / long_run
    p_value = float(np.interp(statistic, CRITICAL_VALUES, P_VALUES))
    return KpssResult(statistic=statistic, p_value=p_value, lags=lags)
