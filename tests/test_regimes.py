"""scalp_lib.regimes: causality of every regime kind (altering the future changes no past label, exact comparison),
tercile thresholds against a brute-force computation, session phase in exchange time, outside bands via align_asof,
the trading filter, and the per-regime breakdown."""
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

from scalp_lib.backtest import momentum_proba, run_backtest, signal_from_proba
from scalp_lib.config import get_instrument
from scalp_lib.data import demo_bars, load_bars
from scalp_lib.exogenous import demo_vix, perturb_series_after
from scalp_lib.features import perturb_after
from scalp_lib.regimes import (RegimeError, _OrderStatistics, _session_numbers, compute_regimes, outside_regime,
                               regime_breakdown, regime_causality_violations, regime_features, regime_filter,
                               session_phase, trend_regime, volatility_regime)

ALIGN = {'publication_lag': '15min'}


@pytest.fixture(scope='module')
def bars():
    return demo_bars(n_days=9, seed=5)


@pytest.fixture(scope='module')
def vix(bars):
    return demo_vix(bars, seed=3)


# ---------------------------------------------------------------- causality: the future cannot change a past label

@pytest.mark.parametrize('frac', [0.2, 0.45, 0.61, 0.8, 0.97])
def test_no_label_at_or_before_t_changes_when_the_future_changes(bars, vix, frac):
    t = int(frac * (len(bars) - 1))
    kw = dict(outside=vix, outside_name='vix', align_kwargs=ALIGN, vol_min_history_sessions=2)
    assert regime_causality_violations(bars, t, seed=t, **kw) == []
    # the comparison is not vacuous: the altered future does change labels after t
    a = compute_regimes(bars, **kw)
    spec = get_instrument('ES')
    b = compute_regimes(perturb_after(bars, t, t, spec.tick_size),
                        outside=perturb_series_after(vix, bars.index[t] + pd.Timedelta('1min'), seed=t, **ALIGN),
                        outside_name='vix', align_kwargs=ALIGN, vol_min_history_sessions=2)
    changed_after = {c for c in a.columns if not np.array_equal(a[c].cat.codes.to_numpy()[t + 1:], b[c].cat.codes.to_numpy()[t + 1:])}
    assert {'volatility', 'trend'} <= changed_after
    for c in a.columns:   # exact: codes, unlabelled (-1) included
        np.testing.assert_array_equal(a[c].cat.codes.to_numpy()[:t + 1], b[c].cat.codes.to_numpy()[:t + 1])


def test_causality_check_catches_full_sample_thresholds(bars):
    "Control: terciles of the whole sample (look-ahead) do change past labels when the future changes."
    t = len(bars) // 2
    def full(b): return pd.qcut(volatility_regime(b).attrs['volatility'], 3, labels=False).to_numpy()
    x, y = full(bars)[:t + 1], full(perturb_after(bars, t, 1, 0.25))[:t + 1]
    assert not np.array_equal(x, y, equal_nan=True)


def test_windowed_history_is_causal_too(bars):
    t = int(0.7 * len(bars))
    assert regime_causality_violations(bars, t, kinds=('volatility',), vol_history_sessions=2, vol_min_history_sessions=2) == []


# ---------------------------------------------------------------- volatility terciles

@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-20, 20), min_size=3, max_size=200), st.data())
def test_order_statistics_match_sorting(values, data):
    v = np.asarray(values, np.float64)
    order = np.argsort(v, kind='stable')
    ranks = np.empty(len(v), np.int64); ranks[order] = np.arange(len(v))
    os_ = _OrderStatistics(v[order])
    lo = data.draw(st.integers(0, len(v) - 1)); hi = data.draw(st.integers(lo + 1, len(v)))
    os_.add(ranks[:hi]); os_.add(ranks[:lo], -1)
    held = np.sort(v[lo:hi])
    for k in {1, len(held), math.ceil(len(held) / 3), math.ceil(2 * len(held) / 3)}:
        assert os_.kth(k) == held[k - 1]


