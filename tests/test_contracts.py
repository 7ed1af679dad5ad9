"""Contracts: expiry calendar, causal roll decisions (property test), exact adjustments, real ES files unchanged, report."""
import datetime as dt

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from scalp_lib.config import ScalpLibError
from scalp_lib.contracts import (ContractError, continuous_series, contract_chain, demo_contracts, expiry, last_trade_date,
                                 load_contracts, parse_contract, roll_boundaries, roll_causality_violations, roll_exit_mask,
                                 select_contracts)
from scalp_lib.data import OHLCV, load_bars, load_ticks, ticks_to_bars

CT = "America/Chicago"


@pytest.fixture(scope="module")
def demo():
    "Two overlapping synthetic ES contracts around the March 2024 roll, loaded (validated)."
    return load_contracts(demo_contracts(n_days=25, seed=3))


# ---------------------------------------------------------------- expiry calendar
@pytest.mark.parametrize("code,ref,expected", [
    ("ESZ5", 2025, "2025-12-19"), ("ESH5", 2025, "2025-03-21"), ("ESU3", 2013, "2013-09-20"),
    ("NQM24", None, "2024-06-21"), ("MESZ2024", None, "2024-12-20"), ("MNQH6", 2026, "2026-03-20"),
    ("CLZ25", None, "2025-11-20"), ("CLQ25", None, "2025-07-22"), ("CLX25", None, "2025-10-21"), ("CLN25", None, "2025-06-20"),
])
def test_last_trade_dates(code, ref, expected):
    assert str(last_trade_date(code, ref)) == expected


def test_third_friday_rule_holds_for_every_quarter_of_two_decades():
    from scalp_lib.contracts import third_friday
    from scalp_lib.exchange_calendar import is_business_day
    moved = []
    for y in range(2010, 2031):
        for m, letter in zip((3, 6, 9, 12), "HMUZ"):
            d, fri = last_trade_date(f"ES{letter}{y}"), third_friday(y, m)
            assert (d.year, d.month) == (y, m) and is_business_day(d, "ES")
            if is_business_day(fri, "ES"): assert d == fri and d.weekday() == 4 and 15 <= d.day <= 21
            else: moved.append(str(d))
            assert expiry(f"ES{letter}{y}") == pd.Timestamp(f"{d} 08:30", tz=CT)
    # Juneteenth on the third Friday of June (2026; observed on Friday 18 June 2027): the Thursday before
    assert moved == ["2026-06-18", "2027-06-17"]


def test_crude_rule_counts_exchange_business_days_before_the_25th():
    from scalp_lib.exchange_calendar import business_days, is_business_day
    for y in range(2020, 2027):
        for m in range(1, 13):
            c = parse_contract(f"CL{'FGHJKMNQUVXZ'[m - 1]}{y}")
            d = last_trade_date(c)
            the_25th = dt.date(y if m > 1 else y - 1, m - 1 if m > 1 else 12, 25)
            between = business_days(d, the_25th - dt.timedelta(days=1), "CL")   # business days in [d, 25th)
            assert is_business_day(d, "CL") and len(between) == (3 if is_business_day(the_25th, "CL") else 4), c


@pytest.mark.parametrize("code,ref,expected,why", [
    ("CLF26", None, "2025-12-19", "25 Dec 2025 is Christmas: 4 business days before it (a weekday count gave 22 Dec)"),
    ("CLZ21", None, "2021-11-19", "25 Nov 2021 is Thanksgiving: 4 business days before it"),
    ("CLZ22", None, "2022-11-21", "Thanksgiving (24 Nov 2022) lies inside the count of 3"),
    ("ESH8", 2008, "2008-03-20", "the third Friday of March 2008 was Good Friday: the business day before"),
    ("ESZ25", None, "2025-12-19", "an ordinary quarter: the third Friday"),
    ("ESM26", None, "2026-06-18", "Juneteenth 2026 is the third Friday of June: the business day before"),
])
def test_expiries_on_exchange_business_days(code, ref, expected, why):
    assert str(last_trade_date(code, ref)) == expected, why


