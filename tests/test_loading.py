"""Reading users' files as they come: thousands separators and repair counts, repairs that scripts notice,
other vendors' layouts (built from the real ES file), Databento DBN, and chunked reading of all of them."""
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from scalp_lib.data import (OHLCV, DataValidationError, demo_bars, iter_raw_chunks, load_bars, load_ticks, validate_bars,
                            validate_file)

sys.path.insert(0, str(Path(__file__).parent))
from vendor_files import LAYOUTS, es_bars, ninjatrader_mes, write_layout  # noqa: E402

HEADER = "timestamp,open,high,low,close,volume\n"


def _sep(x: float) -> str:
    return f'"{x:,.2f}"'


# ---------------------------------------------------------------- thousands separators and repair counts

def test_repair_drops_a_parsed_thousands_row_whose_high_is_below_its_low(tmp_path):
    # every price written "4,800.00" (the file's format): parsed, then checked like any other number
    rows = [("2024-01-02 08:30", 4800.0, 4801.0, 4799.75, 4800.5, 100),
            ("2024-01-02 08:31", 4800.5, 4799.0, 4800.25, 4801.75, 120),   # high < low: impossible
            ("2024-01-02 08:32", 4801.75, 4802.25, 4801.0, 4801.25, 90)]
    p = tmp_path / "sep.csv"
    p.write_text(HEADER + "".join(f"{t},{_sep(o)},{_sep(h)},{_sep(l)},{_sep(c)},{v}\n" for t, o, h, l, c, v in rows))
    b = load_bars(p, instrument="ES")
    q = b.attrs["quality"]
    assert (b["high"] >= b["low"]).all() and (b["high"] >= b[["open", "close"]].max(axis=1)).all()
    assert len(b) == 2 and q.n_rows_in - q.n_rows_out == 1
    assert q.counts["ohlc_inconsistent"] == 1
    assert b["open"].tolist() == [4800.0, 4801.75]


def test_repair_drops_a_stray_separated_value_even_when_it_would_parse_to_an_impossible_bar(tmp_path):
    p = tmp_path / "stray.csv"
    p.write_text(HEADER + "2024-01-02 08:30,4800.00,4801.00,4799.75,4800.50,100\n"
                          '2024-01-02 08:31,4800.50,"4,799.00",4800.25,4801.75,120\n'
                          "2024-01-02 08:32,4801.75,4802.25,4801.00,4801.25,90\n")
    b = load_bars(p, instrument="ES")
    q = b.attrs["quality"]
    assert len(b) == 2 and (b["high"] >= b["low"]).all()
    assert q.counts["non_numeric"] == 1 and q.dropped == {"non_numeric": 1}


BASE = demo_bars(n_days=1, seed=7).iloc[:30]
KINDS = ("none", "stray_sep", "text", "nan", "high_lt_low", "neg_volume", "off_tick", "zero_price")
DROPPED_KINDS = {"stray_sep", "text", "nan", "high_lt_low", "neg_volume", "zero_price"}


def _cells(row, kind, all_separated):
    o, h, l, c, v = (float(row[k]) for k in OHLCV)
    if kind == "high_lt_low": h = l - 0.75
    if kind == "off_tick": l = l - 0.1          # rounds back onto the grid at the same low
    if kind == "zero_price": l = 0.0
    prices = [o, h, l, c]
    txt = [_sep(x) if all_separated and abs(x) >= 1000 else repr(x) for x in prices]
    if kind == "stray_sep" and not all_separated: txt[1] = _sep(h)
    if kind == "text": txt[3] = "N/A"
    if kind == "nan": txt[3] = ""
    vol = "-5" if kind == "neg_volume" else str(int(v))
    return txt + [vol]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(kinds=st.lists(st.sampled_from(KINDS), min_size=len(BASE), max_size=len(BASE)),
       dups=st.lists(st.integers(0, len(BASE) - 1), max_size=4),
       all_separated=st.booleans(), order=st.permutations(range(len(BASE))))
