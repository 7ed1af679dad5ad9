"""Stability diagnostics: the raw-input failure is reproduced and the recommended configuration removes it; training-run readers."""
import numpy as np
import pandas as pd
import pytest
import torch

from scalp_lib.data import demo_bars
from scalp_lib.diagnostics import (RECOMMENDED_CONFIG, RAW_INPUT_CONFIG, DiagnosticsError, ExperimentResult, detect_spikes,
                                   prepare_stability_data, run_stability_experiment, stability_grid, stability_verdict)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def sdata():
    return prepare_stability_data(demo_bars(n_days=20, seed=3), max_rows=30_000)


def test_raw_input_configuration_explodes_and_recommended_does_not(sdata):
    raw = run_stability_experiment(sdata, RAW_INPUT_CONFIG, name="raw-input configuration", epochs=3)
    rec = run_stability_experiment(sdata, RECOMMENDED_CONFIG, name="recommended configuration", epochs=3)
    assert raw.exploded or raw.diverged
    assert raw.max_loss_ratio > 1e6             # losses astronomically above the trivial predictor's, as in the original failure
    assert rec.stable and rec.n_skipped == 0
    assert rec.val_ratio < 1.1 and rec.max_loss_ratio < 10


def test_input_check_sees_the_raw_inputs(sdata):
    f = " ".join(sdata.input_check.findings)
    assert sdata.input_check.scale_spread > 1e6 and "scale features robustly" in f and "standardise the target" in f


def _fake(name, cfg, stable):
    return ExperimentResult(name, cfg, pd.DataFrame({"step": [1], "loss": [1.0], "grad_norm": [1.0]}), 1e-3, 1.0, 1.0, 1.0,
                            1.0 if stable else 1e6, 1.0 if stable else 1e6, 0, 0, 0, not stable, not stable, "completed")


def test_verdict_names_the_planted_cause():
    grid = stability_grid()
    # a world where only the target matters: every config with the unclipped log-return target fails
    results = [_fake(n, c, stable=c["target"] != "log_return") for n, c in grid]
    table, text = stability_verdict(results)
    assert table["causes_failure"].to_dict() == {"features": False, "target": True, "lr": False, "grad_clip": False, "layer_norm": False}
    assert table.loc["target", "removes_failure_alone"] and not table.loc["features", "removes_failure_alone"]
    assert "`target` (to log_return) alone makes the recommended configuration fail" in text
    with pytest.raises(DiagnosticsError):
        stability_verdict(results[::-1])


def test_user_base_configuration_names():
    grid = stability_grid({**RAW_INPUT_CONFIG, "features": "robust"})
    assert grid[0][0] == "configuration under investigation" and grid[2][0].startswith("investigated + ")


def test_spike_detector_is_causal():
    rng = np.random.default_rng(0)
    v = rng.lognormal(0, 0.3, 300)
    v[[100, 200]] = 100.0
    flags = detect_spikes(v)
    assert set(np.flatnonzero(flags)) == {100, 200}
    w = v.copy()
    w[150:] = rng.lognormal(5, 1, 150)
    assert (detect_spikes(w)[:150] == flags[:150]).all()


def test_the_recommended_rate_is_a_tenth_of_the_range_tests_minimum(sdata):
    "The report plots the very range test that set the rate: stored on the experiment, suggestion = minimum / 10."
    from scalp_lib.diagnostics import experiments_table
    rec = run_stability_experiment(sdata, RECOMMENDED_CONFIG, name="recommended configuration", epochs=1)
    fixed = run_stability_experiment(sdata, {**RECOMMENDED_CONFIG, "lr": 1e-3}, name="fixed rate", epochs=1)
    assert rec.lr_range is not None and fixed.lr_range is None
    assert rec.lr_used == rec.lr_range.suggested_lr == pytest.approx(rec.lr_range.min_loss_lr / 10, rel=1e-12)
    t = experiments_table([rec, fixed])
    assert list(t.columns) == ["configuration", "lr used", "largest batch loss (x trivial)", "final validation loss (x trivial)",
                               "skipped steps", "loss / gradient spikes", "outcome"]
    assert t.loc["fixed rate", "lr used"] == 1e-3 and t.loc["recommended configuration", "outcome"] == "stable"
    assert "lr from range test" in t.loc["recommended configuration", "configuration"]


