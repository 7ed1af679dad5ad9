"""scalp_lib.checkpoint: safe loading, legacy layouts (seed 000 bugs #7, #8), corruption, mismatches, atomic writes."""
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from scalp_lib.checkpoint import (CheckpointCorruptError, CheckpointFormatError, CheckpointManager, CheckpointMismatchError,
                                  CheckpointNotFoundError, UnsafeCheckpointError, load_checkpoint, load_model,
                                  make_checkpoint, save_checkpoint)
from scalp_lib.config import ScalpLibError
from scalp_lib.models import build_model, model_config

ROOT = Path(__file__).resolve().parents[1]


def _ff(input_dim=4, hidden_dims=(8, 6), seed=0):
    torch.manual_seed(seed)
    return build_model({'type': 'feedforward', 'input_dim': input_dim, 'hidden_dims': list(hidden_dims), 'dropout_rate': 0.1,
                        'num_classes': 3}).eval()


def _same_outputs(a, b, input_dim=4):
    x = torch.randn(5, input_dim)
    with torch.no_grad():
        return torch.equal(a.eval()(x), b.eval()(x))


# ---------------------------------------------------------------- malicious pickles

class _Marker:
    "Unpickling this object opens (creates) the marker file: a stand-in for arbitrary code execution."
    def __init__(self, path): self.path = str(path)
    def __reduce__(self): return (open, (self.path, 'w'))


def test_malicious_pickle_is_not_executed(tmp_path):
    marker = tmp_path / 'pwned'
    evil = tmp_path / 'evil.pt'
    torch.save({**make_checkpoint(_ff()), 'payload': _Marker(marker)}, evil)
    with pytest.raises(UnsafeCheckpointError) as e:
        load_checkpoint(evil)
    assert str(evil) in str(e.value) and 'refused to load' in str(e.value)
    assert isinstance(e.value, ValueError) and isinstance(e.value, ScalpLibError)
    assert not marker.exists(), 'the payload ran during load_checkpoint'
    # control: the payload is live, an unrestricted load would have run it
    torch.load(evil, weights_only=False)
    assert marker.exists()


def test_malicious_pickle_hidden_in_legacy_layout(tmp_path):
    marker = tmp_path / 'pwned2'
    m = _ff()
    raw = {'config': {'model_type': 'feedforward', 'input_size': 4, 'hidden_sizes': [8, 6]}, 'model_state_dict': m.state_dict(),
           'scaler': _Marker(marker)}
    torch.save(raw, tmp_path / 'old.pt')
    with pytest.raises(UnsafeCheckpointError):
        load_model(tmp_path / 'old.pt')
    assert not marker.exists()


def test_numpy_object_arrays_are_refused_numeric_arrays_accepted(tmp_path):
    m = _ff()
    base = {'model_config': {'type': 'feedforward', 'params': {'hidden_dims': [8, 6], 'num_classes': 3}}, 'input_dim': 4,
            'model_state_dict': m.state_dict()}
    torch.save({**base, 'scaler_center': np.arange(4.0)}, tmp_path / 'numeric.pt')
    ck = load_checkpoint(tmp_path / 'numeric.pt')
    assert ck['layout'] == 'legacy'
    torch.save({**base, 'names': np.array(['a', object()], dtype=object)}, tmp_path / 'objects.pt')
    with pytest.raises(UnsafeCheckpointError):
        load_checkpoint(tmp_path / 'objects.pt')


# ---------------------------------------------------------------- legacy layouts, one test per spelling

def _legacy_base(m):
    "The seed trainer's layout: model_config/type/params.hidden_dims, top-level input_dim, model_state_dict."
    return {'model_config': {'type': 'feedforward', 'params': {'hidden_dims': [8, 6], 'dropout_rate': 0.1, 'num_classes': 3}},
            'input_dim': 4, 'model_state_dict': m.state_dict(), 'epoch': 7, 'val_loss': 0.91}


