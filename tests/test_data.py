"""Bar loading and validation: every bad input with its exact expectation, the real ES files, and garbage."""
import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from scalp_lib.config import ScalpLibError
from scalp_lib.data import (DataValidationError, OHLCV, demo_bars, load_bars, load_ticks, session_dates,
                            ticks_to_bars, validate_bars, validate_file)

HEADER = "timestamp,open,high,low,close,volume\n"
GOOD = ["2024-01-02 08:30,4800.00,4801.00,4799.75,4800.50,100",
        "2024-01-02 08:31,4800.50,4802.00,4800.25,4801.75,120",
        "2024-01-02 08:32,4801.75,4802.25,4801.00,4801.25,90",
        "2024-01-02 08:33,4801.25,4801.50,4800.00,4800.25,80"]


def write(tmp_path, rows, name="bars.csv"):
    p = tmp_path / name
    p.write_text(HEADER + "\n".join(rows) + "\n")
    return p


def with_row(i, row):
    rows = list(GOOD)
    rows[i] = row
    return rows


@pytest.mark.parametrize("row,check", [
    ("2024-01-02 08:31,4800.50,4802.00,4800.25,N/A,120", "non_numeric"),
    ("timestamp,open,high,low,close,volume", "non_numeric"),
    ("2024-01-02 08:31,4800.50,4802.00,4800.25,,120", "nan"),
    ("2024-01-02 08:31,4800.50,4802.00,4800.25,inf,120", "inf"),
    ("2024-01-02 08:31,4800.50,4799.00,4800.25,4801.75,120", "ohlc_inconsistent"),
    ("2024-01-02 08:31,4803.00,4802.00,4800.25,4801.75,120", "ohlc_inconsistent"),
    ("2024-01-02 08:31,4800.50,4802.00,4800.25,4800.00,120", "ohlc_inconsistent"),
    ("2024-01-02 08:31,-1,4802.00,-2,4801.75,120", "non_positive_price"),
    ("2024-01-02 08:31,4800.50,4802.00,4800.25,4801.75,-3", "negative_volume"),
    ("2024-01-02 08:31,4800.60,4802.00,4800.25,4801.75,120", "off_tick"),
    ("2024-01-02 08:30,4800.50,4802.00,4800.25,4801.75,120", "duplicate_timestamp"),
    ("not a time,4800.50,4802.00,4800.25,4801.75,120", "bad_timestamp"),
])
def test_each_error_is_counted_repaired_and_strict_raises(tmp_path, row, check):
    p = write(tmp_path, with_row(1, row))
    rep = load_bars(p, policy="report").attrs["quality"]
    assert rep.counts[check] == 1, rep.to_frame()
    assert not rep.ok
    repaired = load_bars(p, policy="repair")
    q = repaired.attrs["quality"]
    assert q.counts[check] == 1
    # nothing is lost without being counted: every dropped row is accounted for by an error count
    assert q.n_rows_in - q.n_rows_out <= sum(i.count for i in q.errors)
    assert q.n_rows_in == 4
    if check == "off_tick":
        assert len(repaired) == 4 and repaired["open"].iloc[1] == 4800.50
    else:
        assert len(repaired) == 3
    assert repaired.index.is_monotonic_increasing and repaired.index.is_unique
    assert all(repaired[c].dtype == np.float64 for c in OHLCV)
    with pytest.raises(DataValidationError) as e:
        load_bars(p, policy="strict")
    assert e.value.report.counts[check] == 1
    assert check in str(e.value)


def test_out_of_order_rows_are_sorted_not_dropped_and_strict_rejects_the_file(tmp_path):
    p = write(tmp_path, [GOOD[1], GOOD[0], GOOD[2], GOOD[3]])
    b = load_bars(p)
    assert len(b) == 4 and b.index.is_monotonic_increasing
    assert b.attrs["quality"].counts["out_of_order"] == 1
    with pytest.raises(DataValidationError, match="out_of_order=1"):
        load_bars(p, policy="strict")


