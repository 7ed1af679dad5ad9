"""Property tests for scalp_lib.labels: exact future reads, no look-ahead, NaN-at-end counting, tie rules,
and the vectorised triple barrier against a slow per-row reference loop.

Random bars are contiguous slices of real Globex minute stamps (so some slices cross the daily break and the
session rule matters), with a tick-grid random walk and OHLC-consistent ranges; a few bars may be NaN.
"""
import gzip
import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, reject, settings, strategies as st

from scalp_lib.config import get_instrument
from scalp_lib.data import demo_bars, session_dates
from scalp_lib.labels import (LabelError, LabelSpec, LABEL_KINDS, NAN_REASONS, direction_labels, forward_log_return,
                              make_labels, rank_target, triple_barrier_labels, vol_scaled_return)

ES = get_instrument('ES')
TICK = ES.tick_size
# two full sessions of Globex stamps (bar start times), the daily break between them
STAMPS = demo_bars(n_days=3, seed=0).index
PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def random_bars(draw, min_n=3, max_n=60, nan_bars=True):
    "OHLC-consistent bars on the ES tick grid over a random slice of real session stamps."
    n = draw(st.integers(min_n, max_n))
    # start near a session end often, so that the daily break falls inside the slice
    start = draw(st.one_of(st.integers(1380 - max_n, 1380 - 1), st.integers(0, len(STAMPS) - n)))
    start = min(start, len(STAMPS) - n)
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    close_t = 4000 + np.cumsum(rng.integers(-3, 4, n))
    open_t = np.concatenate([[close_t[0]], close_t[:-1]]) + rng.integers(-2, 3, n) * (rng.random(n) < 0.15)
    high_t = np.maximum(open_t, close_t) + rng.integers(0, 4, n)
    low_t = np.minimum(open_t, close_t) - rng.integers(0, 4, n)
    df = pd.DataFrame({'open': open_t * TICK, 'high': high_t * TICK, 'low': low_t * TICK, 'close': close_t * TICK,
                       'volume': 1.0}, index=STAMPS[start:start + n])
    if nan_bars and draw(st.booleans()):
        k = draw(st.integers(0, n - 1))
        df.iloc[k, :4] = np.nan
    df.attrs['instrument'] = 'ES'
    return df


# ---------------------------------------------------------------------------------------------------------------
# slow reference: one row at a time, one bar at a time, written from the documented rules
def reference_triple_barrier(bars, pt_w, sl_w, V, tie_rule, vertical_label, within_session):
    o, h, l, c = (bars[k].to_numpy() / TICK for k in ('open', 'high', 'low', 'close'))
    n = len(bars)
    sess = session_dates(bars.index, ES) if within_session else None
    label = [math.nan] * n; t1 = [-1] * n; ret = [math.nan] * n; barrier = [None] * n; why = [None] * n
    tol = 1e-6
    for t in range(n):
        if math.isnan(c[t]) or math.isnan(pt_w[t]) or math.isnan(sl_w[t]):
            why[t] = 'missing_input'; continue
        up, dn = c[t] + pt_w[t], c[t] - sl_w[t]
        for k in range(1, V + 1):
            j = t + k
            if j >= n: why[t] = 'past_end'; break
            if sess is not None and sess[j] != sess[t]: why[t] = 'session_end'; break
            if any(math.isnan(x) for x in (o[j], h[j], l[j], c[j])): why[t] = 'missing_input'; break
            if o[j] >= up - tol: res, px = 'pt', o[j]
            elif o[j] <= dn + tol: res, px = 'sl', o[j]
            elif h[j] >= up - tol and l[j] <= dn + tol:
                if tie_rule == 'stop_first': res, px = 'sl', dn
                elif tie_rule == 'target_first': res, px = 'pt', up
                else: res, px = 'ambiguous', math.nan
            elif h[j] >= up - tol: res, px = 'pt', up
            elif l[j] <= dn + tol: res, px = 'sl', dn
            elif k == V: res, px = 'vertical', c[j]
            else: continue
            t1[t] = j; barrier[t] = res
            if res == 'ambiguous': why[t] = 'ambiguous'; break
            r = round(px - c[t], 6); ret[t] = r
            if res == 'pt': label[t] = 2.0
            elif res == 'sl': label[t] = 0.0
            else: label[t] = 1.0 if vertical_label == 'zero' else float(np.sign(r) + 1)
            break
    return np.array(label), np.array(t1), np.array(ret), barrier, why


