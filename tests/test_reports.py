"""Every report template runs end to end through papermill + nbconvert on small CI-sized parameters."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

from scalp_lib.report import ReportExecutionError, ReportParameterError, list_templates, run_report

ROOT = Path(__file__).resolve().parents[1]
from report_checks import SMALL, assert_self_contained_html  # noqa: E402

# templates whose SMALL render is made (with the generic checks) by a test that also checks its content
RENDERED_ELSEWHERE = {"data_quality": "test_data_quality_demo_report_shows_holiday_and_none_found",
                      "training": "tests/test_train.py::test_training_report_renders_with_every_section"}


def test_every_template_has_ci_parameters():
    assert set(list_templates()) == set(SMALL), "add CI-sized parameters for new templates to SMALL"


@pytest.mark.parametrize("name", sorted(set(SMALL) - set(RENDERED_ELSEWHERE)))
def test_report_renders_html_with_code_hidden(tmp_path, name):
    paths = run_report(name, SMALL[name], output_dir=tmp_path)
    assert_self_contained_html(paths)
    html = paths.html.read_text()
    if name == "study":   # a test period shorter than settings [metrics] min_sessions: its Sharpe ratio is said to be withheld
        assert re.search(r"Sharpe ratio and PSR withheld \(\d+ &lt; 20 sessions\)", html) and "Sharpe ratio n/a" not in html


def test_data_quality_on_the_real_es_file(tmp_path, shared_data):
    p = run_report("data_quality", {"data_path": str(shared_data / "es_1min_2025-09_11.csv.gz"),
                                    "tz": "America/New_York", "ts_offset": "5h"}, output_dir=tmp_path)
    html = p.html.read_text()
    assert "75,791 one-minute bars" in html
    # the numbers on the page are the library's own results on the same file
    import hashlib
    import numpy as np
    from scalp_lib.data import load_bars, session_dates
    path = shared_data / "es_1min_2025-09_11.csv.gz"
    bars = load_bars(path, tz="America/New_York", ts_offset="5h")
    q = bars.attrs["quality"]
    text = re.sub(r"<[^>]+>", "", html)
    n_holes = int((q.sessions["status"] == "holes").sum())
    assert f"{len(q.sessions)} sessions expected in the period" in text and f"{n_holes} with holes" in text and n_holes == 2
    assert "2025-09-01 Labor Day (holiday session, closes 12:00)" in text
    for _, g in q.gaps.iterrows():                 # every hole listed with its file lines
        assert re.search(rf"{g['session']:%Y-%m-%d}\s+{g['first missing']}\s+{g['last missing']}\s+{g['minutes']}\s+100.0\s+hole\s+"
                         rf"{g['line before']}\s+{g['line after']}", text), g.tolist()
    outside = q.stamp["outside_by"].set_index("session")
    assert re.search(rf"2025-09-01\s+after the holiday session close 12:00 \(Labor Day\)\s+{outside.loc['2025-09-01', 'bars']}", text)
    assert f"detected from the data: the start ({q.stamp['bar_at_open']} of 55 sessions" in text
    assert "Bad ticks" in text and q.counts["bad_tick"] == 0 and re.search(r"Bad ticks.*?None found\.", text, re.S)
    assert "<tbody>\n  </tbody>" not in html and "<tbody></tbody>" not in html      # no empty table
    assert "…" not in text                                                           # nothing cut
    # the same counts as scalp_lib's own loader, and the file's provenance in full (path, SHA-256, period)
    sessions = len(np.unique(session_dates(bars.index, "ES")))
    assert f"{len(bars):,} one-minute bars</strong> in <strong>{sessions} trading sessions" in html
    assert f"{q.n_rows_in:,} rows read, {q.n_rows_out:,} kept, {q.n_dropped:,} dropped" in html
    for full in (str(path.resolve()), hashlib.sha256(path.read_bytes()).hexdigest(), f"{bars.index[0]} to {bars.index[-1]}"):
        assert f">{full}</td>" in html


def test_data_quality_demo_report_shows_holiday_and_none_found(tmp_path):
    assert SMALL["data_quality"] == {"demo_days": 12}                            # 2-17 Jan 2024: MLK day 15 Jan
    p = run_report("data_quality", SMALL["data_quality"], output_dir=tmp_path)
    text = re.sub(r"<[^>]+>", "", assert_self_contained_html(p))   # also the generic checks of every template
    assert re.search(r"2024-01-15\s+holiday session, closes 12:00\s+Dr. Martin Luther King Jr. Day\s+1140\s+1140\s+0\s+0\s+as expected", text)
    assert re.search(r"Holes: missing data.*?None found\.", text, re.S)
    assert re.search(r"Bars while the exchange was closed.*?None found\.", text, re.S)
    assert "The histogram shows the central 99.9 %; the count beyond it is printed on the plot" in " ".join(text.split())


def test_data_quality_on_the_real_es_trades(tmp_path, shared_data):
    p = run_report("data_quality", {"data_path": str(shared_data / "es_ticks_2013-09.csv.gz"), "data_kind": "trades",
                                    "tz": "America/Chicago"}, output_dir=tmp_path)
    html = p.html.read_text()
    assert "2,264 one-minute bars" in html and "500,000 rows in" in html


def test_bad_input_names_the_parameter(tmp_path):
    with pytest.raises(ReportParameterError, match="did you mean 'demo_days'"):
        run_report("data_quality", {"demo_dayz": 3}, output_dir=tmp_path)
    with pytest.raises(ReportExecutionError, match="bar file not found: /no/such.csv"):
        run_report("data_quality", {"data_path": "/no/such.csv"}, output_dir=tmp_path)


def test_backtest_report_parameter_errors(tmp_path):
    with pytest.raises(ReportExecutionError, match="'predictions_path' is required"):
        run_report("backtest_report", {"signal_source": "predictions"}, output_dir=tmp_path, name="bad")


def test_cli(tmp_path):
    exe = Path(sys.executable).parent / "scalp-report"
    listing = subprocess.run([str(exe), "--list"], capture_output=True, text=True, timeout=120)
    assert listing.returncode == 0 and "data_quality" in listing.stdout and "demo_days: int" in listing.stdout
    bad = subprocess.run([str(exe), "data_quality", "-p", "polcy", "strict", "--output-dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "did you mean 'policy'" in bad.stderr
    ok = subprocess.run([str(exe), "data_quality", "-p", "demo_days", "2", "--output-dir", str(tmp_path)],
                        capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "data_quality.html").exists()


@pytest.mark.parametrize("value", [["a.csv"], {"path": "a.csv"}, ("a.csv",), True, 1.5, None])
def test_a_value_of_another_kind_for_a_text_parameter_is_refused(value):
    "A list or dict used to reach the template as its text form (\"['a.csv']\"), a bool as 'True'."
    from scalp_lib.report import check_params
    with pytest.raises(ReportParameterError, match="parameter 'data_path' must be str"):
        check_params("data_quality", {"data_path": value})


@pytest.mark.parametrize("name, value", [("demo_days", 2.5), ("demo_days", True), ("demo_days", [3]), ("demo_days", None),
                                         ("test_frac", True), ("test_frac", [0.2]), ("test_frac", float("nan")),
                                         ("test_frac", None), ("flat_at_session_end", 2), ("flat_at_session_end", None)])
def test_numbers_and_flags_of_another_kind_are_refused(name, value):
    from scalp_lib.report import check_params
    with pytest.raises(ReportParameterError, match=f"parameter '{name}' must be"):
        check_params("backtest_report", {name: value})


def test_parameters_that_convert_exactly_are_accepted():
    from scalp_lib.report import check_params
    import datetime as dt
    got = check_params("backtest_report", {"demo_days": "12", "model_epochs": 2.0, "test_frac": "0.25", "start": dt.date(2024, 1, 3),
                                           "end": "2024-01-09", "checkpoint": Path("runs/a/model.pt"), "flat_at_session_end": "no"})
    assert got == {"demo_days": 12, "model_epochs": 2, "test_frac": 0.25, "start": "2024-01-03", "end": "2024-01-09",
                   "checkpoint": "runs/a/model.pt", "flat_at_session_end": False}


def test_metadata_table_names_the_file_in_full(tmp_path, monkeypatch):
    "SHA-256, full path and period are never cut with '...' (pandas cuts cells over display.max_colwidth, 50 characters)."
    import hashlib
    import pandas as pd
    from scalp_lib.data import demo_bars
    from scalp_lib.report import run_metadata
    monkeypatch.chdir(tmp_path)
    deep = tmp_path / ("a_long_folder_name_for_the_vendor_files_" * 2) / "bars.csv"
    deep.parent.mkdir()
    bars = demo_bars(n_days=2, seed=0)
    bars.reset_index().to_csv(deep, index=False)
    rel = str(deep.relative_to(tmp_path))
    md = run_metadata({"data_path": rel, "instrument": "ES"}, bars, analysed=bars.iloc[100:])
    sha = hashlib.sha256(deep.read_bytes()).hexdigest()
    assert md.loc["data file", "value"] == str(deep) and md.loc["data file SHA-256", "value"] == sha
    assert md.loc["data period", "value"] == f"{bars.index[0]} to {bars.index[-1]}"
    assert md.loc["period analysed", "value"] == f"{bars.index[100]} to {bars.index[-1]}"
    html = md._repr_html_()
    assert pd.get_option("display.max_colwidth") == 50
    for full in (str(deep), sha, f"{bars.index[0]} to {bars.index[-1]}"):
        assert full in html
    assert "..." not in html and "\u2026" not in html and "overflow-wrap: anywhere" in html


# ---------------------------------------------------------------- backtest report: the tear sheet, read back and recomputed

def _report_markdown(nb_path) -> str:
    import nbformat
    nb = nbformat.read(str(nb_path), as_version=4)
    return "\n".join(o.get("data", {}).get("text/markdown", "") for c in nb.cells for o in c.get("outputs", []))


def _tables(html_path) -> list:
    from bs4 import BeautifulSoup
    soup = BeautifulSoup(Path(html_path).read_text(), "html.parser")
    return [([c.get_text(" ", strip=True) for c in t.find_all("caption")],
             [[c.get_text(" ", strip=True) for c in tr.find_all(["th", "td"])] for tr in t.find_all("tr")]) for t in soup.find_all("table")]


def _money(v) -> str:
    return f"{v:,.0f} USD".replace("-", "\u2212")


def _num(v, d=2) -> str:
    return f"{v:,.{d}f}".replace("-", "\u2212")


def _scratch_dirs() -> set:
    import tempfile
    return set(Path(tempfile.gettempdir()).glob("backtest_model_*"))


def _regime_rows(html_path) -> dict:
    "The per-regime table of a backtest report: {(kind, regime): [trades, share, net P&L, expectancy, its interval, win rate, ...]}."
    rows = next(rows for cap, rows in _tables(html_path) if cap and cap[0].startswith("Trades by regime"))
    out, kind = {}, None
    for r in rows:
        if len(r) < 13 or not r[-12].replace(",", "").isdigit(): continue     # header rows
        if len(r) == 14: kind = r[0]                                          # the first row of a kind names it
        out[(kind, r[-13])] = r[-12:]
    return out


def _check_regime_rows(rows: dict, table, kind: str):
    "The page's rows of one regime kind equal scalp_lib.regimes.regime_breakdown's."
    for lab, r in table.drop(index="all").iterrows():
        got = rows[(kind, lab)]
        assert got[0] == f"{r['n_trades']:,}" and got[2] == f"{r['net_profit_dollars']:,.0f}", (kind, lab, got)
        if r["n_trades"] >= 2:
            assert got[3:6] == [f"{r[c]:,.2f}" for c in ("expectancy_dollars", "expectancy_ci_low", "expectancy_ci_high")], (kind, lab, got)
            assert got[6:9] == [f"{r[c]:,.1f}" for c in ("win_rate_pct", "win_rate_ci_low", "win_rate_ci_high")], (kind, lab, got)
        assert got[-1] == ("few" if r["few"] else ""), (kind, lab, got)


def test_backtest_report_tear_sheet_matches_the_library_on_the_rule(tmp_path):
    "21 test sessions of the built-in rule: every headline figure and word, the CSV and the tables equal scalp_lib's own results."
    import numpy as np
    import pandas as pd
    from scalp_lib import tearsheet as ts
    from scalp_lib.backtest import momentum_proba, held_signal, threshold_from_quantile, run_backtest, buy_and_hold
    from scalp_lib.config import get_instrument
    from scalp_lib.data import demo_bars, session_dates
    from scalp_lib.metrics import bootstrap_ci
    before = _scratch_dirs()
    p = run_report("backtest_report", {"demo_days": 105, "bootstrap_samples": 200, "signal_source": "rule"}, output_dir=tmp_path, name="bt_rule")
    assert _scratch_dirs() <= before                                  # the template's scratch folder is gone
    text = _report_markdown(p.notebook)
    # the library on the same data, with the report's rules
    spec = get_instrument("ES")
    all_bars = demo_bars(n_days=105, seed=0)
    sess = session_dates(all_bars.index, spec)
    days = np.unique(sess)
    lo = days[int(np.floor(len(days) * 0.8))]
    proba_all = momentum_proba(all_bars)
    thr = threshold_from_quantile(proba_all[sess < lo], 0.95)
    keep = sess >= lo
    bars, proba = all_bars[keep], proba_all[keep]
    common = dict(instrument=spec, initial_capital_dollars=100000.0, take_profit_ticks=0, stop_loss_ticks=0, max_hold_bars=0,
                  flat_at_session_end=True, intrabar_rule="stop_first", reentry="fresh")
    grid_q = [0.8, 0.9, 0.95, 0.98, 0.99]
    grid = ts.held_signal_grid(bars, proba, entry_thresholds=[threshold_from_quantile(proba_all[sess < lo], q) for q in grid_q],
                               commission_per_side_dollars=2.25, hold_bars=10, **common)
    res = run_backtest(bars, held_signal(proba, thr, 10), commission_per_side_dollars=2.25, slippage_ticks=1.0, n_trials=grid.attrs["n_trials"],
                       trials_sharpe_std=grid.attrs["trials_sharpe_std"], **common)
    m, t = res.metrics, res.trades
    assert m.n_sessions == 21 and m.sample_ok and m.n_trades >= 100           # enough to measure
    assert f"{thr:.4f}: the 0.95 quantile of max(P(up), P(down))" in text
    assert f"net profit {_money(m.net_profit)} after {_money(m.commission_paid + m.slippage_paid)}" in text
    assert f"**{m.n_trades:,} trades** in 21 sessions" in text
    be = ts.breakeven_slippage_ticks(t, 12.5)
    assert f"breakeven slippage {_num(be)} ticks per side" in text and f"**Breakeven slippage: {_num(be)} ticks per contract per side**" in text
    # the headline's words are claim_words on the library's intervals
    ci = bootstrap_ci(t, res.equity, instrument=spec, initial_capital_dollars=100000.0, n_samples=200, seed=0).loc[("trade bootstrap", "net_profit")]
    day, day_b = ts.daily_series(res), ts.daily_series(buy_and_hold(bars, instrument=spec, commission_per_side_dollars=2.25, slippage_ticks=1.0))
    diff = ts.sharpe_difference(day["return"], day_b["return"], m.periods_per_year, n_samples=200, seed=0)
    kw = dict(n_sessions=21, min_sessions=20)
    profit = ts.claim_words("profitable", ci_low=ci.ci_low, ci_high=ci.ci_high, prob=m.probabilistic_sharpe, **kw)
    beats = ts.claim_words("beats", ci_low=diff["ci_low"], ci_high=diff["ci_high"], versus="buy and hold of the same contract", **kw)
    edge = ts.claim_words("edge", prob=m.deflated_sharpe, **kw)
    assert f"**The strategy {profit}**" in text and f"95% trade-bootstrap interval {_money(ci.ci_low)} to {_money(ci.ci_high)}" in text
    assert f"**Against buy and hold: the strategy {beats}**" in text
    assert f"Sharpe difference {_num(diff['estimate'])} (95% paired block-bootstrap interval {_num(diff['ci_low'])} to {_num(diff['ci_high'])})" in text
    assert f"the strategy {edge}** (probabilistic Sharpe ratio {_num(m.probabilistic_sharpe, 3)}" in text
    assert f"deflated {_num(m.deflated_sharpe, 3)}" in text and f"Edge after trying {m.n_trials} configurations" in text
    # the trade list CSV beside the HTML, named after the report, equals the library's ledger
    csv = pd.read_csv(tmp_path / "bt_rule_trades.csv", index_col="trade")
    ref = ts.trade_list(t)
    assert len(csv) == len(ref) and list(csv.columns) == list(ref.columns)
    np.testing.assert_allclose(csv["net_dollars"].to_numpy(), ref["net_dollars"].to_numpy())
    assert (pd.to_datetime(csv["entry_time"], utc=True) == ref["entry_time"].dt.tz_convert("UTC").reset_index(drop=True).set_axis(csv.index)).all()
    # tables on the page
    tables = {cap[0] if cap else i: rows for i, (cap, rows) in enumerate(_tables(p.html))}
    dd = next(rows for c, rows in tables.items() if isinstance(c, str) and "deepest drawdown periods" in c)
    periods = ts.drawdown_periods(res.equity, 100000.0, instrument=spec)
    assert dd[2][-2] == f"{periods['depth_dollars'].iloc[0]:,.0f}" and dd[2][-3] == str(periods["sessions"].iloc[0])
    sides = next(rows for c, rows in tables.items() if isinstance(c, str) and c.startswith("Long vs short"))
    side_ref = ts.side_table(t, 12.5)
    assert sides[-1][:6] == ["all", f"{len(t):,}", "100.0", f"{side_ref.loc['all', 'gross P&L (US$)']:,.2f}",
                             f"{side_ref.loc['all', 'costs (US$)']:,.2f}", f"{m.net_profit:,.2f}"]
    exits = next(rows for c, rows in tables.items() if isinstance(c, str) and c.startswith("Exit reasons: gross"))
    assert "gross P&L (US$)" in exits[0] and "net P&L (US$)" in exits[0]          # gross and net labelled
    html = p.html.read_text()
    assert "<tbody>\n  </tbody>" not in html and "<tbody></tbody>" not in html    # no empty table
    assert "resolution" not in html                                                # the bootstrap table's old column is gone
    # per regime: the trades at their decision bars, with the library's intervals (same resamples and seed)
    from scalp_lib.regimes import compute_regimes, regime_breakdown
    regimes = compute_regimes(all_bars, instrument=spec)
    rows = _regime_rows(p.html)
    for kind in ("volatility", "trend", "phase"):
        _check_regime_rows(rows, regime_breakdown(t, regimes, kind, n_samples=200, seed=0), kind)
    assert sum(int(rows[("volatility", lab)][0]) for lab in ("low", "mid", "high")) + int(rows.get(("volatility", "(none)"), ["0"])[0]) == len(t)
    assert rows[("all trades", "all")][0] == f"{len(t):,}" and "Trading in every regime" in text


def test_backtest_report_model_over_folds_files_and_recomputation(tmp_path):
    "A model trained here over 2 walk-forward folds: the spread, the files beside the report, and the main run recomputed from them."
    import numpy as np
    import pandas as pd
    from scalp_lib import tearsheet as ts
    from scalp_lib.backtest import held_signal, threshold_from_quantile, run_backtest
    from scalp_lib.data import demo_bars, OHLCV
    from scalp_lib.pipeline import predict_bars, proba_for_bars, PROBA_COLUMNS
    from scalp_lib.splits import temporal_split
    before = _scratch_dirs()
    p = run_report("backtest_report", {"demo_days": 10, "bootstrap_samples": 100, "model_type": "feedforward", "model_epochs": 1, "n_folds": 2,
                                       "regime_allow": "phase:middle"}, output_dir=tmp_path, name="bt_model")
    assert _scratch_dirs() <= before
    for suffix in ("_trades.csv", "_model.pt", "_predictions.parquet"):
        assert (tmp_path / f"bt_model{suffix}").is_file(), suffix
    text = _report_markdown(p.notebook)
    # the threshold: the model's own validation period, scored here from the kept model, without the test period
    bars = demo_bars(n_days=10, seed=0)
    c1, c2 = temporal_split(len(bars), None, horizon_bars=1, embargo_bars=0).boundaries
    up_to_val = bars[OHLCV].iloc[:c2].rename_axis("timestamp").reset_index()
    up_to_val.to_parquet(tmp_path / "val_bars.parquet", index=False)
    val = pd.read_parquet(predict_bars(tmp_path / "bt_model_model.pt", tmp_path / "val_bars.parquet", tmp_path / "val.parquet", instrument="ES"))
    val = val[pd.DatetimeIndex(val["timestamp"]) >= bars.index[c1]]
    thr = threshold_from_quantile(val[PROBA_COLUMNS].to_numpy(np.float64), 0.95)
    assert f"{thr:.4f}: the 0.95 quantile of max(P(up), P(down)) on the model's validation period" in text
    preds = pd.read_parquet(tmp_path / "bt_model_predictions.parquet")
    tb = bars[bars.index >= preds["timestamp"].min()]
    proba = proba_for_bars(preds, tb.index)[PROBA_COLUMNS].to_numpy()
    from scalp_lib.regimes import compute_regimes, regime_filter
    mid = regime_filter(held_signal(proba, thr, 10), compute_regimes(bars, instrument="ES").loc[tb.index], {"phase": ["middle"]})
    res = run_backtest(tb, mid.to_numpy(), take_profit_ticks=0, stop_loss_ticks=0, max_hold_bars=0)
    assert f"net profit {_money(res.metrics.net_profit)}" in text and f"**{res.metrics.n_trades:,} trades**" in text
    assert len(pd.read_csv(tmp_path / "bt_model_trades.csv")) == res.metrics.n_trades
    # the spread over the two folds: the per-run table on the page, its mean and t interval in the headline
    runs = next(rows for cap, rows in _tables(p.html) if cap and cap[0] == "Every run")
    col = runs[0].index("net profit (US$)")                  # header row: one blank cell per index level, then the columns
    body = [r for r in runs if r and r[0] in ("0", "1")]
    assert [r[0] for r in body] == ["0", "1"]
    per_run = np.array([float(r[col].replace(",", "")) for r in body])
    st = ts.spread_table(pd.DataFrame({"fold": [0, 1], "net_profit": per_run}))
    np.testing.assert_allclose(per_run[1], res.metrics.net_profit, atol=0.005)     # the last fold is the run reported above, filtered alike
    # 2 sessions: the headline says the sample is too small and prints no annualised figure as if it meant something
    page = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", p.html.read_text()))
    assert "Sample too small" in page and "too few sessions (2 &lt; 20) for annualised figures" in page
    head = page[page.index("Executive summary"):page.index("Methodology")]
    assert "withheld" in head and "cannot be judged on 2 sessions (fewer than 20)" in head
    assert not re.search(r"\b(beats|is profitable|shows an edge)\b", head), head    # no claim on 2 sessions
    assert not re.search(r"(Sharpe ratio|Sharpe|PSR|DSR|probabilistic Sharpe ratio) [\u2212-]?\d", head), head
    assert (f"**Over 2 runs** (1 seed(s) × 2 walk-forward fold(s)" in text
            and f"mean net profit {_money(st.loc['net_profit', 'mean'])} (95% interval of the mean {_money(st.loc['net_profit', 'ci_low'])}" in text)


def test_backtest_report_multi_horizon_predictions_regime_filter_and_outside_bands(tmp_path):
    "A prediction file with two horizon heads, combined by 'agree'; trading only mid-session; the VIX bands: the page is the library's result."
    import numpy as np
    import pandas as pd
    from scalp_lib.backtest import momentum_proba, held_signal, threshold_from_quantile, run_backtest
    from scalp_lib.config import get_instrument
    from scalp_lib.data import demo_bars, session_dates
    from scalp_lib.exogenous import demo_vix
    from scalp_lib.pipeline import predictions_frame, select_horizon, proba_for_bars, PROBA_COLUMNS
    from scalp_lib.regimes import compute_regimes, regime_filter, regime_breakdown
    spec = get_instrument("ES")
    all_bars = demo_bars(n_days=30, seed=0)
    heads = np.stack([momentum_proba(all_bars, lookback_bars=5), momentum_proba(all_bars, lookback_bars=30)], axis=1)
    predictions_frame(all_bars.index, heads, "two-heads", horizons=[5, 30]).to_parquet(tmp_path / "mh.parquet", index=False)
    p = run_report("backtest_report", {"demo_days": 30, "bootstrap_samples": 200, "signal_source": "predictions",
                                       "predictions_path": str(tmp_path / "mh.parquet"), "horizon": "agree",
                                       "regime_allow": "phase:middle", "outside_series": "demo_vix"}, output_dir=tmp_path, name="bt_mh")
    text = _report_markdown(p.notebook)
    # the library: the heads' agreement, held for the longest horizon, zeroed outside mid-session
    preds, how = select_horizon(pd.read_parquet(tmp_path / "mh.parquet"), "agree")
    assert how["hold_bars"] == 30
    proba_all = proba_for_bars(preds, all_bars.index)[PROBA_COLUMNS].to_numpy()
    sess = session_dates(all_bars.index, spec)
    days = np.unique(sess)
    lo = days[int(np.floor(len(days) * 0.8))]
    thr = threshold_from_quantile(proba_all[sess < lo], 0.95)
    keep = sess >= lo
    bars = all_bars[keep]
    regimes = compute_regimes(all_bars, outside=demo_vix(all_bars, instrument=spec).rename("vix"), outside_name="vix", instrument=spec,
                              align_kwargs={"publication_lag": "15min"})
    calls = held_signal(proba_all[keep], thr, 30)
    sig = regime_filter(calls, regimes.loc[bars.index], {"phase": ["middle"]}).to_numpy()
    assert ((calls != 0) & (sig == 0)).any()                      # the filter removed something
    res = run_backtest(bars, sig, instrument=spec, take_profit_ticks=0, stop_loss_ticks=0, max_hold_bars=0)
    m, t = res.metrics, res.trades
    assert m.n_trades >= 10
    assert f"net profit {_money(m.net_profit)}" in text and f"**{m.n_trades:,} trades**" in text
    assert "the backtest uses the agreement (P(up) and P(down) the smallest over the heads) of the heads at 5, 30 bars" in text
    flat = re.sub(r"\s+", " ", text)
    assert "(parameter `horizon` = agree)" in flat and "for **30 bars** from its bar (the horizon chosen by parameter `horizon`)" in flat
    assert (f"**Regime filter**: trades only in phase middle (parameter `regime_allow`): {int(((calls != 0) & (sig == 0)).sum()):,} of "
            f"{int((calls != 0).sum()):,} signal bars removed") in text
    rows = _regime_rows(p.html)
    assert rows[("phase", "open")][0] == "0" and rows[("phase", "close")][0] == "0"
    for kind in ("phase", "vix"):
        _check_regime_rows(rows, regime_breakdown(t, regimes, kind, n_samples=200, seed=0), kind)


def test_backtest_report_regime_and_horizon_errors_name_the_parameter(tmp_path):
    with pytest.raises(ReportExecutionError, match="parameter 'regime_allow'.*'volatility' has no label"):
        run_report("backtest_report", {"demo_days": 8, "signal_source": "rule", "regime_allow": "volatility:extreme"}, output_dir=tmp_path, name="bad")
    with pytest.raises(ReportExecutionError, match="parameter 'horizon' must be a horizon in bars"):
        run_report("backtest_report", {"horizon": "median"}, output_dir=tmp_path, name="bad2")


_markdown_outputs = _report_markdown


def test_training_report_numbers_are_the_librarys_on_the_same_data(tmp_path):
    "A multi-horizon run over 2 seeds x 2 folds: the spread, the verdicts, the overfitting sentence and the per-regime figures are the library's."
    import numpy as np
    from bs4 import BeautifulSoup
    from scalp_lib.data import demo_bars
    from scalp_lib.diagnostics import overfitting_verdict
    from scalp_lib.features import ScalpingFeatureEngineer
    from scalp_lib.labels import LabelSpec, multi_horizon_labels
    from scalp_lib.replicates import (replicate_comparison, summarise_replicates, train_replicates, verdict_clause,
                                      walk_forward_splits)
    from scalp_lib.train import evaluate_classifier
    params = {"demo_days": 6, "model_type": "feedforward", "hidden_size": 8, "epochs": 2, "horizons": "5,10", "n_seeds": 2,
              "n_folds": 2, "bootstrap_samples": 200, "checkpoint_dir": str(tmp_path / "ck")}
    p = run_report("training", params, output_dir=tmp_path)
    text, html = _markdown_outputs(p.notebook), p.html.read_text()
    # the library on the same data and settings
    bars = demo_bars(n_days=6, seed=0)
    X = ScalpingFeatureEngineer(bars).generate_all_features()
    lab = multi_horizon_labels(bars, LabelSpec(kind="direction", dead_band_ticks=2.0), horizons=[5, 10])
    folds = walk_forward_splits(len(bars), 2, t1=lab["t1_pos"].where(lab["t1_pos"] >= 0).to_numpy(np.float64))
    cfg = dict(type="feedforward", input_dim=X.shape[1], dropout_rate=0.1, num_classes=3, hidden_dims=[8], horizons=[5, 10])
    reps = train_replicates(X, lab[lab.attrs["label_columns"]].to_numpy(), folds, cfg, seeds=[0, 1], window=1, timestamps=bars.index,
                            train_kwargs=dict(epochs=2, batch_size=256, lr=0.002, early_stopping_patience=3, device="cpu",
                                              feature_names=list(X.columns)))
    names = {"majority_class": "the majority class", "logistic_regression": "logistic regression", "hist_gradient_boosting": "gradient boosting"}
    for h in (5, 10):
        s = summarise_replicates(reps.table, [f"model_balanced_accuracy_h{h}"]).iloc[0]
        cmp = {lab_: replicate_comparison(reps.table, "model", b, suffix=f"_h{h}") for b, lab_ in names.items()}
        assert (f"{h} bars: {100 * s['mean']:.1f}% ({100 * s['ci_low']:.1f} to {100 * s['ci_high']:.1f}), "
                f"{verdict_clause(cmp, 'balanced_accuracy')}") in text, h
    cmp10 = {lab_: replicate_comparison(reps.table, "model", b, suffix="_h10") for b, lab_ in names.items()}
    assert f"on balanced accuracy the model {verdict_clause(cmp10, 'balanced_accuracy')}; on accuracy it {verdict_clause(cmp10, 'accuracy')}" in text
    main = reps.runs[(1, 0)]
    assert overfitting_verdict(main.result.epochs)["sentence"] in text
    assert f"({len(reps.table)} runs)" in text and "beats every baseline" not in text
    # the per-regime table's overall row is the main run's test accuracy at the reference horizon (10 bars)
    acc = evaluate_classifier(main.data.targets["test"][:, 1], main.proba_test[:, 1])["accuracy"]
    rows = [[c.get_text(" ", strip=True) for c in tr.find_all(["th", "td"])] for t in BeautifulSoup(html, "html.parser").find_all("table")
            for tr in t.find_all("tr")]
    overall = next(r for r in rows if r[:2] == ["all", "all"])
    assert overall[2] == f"{len(main.data.targets['test'])}" and overall[4] == f"{100 * acc:.1f}%"   # windows, share %, accuracy
    # a regime with too few bootstrap blocks gets no interval and no verdict
    verdicts = {"beats", "worse than", "indistinguishable from", "no claim (few windows)"}
    reg = [r for r in rows if r and r[-1] in verdicts and ("True" in r or "False" in r)]
    assert any("True" in r for r in reg) and any("False" in r for r in reg)
    assert all((r[-1] == "no claim (few windows)") == ("True" in r) for r in reg)
    # the epoch-boundary statement reads the main run's own history
    last = main.result.history.groupby("epoch").batch_size.last()
    assert f"the last batch holds {', '.join(sorted({f'{v:,}' for v in last}))} windows" in text
    assert "<tbody>\n  </tbody>" not in html and "Traceback" not in html
