"""The pipeline's scaler statistics equal a fit on the training rows alone: for the single split and for every
walk-forward fold, read back from the checkpoints the runs wrote and compared with a fit made here.

A scaler fit on a fold's test rows too (or on the validation rows) leaks the future into every input the model sees;
counters the pipeline writes itself cannot show it, the fitted statistics do.
"""
import numpy as np
import pandas as pd
import pytest

from scalp_lib.checkpoint import load_checkpoint
from scalp_lib.data import demo_bars
from scalp_lib.labels import LabelSpec
from scalp_lib.pipeline import PipelineConfig, run_pipeline, walk_forward
from scalp_lib.preprocess import RobustFeatureScaler
from scalp_lib.splits import PurgedWalkForward, temporal_split

H = int(LabelSpec('direction').resolve().horizon_bars)


@pytest.fixture(scope='module')
def bars_file(tmp_path_factory):
    p = tmp_path_factory.mktemp('bars') / 'bars.parquet'
    demo_bars(n_days=3, seed=11).reset_index().to_parquet(p, index=False)
    return p


def _cfg(bars_file, run_dir):
    "The smallest run that still trains: flat features, a tiny network, one epoch on a few windows."
    return PipelineConfig(data_path=str(bars_file), run_dir=str(run_dir), seq_length=0,
                          feature_groups=['returns', 'volatility'], model={'type': 'ffn', 'hidden_dims': [4]},
                          train={'epochs': 1, 'batch_size': 64}, max_train_windows=128, max_val_windows=64,
                          split_fractions=[0.6, 0.2, 0.2], embargo_bars=10, backtest={'entry_threshold': 0.4})


def _expected_scaler(features:pd.DataFrame, rows)->RobustFeatureScaler:
    "The fit the pipeline must make: the same options, on float32 copies of exactly these rows."
    x = features.iloc[rows].astype(np.float32)
    return RobustFeatureScaler(nan_policy='impute', warn=False).fit(x)


def _assert_same_fit(state:dict, ref:RobustFeatureScaler, n_rows:int):
    got = RobustFeatureScaler.from_state_dict(state)
    np.testing.assert_allclose(got.center_, ref.center_, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(got.scale_, ref.scale_, rtol=1e-6, atol=1e-9)
    assert int(got.n_rows_fit_) == n_rows


def test_single_split_scaler_is_fit_on_the_training_rows_alone(bars_file, tmp_path):
    res = run_pipeline(_cfg(bars_file, tmp_path / 'run'))
    feats = pd.read_parquet(tmp_path / 'run' / 'features.parquet')
    sp = temporal_split(len(feats), (0.6, 0.2, 0.2), horizon_bars=H, embargo_bars=10)
    ref = _expected_scaler(feats, sp.train)
    _assert_same_fit(load_checkpoint(res.model_path)['scaler_state'], ref, sp.sizes()['train'])
    # and not what a fit over train + validation (or everything) would give
    wider = _expected_scaler(feats, slice(0, sp.boundaries[1]))
    assert not np.allclose(wider.center_, ref.center_, rtol=1e-6) or not np.allclose(wider.scale_, ref.scale_, rtol=1e-6)


def test_every_walk_forward_fold_scaler_is_fit_on_that_folds_training_rows_alone(bars_file, tmp_path):
    res = walk_forward(_cfg(bars_file, tmp_path / 'wf'), {'n_splits': 3, 'embargo_bars': 10})
    feats = pd.read_parquet(tmp_path / 'wf' / 'features.parquet')
    folds = list(PurgedWalkForward(3, horizon_bars=H, embargo_bars=10).folds(len(feats)))
    assert len(folds) == len(res.folds) == 3
    for fold, rec in zip(folds, res.folds.to_dict('records')):
        assert (rec['train_first'], rec['train_last']) == (fold.train.start, fold.train.stop - 1)
        assert (rec['test_first'], rec['test_last']) == (fold.test.start, fold.test.stop - 1)
        ref = _expected_scaler(feats, fold.train)
        _assert_same_fit(load_checkpoint(tmp_path / 'wf' / rec['model'])['scaler_state'], ref, fold.n_train)
        leaky = _expected_scaler(feats, slice(fold.train.start, fold.test.stop))   # the fit a leak would give
        assert not np.allclose(leaky.center_, ref.center_, rtol=1e-6) or not np.allclose(leaky.scale_, ref.scale_, rtol=1e-6)
