"""Outside series: as-of alignment against a brute-force definition, look-ahead on purpose-built data, causal features."""
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from scalp_lib.config import ScalpLibError
from scalp_lib.data import demo_bars, session_dates
from scalp_lib.exogenous import (AlignmentError, align_asof, alignment_summary, demo_vix, outside_causality_violations,
                                 perturb_series_after, publication_times, read_series, register_outside_series,
                                 register_spread_zscore)
from scalp_lib.features import ScalpingFeatureEngineer, causality_violations, feature_groups, unregister_feature_group

CT = "America/Chicago"


@pytest.fixture(scope="module")
def bars():
    return demo_bars(n_days=5, seed=4)


@pytest.fixture(scope="module")
def vix(bars):
    return demo_vix(bars, seed=4)


def _brute_force(bars_index, series, lag, bar_time, exact, tol, stamp_time="15:15"):
    "The definition, one bar at a time: the last usable value published at or before the bar's time."
    idx = series.index
    daily = (idx == idx.normalize()).all()
    if daily:
        obs = [pd.Timestamp(f"{d:%Y-%m-%d} {stamp_time}", tz=CT) for d in idx]
    else:
        obs = [t.tz_convert(CT) for t in idx]
    avail = [o + pd.Timedelta(lag) for o in obs]
    out = []
    for b in bars_index:
        when = b + (pd.Timedelta("1min") if bar_time == "close" else pd.Timedelta(0))
        best, best_t = np.nan, None
        for a, v in zip(avail, series.to_numpy()):
            if np.isnan(v):
                continue
            ok = a <= when if exact else a < when
            if ok and (best_t is None or a >= best_t):   # equal availability: the later row wins
                best, best_t = v, a
        if best_t is not None and tol is not None and when - best_t > pd.Timedelta(tol):
            best = np.nan
        out.append(best)
    return np.array(out)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 40), seed=st.integers(0, 2**31 - 1), daily=st.booleans(),
       lag=st.sampled_from(["0min", "1min", "15min", "2h", "1D"]), bar_time=st.sampled_from(["start", "close"]),
       exact=st.booleans(), tol=st.sampled_from([None, "0min", "30min", "1D"]), nan_frac=st.sampled_from([0.0, 0.3]))
def test_align_asof_matches_the_definition(bars, n, seed, daily, lag, bar_time, exact, tol, nan_frac):
    rng = np.random.default_rng(seed)
    sub = bars.index[rng.choice(len(bars), 150, replace=False)].sort_values()
    if daily:
        stamps = pd.DatetimeIndex(rng.choice(pd.bdate_range("2023-12-28", "2024-01-10"), n))
    else:
        stamps = pd.DatetimeIndex(rng.choice(bars.index.asi8, n)).tz_localize("UTC").tz_convert(CT)
    vals = rng.normal(size=n)
    vals[rng.random(n) < nan_frac] = np.nan
    s = pd.Series(vals, index=stamps)
    got = align_asof(sub, s, publication_lag=lag, bar_time=bar_time, allow_exact_matches=exact, tolerance=tol, stamps="date" if daily else "time")
    np.testing.assert_array_equal(got.to_numpy(), _brute_force(sub, s, lag, bar_time, exact, tol))
    rep = got.attrs["alignment"]
    assert rep.n_missing == int(got.isna().sum()) and rep.n_series_nan == int(np.isnan(vals).sum())


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(t=st.integers(0, 5 * 1380 - 1), seed=st.integers(0, 2**31 - 1), lag=st.sampled_from(["0min", "15min", "3h"]),
       bar_time=st.sampled_from(["start", "close"]))
def test_values_published_after_t_never_reach_bars_at_or_before_t(bars, vix, t, seed, lag, bar_time):
    when = bars.index[t] + (pd.Timedelta("1min") if bar_time == "close" else pd.Timedelta(0))
    altered = perturb_series_after(vix, when, seed=seed, publication_lag=lag)
    assert not altered.equals(vix) or (publication_times(vix, publication_lag=lag).table["available_at"] <= when).all()
    a = align_asof(bars, vix, publication_lag=lag, bar_time=bar_time).iloc[: t + 1]
    b = align_asof(bars, altered, publication_lag=lag, bar_time=bar_time).iloc[: t + 1]
    pd.testing.assert_series_equal(a, b)