@pytest.mark.parametrize('history', ['expanding', 3])
def test_thresholds_are_terciles_of_earlier_sessions_only(bars, history):
    reg = volatility_regime(bars, history_sessions=history, min_history_sessions=3)
    vol, thr = reg.attrs['volatility'].to_numpy(), reg.attrs['thresholds'].to_numpy()
    sess = _session_numbers(bars.index, get_instrument('ES'))
    for d in range(sess.max() + 1):
        rows = np.flatnonzero(sess == d)
        if d < 3:
            assert reg.iloc[rows].isna().all() and np.isnan(thr[rows]).all()
            continue
        first = 0 if history == 'expanding' else d - history
        past = vol[(sess >= first) & (sess < d)]
        past = past[np.isfinite(past)]
        lo, hi = np.quantile(past, 1 / 3, method='inverted_cdf'), np.quantile(past, 2 / 3, method='inverted_cdf')
        assert (thr[rows] == [lo, hi]).all()
        v = vol[rows]
        expect = np.where(np.isnan(v), -1, np.where(v <= lo, 0, np.where(v <= hi, 1, 2)))
        np.testing.assert_array_equal(reg.cat.codes.to_numpy()[rows], expect)


def test_session_break_return_is_not_volatility():
    "A huge overnight gap does not make the next session's first hour look volatile."
    b = demo_bars(n_days=3, seed=0)
    sess = _session_numbers(b.index, get_instrument('ES'))
    jumped = b.copy()
    later = sess >= 1
    for k in ('open', 'high', 'low', 'close'): jumped.loc[later, k] = jumped.loc[later, k] + 500.0   # a 500-point gap
    a = volatility_regime(b, min_history_sessions=1).attrs['volatility']
    c = volatility_regime(jumped, min_history_sessions=1).attrs['volatility']
    first = np.flatnonzero(sess == 1)[:60]
    # prices 10% higher: 1-minute log returns shrink by ~10%, but the 10% gap return itself (~0.1, 500 times a
    # typical 1-minute return) must not enter the window
    ratio = c.to_numpy()[first] / a.to_numpy()[first]
    assert np.all((ratio > 0.8) & (ratio < 1.05)), ratio


# ---------------------------------------------------------------- trend, phase, outside

def test_efficiency_ratio_by_hand():
    idx = pd.date_range('2024-01-02 09:00', periods=8, freq='min', tz='America/Chicago')
    b = pd.DataFrame({'close': [10.0, 11, 12, 11, 11, 11, 12, 13]}, index=idx)
    tr = trend_regime(b, window_bars=2, threshold=0.6)
    er = tr.attrs['efficiency_ratio'].to_numpy()
    np.testing.assert_allclose(er[2:], [1.0, 0.0, 1.0, 0.0, 1.0, 1.0])    # t=5: flat window, ER 0, 'range'
    assert tr.cat.codes.tolist() == [-1, -1, 1, 0, 1, 0, 1, 1]


def test_phase_uses_exchange_time_and_scheduled_sessions():
    idx = pd.DatetimeIndex(['2024-03-08 14:30', '2024-03-11 13:30', '2024-03-11 19:59', '2024-03-11 20:00', '2024-03-12 03:00'], tz='UTC')
    # Chicago: 08:30 CST, 08:30 CDT, 14:59, 15:00, 22:00
    ph = session_phase(idx, window='08:30-15:00', open_minutes=30, close_minutes=30, instrument='ES')
    assert ph.tolist() == ['open', 'open', 'close', 'outside', 'outside']
    full = session_phase(idx, instrument='ES', open_minutes=60, close_minutes=60)   # Globex 17:00-16:00
    assert full.tolist() == ['middle', 'middle', 'middle', 'close', 'middle']
    with pytest.raises(RegimeError, match='must be >= 0 and fit'):
        session_phase(idx, window='08:30-09:00', open_minutes=20, close_minutes=20, instrument='ES')



def _phase_by_chicago_time(ph):
    return pd.Series(ph.to_numpy(), index=ph.index.tz_convert('America/Chicago'))


