"""Property tests for scalp_lib.splits: no training label window touches a test window extended by the embargo.

For every generated configuration either the splitter raises a SplitError (an impossible configuration, checked
to be genuinely impossible where that is cheap to decide), or every fold satisfies:
  * train rows are sorted, unique, in [0, n) and all strictly before the first test row (train precedes test);
  * for every training row t: its label window [t, t1[t]] does not overlap [test_first - embargo, max test t1 + embargo];
  * the training set is exactly the brute-force set of admissible rows (so the splitter cannot pass by over-purging);
  * test blocks are contiguous, consecutive, of equal size and end at the last row;
  * the splitter never reads the data: X is an object that only knows its length.
"""
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from scalp_lib.splits import PurgedWalkForward, SplitError, label_end_positions, temporal_split


class LengthOnly:
    "Stands in for a feature matrix: has a length, refuses to be read (proves no data is copied)."
    def __init__(self, n): self.n = n
    def __len__(self): return self.n
    def __getitem__(self, i): raise AssertionError("the splitter read the data")
    def __array__(self, *a, **k): raise AssertionError("the splitter converted the data to an array")


def _as_rows(part):
    if isinstance(part, slice): return np.arange(part.start, part.stop)
    return np.asarray(part)


@st.composite
def label_ends(draw, n):
    "Either ('horizon', h) or ('t1', positions with some long and some missing labels)."
    if draw(st.booleans()):
        return 'horizon', draw(st.integers(0, 30)), None
    lengths = draw(st.lists(st.integers(0, 40), min_size=n, max_size=n))
    t1 = (np.arange(n) + np.array(lengths)).astype(float)
    n_missing = draw(st.integers(0, min(3, n)))
    if n_missing:
        t1[draw(st.lists(st.integers(0, n - 1), min_size=n_missing, max_size=n_missing))] = np.nan
    return 't1', None, t1


def _assert_no_leak(train, test_first, test_last, ends, embargo, n):
    train = _as_rows(train)
    assert train.dtype.kind in 'iu'
    assert len(train) >= 1
    assert np.all(np.diff(train) > 0), "train rows must be sorted and unique"
    assert train.min() >= 0 and train.max() < test_first, "train must precede test"
    test_rows = np.arange(test_first, test_last + 1)
    lo = test_first - embargo
    hi = ends[test_rows].max() + embargo
    overlap = (ends[train] >= lo) & (train <= hi)
    assert not overlap.any(), f"train rows {train[overlap][:5]} have labels reaching the embargoed test window [{lo}, {hi}]"


RAN = {'wf_ok': 0, 'wf_error': 0, 'ts_ok': 0, 'ts_error': 0}