def _check_legacy(tmp_path, raw, m, note):
    p = tmp_path / 'legacy.pt'
    torch.save(raw, p)
    model, ck = load_model(p, expected_input_dim=4)
    assert ck['layout'] == 'legacy'
    assert ck['model_config'] == {'type': 'feedforward', 'input_dim': 4, 'hidden_dims': [8, 6], 'dropout_rate': 0.1, 'num_classes': 3}
    assert _same_outputs(model, m)
    assert any(note in n for n in ck['load_notes']), ck['load_notes']
    return ck


def test_legacy_seed_trainer_layout(tmp_path):
    m = _ff()
    ck = _check_legacy(tmp_path, _legacy_base(m), m, "architecture read from legacy 'params'")
    assert ck['epoch'] == 7 and ck['metrics']['val_loss'] == 0.91


def test_legacy_config_key_instead_of_model_config(tmp_path):
    m = _ff()
    raw = _legacy_base(m)
    raw['config'] = raw.pop('model_config')
    _check_legacy(tmp_path, raw, m, "model config read from legacy key 'config'")


def test_legacy_model_type_instead_of_type(tmp_path):
    m = _ff()
    raw = _legacy_base(m)
    raw['model_config']['model_type'] = raw['model_config'].pop('type')
    _check_legacy(tmp_path, raw, m, 'model_type read as type')


def test_legacy_input_size_instead_of_top_level_input_dim(tmp_path):
    m = _ff()
    raw = _legacy_base(m)
    del raw['input_dim']
    raw['model_config']['input_size'] = 4
    _check_legacy(tmp_path, raw, m, 'input_size read as input_dim')


def test_legacy_hidden_sizes_instead_of_params_hidden_dims(tmp_path):
    m = _ff()
    raw = _legacy_base(m)
    raw['model_config'] = {'type': 'feedforward', 'hidden_sizes': [8, 6], 'dropout_rate': 0.1, 'num_classes': 3}
    _check_legacy(tmp_path, raw, m, 'hidden_sizes read as hidden_dims')


def test_legacy_seed_loader_layout_all_old_spellings(tmp_path):
    "The backtest loader's expectation: config/model_type/input_size/hidden_sizes, state_dict."
    m = _ff()
    raw = {'config': {'model_type': 'feedforward', 'input_size': 4, 'hidden_sizes': [8, 6], 'dropout_rate': 0.1, 'num_classes': 3},
           'state_dict': m.state_dict()}
    _check_legacy(tmp_path, raw, m, "legacy key config.input_size read as input_dim")


def test_legacy_missing_type_is_inferred_not_defaulted(tmp_path):
    torch.manual_seed(0)
    m = build_model({'type': 'lstm', 'input_dim': 4, 'hidden_size': 8, 'num_layers': 2, 'num_classes': 3})
    raw = {'config': {'input_size': 4, 'hidden_size': 8, 'num_layers': 2, 'dropout': 0.1, 'num_classes': 3}, 'model_state_dict': m.state_dict()}
    torch.save(raw, tmp_path / 'lstm.pt')
    model, ck = load_model(tmp_path / 'lstm.pt')
    assert ck['model_config']['type'] == 'lstm'
    assert any("inferred 'lstm'" in n for n in ck['load_notes'])
    x = torch.randn(2, 5, 4)
    with torch.no_grad():
        assert torch.equal(model(x), m.eval()(x))


def test_legacy_conflicting_spellings_are_refused(tmp_path):
    m = _ff()
    raw = _legacy_base(m)
    raw['model_config']['params']['hidden_sizes'] = [16]
    torch.save(raw, tmp_path / 'c.pt')
    with pytest.raises(CheckpointFormatError, match="conflicting values for 'hidden_dims'"):
        load_checkpoint(tmp_path / 'c.pt')


def test_legacy_without_any_config_is_a_named_error(tmp_path):
    torch.save({'model_state_dict': _ff().state_dict()}, tmp_path / 'n.pt')
    with pytest.raises(CheckpointFormatError, match="no model configuration found"):
        load_checkpoint(tmp_path / 'n.pt')