# ---------------------------------------------------------------- readers of a training run (training report)

def _epochs(val, train=None):
    return pd.DataFrame({"epoch": range(len(val)), "val_loss": val, "train_loss": train or list(np.linspace(1.1, 1.0, len(val)))})


def test_overfitting_verdict_branches():
    from scalp_lib.diagnostics import overfitting_verdict
    v = overfitting_verdict(_epochs([1.0838, 1.0953, 1.1050, 1.1121], [1.0979, 1.0446, 1.0220, 1.0069]))
    assert v["kind"] == "from the first epoch" and v["best_epoch"] == 1
    assert v["sentence"].startswith("**The model overfits from the first epoch**: the validation loss is lowest after epoch 1 (1.0838)")
    assert "ends at 1.1121 after epoch 4, while the training loss falls from 1.0979 to 1.0069" in v["sentence"]
    assert overfitting_verdict(_epochs([1.10, 1.08, 1.09]))["kind"] == "after epoch 2"
    assert overfitting_verdict(_epochs([1.10, 1.09, 1.08]))["kind"] == "none"
    assert overfitting_verdict(_epochs([1.08, 1.08]))["kind"] == "none"          # flat: not rising
    assert overfitting_verdict(_epochs([1.08]))["kind"] == "one epoch"
    assert overfitting_verdict(_epochs([np.nan, np.nan]))["kind"] == "no validation"


def test_epoch_boundary_check_reads_the_history():
    from scalp_lib.diagnostics import epoch_boundary_check
    h = pd.DataFrame({"step": range(1, 9), "epoch": [0, 0, 0, 0, 1, 1, 1, 1], "batch_size": [64, 64, 64, 3] * 2,
                      "grad_norm": [1.0, 2.0, 3.0, 8.0, 2.0, 2.0, 2.0, 1.0], "skipped": [False] * 8})
    b = epoch_boundary_check(h)
    assert b["last_batch_size"].tolist() == [3, 3] and b["ratio"].tolist() == [4.0, 0.5]


def test_classifier_regime_breakdown_equals_direct_counts():
    from scalp_lib.diagnostics import classifier_regime_breakdown
    from scalp_lib.regimes import compute_regimes
    bars = demo_bars(n_days=10, seed=8)
    reg = compute_regimes(bars)
    rng = np.random.default_rng(0)
    rows = np.sort(rng.choice(np.arange(len(bars) // 2, len(bars)), 2000, replace=False))
    y = rng.integers(0, 3, 2000)
    P = rng.dirichlet(np.ones(3), 2000)
    ref = np.tile([0.2, 0.5, 0.3], (2000, 1))
    t = classifier_regime_breakdown(y, P, rows, reg, reference_proba=ref, n_samples=200)
    hit, ref_hit = P.argmax(1) == y, y == 1
    for kind in reg.columns:
        lab = reg[kind].astype(object).to_numpy()[rows]
        for r in [x for x in reg[kind].cat.categories if (lab == x).any()]:
            m = lab == r
            assert t.loc[(kind, r), "windows"] == m.sum()
            assert t.loc[(kind, r), "accuracy"] == pytest.approx(hit[m].mean(), abs=1e-12)
            assert t.loc[(kind, r), "reference_accuracy"] == pytest.approx(ref_hit[m].mean(), abs=1e-12)
            if np.ceil(m.sum() / 60) >= 10: assert t.loc[(kind, r), "accuracy_ci_low"] <= t.loc[(kind, r), "accuracy"] <= t.loc[(kind, r), "accuracy_ci_high"]
            else:                                # fewer than 10 blocks of 60 windows: no interval, no claim
                assert t.loc[(kind, r), "few"] and np.isnan(t.loc[(kind, r), "diff_ci_low"])
                assert t.loc[(kind, r), "verdict"] == "indistinguishable from"
    assert t.loc[("all", "all"), "windows"] == 2000 and (t["windows"] > 0).all()     # no empty rows
    assert t["few"].any() and not t["few"].all()
