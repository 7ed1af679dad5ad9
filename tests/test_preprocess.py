"""Tests for scalp_lib.preprocess: scikit-learn conformance, the seed's infinity crashes (000 #1, #2) as property
tests, checkpoint round trips through torch.load(weights_only=True), and chunking correctness."""
import io
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from scalp_lib.preprocess import (NonFiniteInputError, NonNumericInputError, RobustFeatureScaler, ScalingError,
                                  ScalingWarning, feature_drift)

METHODS = ['iqr', 'mad', 'quantile_normal']


@pytest.mark.parametrize('method', METHODS)
@pytest.mark.parametrize('nan_policy', ['impute', 'mask'])
def test_sklearn_check_estimator(method, nan_policy):
    from sklearn.utils.estimator_checks import check_estimator
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        results = check_estimator(RobustFeatureScaler(method=method, nan_policy=nan_policy, warn=False), on_fail=None)
    failed = [(r['check_name'], str(r['exception'])[:200]) for r in results if r['status'] == 'failed']
    assert not failed, failed
    assert sum(r['status'] == 'passed' for r in results) >= 40


def _inject(rng, A, n_bad):
    "Put NaN, +inf and -inf at random positions; return the counts per feature as (p, 3)."
    A = A.copy()
    counts = np.zeros((A.shape[1], 3), np.int64)
    for _ in range(n_bad):
        i, j, k = rng.integers(A.shape[0]), rng.integers(A.shape[1]), rng.integers(3)
        if not np.isfinite(A[i, j]): continue
        A[i, j] = (np.nan, np.inf, -np.inf)[k]
        counts[j, k] += 1
    return A, counts


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), n_train=st.integers(2, 300), n_val=st.integers(1, 200), p=st.integers(1, 6),
       n_bad_train=st.integers(0, 40), n_bad_val=st.integers(0, 40), method=st.sampled_from(METHODS),
       scale=st.sampled_from([1e-6, 1.0, 1e6]))
def test_infinities_never_crash_and_never_leak(seed, n_train, n_val, p, n_bad_train, n_bad_val, method, scale):
    "Seed 000 #1 (inf in train) and #2 (inf in val/test): no crash, no inf out, every bad value counted."
    rng = np.random.default_rng(seed)
    train, c_train = _inject(rng, (rng.standard_t(3, (n_train, p)) * scale).astype(np.float32), n_bad_train)
    val, c_val = _inject(rng, (rng.standard_t(3, (n_val, p)) * scale).astype(np.float32), n_bad_val)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', ScalingWarning)
        sc = RobustFeatureScaler(method=method).fit(train)
        np.testing.assert_array_equal(sc.fit_counts_, c_train)
        assert np.isfinite(sc.scale_).all() and (sc.scale_ > 0).all() and np.isfinite(sc.center_).all()
        Z = sc.transform(val)
        assert Z.dtype == np.float32 and Z.shape == val.shape
        assert np.isfinite(Z).all()
        assert np.abs(Z).max() <= sc.clip_
        rep = sc.last_transform_report_
        np.testing.assert_array_equal(rep[['n_nan', 'n_posinf', 'n_neginf']].to_numpy(), c_val)
        assert rep.attrs['n_rows'] == n_val
        Zm = RobustFeatureScaler(method=method, nan_policy='mask').fit(train).transform(val)
        assert not np.isinf(Zm).any()
        np.testing.assert_array_equal(np.isnan(Zm), ~np.isfinite(val))
        np.testing.assert_array_equal(Zm[np.isfinite(val)], Z[np.isfinite(val)])


def test_statistics_use_finite_train_values_only():
    rng = np.random.default_rng(0)
    A = rng.normal(5, 2, (2000, 3))
    B = A.copy(); B[::7, 1] = np.inf; B[::11, 2] = np.nan
    sc = RobustFeatureScaler(clip=np.inf).fit(B)
    for j in range(3):
        v = B[:, j][np.isfinite(B[:, j])]
        q25, med, q75 = np.percentile(v, [25, 50, 75])
        assert sc.center_[j] == pytest.approx(med)
        assert sc.scale_[j] == pytest.approx((q75 - q25) / 1.3489795003921634)


