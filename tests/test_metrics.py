"""scalp_lib.metrics cross-checked against quantstats on the same daily returns, and the traps it must avoid.

Convention differences (documented here and in nbs/11_metrics.ipynb):
- Periods per year: ours are measured from the data's session calendar; quantstats defaults to 252. We pass our
  figure to quantstats (`periods=ppy`), and show that its default gives a different, wrong-for-this-data number.
- Sharpe: identical definition (mean excess / sample s.d. with ddof 1, times sqrt(periods)).
- Sortino: identical definition (downside deviation sqrt(sum(min(r,0)^2)/N) over ALL N periods, target 0).
  The other common convention (s.d. of the negative returns only) gives a different number: shown below.
- Max drawdown: identical on daily equity (both use the starting capital as the first peak). Our
  PerformanceMetrics drawdown is measured on PER-BAR equity, which is at least as deep: tested.
- VaR: quantstats' `var` is parametric (Gaussian, variance-covariance) and has no historical variant; ours
  defaults to historical (empirical quantile) and equals quantstats with method='gaussian'.
- CVaR: quantstats' `cvar` defaults to the Gaussian expected shortfall; with method='historical' it is the mean
  of returns at or below the empirical quantile. Ours equals each with the matching method.
- Probabilistic Sharpe ratio, skew, excess kurtosis: identical estimators (pandas' bias-corrected moments).
"""
import warnings

import numpy as np
import pandas as pd
import pytest

warnings.filterwarnings('ignore', category=DeprecationWarning)
warnings.filterwarnings('ignore', category=FutureWarning)
import quantstats as qs  # noqa: E402

from scalp_lib.backtest import run_backtest, momentum_proba  # noqa: E402
from scalp_lib.data import demo_bars, session_dates  # noqa: E402
from scalp_lib.metrics import (PerformanceMetrics, compute_metrics, daily_returns, periods_per_year,  # noqa: E402
                               sharpe_ratio, sortino_ratio, value_at_risk, conditional_value_at_risk, max_drawdown,
                               probabilistic_sharpe_ratio, trade_bootstrap, monte_carlo_fan, bootstrap_ci, MetricsError)


@pytest.fixture(scope='module')
def backtest():
    "A real backtest on 60 demo sessions (costs included), and its daily returns as a date-indexed Series."
    bars = demo_bars(n_days=60, seed=5)
    r = run_backtest(bars, proba=momentum_proba(bars), entry_threshold=0.6, slippage_ticks=0.0, commission_per_side_dollars=0.5)
    cap = r.settings['initial_capital_dollars']
    ret = daily_returns(r.equity, cap)
    assert isinstance(ret, pd.Series) and isinstance(ret.index, pd.DatetimeIndex)   # a Series, never a ticker string
    return r, ret, cap


def fat_tailed_returns(seed=0, n=400):
    rng = np.random.default_rng(seed)
    return pd.Series(rng.standard_t(3, n) * 0.01 + 0.0004, index=pd.bdate_range('2022-01-03', periods=n))


@pytest.mark.parametrize('source', ['backtest', 'fat_tailed'])
def test_against_quantstats(source, backtest):
    r, ret, cap = backtest
    if source == 'fat_tailed': ret = fat_tailed_returns()
    ppy, _ = periods_per_year(ret.index.values)
    close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-14)
    close(sharpe_ratio(ret, ppy), qs.stats.sharpe(ret, periods=ppy))
    close(sharpe_ratio(ret, ppy, risk_free_rate_pct=4.0), qs.stats.sharpe(ret, rf=0.04, periods=ppy))
    close(sortino_ratio(ret, ppy), qs.stats.sortino(ret, periods=ppy))
    equity = cap * (1 + ret).cumprod()
    close(max_drawdown(equity, cap)[1] / 100, qs.stats.max_drawdown(ret))
    for level in (0.95, 0.99):
        close(value_at_risk(ret, level, 'gaussian'), qs.stats.var(ret, confidence=level))
        close(conditional_value_at_risk(ret, level, 'gaussian'), qs.stats.cvar(ret, confidence=level))
        close(conditional_value_at_risk(ret, level, 'historical'), qs.stats.cvar(ret, confidence=level, method='historical'))
        close(value_at_risk(ret, level, 'historical'), ret.quantile(1 - level))   # quantstats has no historical VaR
    close(probabilistic_sharpe_ratio(ret), qs.stats.probabilistic_sharpe_ratio(ret))
    close(pd.Series(ret).skew(), qs.stats.skew(ret))
    # documented differences, shown as numbers
    assert abs(qs.stats.sharpe(ret) - sharpe_ratio(ret, ppy) * np.sqrt(252 / ppy)) < 1e-9     # quantstats' 252 default
    neg = ret[ret < 0]
    other_sortino = ret.mean() / neg.std() * np.sqrt(ppy)                                       # "s.d. of losses" convention
    assert abs(other_sortino - sortino_ratio(ret, ppy)) > 1e-3
    if source == 'fat_tailed':   # fat tails: the historical 99% VaR is deeper than the Gaussian one
        assert value_at_risk(ret, 0.99) < value_at_risk(ret, 0.99, 'gaussian')