# ---------------------------------------------------------------- corruption and mismatches

@pytest.mark.parametrize('frac', [0.0, 0.1, 0.5, 0.9, 0.99])
def test_truncated_file_is_a_named_error(tmp_path, frac):
    p = save_checkpoint(tmp_path / 'good.pt', _ff())
    data = p.read_bytes()
    bad = tmp_path / f'trunc_{frac}.pt'
    bad.write_bytes(data[: int(len(data) * frac)])
    with pytest.raises(CheckpointCorruptError) as e:
        load_checkpoint(bad)
    assert str(bad) in str(e.value)


def test_random_bytes_and_missing_file(tmp_path):
    p = tmp_path / 'noise.pt'
    p.write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(CheckpointCorruptError, match='noise.pt'):
        load_checkpoint(p)
    with pytest.raises(CheckpointNotFoundError, match='absent.pt') as e:
        load_checkpoint(tmp_path / 'absent.pt')
    assert isinstance(e.value, FileNotFoundError)


def test_feature_and_input_mismatches_name_file_and_difference(tmp_path):
    names = ['ret_1', 'vwap_dist', 'vol_z', 'spread']
    p = save_checkpoint(tmp_path / 'm.pt', _ff(), feature_names=names)
    with pytest.raises(CheckpointMismatchError, match=r"m\.pt: the model expects 4 input features but the data has 5"):
        load_checkpoint(p, expected_input_dim=5)
    with pytest.raises(CheckpointMismatchError, match=r"missing from the data \['spread'\]; not in the checkpoint \['obv'\]"):
        load_model(p, expected_features=names[:3] + ['obv'])
    with pytest.raises(CheckpointMismatchError, match="first difference at column 0"):
        load_checkpoint(p, expected_features=names[::-1])
    ck = load_checkpoint(p, expected_features=names, expected_input_dim=4)
    assert ck['feature_names'] == names


def test_weights_that_do_not_fit_the_config(tmp_path):
    m = _ff(hidden_dims=(8, 6))
    ck = make_checkpoint(m)
    ck['model_config']['hidden_dims'] = [9, 6]
    torch.save(ck, tmp_path / 'w.pt')
    with pytest.raises(CheckpointMismatchError, match='weights do not fit a feedforward model'):
        load_model(tmp_path / 'w.pt')


def test_scaler_state_round_trip_through_weights_only_load(tmp_path):
    from scalp_lib.preprocess import RobustFeatureScaler
    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 4)) * [1, 10, 1000, 1e6]
    X[3, 1] = np.inf
    sc = RobustFeatureScaler().fit(X[:400])
    p = save_checkpoint(tmp_path / 's.pt', _ff(), scaler_state=sc.state_dict(), feature_names=list('abcd'))
    ck = load_checkpoint(p)
    sc2 = RobustFeatureScaler.from_state_dict(ck['scaler_state'])
    np.testing.assert_array_equal(sc2.transform(X[400:]), sc.transform(X[400:]))


# ---------------------------------------------------------------- atomic writes under SIGKILL

_WRITER = textwrap.dedent('''
    import sys, torch
    sys.path.insert(0, {root!r})
    from scalp_lib.checkpoint import atomic_torch_save
    i = 0
    while True:
        atomic_torch_save({{'i': i, 'big': torch.full((4_000_000,), float(i))}}, {path!r})
        print(i, flush=True)
        i += 1
''')