def _widths(mode, pt, sl, atr):
    if mode == 'ticks': return np.full(len(atr), float(pt)), np.full(len(atr), float(sl))
    w = lambda m: np.where(np.isnan(atr), np.nan, np.maximum(np.ceil(m * atr - 1e-6), 1.0))
    return w(pt), w(sl)


@PROPS
@given(bars=random_bars(), pt=st.integers(1, 6), sl=st.integers(1, 6), V=st.integers(1, 12),
       tie_rule=st.sampled_from(['stop_first', 'target_first', 'nan']), vertical_label=st.sampled_from(['zero', 'sign']),
       within=st.booleans(), mode=st.sampled_from(['ticks', 'atr']), seed=st.integers(0, 1000))
def test_triple_barrier_equals_reference_loop(bars, pt, sl, V, tie_rule, vertical_label, within, mode, seed):
    n = len(bars)
    rng = np.random.default_rng(seed)
    atr = rng.uniform(0.3, 4.0, n); atr[rng.random(n) < 0.1] = np.nan
    kw = dict(pt_ticks=pt, sl_ticks=sl) if mode == 'ticks' else dict(pt_atr=pt / 2, sl_atr=sl / 2, atr_ticks=atr)
    got = triple_barrier_labels(bars, vertical_bars=V, tie_rule=tie_rule, vertical_label=vertical_label,
                                within_session=within, **kw)
    pt_w, sl_w = _widths(mode, pt if mode == 'ticks' else pt / 2, sl if mode == 'ticks' else sl / 2, atr)
    label, t1, ret, barrier, why = reference_triple_barrier(bars, pt_w, sl_w, V, tie_rule, vertical_label, within)
    np.testing.assert_array_equal(got.label.to_numpy(), label)
    np.testing.assert_array_equal(got.t1_pos.to_numpy(), np.where(t1 >= 0, t1, np.nan))
    np.testing.assert_array_equal(got.ret_ticks.to_numpy(), ret)
    assert [None if pd.isna(b) else b for b in got.barrier] == barrier
    np.testing.assert_array_equal(got.pt_width_ticks.to_numpy(), pt_w)
    rep = got.attrs['label_report']
    expected = {r: why.count(r) for r in NAN_REASONS if why.count(r)}
    assert rep.nan_counts == expected
    assert rep.n_labelled + sum(rep.nan_counts.values()) == n
    # t1 is the time stamp of row t1_pos
    ok = t1 >= 0
    assert (got.t1[ok] == bars.index[t1[ok]]).all() and got.t1[~ok].isna().all()


def test_reference_loop_is_not_vacuous():
    "The property test compares something: the reference produces every outcome on random bars."
    rng_bars = demo_bars(n_days=1, seed=4).iloc[:600]
    label, t1, ret, barrier, why = reference_triple_barrier(rng_bars, np.full(600, 3.0), np.full(600, 3.0), 5,
                                                            'nan', 'zero', True)
    assert {'pt', 'sl', 'vertical', 'ambiguous'} <= set(barrier)