def test_naive_date_join_leaks_and_asof_does_not(bars, vix):
    "Purpose-built: the synthetic VIX reacts to each session's return, so the same-date value knows the day's outcome."
    dates = pd.DatetimeIndex(session_dates(bars.index))
    naive = pd.Series(vix.reindex(dates).to_numpy(), index=bars.index)
    naive_published = dates.tz_localize(CT) + pd.Timedelta("15h30min")
    assert (naive_published > bars.index).sum() > 0.9 * len(bars)     # values used before they existed
    ours = align_asof(bars, vix, publication_lag="15min", with_times=True)
    assert (ours["vix_synthetic_available_at"] > bars.index).sum() == 0
    assert (ours["vix_synthetic"] != naive).mean() > 0.9


def test_naive_join_predicts_the_rest_of_the_day_asof_does_not():
    b = demo_bars(n_days=60, seed=8)
    v = demo_vix(b, seed=8)
    sess = pd.DatetimeIndex(session_dates(b.index))
    last = b["close"].groupby(sess).last()
    at = b.index.strftime("%H:%M") == "09:00"
    fwd = pd.Series(np.log(last.loc[sess[at]].to_numpy() / b["close"][at].to_numpy()), index=b.index[at])
    chg = np.log(v).diff()
    naive = chg.reindex(pd.DatetimeIndex(session_dates(fwd.index))).to_numpy()
    asof = align_asof(fwd.index, chg, publication_lag="15min").to_numpy()
    c_naive, c_asof = np.corrcoef(naive, fwd)[0, 1], np.corrcoef(asof, fwd)[0, 1]
    assert c_naive < -0.3 and abs(c_asof) < 0.25, (c_naive, c_asof)


def test_reports_and_errors(bars, vix, tmp_path):
    a = align_asof(bars, vix.iloc[-3:], publication_lag="15min", tolerance="6h")
    r = a.attrs["alignment"]
    assert r.n_no_value_yet > 0 and r.n_stale > 0 and r.n_missing == int(a.isna().sum())
    tab = alignment_summary(a, align_asof(bars, vix, publication_lag="0min", name="v0"))
    assert list(tab.index) == ["vix_synthetic", "v0"] and tab.loc["v0", "publication lag"] == "0 min"
    for kw, msg in ((dict(publication_lag="-1min"), "look-ahead"), (dict(bar_time="end"), "bar_time"),
                    (dict(tolerance="x"), "tolerance must be a duration"), (dict(stamps="daily"), "stamps must be")):
        with pytest.raises(AlignmentError, match=msg):
            align_asof(bars, vix, **kw)
    assert issubclass(AlignmentError, ScalpLibError) and issubclass(AlignmentError, ValueError)
    p = tmp_path / "v.csv"
    pd.DataFrame({"timestamp": ["2024-01-03T14:30:00Z", "2024-01-03T14:31:00Z"], "value": [1.0, 2.0]}).to_csv(p, index=False)
    s = read_series(p)
    assert publication_times(s, publication_lag="0min").table["observed_at"].iloc[0] == pd.Timestamp("2024-01-03 08:30", tz=CT)


# ---------------------------------------------------------------- outside-series features in the registry
@pytest.fixture
def registered(bars, vix):
    nq = demo_bars(n_days=5, seed=14, instrument="NQ")
    register_outside_series("vix_t", vix, publication_lag="15min", zscore_obs=10)
    register_spread_zscore("esnq_t", nq, window_bars=60)
    try:
        yield nq
    finally:
        unregister_feature_group("vix_t")
        unregister_feature_group("esnq_t")


def test_importing_registers_nothing():
    import scalp_lib.exogenous  # noqa: F401
    assert not any(g.startswith(("vix", "es_nq", "esnq")) for g in feature_groups().index)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(t=st.integers(0, 5 * 1380 - 2), seed=st.integers(0, 2**31 - 1), block_rows=st.sampled_from([500, 131072]))
