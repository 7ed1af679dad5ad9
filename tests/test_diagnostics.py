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
