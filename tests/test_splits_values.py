"""Splits with their numbers written out: segment bounds, rows purged, fold tables, the edges of the error rules.

Written against the mutants that the property tests let through (tools/mutate.py splits): each assertion pins a
value that a plausible slip (an off-by-one bound, a lost count, a check that no longer fires) would change.
"""
import numpy as np
import pandas as pd
import pytest

from scalp_lib.config import section_defaults
from scalp_lib.splits import PurgedWalkForward, SplitError, label_end_positions, temporal_split


def test_temporal_split_bounds_and_purged_counts_fixed_horizon():
    sp = temporal_split(100, (0.6, 0.2, 0.2), horizon_bars=3, embargo_bars=2)
    assert (sp.train, sp.val, sp.test) == (slice(0, 55), slice(60, 75), slice(80, 100))
    assert sp.boundaries == (60, 80) and sp.n == 100 and sp.embargo_bars == 2 and sp.horizon_bars == 3
    assert sp.n_purged == {'train': 5, 'val': 5, 'test': 0} and sp.n_missing_t1 == 0
    assert sp.sizes() == {'train': 55, 'val': 15, 'test': 20}
    assert list(sp.parts()) == ['train', 'val', 'test'] and list(sp) == [sp.train, sp.val, sp.test]
    s = sp.summary()
    assert s.to_dict('index') == {'train': dict(first_row=0, last_row=54, n_rows=55, n_purged=5),
                                  'val': dict(first_row=60, last_row=74, n_rows=15, n_purged=5),
                                  'test': dict(first_row=80, last_row=99, n_rows=20, n_purged=0)}
    assert 'TemporalSplit</b> of 100 rows' in sp._repr_html_() and '<table' in sp._repr_html_()


def test_temporal_split_with_t1_gives_index_arrays_and_counts_missing_ends():
    t1 = np.arange(50, dtype=float) + 2
    t1[[10, 45]] = np.nan                                  # two missing ends: treated as the last row
    sp = temporal_split(50, (0.6, 0.4), t1=t1, embargo_bars=1)
    assert sp.val is None and list(sp.parts()) == ['train', 'test'] and sp.horizon_bars is None
    assert sp.train.dtype == np.int64 and sp.test.dtype == np.int64
    # train rows 0..29: a row stays when t1 + 1 < 30, i.e. t1 <= 28 (rows 0..26), minus row 10 (its end is row 49)
    np.testing.assert_array_equal(sp.train, np.r_[0:10, 11:27])
    np.testing.assert_array_equal(sp.test, np.arange(30, 50))
    assert sp.n_purged == {'train': 4, 'test': 0} and sp.n_missing_t1 == 2
    assert sp.summary().loc['train', 'last_row'] == 26 and sp.summary().loc['train', 'first_row'] == 0


def test_temporal_split_default_fractions_are_the_settings():
    cfg = section_defaults('splits')
    a = temporal_split(1000, horizon_bars=1, embargo_bars=0)
    b = temporal_split(1000, (cfg['train_frac'], cfg['val_frac'], cfg['test_frac']), horizon_bars=1, embargo_bars=0)
    assert a.boundaries == b.boundaries and a.sizes() == b.sizes()


@pytest.mark.parametrize('fractions', [(0.6, 0.0, 0.4), (0.6, 0.3, 0.3), (0.5, 0.4), (0.5, 0.2, 0.2), (0.3, 0.3, 0.2, 0.2), ('a', 1)])
def test_bad_fractions_are_a_split_error(fractions):
    with pytest.raises(SplitError, match='fractions='):
        temporal_split(100, fractions, horizon_bars=1)


def test_an_empty_segment_names_itself():
    with pytest.raises(SplitError, match=r'the val segment \(rows 60\.\.74, fraction 0\.15\) is empty after purging'):
        temporal_split(100, (0.6, 0.15, 0.25), horizon_bars=10, embargo_bars=5)
    with pytest.raises(SplitError, match='embargo_bars=-1 must be >= 0'):
        temporal_split(100, (0.5, 0.5), horizon_bars=1, embargo_bars=-1)


def test_walk_forward_fold_table_expanding_and_rolling():
    wf = PurgedWalkForward(3, horizon_bars=2, embargo_bars=1)
    d = wf.describe(100)
    assert d.to_dict('list') == dict(train_first=[0, 0, 0], train_last=[21, 46, 71], n_train=[22, 47, 72],
                                     test_first=[25, 50, 75], test_last=[49, 74, 99], n_test=[25, 25, 25],
                                     n_purged=[3, 3, 3])
    assert wf.get_n_splits() == 3 and list(d.index) == [0, 1, 2]
    roll = PurgedWalkForward(2, horizon_bars=2, embargo_bars=1, expanding=False, train_bars=10, test_bars=20)
    assert [(f.train, f.test) for f in roll.folds(100)] == [(slice(47, 57), slice(60, 80)), (slice(67, 77), slice(80, 100))]
    tr, te = next(roll.split(np.zeros(100)))
    assert tr.dtype == te.dtype == np.int64
    np.testing.assert_array_equal(tr, np.arange(47, 57)) and np.testing.assert_array_equal(te, np.arange(60, 80))


