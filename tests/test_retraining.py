"""scalp_lib.retraining: decisions on a planted shift (retrain exactly when the statistic reaches its threshold, from rows
before the test block only), the decision log in the manifest, three modes on the same folds, fine-tuning from the
previous weights exactly, scalers fit on training rows only (values), resume after a real SIGKILL between folds."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from scalp_lib import pipeline as _pl
from scalp_lib.checkpoint import load_checkpoint, load_model
from scalp_lib.data import demo_bars
from scalp_lib.pipeline import PROBA_COLUMNS, PipelineConfig, RunMismatchError, file_sha256, walk_forward
from scalp_lib.preprocess import RobustFeatureScaler, feature_drift
from scalp_lib.retraining import (MODES, RetrainPolicy, RetrainPolicyError, compare_modes, fold_metrics,
                                  load_retraining, plan_decisions, retrain_decision, walk_forward_retraining)
from scalp_lib.splits import PurgedWalkForward

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
SPLIT = {"n_splits": 3, "embargo_bars": 10}
POLICY = {"every_folds": 2, "drift_threshold": None}     # fold 1 keeps, fold 2 retrains


# ---------------------------------------------------------------- decisions on a synthetic series with a planted shift
def _planted(n=6000, shift_from=3500, cols=("f0", "f1", "f2"), size=3.0, seed=1):
    X = pd.DataFrame(np.random.default_rng(seed).normal(size=(n, 6)), columns=[f"f{j}" for j in range(6)])
    X.loc[shift_from:, list(cols)] += size
    labels = np.random.default_rng(seed + 1).integers(0, 3, n).astype(np.float64)
    end = np.arange(n, dtype=np.float64) + 5
    sess = np.datetime64("2024-01-02") + (np.arange(n) // 500).astype("timedelta64[D]")
    folds = list(PurgedWalkForward(5, horizon_bars=5, embargo_bars=10).folds(n))
    return X, labels, end, sess, folds


def test_decisions_retrain_exactly_when_the_drift_share_reaches_the_threshold():
    X, lab, end, sess, folds = _planted()
    full = dict(drift_max_rows=200000)     # every row of both windows (no sample), so the check below can recompute it
    dec = plan_decisions(RetrainPolicy(drift_threshold=0.25, **full), folds, X, lab, end, sess)
    assert [d["decision"] for d in dec] == ["train", "keep", "keep", "retrain", "retrain"]
    assert [d["model_fold"] for d in dec] == [None, 0, 0, 0, 3]      # after the retrain at fold 3 its rows are the reference
    for d, f in zip(dec[1:], folds[1:]):
        st = d["statistics"]["feature_drift"]
        # the logged statistic is feature_drift's own result on the logged windows, recomputed here independently
        ref = np.arange(d["reference_window"]["first_row"], d["reference_window"]["last_row"] + 1)
        rec = np.arange(d["recent_window"]["first_row"], d["recent_window"]["last_row"] + 1)
        assert rec[-1] == f.test.start - 1 and ref[-1] + 1 == rec[0]
        tab = feature_drift(X.iloc[ref], X.iloc[rec], alpha=0.01, min_statistic=0.1, max_rows=200000)
        assert st["value"] == pytest.approx(tab["flagged"].mean()) and st["n_flagged"] == int(tab["flagged"].sum())
        assert sorted(x["feature"] for x in st["flagged_features"]) == sorted(tab.loc[tab["flagged"], "feature"])
        assert (d["decision"] == "retrain") == (st["value"] >= st["threshold"]) == st["fired"]
    assert dec[3]["statistics"]["feature_drift"]["value"] == pytest.approx(0.5)
    # exactly at the threshold it retrains; a hair above the statistic, it keeps (and the reference stays fold 0's)
    at = plan_decisions(RetrainPolicy(drift_threshold=0.5, **full), folds, X, lab, end, sess)
    above = plan_decisions(RetrainPolicy(drift_threshold=0.5 + 1e-9, **full), folds, X, lab, end, sess)
    assert at[3]["decision"] == "retrain" and above[3]["decision"] == "keep"
    assert above[4]["model_fold"] == 0 and above[4]["recent_window"]["first_row"] == 985      # still fold 0's model
    assert above[4]["statistics"]["feature_drift"]["value"] == pytest.approx(0.5) and above[4]["decision"] == "keep"


def test_a_decision_reads_only_rows_before_the_test_block_it_decides():
    X, lab, end, sess, folds = _planted()
    seen = []
    def reader(rows):
        seen.append(int(np.max(rows)))
        return X.iloc[rows]
    pol = RetrainPolicy(drift_threshold=0.25, label_threshold=0.05).resolved()
    d3 = retrain_decision(pol, folds[3], folds[0], reader, lab, end, sess)
    assert max(seen) < folds[3].test.start
    # poison the test block (features, labels and label ends): the decision and every statistic are unchanged
    Xp, labp, endp = X.copy(), lab.copy(), end.copy()
    Xp.iloc[folds[3].test.start:] = 1e6
    labp[folds[3].test.start:] = 2
    endp[folds[3].test.start:] = 0
    p3 = retrain_decision(pol, folds[3], folds[0], Xp, labp, endp, sess)
    assert p3 == d3
    # labels are used only where they ended before the test block
    assert d3["statistics"]["label_drift"]["recent_resolved_rows"] == folds[3].test.start - 5 - (d3["recent_window"]["first_row"])


def test_schedule_by_sessions_and_label_drift_triggers():
    X, lab, end, sess, folds = _planted(size=0.0)             # no feature shift
    # 500 rows a session: fold 1's recent window (rows 985..1999) touches sessions 1..3 (3 sessions): keep; fold 2's
    # (985..2999, still fold 0's model) sessions 1..5: retrain; fold 3's (2985..3999) 3 sessions: keep; fold 4's 5: retrain
    dec = plan_decisions(RetrainPolicy(every_sessions=4, drift_threshold=None), folds, X, lab, end, sess)
    assert [d["statistics"]["schedule_sessions"]["value"] for d in dec[1:]] == [3, 5, 3, 5]
    assert [d["decision"] for d in dec] == ["train", "keep", "retrain", "keep", "retrain"]
    assert all(d["statistics"]["feature_drift"]["value"] == 0 for d in dec[1:])    # logged while the trigger is off
    # a planted change of the class mix from row 3,500: mostly flat (1); the label trigger fires at fold 3, not before
    lab2 = lab.copy()
    lab2[3500:] = np.where(np.random.default_rng(5).random(len(lab) - 3500) < 0.8, 1, lab[3500:])
    dec = plan_decisions(RetrainPolicy(drift_threshold=None, label_threshold=0.05), folds, X, lab2, end, sess)
    assert [d["decision"] for d in dec] == ["train", "keep", "keep", "retrain", "retrain"]
    assert dec[3]["triggered_by"] == ["label_drift"] and dec[3]["statistics"]["label_drift"]["p_value"] < 0.01
    with pytest.raises(RetrainPolicyError, match="label_threshold must be in"):
        RetrainPolicy(label_threshold=0)


# ---------------------------------------------------------------- the walk-forward with three modes, on demo bars
def _cfg(bars_path, run_dir):
    return PipelineConfig(data_path=str(bars_path), run_dir=str(run_dir), seq_length=12,
                          model={"type": "lstm", "hidden_size": 8, "num_layers": 1},
                          train={"epochs": 1, "batch_size": 256}, backtest={"entry_threshold": 0.4})


@pytest.fixture(scope="module")
def bars_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("bars") / "bars.parquet"
    demo_bars(n_days=5, seed=7).reset_index().to_parquet(p, index=False)
    return p


@pytest.fixture(scope="module")
def run(bars_file, tmp_path_factory):
    "One retraining run; every training call's initial weights are recorded (seed, lr, state)."
    calls, orig = [], _pl._train
    def recording(cfg, model, *args):
        calls.append({"seed": args[-1], "lr": cfg.train.get("lr"), "state": {k: v.detach().clone() for k, v in model.state_dict().items()}})
        return orig(cfg, model, *args)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_pl, "_train", recording)
        res = walk_forward_retraining(_cfg(bars_file, tmp_path_factory.mktemp("rt") / "run"), SPLIT, POLICY, finetune_epochs=1)
    return res, calls


def test_three_modes_on_the_same_folds_and_every_decision_in_the_manifest(run):
    res, _ = run
    f = res.folds.set_index(["mode", "fold"])
    for col in ("test_first", "test_last", "train_first", "train_last", "test_predictions"):
        assert len({tuple(f.loc[m, col]) for m in MODES}) == 1, col
    ts = res.predictions["scratch"]["timestamp"]
    assert all(res.predictions[m]["timestamp"].equals(ts) for m in MODES)
    assert all(res.backtests[m].equity.index.equals(res.backtests["scratch"].equity.index) for m in MODES)
    assert f.loc["never", "model_id"].nunique() == 1 and f.loc[("never", 2), "model"] == "folds/fold_000/initial/model.pt"
    assert [f.loc[(m, 2), "action"] for m in MODES] == ["retrain", "finetune", "keep"]
    assert f.loc[("scratch", 1), "model_id"] == f.loc[("scratch", 0), "model_id"]          # kept at fold 1
    assert f.loc[("scratch", 2), "model_id"] != f.loc[("finetune", 2), "model_id"] != f.loc[("never", 2), "model_id"]
    m = json.loads((res.run_dir / "manifest.json").read_text())
    assert m["status"] == "complete" and m["kind"] == "retraining"
    log = m["retraining"]["decisions"]
    assert [d["decision"] for d in log] == ["train", "keep", "retrain"]
    keep, re_ = log[1], log[2]
    assert keep["triggered_by"] == [] and keep["statistics"]["schedule_folds"] == {"value": 1, "threshold": 2, "enabled": True, "fired": False}
    assert re_["triggered_by"] == ["schedule_folds"] and re_["statistics"]["schedule_folds"]["fired"] is True
    for d, fold in zip(log[1:], (1, 2)):         # the statistic, its threshold, the features and the windows, keep included
        fd = d["statistics"]["feature_drift"]
        assert {"value", "threshold", "fired", "flagged_features", "n_tested", "alpha", "excluded_features"} <= set(fd)
        assert fd["threshold"] is None and fd["fired"] is False and 0 <= fd["value"] <= 1 and "day_of_week" in fd["excluded_features"]
        assert d["recent_window"]["last_row"] == f.loc[("scratch", fold), "test_first"] - 1
        assert d["reference_window"]["first_row"] == f.loc[("scratch", d["model_fold"]), "train_first"]
        assert d["recent_window"]["first_time"] and d["reference_window"]["last_time"]
    assert m["retraining"]["finetune"]["lr"] == pytest.approx(1e-4) and m["retraining"]["finetune"]["epochs"] == 1
    # the evaluation adds up: per-fold P&L to each mode's backtest; paired differences to the difference of the totals
    fm = fold_metrics(res, n_samples=100)
    cmp = compare_modes(res, n_samples=100).set_index(["mode", "versus", "metric"])
    for mode in MODES:
        assert fm.loc[mode, "net_pnl_dollars"].sum() == pytest.approx(res.backtests[mode].metrics.net_profit, abs=1e-6)
    row = cmp.loc[("scratch", "never", "net P&L per session (USD)")]
    total = res.backtests["scratch"].metrics.net_profit - res.backtests["never"].metrics.net_profit
    assert row["difference"] * row["sessions"] == pytest.approx(total, abs=1e-6)
    assert row["verdict"] in ("helps", "hurts", "indistinguishable") and row["ci_low"] <= row["difference"] <= row["ci_high"]


def test_finetune_starts_from_the_previous_weights_exactly(run):
    res, calls = run
    assert [(c["seed"], c["lr"]) for c in calls] == [(0, None), (2, None), (2, pytest.approx(1e-4))]   # initial, scratch, fine-tune
    prev = load_model(res.run_dir / "folds/fold_000/initial/model.pt")[0].state_dict()
    ft, scratch = calls[2]["state"], calls[1]["state"]
    assert set(ft) == set(prev) and all(torch.equal(ft[k], prev[k]) for k in prev)
    assert not all(torch.equal(scratch[k], prev[k]) for k in prev)       # a retrain from scratch does not start there
    tuned = load_model(res.run_dir / "folds/fold_002/finetune/model.pt")[0].state_dict()
    assert not all(torch.equal(tuned[k], prev[k]) for k in prev)         # and fine-tuning moved the weights


def _fresh_fit(features_path, first, last):
    raw = pd.read_parquet(features_path)
    X = raw.drop(columns=[c for c in raw.columns if c == "timestamp"]).iloc[first:last + 1]
    return RobustFeatureScaler(nan_policy="impute", warn=False).fit(X.reset_index(drop=True))


def _same_stats(state, sc):
    return all(np.allclose(np.asarray(state[k], np.float64), getattr(sc, k + "_"), equal_nan=True) for k in ("center", "scale"))


def test_every_scaler_is_fit_on_its_own_training_rows_only(run, bars_file, tmp_path):
    res, _ = run
    f = res.folds.set_index(["mode", "fold"])
    feats = res.run_dir / "features.parquet"
    for unit, fold in (("fold_000/initial", 0), ("fold_002/scratch", 2), ("fold_002/finetune", 2)):   # finetune_scaler='refit'
        state = load_checkpoint(res.run_dir / "folds" / unit / "model.pt")["scaler_state"]
        tr0, tr1 = f.loc[("scratch", fold), "train_first"], f.loc[("scratch", fold), "train_last"]
        assert _same_stats(state, _fresh_fit(feats, tr0, tr1)), unit
        assert not _same_stats(state, _fresh_fit(feats, tr0, f.loc[("scratch", fold), "test_last"])), unit   # the check can fail
    # finetune_scaler='keep': the fine-tuned model predicts through fold 0's scaler, fit on fold 0's training rows
    keep = walk_forward_retraining(_cfg(bars_file, tmp_path / "keep"), SPLIT, POLICY, finetune_scaler="keep")
    k = keep.folds.set_index(["mode", "fold"])
    state = load_checkpoint(keep.run_dir / "folds/fold_002/finetune/model.pt")["scaler_state"]
    assert _same_stats(state, _fresh_fit(keep.run_dir / "features.parquet", k.loc[("scratch", 0), "train_first"], k.loc[("scratch", 0), "train_last"]))
    assert k.loc[("finetune", 2), "scaler_fit_fold"] == 0 and k.loc[("finetune", 2), "scaler_given"] and k.loc[("finetune", 2), "fit_rows"] == 0
    assert f.loc[("finetune", 2), "scaler_fit_fold"] == 2
    with pytest.raises(RetrainPolicyError, match="finetune_scaler must be 'refit' or 'keep'"):
        walk_forward_retraining(_cfg(bars_file, tmp_path / "bad"), SPLIT, POLICY, finetune_scaler="reuse")


def test_a_scratch_retrain_is_walk_forwards_own_fold(run, bars_file, tmp_path):
    "Retraining from scratch at fold k is exactly walk_forward's fold k (same scaler rows, seed and training)."
    res, _ = run
    wf = walk_forward(_cfg(bars_file, tmp_path / "wf"), SPLIT)
    for fold in (0, 2):
        a = res.predictions["scratch"][res.predictions["scratch"]["fold"] == fold].reset_index(drop=True)
        b = wf.predictions[wf.predictions["fold"] == fold].reset_index(drop=True)
        assert a["timestamp"].equals(b["timestamp"])
        np.testing.assert_allclose(a[PROBA_COLUMNS].to_numpy(), b[PROBA_COLUMNS].to_numpy(), atol=1e-6)


RT_SCRIPT = """
import sys, time
import torch; torch.set_num_threads(1)
from scalp_lib.pipeline import PipelineConfig
from scalp_lib.retraining import walk_forward_retraining
cfg = PipelineConfig.from_yaml(sys.argv[1])
def on_fold_end(k, recs):
    if k == 0: time.sleep(120)   # the parent kills this process here, between fold 0 and fold 1
