"""scalp_lib.tearsheet: each figure on a hand-computable series, the breakeven slippage re-run, and every metric quantstats
also computes cross-checked against quantstats on the same daily returns (a benchmark Series, never a ticker; quantstats'
periods set to ours wherever it has that parameter).

Exact matches (rtol 1e-10): cumulative return (compsum), rolling Sharpe and volatility (ours in %), rolling beta
(rolling_greeks), alpha and beta (greeks, ours in %), best and worst day, winning days (win_rate: positive over non-zero
days), tail ratio, Omega (required_return 0), monthly and yearly compounded returns on months with data, drawdown
periods' start, valley and depth on daily equity (drawdown_details).
Documented differences, tested as the stated relation:
- information ratio: quantstats' is not annualised; ours = quantstats' x sqrt(periods per year), against the
  volatility-matched benchmark;
- ulcer index: quantstats divides by N - 1 and stays in fractions; ours (Martin) = 100 x quantstats' x sqrt((N-1)/N);
- recovery factor: quantstats divides the absolute SUM of daily returns by the daily-close drawdown (always >= 0);
  ours is net profit / |max drawdown| in dollars on per-bar equity, signed;
- monthly returns: quantstats writes 0 for a month without data, ours NaN ("no data");
- drawdown periods: quantstats' end is the last day under water, ours the recovery (the next session).
"""
import math
import warnings

import numpy as np
import pandas as pd
import pytest

warnings.filterwarnings('ignore', category=DeprecationWarning)
warnings.filterwarnings('ignore', category=FutureWarning)
import quantstats as qs  # noqa: E402

from scalp_lib.backtest import (run_backtest, buy_and_hold, momentum_proba, held_signal, threshold_from_quantile,  # noqa: E402
                                signal_from_proba, BacktestError)
from scalp_lib.data import demo_bars  # noqa: E402
from scalp_lib.metrics import periods_per_year  # noqa: E402
from scalp_lib import tearsheet as ts  # noqa: E402

CLOSE = dict(rtol=1e-10, atol=1e-14)
EXITS = dict(take_profit_ticks=0, stop_loss_ticks=0, max_hold_bars=0)


@pytest.fixture(scope='module')
def run():
    "Held momentum calls on 40 demo sessions (threshold from the first 10), buy and hold on the same bars, their daily series."
    bars_all = demo_bars(n_days=40, seed=7)
    p_all = momentum_proba(bars_all)
    cut = bars_all.index[10 * 1380]
    thr = threshold_from_quantile(p_all[bars_all.index < cut], 0.95)
    bars, proba = bars_all[bars_all.index >= cut], p_all[bars_all.index >= cut]
    res = run_backtest(bars, held_signal(proba, thr, 10), min_trades=0, **EXITS)
    bench = buy_and_hold(bars)
    day, day_b = ts.daily_series(res), ts.daily_series(bench)
    ppy, _ = periods_per_year(day.index.values)
    assert isinstance(day_b['return'], pd.Series) and day['return'].index.equals(day_b['return'].index)
    return dict(bars=bars, proba=proba, thr=thr, res=res, bench=bench, day=day, day_b=day_b, ppy=ppy)


# ---------------------------------------------------------------- quantstats cross-checks

def test_cumulative_and_rolling_match_quantstats(run):
    r, b, ppy = run['day']['return'], run['day_b']['return'], run['ppy']
    np.testing.assert_allclose(ts.cumulative_returns(r), qs.stats.compsum(r), **CLOSE)
    w = 10
    roll = ts.rolling_stats(r, b, w, ppy)
    np.testing.assert_allclose(roll['sharpe'].iloc[w:], qs.stats.rolling_sharpe(r, rolling_period=w, periods_per_year=ppy).iloc[w:], **CLOSE)
    np.testing.assert_allclose(roll['volatility_pct'].iloc[w:] / 100, qs.stats.rolling_volatility(r, rolling_period=w, periods_per_year=ppy).iloc[w:], **CLOSE)
    np.testing.assert_allclose(roll['beta'].iloc[w:], qs.stats.rolling_greeks(r, b, periods=w)['beta'].iloc[w:], rtol=1e-9)
    np.testing.assert_allclose(roll['correlation'].iloc[w:], r.rolling(w).corr(b).iloc[w:], **CLOSE)
    assert roll.iloc[:w - 1].isna().all().all()


