"""Studies: search-space errors, parallel workers on one storage, crash recovery, pruning, the test period's isolation,
and the selection-bias statistics (CSCV's PBO, the deflated Sharpe ratio) on small synthetic problems."""
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml
from scipy import stats as sps

from scalp_lib.data import demo_bars
from scalp_lib.pipeline import PipelineConfig
from scalp_lib.study import (SearchSpace, SearchSpaceError, StudyConfig, StudyConfigError, StudyError, PruningCallback, cscv,
                             demo_study_config, final_evaluation, load_results, prepare_study_data, prepared_for, run_folds,
                             run_study, selection_adjusted, study_main, trial_dir)
from scalp_lib import pipeline as _pl

EXE = Path(sys.executable).parent / "scalp-study"
FAST = dict(heartbeat_interval_s=1, grace_period_s=3)


def _cfg(tmp, name="s", **kw):
    "A tiny demo study (12 sessions: 9 development, 3 test) with fast heartbeats."
    c = demo_study_config(tmp, n_days=12, n_trials=kw.pop("n_trials", 4), epochs=kw.pop("epochs", 1), name=name)
    return StudyConfig.from_dict({**c.to_dict(), **FAST, **kw})


@pytest.fixture(scope="module")
def demo_study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("study")
    cfg = _cfg(tmp, n_trials=4, pruner={"type": "median", "n_startup_trials": 1, "n_warmup_steps": 0})
    return run_study(cfg)


# ---------------------------------------------------------------- search space

@pytest.mark.parametrize("space, message", [
    ({"seq_len": [0, 8]}, "unknown PipelineConfig field 'seq_len'; did you mean 'seq_length'?"),
    ({"train.lr": {"type": "float", "low": 0.01, "high": 0.001}}, "space['train.lr']: bad range: low=0.01 must be < high=0.001"),
    ({"train.lr": {"type": "float", "low": -1, "high": 1, "log": True}}, "log scale needs low > 0"),
    ({"model.hidden_size": {"type": "int", "low": 4, "high": 8.5}}, "high must be an integer"),
    ({"backtest.entry_threshold": {"type": "float", "low": 0.4, "high": 0.5, "step": 0.5}}, "bad step 0.5"),
    ({"seq_length": [0]}, "choices must be a list of at least 2 values"),
    ({"seq_length": {"type": "categorical", "choices": [4, 4]}}, "choices repeat a value"),
    ({"train.epoch": [1, 2]}, "space['train.epoch'] = 1 gives an invalid pipeline config: PipelineConfigError: train: unknown key(s) ['epoch']"),
    ({"model.hiden_size": [4, 8]}, "unknown key(s) ['hiden_size'] for a lstm model"),
    ({"feature_groups": [["returns"], ["retruns"]]}, "unknown feature group(s) ['retruns']"),
    ({"tz": ["UTC", "America/Chicago"]}, "'tz' is not a hyperparameter"),
    ({"seq_length.x": [1, 2]}, "'seq_length' holds a value, not options"),
    ({"train.lr": {"type": "uniform", "low": 0, "high": 1}}, "type must be float, int or categorical"),
])
def test_space_errors_name_the_entry(space, message):
    with pytest.raises(SearchSpaceError) as e:
        SearchSpace.from_dict(space).validate({"seq_length": 0}, n_random=4)
    assert message in str(e.value)


def test_conditional_entries_follow_the_config_built_so_far():
    space = SearchSpace.from_dict(yaml.safe_load("""
model: {type: categorical, choices: [{type: feedforward, hidden_dims: [8]}, {type: lstm, hidden_size: 8, num_layers: 1}]}
model.hidden_size: {type: int, low: 4, high: 16, when: {model.type: lstm}}
"""))
    assert space.validate({"seq_length": 4}, n_random=16) > 16
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    kinds = set()
    for _ in range(20):
        t = study.ask()
        values, cfg = space.suggest(t, {"seq_length": 4})
        kinds.add(cfg["model"]["type"])
        assert ("model.hidden_size" in values) == (cfg["model"]["type"] == "lstm")
        assert space.config_of({"seq_length": 4}, t.params) == cfg
        PipelineConfig.from_dict(cfg)
    assert kinds == {"feedforward", "lstm"}