def test_outside_features_are_causal(bars, vix, registered, t, seed, block_rows):
    nq = registered
    cfg = {"block_rows": block_rows}
    assert causality_violations(bars, t, seed=seed, groups=["vix_t", "esnq_t"], config=cfg) == []
    reg_v = lambda s: register_outside_series("vix_t", s, publication_lag="15min", zscore_obs=10, replace=True)
    assert outside_causality_violations(bars, t, reg_v, vix, "vix_t", seed=seed, publication_lag="15min") == []
    reg_n = lambda s: register_spread_zscore("esnq_t", s, window_bars=60, replace=True)
    assert outside_causality_violations(bars, t, reg_n, nq["close"], "esnq_t", seed=seed, publication_lag="1min", stamps="time") == []


def test_outside_features_are_scale_free(bars, vix, registered):
    nq = registered
    base = ScalpingFeatureEngineer(bars, groups=["vix_t", "esnq_t"]).generate_all_features()
    register_outside_series("vix_t", vix * 3.0, publication_lag="15min", zscore_obs=10, replace=True)
    register_spread_zscore("esnq_t", nq * 7.0, window_bars=60, replace=True)
    scaled = ScalpingFeatureEngineer(bars, groups=["vix_t", "esnq_t"]).generate_all_features()
    np.testing.assert_allclose(scaled.to_numpy(), base.to_numpy(), rtol=1e-4, atol=1e-4, equal_nan=True)
    assert base.notna().mean().min() > 0.9


# ---------------------------------------------------------------- daily stamps are dates on their own clock
# Python data clients deliver a daily series (the VIX) as tz-aware midnights: 2024-01-02 00:00-05:00 or midnight UTC.
# Converted to Chicago time first, they read 23:00 / 18:00 of 1 January: the 2 January close would be used from
# the evening before. The value of date D must first be usable at D 15:15 Chicago + lag, whatever the stamp's zone.
DAILY_INDEXES = {
    "new_york_midnight": lambda d: pd.DatetimeIndex(d).tz_localize("America/New_York"),
    "utc_midnight": lambda d: pd.DatetimeIndex(d).tz_localize("UTC"),
    "naive_date": lambda d: pd.DatetimeIndex(d),
    "tokyo_midnight": lambda d: pd.DatetimeIndex(d).tz_localize("Asia/Tokyo"),
}


def _first_bar_with(aligned, value):
    "Time of the first bar whose aligned value is `value`."
    return aligned.index[int(np.flatnonzero(aligned.to_numpy() == value)[0])]


@pytest.mark.parametrize("stamps", ["auto", "date"])
@pytest.mark.parametrize("kind", list(DAILY_INDEXES))
def test_daily_value_is_first_usable_after_its_own_close(kind, stamps):
    bars = demo_bars(n_days=3, seed=1)                                    # sessions of 2, 3 and 4 January 2024
    s = pd.Series([20.0, 21.0], index=DAILY_INDEXES[kind](["2024-01-02", "2024-01-03"]))
    a = align_asof(bars, s, publication_lag="15min", stamps=stamps, name="v")
    assert _first_bar_with(a, 20.0) == pd.Timestamp("2024-01-02 15:30", tz=CT)
    assert _first_bar_with(a, 21.0) == pd.Timestamp("2024-01-03 15:30", tz=CT)
    assert a[a.index < pd.Timestamp("2024-01-02 15:30", tz=CT)].isna().all()
    assert a.attrs["alignment"].stamps == "date"
    c = align_asof(bars, s, publication_lag="15min", stamps=stamps, bar_time="close", name="v")
    assert _first_bar_with(c, 20.0) == pd.Timestamp("2024-01-02 15:29", tz=CT)   # that bar closes at 15:30


