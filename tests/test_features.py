"""Features: agreement with the `ta` package on real ES bars, causality as a property, no infinities from flat or
zero-volume bars, chunked == in-memory (bit for bit), and memory of the chunked path independent of length."""
import tracemalloc

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from scalp_lib.config import ScalpLibError
from scalp_lib.data import OHLCV, demo_bars, load_bars, session_dates
from scalp_lib.features import (FeatureError, ScalpingFeatureEngineer, UnknownFeatureGroupError, feature_groups,
                                generate_features_chunked, perturb_after, register_feature_group,
                                unregister_feature_group)

ES_FILE = "es_1min_2025-09_11.csv.gz"
WARMUP = 500  # rows skipped before comparing with `ta`: our EWMs start at the first value, ta's ATR at a 14-bar mean


@pytest.fixture(scope="module")
def es_bars(shared_data):
    return load_bars(shared_data / ES_FILE, ts_offset="5h", tz="America/New_York", instrument="ES")


@pytest.fixture(scope="module")
def base_bars():
    "Three demo sessions with a flat, zero-volume stretch and scattered flat bars: the thin-market cases."
    b = demo_bars(n_days=3, seed=11)
    b.iloc[1500:1560, :4] = b["close"].iloc[1500]
    b.iloc[1500:1560, 4] = 0.0
    rng = np.random.default_rng(5)
    flat = rng.random(len(b)) < 0.05
    for k in ("open", "high", "low"):
        b.loc[flat, k] = b.loc[flat, "close"]
    b.loc[rng.random(len(b)) < 0.05, "volume"] = 0.0
    return b


# ---------------------------------------------------------------- agreement with the `ta` package, real ES bars
def test_rsi_matches_ta_wilder(es_bars):
    "Both use Wilder smoothing (ewm alpha=1/n, adjust=False); ta's RSI is 100 where no down move exists yet, ours 50 where no move at all."
    from ta.momentum import RSIIndicator
    ours = ScalpingFeatureEngineer(es_bars, groups=["rsi"]).generate_all_features()
    for w in (7, 14):
        ref = RSIIndicator(es_bars["close"], window=w).rsi().to_numpy()
        np.testing.assert_allclose(ours[f"rsi_{w}"].to_numpy()[WARMUP:], ref[WARMUP:], rtol=1e-5, atol=1e-4)


def test_atr_matches_ta_after_warmup(es_bars):
    "ta starts Wilder's recursion at the mean of the first 14 true ranges, we at the first true range: equal after warm-up."
    from ta.volatility import AverageTrueRange
    ours = ScalpingFeatureEngineer(es_bars, groups=["atr"]).generate_all_features()
    ref = AverageTrueRange(es_bars["high"], es_bars["low"], es_bars["close"], window=14).average_true_range().to_numpy()
    got = ours["atr_14_ticks"].to_numpy(np.float64) * 0.25
    np.testing.assert_allclose(got[WARMUP:], ref[WARMUP:], rtol=1e-5, atol=1e-6)
    # during the warm-up the conventions differ (this is why WARMUP exists), and ta's first 13 values are 0, ours NaN
    assert np.isnan(got[:13]).all() and (ref[:13] == 0).all()


def test_bollinger_matches_ta_and_flat_windows_give_half(es_bars):
    "Same definition (population s.d.); ta's %b is NaN for a zero-width band, ours 0.5. Thin September has such windows."
    from ta.volatility import BollingerBands
    ours = ScalpingFeatureEngineer(es_bars, groups=["bollinger"]).generate_all_features()
    bb = BollingerBands(es_bars["close"], window=20, window_dev=2)
    pb, wb = bb.bollinger_pband().to_numpy(), bb.bollinger_wband().to_numpy()
    got_pb, got_wb = ours["bb_pctb_20"].to_numpy(np.float64), ours["bb_width_20_pct"].to_numpy(np.float64)
    finite = np.isfinite(pb)
    finite[:WARMUP] = False
    np.testing.assert_allclose(got_pb[finite], pb[finite], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got_wb[WARMUP:], wb[WARMUP:], rtol=1e-5, atol=1e-7)
    flat = ~np.isfinite(pb)
    flat[:WARMUP] = False
    assert flat.sum() > 0, "the real file was expected to contain flat 20-bar windows"
    assert (got_pb[flat] == 0.5).all()