def test_study_config_errors(tmp_path):
    with pytest.raises(StudyConfigError, match="did you mean 'n_trials'"):
        StudyConfig.from_dict({"n_trial": 3})
    with pytest.raises(StudyConfigError, match="grace_period_s .* must exceed"):
        StudyConfig(data_path="x", heartbeat_interval_s=5, grace_period_s=5).resolved()
    with pytest.raises(StudyConfigError, match="test period leaves"):
        prepare_study_data(_cfg(tmp_path, test_frac=0.99).resolved())


# ---------------------------------------------------------------- the statistics

def test_cscv_pbo_by_hand():
    "Two strategies, four periods, S = 2: both combinations worked out by hand."
    r = np.array([[1.0, 0.0], [2.0, 0.5], [0.0, 1.0], [0.5, 3.0]])
    res = cscv(r, n_blocks=2)
    # J = periods {0,1}: strategy 0 has Sharpe 1.5/0.707 = 2.12 > 0.25/0.354 = 0.71 -> n* = 0; out of sample
    # (periods {2,3}) its Sharpe 0.25/0.354 = 0.71 < 2.0/1.414 = 1.41 -> rank 1 of 2, omega = 1/3, logit ln(1/2) < 0.
    # J = {2,3}: strategy 1 has 2.0/1.414 = 1.41 > 0.71 -> n* = 1; out of sample (periods {0,1}, its returns 0, 0.5)
    # Sharpe 0.25/0.354 = 0.71 < 2.12 -> rank 1 again. PBO = 1.
    assert res.n_combinations == 2 and res.pbo == 1.0
    np.testing.assert_allclose(res.logits, [math.log(0.5), math.log(0.5)])
    np.testing.assert_array_equal(res.is_best, [0, 1])
    np.testing.assert_allclose(res.oos_perf, [0.25 / np.std([0.0, 0.5], ddof=1)] * 2)
    np.testing.assert_allclose(res.is_perf, [1.5 / np.std([1.0, 2.0], ddof=1), 2.0 / np.std([1.0, 3.0], ddof=1)])
    assert res.prob_loss == 0.0


def test_pbo_is_one_half_on_noise_and_near_zero_with_one_planted_edge():
    rng = np.random.default_rng(42)
    noise = [cscv(rng.standard_normal((240, 20)), n_blocks=8).pbo for _ in range(12)]
    assert abs(np.mean(noise) - 0.5) < 0.08, noise
    edged = []
    for _ in range(10):
        m = rng.standard_normal((240, 20))
        m[:, 5] += 0.3            # a real edge: 0.3 standard deviations a period (Sharpe 0.3 per period)
        edged.append(cscv(m, n_blocks=8).pbo)
    assert np.mean(edged) < 0.05, edged


def test_dsr_uses_the_trial_count_exactly_as_the_formula_says():
    rng = np.random.default_rng(1)
    R = pd.DataFrame(rng.standard_normal((150, 8)) * 0.01 + 0.0008)
    chosen = int(R.mean().idxmax())
    r = R[chosen].to_numpy()
    sr = R.apply(lambda c: c.mean() / c.std(ddof=1))
    V = sr.var(ddof=1)
    n, sr_c = len(r), r.mean() / r.std(ddof=1)
    skew, kurt = pd.Series(r).skew(), pd.Series(r).kurt() + 3
    se = math.sqrt((1 - skew * sr_c + (kurt - 1) / 4 * sr_c**2) / (n - 1))
    g = 0.5772156649015329
    for N in (2, 8, 100, 10_000):
        sr0 = math.sqrt(V) * ((1 - g) * sps.norm.ppf(1 - 1 / N) + g * sps.norm.ppf(1 - 1 / (N * math.e)))
        got = selection_adjusted(R, chosen, N)
        assert got["n_trials"] == N
        assert got["expected_max_sharpe_per_period"] == pytest.approx(sr0, rel=1e-12)
        assert got["dsr"] == pytest.approx(sps.norm.cdf((sr_c - sr0) / se), rel=1e-9, abs=1e-15)
    assert selection_adjusted(R, chosen, 100)["dsr"] < selection_adjusted(R, chosen, 8)["dsr"]


def test_results_print_without_test_trades(demo_study):
    "A final evaluation with no trade has a NaN Sharpe ratio, stored as null: the summary still prints."
    import dataclasses
    fin = dataclasses.replace(demo_study.final, metrics={**demo_study.final.metrics, "sharpe": None, "n_trades": 0})
    assert "Sharpe n/a" in repr(dataclasses.replace(demo_study, final=fin))