def test_repair_output_always_satisfies_every_invariant_and_counts_add_up(tmp_path, kinds, dups, all_separated, order):
    stamps = BASE.index.tz_localize(None).strftime("%Y-%m-%d %H:%M")
    lines = [",".join([stamps[i]] + _cells(BASE.iloc[i], kinds[i], all_separated)) for i in order]
    # duplicates after every original: a clean copy of an earlier row's stamp (the first row of a stamp is kept)
    lines += [",".join([stamps[j]] + _cells(BASE.iloc[j], "none", all_separated)) for j in dups]
    p = tmp_path / "mix.csv"
    p.write_text(HEADER + "\n".join(lines) + "\n")
    kinds = [("none" if k == "stray_sep" and all_separated else k) for k in kinds]
    try:
        out = load_bars(p, instrument="ES", policy="repair")
    except DataValidationError as e:                # every row bad: refused, never an empty frame
        assert "no valid rows" in str(e) and all(k in DROPPED_KINDS for k in kinds)
        return
    q = out.attrs["quality"]
    kept = [i for i in range(len(BASE)) if kinds[i] not in DROPPED_KINDS]
    # counts equal what was done, each dropped row once
    assert q.n_rows_in == len(BASE) + len(dups)
    assert q.n_rows_in - q.n_rows_out == sum(q.dropped.values()) == len(BASE) - len(kept) + len(dups)
    assert q.fixed.get("off_tick", 0) == sum(kinds[i] == "off_tick" for i in kept)
    # the output is exactly the good rows, with their true values
    pd.testing.assert_frame_equal(out[OHLCV], BASE.iloc[kept][OHLCV], check_freq=False)
    # and every OHLC invariant holds
    o, h, l, c, v = (out[k].to_numpy() for k in OHLCV)
    assert np.isfinite(out[OHLCV].to_numpy()).all() and (l > 0).all() and (v >= 0).all()
    assert (h >= np.maximum(o, c)).all() and (l <= np.minimum(o, c)).all() and (h >= l).all()
    assert (np.abs(out[["open", "high", "low", "close"]].to_numpy() / 0.25 % 1) < 1e-9).all()
    assert out.index.is_monotonic_increasing and out.index.is_unique
    assert validate_bars(out).ok


# ---------------------------------------------------------------- repairs that scripts notice

def _damaged(tmp_path, name="damaged.csv"):
    b = demo_bars(n_days=1, seed=3).iloc[:200].reset_index()
    b["timestamp"] = b["timestamp"].dt.tz_localize(None)
    b.loc[10, "high"] = b.loc[10, "low"] - 1.0      # high < low
    b.loc[20, "volume"] = -3                        # negative volume
    b.loc[30, "open"] = b.loc[30, "open"] + 0.1     # off the tick grid, inside the bar: rounded
    p = tmp_path / name
    b.to_csv(p, index=False)
    return p


def test_a_repair_prints_one_line_naming_the_file_on_stderr(tmp_path, capsys):
    p = _damaged(tmp_path)
    b = load_bars(p, instrument="ES")
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"scalp_lib: repaired {p}: 2 of 200 rows dropped (1 high<low or open/close outside high-low, "
                   f"1 negative volume); 1 row fixed (1 off the tick grid, rounded)"]
    assert len(b) == 198
    load_bars(load_bars(p, instrument="ES"), instrument="ES")       # a clean frame: nothing to say
    capsys.readouterr()
    load_bars(demo_bars(n_days=1).iloc[:50], instrument="ES")
    assert capsys.readouterr().err == ""