def test_alpha_beta_information_ratio_against_quantstats(run):
    r, b, ppy = run['day']['return'], run['day_b']['return'], run['ppy']
    bs = ts.benchmark_stats(r, b, ppy)
    g = qs.stats.greeks(r, b, periods=ppy)
    np.testing.assert_allclose(bs['beta'], g['beta'], **CLOSE)
    np.testing.assert_allclose(bs['alpha_pct'] / 100, g['alpha'], **CLOSE)
    np.testing.assert_allclose(bs['correlation'], np.corrcoef(r, b)[0, 1], **CLOSE)
    vm = ts.vol_matched(b, r)
    np.testing.assert_allclose(bs['information_ratio'], qs.stats.information_ratio(r, vm) * math.sqrt(ppy), **CLOSE)   # qs: not annualised
    np.testing.assert_allclose(vm.std(), r.std(), **CLOSE)                   # the matched benchmark takes the strategy's risk
    np.testing.assert_allclose(qs.stats.greeks(r, vm, periods=ppy)['alpha'], g['alpha'], **CLOSE)   # alpha does not depend on the scale


def test_daily_distribution_against_quantstats(run):
    r, pnl = run['day']['return'], run['day']['pnl_dollars']
    ds = ts.daily_return_stats(r, pnl)
    np.testing.assert_allclose(ds['best_day_pct'] / 100, qs.stats.best(r), **CLOSE)
    np.testing.assert_allclose(ds['worst_day_pct'] / 100, qs.stats.worst(r), **CLOSE)
    np.testing.assert_allclose(ds['winning_days_pct'] / 100, qs.stats.win_rate(r), **CLOSE)
    np.testing.assert_allclose(ds['tail_ratio'], qs.stats.tail_ratio(r), **CLOSE)
    np.testing.assert_allclose(ds['omega'], qs.stats.omega(r, required_return=0.0, periods=run['ppy']), **CLOSE)
    n = len(r)
    np.testing.assert_allclose(ds['ulcer_index_pct'], 100 * qs.stats.ulcer_index(r) * math.sqrt((n - 1) / n), **CLOSE)
    assert pnl.loc[ds['best_day']] == ds['best_day_dollars'] and pnl.loc[ds['worst_day']] == ds['worst_day_dollars']


def test_recovery_factor_is_a_documented_difference(run):
    r, m = run['day']['return'], run['res'].metrics
    ours = ts.recovery_factor(m.net_profit, m.max_drawdown_dollars)
    theirs = qs.stats.recovery_factor(r)
    np.testing.assert_allclose(theirs, abs(r.sum()) / abs(qs.stats.max_drawdown(r)), **CLOSE)   # their definition, stated
    np.testing.assert_allclose(ours, m.net_profit / abs(m.max_drawdown_dollars), **CLOSE)
    assert np.sign(ours) == np.sign(m.net_profit) and theirs >= 0


def test_monthly_returns_against_quantstats():
    "Two partial years: months with data match quantstats exactly, months without data are NaN here and 0 there."
    idx = pd.bdate_range('2023-11-06', '2024-02-20')
    r = pd.Series(np.random.default_rng(3).normal(0.0005, 0.01, len(idx)), index=idx)
    ours = ts.monthly_returns(r)
    theirs = qs.stats.monthly_returns(r, eoy=True, compounded=True)
    months = list(ts.MONTHS)
    for y in ours.index:
        for m in months:
            v = ours.loc[y, m]
            if np.isnan(v): assert theirs.loc[str(y), m.upper()] == 0
            else: np.testing.assert_allclose(v / 100, theirs.loc[str(y), m.upper()], **CLOSE)
    np.testing.assert_allclose(ours['year'].to_numpy() / 100, theirs['EOY'].to_numpy(), **CLOSE)
    assert ours.loc[2023, 'Jan':'Oct'].isna().all() and ours.loc[2024, 'Mar':'Dec'].isna().all()
    ar = ts.annual_returns(r)
    np.testing.assert_allclose(ar['return_pct'].to_numpy(), ours['year'].to_numpy(), **CLOSE)
    assert ar['full_year'].tolist() == [False, False] and ar['sessions'].sum() == len(r)