def test_fit_on_train_only_transform_does_not_change_state():
    rng = np.random.default_rng(1)
    train, val = rng.normal(size=(500, 4)), rng.normal(10, 5, size=(500, 4))
    sc = RobustFeatureScaler().fit(train)
    before = {k: np.copy(v) for k, v in sc.state_dict().items() if isinstance(v, np.ndarray)}
    sc.transform(val)
    after = sc.state_dict()
    for k, v in before.items(): np.testing.assert_array_equal(after[k], v)


def test_constant_and_empty_features_never_divide_by_zero():
    A = np.c_[np.full(100, 3.0), np.r_[np.zeros(95), np.ones(5)], np.full(100, np.nan), np.arange(100.0)]
    with pytest.warns(ScalingWarning, match='no finite training value'):
        sc = RobustFeatureScaler().fit(A)
    assert (sc.scale_ > 0).all() and np.isfinite(sc.scale_).all()
    assert list(sc.fit_report_['scale_from']) == ['constant', 'std', 'no_finite_values', 'robust']
    with np.errstate(all='raise'):     # any division by zero or invalid op would raise here
        Z = sc.transform(np.c_[np.full(5, 1e9), np.ones(5), np.ones(5), np.ones(5)])
    assert np.isfinite(Z).all()
    np.testing.assert_array_equal(Z[:, 2], 0.0)
    assert (Z[:, 0] == 10.0).all()     # a constant train feature: new values are clipped, not exploded


@pytest.mark.parametrize('method', METHODS)
@pytest.mark.parametrize('nan_policy', ['impute', 'mask', 'raise'])
def test_state_roundtrips_through_torch_weights_only(method, nan_policy):
    rng = np.random.default_rng(2)
    df = pd.DataFrame(rng.standard_t(4, (400, 5)).astype(np.float32), columns=[f'f{i}' for i in range(5)])
    sc = RobustFeatureScaler(method=method, nan_policy=nan_policy, clip=7.5).fit(df)
    state = sc.state_dict(as_tensors=True)

    def plain(v):
        if isinstance(v, dict): return all(isinstance(k, str) and plain(x) for k, x in v.items())
        if isinstance(v, (list, tuple)): return all(plain(x) for x in v)
        return v is None or isinstance(v, (str, int, float, bool, torch.Tensor))
    assert plain(state)
    buf = io.BytesIO()
    torch.save({'scaler': state}, buf)
    buf.seek(0)
    back = RobustFeatureScaler.from_state_dict(torch.load(buf, weights_only=True)['scaler'])
    new = pd.DataFrame(rng.standard_t(4, (300, 5)).astype(np.float32) * 3, columns=df.columns)
    np.testing.assert_array_equal(back.transform(new), sc.transform(new))
    assert back.get_params() == sc.get_params() | {'clip': 7.5}
    assert list(back.feature_names_in_) == list(df.columns)
    # the numpy form is equally complete
    np.testing.assert_array_equal(RobustFeatureScaler.from_state_dict(sc.state_dict()).transform(new), sc.transform(new))


def test_state_errors_are_named():
    sc = RobustFeatureScaler().fit(np.random.default_rng(3).normal(size=(50, 3)))
    with pytest.raises(ScalingError, match="kind is 'StandardScaler'"):
        RobustFeatureScaler.from_state_dict({**sc.state_dict(), 'kind': 'StandardScaler'})
    with pytest.raises(ScalingError, match=r"lacks key\(s\) \['center'\]"):
        RobustFeatureScaler.from_state_dict({k: v for k, v in sc.state_dict().items() if k != 'center'})
    bad = sc.state_dict(); bad['scale'] = np.array([1.0, 0.0, 1.0])
    with pytest.raises(ScalingError, match='finite and > 0'):
        RobustFeatureScaler.from_state_dict(bad)