def test_a_stray_thousands_separator_is_dropped_and_counted(tmp_path):
    # the column writes 4801.00 elsewhere: one separated value is damage, not the file's format
    p = write(tmp_path, with_row(0, '2024-01-02 08:30,"4,800.00",4801.00,4799.75,4800.50,100'))
    b = load_bars(p)
    q = b.attrs["quality"]
    assert len(b) == 3 and b.index[0] == pd.Timestamp("2024-01-02 08:31", tz="America/Chicago")
    assert q.counts["non_numeric"] == 1 and q.dropped == {"non_numeric": 1}


def test_warnings_are_reported_never_fatal(tmp_path):
    rows = with_row(2, "2024-01-02 08:32,4801.75,4802.25,4801.00,4801.25,0")
    rows.append("2024-01-02 11:00,4800.25,4800.50,4800.00,4800.25,10")  # 147-minute gap inside a session
    rows.append("2024-01-02 11:30,4800.25,4800.50,4800.00,4800.25,10")  # 30 minutes: below max_gap_minutes
    b = load_bars(write(tmp_path, rows), policy="strict")
    q = b.attrs["quality"]
    assert q.ok and q.counts["zero_volume"] == 1 and q.counts["gap"] == 1
    assert len(b) == 6


def test_weekend_is_not_a_gap_but_a_missing_weekday_session_is():
    bars = demo_bars(n_days=7, seed=0)  # Tue 2 Jan .. Wed 10 Jan 2024: crosses one weekend
    assert validate_bars(bars).counts["gap"] == 0
    dates = session_dates(bars.index)
    holey = bars[dates != np.datetime64("2024-01-04")]
    q = validate_bars(holey)
    assert q.counts["missing_session"] == 1 and q.counts["gap"] == 0
    assert q.sessions.loc["2024-01-04", "status"] == "missing session"


def test_identical_bar_runs_are_counted():
    b = demo_bars(n_days=1, seed=0).iloc[:50].copy()
    b.iloc[10:20] = b.iloc[10].to_numpy()
    assert validate_bars(b).counts["identical_run"] == 10


def test_empty_and_structurally_wrong_input(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataValidationError, match="empty"):
        load_bars(empty)
    header_only = write(tmp_path, [], "header.csv")
    with pytest.raises(DataValidationError, match="no rows"):
        load_bars(header_only)
    no_prices = tmp_path / "noprice.csv"
    no_prices.write_text("timestamp,volume\n2024-01-02 08:30,5\n")
    with pytest.raises(DataValidationError, match="open/high/low/close"):
        load_bars(no_prices)
    no_time = tmp_path / "notime.csv"
    no_time.write_text("open,high,low,close,volume\n1,1,1,1,1\n")
    with pytest.raises(DataValidationError, match="time stamp column"):
        load_bars(no_time)
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        load_bars(tmp_path / "missing.csv")
    with pytest.raises(ValueError, match="policy"):
        load_bars(write(tmp_path, GOOD), policy="lenient")


def test_all_rows_bad_is_an_error_not_an_empty_frame(tmp_path):
    p = write(tmp_path, ["x,a,b,c,d,e", "y,a,b,c,d,e"])
    with pytest.raises(DataValidationError, match="no valid rows"):
        load_bars(p)


@pytest.mark.parametrize("unit,scale", [("s", 1), ("ms", 10**3), ("us", 10**6), ("ns", 10**9)])
def test_epoch_time_stamps_in_any_unit(unit, scale):
    t0 = int(pd.Timestamp("2024-01-02 14:30", tz="UTC").timestamp())
    df = pd.DataFrame({"time": [t0 * scale, (t0 + 60) * scale], "Open": [4800.0, 4800.5], "High": [4801.0, 4801.0],
                       "Low": [4799.5, 4800.0], "Close": [4800.5, 4800.75], "Volume": [10, 12]})
    b = load_bars(df, instrument="ES")
    assert str(b.index[0]) == "2024-01-02 08:30:00-06:00"