def test_performance_metrics_use_the_same_definitions(backtest):
    "The PerformanceMetrics fields are the functions above applied to the backtest's own daily returns."
    r, ret, cap = backtest
    m = r.metrics
    np.testing.assert_allclose(m.sharpe, qs.stats.sharpe(ret, periods=m.periods_per_year), rtol=1e-10)
    np.testing.assert_allclose(m.sortino, qs.stats.sortino(ret, periods=m.periods_per_year), rtol=1e-10)
    np.testing.assert_allclose(m.cvar_95 / 100, qs.stats.cvar(ret, method='historical'), rtol=1e-10)
    np.testing.assert_allclose(m.kurtosis, qs.stats.kurtosis(ret), rtol=1e-10)
    daily_dd = qs.stats.max_drawdown(ret) * 100
    assert m.max_drawdown_pct <= daily_dd + 1e-9            # per-bar drawdown is at least as deep as the daily one
    np.testing.assert_allclose(m.net_profit, r.equity.iloc[-1] - cap, atol=1e-6)


def test_periods_per_year_is_the_session_calendar_never_252_for_minutes(backtest):
    r, ret, cap = backtest
    m = r.metrics
    assert m.n_bars == 60 * 1380 and m.n_sessions == 60
    np.testing.assert_allclose(m.periods_per_year, 5 * 365.25 / 7)        # demo data: weekdays, no holidays
    assert m.periods_per_year != 252 and m.periods_per_year < 370          # sessions, not bars
    assert '60 sessions' in m.periods_per_year_note and 'sessions per year' in m.periods_per_year_note


def test_trade_statistics_come_from_the_ledger(backtest):
    "Win rate and friends are counted over trades, not days (quantstats #493)."
    r, ret, cap = backtest
    t, m = r.trades, r.metrics
    assert m.n_trades == len(t) and m.n_trades != m.n_sessions
    np.testing.assert_allclose(m.win_rate_pct, 100 * (t.net_dollars > 0).mean())
    np.testing.assert_allclose(m.profit_factor, t.net_dollars[t.net_dollars > 0].sum() / -t.net_dollars[t.net_dollars < 0].sum())
    np.testing.assert_allclose(m.expectancy_dollars, t.net_dollars.mean())
    assert m.win_rate_pct != pytest.approx(100 * (ret > 0).mean())          # the daily "win rate" is another number


def test_bootstrap_resamples_with_replacement_permutation_cannot(backtest):
    "Final wealth varies under the trade bootstrap; under a permutation (quantstats' Monte Carlo) it cannot."
    r, ret, cap = backtest
    net = r.trades.net_dollars.to_numpy()
    perm_final = [np.random.default_rng(i).permutation(net).sum() for i in range(200)]
    np.testing.assert_allclose(np.std(perm_final), 0.0, atol=1e-6)
    tb = trade_bootstrap(r.trades, r.equity, n_samples=400, seed=0, initial_capital_dollars=cap)
    assert tb.net_profit.std() > 0.05 * abs(net).sum() / np.sqrt(len(net))
    assert (np.abs(tb.net_profit - net.sum()) > 1e-6).mean() > 0.95   # almost every resample ends elsewhere
    mc = qs.stats.montecarlo(ret, sims=50, seed=0)                          # quantstats shuffles: terminal value fixed
    terminal = mc.data.iloc[-1].to_numpy()
    assert np.ptp(terminal) < 1e-9 * max(1.0, abs(terminal).max())
    fan = monte_carlo_fan(r.trades, n_paths=400, seed=0, initial_capital_dollars=cap)
    assert fan.q95.iloc[-1] - fan.q5.iloc[-1] > 0
    np.testing.assert_allclose(fan.actual.iloc[-1] - cap, net.sum(), atol=1e-6)


def test_bootstrap_ci_table(backtest):
    r, ret, cap = backtest
    ci = bootstrap_ci(r.trades, r.equity, n_samples=300, seed=1, initial_capital_dollars=cap)
    assert set(ci.index.get_level_values(0)) == {'trade bootstrap', 'block bootstrap'}
    assert set(ci.index.get_level_values(1)) == {'net_profit', 'sharpe', 'max_drawdown_dollars'}
    assert (ci.ci_low <= ci.ci_high).all() and (ci.resamples > 250).all()
    np.testing.assert_allclose(ci.loc[('trade bootstrap', 'net_profit'), 'estimate'], r.metrics.net_profit, atol=1e-6)
    np.testing.assert_allclose(ci.loc[('block bootstrap', 'net_profit'), 'estimate'], r.metrics.net_profit, atol=1e-6)
    np.testing.assert_allclose(ci.loc[('block bootstrap', 'sharpe'), 'estimate'], r.metrics.sharpe, rtol=1e-10)