def test_stochastic_matches_ta(es_bars):
    "ta divides by the range without a guard (NaN/inf for a flat window); ours is 50 there."
    from ta.momentum import StochasticOscillator
    ours = ScalpingFeatureEngineer(es_bars, groups=["stochastic"]).generate_all_features()
    so = StochasticOscillator(es_bars["high"], es_bars["low"], es_bars["close"], window=14, smooth_window=3)
    k = so.stoch().to_numpy()
    ok = np.isfinite(k)
    ok[:WARMUP] = False
    np.testing.assert_allclose(ours["stoch_k_14"].to_numpy()[ok], k[ok], rtol=1e-5, atol=1e-4)
    assert (ours["stoch_k_14"].to_numpy()[WARMUP:][~np.isfinite(k[WARMUP:])] == 50).all()


def test_real_es_bars_no_inf_and_nan_only_in_warmup(es_bars):
    fe = ScalpingFeatureEngineer(es_bars)
    X = fe.generate_all_features()
    assert X.shape == (len(es_bars), len(fe.feature_names)) and len(fe.feature_names) >= 50
    assert (X.dtypes == np.float32).all() and X.index.equals(es_bars.index)
    assert fe.report.inf_replaced == 0
    assert not X.iloc[fe.report.warmup_rows:].isna().any().any()
    assert fe.report.warmup_rows <= fe.report.overlap_bars


# ---------------------------------------------------------------- causality (property test)
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(t=st.integers(min_value=0, max_value=3 * 1380 - 2), seed=st.integers(0, 2**31 - 1),
       block_rows=st.sampled_from([257, 1000, 131072]))
def test_altering_the_future_changes_nothing_in_the_past(base_bars, t, seed, block_rows):
    "Every bar after t is replaced; every feature of every registered group at or before t must be unchanged."
    cfg = {"block_rows": block_rows}
    a = ScalpingFeatureEngineer(base_bars, groups="all", config=cfg)
    assert set(a.groups) == set(feature_groups().index), "every registered group is under test"
    x = a.generate_all_features().iloc[: t + 1]
    altered = perturb_after(base_bars, t, seed=seed)
    assert not altered.iloc[t + 1:].equals(base_bars.iloc[t + 1:])
    y = ScalpingFeatureEngineer(altered, groups="all", config=cfg).generate_all_features().iloc[: t + 1]
    pd.testing.assert_frame_equal(x, y, check_exact=True)
    # and the future may also simply be absent
    z = ScalpingFeatureEngineer(base_bars.iloc[: t + 1], groups="all", config=cfg).generate_all_features()
    pd.testing.assert_frame_equal(x, z, check_exact=True)


def test_causality_check_catches_a_peeking_group(base_bars):
    def peek(df, spec):
        "Next bar's close: look-ahead."
        c = df["close"].to_numpy()
        return pd.DataFrame({"next_close_ticks": np.r_[c[1:] - c[:-1], np.nan] / 0.25}, index=df.index)
    register_feature_group("peek_test", peek, lookback_bars=0, default=False)
    try:
        x = ScalpingFeatureEngineer(base_bars, groups=["peek_test"]).generate_all_features()
        y = ScalpingFeatureEngineer(perturb_after(base_bars, 100, seed=1), groups=["peek_test"]).generate_all_features()
        assert x.iloc[100, 0] != y.iloc[100, 0]
    finally:
        unregister_feature_group("peek_test")


# ---------------------------------------------------------------- infinities
def test_flat_zero_volume_bars_produce_no_inf():
    "Every bar identical and without volume, then a mix: no inf; NaN only where a quantity does not exist."
    b = demo_bars(n_days=2, seed=2)
    dead = b.copy()
    dead[["open", "high", "low", "close"]] = 5000.0
    dead["volume"] = 0.0
    fe = ScalpingFeatureEngineer(dead)
    X = fe.generate_all_features()
    assert fe.report.inf_replaced == 0 and not np.isinf(X.to_numpy()).any()
    nan_cols = set(X.columns[X.iloc[400:].isna().any()])
    assert nan_cols == {"vwap_dist_ticks", "vwap_dist_sd", "vwap_slope_5_ticks", "vpoc_dist_ticks", "vah_dist_ticks",
                        "val_dist_ticks", "va_width_ticks", "va_pos"}, nan_cols
    # flat but traded: the profile and the VWAP exist, everything is finite after warm-up
    traded = dead.assign(volume=10.0)
    Y = ScalpingFeatureEngineer(traded).generate_all_features()
    assert np.isfinite(Y.iloc[400:].to_numpy()).all()
    assert (Y["candle_body"] == 0).all() and (Y["bb_pctb_20"].iloc[400:] == 0.5).all() and (Y["rsi_14"].iloc[400:] == 50).all()