# ---------------------------------------------------------------------------------------------------------------
# exact future reads: each label at t changes with the bar it says it reads, and not with any later bar
FIXED = {
    'direction': lambda b, h: direction_labels(b, h, 1, instrument='ES'),
    'forward_return': lambda b, h: forward_log_return(b, h, clip=math.inf, instrument='ES'),
    'vol_scaled_return': lambda b, h: vol_scaled_return(b, h, vol_window_bars=3, clip=math.inf, instrument='ES'),
    'rank_train': lambda b, h: rank_target(b, h, reference='train', train_end=len(b) // 2, min_reference_rows=1, instrument='ES'),
}


def _perturb_after(bars, j, rng):
    "Replace every bar after row j with unrelated (but valid) bars."
    out = bars.copy()
    m = len(out) - j - 1
    if m > 0:
        c = (3000 + rng.integers(-50, 50, m)) * TICK
        out.iloc[j + 1:, :4] = np.column_stack([c, c + 2 * TICK, c - 2 * TICK, c])
    return out


@PROPS
@given(bars=random_bars(min_n=12, max_n=80, nan_bars=False), kind=st.sampled_from(sorted(FIXED)), h=st.integers(1, 5),
       data=st.data())
def test_fixed_horizon_labels_read_exactly_close_t_plus_h(bars, kind, h, data):
    f = FIXED[kind]
    n = len(bars)
    lo = n // 2 if kind == 'rank_train' else 0           # rank 'train': look at rows after training
    t = data.draw(st.integers(lo, n - 1))
    try:
        y = f(bars, h)
    except LabelError as e:   # rank 'train' on a slice whose training half has no complete return
        assert 'realised returns' in str(e)
        reject()
    rng = np.random.default_rng(t)
    if t + h >= n:   # no close[t+h]: NaN, counted past the end
        assert np.isnan(y.iloc[t])
        return
    # bars after t+h: no effect at t
    assert_same = lambda a, b: (np.isnan(a) and np.isnan(b)) or a == b
    assert assert_same(f(_perturb_after(bars, t + h, rng), h).iloc[t], y.iloc[t])
    if np.isnan(y.iloc[t]):  # session end (or warm-up): the label does not exist, whatever close[t+h] is
        return
    # close[t+h] itself: moving it far up and far down gives different labels
    up, dn = bars.copy(), bars.copy()
    c = bars.close.iloc[t]
    up.iloc[t + h, :4] = [c + 40, c + 40, c + 40, c + 40]
    dn.iloc[t + h, :4] = [c - 40, c - 40, c - 40, c - 40]
    y_up, y_dn = f(up, h).iloc[t], f(dn, h).iloc[t]
    assert y_up > y_dn, (kind, y_up, y_dn)
    if kind == 'direction': assert (y_up, y_dn) == (2.0, 0.0)


@PROPS
@given(bars=random_bars(min_n=10, max_n=60, nan_bars=False), V=st.integers(1, 8), data=st.data())
def test_triple_barrier_reads_bars_up_to_t1_only(bars, V, data):
    n = len(bars)
    t = data.draw(st.integers(0, n - 1))
    res = triple_barrier_labels(bars, pt_ticks=3, sl_ticks=3, vertical_bars=V, instrument='ES')
    j = -1 if np.isnan(res.t1_pos.iloc[t]) else int(res.t1_pos.iloc[t])
    last_read = j if j >= 0 else min(t + V, n - 1)
    changed = triple_barrier_labels(_perturb_after(bars, last_read, np.random.default_rng(t)), pt_ticks=3, sl_ticks=3,
                                    vertical_bars=V, instrument='ES')
    a, b = res.iloc[t], changed.iloc[t]
    assert (np.isnan(a.label) and np.isnan(b.label)) or (a.label == b.label and a.t1_pos == b.t1_pos and a.ret_ticks == b.ret_ticks)
    if j >= 0 and res.barrier.iloc[t] in ('pt', 'sl'):
        # make bar t1 inert (flat at the entry price): the decision must move (later bar, or no label)
        inert = bars.copy()
        inert.iloc[j, :4] = [bars.close.iloc[t]] * 4
        moved = triple_barrier_labels(inert, pt_ticks=3, sl_ticks=3, vertical_bars=V, instrument='ES').iloc[t]
        assert (moved.t1_pos, moved.barrier) != (j, res.barrier.iloc[t])   # later bar, the vertical, or no label


# ---------------------------------------------------------------------------------------------------------------
# NaN at the end: never filled, always counted
@PROPS
@given(bars=random_bars(min_n=3, max_n=40, nan_bars=False), h=st.integers(1, 50))
def test_rows_past_the_end_are_nan_and_counted(bars, h):
    n = len(bars)
    for f in (lambda b: direction_labels(b, h, 1, within_session=False),
              lambda b: forward_log_return(b, h, within_session=False),
              lambda b: vol_scaled_return(b, h, vol_window_bars=2, within_session=False),
              lambda b: rank_target(b, h, min_reference_rows=1, within_session=False)):
        y = f(bars)
        tail = y.iloc[max(n - h, 0):]
        assert tail.isna().all()
        rep = y.attrs['label_report']
        assert rep.nan_counts.get('past_end', 0) == min(h, n)
        assert rep.n_labelled + sum(rep.nan_counts.values()) == n
    for f in (lambda b: direction_labels(b, h, 1, within_session=False),
              lambda b: forward_log_return(b, h, within_session=False)):
        assert f(bars).iloc[:max(n - h, 0)].notna().all()   # nothing else is NaN for these two
    tb = triple_barrier_labels(bars, pt_ticks=1000, sl_ticks=1000, vertical_bars=h, within_session=False)
    assert tb.label.iloc[max(n - h, 0):].isna().all()
    assert tb.attrs['label_report'].nan_counts.get('past_end', 0) == min(h, n)
    assert tb.t1_pos.iloc[max(n - h, 0):].isna().all()


def test_session_end_rows_are_nan_and_counted():
    bars = demo_bars(n_days=3, seed=2)
    y = direction_labels(bars, 7, 1)
    sess = session_dates(bars.index, ES)
    last7 = pd.Series(sess).groupby(sess).cumcount(ascending=False).to_numpy() < 7
    assert y[last7].isna().all() and y[~last7].notna().all()
    assert y.attrs['label_report'].nan_counts == {'past_end': 7, 'session_end': 14}


# ---------------------------------------------------------------------------------------------------------------
# tie rule
@PROPS
@given(bars=random_bars(nan_bars=False), w=st.integers(1, 4), V=st.integers(1, 8))
def test_tie_rules_differ_only_on_ambiguous_rows(bars, w, V):
    kw = dict(pt_ticks=w, sl_ticks=w, vertical_bars=V, instrument='ES')
    s = triple_barrier_labels(bars, tie_rule='stop_first', **kw)
    g = triple_barrier_labels(bars, tie_rule='target_first', **kw)
    x = triple_barrier_labels(bars, tie_rule='nan', **kw)
    amb = x.barrier == 'ambiguous'
    assert x.label[amb].isna().all()
    assert (s.label[amb] == 0).all() and (g.label[amb] == 2).all()
    pd.testing.assert_series_equal(s.label[~amb], g.label[~amb])
    pd.testing.assert_series_equal(s.label[~amb], x.label[~amb])
    assert s.attrs['label_report'].extra['ambiguous_bars'] == int(amb.sum()) == x.attrs['label_report'].nan_counts.get('ambiguous', 0)
    pd.testing.assert_series_equal(s.t1_pos, x.t1_pos)   # same deciding bar, only the outcome differs


def test_gap_through_a_barrier_is_not_a_tie():
    ix = pd.date_range('2024-01-08 09:00', periods=2, freq='min', tz='America/Chicago')
    bars = pd.DataFrame({'open': [100.0, 101.0], 'high': [100.0, 101.25], 'low': [100.0, 98.0], 'close': [100.0, 99.0]}, index=ix)
    r = triple_barrier_labels(bars, pt_ticks=2, sl_ticks=2, vertical_bars=1, tie_rule='stop_first', instrument='ES')
    assert r.label.iloc[0] == 2.0 and r.ret_ticks.iloc[0] == 4.0       # opened 4 ticks up: target, filled at the open
    assert r.attrs['label_report'].extra['ambiguous_bars'] == 0


# ---------------------------------------------------------------------------------------------------------------
# rank target: the 'past' reference uses nothing from t's session or later
def test_rank_past_reference_ignores_the_future_and_the_current_session():
    bars = demo_bars(n_days=6, seed=5)
    y = rank_target(bars, 5, reference_sessions=2, min_reference_rows=100)
    t = 4 * 1380 + 500
    # truncating right after close[t+5] changes nothing at t
    assert rank_target(bars.iloc[:t + 6], 5, reference_sessions=2, min_reference_rows=100).iloc[t] == y.iloc[t]
    # changing the earlier bars of t's own session (other than close[t]) changes nothing at t either
    b2 = bars.copy()
    s0 = 4 * 1380
    b2.iloc[s0:t, b2.columns.get_loc('close')] = b2.close.iloc[s0:t] + 100.0
    assert rank_target(b2, 5, reference_sessions=2, min_reference_rows=100).iloc[t] == y.iloc[t]
    # ...but changing the reference sessions does
    b3 = bars.copy()
    b3.iloc[2 * 1380:3 * 1380, :4] = b3.iloc[2 * 1380:3 * 1380, :4] * np.linspace(1, 1.2, 1380)[:, None]
    assert rank_target(b3, 5, reference_sessions=2, min_reference_rows=100).iloc[t] != y.iloc[t]


def test_whole_series_rank_would_differ():
    "A whole-series rank (seed 004's suggestion) uses test returns; ours does not, so the two differ."
    bars = demo_bars(n_days=6, seed=6)
    ours = rank_target(bars, 5, reference='train', train_end=3 * 1380, min_reference_rows=100)
    fwd = forward_log_return(bars, 5, clip=math.inf)
    leaky = 2 * fwd.rank(pct=True) - 1
    assert not np.allclose(ours.iloc[:3 * 1380].dropna(), leaky.iloc[:3 * 1380].dropna())


# ---------------------------------------------------------------------------------------------------------------
# LabelSpec and make_labels
SPECS = [LabelSpec('direction', horizon_bars=5, dead_band_ticks=1), LabelSpec('triple_barrier', pt_atr=2.0, sl_atr=1.0),
         LabelSpec('forward_return'), LabelSpec('vol_scaled_return', vol_window_bars=30),
         LabelSpec('rank', rank_reference='train', train_end=3000)]


@pytest.mark.parametrize('spec', SPECS, ids=[s.kind for s in SPECS])
def test_make_labels_every_kind(spec):
    bars = demo_bars(n_days=4, seed=7)
    out = make_labels(bars, json.loads(json.dumps(spec.to_dict())))
    assert {'label', 't1', 't1_pos'} <= set(out.columns)
    lab = out.label.notna().to_numpy()
    pos = np.arange(len(bars))
    assert (out.t1_pos.to_numpy()[lab] > pos[lab]).all()
    assert LabelSpec.from_dict(out.attrs['label_spec']) == spec.resolve()
    rep = out.attrs['label_report']
    assert rep.n_labelled == lab.sum() and rep.n_labelled + sum(rep.nan_counts.values()) == len(bars)


def test_spec_kinds_are_all_covered():
    assert {s.kind for s in SPECS} == set(LABEL_KINDS)


def test_bad_arguments_raise_named_errors():
    bars = demo_bars(n_days=1, seed=0)
    for call, text in [(lambda: triple_barrier_labels(bars, pt_ticks=2, pt_atr=1.0), 'not both'),
                       (lambda: triple_barrier_labels(bars, tie_rule='coin'), 'tie_rule'),
                       (lambda: triple_barrier_labels(bars, pt_ticks=0), 'pt_ticks'),
                       (lambda: triple_barrier_labels(bars, vertical_bars=0), 'vertical_bars'),
                       (lambda: triple_barrier_labels(bars, pt_atr=1, atr_ticks=np.ones(3)), 'atr_ticks'),
                       (lambda: direction_labels(bars.assign(close='x')), 'is not numeric'),
                       (lambda: vol_scaled_return(bars, vol_window_bars=1), 'vol_window_bars'),
                       (lambda: rank_target(bars, reference='train', train_end=10**9), 'train_end'),
                       (lambda: make_labels(bars, {'kind': 'direction', 'pt_ticks': 3}), 'pt_ticks')]:
        with pytest.raises(LabelError, match=text):
            call()
    assert issubclass(LabelError, ValueError)


# ---------------------------------------------------------------------------------------------------------------
# real ES bars
def _real_es(shared_data, n=None):
    df = pd.read_csv(shared_data / 'es_1min_2025-09_11.csv.gz', nrows=n)
    ny = pd.to_datetime(df.pop('timestamp')) - pd.Timedelta(hours=5)     # file: New York wall clock + 5 h
    idx = pd.DatetimeIndex(ny).tz_localize('America/New_York', ambiguous='NaT', nonexistent='NaT')
    df.index = idx.tz_convert('America/Chicago').rename('timestamp')
    df = df[df.index.notna()].astype('float64')
    df = df[~df.index.duplicated()]
    df.attrs['instrument'] = 'ES'
    return df


def test_triple_barrier_on_real_es_equals_reference(shared_data):
    bars = _real_es(shared_data).iloc[20000:24000]
    got = triple_barrier_labels(bars, pt_ticks=6, sl_ticks=4, vertical_bars=20, tie_rule='nan')
    w = np.full(len(bars), 6.0), np.full(len(bars), 4.0)
    label, t1, ret, barrier, why = reference_triple_barrier(bars, *w, 20, 'nan', 'zero', True)
    np.testing.assert_array_equal(got.label.to_numpy(), label)
    np.testing.assert_array_equal(got.t1_pos.to_numpy(), np.where(t1 >= 0, t1, np.nan))
    np.testing.assert_array_equal(got.ret_ticks.to_numpy(), ret)
    assert got.attrs['label_report'].extra['ambiguous_bars'] > 0       # real bars do have ties at 4-6 ticks


def test_direction_on_real_es(shared_data):
    bars = _real_es(shared_data)
    y = direction_labels(bars, 10, 2)
    rep = y.attrs['label_report']
    assert rep.n_labelled + sum(rep.nan_counts.values()) == len(bars)
    assert rep.nan_counts['session_end'] > 40 * 10 - 50     # ~50 sessions, 10 rows each cross the break
    assert all(v > 0.1 * rep.n_labelled for v in rep.class_counts.values())


# ---------------------------------------------------------------------------------------------------------------
# the label end times feed the purged splits (scalp_lib.splits) as they are
def test_t1_feeds_purged_splits():
    from scalp_lib.splits import label_end_positions, temporal_split
    bars = demo_bars(n_days=5, seed=8)
    tb = triple_barrier_labels(bars, pt_ticks=6, sl_ticks=6, vertical_bars=20)
    n = len(bars)
    pos_from_pos, missing = label_end_positions(n, t1=tb.t1_pos)
    pos_from_time, missing2 = label_end_positions(n, t1=tb.t1)
    np.testing.assert_array_equal(pos_from_pos, pos_from_time)
    assert missing == missing2 == int(tb.t1_pos.isna().sum())
    lab = tb.label.notna().to_numpy()
    np.testing.assert_array_equal(pos_from_pos[lab], tb.t1_pos.to_numpy()[lab].astype(np.int64))
    sp = temporal_split(n, t1=tb.t1_pos, embargo_bars=10)
    train_end_pos = pos_from_pos[sp.train]
    assert train_end_pos.max() + 10 < sp.boundaries[0]


# ---------------------------------------------------------------- several horizons from one call

@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_bars(min_n=5, max_n=60), st.lists(st.integers(1, 12), min_size=1, max_size=4, unique=True),
       st.sampled_from(['direction', 'forward_return', 'triple_barrier']))