def test_phase_ends_at_the_scheduled_early_close():
    "ES, Thanksgiving week 2025: regular Wednesday, Thanksgiving holiday session (12:00 close), Friday early close 12:15."
    idx = pd.date_range('2025-11-25 17:00', '2025-11-28 12:30', freq='min', tz='America/Chicago')
    ph = _phase_by_chicago_time(session_phase(idx, window='session', open_minutes=60, close_minutes=60, instrument='ES'))
    fri = ph['2025-11-27 17:00':]
    assert set(fri['2025-11-28 11:15':'2025-11-28 12:14']) == {'close'} and (fri == 'close').sum() == 60
    assert set(fri['2025-11-28 12:15':]) == {'outside'} and fri['2025-11-28 12:20'] == 'outside'
    assert set(fri['2025-11-28 10:00':'2025-11-28 11:14']) == {'middle'}
    assert set(fri['2025-11-27 17:00':'2025-11-27 17:59']) == {'open'}
    thu = ph['2025-11-26 17:00':'2025-11-27 16:59']
    assert set(thu['2025-11-27 11:00':'2025-11-27 11:59']) == {'close'} and (thu == 'close').sum() == 60
    assert set(thu['2025-11-27 12:00':]) == {'outside'} and thu['2025-11-27 10:59'] == 'middle'
    wed = ph[:'2025-11-26 16:59']   # a regular day keeps the regular close hour
    assert set(wed['2025-11-26 15:00':'2025-11-26 15:59']) == {'close'} and (wed == 'close').sum() == 60
    assert set(wed['2025-11-26 16:00':]) == {'outside'} and wed['2025-11-26 14:59'] == 'middle'
    assert (wed == 'open').sum() == 60 and (wed == 'middle').sum() == 1380 - 120
    # a fixed window is the same clock window every day: early closes do not move it
    rth = _phase_by_chicago_time(session_phase(idx, window='08:30-15:00', open_minutes=30, close_minutes=30, instrument='ES'))
    assert rth['2025-11-28 12:14'] == rth['2025-11-28 12:20'] == 'middle'
    assert rth['2025-11-26 14:45'] == 'close' and rth['2025-11-27 14:45'] == 'close'
    # bars stamped in another time zone get the same labels
    ny = session_phase(idx.tz_convert('America/New_York'), window='session', open_minutes=60, close_minutes=60, instrument='ES')
    assert ny.tolist() == ph.tolist()

def test_outside_bands_use_the_published_value(bars):
    day = pd.Timestamp(bars.index[2000].tz_convert('America/Chicago').date())
    obs = pd.DatetimeIndex([f"{(day - pd.Timedelta(days=1)).date()} 15:15", f"{day.date()} 15:15"]).tz_localize('America/Chicago')
    s = pd.Series([12.0, 25.0], index=obs, name='vix')    # time stamps (not dates): observed at 15:15 exchange time
    reg = outside_regime(bars, s, publication_lag='15min', bands=[15, 20, 30], labels=['calm', 'normal', 'elevated', 'stress'])
    local = bars.index.tz_convert('America/Chicago')
    usable = pd.Timestamp(f"{day.date()} 15:30", tz='America/Chicago')          # 15:15 close + 15 min
    closes = bars.index + pd.Timedelta('1min')                                  # label of a bar: as of its close
    after = closes >= usable
    assert set(reg[after]) == {'elevated'}
    prior = (closes < usable) & (local >= pd.Timestamp(f"{(day - pd.Timedelta(days=1)).date()} 15:30", tz='America/Chicago'))
    assert prior.any() and set(reg[prior]) == {'calm'}
    assert reg[closes < pd.Timestamp(f"{(day - pd.Timedelta(days=1)).date()} 15:30", tz='America/Chicago')].isna().all()


# ---------------------------------------------------------------- features, filter, breakdown

def test_regime_features_and_filter(bars, vix):
    reg = compute_regimes(bars, outside=vix, align_kwargs=ALIGN, vol_min_history_sessions=2)
    oh = regime_features(reg)
    lab = reg['volatility'].notna().to_numpy()
    assert (oh.filter(like='regime_volatility_')[lab].sum(axis=1) == 1).all()
    assert oh.filter(like='regime_volatility_')[~lab].isna().all().all()
    sig = signal_from_proba(momentum_proba(bars), entry_threshold=0.45)
    f = regime_filter(sig, reg, {'trend': 'trend', 'volatility': ['high']})
    ok = ((reg['trend'] == 'trend') & (reg['volatility'] == 'high')).to_numpy()
    np.testing.assert_array_equal(f.to_numpy(), np.where(ok, sig, 0))
    assert f.attrs['regime_filter']['nonzero_after'] == int((np.where(ok, sig, 0) != 0).sum())
    res = run_backtest(bars, signal=f)
    dec = bars.index.get_indexer(res.trades['entry_time']) - 1
    assert ok[dec].all(), 'a trade was decided outside the allowed regimes'
    with pytest.raises(RegimeError, match="no regime column 'weather'"):
        regime_filter(sig, reg, {'weather': ['sunny']})


