"""scalp_lib.models with one head per horizon: logits (batch, n_horizons, num_classes) from a shared body, heads that
are independent, configs and checkpoints that carry the horizons; single-head models unchanged."""
import numpy as np
import pytest
import torch
from torch import nn

from scalp_lib.checkpoint import (CheckpointFormatError, load_checkpoint, load_model, make_checkpoint, save_checkpoint)
from scalp_lib.models import ModelConfigError, build_model, count_parameters, model_config

BASE = {
    'feedforward': {'type': 'feedforward', 'input_dim': 5, 'hidden_dims': [16, 8], 'dropout_rate': 0.0},
    'lstm': {'type': 'lstm', 'input_dim': 5, 'hidden_size': 8, 'num_layers': 2, 'dropout_rate': 0.0},
    'transformer': {'type': 'transformer', 'input_dim': 5, 'd_model': 8, 'num_heads': 2, 'num_layers': 1, 'dropout_rate': 0.0},
}
H = [5, 10, 30]


def _build(kind, seed=0, **kw):
    torch.manual_seed(seed)
    return build_model({**BASE[kind], **kw}).eval()


@pytest.mark.parametrize('kind', list(BASE))
def test_single_head_models_are_unchanged(kind):
    "No 'horizons' key, (batch, C) logits, the same parameters and the same initial weights as an explicit horizons=None."
    m, m_none = _build(kind), _build(kind, horizons=None)
    assert 'horizons' not in model_config(m) and 'horizons' not in model_config(m_none)
    x = torch.randn(4, 7, 5)
    assert m(x).shape == (4, 3)
    assert [(k, tuple(v.shape)) for k, v in m.state_dict().items()] == [(k, tuple(v.shape)) for k, v in m_none.state_dict().items()]
    for (k, a), (_, b) in zip(m.state_dict().items(), m_none.state_dict().items()): assert torch.equal(a, b), k
    assert 'horizons' not in make_checkpoint(m)


@pytest.mark.parametrize('kind', list(BASE))
def test_multi_head_shape_sharing_and_independence(kind):
    single, multi = _build(kind), _build(kind, horizons=H)
    x = torch.randn(6, 7, 5)
    out = multi(x)
    assert isinstance(out, torch.Tensor) and out.shape == (6, len(H), 3)
    assert multi(x[:, -1]).shape == (6, len(H), 3)                           # a flat row works as before
    d = multi.head.in_features
    assert count_parameters(multi) - count_parameters(single) == (len(H) - 1) * (3 * d + 3)   # only the heads grow
    body_single = {k: v for k, v in single.state_dict().items() if not k.startswith('head.')}
    body_multi = {k: v for k, v in multi.state_dict().items() if not k.startswith('head.')}
    assert list(body_single) == list(body_multi)                             # one shared body, same layout
    for j in range(len(H)):                                                  # head j's rows drive horizon j only
        m2 = _build(kind, horizons=H)
        m2.load_state_dict(multi.state_dict())
        with torch.no_grad():
            m2.head.weight[3 * j:3 * j + 3] = torch.randn(3, d); m2.head.bias[3 * j:3 * j + 3] = 1.0
        new = m2(x).detach()
        others = [i for i in range(len(H)) if i != j]
        assert torch.equal(new[:, others], out[:, others].detach())
        assert not torch.equal(new[:, j], out[:, j].detach())
    # horizon j's logits are exactly the body's last hidden vector through rows j*C..(j+1)*C-1 of the head
    hidden = {}
    def keep_input(mod, inp, out): hidden['z'] = inp[0]          # returns None: the output is left alone
    multi.head.register_forward_hook(keep_input)
    out2 = multi(x)
    z = hidden['z']
    for j in range(len(H)):
        ref = z @ multi.head.weight[3 * j:3 * j + 3].T + multi.head.bias[3 * j:3 * j + 3]
        torch.testing.assert_close(out2[:, j], ref)


@pytest.mark.parametrize('kind', list(BASE))
def test_multi_head_config_and_checkpoint_round_trip(kind, tmp_path):
    m = _build(kind, horizons=H)
    cfg = model_config(m)
    assert cfg['horizons'] == H
    p = save_checkpoint(tmp_path / 'm.pt', m)
    assert torch.load(p, weights_only=True)['horizons'] == H
    m2, ck = load_model(p)
    assert ck['horizons'] == H and model_config(m2) == cfg
    x = torch.randn(3, 7, 5)
    assert torch.equal(m2(x), m(x))


def test_old_checkpoints_load_with_one_head(tmp_path):
    m = _build('lstm')
    raw = make_checkpoint(m)
    raw.pop('horizons', None)
    torch.save(raw, tmp_path / 'old.pt')
    ck = load_checkpoint(tmp_path / 'old.pt')
    assert ck['horizons'] is None
    legacy = {'config': {'model_type': 'lstm', 'input_size': 5, 'hidden_size': 8, 'num_layers': 2}, 'model_state_dict': m.state_dict()}
    torch.save(legacy, tmp_path / 'legacy.pt')
    m3, ck3 = load_model(tmp_path / 'legacy.pt')
    assert ck3['horizons'] is None and m3(torch.randn(2, 4, 5)).shape == (2, 3)


def test_disagreeing_horizon_records_are_refused(tmp_path):
    raw = make_checkpoint(_build('feedforward', horizons=H))
    torch.save({**raw, 'horizons': [5, 10]}, tmp_path / 'bad.pt')
    with pytest.raises(CheckpointFormatError, match=r'horizons \[5, 10\] recorded'):
        load_checkpoint(tmp_path / 'bad.pt')
    torch.save({**make_checkpoint(_build('feedforward')), 'horizons': [5]}, tmp_path / 'bad2.pt')
    with pytest.raises(CheckpointFormatError, match='one head'):
        load_checkpoint(tmp_path / 'bad2.pt')


@pytest.mark.parametrize('bad, msg', [(10, 'list of horizons'), ([5, 5], 'distinct'), ([], 'non-empty'), ([5, -1], 'horizons[]')])
def test_bad_horizons_are_named(bad, msg):
    with pytest.raises(ModelConfigError, match=msg.replace('[', r'\[').replace(']', r'\]')):
        build_model({**BASE['feedforward'], 'horizons': bad})