def test_multi_horizon_labels_are_the_single_horizon_labels(bars, horizons, kind):
    from scalp_lib.labels import multi_horizon_labels
    extra = {'pt_ticks': 3, 'sl_ticks': 2} if kind == 'triple_barrier' else {}
    field = 'vertical_bars' if kind == 'triple_barrier' else 'horizon_bars'
    mh = multi_horizon_labels(bars, {'kind': kind, **extra}, horizons=horizons)
    hs = sorted(horizons)
    assert mh.attrs['horizons'] == hs and mh.attrs['label_columns'] == [f'label_h{h}' for h in hs]
    n = len(bars)
    ends = np.full((n, len(hs)), np.nan)
    for j, h in enumerate(hs):
        one = make_labels(bars, {'kind': kind, field: h, **extra})
        np.testing.assert_array_equal(mh[f'label_h{h}'].to_numpy(), one['label'].to_numpy())
        np.testing.assert_array_equal(mh[f't1_pos_h{h}'].to_numpy(), one['t1_pos'].to_numpy())
        assert mh[f't1_h{h}'].equals(one['t1'].rename(f't1_h{h}'))
        lab = one['label'].notna().to_numpy()
        if kind != 'triple_barrier':   # fixed horizon: the end is exactly t + h
            np.testing.assert_array_equal(one['t1_pos'].to_numpy()[lab], np.arange(n)[lab] + h)
        ends[:, j] = one['t1_pos'].to_numpy()
    latest = np.array([np.nan if np.isnan(r).all() else np.nanmax(r) for r in ends])
    np.testing.assert_array_equal(mh['t1_pos'].to_numpy(), latest)
    has = ~np.isnan(latest)
    assert (mh['t1'][has] == bars.index[latest[has].astype(int)]).all() and mh['t1'][~has].isna().all()
    np.testing.assert_array_equal(mh['all_labelled'].to_numpy(), mh[mh.attrs['label_columns']].notna().all(axis=1).to_numpy())