def test_stable_names_and_errors():
    names = ['net_profit', 'gross_profit', 'gross_loss', 'win_rate_pct', 'profit_factor', 'expectancy_dollars',
             'avg_win_dollars', 'avg_loss_dollars', 'payoff_ratio', 'max_drawdown_dollars', 'max_drawdown_pct',
             'max_drawdown_duration', 'sharpe', 'sortino', 'calmar', 'var_95', 'cvar_95', 'var_99', 'cvar_99', 'skew',
             'kurtosis', 'n_trades', 'avg_bars_held', 'exposure_pct', 'max_consecutive_losses', 'commission_paid']
    fields = PerformanceMetrics.__dataclass_fields__
    assert set(names) <= set(fields), set(names) - set(fields)
    assert all(PerformanceMetrics.units()[k] for k in fields)
    eq = pd.Series([1.0, 2.0], index=pd.date_range('2024-01-08 09:00', periods=2, freq='min', tz='America/Chicago'))
    with pytest.raises(MetricsError, match='net_dollars'):
        compute_metrics(pd.DataFrame({'exit_time': eq.index}), eq, initial_capital_dollars=1.0)


def test_real_es_calendar(shared_data):
    "Periods per year from the real ES file's own calendar (Labor Day and all)."
    from scalp_lib.data import load_bars
    bars = load_bars(shared_data / 'es_1min_2025-09_11.csv.gz', ts_offset='5h', tz='America/New_York', instrument='ES')
    ppy, note = periods_per_year(session_dates(bars.index))
    assert 240 < ppy < 262, note


# ---------------------------------------------------------------- minimum sample
def test_three_sessions_withhold_annualised_figures_everywhere():
    "3 sessions: Sharpe, Sortino, Calmar, CAGR, PSR, DSR and the Sharpe intervals are withheld, and every headline says so."
    from scalp_lib.metrics import ANNUALISED_FIELDS, metrics_table
    bars = demo_bars(n_days=3, seed=5)
    r = run_backtest(bars, proba=momentum_proba(bars), entry_threshold=0.6)
    m = r.metrics
    assert (m.n_sessions, m.min_sessions, m.sample_ok) == (3, 20, False)
    assert all(np.isnan(getattr(m, k)) for k in ANNUALISED_FIELDS)
    note = 'too few sessions (3 < 20) for annualised figures'
    assert m.sample_note.startswith(note)
    assert 'Sharpe withheld: ' + note in r.summary() and 'Sharpe nan' not in r.summary()
    table = metrics_table({'strategy': m})
    assert (table.loc[list(ANNUALISED_FIELDS), 'strategy'] == 'withheld (3 < 20 sessions)').all()
    ci = bootstrap_ci(r.trades, r.equity, n_samples=200, seed=0)
    assert ci.xs('sharpe', level='metric')[['estimate', 'ci_low', 'ci_high']].isna().all().all()
    assert ci.attrs['withheld'].startswith(note)
    # the guard is a setting, not a loss of information: switched off, the meaningless number is there
    raw = run_backtest(bars, proba=momentum_proba(bars), entry_threshold=0.6, min_sessions=0)
    assert np.isfinite(raw.metrics.sharpe) and raw.metrics.sample_ok
    assert raw.metrics.net_profit == m.net_profit and raw.trades.equals(r.trades)


def test_a_long_enough_backtest_shows_its_figures(backtest):
    from scalp_lib.metrics import ANNUALISED_FIELDS, metrics_table
    r, _, _ = backtest
    m = r.metrics
    assert m.n_sessions == 60 and m.sample_ok and m.trades_ok and m.sample_note == ''
    assert all(np.isfinite(getattr(m, k)) for k in ANNUALISED_FIELDS)
    assert f"Sharpe {m.sharpe:.2f}" in r.summary() and 'withheld' not in r.summary()
    assert not metrics_table({'s': m})['s'].str.contains('withheld|trades\\)').any()


def test_few_trades_mark_the_trade_statistics():
    from scalp_lib.metrics import metrics_table
    bars = demo_bars(n_days=25, seed=5)
    r = run_backtest(bars, proba=momentum_proba(bars), entry_threshold=0.6, min_trades=10_000)
    m = r.metrics
    assert m.sample_ok and not m.trades_ok and f"too few trades ({m.n_trades} < 10000)" in m.sample_note
    assert np.isfinite(m.win_rate_pct)                                   # kept: they describe the trades made
    assert metrics_table({'s': m}).loc['win_rate_pct', 's'].endswith(f"({m.n_trades} < 10000 trades)")
    assert f"of only {m.n_trades} trades (< 10000)" in r.summary()
    with pytest.raises(MetricsError, match='min_sessions must be a whole number'):
        run_backtest(bars, proba=momentum_proba(bars), min_sessions=-1)