def test_days_before_expiry_rule_counts_exchange_business_days():
    "ESH8 expires Thursday 20 March 2008 (Good Friday is the third Friday): 3 business days before it is Monday 17 March."
    days = [str(d.date()) for d in pd.bdate_range("2008-03-10", "2008-03-20")]
    idx = lambda: pd.DatetimeIndex([f"{d} 08:30" for d in days], tz=CT)
    bars = {c: pd.DataFrame({"open": p, "high": p, "low": p, "close": p, "volume": 100.0}, index=idx())
            for c, p in (("ESH8", 1300.0), ("ESM8", 1305.0))}
    sel = select_contracts(load_contracts(bars), rule="days_before_expiry", days_before_expiry=3)
    assert sel.roll_table["date"].tolist() == [pd.Timestamp("2008-03-17")]
    assert sel.roll_table["reason"].tolist() == ["days_before_expiry"]


def test_contract_code_errors_are_named():
    for bad, msg in (("ESZ5", "ambiguous"), ("ESF25", "listed only in months HMUZ"), ("XXH5", "XX"), ("ES", "cannot parse")):
        with pytest.raises(ScalpLibError, match=msg):
            parse_contract(bad)
    assert contract_chain("ES", "2024-01-01", "2024-12-31") == ["ESH4", "ESM4", "ESU4", "ESZ4", "ESH5"]


# ---------------------------------------------------------------- causality of the roll decision (property test)
RULES = [dict(rule="volume", volume_sessions=1), dict(rule="volume", volume_sessions=2), dict(rule="volume", volume_sessions=3),
         dict(rule="days_before_expiry", days_before_expiry=0), dict(rule="days_before_expiry", days_before_expiry=4)]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(frac=st.floats(0.0, 1.0), seed=st.integers(0, 2**31 - 1), kw=st.sampled_from(RULES))
def test_altering_data_after_t_never_changes_the_contract_chosen_at_or_before_t(demo, frac, seed, kw):
    stamps = np.unique(np.concatenate([df.index.asi8 for df in demo.values()]))
    t = pd.Timestamp(stamps[int(frac * (len(stamps) - 1))], tz="UTC").tz_convert(CT)
    assert roll_causality_violations(demo, t, seed=seed, **kw) == []
    # the future may also simply be absent
    cut = {}
    for c, df in demo.items():
        part = df[df.index <= t]
        if len(part):
            part.attrs = dict(df.attrs)
            cut[c] = part
    full, trunc = select_contracts(demo, **kw), select_contracts(cut, **kw)
    pd.testing.assert_series_equal(full.chosen.loc[:t], trunc.chosen.loc[:t])
    done = full.roll_table[full.roll_table["roll_time"] <= t].reset_index(drop=True)
    pd.testing.assert_frame_equal(done, trunc.roll_table[trunc.roll_table["roll_time"] <= t].reset_index(drop=True))


def test_the_causality_check_can_fail(demo, monkeypatch):
    "A rule that reads the current session's volume (complete only at its close) is caught."
    import scalp_lib.contracts as sc
    from scalp_lib.data import session_dates
    sel = sc.select_contracts(demo)          # the causal rule: roll at session d, from sessions d-2 and d-1
    day_before = sel.roll_table["date"].iloc[0] - pd.offsets.BDay(1)
    t = sel.chosen.index[session_dates(sel.chosen.index) == np.datetime64(day_before.date())][0]   # first bar of d-1
    assert all(sc.roll_causality_violations(demo, t, seed=s) == [] for s in range(3))
    real = sc.session_volume
    monkeypatch.setattr(sc, "session_volume", lambda contracts, instrument=None: real(contracts, instrument).shift(-1).fillna(0.0))
    assert any(sc.roll_causality_violations(demo, t, seed=s) for s in range(5))


def test_volume_rule_rolls_exactly_after_k_sessions_of_higher_volume(demo):
    for k in (1, 2, 3):
        sel = select_contracts(demo, rule="volume", volume_sessions=k)
        vol, r = sel.session_volume, sel.roll_table.iloc[0]
        i = vol.index.get_loc(r["date"])
        higher = (vol[r["to_contract"]] > vol[r["from_contract"]]).to_numpy()
        assert higher[i - k:i].all()
        # no earlier session satisfied the rule
        assert not any(higher[j - k:j].all() for j in range(k, i))
        assert r["reason"] == "volume"