def test_date_and_time_columns_and_offsets_and_parquet(tmp_path):
    df = pd.DataFrame({"DATE": ["2024-07-01", "2024-07-01"], "TIME": ["09:30:00", "09:31:00"], "OPEN": [5500.0, 5500.25],
                       "HIGH": [5501.0, 5501.0], "LOW": [5499.0, 5500.0], "CLOSE": [5500.25, 5500.5], "VOL": [5, 6]})
    b = load_bars(df, tz="America/New_York", instrument="ES")
    assert str(b.index[0]) == "2024-07-01 08:30:00-05:00"
    shifted = df.assign(TIME=["14:30:00", "14:31:00"])
    b2 = load_bars(shifted, tz="America/New_York", ts_offset="5h", instrument="ES")
    assert b2.index.equals(b.index)
    pq = tmp_path / "b.parquet"
    demo_bars(n_days=1).reset_index().to_parquet(pq)
    b3 = load_bars(pq)
    pd.testing.assert_frame_equal(b3, demo_bars(n_days=1), check_freq=False)
    offs = pd.DataFrame({"timestamp": ["2024-01-02T09:30:00-05:00"], "open": [1.0], "high": [1.0], "low": [1.0],
                         "close": [1.0], "volume": [1.0]})
    assert str(load_bars(offs).index[0]) == "2024-01-02 08:30:00-06:00"


def test_real_es_minute_bars_load_and_validate(shared_data):
    b = load_bars(shared_data / "es_1min_2025-09_11.csv.gz", tz="America/New_York", ts_offset="5h", instrument="ES")
    q = b.attrs["quality"]
    assert len(b) == 75_791 and q.ok, q.summary()
    ny = b.index.tz_convert("America/New_York")
    assert (ny[0].hour, ny[0].minute) == (18, 0)
    # the 09:30 New York cash open exists on both sides of the 2 November 2025 clock change
    opens = ny[ny.strftime("%H:%M") == "09:30"]
    assert (opens < pd.Timestamp("2025-11-02", tz="America/New_York")).any()
    assert (opens > pd.Timestamp("2025-11-03", tz="America/New_York")).any()
    assert q.counts["identical_run"] > 0  # the thin back-month weeks
    assert q.counts["gap"] == 2           # two in-session hours missing (10 and 11 November)


def test_real_es_trades_load_and_aggregate(shared_data):
    t = load_ticks(shared_data / "es_ticks_2013-09.csv.gz", tz="America/Chicago", instrument="ES")
    assert len(t) == 500_000 and t.attrs["quality"].ok
    bars = ticks_to_bars(t)
    assert abs(len(bars) - 2264) <= 5
    assert validate_bars(bars).ok
    assert bars["volume"].sum() == t["volume"].sum()
    first = t[t.index < bars.index[0] + pd.Timedelta("1min")]
    assert bars["open"].iloc[0] == first["price"].iloc[0] and bars["high"].iloc[0] == first["price"].max()


def test_chunked_validation_of_the_real_file_matches_in_memory(shared_data):
    path = shared_data / "es_1min_2025-09_11.csv.gz"
    whole = load_bars(path, tz="America/New_York", ts_offset="5h", policy="report").attrs["quality"]
    chunked = validate_file(path, tz="America/New_York", ts_offset="5h", chunk_rows=10_000, progress=False)
    assert chunked.counts == whole.counts


cell = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**6, 10**6),
                 st.text(max_size=6), st.none(), st.booleans())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.one_of(st.text(max_size=20), st.integers(), st.none()), cell, cell, cell, cell, cell),
                min_size=0, max_size=12),
       st.sampled_from(["report", "repair", "strict"]))
def test_garbage_either_loads_or_raises_our_errors(rows, policy):
    df = pd.DataFrame(rows, columns=["timestamp", "open", "high", "low", "close", "volume"])
    try:
        out = load_bars(df, policy=policy, instrument="ES")
    except (ScalpLibError, FileNotFoundError) as e:
        assert str(e)
        return
    assert isinstance(out.index, pd.DatetimeIndex) and out.index.tz is not None
    assert out.index.dropna().is_monotonic_increasing  # 'report' keeps unparseable stamps (NaT, sorted last)
    q = out.attrs["quality"]
    assert q.n_rows_in == len(df)
    if policy != "report":
        assert out.index.is_unique and np.isfinite(out[OHLCV].to_numpy()).all()
        assert validate_bars(out).ok