def test_multi_horizon_labels_refuse_ambiguous_horizons():
    from scalp_lib.labels import multi_horizon_labels
    b = demo_bars(n_days=1, seed=0).iloc[:200]
    with pytest.raises(LabelError, match='give the horizons in `horizons`'):
        multi_horizon_labels(b, LabelSpec('triple_barrier', vertical_bars=10), horizons=[5, 10])
    with pytest.raises(LabelError, match='horizons\\[\\] must be a positive integer'):
        multi_horizon_labels(b, horizons=[5, 0])

# ---------------------------------------------------------------- the compiled kernel against the frozen earlier code
import reference_labels  # noqa: E402  (tests/reference_labels.py: the per-offset numpy implementation, frozen)


def _same_triple_barrier(bars, **kw):
    "Identical frame (labels, t1, t1_pos, returns, barrier, widths) and identical report (NaN reasons, counts, extras)."
    old = reference_labels.triple_barrier_labels(bars, **kw)
    new = triple_barrier_labels(bars, **kw)
    pd.testing.assert_frame_equal(new, old, check_exact=True)
    assert repr(new.attrs['label_report']) == repr(old.attrs['label_report'])
    return new


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_bars(min_n=1, max_n=80), st.sampled_from([None, 1, 2, 5, 2.5]), st.sampled_from([None, 1, 3, 6]),
       st.sampled_from([1, 2, 7, 30, 120]), st.sampled_from(['stop_first', 'target_first', 'nan']),
       st.sampled_from(['zero', 'sign']), st.booleans(), st.sampled_from(['ticks', 'atr']))
