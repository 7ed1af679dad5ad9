"""Exact label ends: `t1` and `t1_pos` of every label kind equal the bar worked out here (not only `t1_pos > t`).

A `t1` one bar early lets purging keep a training row whose label reads the first bar of the test block.
"""
import numpy as np
import pandas as pd
import pytest

from scalp_lib.config import get_instrument
from scalp_lib.data import demo_bars
from scalp_lib.labels import LabelSpec, make_labels, multi_horizon_labels, triple_barrier_labels

TICK = get_instrument('ES').tick_size
INDEX = demo_bars(n_days=1, seed=0).index[:40]          # one session: no daily break inside


def ramp_bars(step_ticks=1, n=40):
    "Close moves `step_ticks` every bar; open = previous close, high/low = the bar's extremes."
    close = 4000 + step_ticks * TICK * np.arange(n)
    open_ = np.r_[close[0], close[:-1]]
    return pd.DataFrame({'open': open_, 'high': np.maximum(open_, close), 'low': np.minimum(open_, close),
                         'close': close, 'volume': 1.0}, index=INDEX[:n])


def _assert_ends(out, expected_pos, bars):
    "t1_pos equals `expected_pos` (NaN where no label), t1 is the time stamp of that bar (NaT where no label)."
    np.testing.assert_array_equal(out['t1_pos'].to_numpy(), expected_pos)
    has = ~np.isnan(expected_pos)
    np.testing.assert_array_equal(out['label'].notna().to_numpy(), has)
    assert (out['t1'][has] == bars.index[expected_pos[has].astype(int)]).all()
    assert out['t1'][~has].isna().all()


FIXED = [('direction', {'dead_band_ticks': 0}), ('forward_return', {}), ('vol_scaled_return', {'vol_window_bars': 3}),
         ('rank', {'rank_reference': 'train', 'train_end': 30, 'rank_min_reference_rows': 2})]


@pytest.mark.parametrize('kind, extra', FIXED, ids=[k for k, _ in FIXED])
@pytest.mark.parametrize('h', [1, 4])
def test_fixed_horizon_t1_is_exactly_t_plus_h(kind, extra, h):
    bars = ramp_bars()
    bars['close'] = bars['close'] + TICK * (np.arange(len(bars)) % 3 == 0)    # a wiggle: volatility is not zero
    bars['high'] = np.maximum(bars['high'], bars['close'])
    out = make_labels(bars, LabelSpec(kind, horizon_bars=h, within_session=False, **extra))
    n = len(bars)
    y = out['label'].to_numpy()
    expected = np.where(~np.isnan(y), np.arange(n) + h, np.nan)
    assert np.isnan(y[n - h:]).all()                                        # no bar t + h: no label, no end
    assert (~np.isnan(y)).sum() >= n - h - 5                                # almost every row is labelled (warm-up aside)
    _assert_ends(out, expected, bars)


def test_multi_horizon_ends_are_exact_per_horizon_and_the_latest_overall():
    bars = ramp_bars()
    n = len(bars)
    mh = multi_horizon_labels(bars, {'kind': 'direction', 'within_session': False}, horizons=[2, 5])
    for h in (2, 5):
        exp = np.where(np.arange(n) + h < n, np.arange(n) + h, np.nan)
        np.testing.assert_array_equal(mh[f't1_pos_h{h}'].to_numpy(), exp)
        has = ~np.isnan(exp)
        assert (mh[f't1_h{h}'][has] == bars.index[exp[has].astype(int)]).all()
    t = np.arange(n)
    latest = np.where(t + 5 < n, t + 5, np.where(t + 2 < n, t + 2, np.nan))   # the longest horizon that has its bar
    np.testing.assert_array_equal(mh['t1_pos'].to_numpy(), latest)


@pytest.mark.parametrize('step, pt, sl, V, first_touch, barrier', [
    (1, 3, 50, 10, 3, 'pt'),          # rising one tick a bar: the target 3 ticks up is touched on bar t + 3
    (-1, 50, 2, 10, 2, 'sl'),         # falling: the stop 2 ticks down on bar t + 2
    (1, 50, 50, 4, 4, 'vertical'),    # neither within V = 4 bars: the vertical barrier, bar t + 4
    (-2, 50, 3, 10, 2, 'sl'),         # two ticks a bar: the stop at 3 is crossed inside bar t + 2
])
def test_triple_barrier_t1_is_the_first_touching_bar(step, pt, sl, V, first_touch, barrier):
    bars = ramp_bars(step)
    n = len(bars)
    out = triple_barrier_labels(bars, pt_ticks=pt, sl_ticks=sl, vertical_bars=V, within_session=False)
    rows = np.arange(n)
    # a row is labelled when its first touch is inside the data (a barrier) or its whole vertical window is (the vertical)
    expected = np.where(rows + first_touch < n, rows + first_touch, np.nan)
    _assert_ends(out, expected, bars)
    assert (out['barrier'][~np.isnan(expected)] == barrier).all()
    held = out['t1_pos'] - rows
    assert (held.dropna() == first_touch).all()
    # the same ends through make_labels
    mk = make_labels(bars, LabelSpec('triple_barrier', pt_ticks=pt, sl_ticks=sl, vertical_bars=V, within_session=False))
    _assert_ends(mk, expected, bars)