def test_infinities_are_replaced_and_counted():
    def blow_up(df, spec):
        "1/volume (inf on zero volume) and a value beyond float32."
        v = df["volume"].to_numpy()
        with np.errstate(divide="ignore"):
            return pd.DataFrame({"inv_vol": 1.0 / v, "huge": np.full(len(v), 1e300)}, index=df.index)
    register_feature_group("blow_up_test", blow_up, lookback_bars=0, default=False)
    try:
        b = demo_bars(n_days=1, seed=4)
        b.iloc[10:17, 4] = 0.0
        fe = ScalpingFeatureEngineer(b, groups=["blow_up_test", "candle"])
        X = fe.generate_all_features()
        t = fe.report.table
        assert t.loc["inv_vol", "inf_count"] == 7 and t.loc["huge", "inf_count"] == len(b)
        assert t.loc["candle_body", "inf_count"] == 0
        assert X["inv_vol"].isna().sum() == 7 and X["huge"].isna().all()
        assert not np.isinf(X.to_numpy()).any()
    finally:
        unregister_feature_group("blow_up_test")


# ---------------------------------------------------------------- chunked == in memory
def _frame_equal(path, expected):
    pd.testing.assert_frame_equal(pd.read_parquet(path), expected, check_exact=True, check_freq=False)


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_chunked_equals_in_memory_demo(tmp_path, fmt):
    bars = demo_bars(n_days=4, seed=8)
    src = tmp_path / f"bars.{fmt}"
    if fmt == "parquet":
        bars.to_parquet(src)
    else:
        bars.to_csv(src)  # ISO stamps with UTC offsets: load_bars converts them back
    cfg = {"block_rows": 1000}
    mem = ScalpingFeatureEngineer(load_bars(src), config=cfg)
    expected = mem.generate_all_features()
    for chunk_rows in (97, 777, 1380, 10**6) if fmt == "parquet" else (999,):
        out = tmp_path / f"f_{chunk_rows}.parquet"
        rep = generate_features_chunked(src, out, chunk_rows=chunk_rows, config=cfg, progress=False)
        _frame_equal(out, expected)
        pd.testing.assert_frame_equal(rep.table, mem.report.table)
        assert rep.n_rows == len(bars)


def test_chunked_equals_in_memory_iterable_and_groups(tmp_path):
    bars = demo_bars(n_days=3, seed=9)
    kw = dict(groups=["vwap", "opening_range", "rsi"], params={"opening_range": {"anchor": "08:30"}}, config={"block_rows": 500})
    expected = ScalpingFeatureEngineer(bars, **kw).generate_all_features()
    pieces = (bars.iloc[i:i + 611] for i in range(0, len(bars), 611))
    generate_features_chunked(pieces, tmp_path / "f.parquet", progress=False, **kw)
    _frame_equal(tmp_path / "f.parquet", expected)


def test_chunked_equals_in_memory_real_es(shared_data, tmp_path):
    src = shared_data / ES_FILE
    kw = dict(ts_offset="5h", tz="America/New_York", instrument="ES")
    expected = ScalpingFeatureEngineer(load_bars(src, **kw)).generate_all_features()   # one block of 75,791 rows
    rep = generate_features_chunked(src, tmp_path / "es.parquet", chunk_rows=10_000, progress=False, **kw)
    _frame_equal(tmp_path / "es.parquet", expected)
    assert rep.n_rows == len(expected) and any("0 dropped" in n for n in rep.notes)


def test_chunked_rejects_time_going_backwards(tmp_path):
    bars = demo_bars(n_days=1, seed=1)
    pieces = [bars.iloc[500:], bars.iloc[:500]]
    with pytest.raises(FeatureError, match="not in time order"):
        generate_features_chunked(pieces, tmp_path / "f.parquet", progress=False)
    assert not (tmp_path / "f.parquet").exists() and not (tmp_path / "f.parquet.partial").exists()


def test_chunked_memory_does_not_grow_with_rows(tmp_path):
    """Peak traced allocation for 8x the rows stays within 1.5x (chunk and block sizes fixed).

    The peak varies a little with the price range inside profile windows; holding the output in memory would add
    110,400 rows x 64 features x 4 bytes = 28 MB, more than twice the whole peak of the short run."""
    peaks = []
    for days in (10, 80):
        src = tmp_path / f"b{days}.parquet"
        demo_bars(n_days=days, seed=days).to_parquet(src)
        tracemalloc.start()
        generate_features_chunked(src, tmp_path / f"f{days}.parquet", chunk_rows=2000,
                                  config={"block_rows": 4096}, progress=False)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    assert peaks[1] < 1.5 * peaks[0], peaks


