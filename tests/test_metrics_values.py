"""Metrics checked against numbers worked out here, not against the library's own helpers.

- Max drawdown of a path that starts with a loss: the initial capital is the first peak.
- The deflated Sharpe ratio as `run_backtest` and `compute_metrics` report it equals Bailey & Lopez de Prado's formula
  written out below with the trial count (one trial is the PSR: a reported DSR equal to the PSR is a lost trial count).
"""
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from scalp_lib.backtest import momentum_proba, run_backtest
from scalp_lib.data import demo_bars
from scalp_lib.metrics import compute_metrics, daily_returns, deflated_sharpe_ratio, max_drawdown, probabilistic_sharpe_ratio

CAP = 100_000.0


def _no_trades():
    return pd.DataFrame({'exit_time': pd.DatetimeIndex([], tz='America/Chicago'), 'net_dollars': np.zeros(0),
                         'commission_dollars': np.zeros(0), 'bars_held': np.zeros(0, np.int64)})


# ---------------------------------------------------------------- drawdown
@pytest.mark.parametrize('path, dollars, pct', [
    ([99_000.0, 99_500.0, 101_000.0], -1_000.0, -1.0),          # first bar below the capital: the capital is the peak
    ([95_000.0, 90_000.0, 92_000.0], -10_000.0, -10.0),         # losing from the first bar on
    ([101_000.0, 99_990.0, 103_000.0], -1_010.0, -1_010 / 101_000 * 100),   # a later peak above the capital
    ([100_000.0, 100_000.0], 0.0, 0.0),
])
def test_max_drawdown_counts_the_initial_capital_as_the_first_peak(path, dollars, pct):
    got = max_drawdown(np.array(path), CAP)
    np.testing.assert_allclose(got, (dollars, pct), rtol=1e-12, atol=1e-9)
    # the same through a pandas Series (the compiled pass is used for any finite path)
    np.testing.assert_allclose(max_drawdown(pd.Series(path), CAP), (dollars, pct), rtol=1e-12, atol=1e-9)


def test_compute_metrics_drawdown_of_an_equity_that_opens_with_a_loss():
    "Per-bar equity over three sessions: down 1,200 from the capital before any new high; the report says -1,200 and -1.2 %."
    bars = demo_bars(n_days=3, seed=1)
    n = len(bars)
    eq = np.full(n, CAP + 3_000.0)
    eq[:n // 3] = np.linspace(CAP - 200.0, CAP - 1_200.0, n // 3)     # session 1: only losses
    eq[n // 3:2 * n // 3] = CAP - 500.0                                  # session 2: still under the capital
    equity = pd.Series(eq, index=bars.index)
    m = compute_metrics(_no_trades(), equity, initial_capital_dollars=CAP, min_sessions=1, min_trades=1)
    assert m.max_drawdown_dollars == pytest.approx(-1_200.0, abs=1e-6)
    assert m.max_drawdown_pct == pytest.approx(-1.2, abs=1e-9)
    assert m.max_drawdown_duration == 2                                   # sessions 1 and 2 close under the capital
    assert m.total_return_pct == pytest.approx(3.0)


# ---------------------------------------------------------------- deflated Sharpe ratio, written out
EULER_GAMMA = 0.5772156649015329


def dsr_formula(r, n_trials, trials_sharpe_std=None):
    "Bailey & Lopez de Prado (2014), per-period Sharpe; skew and kurtosis as pandas estimates them."
    r = np.asarray(r, dtype=np.float64)
    n = len(r)
    sr = r.mean() / r.std(ddof=1)
    g3, g4 = pd.Series(r).skew(), pd.Series(r).kurt() + 3
    se = math.sqrt((1 - g3 * sr + (g4 - 1) / 4 * sr ** 2) / (n - 1))
    sd = se if trials_sharpe_std is None else trials_sharpe_std
    if n_trials == 1: sr0 = 0.0
    else:
        sr0 = sd * ((1 - EULER_GAMMA) * sps.norm.ppf(1 - 1 / n_trials) + EULER_GAMMA * sps.norm.ppf(1 - 1 / (n_trials * math.e)))
    return sps.norm.cdf((sr - sr0) / se)


@pytest.fixture(scope='module')
def bt_bars():
    return demo_bars(n_days=25, seed=5)


@pytest.mark.parametrize('n_trials, trials_sd', [(1, None), (7, None), (40, 0.05), (1000, 0.2)])
def test_dsr_reported_by_run_backtest_is_the_formula_with_the_trial_count(bt_bars, n_trials, trials_sd):
    r = run_backtest(bt_bars, proba=momentum_proba(bt_bars), entry_threshold=0.6, n_trials=n_trials,
                     trials_sharpe_std=trials_sd, min_sessions=20, min_trades=1)
    m = r.metrics
    assert m.sample_ok and m.n_trials == n_trials and m.n_sessions == 25
    ret = daily_returns(r.equity, m.initial_capital_dollars).to_numpy()
    expected = dsr_formula(ret, n_trials, trials_sd)
    assert m.deflated_sharpe == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert m.probabilistic_sharpe == pytest.approx(dsr_formula(ret, 1), rel=1e-9, abs=1e-12)
    if n_trials > 1: assert m.deflated_sharpe < m.probabilistic_sharpe - 1e-6   # more trials, a higher bar to clear
    # compute_metrics on the same ledger and equity reports the same figure
    m2 = compute_metrics(r.trades, r.equity, initial_capital_dollars=m.initial_capital_dollars, n_trials=n_trials,
                         trials_sharpe_std=trials_sd, min_sessions=20, min_trades=1)
    assert m2.deflated_sharpe == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_dsr_functions_on_fat_tailed_returns():
    r = np.random.default_rng(3).standard_t(4, 300) * 0.01 + 0.001
    for n_trials in (1, 2, 10, 250):
        assert deflated_sharpe_ratio(r, n_trials) == pytest.approx(dsr_formula(r, n_trials), rel=1e-10)
        assert deflated_sharpe_ratio(r, n_trials, 0.03) == pytest.approx(dsr_formula(r, n_trials, 0.03), rel=1e-10)
    assert probabilistic_sharpe_ratio(r) == pytest.approx(dsr_formula(r, 1), rel=1e-10)