def test_chunked_duplicates_and_disorder_across_chunks(tmp_path):
    b = demo_bars(n_days=1, seed=2).iloc[:300]
    order = list(range(300))
    order += [5, 150, 299]          # three repeats of earlier stamps, in later chunks
    order.insert(120, 250)          # a stamp that appears early and again later (duplicate + disorder)
    messy = b.iloc[order]
    f = tmp_path / "m.csv"
    messy.reset_index().to_csv(f, index=False)
    whole = load_bars(f, policy="report").attrs["quality"]
    for chunk in (7, 50, 1000):
        c = validate_file(f, chunk_rows=chunk, progress=False)
        assert c.counts["duplicate_timestamp"] == whole.counts["duplicate_timestamp"] == 4
        assert c.counts["out_of_order"] == whole.counts["out_of_order"]


@pytest.mark.parametrize("chunk", [7, 13, 20, 1000])
def test_chunked_warnings_equal_in_memory_when_runs_and_gaps_straddle_chunks(tmp_path, chunk):
    b = demo_bars(n_days=1, seed=4).iloc[:120].copy()
    for start, length in ((18, 4), (37, 9), (60, 5)):   # identical-bar runs, crossing chunk edges for small chunks
        b.iloc[start:start + length] = b.iloc[start].to_numpy()
    b = b.drop(b.index[90:160 - 60])                    # a 10-minute in-session hole (below the 60-minute gap rule)
    f = tmp_path / "w.csv"
    b.reset_index().to_csv(f, index=False)
    whole = load_bars(f, policy="report").attrs["quality"]
    c = validate_file(f, chunk_rows=chunk, progress=False)
    assert whole.counts["identical_run"] == 9 + 5   # the run of 4 is below [data] identical_run_bars (5)
    assert c.counts == whole.counts


# ---------------------------------------------------------------- holidays vs holes, bad ticks, stamps, file lines
CT = "America/Chicago"


def _thanksgiving_week():
    "Mon 24 - Fri 28 Nov 2025 with the exchange's hours: Thursday closes 12:00 (holiday session), Friday 12:15."
    b = demo_bars(n_days=5, start="2025-11-24", seed=1)
    t = b.index
    closed = (((t >= pd.Timestamp("2025-11-27 12:00", tz=CT)) & (t < pd.Timestamp("2025-11-27 17:00", tz=CT)))
              | ((t >= pd.Timestamp("2025-11-28 12:15", tz=CT)) & (t < pd.Timestamp("2025-11-28 17:00", tz=CT))))
    return b[~closed]


def test_thanksgiving_and_the_day_after_are_labelled_not_gaps():
    q = validate_bars(_thanksgiving_week())
    assert q.counts["gap"] == 0 and q.counts["missing_session"] == 0 and q.counts["outside_session"] == 0
    sd = q.special_days().set_index("date")
    assert sd.loc["2025-11-27", ["exchange", "name", "verdict"]].tolist() == ["holiday session, closes 12:00", "Thanksgiving", "as expected"]
    assert sd.loc["2025-11-28", ["exchange", "name", "verdict"]].tolist() == ["early close, closes 12:15", "Friday after Thanksgiving", "as expected"]
    assert q.sessions.loc["2025-11-27", "expected"] == 19 * 60 and q.sessions.loc["2025-11-28", "expected"] == 19 * 60 + 15


def test_bars_after_an_early_close_are_reported_with_the_reason():
    q = validate_bars(demo_bars(n_days=5, start="2025-11-24", seed=1))   # weekday calendar: full sessions on both days
    assert q.counts["outside_session"] == 240 + 225
    by = q.stamp["outside_by"].set_index("session")
    assert by.loc["2025-11-27", "why"] == "after the holiday session close 12:00 (Thanksgiving)"
    assert by.loc["2025-11-27", "bars"] == 240


def test_a_single_missing_minute_in_a_full_session_is_listed():
    b = _thanksgiving_week()
    gone = b.index[700]
    q = validate_bars(b.drop(gone))
    assert q.counts["gap"] == 1
    g = q.gaps.iloc[0]
    assert (g["first missing"], g["last missing"], g["minutes"], g["kind"]) == (gone, gone, 1, "hole")
    assert (g["row before"], g["row after"]) == (699, 700)
    assert q.sessions["missing"].sum() == 1