def test_triple_barrier_kernel_equals_frozen_implementation(bars, pt, sl, V, tie_rule, vertical_label, within, mode):
    "Random bars (NaN bars, session breaks), every tie rule, both vertical labels, within the session or not, tick or ATR widths."
    kw = dict(vertical_bars=V, tie_rule=tie_rule, vertical_label=vertical_label, within_session=within, instrument='ES')
    if mode == 'atr': kw.update(pt_atr=None if pt is None else pt / 2, sl_atr=None if sl is None else sl / 2, atr_window_bars=3)
    else: kw.update(pt_ticks=pt, sl_ticks=sl)
    _same_triple_barrier(bars, **kw)


def test_triple_barrier_kernel_equals_frozen_on_long_random_series():
    "Longer series with wide barriers and V=120 (the fast path for quiet rows), ties and NaN bars."
    rng = np.random.default_rng(11)
    bars = demo_bars(n_days=6, seed=5)
    nan_rows = rng.choice(len(bars), 15, replace=False)
    bars.iloc[nan_rows, rng.integers(0, 4, 15)] = np.nan
    seen = set()
    for pt, sl, V, rule in ((40, 40, 120, 'stop_first'), (8, 8, 30, 'nan'), (3, 12, 120, 'target_first'), (None, 6, 60, 'nan')):
        out = _same_triple_barrier(bars, pt_ticks=pt, sl_ticks=sl, vertical_bars=V, tie_rule=rule, instrument='ES')
        seen |= set(out.barrier.dropna().astype(str)) | set(out.attrs['label_report'].nan_counts)
    assert {'pt', 'sl', 'vertical', 'ambiguous', 'past_end', 'session_end', 'missing_input'} <= seen, seen


def test_triple_barrier_kernel_equals_frozen_on_real_es(shared_data):
    "The whole real ES file, every tie rule, within the session or not, tick and ATR barriers."
    bars = _real_es(shared_data)
    for kw in (dict(pt_ticks=8, sl_ticks=8, vertical_bars=30, tie_rule='stop_first'),
               dict(pt_ticks=40, sl_ticks=40, vertical_bars=120, tie_rule='target_first', within_session=False),
               dict(pt_atr=2.0, sl_atr=1.0, vertical_bars=60, tie_rule='nan', vertical_label='sign')):
        _same_triple_barrier(bars, instrument='ES', **kw)