def test_fail_on_repair_raises_a_named_error_with_what_the_repair_would_do(tmp_path):
    from scalp_lib.data import DataRepairedError
    p = _damaged(tmp_path)
    with pytest.raises(DataRepairedError, match=r"fail_on_repair is set: 2 of 200 rows dropped") as e:
        load_bars(p, instrument="ES", fail_on_repair=True)
    assert str(p) in str(e.value) and e.value.report.dropped == {"ohlc_inconsistent": 1, "negative_volume": 1}
    clean = tmp_path / "clean.csv"
    demo_bars(n_days=1).iloc[:50].reset_index().to_csv(clean, index=False)
    assert len(load_bars(clean, fail_on_repair=True)) == 50
    ticks = tmp_path / "t.csv"
    ticks.write_text("DateTime,Price,Volume\n2013-09-03 08:30:01,1640.25,3\n2013-09-03 08:30:00,1640.50,1\n")
    with pytest.raises(DataRepairedError, match="1 row fixed .1 out of order, sorted"):
        load_ticks(ticks, instrument="ES", fail_on_repair=True)


def test_scalp_report_echoes_repairs_and_fails_on_repair_with_exit_status_2(tmp_path, capsys):
    from scalp_lib.report import main
    p = _damaged(tmp_path)
    args = ["data_quality", "-p", "data_path", str(p), "-p", "tz", "America/Chicago", "--output-dir", str(tmp_path / "out")]
    assert main(args + ["--fail-on-repair"]) == 2
    err = capsys.readouterr().err
    assert "DataRepairedError" in err and "fail_on_repair is set: 2 of 200 rows dropped" in err
    assert main(args) == 0
    assert f"scalp_lib: repaired {p}: 2 of 200 rows dropped" in capsys.readouterr().err


def test_scalp_pipeline_and_predict_refuse_a_file_that_needs_repair(tmp_path, capsys):
    from scalp_lib.pipeline import PipelineConfig, pipeline_main, read_bars_chunked
    p = _damaged(tmp_path)
    cfg = tmp_path / "c.yaml"
    PipelineConfig(data_path=str(p), run_dir=str(tmp_path / "run"), seq_length=8).to_yaml(cfg)
    assert pipeline_main([str(cfg), "--fail-on-repair"]) == 2
    assert "DataRepairedError" in capsys.readouterr().err
    bars = read_bars_chunked(p, instrument="ES", chunk_rows=64)
    assert bars.attrs["dropped"] == {"ohlc_inconsistent": 1, "negative_volume": 1} and bars.attrs["fixed"] == {"off_tick": 1}
    assert PipelineConfig.from_yaml(PipelineConfig(fail_on_repair=True).to_yaml()).fail_on_repair is True


# ---------------------------------------------------------------- other vendors' layouts, from the real ES file

@pytest.fixture(scope="module")
def es(shared_data):
    return es_bars(shared_data)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_real_es_bars_in_each_vendor_layout_load_exactly(es, tmp_path, layout):
    name = {"dbn": "es.ohlcv-1m.dbn.zst", "ninjatrader": "ES 12-25.Last.txt"}.get(layout, f"es_{layout}.csv")
    p = write_layout(es, tmp_path / name, layout)
    b = load_bars(p, tz="UTC", instrument="ES")
    pd.testing.assert_frame_equal(b, es)
    q = b.attrs["quality"]
    assert q.ok and q.n_rows_in == len(es)
    if layout in ("ninjatrader", "kibot", "firstrate", "tradestation"):   # what was inferred is stated
        assert any(n.startswith("layout:") or n.startswith("volume = Up + Down") for n in q.notes), q.notes
    # chunked readers see the same rows (a headerless file loses no first row) and the same problems
    assert sum(len(c) for c in iter_raw_chunks(p, 20_000)) == len(es)
    if layout != "dbn":
        chunked = validate_file(p, tz="UTC", instrument="ES", chunk_rows=20_000, progress=False)
        whole = load_bars(p, tz="UTC", instrument="ES", policy="report").attrs["quality"]
        assert chunked.counts == whole.counts