def test_breakdown_counts_attribution_and_intervals(bars):
    reg = compute_regimes(bars, vol_min_history_sessions=2)
    res = run_backtest(bars, proba=momentum_proba(bars), entry_threshold=0.45)
    bd = regime_breakdown(res.trades, reg, 'trend', n_samples=400, seed=1)
    assert int(bd.drop(index='all')['n_trades'].sum()) == len(res.trades)
    dec = bars.index.get_indexer(res.trades['entry_time']) - 1
    codes = reg['trend'].cat.codes.to_numpy()[dec]
    for j, lab in enumerate(reg['trend'].cat.categories):
        net = res.trades['net_dollars'].to_numpy()[codes == j]
        assert bd.loc[lab, 'n_trades'] == len(net)
        assert bd.loc[lab, 'expectancy_dollars'] == pytest.approx(net.mean())
        assert bd.loc[lab, 'expectancy_ci_low'] <= net.mean() <= bd.loc[lab, 'expectancy_ci_high']
    # the same seed gives the same intervals
    pd.testing.assert_frame_equal(bd, regime_breakdown(res.trades, reg, 'trend', n_samples=400, seed=1))


def test_breakdown_of_a_per_bar_series_uses_the_previous_bar_regime(bars):
    reg = compute_regimes(bars, kinds=('phase',))
    x = pd.Series(np.arange(len(bars), dtype=np.float64), index=bars.index)
    bd = regime_breakdown(x, reg, n_samples=200)
    prev = reg['phase'].shift(1)
    assert bd.loc['open', 'total'] == x[prev == 'open'].sum()
    assert bd.loc['all', 'n_bars'] == len(bars)
    bd0 = regime_breakdown(x, reg, lag_bars=0, n_samples=200)
    assert bd0.loc['open', 'total'] == x[reg['phase'] == 'open'].sum()


def test_real_es_regimes_are_causal(shared_data):
    es = load_bars(shared_data / 'es_1min_2025-09_11.csv.gz', tz='America/New_York', ts_offset='5h', instrument='ES')
    es = es.iloc[:30_000]
    kw = dict(outside=demo_vix(es, seed=0), align_kwargs=ALIGN, phase_window='08:30-15:00', vol_min_history_sessions=3)
    for t in (12_345, 25_000):
        assert regime_causality_violations(es, t, seed=t, **kw) == []
    reg = compute_regimes(es, **kw)
    ny = es.index.tz_convert('America/New_York').strftime('%H:%M')
    assert set(reg['phase'][ny == '09:30']) == {'open'} and set(reg['phase'][ny == '12:00']) == {'middle'}


def test_real_es_phase_differs_from_the_regular_session_only_after_the_labor_day_close(shared_data):
    "The file's only non-regular session is Labor Day 2025 (holiday session, scheduled close 12:00 Chicago)."
    es = load_bars(shared_data / 'es_1min_2025-09_11.csv.gz', tz='America/New_York', ts_offset='5h', instrument='ES')
    kw = dict(open_minutes=60, close_minutes=60, instrument='ES')
    ph = _phase_by_chicago_time(session_phase(es, window='session', **kw))
    regular = _phase_by_chicago_time(session_phase(es, window='17:00-16:00', **kw))   # the regular session, every day
    diff = ph[ph != regular]
    assert len(diff) == 300 and set(diff.index.date) == {pd.Timestamp('2025-09-01').date()}
    assert set(ph['2025-09-01 11:00':'2025-09-01 11:59']) == {'close'}
    assert set(ph['2025-09-01 12:00':'2025-09-01 15:59']) == {'outside'} and len(ph['2025-09-01 12:00':'2025-09-01 15:59']) == 240
    assert set(regular['2025-09-01 11:00':'2025-09-01 14:59']) == {'middle'}
