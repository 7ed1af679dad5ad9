"""Real-data tier: every report template and `scalp-pipeline` run on the real ES 1-minute file (../shared/data), and
what they print is checked against scalp_lib's own results on the same data. Skips when that folder is absent.

CI-sized: small models, one epoch, a week or two of sessions where a template takes `start`/`end`. The numbers are
read back from the executed notebooks (markdown outputs) and the HTML (tables), never hard-coded. The data-quality
report's real-data runs (bars and trades) live in tests/test_reports.py, which had them first.
"""
import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
import yaml
from bs4 import BeautifulSoup

from scalp_lib.config import get_instrument
from scalp_lib.data import load_bars, session_dates
from scalp_lib.report import run_report, select_sessions

ROOT = Path(__file__).resolve().parents[1]
ES_FILE = "es_1min_2025-09_11.csv.gz"
LOAD = {"tz": "America/New_York", "ts_offset": "5h"}   # the file's stamps: New York wall clock plus a fixed 5 hours
WEEK = {"start": "2025-10-06", "end": "2025-10-10"}


@pytest.fixture(scope="module")
def es_file(shared_data):
    return shared_data / ES_FILE


@pytest.fixture(scope="module")
def es_bars(es_file):
    "The bars as scalp_lib itself loads them: the reference every report is compared with."
    return load_bars(es_file, **LOAD)


def _markdown(nb_path) -> str:
    "Every markdown output of an executed report notebook, joined."
    nb = nbformat.read(str(nb_path), as_version=4)
    return "\n".join(o.get("data", {}).get("text/markdown", "") for c in nb.cells for o in c.get("outputs", []))


def _html_tables(html_path) -> list:
    "Each table of a rendered report as a list of rows (lists of cell texts, header cells included)."
    soup = BeautifulSoup(Path(html_path).read_text(), "html.parser")
    return [[[c.get_text(" ", strip=True) for c in tr.find_all(["th", "td"])] for tr in t.find_all("tr")]
            for t in soup.find_all("table")]


def _metadata(html_path) -> dict:
    "The run-metadata table of a rendered report: item -> value."
    for rows in _html_tables(html_path):
        items = {r[0]: r[1] for r in rows if len(r) == 2}
        if "git revision" in items: return items
    raise AssertionError(f"{html_path}: no run-metadata table")