def test_drawdown_periods_on_daily_equity_match_quantstats(run):
    r, cap = run['day']['return'], run['res'].settings['initial_capital_dollars']
    eq = run['day']['equity_dollars']
    ours = ts.drawdown_periods(eq, cap, top=0).sort_values('start').reset_index(drop=True)
    theirs = qs.stats.drawdown_details(qs.stats.to_drawdown_series(r)).reset_index(drop=True)
    assert len(ours) == len(theirs) > 1
    assert ours['start'].dt.strftime('%Y-%m-%d').tolist() == theirs['start'].tolist()
    assert ours['valley'].dt.strftime('%Y-%m-%d').tolist() == theirs['valley'].tolist()
    np.testing.assert_allclose(ours['depth_pct'], theirs['max drawdown'], rtol=1e-9)
    days = list(eq.index)
    for (_, o), end in zip(ours.iterrows(), theirs['end']):      # their end: the last day under water; ours: the next session
        if o['recovered']: assert days[days.index(o['recovery']) - 1].strftime('%Y-%m-%d') == end
        else: assert end == days[-1].strftime('%Y-%m-%d')


# ---------------------------------------------------------------- values on hand-computable series

def test_drawdown_periods_on_a_path_that_starts_with_a_loss():
    idx = pd.DatetimeIndex(['2024-01-07 17:00', '2024-01-08 10:00', '2024-01-08 17:00', '2024-01-09 10:00', '2024-01-09 17:00',
                            '2024-01-10 10:00', '2024-01-10 17:00'], tz='America/Chicago')   # sessions 8, 8, 9, 9, 10, 10, 11 Jan
    eq = pd.Series([99_500., 99_000., 100_200., 100_100., 99_800., 100_300., 100_000.], index=idx)
    dp = ts.drawdown_periods(eq, 100_000., top=0)
    assert dp['depth_dollars'].tolist() == [-1_000., -400., -300.]
    first = dp.iloc[0]                       # the loss at the very first bar: the peak is the initial capital
    assert first['peak'] is pd.NaT and first['start'] == idx[0] and first['valley'] == idx[1] and first['recovery'] == idx[2]
    assert first['sessions'] == 2 and first['recovered']                   # sessions 8 and 9 Jan (recovered on 9 Jan)
    np.testing.assert_allclose(first['depth_pct'], -1.0)
    second = dp.iloc[1]
    assert (second['peak'], second['start'], second['valley'], second['recovery']) == (idx[2], idx[3], idx[4], idx[5])
    assert second['sessions'] == 2                                          # 9 and 10 Jan
    last = dp.iloc[2]                                                       # ends under water: not recovered
    assert last['recovery'] is pd.NaT and not last['recovered'] and last['sessions'] == 1
    np.testing.assert_allclose(last['depth_pct'], 100 * (100_000 / 100_300 - 1))
    assert len(ts.drawdown_periods(eq, 100_000., top=2)) == 2
    uw = ts.underwater(eq, 100_000.)
    assert uw['drawdown_dollars'].tolist() == [-500., -1000., 0., -100., -400., 0., -300.]


def test_distribution_and_calendar_by_hand():
    idx = pd.bdate_range('2024-01-29', periods=6)                       # 29, 30, 31 Jan, 1, 2, 5 Feb
    r = pd.Series([0.01, -0.02, 0.0, 0.03, -0.01, 0.02], index=idx)
    ds = ts.daily_return_stats(r, r * 100_000)
    assert ds['best_day'] == idx[3] and ds['worst_day'] == idx[1]
    assert (ds['winning_days_pct'], ds['sessions_with_pnl'], ds['sessions_without_pnl']) == (60.0, 5, 1)
    np.testing.assert_allclose(ds['omega'], 0.06 / 0.03)
    np.testing.assert_allclose(ds['tail_ratio'], abs(np.quantile(r, 0.95) / np.quantile(r, 0.05)))
    eq = np.cumprod(1 + r.to_numpy())
    dd = 100 * (eq / np.maximum.accumulate(np.maximum(eq, 1.0)) - 1)
    np.testing.assert_allclose(ds['ulcer_index_pct'], np.sqrt(np.mean(dd ** 2)))
    mr = ts.monthly_returns(r)
    np.testing.assert_allclose(mr.loc[2024, 'Jan'], 100 * (1.01 * 0.98 * 1.0 - 1))
    np.testing.assert_allclose(mr.loc[2024, 'Feb'], 100 * (1.03 * 0.99 * 1.02 - 1))
    np.testing.assert_allclose(mr.loc[2024, 'year'], 100 * (np.prod(1 + r.to_numpy()) - 1))
    assert mr.loc[2024].drop(['Jan', 'Feb', 'year']).isna().all()
    assert mr.attrs['sessions'].loc[2024, 1] == 3 and mr.attrs['sessions'].loc[2024, 2] == 3
    q = ts.return_quantiles(r, r * 100_000)
    np.testing.assert_allclose(q.loc['50%', 'daily return (%)'], 100 * np.median(r))