def test_ninjatrader_mes_helper_writes_the_es_prices_for_mes(shared_data, tmp_path, es):
    p = ninjatrader_mes(shared_data, tmp_path, n_bars=500)
    assert p.name == "MES 12-25.Last.txt"
    b = load_bars(p, instrument="MES", tz="UTC")
    assert b.attrs["instrument"] == "MES"
    pd.testing.assert_frame_equal(b, es.iloc[:500])


def test_ambiguous_dates_are_refused_with_the_parameter_that_decides(es, tmp_path):
    from scalp_lib.vendors import AmbiguousLayoutError
    sept = es[es.index.tz_convert("UTC").day <= 12].iloc[:3000]       # no day above 12: undecidable
    p = write_layout(sept, tmp_path / "k.txt", "kibot")
    with pytest.raises(AmbiguousLayoutError, match="date_order='MDY'"):
        load_bars(p, tz="UTC")
    with pytest.raises(AmbiguousLayoutError, match="date_order"):
        next(iter_raw_chunks(p, 1000))
    pd.testing.assert_frame_equal(load_bars(p, tz="UTC", date_order="MDY"), sept)
    dmy = load_bars(p, tz="UTC", date_order="DMY", instrument="ES")
    assert dmy.index.tz_convert("UTC")[0] == pd.Timestamp("2025-01-09 00:00", tz="UTC")   # 09/01 read day-first
    assert "dates read day-first (DMY), as date_order says" in dmy.attrs["quality"].notes
    # the chunked reader decides over the whole file, not chunk by chunk
    first_days = es.iloc[:20_000]                                       # 1-16 September: decided by the 13th
    p2 = write_layout(first_days, tmp_path / "k2.txt", "kibot")
    assert sum(len(c) for c in iter_raw_chunks(p2, 1000)) == 20_000
    assert validate_file(p2, tz="UTC", chunk_rows=1000, progress=False).counts["bad_timestamp"] == 0


def test_a_headerless_file_that_fits_no_layout_says_what_was_found(tmp_path):
    from scalp_lib.vendors import VendorFormatError
    p = tmp_path / "odd.txt"
    p.write_text("4800.25;4801;4799.75;4800.5\n" * 3)
    with pytest.raises(VendorFormatError, match=r"4 columns: number, number, number, number.*add a header row"):
        load_bars(p)
    p.write_text("20240102 083000;4801.00;4799.75;4800.25;4800.50;120\n" * 3)    # high column first
    with pytest.raises(VendorFormatError, match="not open, high, low, close"):
        load_bars(p)


# ---------------------------------------------------------------- Databento DBN

def test_dbn_multi_contract_file_feeds_load_contracts_with_exact_prices(es, tmp_path):
    from scalp_lib.contracts import load_contracts
    from scalp_lib.vendors import read_dbn, write_dbn, VendorFormatError
    front = es.iloc[:3000].copy()
    front.attrs = {}   # pandas compares attrs when concatenating; a quality report (with frames inside) cannot be compared
    back = front.assign(**{k: front[k] + 60.0 for k in ("open", "high", "low", "close")}).iloc[::3]
    spread = front.iloc[:50].assign(**{k: -60.0 for k in ("open", "high", "low", "close")})
    frame = pd.concat([front.assign(contract="ESZ5"), back.assign(contract="ESH6"), spread.assign(contract="ESZ5-ESH6")])
    p = write_dbn(tmp_path / "glbx.ohlcv-1m.dbn.zst", frame.sort_index(kind="stable"))
    raw = read_dbn(p)
    assert sorted(raw["contract"].unique()) == ["ESH6", "ESZ5"]
    assert any("50 records of calendar spreads left out" in n for n in [raw.attrs["layout"]])
    got = load_contracts(p)
    assert list(got) == ["ESZ5", "ESH6"]
    pd.testing.assert_frame_equal(got["ESZ5"][OHLCV], front[OHLCV])
    pd.testing.assert_frame_equal(got["ESH6"][OHLCV], back[OHLCV], check_freq=False)
    with pytest.raises(VendorFormatError, match="holds 2 contracts"):
        load_bars(p)
    with pytest.raises(VendorFormatError, match="holds 2 contracts"):
        list(iter_raw_chunks(p, 500))
    one = read_dbn(p, symbols=["ESH6"])
    assert one.attrs["contract"] == "ESH6" and len(one) == len(back)