def test_walk_forward_with_contiguous_t1_gives_slices_and_the_same_folds_as_horizon():
    n = 120
    by_h = list(PurgedWalkForward(3, horizon_bars=4, embargo_bars=2).folds(n))
    by_t1 = list(PurgedWalkForward(3, t1=np.arange(n) + 4, embargo_bars=2).folds(n))
    for a, b in zip(by_h, by_t1):
        assert isinstance(b.train, slice) and (a.train, a.test, a.n_purged) == (b.train, b.test, b.n_purged)
    roll = list(PurgedWalkForward(2, t1=np.arange(n) + 4, embargo_bars=2, expanding=False, train_bars=15).folds(n))
    assert [(f.train, f.test) for f in roll] == [(slice(0, 12), slice(18, 69)), (slice(48, 63), slice(69, 120))]   # slices, rolling
    # a gap in the kept rows: an index array
    t1 = np.arange(n) + 4
    t1[5] = n - 1
    f0 = next(PurgedWalkForward(3, t1=t1, embargo_bars=2).folds(n))
    assert isinstance(f0.train, np.ndarray) and 5 not in f0.train and f0.n_train == f0.train.size
    assert repr(PurgedWalkForward(3, t1=t1)).count("t1=<given>") == 1 and "t1=None" in repr(PurgedWalkForward(3, horizon_bars=1))


def test_walk_forward_layout_edges():
    # n_splits=2 x test 10 leaves 20 rows before the first test block; it needs train 15 + horizon 3 + embargo 2 = 20
    PurgedWalkForward(2, train_bars=15, expanding=False, test_bars=10, horizon_bars=3, embargo_bars=2).describe(40)
    with pytest.raises(SplitError, match=r'leaves 19 rows before the first test block, but it needs 20 \(training rows 15 \+ horizon 3 \+ embargo 2\)'):
        PurgedWalkForward(2, train_bars=15, expanding=False, test_bars=10, horizon_bars=3, embargo_bars=2).describe(39)
    with pytest.raises(SplitError, match=r'n=3 rows are too few for n_splits=4: each test block'):
        PurgedWalkForward(4, horizon_bars=0, embargo_bars=0).describe(3)
    with pytest.raises(SplitError, match=r'with train_bars=10 and horizon\+embargo=3: each test block'):
        PurgedWalkForward(2, train_bars=10, expanding=False, horizon_bars=2, embargo_bars=1).describe(14)
    with pytest.raises(SplitError, match=r'fold 0: 0 training rows remain before test rows 5\.\.9'):
        PurgedWalkForward(2, t1=np.full(15, 14), embargo_bars=0).describe(15)


@pytest.mark.parametrize('kw, msg', [
    (dict(n_splits=0, horizon_bars=1), 'n_splits=0 must be >= 1'),
    (dict(n_splits=2, horizon_bars=1, embargo_bars=-1), 'embargo_bars=-1 must be >= 0'),
    (dict(n_splits=2), 'give exactly one of horizon_bars'),
    (dict(n_splits=2, horizon_bars=1, t1=np.arange(5)), 'give exactly one of horizon_bars'),
    (dict(n_splits=2, horizon_bars=1, expanding=False), r'expanding=False \(rolling window\) needs train_bars'),
    (dict(n_splits=2, horizon_bars=1, train_bars=0), 'train_bars=0 must be a positive integer'),
    (dict(n_splits=2, horizon_bars=1, test_bars=2.5), 'test_bars=2.5 must be a positive integer'),
])
def test_walk_forward_settings_errors(kw, msg):
    with pytest.raises(SplitError, match=msg):
        PurgedWalkForward(**kw)


def test_multi_horizon_t1_checks():
    with pytest.raises(SplitError, match='t1 is a frame without columns'):
        label_end_positions(3, t1=pd.DataFrame(index=range(3)))
    with pytest.raises(SplitError, match='only end time stamps or only end positions'):
        label_end_positions(2, t1=pd.DataFrame({'a': [1, 1], 'b': [True, True]}))
    with pytest.raises(SplitError, match='a 2-D t1 must hold end positions, got dtype bool'):
        label_end_positions(2, t1=np.ones((2, 2), bool))
    pos, missing = label_end_positions(3, t1=pd.DataFrame({'a': [1.0, np.nan, np.nan], 'b': [2.0, 2.0, np.nan]}))
    np.testing.assert_array_equal(pos, [2, 2, 2]) and missing == 1
    pos, missing = label_end_positions(3, t1=np.array([[1.0, np.nan], [np.nan, np.nan], [2.0, 2.0]]))
    np.testing.assert_array_equal(pos, [1, 2, 2])
    assert missing == 1