def _check_provenance(html_path, path: Path, data: pd.DataFrame, analysed: pd.DataFrame | None = None):
    "Full path, SHA-256 (computed here, independently) and full period of the data file, none of them cut."
    md = _metadata(html_path)
    assert md["data file"] == str(path.resolve())
    assert md["data file SHA-256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert md["data period"] == f"{data.index[0]} to {data.index[-1]}"
    assert md["bars"] == f"{len(data):,}"
    if analysed is not None:
        assert md["period analysed"] == f"{analysed.index[0]} to {analysed.index[-1]}"
    assert not any("..." in v or "\u2026" in v for v in md.values())


def _money(v: float) -> str:
    "How the backtest report prints US dollars."
    return f"{v:,.0f} USD".replace("-", "\u2212")


def test_feature_diagnostics_report_matches_the_features_and_labels(tmp_path, es_file, es_bars):
    from scalp_lib.features import ScalpingFeatureEngineer
    from scalp_lib.labels import LabelSpec, make_labels
    groups = ["returns", "volatility", "vwap"]   # a few groups keep the CI run short (one histogram per feature)
    p = run_report("feature_diagnostics", {"data_path": str(es_file), **LOAD, **WEEK, "feature_groups": ",".join(groups),
                                           "mi_max_rows": 2000, "adf_max_rows": 300}, output_dir=tmp_path)
    text = _markdown(p.notebook)
    bars = select_sessions(es_bars, **WEEK, instrument="ES")
    n_sessions = len(np.unique(session_dates(bars.index, "ES")))
    X = ScalpingFeatureEngineer(bars, instrument="ES", groups=groups).generate_all_features()
    labels = make_labels(bars, LabelSpec(kind="direction").resolve(), instrument="ES")
    assert n_sessions == 5 and f"**{len(bars):,} one-minute bars** in **{n_sessions} sessions**" in text
    assert f"**{X.shape[1]} features** from 3 groups" in text
    assert f"({labels.attrs['label_report'].n_labelled:,} rows labelled)" in text
    # one correlation measure: the pair and group counts are scalp_lib.feature_analysis's on the same features
    from scalp_lib import feature_analysis as fa
    corr = fa.feature_correlation(X, seed=0)
    n_pairs, n_groups = len(fa.correlated_pairs(corr, 0.95)), len(fa.correlation_clusters(corr, 0.95))
    assert f"**{n_pairs} pairs** with |Spearman rho| >= 0.95, forming **{n_groups} redundant group(s)**" in text
    assert "pairs with |corr|" not in p.html.read_text()
    _check_provenance(p.html, es_file, es_bars, analysed=bars)


def test_stability_report_uses_the_rows_the_library_prepares(tmp_path, es_file, es_bars):
    from scalp_lib.diagnostics import RECOMMENDED_CONFIG, prepare_stability_data, run_stability_experiment
    p = run_report("stability_investigation", {"data_path": str(es_file), **LOAD, **WEEK, "max_rows": 2000, "epochs": 1},
                   output_dir=tmp_path)
    text = _markdown(p.notebook)
    bars = select_sessions(es_bars, **WEEK, instrument="ES")
    data = prepare_stability_data(bars, "raw_levels", horizon_bars=1, max_rows=2000, instrument="ES")
    assert f"on {data.info['n_train']:,} training and {data.info['n_val']:,} validation rows" in text
    # the plotted range test is the one that set the recommended rate: the library's, a tenth of its minimum
    rec = run_stability_experiment(data, RECOMMENDED_CONFIG, name="recommended configuration", hidden_dims=[64, 64], epochs=1,
                                   batch_size=256, seed=0)
    assert (f"The smoothed loss is lowest at lr **{rec.lr_range.min_loss_lr:.2e}**; the recommended configuration trained with "
            f"**{rec.lr_used:.2e}**, a tenth of it") in text
    html = p.html.read_text()
    assert "seed 004" not in html and "seed004" not in html      # the configuration is named by what it is
    assert "The demo bars are synthetic" not in text and f"{len(bars):,} bars of `{es_file}`" in text
    _check_provenance(p.html, es_file, es_bars, analysed=bars)


def test_training_report_matches_the_split_labels_and_its_checkpoint(tmp_path, es_file, es_bars):
    from scalp_lib.checkpoint import load_checkpoint
    from scalp_lib.features import ScalpingFeatureEngineer
    from scalp_lib.labels import LabelSpec, make_labels
    from scalp_lib.splits import temporal_split
    period = {"start": "2025-10-06", "end": "2025-10-17"}
    ck_dir = tmp_path / "ck"
    p = run_report("training", {"data_path": str(es_file), **LOAD, **period, "epochs": 2, "seq_length": 10, "hidden_size": 8,
                                "n_seeds": 1, "n_folds": 2, "bootstrap_samples": 200, "checkpoint_dir": str(ck_dir)}, output_dir=tmp_path)
    text = _markdown(p.notebook)
    bars = select_sessions(es_bars, **period, instrument="ES")
    assert f"**{len(bars):,} one-minute bars**, {len(np.unique(session_dates(bars.index, 'ES')))} sessions" in text
    labels = make_labels(bars, LabelSpec(kind="direction", horizon_bars=10, dead_band_ticks=2.0), instrument="ES")
    split = temporal_split(len(bars), t1=labels["t1_pos"].where(labels["t1_pos"] >= 0).to_numpy(np.float64))
    table = next(t for t in _html_tables(p.html) if t and "purged bars" in t[0])
    header, rows = table[0], {r[0]: r for r in table[1:] if r and r[0] in ("train", "val", "test")}
    col = header.index   # the first header cell is the (empty) corner above the split names
    for part, idx in split.parts().items():
        assert int(rows[part][col("bars")].replace(",", "")) == len(np.arange(len(bars))[idx])
        assert int(rows[part][col("purged bars")].replace(",", "")) == split.n_purged.get(part, 0)
    ck = load_checkpoint(next(ck_dir.glob("epoch*.pt")))
    assert f"val_loss {ck['metrics']['val_loss']:.4f}" in text
    # the overfitting and epoch-boundary statements are the library's readings of the main run's own history
    import torch
    from scalp_lib.diagnostics import epoch_boundary_check, overfitting_verdict
    state = torch.load(ck_dir / "last.pt", weights_only=False)["trainer_state"]
    epochs = pd.DataFrame(state["epoch_rows"])
    hist = pd.DataFrame({k: v.numpy() for k, v in state["history"].items()})
    assert overfitting_verdict(epochs)["sentence"] in text
    b = epoch_boundary_check(hist)
    assert f"is {b['ratio'].min():.2f} to {b['ratio'].max():.2f} times the median" in text
    assert (2 * b["last_batch_size"] >= 256).all()                  # no short, noisy last batch
    assert "beats every baseline" not in text and "(2 runs)" in text
    assert ck["feature_names"] == list(ScalpingFeatureEngineer(bars, instrument="ES").generate_all_features().columns)
    _check_provenance(p.html, es_file, es_bars, analysed=bars)


def test_backtest_report_with_the_default_model_signal(tmp_path, es_file, es_bars):
    """The default signal source ('model') failed on every bar file: the loader's attrs reached a Parquet writer. The page's
    threshold, trades and net profit are recomputed from the model kept beside the report: its validation period scored here
    (the bars up to the validation end only), the calibrated threshold, the calls held for the label horizon, the backtest."""
    from scalp_lib.backtest import held_signal, run_backtest, threshold_from_quantile
    from scalp_lib.data import OHLCV
    from scalp_lib.pipeline import PROBA_COLUMNS, predict_bars, proba_for_bars
    from scalp_lib.splits import temporal_split
    p = run_report("backtest_report", {"data_path": str(es_file), **LOAD, "bootstrap_samples": 200, "model_type": "feedforward",
                                       "model_epochs": 1}, output_dir=tmp_path)
    text = _markdown(p.notebook)
    assert "backtest_report_model.pt" in text and (tmp_path / "backtest_report_trades.csv").is_file()
    c1, c2 = temporal_split(len(es_bars), None, horizon_bars=1, embargo_bars=0).boundaries
    up_to_val = es_bars[OHLCV].iloc[:c2].rename_axis("timestamp").reset_index()
    up_to_val.attrs = {}                                            # the loader's quality report does not go to Parquet
    up_to_val.to_parquet(tmp_path / "val_bars.parquet", index=False)
    val = pd.read_parquet(predict_bars(tmp_path / "backtest_report_model.pt", tmp_path / "val_bars.parquet", tmp_path / "val.parquet", instrument="ES"))
    val = val[pd.DatetimeIndex(val["timestamp"]) >= es_bars.index[c1]]
    thr = threshold_from_quantile(val[PROBA_COLUMNS].to_numpy(np.float64), 0.95)
    assert f"{thr:.4f}: the 0.95 quantile of max(P(up), P(down)) on the model's validation period" in text
    preds = pd.read_parquet(tmp_path / "backtest_report_predictions.parquet")
    bars = es_bars[es_bars.index >= preds["timestamp"].min()]      # the model's held-out period, as the report reports it
    proba = proba_for_bars(preds, bars.index)[PROBA_COLUMNS].to_numpy()
    spec = get_instrument("ES")
    res = run_backtest(bars, held_signal(proba, thr, 10), instrument=spec, commission_per_side_dollars=spec.commission_per_side_dollars,
                       slippage_ticks=spec.slippage_ticks, take_profit_ticks=0, stop_loss_ticks=0, max_hold_bars=0, flat_at_session_end=True,
                       intrabar_rule="stop_first", reentry="fresh", initial_capital_dollars=100000.0)
    m = res.metrics
    assert f"net profit {_money(m.net_profit)}" in text and f"**{m.n_trades:,} trades**" in text
    assert m.n_trades >= m.min_trades                                # the default run tests the model on enough trades
    assert f"on {len(bars):,} one-minute bars" in text
    _check_provenance(p.html, es_file, es_bars, analysed=bars)


def test_scalp_pipeline_on_the_real_file(tmp_path, es_file, es_bars):
    from scalp_lib.backtest import run_backtest
    from scalp_lib.labels import make_labels
    from scalp_lib.pipeline import PROBA_COLUMNS
    cfg = {"data_path": str(es_file), **LOAD, "run_dir": str(tmp_path / "run"), "seq_length": 0,
           "model": {"type": "feedforward", "hidden_dims": [16]}, "train": {"epochs": 1, "batch_size": 512},
           "max_train_windows": 20000, "max_val_windows": 5000, "backtest": {"entry_threshold": 0.5}}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    r = subprocess.run([str(Path(sys.executable).parent / "scalp-pipeline"), str(tmp_path / "cfg.yaml")], capture_output=True,
                       text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    run = tmp_path / "run"
    m = json.loads((run / "manifest.json").read_text())
    q = es_bars.attrs["quality"]
    assert m["status"] == "complete"
    assert m["data"]["sha256"] == hashlib.sha256(es_file.read_bytes()).hexdigest()
    assert (m["data"]["rows_in"], m["data"]["rows_used"]) == (q.n_rows_in, len(es_bars))
    assert m["data"]["first"] == es_bars.index[0].isoformat() and m["data"]["last"] == es_bars.index[-1].isoformat()
    # the pipeline's labels are the library's labels on the same bars
    preds = pd.read_parquet(run / "predictions.parquet")
    ref = make_labels(es_bars, {"kind": "direction"}, instrument="ES")["label"]
    got = preds.set_index("timestamp")["label"]
    np.testing.assert_array_equal(got.to_numpy(), ref.reindex(got.index).to_numpy(np.float32))
    # its backtest equals run_backtest on the same bars and probabilities
    proba = pd.read_parquet(run / "backtest" / "proba.parquet")
    res = run_backtest(es_bars.loc[proba.index], proba=proba[PROBA_COLUMNS], instrument="ES", entry_threshold=0.5)
    saved = json.loads((run / "backtest" / "metrics.json").read_text())["metrics"]
    assert saved["n_trades"] == res.metrics.n_trades and saved["net_profit"] == pytest.approx(res.metrics.net_profit, abs=1e-6)
    assert m["metrics"]["backtest"]["n_trades"] == res.metrics.n_trades