def test_block_grid_changes_values_only_at_rounding():
    bars = demo_bars(n_days=3, seed=6)
    a = ScalpingFeatureEngineer(bars, config={"block_rows": 10**9}).generate_all_features()
    b = ScalpingFeatureEngineer(bars, config={"block_rows": 700}).generate_all_features()
    np.testing.assert_allclose(b.to_numpy(), a.to_numpy(), rtol=1e-5, atol=1e-5, equal_nan=True)


# ---------------------------------------------------------------- API contracts (seed bug #6: constructor drift)
def test_api_contract_and_errors():
    bars = demo_bars(n_days=1, seed=3)
    with pytest.raises(TypeError):
        ScalpingFeatureEngineer()  # the seed's scripts called it without bars: that must fail loudly
    fe = ScalpingFeatureEngineer(bars, instrument="ES")
    assert fe.generate_all_features().columns.tolist() == fe.feature_names
    with pytest.raises(UnknownFeatureGroupError) as e:
        ScalpingFeatureEngineer(bars, groups=["nope"])
    assert isinstance(e.value, ScalpLibError) and isinstance(e.value, KeyError) and "registered" in str(e.value)
    with pytest.raises(FeatureError, match="has no parameter"):
        ScalpingFeatureEngineer(bars, params={"atr": {"windo": 3}})
    bad = bars.copy()
    bad.iloc[5, 0] = np.nan
    with pytest.raises(FeatureError, match="non-finite"):
        ScalpingFeatureEngineer(bad)
    assert isinstance(FeatureError("x"), ValueError)
    with pytest.raises(FeatureError, match="already registered"):
        register_feature_group("rsi", lambda df, spec: df, lookback_bars=0)


# ---------------------------------------------------------------- equal to the frozen pandas-based implementation
# tests/reference_features.py is the feature layer before the compiled kernels. Every feature must be equal bit for
# bit (NaN positions, warm-up rows and the sign of zero included); the report's tables equal; correlations equal to
# float rounding (rtol 1e-12: BLAS may sum a product in another order).
import reference_features as ref  # noqa: E402  (tests/ is on sys.path under pytest)


def _bits(x):
    x = np.asarray(x, np.float32)
    return np.where(np.isnan(x), np.float32(np.nan), x).view(np.uint32)


def _assert_same_as_reference(bars, **kw):
    new = ScalpingFeatureEngineer(bars, **kw)
    old = ref.ScalpingFeatureEngineer(bars, **kw)
    X, Y = new.generate_all_features(), old.generate_all_features()
    assert list(X.columns) == list(Y.columns) and X.index.equals(Y.index) and (X.dtypes == np.float32).all()
    differ = [c for c in X.columns if not np.array_equal(_bits(X[c]), _bits(Y[c]))]
    assert not differ, differ
    pd.testing.assert_frame_equal(new.report.table, old.report.table, check_exact=True)
    a, b = new.report.correlated_pairs, old.report.correlated_pairs
    assert a[["feature_a", "feature_b"]].equals(b[["feature_a", "feature_b"]])
    np.testing.assert_allclose(a["corr"], b["corr"], rtol=1e-12)
    return X


@pytest.mark.parametrize("block_rows", [131072, 257])
def test_every_group_equals_reference_demo(base_bars, block_rows):
    X = _assert_same_as_reference(base_bars, groups="all", config={"block_rows": block_rows})
    assert X.shape[1] == 64


def test_default_set_equals_reference_real_es(es_bars):
    _assert_same_as_reference(es_bars)                                  # one block of 75,791 rows
    _assert_same_as_reference(es_bars, config={"block_rows": 10_000})   # blocks that start inside sessions


OTHER_PARAMS = {
    "returns": dict(horizons=(2, 7), tick_horizons=(3,)), "volatility": dict(windows=(5, 30, 90)),
    "atr": dict(window=3), "rsi": dict(windows=(2, 21)), "macd": dict(fast=3, slow=8, signal=2, atr_window=5),
    "bollinger": dict(window=7, n_std=1.5), "stochastic": dict(window=5, smooth=4),
    "zscore": dict(price_windows=(2, 30, 100), volume_windows=(7,)), "vwap": dict(slope_bars=1),
    "volume": dict(ratio_windows=(3,), imbalance_windows=(2, 9), tick_windows=(9, 30)),
    "volume_profile": dict(window_bars=45, value_area_pct=50, bin_ticks=3),
    "opening_range": dict(minutes=15, anchor="08:30"), "channel": dict(windows=(1, 20)),
}