def test_study_dsr_counts_complete_and_pruned_trials(demo_study):
    res = demo_study
    c = res.counts
    assert c["complete"] + c["pruned"] == 4 and c["failed"] == 0
    assert res.selection["n_trials"] == c["complete"] + c["pruned"]
    assert res.selection["n_with_returns"] == c["complete"] == res.returns.shape[1]
    pruned = res.trials[res.trials["state"] == "PRUNED"]
    assert pruned["pruned_at_step"].notna().all() and pruned["value"].isna().all()
    for n, row in res.trials.iterrows():
        man = json.loads((trial_dir(res.config, n) / "manifest.json").read_text())
        assert man["trial"] == n and man["status"] == row["state"].lower().replace("fail", "failed")
        assert man["config"]["data_path"].endswith("data/dev.parquet")


# ---------------------------------------------------------------- the objective and pruning

def test_sharpe_objective_is_the_validation_returns_sharpe_even_for_a_short_period(demo_study):
    "Fewer validation sessions than the backtest's minimum for annualised figures must not make every trial score 0."
    from scalp_lib.metrics import periods_per_year, sharpe_ratio
    res = demo_study
    done = res.trials[res.trials["state"] == "COMPLETE"]
    assert len(res.returns) < 20                                  # below settings [metrics] min_sessions
    for n, row in done.iterrows():
        r = res.returns[n].dropna()
        sr = sharpe_ratio(r.to_numpy(), periods_per_year(pd.to_datetime(r.index).values.astype("datetime64[D]"))[0])
        assert row["value"] == pytest.approx(sr if np.isfinite(sr) else 0.0, rel=1e-9, abs=1e-12)
        assert row["sharpe"] == pytest.approx(sr, rel=1e-9) if np.isfinite(sr) else not np.isfinite(row["sharpe"] or np.nan)
    assert (done["value"] != 0).any()

def test_pruning_callback_stops_training_and_raises(tmp_path):
    cfg = _cfg(tmp_path, epochs=3).resolved()
    data = prepare_study_data(cfg)
    pcfg = PipelineConfig.from_dict({**cfg.base_dict(), **data.trial_fields()})
    prep, _, _ = prepared_for(pcfg, cfg.path() / "cache")
    spl = _pl._as_splitter({"n_splits": 3, "embargo_bars": 30}, prep)

    class Trial:  # an Optuna trial whose pruner says "prune" at the second report
        reports = []
        def report(self, v, step): self.reports.append((step, v))
        def should_prune(self): return len(self.reports) >= 2
    cb = PruningCallback(Trial())
    with pytest.raises(optuna.TrialPruned, match="pruned after step 1 .fold 0, epoch 1."):
        run_folds(pcfg, prep, spl, tmp_path / "t", callbacks=[cb])
    assert [s for s, _ in Trial.reports] == [0, 1] and all(v < 0 for _, v in Trial.reports)  # minus the validation loss
    assert not (tmp_path / "t" / "scaled.npy").exists()


def test_features_are_computed_once_per_distinct_feature_set(demo_study):
    t = demo_study.trials
    assert (t["features"] == "computed").sum() == t["feature_groups"].nunique()
    keys = [p for p in (demo_study.config.path() / "cache").iterdir() if p.is_dir()]
    assert len(keys) == t["feature_groups"].nunique() + 1          # + the full file of the final evaluation


# ---------------------------------------------------------------- the test period

def _poisoned_copy(src: Path, dst: Path, first_test_bar: pd.Timestamp):
    "The same bars before the test period; inside it, prices mirrored around the last development close (valid bars, other values)."
    b = pd.read_parquet(src)
    t = b["timestamp"] >= first_test_bar
    p0 = b.loc[~t, "close"].iloc[-1]
    hi, lo = b.loc[t, "high"].copy(), b.loc[t, "low"].copy()
    for c in ("open", "close"):
        b.loc[t, c] = 2 * p0 - b.loc[t, c]
    b.loc[t, "high"], b.loc[t, "low"] = 2 * p0 - lo, 2 * p0 - hi
    b.loc[t, "volume"] = b.loc[t, "volume"].to_numpy()[::-1]
    b.to_parquet(dst, index=False)
    return int(t.sum())


