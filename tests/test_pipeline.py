"""scalp_lib.pipeline: end-to-end run and manifest, scalp-predict round trip and mismatch errors, walk-forward resume
after a real SIGKILL, and batch reports with a failing parameter set. Small data: a few demo sessions, tiny models."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from scalp_lib.config import ScalpLibError
from scalp_lib.data import DataQualityReport, demo_bars, load_bars
from scalp_lib.pipeline import (PROBA_COLUMNS, InputDimMismatchError, InstrumentMismatchError, MissingFeaturesError,
                                PipelineConfig, PipelineConfigError, PredictionMismatchError, file_sha256,
                                fit_scaler_on_rows, model_id_of, model_test_proba, predict_bars, predict_main,
                                run_pipeline, run_report_batch, walk_forward, write_scaled_matrix)
from scalp_lib.preprocess import RobustFeatureScaler

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _cfg(bars_path, run_dir, **kw):
    d = dict(data_path=str(bars_path), run_dir=str(run_dir), seq_length=12,
             model={"type": "lstm", "hidden_size": 8, "num_layers": 1},
             train={"epochs": 1, "batch_size": 256}, split_fractions=[0.6, 0.2, 0.2], embargo_bars=10,
             backtest={"entry_threshold": 0.4})
    d.update(kw)
    return PipelineConfig(**d)


def _py(code, *args, **kw):
    "Run python code in a fresh interpreter (as a CLI entry point would run)."
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *map(str, args)], env=ENV, cwd=ROOT,
                          capture_output=True, text=True, **kw)


@pytest.fixture(scope="module")
def bars_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("bars")
    p = d / "bars.parquet"
    demo_bars(n_days=5, seed=7).reset_index().to_parquet(p, index=False)
    return p


@pytest.fixture(scope="module")
def run(bars_file, tmp_path_factory):
    "One pipeline run through the scalp-pipeline entry point, in its own process, from a YAML config."
    d = tmp_path_factory.mktemp("run")
    cfg_path = d / "cfg.yaml"
    _cfg(bars_file, d / "run").to_yaml(cfg_path)
    r = _py("import sys; from scalp_lib.pipeline import pipeline_main; sys.exit(pipeline_main(sys.argv[1:]))", cfg_path)
    assert r.returncode == 0, r.stderr[-3000:]
    return d / "run"


def test_end_to_end_writes_every_artefact_and_a_complete_manifest(run, bars_file):
    m = json.loads((run / "manifest.json").read_text())
    assert m["status"] == "complete" and m["error"] is None and m["finished_utc"]
    stages = ["hash", "validate", "features", "bars", "labels", "split", "scale", "windows", "train", "predict", "backtest"]
    assert list(m["stages"]) == stages
    for s in m["stages"].values():
        assert s["ok"] and s["seconds"] >= 0 and s["peak_rss_mib"] >= s["rss_start_mib"] > 0 and s["process_maxrss_mib"] > 0
    assert m["data"]["sha256"] == file_sha256(bars_file) and m["data"]["rows_used"] == 5 * 1380
    assert m["git_revision"] and m["git_revision"] != ""
    assert {"python", "numpy", "pandas", "torch", "pyarrow", "scikit-learn", "scalp_lib"} <= set(m["versions"])
    assert "psutil" in m["memory_method"] and "getrusage" in m["memory_method"]
    assert PipelineConfig.from_dict(m["config"]) == PipelineConfig.from_yaml(run / "config.yaml")
    for key in ("features", "labels", "features_scaled", "model", "predictions", "backtest_proba", "trades", "equity",
                "backtest_metrics", "scaling_counts", "train_epochs", "config"):
        assert (run / m["paths"][key]).exists(), key
    # predictions: the documented table, test period only, probabilities summing to 1, the model's id
    p = pd.read_parquet(run / "predictions.parquet")
    assert list(p.columns) == ["timestamp", "p_down", "p_flat", "p_up", "pred_class", "label", "model_id"]
    assert str(p["timestamp"].dt.tz) == "America/Chicago" and p["timestamp"].is_monotonic_increasing
    np.testing.assert_allclose(p[PROBA_COLUMNS].sum(axis=1), 1.0, atol=1e-5)
    assert (p["pred_class"].to_numpy() == p[PROBA_COLUMNS].to_numpy().argmax(1)).all()
    assert set(p["model_id"]) == {model_id_of(run / "model.pt")} == {m["model"]["id"]}
    labels = pd.read_parquet(run / "labels.parquet")
    test_first = m["counts"]["split"]["boundaries"][1]
    assert p["timestamp"].min() >= labels["timestamp"].iloc[test_first]
    assert len(p) == m["counts"]["windows"]["test"]
    # the backtest saw every bar of the test period, with (0, 1, 0) where no prediction exists
    proba = pd.read_parquet(run / "backtest" / "proba.parquet")
    assert len(proba) == m["counts"]["split"]["sizes"]["test"] == m["counts"]["backtest"]["bars"]
    assert int(proba["has_prediction"].sum()) == len(p)
    assert (proba.loc[~proba["has_prediction"], PROBA_COLUMNS].to_numpy() == [0, 1, 0]).all()
    # the matrix on disk is float32, memory-mappable, and was scaled by a scaler fit on training rows only
    mm = np.load(run / "features_scaled.npy", mmap_mode="r")
    assert isinstance(mm, np.memmap) and mm.dtype == np.float32 and mm.shape == tuple(m["counts"]["scale"]["matrix_shape"])
    assert m["counts"]["scale"]["fit_rows"] == m["counts"]["split"]["sizes"]["train"]


def test_flat_features_and_triple_barrier_labels(bars_file, tmp_path):
    "seq_length=0: one row per sample, so every test bar is predicted; triple-barrier labels purge by their t1."
    cfg = _cfg(bars_file, tmp_path / "flat", seq_length=0, model={"type": "feedforward", "hidden_dims": [16]},
               label={"kind": "triple_barrier", "pt_ticks": 6, "sl_ticks": 6, "vertical_bars": 20})
    r = run_pipeline(cfg)
    m = r.manifest
    assert m["counts"]["windows"]["window_length"] == 1 and len(r.predictions) == m["counts"]["split"]["sizes"]["test"]
    assert m["counts"]["split"]["missing_t1"] >= 0 and m["counts"]["split"]["purged"]["train"] > 0
    assert r.backtest.counts["n_bars"] == len(r.predictions)


def test_config_errors_name_the_bad_value(tmp_path):
    with pytest.raises(PipelineConfigError, match="backtest: unknown key"):
        PipelineConfig(backtest={"entry_treshold": 0.5})
    with pytest.raises(PipelineConfigError, match="seq_length"):
        PipelineConfig(seq_length=-1)
    (tmp_path / "c.yaml").write_text("data_path: x.parquet\nmodle: {type: lstm}\n")
    with pytest.raises(PipelineConfigError, match=r"unknown pipeline config key\(s\) \['modle'\]"):
        PipelineConfig.from_yaml(tmp_path / "c.yaml")


def test_scaler_is_fit_on_the_given_rows_and_the_streamed_matrix_equals_a_direct_transform(run, tmp_path):
    feats = pd.read_parquet(run / "features.parquet")
    names = list(feats.columns[:10])
    rows = np.arange(100, 3000, 7)
    sc = fit_scaler_on_rows(run / "features.parquet", rows, names, {})
    ref = RobustFeatureScaler(warn=False).fit(feats[names].iloc[rows])
    np.testing.assert_allclose(sc.center_, ref.center_)
    np.testing.assert_allclose(sc.scale_, ref.scale_)
    counts = write_scaled_matrix(run / "features.parquet", tmp_path / "m.npy", sc, names)
    np.testing.assert_array_equal(np.load(tmp_path / "m.npy"), ref.transform(feats[names]))
    assert counts.attrs["n_rows"] == len(feats) and counts["n_nan"].sum() == feats[names].isna().sum().sum()


def test_scalp_predict_round_trip_equals_the_pipelines_own_test_predictions(run, bars_file, tmp_path):
    out = tmp_path / "scored.parquet"
    r = _py("import sys; from scalp_lib.pipeline import predict_main; sys.exit(predict_main(sys.argv[1:]))",
            run / "model.pt", bars_file, "-o", out)
    assert r.returncode == 0, r.stderr[-3000:]
    scored = pd.read_parquet(out).set_index("timestamp")
    mine = pd.read_parquet(run / "predictions.parquet").set_index("timestamp")
    assert len(scored) > len(mine)                       # the whole file is scored, not only the test period
    assert mine.index.isin(scored.index).all()
    np.testing.assert_allclose(scored.loc[mine.index, PROBA_COLUMNS].to_numpy(), mine[PROBA_COLUMNS].to_numpy(), atol=1e-5)
    assert (scored.loc[mine.index, "pred_class"].to_numpy() == mine["pred_class"].to_numpy()).all()
    assert set(scored["model_id"]) == set(mine["model_id"])


def _edited_checkpoint(src, dst, edit):
    raw = torch.load(src, weights_only=True)
    edit(raw)
    torch.save(raw, dst)
    return dst


def test_predict_mismatches_are_named_errors(run, bars_file, tmp_path, capsys):
    ck = run / "model.pt"
    out = tmp_path / "x.parquet"
    # a different instrument asked for
    with pytest.raises(InstrumentMismatchError, match="trained on 'ES'"):
        predict_bars(ck, bars_file, out, instrument="NQ")
    # a bar file whose symbol column names another instrument (and one that names a contract of the same one)
    b = pd.read_parquet(bars_file)
    b.assign(symbol="NQZ4").to_parquet(tmp_path / "nq.parquet", index=False)
    with pytest.raises(InstrumentMismatchError, match="NQZ4"):
        predict_bars(ck, tmp_path / "nq.parquet", out)
    b.assign(symbol="ESZ4").iloc[:3000].to_parquet(tmp_path / "es.parquet", index=False)
    assert predict_bars(ck, tmp_path / "es.parquet", out).is_file()
    # features the model needs are missing: the checkpoint's feature settings leave a group out
    def drop_group(raw):
        raw["extra"]["pipeline"]["feature_exclude"] = ["rsi"]
    with pytest.raises(MissingFeaturesError, match="rsi"):
        predict_bars(_edited_checkpoint(ck, tmp_path / "missing.pt", drop_group), bars_file, out)
    # input_dim disagreements: a scaler fit on fewer features, a shorter feature list
    n_features = len(torch.load(ck, weights_only=True)["feature_names"])
    def small_scaler(raw):
        raw["scaler_state"] = RobustFeatureScaler(warn=False).fit(np.random.default_rng(0).normal(size=(50, n_features - 1))).state_dict(as_tensors=True)
    with pytest.raises(InputDimMismatchError, match=f"input_dim is {n_features} but its scaler was fit on {n_features - 1}"):
        predict_bars(_edited_checkpoint(ck, tmp_path / "scaler.pt", small_scaler), bars_file, out)
    def short_list(raw):
        raw["feature_names"] = raw["feature_names"][:-1]
    with pytest.raises(InputDimMismatchError, match=f"lists {n_features - 1} features"):
        predict_bars(_edited_checkpoint(ck, tmp_path / "names.pt", short_list), bars_file, out)
    for e in (InstrumentMismatchError, MissingFeaturesError, InputDimMismatchError):
        assert issubclass(e, PredictionMismatchError) and issubclass(e, ScalpLibError) and issubclass(e, ValueError)
    # the command line reports the error by name and exits 2
    assert predict_main([str(tmp_path / "missing.pt"), str(bars_file), "-o", str(out)]) == 2
    assert "MissingFeaturesError" in capsys.readouterr().err


WF_SCRIPT = """
import sys, time
import torch; torch.set_num_threads(1)
from scalp_lib.pipeline import PipelineConfig, walk_forward
cfg = PipelineConfig.from_yaml(sys.argv[1])
pause = float(sys.argv[2])
def on_fold_end(k, rec):
    if k == 0 and pause: time.sleep(pause)   # the parent kills this process here, between fold 0 and fold 1