def test_dbn_symbols_resolve_by_date_when_an_instrument_id_is_reused(tmp_path):
    import datetime as dt
    from types import SimpleNamespace as NS
    import databento_dbn as db
    from scalp_lib.vendors import read_dbn
    t0 = pd.Timestamp("2025-09-01 14:30", tz="UTC").value
    day = 86_400 * 10**9
    maps = [NS(raw_symbol="ESU5", intervals=[NS(start_date=dt.date(2025, 9, 1), end_date=dt.date(2025, 9, 2), symbol="7")]),
            NS(raw_symbol="ESZ5", intervals=[NS(start_date=dt.date(2025, 9, 2), end_date=dt.date(2025, 9, 3), symbol="7")])]
    meta = db.Metadata(dataset="GLBX.MDP3", start=t0, end=t0 + 2 * day, stype_in=db.SType.RAW_SYMBOL,
                       stype_out=db.SType.INSTRUMENT_ID, schema=db.Schema.OHLCV_1M, symbols=["ESU5", "ESZ5"], mappings=maps)
    recs = [db.OHLCVMsg(rtype=db.RType.OHLCV_1M.value, publisher_id=1, instrument_id=7, ts_event=t0 + k * day,
                        open=6450_250_000_000, high=6451_000_000_000, low=6449_750_000_000, close=6450_500_000_000, volume=9)
            for k in (0, 1)]
    p = tmp_path / "reuse.dbn"
    p.write_bytes(bytes(meta) + b"".join(bytes(r) for r in recs))
    raw = read_dbn(p)
    assert raw["contract"].tolist() == ["ESU5", "ESZ5"]
    assert raw["open"].tolist() == [6450.25, 6450.25] and raw["volume"].tolist() == [9.0, 9.0]
    assert raw["timestamp"].tolist() == [pd.Timestamp(t0, tz="UTC"), pd.Timestamp(t0 + day, tz="UTC")]


def test_dbn_trades_round_trip_through_load_ticks(shared_data, tmp_path):
    from scalp_lib.vendors import write_dbn
    t = load_ticks(shared_data / "es_ticks_2013-09.csv.gz", tz="America/Chicago", instrument="ES").iloc[:5000]
    p = write_dbn(tmp_path / "esu3.trades.dbn", t.assign(contract="ESU3"))
    back = load_ticks(p)
    assert back.attrs["instrument"] == "ES"
    pd.testing.assert_frame_equal(back, t)


# ---------------------------------------------------------------- loaded bars in pandas: concat, Parquet; more vendors

def test_loaded_bars_concatenate(es, tmp_path):
    # pandas compares the frames' attrs in concat; equal sources used to reach the reports' value comparison and fail
    frames = [pd.read_csv(write_layout(es.iloc[k:k + 400], tmp_path / f"{k}.csv", "vendor_header")) for k in (0, 400)]
    a, b = (load_bars(f, tz="UTC", instrument="ES") for f in frames)    # both sourced 'DataFrame'
    both = pd.concat([a, b])
    pd.testing.assert_frame_equal(both, es.iloc[:800], check_freq=False)
    assert "quality" not in both.attrs                        # two reports: the concatenation carries neither
    assert a.attrs["quality"] != b.attrs["quality"] and a.attrs["quality"] == a.attrs["quality"]
    f = load_bars(write_layout(es.iloc[:400], tmp_path / "f.txt", "ninjatrader"), tz="UTC", instrument="ES")
    again = pd.concat([f.iloc[:100], f.iloc[300:], load_bars(tmp_path / "f.txt", tz="UTC", instrument="ES")])   # slices, reload
    assert len(again) == 600 and again["close"].iloc[-1] == es["close"].iloc[399]