def test_strings_are_refused_by_name():
    "Seed 002: `unsupported operand type(s) for /: 'str' and 'int'`."
    df = pd.DataFrame({'a': [1.0, 2.0], 'price': ['4800.25', 'n/a']})
    with pytest.raises(NonNumericInputError, match=r"\['price'\]"):
        RobustFeatureScaler().fit(df)
    sc = RobustFeatureScaler().fit(pd.DataFrame({'a': [1.0, 2.0, 3.0], 'price': [1.0, 2.0, 4.0]}))
    with pytest.raises(NonNumericInputError, match=r"\['price'\]"):
        sc.transform(df)


def test_raise_policy_names_the_features():
    A = np.random.default_rng(4).normal(size=(50, 3)); A[3, 2] = np.inf
    with pytest.raises(NonFiniteInputError, match='x2: 1'):
        RobustFeatureScaler(nan_policy='raise').fit(A)


@pytest.mark.parametrize('method', METHODS)
def test_chunked_transform_equals_rowwise(method):
    "transform works in row chunks of 2**21 // p rows; the result must not depend on where chunks end."
    p = 64
    n = 2**21 // p * 2 + 17
    rng = np.random.default_rng(5)
    A = rng.standard_normal((n, p), dtype=np.float32)
    A[rng.integers(0, n, 50), rng.integers(0, p, 50)] = np.inf
    sc = RobustFeatureScaler(method=method, warn=False, subsample=20_000).fit(A)
    Z = sc.transform(A)
    rows = np.r_[0, 1, 2**21 // p - 1, 2**21 // p, 2**21 // p + 1, n - 1]
    np.testing.assert_array_equal(Z[rows], sc.transform(A[rows]))


def test_memmap_float32_input(tmp_path):
    mm = np.lib.format.open_memmap(tmp_path / 'f.npy', mode='w+', dtype=np.float32, shape=(5000, 8))
    mm[:] = np.random.default_rng(6).normal(size=(5000, 8)); mm.flush(); del mm
    F = np.load(tmp_path / 'f.npy', mmap_mode='r')
    sc = RobustFeatureScaler().fit(F[:3000])
    Z = sc.transform(F[3000:])
    assert Z.dtype == np.float32 and Z.shape == (2000, 8)
    np.testing.assert_array_equal(Z, sc.transform(np.array(F[3000:])))


def test_drift_flags_shift_and_counts_nonfinite():
    rng = np.random.default_rng(7)
    tr = rng.normal(size=(5000, 3)); te = rng.normal(size=(3000, 3)); te[:, 1] += 0.5; te[:20, 2] = np.nan
    d = feature_drift(tr, {'test': te}, features=['a', 'b', 'c'])
    assert d.iloc[0]['feature'] == 'b' and d.iloc[0]['flagged']
    assert d['flagged'].sum() == 1
    assert int(d.set_index('feature').loc['c', 'n_nonfinite_other']) == 20
    assert d['ks_statistic'].is_monotonic_decreasing


def test_subsample_counts_every_row_and_estimates_stats():
    rng = np.random.default_rng(8)
    A = rng.normal(3, 2, (300_000, 4)).astype(np.float32)
    A, counts = _inject(rng, A, 500)
    full = RobustFeatureScaler(warn=False).fit(A)
    sub = RobustFeatureScaler(warn=False, subsample=50_000, random_state=1).fit(A)
    np.testing.assert_array_equal(sub.fit_counts_, counts)          # counted on all rows, not the sample
    np.testing.assert_array_equal(full.fit_counts_, counts)
    assert sub.n_used_.max() <= 50_000 and sub.n_rows_fit_ == 300_000
    np.testing.assert_allclose(sub.center_, full.center_, atol=0.05)
    np.testing.assert_allclose(sub.scale_, full.scale_, rtol=0.03)