walk_forward(cfg, {'n_splits': 3, 'embargo_bars': 10}, warm_start=True, on_fold_end=on_fold_end)
"""


def test_walk_forward_resumes_after_sigkill_between_folds(bars_file, tmp_path):
    cfg = _cfg(bars_file, tmp_path / "wf")
    cfg.to_yaml(tmp_path / "wf.yaml")
    proc = subprocess.Popen([sys.executable, "-c", WF_SCRIPT, str(tmp_path / "wf.yaml"), "120"], env=ENV, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    done0 = tmp_path / "wf" / "folds" / "fold_000" / "fold.json"
    t0 = time.time()
    while not done0.is_file():
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        assert time.time() - t0 < 100, "fold 0 did not finish in time"
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "wf" / "folds" / "fold_001" / "fold.json").exists()
    assert json.loads((tmp_path / "wf" / "manifest.json").read_text())["status"] == "running"   # killed, not finished
    fold0_model = tmp_path / "wf" / "folds" / "fold_000" / "model.pt"
    mtime0, sha0 = fold0_model.stat().st_mtime_ns, file_sha256(fold0_model)

    resumed = walk_forward(cfg, {"n_splits": 3, "embargo_bars": 10}, warm_start=True)
    assert resumed.folds["reused"].tolist() == [True, False, False]
    assert "features" not in resumed.manifest["stages"]          # shared stages were reused too (prep.json)
    assert fold0_model.stat().st_mtime_ns == mtime0 and file_sha256(fold0_model) == sha0
    assert resumed.folds["warm_start_from"].tolist()[1] == "folds/fold_000/model.pt"

    full = walk_forward(_cfg(bars_file, tmp_path / "wf_full"), {"n_splits": 3, "embargo_bars": 10}, warm_start=True)
    a, b = resumed.predictions, full.predictions
    assert len(a) == len(b) and (a["timestamp"].to_numpy() == b["timestamp"].to_numpy()).all()
    np.testing.assert_allclose(a[PROBA_COLUMNS].to_numpy(), b[PROBA_COLUMNS].to_numpy(), atol=1e-6)
    assert (a["fold"].to_numpy() == b["fold"].to_numpy()).all()
    # the concatenated out-of-sample predictions are one backtest over the test blocks
    assert resumed.backtest.counts["n_bars"] == resumed.folds["test_last"].iloc[-1] - resumed.folds["test_first"].iloc[0] + 1
    assert json.loads((tmp_path / "wf" / "manifest.json").read_text())["status"] == "complete"
    # a run with another configuration in the same folder is refused and leaves the run's manifest and config as they were
    before = {f: (tmp_path / "wf" / f).read_bytes() for f in ("manifest.json", "config.yaml")}
    other = _cfg(bars_file, tmp_path / "wf", model={"type": "lstm", "hidden_size": 4, "num_layers": 1})
    with pytest.raises(ScalpLibError, match="different configuration"):
        walk_forward(other, {"n_splits": 3, "embargo_bars": 10}, warm_start=True)
    assert {f: (tmp_path / "wf" / f).read_bytes() for f in before} == before
    # a fold record damaged on disk is a named error saying what to do, not a bare JSONDecodeError
    fold1 = tmp_path / "wf" / "folds" / "fold_001" / "fold.json"
    fold1.write_text(fold1.read_text()[:40])
    with pytest.raises(ScalpLibError, match=r"fold_001/fold.json: damaged walk-forward fold record.*delete the folder"):
        walk_forward(cfg, {"n_splits": 3, "embargo_bars": 10}, warm_start=True)


def test_batch_index_lists_every_report_and_the_failing_ones(tmp_path):
    sets = [{"demo_days": 2}, {"demo_days": 2, "instrument": "XX"}, {"demo_dayz": 2}]
    idx = run_report_batch("data_quality", sets, output_dir=tmp_path / "batch", n_jobs=2)
    rows = json.loads((tmp_path / "batch" / "index.json").read_text())["reports"]
    assert [r["status"] for r in rows] == ["ok", "failed", "failed"]
    assert len({r["name"] for r in rows}) == 3
    assert (tmp_path / "batch" / rows[0]["html"]).is_file()
    assert "UnknownInstrumentError" in rows[1]["error"] and "XX" in rows[1]["error"]
    assert "unknown parameter 'demo_dayz'" in rows[2]["error"]
    page = idx.read_text()
    assert f'href="{rows[0]["html"]}"' in page and "1 succeeded, 2 failed" in page
    assert "UnknownInstrumentError" in page and "demo_dayz" in page


def test_model_test_proba_takes_bars_from_load_bars(tmp_path):
    "load_bars attaches a DataQualityReport to attrs; writing such bars to Parquet failed with a bare TypeError."
    csv = tmp_path / "bars.csv"
    demo_bars(n_days=4, seed=9).reset_index().to_csv(csv, index=False)
    bars = load_bars(csv)
    assert isinstance(bars.attrs["quality"], DataQualityReport)
    preds, info = model_test_proba(bars, work_dir=tmp_path / "work", config=dict(
        model={"type": "feedforward", "hidden_dims": [8]}, seq_length=0, train={"epochs": 1, "batch_size": 256}))
    assert info["trained_here"] and len(preds) > 0
    assert preds["timestamp"].min() > bars.index[int(0.75 * len(bars))]        # the pipeline's test split only
    assert set(preds["timestamp"]) <= set(bars.index)
    assert isinstance(bars.attrs["quality"], DataQualityReport)                 # the caller's frame keeps its attrs


def test_a_table_that_cannot_be_written_names_itself_and_the_file(tmp_path):
    from scalp_lib.pipeline import write_parquet
    with pytest.raises(ScalpLibError, match=r"could not write the trade ledger to .*trades.parquet"):
        write_parquet(pd.DataFrame({"x": [object()]}), tmp_path / "trades.parquet", what="the trade ledger")
    assert list(tmp_path.iterdir()) == []


def test_a_multi_horizon_prediction_file_is_read_and_its_heads_picked_or_combined(tmp_path):
    "One set of probability columns per head: read as a prediction file, then one head or a stated combination for the backtest."
    from scalp_lib.pipeline import model_test_proba, predictions_frame, select_horizon, prediction_horizons, PipelineConfigError, PROBA_COLUMNS
    from scalp_lib.train import combine_horizons
    idx = pd.date_range('2024-01-02 08:30', periods=4, freq='min', tz='America/Chicago')
    rng = np.random.default_rng(0)
    P = rng.dirichlet(np.ones(3), size=(4, 3))                          # 4 bars, heads at 5, 10, 30 bars
    predictions_frame(idx, P, 'm', horizons=[5, 10, 30]).to_parquet(tmp_path / 'p.parquet', index=False)
    preds, _ = model_test_proba(pd.DataFrame(index=idx), predictions_path=tmp_path / 'p.parquet', work_dir=tmp_path / 'w')
    assert prediction_horizons(preds) == [5, 10, 30] and not set(PROBA_COLUMNS) & set(preds.columns)
    one, how = select_horizon(preds, '10')
    np.testing.assert_allclose(one[PROBA_COLUMNS].to_numpy(), P[:, 1], rtol=1e-6)
    assert how['hold_bars'] == 10
    agree, how = select_horizon(preds, 'agree')
    np.testing.assert_allclose(agree[PROBA_COLUMNS].to_numpy(), combine_horizons(P.astype(np.float32), combine='agree'), rtol=1e-6)
    assert how['hold_bars'] == 30 and 'longest horizon (30 bars)' in how['text']
    with pytest.raises(PipelineConfigError, match=r"horizons \[5, 10, 30\]"):
        select_horizon(preds, '15')