def _assert_really_impossible(n, n_splits, train_bars, test_bars, h, embargo, ends):
    "The documented layout does not fit, or some fold has no admissible training row."
    gap = (h or 0) + embargo
    tb = test_bars if test_bars is not None else (n // (n_splits + 1) if train_bars is None else (n - train_bars - gap) // n_splits)
    first = n - n_splits * tb
    if tb < 1 or first < (train_bars or 1) + gap: return
    for k in range(n_splits):
        s = first + k * tb
        if not np.any(ends[:s] < s - embargo): return
    raise AssertionError("SplitError raised for a configuration where every fold has training rows")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_walk_forward_never_leaks(data):
    n = data.draw(st.integers(10, 600), label='n')
    n_splits = data.draw(st.integers(1, 6), label='n_splits')
    embargo = data.draw(st.integers(0, 25), label='embargo')
    kind, h, t1 = data.draw(label_ends(n), label='labels')
    expanding = data.draw(st.booleans(), label='expanding')
    train_bars = None if expanding and data.draw(st.booleans()) else data.draw(st.integers(1, max(1, n // 2)), label='train_bars')
    test_bars = data.draw(st.none() | st.integers(1, max(1, n // 3)), label='test_bars')
    kw = dict(horizon_bars=h) if kind == 'horizon' else dict(t1=t1)
    ends, _ = label_end_positions(n, **kw)
    cv = PurgedWalkForward(n_splits, train_bars=train_bars, expanding=expanding, test_bars=test_bars,
                           embargo_bars=embargo, **kw)
    try:
        folds = list(cv.folds(LengthOnly(n)))
        pairs = list(cv.split(LengthOnly(n)))
    except SplitError:
        _assert_really_impossible(n, n_splits, train_bars, test_bars, h, embargo, ends)
        RAN['wf_error'] += 1
        return
    RAN['wf_ok'] += 1
    assert len(folds) == len(pairs) == n_splits == cv.get_n_splits()
    tb = folds[0].n_test
    assert folds[-1].test.stop == n
    for k, (f, (tr_idx, te_idx)) in enumerate(zip(folds, pairs)):
        assert f.k == k and f.n_test == tb
        if k: assert f.test.start == folds[k - 1].test.stop
        np.testing.assert_array_equal(_as_rows(f.train), tr_idx)
        np.testing.assert_array_equal(te_idx, np.arange(f.test.start, f.test.stop))
        assert tr_idx.dtype == np.int64 and te_idx.dtype == np.int64
        _assert_no_leak(tr_idx, f.test.start, f.test.stop - 1, ends, embargo, n)
        # exactly the admissible rows (no over-purging), then the rolling window keeps the last train_bars of them
        admissible = np.flatnonzero(ends[:f.test.start] < f.test.start - embargo)
        assert f.n_purged == f.test.start - len(admissible)
        if not expanding: admissible = admissible[-train_bars:]
        np.testing.assert_array_equal(tr_idx, admissible)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_walk_forward_errors_only_when_impossible(data):
    "A SplitError is raised only when some fold really has no admissible training row or the layout does not fit."
    n = data.draw(st.integers(2, 200))
    n_splits = data.draw(st.integers(1, 8))
    h = data.draw(st.integers(0, 20))
    embargo = data.draw(st.integers(0, 20))
    cv = PurgedWalkForward(n_splits, horizon_bars=h, embargo_bars=embargo)
    tb = n // (n_splits + 1)
    first = n - n_splits * tb
    possible = tb >= 1 and first - h - embargo >= 1
    if possible:
        assert len(list(cv.split(LengthOnly(n)))) == n_splits
    else:
        with pytest.raises(SplitError):
            list(cv.split(LengthOnly(n)))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_temporal_split_never_leaks(data):
    n = data.draw(st.integers(20, 800), label='n')
    embargo = data.draw(st.integers(0, 20), label='embargo')
    kind, h, t1 = data.draw(label_ends(n), label='labels')
    three = data.draw(st.booleans())
    a = data.draw(st.floats(0.2, 0.7))
    fractions = (a, (1 - a) / 2, (1 - a) / 2) if three else (a, 1 - a)
    kw = dict(horizon_bars=h) if kind == 'horizon' else dict(t1=t1)
    ends, _ = label_end_positions(n, **kw)
    try:
        sp = temporal_split(LengthOnly(n), fractions, embargo_bars=embargo, **kw)
    except SplitError:
        cuts = [int(round(n * c)) for c in np.cumsum(fractions)[:-1]]
        starts = [0, *cuts]
        assert any(not np.any(ends[a:b] + embargo < b) for a, b in zip(starts, cuts)), "SplitError although every segment keeps rows"
        RAN['ts_error'] += 1
        return
    RAN['ts_ok'] += 1
    parts = [_as_rows(p) for p in sp.parts().values()]
    assert len(parts) == (3 if three else 2)
    starts = [0, *sp.boundaries]
    for k, rows in enumerate(parts):
        assert len(rows) and np.all(np.diff(rows) > 0)
        assert rows[0] >= starts[k]
        if k + 1 < len(parts):
            nxt = parts[k + 1]
            assert rows[-1] < nxt[0], "segments must be in time order"
            # every later segment is a 'test window' for this one: no label reaches it or its embargo
            for later in parts[k + 1:]:
                _assert_no_leak(rows, later[0], later[-1], ends, embargo, n)
            admissible = starts[k] + np.flatnonzero(ends[starts[k]:sp.boundaries[k]] + embargo < sp.boundaries[k])
            np.testing.assert_array_equal(rows, admissible)
    np.testing.assert_array_equal(parts[-1], np.arange(sp.boundaries[-1], n))


def test_cross_val_score_accepts_it():
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    rng = np.random.default_rng(1)
    X = rng.normal(size=(500, 4)); y = (X[:, 0] > 0).astype(int)
    t1 = np.minimum(np.arange(500) + rng.integers(0, 15, 500), 499)
    scores = cross_val_score(LogisticRegression(), X, y, cv=PurgedWalkForward(3, t1=t1, embargo_bars=5))
    assert len(scores) == 3 and np.all(scores > 0.8)


def test_timestamp_t1_equals_positional_t1():
    idx = pd.date_range('2024-03-04 08:30', periods=300, freq='min', tz='America/Chicago')
    rng = np.random.default_rng(2)
    pos = np.minimum(np.arange(300) + rng.integers(0, 20, 300), 299)
    t1_ts = pd.Series(idx[pos], index=idx).dt.tz_convert('UTC')      # other tz: same instants
    t1_ts.iloc[-3:] = pd.NaT
    ends, n_missing = label_end_positions(300, t1=t1_ts)
    pos2 = pos.copy(); pos2[-3:] = 299
    np.testing.assert_array_equal(ends, pos2)
    assert n_missing == 3
    a = [tr for tr, _ in PurgedWalkForward(3, t1=t1_ts, embargo_bars=4).split(np.zeros(300))]
    b = [tr for tr, _ in PurgedWalkForward(3, t1=pos2, embargo_bars=4).split(np.zeros(300))]
    for x, y in zip(a, b): np.testing.assert_array_equal(x, y)


def test_split_is_lazy_and_small():
    "split() is a generator: folds are produced one at a time, and a fold of a huge n costs only its index arrays."
    cv = PurgedWalkForward(10, horizon_bars=10, embargo_bars=60)
    gen = cv.split(LengthOnly(6_200_000))
    assert iter(gen) is gen
    tr, te = next(gen)
    assert tr.dtype == np.int64 and te.dtype == np.int64 and len(te) == 6_200_000 // 11
    folds = cv.folds(LengthOnly(6_200_000))
    f = next(folds)
    assert isinstance(f.train, slice) and isinstance(f.test, slice)


def test_property_tests_were_not_vacuous():
    "Run after the property tests (file order): most generated configurations must have produced real splits."
    if RAN['wf_ok'] + RAN['wf_error'] == 0 or RAN['ts_ok'] + RAN['ts_error'] == 0:
        pytest.skip("the property tests did not run in this session (run the whole file)")
    assert RAN['wf_ok'] >= 100, RAN
    assert RAN['ts_ok'] >= 100, RAN


# ---------------------------------------------------------------- multi-horizon label ends

@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_multi_horizon_t1_purges_by_the_longest_horizon(data):
    "No training row's window, for ANY of its horizons, touches a test block extended by the embargo; ends are exact maxima."
    n = data.draw(st.integers(40, 400), label='n')
    H = data.draw(st.integers(1, 4), label='n_horizons')
    embargo = data.draw(st.integers(0, 15), label='embargo')
    lengths = np.array(data.draw(st.lists(st.lists(st.integers(0, 30), min_size=H, max_size=H), min_size=n, max_size=n)))
    t1 = (np.arange(n)[:, None] + lengths).astype(float)
    holes = data.draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, H - 1)), max_size=n // 4))
    for r, c in holes: t1[r, c] = np.nan                       # horizons without a label
    ends, n_missing = label_end_positions(n, t1=t1)
    all_nan = np.isnan(t1).all(axis=1)
    expect = np.where(all_nan, n - 1, np.nanmax(np.where(np.isnan(t1), -1, t1), axis=1)).astype(np.int64)
    np.testing.assert_array_equal(ends, expect)
    assert n_missing == int(all_nan.sum())
    frame = pd.DataFrame(t1, columns=[f't1_pos_h{j}' for j in range(H)])
    np.testing.assert_array_equal(label_end_positions(n, t1=frame)[0], ends)
    cv = PurgedWalkForward(data.draw(st.integers(1, 4)), t1=t1, embargo_bars=embargo)
    try: folds = list(cv.split(LengthOnly(n)))
    except SplitError: return
    for tr, te in folds:
        zone_start = te[0] - embargo
        for j in range(H):                                      # every horizon separately, NaN horizons aside
            e = t1[tr, j]
            assert not (e[~np.isnan(e)] >= zone_start).any()
        assert not (all_nan[tr] & (n - 1 >= zone_start)).any()  # a row without any end is treated as ending last
        np.testing.assert_array_equal(tr, np.flatnonzero(ends[:te[0]] < zone_start))


def test_multi_horizon_labels_split_on_real_timestamps():
    from scalp_lib.data import demo_bars
    from scalp_lib.labels import multi_horizon_labels
    b = demo_bars(n_days=2, seed=0)
    mh = multi_horizon_labels(b, {'kind': 'direction'}, horizons=[5, 30])
    ends, _ = label_end_positions(len(b), t1=mh[mh.attrs['t1_columns']])
    rows = np.arange(len(b))
    np.testing.assert_array_equal(ends[mh['all_labelled'].to_numpy()], rows[mh['all_labelled'].to_numpy()] + 30)
    only5 = mh['label_h5'].notna().to_numpy() & mh['label_h30'].isna().to_numpy()
    assert only5.any()
    np.testing.assert_array_equal(ends[only5], rows[only5] + 5)
    sp = temporal_split(len(b), (0.6, 0.4), t1=mh[mh.attrs['t1_columns']], embargo_bars=10)
    assert (ends[sp.train] < sp.boundaries[0] - 10).all()
    with pytest.raises(SplitError, match='only end time stamps or only end positions'):
        label_end_positions(len(b), t1=mh)