def test_thin_trading_is_quiet_but_a_hole_in_busy_hours_is_not():
    b = _thanksgiving_week()
    tue = b[session_dates(b.index) == np.datetime64("2025-11-25")]
    rng = np.random.default_rng(3)
    night = (tue.index.hour >= 18) | (tue.index.hour < 6)
    keep = ~(night & (rng.random(len(tue)) < 0.35))
    hole = (tue.index >= pd.Timestamp("2025-11-25 09:00", tz=CT)) & (tue.index < pd.Timestamp("2025-11-25 09:07", tz=CT))
    q = validate_bars(tue[keep & ~hole])
    holes = q.gaps[q.gaps["kind"] == "hole"]
    assert holes[["first missing", "minutes"]].values.tolist() == [[pd.Timestamp("2025-11-25 09:00", tz=CT), 7]]
    quiet = q.gaps[q.gaps["kind"] == "quiet"]
    assert quiet["minutes"].sum() == (night & ~keep).sum() and len(quiet) > 50
    assert q.counts["gap"] == 1


def test_bad_tick_on_the_grid_is_flagged_with_its_line_and_kept(tmp_path):
    b = demo_bars(n_days=1, seed=5).iloc[:400].copy()
    b.iloc[250, b.columns.get_loc("high")] += 30.0          # 120 ticks above the market, on the 0.25 grid
    f = tmp_path / "spike.csv"
    b.reset_index().to_csv(f, index=False)
    out = load_bars(f, tz=CT)
    q = out.attrs["quality"]
    assert q.ok and q.counts["bad_tick"] == 1 and len(out) == 400          # reported, not dropped
    ex = q.issue("bad_tick").examples
    assert ex["line"].tolist() == [252] and ex["deviation (ticks)"].iloc[0] > 100
    for chunk in (100, 249, 251, 1000):                    # the same answer when the spike sits at a chunk edge
        assert validate_file(f, tz=CT, chunk_rows=chunk, progress=False).counts["bad_tick"] == 1


@pytest.mark.parametrize("shift,expected", [("0min", "start"), ("1min", "end")])
def test_stamp_convention_is_detected(shift, expected):
    b = _thanksgiving_week()
    b.index = b.index + pd.Timedelta(shift)
    q = validate_bars(b)
    assert q.stamp["detected"] == expected
    assert (q.stamp["bar_at_open"], q.stamp["bar_at_close"]) == ((5, 0) if expected == "start" else (0, 5))
    assert any(("end of its minute" if expected == "end" else "start of its minute") in n for n in q.notes)


def test_examples_carry_file_line_numbers(tmp_path):
    rows = list(GOOD)
    rows[2] = "2024-01-02 08:32,4801.75,4802.25,4801.00,N/A,90"     # file line 4 (the header is line 1)
    p = write(tmp_path, rows)
    for q in (load_bars(p, policy="report").attrs["quality"], validate_file(p, progress=False)):
        assert q.issue("non_numeric").examples["line"].tolist() == [4]
    df_q = validate_bars(load_bars(p, policy="report"), policy="report")
    assert "row" in df_q.issue("nan").examples.columns                    # a DataFrame has rows, not lines


def test_real_es_labor_day_is_a_holiday_session_not_a_gap(shared_data):
    q = load_bars(shared_data / "es_1min_2025-09_11.csv.gz", tz="America/New_York", ts_offset="5h").attrs["quality"]
    s = q.sessions.loc["2025-09-01"]
    assert (s["kind"], s["name"], s["close"]) == ("holiday session", "Labor Day", pd.Timestamp("2025-09-01 12:00", tz=CT))
    assert s["missing"] == 0 and s["holes"] == 0
    assert q.gaps["session"].dt.strftime("%Y-%m-%d").tolist() == ["2025-11-11", "2025-11-12"]   # the two missing hours
    by = q.stamp["outside_by"].set_index("session")
    assert by.loc["2025-09-01", "bars"] == 240     # the file has bars 12:00-16:00 Chicago, after the holiday close
    assert q.stamp["detected"] == "start" and q.counts["bad_tick"] == 0
    assert q.special_days()["name"].tolist() == ["Labor Day"]