@pytest.mark.parametrize('delay_s', [0.0, 0.05, 0.13])
def test_sigkill_during_writes_never_leaves_a_partial_file(tmp_path, delay_s):
    path = tmp_path / 'ck.pt'
    proc = subprocess.Popen([sys.executable, '-c', _WRITER.format(root=str(ROOT), path=str(path))],
                            stdout=subprocess.PIPE, text=True, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    try:
        assert proc.stdout.readline().strip() == '0'  # the first save completed
        time.sleep(delay_s)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None: proc.kill()
    obj = torch.load(path, weights_only=True)
    assert torch.equal(obj['big'], torch.full((4_000_000,), float(obj['i'])))  # one whole write, never a mixture
    assert [p.name for p in tmp_path.iterdir() if p.name != 'ck.pt' and not p.name.endswith('.tmp')] == []


def test_manager_keeps_best_n_and_survives_restart(tmp_path):
    m = _ff()
    mgr = CheckpointManager(tmp_path, keep_best=3)
    losses = [0.9, 0.7, 0.95, 0.6, 0.8, float('nan'), 0.65]
    for e, v in enumerate(losses):
        mgr.save_best(make_checkpoint(m, metrics={'val_loss': v}, epoch=e, step=e))
    assert [e['value'] for e in mgr.entries] == [0.6, 0.65, 0.7]
    assert len(list(tmp_path.glob('epoch*.pt'))) == 3
    mgr2 = CheckpointManager(tmp_path, keep_best=3)
    mgr2.save_best(make_checkpoint(m, metrics={'val_loss': 0.5}, epoch=9, step=9))
    assert [e['value'] for e in mgr2.entries] == [0.5, 0.6, 0.65]
    assert len(list(tmp_path.glob('epoch*.pt'))) == 3
    assert load_checkpoint(mgr2.best_path)['metrics']['val_loss'] == 0.5


# ---------------------------------------------------------------- damaged ranking file (checkpoints.json)

def _ranked_folder(tmp_path):
    mgr = CheckpointManager(tmp_path, keep_best=2)
    for e, v in enumerate([0.9, 0.7, 0.8]):
        mgr.save_best(make_checkpoint(_ff(), metrics={'val_loss': v}, epoch=e, step=e))
    return mgr


@pytest.mark.parametrize('damage', ['cut', 'empty', 'not_a_dict', 'no_best', 'entry_without_value', 'path_outside'])
def test_damaged_ranking_file_is_a_named_error_naming_the_file(tmp_path, damage):
    idx = _ranked_folder(tmp_path).index_path
    text = idx.read_text()
    idx.write_text({'cut': text[: len(text) // 2], 'empty': '', 'not_a_dict': '[]', 'no_best': '{"monitor": "val_loss"}',
                    'entry_without_value': '{"best": [{"file": "epoch0001-step00000001.pt"}]}',
                    'path_outside': '{"best": [{"file": "../victim.pt", "value": 0.1}]}'}[damage])
    with pytest.raises(CheckpointCorruptError) as e:
        CheckpointManager(tmp_path, keep_best=2)
    from scalp_lib.checkpoint import CheckpointIndexError
    assert isinstance(e.value, CheckpointIndexError) and str(idx) in str(e.value) and 'delete it' in str(e.value)


def test_ranking_by_another_metric_is_refused_and_missing_files_are_reported(tmp_path):
    _ranked_folder(tmp_path)
    with pytest.raises(ScalpLibError, match="ranks checkpoints by 'val_loss'"):
        CheckpointManager(tmp_path, keep_best=2, monitor='train_loss')
    (tmp_path / 'epoch0001-step00000001.pt').unlink()   # the best one, deleted by hand
    with pytest.warns(UserWarning, match=r"1 ranked checkpoint\(s\) no longer in the folder"):
        mgr = CheckpointManager(tmp_path, keep_best=2)
    assert [e['value'] for e in mgr.entries] == [0.8] and load_checkpoint(mgr.best_path)['metrics']['val_loss'] == 0.8


def test_damaged_files_say_what_to_do(tmp_path):
    p = save_checkpoint(tmp_path / 'good.pt', _ff())
    (tmp_path / 'cut.pt').write_bytes(p.read_bytes()[:100])
    (tmp_path / 'empty.pt').write_bytes(b'')
    for name in ('cut.pt', 'empty.pt'):
        with pytest.raises(CheckpointCorruptError, match='restore it from a copy, or delete it'):
            load_checkpoint(tmp_path / name)