def test_the_test_period_is_never_read_before_the_final_evaluation(demo_study, tmp_path):
    a, clean = demo_study, StudyConfig.from_dict(demo_study.config.to_dict())
    src = Path(clean.data_path)
    n_poisoned = _poisoned_copy(src, tmp_path / "poisoned.parquet", a.data.test_start)
    assert n_poisoned == a.data.n_test
    poisoned = StudyConfig.from_dict({**clean.to_dict(), "study_dir": str(tmp_path / "b"),
                                      "data_path": str(tmp_path / "poisoned.parquet")})
    b = run_study(poisoned)
    assert b.data.source_sha256 != a.data.source_sha256
    assert a.data.dev_path.read_bytes() == b.data.dev_path.read_bytes()   # the trials' only input is identical
    cols = ["state", "value", "sharpe", "net_profit_dollars", "n_trades", "val_loss", "pruned_at_step", "train.lr", "feature_groups"]
    pd.testing.assert_frame_equal(a.trials[cols], b.trials[cols])
    pd.testing.assert_frame_equal(a.returns, b.returns)
    assert a.final.trial == b.final.trial
    assert a.final.metrics["net_profit"] != b.final.metrics["net_profit"]   # only the final evaluation saw the test period
    assert a.final.returns.index.min() > a.returns.index.max()


def test_final_evaluation_is_a_single_look(demo_study, tmp_path):
    res = demo_study
    again = final_evaluation(res.config)
    assert again.looks == 1 and again.manifest["finished_utc"] == res.final.manifest["finished_utc"]
    mp = res.config.path() / "final" / "manifest.json"
    man = json.loads(mp.read_text())
    man["trial"] = man["trial"] + 100   # as if another trial had been evaluated before
    mp.write_text(json.dumps(man))
    with pytest.raises(StudyError, match="already evaluated once"):
        final_evaluation(res.config)
    second = final_evaluation(res.config, force=True)
    assert second.looks == 2 and second.trial == res.best_trial
    assert len(optuna.load_study(study_name="s", storage=f"sqlite:///{res.config.path() / 'study.db'}").user_attrs["final_evaluations"]) == 2


def test_a_different_search_in_the_same_study_is_refused(demo_study):
    d = demo_study.config.to_dict()
    d["space"] = {**d["space"], "train.lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}}
    with pytest.raises(StudyConfigError, match="different space"):
        run_study(d)


# ---------------------------------------------------------------- workers and crashes

def test_two_worker_processes_finish_exactly_n_trials_without_duplicates(tmp_path):
    cfg = _cfg(tmp_path, n_trials=4, pruner={"type": "none"}, sampler={"type": "random"})
    res = run_study(cfg, workers=2, final=False)
    t = res.trials
    assert len(t) == 4 and list(t.index) == list(range(4)) and (t["state"] == "COMPLETE").all()
    assert set(t["worker"]) == {0, 1}                       # both processes ran trials
    params = t[["train.lr", "model.hidden_dims", "feature_groups", "backtest.entry_threshold"]].astype(str)
    assert not params.duplicated().any()                    # the workers' samplers are seeded apart
    pids = {json.loads((trial_dir(res.config, n) / "manifest.json").read_text())["pid"] for n in t.index}
    assert len(pids) == 2
    assert (t["features"] == "computed").sum() == t["feature_groups"].nunique()   # one computation per feature set, across processes


def test_a_killed_worker_s_trial_is_failed_retried_and_a_rerun_completes_the_study(tmp_path):
    cfg = _cfg(tmp_path, n_trials=2, epochs=3, pruner={"type": "none"}, sampler={"type": "random"})
    yml = tmp_path / "study.yaml"
    cfg.to_yaml(yml)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen([str(EXE), str(yml), "--no-final"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    target = Path(cfg.study_dir) / "trials" / "00001" / "manifest.json"
    t0 = time.time()
    while not target.exists() and p.poll() is None and time.time() - t0 < 120:
        time.sleep(0.05)
    assert target.exists(), p.communicate()[0][-2000:]
    time.sleep(0.3)                         # trial 1 is training
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert json.loads(target.read_text())["status"] == "running"   # it died mid-trial
    assert study_main([str(yml), "--no-final"]) == 0     # the same command again (in this process)
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{Path(cfg.study_dir) / 'study.db'}")
    trials = study.get_trials()
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert len(done) == 2
    assert [t.number for t in failed] == [1] and "error" not in failed[0].user_attrs   # failed by its heartbeat, not an error
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == 1]
    assert len(retry) == 1 and retry[0].state == optuna.trial.TrialState.COMPLETE
    assert retry[0].params == failed[0].params
    assert len({t.number for t in trials}) == len(trials)


def test_cli_errors_return_2(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nn_trial: 3\n")
    assert study_main([str(bad)]) == 2 and "did you mean 'n_trials'" in capsys.readouterr().err