@pytest.mark.parametrize("group", sorted(OTHER_PARAMS))
def test_groups_with_other_parameters_equal_reference(base_bars, es_bars, group):
    "The group functions themselves, called directly with non-default parameters, on thin demo bars and real bars."
    from scalp_lib import features as F
    spec = F.get_instrument("ES")
    for bars in (base_bars, es_bars.iloc[20_000:26_000]):
        fr = F._bar_frame(bars)
        got = F._REGISTRY[group].fn(fr, spec, **OTHER_PARAMS[group])
        exp = ref._REGISTRY[group].fn(fr, spec, **OTHER_PARAMS[group])
        assert list(got.columns) == list(exp.columns)
        for c in got.columns:
            assert np.array_equal(_bits(got[c]), _bits(exp[c])), (group, c)


def test_volume_profile_levels_equal_reference_on_hard_cases():
    "Gaps wider than the window, stretches without volume, one-bar windows, ties; and the same error for a too-wide window."
    from scalp_lib import features as F
    rng = np.random.default_rng(3)
    n = 3000
    lo = np.cumsum(rng.integers(-4, 5, n)) + 20_000
    lo[1000:] += 700
    lo[2000:] -= 1500
    hi = lo + rng.integers(0, 9, n)
    vol = rng.integers(0, 20, n) * F._VP_FIXED * (rng.random(n) > 0.3)
    vol[1500:1900] = 0
    for window, q in ((1, 0.15), (2, 0.3), (37, 0.15), (390, 0.05), (5000, 0.15)):
        got, exp = F._vp_levels(lo, hi, vol, window, q, 1 - q), ref._vp_levels(lo, hi, vol, window, q, 1 - q)
        for g, e in zip(got, exp):
            np.testing.assert_array_equal(g, e)
    wide_hi = hi.copy()
    wide_hi[50] += 20_000
    stamps = pd.date_range("2024-01-02", periods=n, freq="min", tz="America/Chicago")
    with pytest.raises(FeatureError) as a:
        F._vp_levels(lo, wide_hi, vol, 390, 0.15, 0.85, stamps)
    with pytest.raises(ref.FeatureError) as b:
        ref._vp_levels(lo, wide_hi, vol, 390, 0.15, 0.85, stamps)
    assert str(a.value) == str(b.value)


def test_session_clock_matches_the_data_module(es_bars):
    "Trading date, minutes since the open and session starts as scalp_lib.data computes them (the ES file spans a DST change)."
    from scalp_lib import features as F
    from scalp_lib.data import minutes_since_open
    spec = F.get_instrument("ES")
    for idx in (es_bars.index, demo_bars(n_days=3, seed=1).index, es_bars.index.as_unit("s")):
        day, since, sod, start = F._session_clock(idx, spec)
        np.testing.assert_array_equal(day, session_dates(idx, spec).astype(np.int64))
        np.testing.assert_array_equal(since, minutes_since_open(idx, spec))
        np.testing.assert_array_equal(start, ref._session_start_rows(session_dates(idx, spec)))
        local = idx.tz_convert(spec.tz)
        np.testing.assert_array_equal(sod, (local.hour * 3600 + local.minute * 60 + local.second).to_numpy())


def test_minutes_to_close_counts_to_the_scheduled_early_close_real_es(es_bars):
    # Labor Day 2025 is a holiday session on CME Globex: it closes at 12:00 Chicago, not 16:00 (1,140 minutes)
    from scalp_lib.config import get_instrument
    from scalp_lib.features import time_features
    f = time_features(es_bars.loc["2025-08-31 17:00":"2025-09-02 16:59"], get_instrument("ES"))["minutes_to_close"]
    assert f.loc["2025-09-01 11:00":"2025-09-01 11:59"].tolist() == [float(m) for m in range(60, 0, -1)]
    assert f.loc["2025-09-02 15:00":"2025-09-02 15:59"].tolist() == [float(m) for m in range(60, 0, -1)]  # a regular day
    after = f.loc["2025-09-01 12:00":"2025-09-01 15:59"]      # bars the file holds after the early close: negative
    assert len(after) == 240 and after.iloc[0] == 0.0 and after.iloc[-1] == -239.0
    assert f.loc["2025-08-31 17:00"] == 1140.0                # the session's first bar: the whole shortened session ahead