def test_loaded_bars_round_trip_through_parquet(es, tmp_path):
    bars = load_bars(write_layout(es.iloc[:500], tmp_path / "a.csv", "firstrate"), tz="UTC", instrument="ES")
    bars.to_parquet(tmp_path / "bars.parquet")
    back = pd.read_parquet(tmp_path / "bars.parquet")
    pd.testing.assert_frame_equal(back, es.iloc[:500], check_freq=False)
    assert str(back.index.tz) == "America/Chicago"
    q = back.attrs["quality"]                                # the report's JSON summary travels in the file
    assert (q["n_rows_in"], q["n_rows_out"], q["ok"], q["dropped"]) == (500, 500, True, {})
    assert q["counts"]["duplicate_timestamp"] == 0 and q["source"].endswith("a.csv")


def _iqfeed(bars, path, period=True):
    "IQFeed-style header export: TimeStamp, High, Low, Open, Close, Total Volume (running, per UTC day), Period Volume."
    utc = bars.index.tz_convert("UTC")
    vol = bars["volume"].astype("int64")
    df = pd.DataFrame({"TimeStamp": utc.strftime("%Y-%m-%d %H:%M:%S"), "High": bars["high"].to_numpy(),
                       "Low": bars["low"].to_numpy(), "Open": bars["open"].to_numpy(), "Close": bars["close"].to_numpy(),
                       "Total Volume": vol.groupby(utc.date).cumsum().to_numpy()})
    if period: df["Period Volume"] = vol.to_numpy()
    df.to_csv(path, index=False)
    return path


def test_an_iqfeed_export_of_real_bars_takes_each_bars_own_volume(es, tmp_path):
    b = load_bars(_iqfeed(es.iloc[:600], tmp_path / "iq.csv"), tz="UTC", instrument="ES")
    pd.testing.assert_frame_equal(b, es.iloc[:600])   # volume from Period Volume, not the running Total Volume


def test_a_running_total_volume_column_is_refused_with_its_name(es, tmp_path):
    p = _iqfeed(es.iloc[:600], tmp_path / "iq_total.csv", period=False)
    with pytest.raises(DataValidationError, match=r"'Total Volume' is a running total.*PeriodVolume"):
        load_bars(p, tz="UTC", instrument="ES")
    per_bar = es.iloc[:600].rename(columns={"volume": "Total Volume"})   # a per-bar column under that name is kept
    per_bar.index = per_bar.index.tz_convert("UTC").tz_localize(None)
    b = load_bars(per_bar.rename_axis("timestamp").reset_index(), tz="UTC", instrument="ES")
    assert b["volume"].tolist() == es["volume"].iloc[:600].tolist()


def test_a_sierra_chart_export_of_real_bars_loads_exactly(es, tmp_path):
    bars = es.iloc[:600]
    utc = bars.index.tz_convert("UTC")
    df = pd.DataFrame({"Date": [f"{t.year}/{t.month}/{t.day}" for t in utc], " Time": [f" {t:%H:%M:%S}.000" for t in utc],
                       " Open": bars["open"].to_numpy(), " High": bars["high"].to_numpy(), " Low": bars["low"].to_numpy(),
                       " Last": bars["close"].to_numpy(), " Volume": bars["volume"].astype("int64").to_numpy(),
                       " NumberOfTrades": 7, " BidVolume": 3, " AskVolume": 4})   # Sierra Chart's names, spaces included
    df.to_csv(tmp_path / "ESZ25.scid_BarData.txt", index=False)
    b = load_bars(tmp_path / "ESZ25.scid_BarData.txt", tz="UTC", instrument="ES")
    pd.testing.assert_frame_equal(b, bars)
    assert b.attrs["quality"].ok