def _ledger(**cols):
    n = len(cols['side'])
    base = dict(contracts=[1] * n, entry_price=[5000.0] * n, exit_price=[5001.0] * n, commission_dollars=[4.5] * n,
                slippage_dollars=[25.0] * n, bars_held=[10] * n, exit_reason=['max_hold'] * n)
    base.update(cols)
    t = pd.DataFrame(base)
    t['cost_dollars'] = t['commission_dollars'] + t['slippage_dollars']
    t['net_dollars'] = t['gross_dollars'] - t['cost_dollars']
    t['exit_reason'] = pd.Categorical(t['exit_reason'])
    return t


def test_sides_turnover_and_costs_by_hand():
    t = _ledger(side=[1, 1, -1], contracts=[1, 2, 1], gross_dollars=[100.0, -50.0, 25.0], commission_dollars=[4.5, 9.0, 4.5],
                slippage_dollars=[25.0, 50.0, 25.0], bars_held=[5, 10, 30], exit_reason=['take_profit', 'stop_loss', 'stop_loss'])
    sides = ts.side_table(t, 12.5)
    assert sides.loc['long', 'trades'] == 2 and sides.loc['short', 'trades'] == 1
    np.testing.assert_allclose(sides.loc['long', 'net P&L (US$)'], 100 - 29.5 - 50 - 59)
    np.testing.assert_allclose(sides.loc['long', 'mean gross ticks per contract'], 50 / (3 * 12.5))
    np.testing.assert_allclose(sides.loc['all', 'win rate, net (%)'], 100 / 3)
    to = ts.turnover_stats(t, n_sessions=2, initial_capital_dollars=100_000, point_value_dollars=50)
    assert to['trades_per_session'] == 1.5 and to['contracts_traded_per_session'] == 4.0
    np.testing.assert_allclose(to['notional_traded_per_session_dollars'], 10_001 * 50 * 4 / 2)
    np.testing.assert_allclose(to['turnover_per_session_x_capital'], 10_001 * 50 * 4 / 2 / 100_000)
    assert (to['median_bars_held'], to['mean_bars_held']) == (10.0, 15.0)
    ct = ts.cost_table(t)
    assert ct.loc['gross P&L (before costs)', 'US$'] == 75.0 and ct.loc['total costs', 'US$'] == -118.0
    np.testing.assert_allclose(ct.loc['total costs', '% of |gross P&L|'], -118 / 75 * 100)
    np.testing.assert_allclose(ct.loc['net P&L (after costs)', 'US$'], t['net_dollars'].sum())
    # breakeven: gross 75 - commission 18 = 57 = 2 x s x 12.5 x 4 contracts
    np.testing.assert_allclose(ts.breakeven_slippage_ticks(t, 12.5), 57 / 100)
    assert ts.breakeven_slippage_ticks(t.iloc[:0], 12.5) != ts.breakeven_slippage_ticks(t.iloc[:0], 12.5)   # NaN without trades
    er = ts.exit_reason_costs(t, 12.5)
    assert er.index.tolist() == ['stop_loss', 'take_profit']                # only reasons that happened, in the engine's order
    np.testing.assert_allclose(er.loc['stop_loss', 'gross P&L (US$)'], -25.0)
    np.testing.assert_allclose(er.loc['stop_loss', 'net P&L (US$)'], -25.0 - 88.5)
    np.testing.assert_allclose(er.loc['stop_loss', 'mean gross ticks per contract'], -25 / (3 * 12.5))