walk_forward_retraining(cfg, {'n_splits': 3, 'embargo_bars': 10}, {'every_folds': 2, 'drift_threshold': None}, on_fold_end=on_fold_end)
"""


def test_retraining_resumes_after_sigkill_between_folds(run, bars_file, tmp_path):
    res, _ = run
    cfg = _cfg(bars_file, tmp_path / "rt")
    cfg.to_yaml(tmp_path / "rt.yaml")
    proc = subprocess.Popen([sys.executable, "-c", RT_SCRIPT, str(tmp_path / "rt.yaml")], env=ENV, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    done0 = [tmp_path / "rt" / "folds" / "fold_000" / m / "fold.json" for m in MODES]
    t0 = time.time()
    while not all(p.is_file() for p in done0):
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        assert time.time() - t0 < 100, "fold 0 did not finish in time"
        time.sleep(0.1)
    time.sleep(0.3)                        # past the manifest update: the process sleeps in on_fold_end
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "rt" / "folds" / "fold_001" / "decision.json").exists()
    assert json.loads((tmp_path / "rt" / "manifest.json").read_text())["status"] == "running"
    model0 = tmp_path / "rt" / "folds" / "fold_000" / "initial" / "model.pt"
    mtime0, sha0 = model0.stat().st_mtime_ns, file_sha256(model0)

    resumed = walk_forward_retraining(cfg, SPLIT, POLICY)
    assert resumed.folds.groupby("fold")["reused"].all().tolist() == [True, False, False]
    assert "features" not in resumed.manifest["stages"]
    assert model0.stat().st_mtime_ns == mtime0 and file_sha256(model0) == sha0
    assert [d["decision"] for d in resumed.decisions] == [d["decision"] for d in res.decisions]
    for m in MODES:                        # the resumed run is the uninterrupted one (the `run` fixture, same config)
        a, b = resumed.predictions[m], res.predictions[m]
        assert a["timestamp"].equals(b["timestamp"]) and (a["fold"].to_numpy() == b["fold"].to_numpy()).all()
        np.testing.assert_allclose(a[PROBA_COLUMNS].to_numpy(), b[PROBA_COLUMNS].to_numpy(), atol=1e-6)
    assert json.loads((tmp_path / "rt" / "manifest.json").read_text())["status"] == "complete"
    # a different policy in the same folder is refused, never mixed in, and leaves the folder as it was
    before = {f: (tmp_path / "rt" / f).read_bytes() for f in ("manifest.json", "config.yaml", "folds/fold_000/decision.json")}
    with pytest.raises(RunMismatchError, match="different configuration, splitter, policy"):
        walk_forward_retraining(cfg, SPLIT, {"every_folds": 1, "drift_threshold": None})
    assert all((tmp_path / "rt" / f).read_bytes() == b for f, b in before.items())
    assert load_retraining(tmp_path / "rt").folds["reused"].all()           # the run reads back from its folder alone


# ---------------------------------------------------------------- the report on the real ES file
def test_retraining_report_on_the_real_es_file_shows_the_librarys_numbers(tmp_path, shared_data):
    import re
    from html import unescape
    from scalp_lib.report import run_report
    from scalp_lib.retraining import MODE_LABELS, decisions_table
    params = {"data_path": str(shared_data / "es_1min_2025-09_11.csv.gz"), "tz": "America/New_York", "ts_offset": "5h",
              "run_dir": str(tmp_path / "rt"), "n_splits": 3, "epochs": 1, "max_train_windows": 5000, "bootstrap_samples": 200}
    html = run_report("retraining", params, output_dir=tmp_path).html.read_text()
    text = re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", html)))
    res = load_retraining(tmp_path / "rt" / "run")          # the library's result, read back from the run folder
    assert res.folds["reused"].all() and len(res.bars) == 75_791 and "75,791 bars used" in text
    n_re = sum(d["decision"] == "retrain" for d in res.decisions)
    assert f"retrained at {n_re} of {len(res.decisions) - 1} decisions" in text
    for m in MODES:                                          # net P&L and trades of each mode in the summary
        bt = res.backtests[m].metrics
        assert f"{MODE_LABELS[m]} {bt.net_profit:,.2f} USD ({bt.n_trades:,} trades)" in text, m
    dt = decisions_table(res.decisions)
    for k, r in dt.iloc[1:].iterrows():                      # each decision's statistic as logged in the manifest
        assert re.search(rf"{k} {r['decided_before'][:10]} {r['decided_before'][11:16]} {r['decision']} .*?"
                         rf"{r['feature_drift_share']:.3f} \({int(r['features_flagged'])}/{int(r['features_tested'])}\)", text), k
    fm = fold_metrics(res, n_samples=200, seed=0)
    for (m, f), r in fm.iterrows():                          # per-fold P&L with its interval
        assert f"{r['net_pnl_dollars']:,.2f} [{r['pnl_ci_low']:,.2f}, {r['pnl_ci_high']:,.2f}]" in text, (m, f)
    for r in compare_modes(res, n_samples=200, seed=0).itertuples():   # paired differences, intervals, verdicts
        assert (f"{MODE_LABELS[r.mode]} {MODE_LABELS[r.versus]} {r.metric} {r.difference:+,.4f} {r.ci_low:+,.4f} {r.ci_high:+,.4f} "
                f"{r.verdict} {r.sessions} {r.sessions_that_differ}") in text, r
    assert "Traceback" not in html and "Warning" not in text