def test_never_trades_a_contract_in_the_session_of_its_last_trade_date(demo):
    from scalp_lib.data import session_dates
    for kw in RULES + [dict(rule="volume", volume_sessions=100)]:
        sel = select_contracts(demo, **kw)
        sess = session_dates(sel.chosen.index)
        for c, df in demo.items():
            ltd = np.datetime64(df.attrs["expiry"].date())
            assert not ((sel.chosen.to_numpy() == c) & (sess >= ltd)).any()


# ---------------------------------------------------------------- known gaps, exact adjusted series
def _contract(prices, days, vols):
    idx = pd.DatetimeIndex([f"{d} {t}" for d in days for t in ("08:30", "08:31", "08:32", "08:33")], tz=CT)
    p = np.asarray(prices, float)
    return pd.DataFrame({"open": p, "high": p, "low": p, "close": p, "volume": np.repeat(vols, 4).astype(float)}, index=idx)


def _expected(raw, rt, how):
    "Definition, bar by bar: add (multiply by) the gap (ratio) of every roll after the bar."
    out = []
    for ts, px in zip(raw.index, raw["close"]):
        later = rt[rt["roll_time"] > ts]
        out.append(px + later["gap_points"].sum() if how == "difference" else px * np.prod(later["ratio"].to_numpy()))
    return np.array(out)


@settings(max_examples=25, deadline=None)
@given(levels=st.lists(st.integers(400, 40000), min_size=3, max_size=3), steps=st.lists(st.integers(-8, 8), min_size=3, max_size=3),
       roll1=st.integers(1, 3), roll2=st.integers(5, 7))
def test_difference_adjustment_is_exact_for_known_gaps(levels, steps, roll1, roll2):
    days = [str(d.date()) for d in pd.bdate_range("2024-03-04", periods=9)]
    n = 4 * len(days)
    toy = {c: _contract(0.25 * (lv + st_ * np.arange(n)), days, [100] * len(days))
           for c, lv, st_ in zip(("ESH4", "ESM4", "ESU4"), levels, steps)}
    if any((df["close"] <= 0).any() for df in toy.values()):
        return
    table = {days[roll1]: "ESM4", days[roll2]: "ESU4"}
    raw = continuous_series(toy, roll_table=table)
    rt = raw.attrs["roll_table"]
    for _, r in rt.iterrows():   # the gap is measured at the last minute both traded before the roll
        assert r["gap_time"] == max(t for t in toy[r["from_contract"]].index if t < r["roll_time"])
        assert r["gap_points"] == toy[r["to_contract"]].close[r["gap_time"]] - toy[r["from_contract"]].close[r["gap_time"]]
    d = continuous_series(toy, roll_table=table, adjustment="difference")
    np.testing.assert_array_equal(d["close"].to_numpy(), _expected(raw, rt, "difference"))
    np.testing.assert_array_equal(d["close"].to_numpy() - raw["close"].to_numpy(), d["open"].to_numpy() - raw["open"].to_numpy())
    r_ = continuous_series(toy, roll_table=table, adjustment="ratio")
    np.testing.assert_allclose(r_["close"].to_numpy(), _expected(raw, rt, "ratio"), rtol=1e-13)
    assert (d.loc[rt["roll_time"].iloc[-1]:, "close"] == raw.loc[rt["roll_time"].iloc[-1]:, "close"]).all()


def test_ratio_adjustment_is_exact_with_binary_ratios():
    days = [str(d.date()) for d in pd.bdate_range("2024-03-04", periods=6)]
    toy = {"ESH4": _contract([64.0] * 24, days, [1] * 6), "ESM4": _contract([80.0] * 24, days, [1] * 6),
           "ESU4": _contract([160.0] * 24, days, [1] * 6)}
    table = {days[2]: "ESM4", days[4]: "ESU4"}
    r = continuous_series(toy, roll_table=table, adjustment="ratio")
    assert r.attrs["roll_table"]["ratio"].tolist() == [1.25, 2.0]
    assert r["close"].tolist() == [160.0] * 24
    d = continuous_series(toy, roll_table=table, adjustment="difference")
    assert d["close"].tolist() == [160.0] * 24
    raw = continuous_series(toy, roll_table=table)
    assert raw["close"].tolist() == [64.0] * 8 + [80.0] * 8 + [160.0] * 8
    assert roll_boundaries(raw).nonzero()[0].tolist() == [8, 16] and roll_exit_mask(raw).nonzero()[0].tolist() == [7, 15]