def test_breakeven_slippage_rerun_makes_zero_net(run):
    "The exact breakeven from the ledger, checked by re-running the backtest at that slippage."
    res = run['res']
    be = ts.breakeven_slippage_ticks(res.trades, res.settings['tick_value_dollars'])
    assert be > 0                                               # these trades make money before slippage
    sig = res.signal.to_numpy()
    at = run_backtest(run['bars'], sig, slippage_ticks=be, min_trades=0, **EXITS)
    assert len(at.trades) == len(res.trades)                    # slippage changes no trade
    assert abs(at.metrics.net_profit) < 1e-6, at.metrics.net_profit
    above = run_backtest(run['bars'], sig, slippage_ticks=be + 0.25, min_trades=0, **EXITS)
    np.testing.assert_allclose(above.metrics.net_profit, -2 * 0.25 * 12.5 * res.trades['contracts'].sum(), rtol=1e-9)


def test_vol_matched_and_errors(run):
    r, b = run['day']['return'], run['day_b']['return']
    vm = ts.vol_matched(b, r)
    np.testing.assert_allclose(vm.attrs['scale'], r.std() / b.std())
    np.testing.assert_allclose(vm.to_numpy(), b.to_numpy() * vm.attrs['scale'])
    with pytest.raises(ts.TearsheetError, match='same sessions'):
        ts.vol_matched(b.iloc[1:], r)
    with pytest.raises(ts.TearsheetError, match='window_sessions'):
        ts.rolling_stats(r, b, 0, 252.0)


def test_trade_list_and_csv(run, tmp_path):
    res = run['res']
    path = ts.write_trade_list(res.trades, tmp_path / 'backtest_report_trades.csv')
    back = pd.read_csv(path, index_col='trade')
    assert list(back.columns) == list(ts.TRADE_LIST_COLUMNS) and len(back) == len(res.trades)
    np.testing.assert_allclose(back['net_dollars'].sum(), res.metrics.net_profit, atol=1e-6)
    assert (back['side'] == 'long').sum() == int((res.trades['side'] > 0).sum())
    np.testing.assert_allclose(back['gross_dollars'] - back['commission_dollars'] - back['slippage_dollars'], back['net_dollars'], atol=1e-9)
    first = pd.Timestamp(back['entry_time'].iloc[0])
    assert first == res.trades['entry_time'].iloc[0] and first.utcoffset() is not None   # the zone travels with the stamp


def test_spread_table_by_hand():
    st = ts.spread_table(pd.DataFrame({'a': [1.0, 2.0, 3.0, 4.0], 'b': [5.0, np.nan, np.nan, np.inf]}))
    half = 3.182446305284263 * np.std([1, 2, 3, 4], ddof=1) / 2              # t(3) 97.5 %
    np.testing.assert_allclose([st.loc['a', 'ci_low'], st.loc['a', 'ci_high']], [2.5 - half, 2.5 + half])
    assert st.loc['a', 'runs'] == 4 and st.loc['b', 'runs'] == 1 and np.isnan(st.loc['b', 'ci_low'])
    assert st.loc['a', 'basis'] == 'seeds' and st.loc['b', 'basis'] == 'one run'
    # two folds x two seeds: the units are the fold means (runs that share a test period are not independent)
    ff = ts.spread_table(pd.DataFrame({'fold': [0, 0, 1, 1], 'seed': [0, 1, 0, 1], 'x': [1.0, 3.0, 5.0, 7.0]}))
    assert list(ff.index) == ['x'] and (ff.loc['x', 'units'], ff.loc['x', 'runs'], ff.loc['x', 'basis']) == (2, 4, 'folds')
    half = 12.706204736174696 * np.std([2.0, 6.0], ddof=1) / np.sqrt(2)        # t(1) 97.5 % over the fold means 2 and 6
    np.testing.assert_allclose([ff.loc['x', 'ci_low'], ff.loc['x', 'ci_high']], [4 - half, 4 + half])


def test_sharpe_difference_interval(run):
    r, b, ppy = run['day']['return'], run['day_b']['return'], run['ppy']
    d = ts.sharpe_difference(r, b, ppy, n_samples=400, seed=1)
    np.testing.assert_allclose(d['estimate'], (r.mean() / r.std() - b.mean() / b.std()) * math.sqrt(ppy))
    assert d['ci_low'] < d['estimate'] < d['ci_high']
    same = ts.sharpe_difference(r, r, ppy, n_samples=200, seed=1)               # against itself: exactly zero, every resample
    assert same['estimate'] == 0 and same['ci_low'] == 0 and same['ci_high'] == 0