def test_daily_stamps_across_a_dst_change_and_from_a_file(tmp_path):
    "New York midnights on both sides of 10 March 2024 (-05:00, then -04:00), given as an index and as CSV text."
    bars = demo_bars(n_days=4, seed=1, start="2024-03-07")                # 7, 8, 11, 12 March
    text = ["2024-03-08 00:00:00-05:00", "2024-03-11 00:00:00-04:00"]
    p = tmp_path / "vix.csv"
    pd.DataFrame({"Date": text, "Close": [15.0, 16.0]}).to_csv(p, index=False)
    from_file = read_series(p)
    from_index = pd.Series([15.0, 16.0], index=pd.DatetimeIndex(["2024-03-08", "2024-03-11"]).tz_localize("America/New_York"))
    for s in (from_file, from_index):
        a = align_asof(bars, s, publication_lag="15min", name="v")
        assert _first_bar_with(a, 15.0) == pd.Timestamp("2024-03-08 15:30", tz=CT)
        assert _first_bar_with(a, 16.0) == pd.Timestamp("2024-03-11 15:30", tz=CT)
    one_offset = read_series(pd.DataFrame({"Date": ["2024-01-02 00:00:00-05:00", "2024-01-03T00:00:00Z"][:1], "v": [1.0]}))
    assert publication_times(one_offset, publication_lag="0min").table["observed_at"].iloc[0] == pd.Timestamp("2024-01-02 15:15", tz=CT)
    utc_text = read_series(pd.DataFrame({"Date": ["2024-01-02T00:00:00Z", "2024-01-03T00:00:00Z"], "v": [1.0, 2.0]}))
    assert publication_times(utc_text, publication_lag="0min").table["observed_at"].tolist() == [
        pd.Timestamp("2024-01-02 15:15", tz=CT), pd.Timestamp("2024-01-03 15:15", tz=CT)]


def test_a_date_is_never_taken_before_its_stamp():
    "stamps='date' on late-evening UTC stamps: the date's 15:15 Chicago would be before the stamp itself."
    s = pd.Series([1.0], index=pd.DatetimeIndex(["2024-01-02 23:30"], tz="UTC"))
    obs = publication_times(s, publication_lag="0min", stamps="date").table["observed_at"].iloc[0]
    assert obs == pd.Timestamp("2024-01-02 17:30", tz=CT)


ZONES = ["America/New_York", "UTC", "Europe/London", "Asia/Tokyo", "Australia/Sydney", "America/Chicago",
         "Pacific/Honolulu", None]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 12), seed=st.integers(0, 2**31 - 1), zone=st.sampled_from(ZONES),
       lag=st.sampled_from(["0min", "15min", "2h", "1D"]), bar_time=st.sampled_from(["start", "close"]),
       stamps=st.sampled_from(["auto", "date"]))
def test_no_bar_sees_a_daily_value_before_its_publication(bars, n, seed, zone, lag, bar_time, stamps):
    "Random daily series stamped at midnight in several zones: every bar uses the latest value published by then."
    rng = np.random.default_rng(seed)
    days = pd.DatetimeIndex(np.sort(rng.choice(pd.bdate_range("2023-12-27", "2024-01-12"), n, replace=False)))
    idx = days if zone is None else days.tz_localize(zone)
    s = pd.Series(np.arange(n, dtype=float), index=idx)                  # value = row number: which row a bar used
    published = np.array([pd.Timestamp(f"{d:%Y-%m-%d} 15:15", tz=CT) + pd.Timedelta(lag) for d in idx])   # own-zone date
    got = align_asof(bars, s, publication_lag=lag, bar_time=bar_time, stamps=stamps)
    when = bars.index + (pd.Timedelta("1min") if bar_time == "close" else pd.Timedelta(0))
    used = got.to_numpy()
    has = ~np.isnan(used)
    assert (published[used[has].astype(int)] <= np.asarray(when[has])).all()            # never before publication
    pub_ns = np.array([p.value for p in published])                      # distinct dates: distinct publication times
    seen = pub_ns[None, :] <= when.as_unit("ns").asi8[:, None]
    latest = np.where(seen.any(axis=1), np.where(seen, pub_ns[None, :], np.iinfo(np.int64).min).argmax(axis=1), -1)
    np.testing.assert_array_equal(np.where(has, used, -1), latest)                      # and the latest one published


def test_a_bar_length_longer_than_the_bars_is_refused(bars, vix):
    "bar_time='close' with a bar length above the bars' step puts each bar's close after the next bar's start."
    seconds = pd.date_range("2024-01-03 08:30", periods=120, freq="s", tz=CT)
    with pytest.raises(AlignmentError, match=r"bar_length 1 min is longer than the shortest step between bars \(1 s\)"):
        align_asof(seconds, vix, publication_lag="15min", bar_time="close", bar_length="1min")
    ok = align_asof(seconds, vix, publication_lag="15min", bar_time="close", bar_length="1s")
    assert ok.notna().all()
    five = bars.index[::5]
    assert align_asof(five, vix, publication_lag="15min", bar_time="close", bar_length="5min").attrs["alignment"].n_bars == len(five)