def test_unmeasurable_gap_is_an_error_for_adjusted_series_only():
    days = [str(d.date()) for d in pd.bdate_range("2024-03-04", periods=4)]
    a = _contract([100.0] * 8, days[:2], [5, 5])
    b = _contract([110.0] * 8, days[2:], [5, 5])      # no overlap: the gap cannot be measured
    raw = continuous_series({"ESH4": a, "ESM4": b}, roll_table={days[2]: "ESM4"})
    assert any("cannot be measured" in n for n in raw.attrs["notes"])
    with pytest.raises(ContractError, match="could not be measured"):
        continuous_series({"ESH4": a, "ESM4": b}, roll_table={days[2]: "ESM4"}, adjustment="difference")


# ---------------------------------------------------------------- input forms
def test_input_forms_agree(demo, tmp_path):
    ref = continuous_series(demo, adjustment="difference")
    stacked = pd.concat([df.assign(Contract=c) for c, df in demo.items()]).reset_index()
    p = tmp_path / "all.parquet"
    stacked.to_parquet(p)
    from_file = continuous_series(p, adjustment="difference")
    pd.testing.assert_frame_equal(from_file[OHLCV], ref[OHLCV])
    assert from_file["contract"].tolist() == ref["contract"].tolist()
    paths = []
    for c, df in demo.items():
        q = tmp_path / f"es_{c.lower()}_1min.csv"
        df.reset_index().to_csv(q, index=False)
        paths.append(q)
    pd.testing.assert_frame_equal(continuous_series(paths, adjustment="difference")[OHLCV], ref[OHLCV], check_freq=False)
    with pytest.raises(ContractError, match="no contract code"):
        load_contracts([tmp_path / "all.parquet"])
    with pytest.raises(ContractError, match="name the same contract"):
        load_contracts({"ESH4": demo["ESH4"], "ESH24": demo["ESH4"]})


# ---------------------------------------------------------------- real files: one contract each, unchanged
def test_real_es_minute_file_passes_through_unchanged(shared_data):
    path = shared_data / "es_1min_2025-09_11.csv.gz"
    ref = load_bars(path, tz="America/New_York", ts_offset="5h", instrument="ES")
    for how in ("none", "difference", "ratio"):
        cont = continuous_series({"ESZ5": path}, tz="America/New_York", ts_offset="5h", adjustment=how)
        pd.testing.assert_frame_equal(cont[OHLCV], ref[OHLCV])
        assert len(cont.attrs["roll_table"]) == 0 and set(cont["contract"]) == {"ESZ5"}
        assert not roll_boundaries(cont).any()
    assert cont.attrs["contracts"].loc["ESZ5", "expiry"] == pd.Timestamp("2025-12-19 08:30", tz=CT)


def test_real_es_tick_file_passes_through_unchanged(shared_data):
    ticks = load_ticks(shared_data / "es_ticks_2013-09.csv.gz", tz=CT, instrument="ES")
    bars = ticks_to_bars(ticks)
    cont = continuous_series({"ESU3": bars}, adjustment="ratio")
    pd.testing.assert_frame_equal(cont[OHLCV], load_bars(bars, instrument="ES")[OHLCV])
    assert cont.attrs["contracts"].loc["ESU3", "expiry"] == pd.Timestamp("2013-09-20 08:30", tz=CT)
    assert len(cont.attrs["roll_table"]) == 0


# ---------------------------------------------------------------- the data-quality report's multi-contract sections
def test_data_quality_report_with_demo_contracts(tmp_path):
    from scalp_lib.report import run_report
    p = run_report("data_quality", {"contract_paths": "demo", "demo_days": 12}, output_dir=tmp_path)
    html = p.html.read_text()
    for text in ("Contracts and rolls", "ESH4", "ESM4", "Volume around each roll", "Adjusted vs raw"):
        assert text in html, text
    assert "Traceback" not in html