@pytest.mark.parametrize('claim, kw, words', [
    ('beats', dict(ci_low=0.2, ci_high=1.5), 'beats buy and hold'),
    ('beats', dict(ci_low=-0.2, ci_high=1.5), 'is indistinguishable from buy and hold'),
    ('beats', dict(ci_low=-2.0, ci_high=-0.1), 'trails buy and hold'),
    ('beats', dict(), 'is indistinguishable from buy and hold'),
    ('profitable', dict(ci_low=10.0, ci_high=900.0, prob=0.99), 'is profitable'),
    ('profitable', dict(ci_low=10.0, ci_high=900.0, prob=0.94), 'is indistinguishable from breaking even'),
    ('profitable', dict(ci_low=-10.0, ci_high=900.0, prob=0.99), 'is indistinguishable from breaking even'),
    ('profitable', dict(ci_low=-900.0, ci_high=-10.0, prob=0.01), 'loses money'),
    ('edge', dict(prob=0.951), 'shows an edge'),
    ('edge', dict(prob=0.949), 'is indistinguishable from luck'),
    ('edge', dict(prob=float('nan')), 'is indistinguishable from luck'),
])
def test_claim_words(claim, kw, words):
    assert ts.claim_words(claim, n_sessions=40, min_sessions=20, versus='buy and hold', **kw) == words
    small = ts.claim_words(claim, n_sessions=5, min_sessions=20, versus='buy and hold', **kw)
    assert small == 'cannot be judged on 5 sessions (fewer than 20)'


def test_held_signal_and_quantile_threshold():
    P = np.array([[.2, .2, .6], [.3, .4, .3], [.3, .4, .3], [.3, .4, .3], [.7, .2, .1], [.3, .4, .3], [.1, .8, .1], [.3, .4, .3]])
    assert held_signal(P, 0.5, 3).tolist() == [1, 1, 1, 0, -1, -1, -1, 0]
    assert held_signal(P, 0.5, 2, flat_threshold=0.7, contracts=2).tolist() == [2, 2, 0, 0, -2, -2, 0, 0]
    assert held_signal(P, 0.5, 1).tolist() == signal_from_proba(P, 0.5, 'none', 1, hold=False).tolist()
    cal = np.random.default_rng(0).dirichlet([1, 1, 1], 10_000)
    thr = threshold_from_quantile(cal, 0.9)
    share = ((cal[:, 0] > thr) | (cal[:, 2] > thr)).mean()
    assert abs(share - 0.1) < 1e-3                                         # about 1 - quantile of the calibration bars are calls
    with pytest.raises(BacktestError, match='hold_bars'):
        held_signal(P, 0.5, 2.5)
    with pytest.raises(BacktestError, match=r'quantile must be in \(0, 1\)'):
        threshold_from_quantile(cal, 0.0)


def test_held_signal_grid_marks_no_trade_cells(run):
    g = ts.held_signal_grid(run['bars'], run['proba'], entry_thresholds=(run['thr'], 0.99999), slippage_ticks=(0.0, 1.0), hold_bars=10,
                            min_trades=0, **EXITS)
    np.testing.assert_allclose(g.loc[run['thr'], 1.0], run['res'].metrics.net_profit, atol=1e-6)
    assert g.attrs['no_trades'].loc[0.99999].all() and g.loc[0.99999].isna().all()
    assert (g.attrs['n_trials'], g.attrs['n_trials_with_sharpe']) == (4, 2)


def test_held_signal_grid_applies_the_signal_filter_to_every_cell(run):
    "A regime filter on trading reaches every cell of the grid: each cell equals the backtest of the filtered held calls."
    from scalp_lib.regimes import compute_regimes, regime_filter
    reg = compute_regimes(run['bars'], kinds=('phase',))
    only_mid = lambda s: regime_filter(s, reg, {'phase': ['middle']}).to_numpy()
    g = ts.held_signal_grid(run['bars'], run['proba'], entry_thresholds=(run['thr'],), slippage_ticks=(1.0,), hold_bars=10,
                            min_trades=0, signal_filter=only_mid, **EXITS)
    ref = run_backtest(run['bars'], only_mid(held_signal(run['proba'], run['thr'], 10)), min_trades=0, **EXITS).metrics
    np.testing.assert_allclose(g.loc[run['thr'], 1.0], ref.net_profit, atol=1e-6)
    assert ref.n_trades < run['res'].metrics.n_trades                     # the filter removed trades
