"""scalp_lib.train: resume after SIGKILL to identical weights, batch sizes, skipped-step semantics, guards, GPU paths."""
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings, strategies as st, HealthCheck

from scalp_lib.models import build_model
from scalp_lib.train import (NonFiniteDataError, TrainDataError, TrainingDivergedError, TrainerCallback, evaluate_classifier,
                             fit_baselines, predict_proba, train_model)

ROOT = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------- resume after a real SIGKILL

_CHILD = textwrap.dedent('''
    import sys, time, os
    sys.path.insert(0, {root!r})
    import numpy as np, torch
    torch.set_num_threads(1)
    from scalp_lib.models import build_model
    from scalp_lib.train import train_model
    mode, ckdir, out, progress_file = sys.argv[1:5]
    rng = np.random.default_rng(0)
    X = rng.normal(size=(1200, 5)).astype(np.float32)
    y = np.digitize(X[:, 0] - X[:, 1] + 0.5 * rng.normal(size=1200), [-0.6, 0.6])
    torch.manual_seed(0)
    model = build_model({{'type': 'feedforward', 'input_dim': 5, 'hidden_dims': [32, 16], 'dropout_rate': 0.2, 'num_classes': 3}})
    def report(trainer, info):
        with open(progress_file, 'w') as f: f.write(str(info.step))
        if mode == 'slow': time.sleep(0.02)
    res = train_model(model, (X[:900], y[:900]), (X[900:], y[900:]), epochs=4, batch_size=64, lr=2e-3,
                      checkpoint_dir=ckdir, checkpoint_every_steps=5, resume=(mode == 'resume'),
                      callbacks=[report], progress=False, seed=7)
    torch.save({{'state': res.model.state_dict(), 'history': res.history.to_dict('list'),
                'resumed_from': res.resumed_from, 'best_epoch': res.best_epoch}}, out)
''')


def _run_child(mode, ckdir, out, progress, wait=True):
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONUNBUFFERED': '1'}
    args = [sys.executable, '-c', _CHILD.format(root=str(ROOT)), mode, str(ckdir), str(out), str(progress)]
    if wait:
        subprocess.run(args, check=True, env=env, timeout=300)
        return None
    return subprocess.Popen(args, env=env)


@pytest.fixture(scope='module')
def uninterrupted_run(tmp_path_factory):
    d = tmp_path_factory.mktemp('full')
    _run_child('full', d / 'ck', d / 'full.pt', d / 'full.progress')
    return torch.load(d / 'full.pt', weights_only=True)


@pytest.mark.parametrize('kill_after_step', [8, 23])
def test_sigkill_mid_epoch_then_resume_gives_identical_weights(tmp_path, kill_after_step, uninterrupted_run):
    "15 steps per epoch, checkpoints every 5 steps: kill somewhere past step k (mid-epoch, maybe mid-save), resume."
    progress = tmp_path / 'kill.progress'
    proc = _run_child('slow', tmp_path / 'kill', tmp_path / 'kill.pt', progress, wait=False)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try: step = int(progress.read_text() or 0)
            except (FileNotFoundError, ValueError): step = 0
            if step >= kill_after_step: break
            if proc.poll() is not None: pytest.fail('the run ended before it could be killed')
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None: proc.kill()
    assert not (tmp_path / 'kill.pt').exists(), 'the killed run must not have finished'
    killed_at = int(progress.read_text())
    assert killed_at % 15 != 0, 'killed mid-epoch'
    _run_child('resume', tmp_path / 'kill', tmp_path / 'resumed.pt', tmp_path / 'resume.progress')
    full = uninterrupted_run
    resumed = torch.load(tmp_path / 'resumed.pt', weights_only=True)
    assert resumed['resumed_from'] is not None and full['resumed_from'] is None
    for k, v in full['state'].items():
        assert torch.equal(v, resumed['state'][k]), f'{k} differs after resume (killed at step {killed_at})'
    assert full['history'] == resumed['history']
    assert full['best_epoch'] == resumed['best_epoch']


# ---------------------------------------------------------------- batches are never empty

def _tiny(input_dim=3, num_classes=3, seed=0):
    torch.manual_seed(seed)
    return build_model({'type': 'feedforward', 'input_dim': input_dim, 'hidden_dims': [4], 'num_classes': num_classes})


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 60), bs=st.integers(1, 70), last_batch=st.sampled_from(['merge', 'keep', 'drop']))
def test_every_batch_is_non_empty_and_every_sample_is_seen(n, bs, last_batch):
    rng = np.random.default_rng(n)
    X, y = rng.normal(size=(n, 3)).astype(np.float32), rng.integers(0, 3, n)
    res = train_model(_tiny(), (X, y), epochs=2, batch_size=bs, last_batch=last_batch, progress=False, max_bad_steps=0)
    h = res.history
    largest = bs + (bs + 1) // 2 - 1 if last_batch == 'merge' else bs   # a merged tail is shorter than half a batch
    assert (h.batch_size >= 1).all() and (h.batch_size <= largest).all()
    if last_batch != 'keep' and n >= bs: assert (2 * h.batch_size >= bs).all()   # never a short, noisy batch
    per_epoch = h.groupby('epoch').batch_size.sum()
    expected = (n // bs) * bs if (last_batch == 'drop' and n >= bs) else n
    assert per_epoch.tolist() == [expected, expected]


def _boundary_ratio(res):
    "Gradient norm at each epoch's last step over the median gradient norm of the other steps (after the first 10)."
    h = res.history
    last = h.step.isin(h.groupby('epoch').step.max())
    return h.grad_norm[last] / h.grad_norm[~last & (h.step > 10)].median()


def test_no_gradient_norm_spike_at_epoch_boundaries():
    "The spike at every epoch's last step came from the short tail batch (noise ~ sqrt(batch/tail)); merged, it is gone."
    rng = np.random.default_rng(0)
    n, bs = 20 * 64 + 3, 64                      # a tail of 3 samples after 20 full batches
    X = rng.normal(size=(n, 6)).astype(np.float32)
    y = np.digitize(X[:, 0] + rng.normal(size=n), [-0.5, 0.5])
    kw = dict(epochs=4, batch_size=bs, lr=3e-3, progress=False, seed=0, device='cpu')
    keep = train_model(_tiny(6), (X, y), last_batch='keep', **kw)
    merged = train_model(_tiny(6), (X, y), **kw)     # the default: settings.ini [train] last_batch = merge
    assert set(keep.history.groupby('epoch').batch_size.last()) == {3}
    assert set(merged.history.groupby('epoch').batch_size.last()) == {67}
    assert _boundary_ratio(keep).median() > 3.0         # the cause: a 3-sample batch's gradient is several times noisier
    assert _boundary_ratio(merged).max() < 1.8          # merged into the previous batch, the boundary steps are ordinary


# ---------------------------------------------------------------- skipped steps leave weights and moments untouched

class _Snap(TrainerCallback):
    def __init__(self): self.before, self.after = [], []
    def _state(self, trainer):
        opt = trainer.optimizer
        moments = [opt.state[p]['exp_avg'].clone() if p in opt.state and 'exp_avg' in opt.state[p] else None for p in trainer._params]
        return [p.detach().clone() for p in trainer._params], moments
    def on_after_backward(self, trainer, info): self.before.append(self._state(trainer))
    def on_step(self, trainer, info): self.after.append((bool(info.skipped), self._state(trainer)))


@pytest.mark.parametrize('fused', [True, False])
def test_a_skipped_step_changes_nothing(monkeypatch, fused):
    if not fused:  # the host-check fallback used where no fused AdamW exists
        orig = torch.optim.AdamW
        def no_fused(*a, fused=None, **k):
            if fused: raise RuntimeError('no fused kernel here')
            return orig(*a, **k)
        monkeypatch.setattr(torch.optim, 'AdamW', no_fused)
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(64, 3)).astype(np.float32), rng.integers(0, 3, 64)
    X[rng.integers(0, 64, 3), 0] = 3e38  # overflows in the first linear layer
    snap = _Snap()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        res = train_model(_tiny(), (X, y), epochs=3, batch_size=8, callbacks=[snap], progress=False, weight_decay=0.1)
    assert res.params['fused_optimizer'] is fused
    skipped = [i for i, (s, _) in enumerate(snap.after) if s]
    assert 0 < len(skipped) < len(snap.after) and res.n_skipped_steps == len(skipped)
    for i in skipped:
        (p0, m0), (p1, m1) = snap.before[i], snap.after[i][1]
        assert all(torch.equal(a, b) for a, b in zip(p0, p1)), 'weights changed on a skipped step'
        assert all((a is None and (b is None or not b.any())) or torch.equal(a, b) for a, b in zip(m0, m1)), 'moments changed'
    assert all(torch.isfinite(p).all() for p in res.model.parameters())


def test_divergence_error_names_batch_and_feature_and_keeps_partial_result():
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(500, 4)).astype(np.float32), columns=['ret_1', 'vwap_dist', 'vpoc_price', 'volume'])
    X['vpoc_price'] = 4800.0 + rng.normal(size=500)
    X['volume'] = 1e38
    y = rng.integers(0, 3, 500)
    with warnings.catch_warnings(), pytest.raises(TrainingDivergedError) as e:
        warnings.simplefilter('ignore')
        train_model(_tiny(4), (X, y), epochs=2, batch_size=50, max_bad_steps=4, progress=False)
    d = e.value.diagnosis
    assert (d['epoch'], d['batch'], d['n_consecutive']) == (0, 0, 4)
    assert d['feature_extremes'].index[0] == 'volume'
    assert 'epoch 0, batch 0 (50 samples)' in str(e.value) and 'volume (max |x| 1e+38)' in str(e.value)
    assert e.value.result.stop_reason == 'diverged' and len(e.value.result.history) == 4


def test_string_columns_and_nan_inputs_fail_before_training():
    X = pd.DataFrame({'a': [1.0, 2.0, 3.0], 'b': ['x', 'y', 'z']})
    with pytest.raises(TrainDataError, match=r"non-numeric feature column\(s\) \['b'\]"):
        train_model(_tiny(2), (X, [0, 1, 2]), epochs=1, progress=False)
    X = pd.DataFrame({'a': [1.0, np.nan, 3.0], 'b': [1.0, 2.0, -np.inf]})
    with pytest.raises(NonFiniteDataError, match=r"a \(1\), b \(1\)"):
        train_model(_tiny(2), (X, [0, 1, 2]), epochs=1, progress=False)


def test_sequence_dataset_and_batcher_guards():
    from scalp_lib.sequences import SequenceDataset
    X = np.random.default_rng(0).normal(size=(100, 3)).astype(np.float32)
    X[50, 2] = np.nan
    ds = SequenceDataset(X, np.zeros(100, dtype=np.int64), 5)
    torch.manual_seed(0)
    m = build_model({'type': 'lstm', 'input_dim': 3, 'hidden_size': 4, 'num_layers': 1, 'num_classes': 3})
    with pytest.raises(NonFiniteDataError, match=r'f2 \(1\)'):
        train_model(m, ds, epochs=1, progress=False)


def test_baselines_and_deep_model_share_metrics():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, 5)).astype(np.float32)
    y = np.digitize(X[:, 0] + 0.3 * rng.normal(size=2000), [-0.4, 0.4])
    res = train_model(_tiny(5), (X[:1200], y[:1200]), (X[1200:1600], y[1200:1600]), epochs=5, batch_size=64, lr=1e-2, progress=False)
    deep = evaluate_classifier(y[1600:], predict_proba(res.model, X[1600:]))
    base = fit_baselines(X[:1200], y[:1200], X[1600:], y[1600:])
    assert set(deep) <= set(base.columns)
    assert deep['accuracy'] > base.loc['majority_class', 'accuracy'] + 0.2


# ---------------------------------------------------------------- multi-horizon models

def _mh_data(n=1500, seed=0):
    "Two horizons with different drivers: horizon 5 from x0, horizon 30 from x2."
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4)).astype(np.float32)
    y5 = np.digitize(X[:, 0] + 0.5 * rng.normal(size=n), [-0.5, 0.5])
    y30 = np.digitize(X[:, 2] + 0.5 * rng.normal(size=n), [-0.5, 0.5])
    return X, np.stack([y5, y30], axis=1)


def _mh_model(horizons=(5, 30), seed=0, kind='feedforward'):
    torch.manual_seed(seed)
    cfg = {'type': 'feedforward', 'input_dim': 4, 'hidden_dims': [16], 'num_classes': 3} if kind == 'feedforward' else \
          {'type': 'lstm', 'input_dim': 4, 'hidden_size': 8, 'num_layers': 1, 'num_classes': 3}
    return build_model({**cfg, **({'horizons': list(horizons)} if horizons else {})})


def test_multi_horizon_loss_is_the_weighted_sum_of_per_horizon_losses():
    "Every step's loss equals sum_h w_h * cross_entropy_h (class-weighted mean per horizon), recomputed by hand."
    from scalp_lib.train import balanced_class_weights
    import torch.nn.functional as F
    X, Y = _mh_data(400)
    seen = []
    def grab(trainer, info): seen.append((info.x.clone(), info.y.clone(), info.logits.clone(), float(info.loss)))
    res = train_model(_mh_model(), (X, Y), epochs=1, batch_size=100, horizon_weights=[3, 1], callbacks=[grab], progress=False)
    W = [torch.tensor(balanced_class_weights(Y[:, j], 3), dtype=torch.float32) for j in range(2)]
    np.testing.assert_allclose(res.class_weights, [balanced_class_weights(Y[:, j], 3) for j in range(2)], rtol=1e-12)
    for x, y, logits, loss in seen:
        ref = 0.75 * F.cross_entropy(logits[:, 0], y[:, 0], weight=W[0]) + 0.25 * F.cross_entropy(logits[:, 1], y[:, 1], weight=W[1])
        assert loss == pytest.approx(float(ref), rel=1e-5)
    assert res.params['horizon_weights'] == [0.75, 0.25]


def test_per_horizon_validation_metrics_and_weights():
    X, Y = _mh_data()
    tr, va = (X[:1000], Y[:1000]), (X[1000:], Y[1000:])
    res = train_model(_mh_model(), tr, va, epochs=4, batch_size=100, lr=5e-3, progress=False, seed=1)
    e = res.epochs
    assert {'val_loss_h5', 'val_accuracy_h5', 'val_balanced_accuracy_h30'} <= set(e.columns)
    np.testing.assert_allclose(e.val_loss, 0.5 * (e.val_loss_h5 + e.val_loss_h30), rtol=1e-12)
    np.testing.assert_allclose(e.val_accuracy, 0.5 * (e.val_accuracy_h5 + e.val_accuracy_h30), rtol=1e-12)
    # the recorded per-horizon metrics are those of the model's own predictions (best epoch restored)
    from scalp_lib.train import horizon_metrics
    hm = horizon_metrics(va[1], predict_proba(res.model, va[0]), [5, 30])
    b = e.loc[res.best_epoch]
    assert hm.loc[5, 'accuracy'] == pytest.approx(b.val_accuracy_h5) and hm.loc[30, 'accuracy'] == pytest.approx(b.val_accuracy_h30)
    assert (hm['accuracy'] > 0.5).all()      # both horizons learned (majority class ~0.38)
    # all weight on horizon 5: the monitored loss is horizon 5's and horizon 30 is left untrained
    res5 = train_model(_mh_model(), tr, va, epochs=4, batch_size=100, lr=5e-3, progress=False, seed=1, horizon_weights={5: 1, 30: 0})
    np.testing.assert_allclose(res5.epochs.val_loss, res5.epochs.val_loss_h5, rtol=1e-12)
    hm5 = horizon_metrics(va[1], predict_proba(res5.model, va[0]), [5, 30])
    assert hm5.loc[30, 'accuracy'] < hm.loc[30, 'accuracy'] - 0.1


def test_one_horizon_model_trains_exactly_like_the_single_head_model():
    X, Y = _mh_data(600)
    a = train_model(_mh_model(horizons=None), (X[:400], Y[:400, 0]), (X[400:], Y[400:, 0]), epochs=2, batch_size=64, progress=False)
    b = train_model(_mh_model(horizons=[5]), (X[:400], Y[:400, :1]), (X[400:], Y[400:, :1]), epochs=2, batch_size=64, progress=False)
    np.testing.assert_allclose(b.history.loss, a.history.loss, rtol=1e-5)
    np.testing.assert_allclose(b.epochs.val_loss, a.epochs.val_loss, rtol=1e-5)
    assert 'val_loss_h5' not in a.epochs.columns and 'horizons' not in a.params


def test_multi_horizon_checkpoints_and_sequence_training(tmp_path):
    from scalp_lib.checkpoint import load_model
    from scalp_lib.sequences import WindowBatcher, valid_window_starts
    X, Y = _mh_data(800)
    Yf = Y.astype(np.float64); Yf[-3:, 1] = np.nan                           # the longest horizon has no label at the end
    starts = valid_window_starts(600, 10, targets=Yf[:600])
    wb_tr = WindowBatcher(X[:600], Yf[:600], 10, valid_starts=starts, batch_size=64)
    wb_va = WindowBatcher(X[600:], Yf[600:], 10, valid_starts=valid_window_starts(200, 10, targets=Yf[600:]), batch_size=64, shuffle=False)
    res = train_model(_mh_model(kind='lstm'), wb_tr, wb_va, epochs=2, batch_size=64, progress=False, checkpoint_dir=tmp_path)
    m2, ck = load_model(res.best_checkpoint)
    assert ck['horizons'] == [5, 30] and ck['metrics']['val_loss_h30'] == pytest.approx(res.epochs.loc[res.best_epoch, 'val_loss_h30'])
    p1, p2 = predict_proba(res.model, wb_va), predict_proba(m2, wb_va)
    assert p1.shape == (len(wb_va.dataset), 2, 3)
    np.testing.assert_allclose(p1, p2, atol=1e-6)


def test_multi_horizon_guards():
    X, Y = _mh_data(200)
    with pytest.raises(TrainDataError, match='need a multi-horizon model'):
        train_model(_mh_model(horizons=None), (X, Y), epochs=1, progress=False)
    with pytest.raises(TrainDataError, match=r'needs targets of shape \(n, 3\)'):
        train_model(_mh_model(horizons=[5, 10, 30]), (X, Y), epochs=1, progress=False)
    with pytest.raises(TrainDataError, match="horizon_weights keys must be the model's horizons"):
        train_model(_mh_model(), (X, Y), epochs=1, progress=False, horizon_weights={5: 1, 10: 1})
    with pytest.raises(NonFiniteDataError, match='first at sample 7'):
        Yn = Y.astype(float); Yn[7, 1] = np.nan
        train_model(_mh_model(), (X, Yn), epochs=1, progress=False)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 4), st.integers(0, 2**31 - 1), st.floats(0.5, 0.9))
def test_agree_goes_long_only_when_every_horizon_does(H, seed, thr):
    from scalp_lib.backtest import signal_from_proba
    from scalp_lib.train import combine_horizons
    rng = np.random.default_rng(seed)
    P = rng.dirichlet([0.6, 0.6, 0.6], size=(50, H))
    agree = combine_horizons(P, combine='agree')
    np.testing.assert_allclose(agree.sum(1), 1.0, atol=1e-12)
    assert (agree >= -1e-12).all()
    sig = signal_from_proba(agree, entry_threshold=thr, hold=False)
    np.testing.assert_array_equal(sig == 1, (P[:, :, 2] > thr).all(axis=1))
    np.testing.assert_array_equal(sig == -1, (P[:, :, 0] > thr).all(axis=1))
    np.testing.assert_allclose(combine_horizons(P, list(range(5, 5 + H)), horizon=5), P[:, 0])


# ---------------------------------------------------------------- the step as a recorded graph, run on the CPU

class _EagerRecorder:
    "Stands in for torch.cuda.graph on the CPU: 'capture' keeps the step's body, 'replay' runs it again into the static output."
    def capture(self, body):
        self.body, self.out = body, torch.full((4,), float('nan'))
        return self.out
    def replay(self): self.out.copy_(self.body())


class _FailingRecorder:
    def capture(self, body): raise RuntimeError('operation not permitted when stream is capturing')


def _graph_case(kind):
    "(model, train data, val data, trainer kwargs) for one kind of training run."
    from scalp_lib.sequences import SequenceDataset, WindowBatcher
    rng = np.random.default_rng(3)
    X = rng.normal(size=(700, 4)).astype(np.float32)
    y = np.digitize(X[:, 0] - X[:, 1] + 0.5 * rng.normal(size=700), [-0.5, 0.5])
    torch.manual_seed(0)
    ff = lambda **k: build_model({'type': 'feedforward', 'input_dim': 4, 'hidden_dims': [16], 'dropout_rate': 0.2, **k})
    lstm = lambda: build_model({'type': 'lstm', 'input_dim': 4, 'hidden_size': 8, 'num_layers': 2, 'dropout_rate': 0.2, 'num_classes': 3})
    if kind == 'tensors, class weights, overflowing rows':
        Xo = X.copy(); Xo[[30, 300, 420], 1] = 3e38   # steps holding these rows are skipped
        return ff(num_classes=3), (Xo[:500], y[:500]), (X[500:], y[500:]), {'weight_decay': 0.1}
    if kind == 'window batcher, device gather':
        return lstm(), WindowBatcher(X[:500], y[:500], 8, gather='device'), WindowBatcher(X[500:], y[500:], 8, gather='device'), {}
    if kind == 'sequence dataset, host gather':
        return lstm(), SequenceDataset(X[:500], y[:500], 8), SequenceDataset(X[500:], y[500:], 8), {}
    if kind == 'regression':
        yr = (X[:, 0] - X[:, 1]).astype(np.float32)
        return ff(num_classes=1), (X[:500], yr[:500]), (X[500:], yr[500:]), {'loss': 'huber'}
    Y = np.stack([y, np.roll(y, -3)], axis=1)  # two horizons
    return ff(num_classes=3, horizons=[1, 3]), (X[:500], Y[:500]), (X[500:], Y[500:]), {}


@pytest.mark.parametrize('kind', ['tensors, class weights, overflowing rows', 'window batcher, device gather',
                                  'sequence dataset, host gather', 'regression', 'two horizons'])
def test_graph_replays_give_exactly_the_eager_steps(monkeypatch, kind):
    "The recorded-step path (static buffers, device lr, warm-up, short last batch eager) equals the eager trainer bit for bit."
    import copy
    import scalp_lib.train as T
    model, tr, va, kw = _graph_case(kind)
    kw = dict(epochs=3, batch_size=64, progress=False, device='cpu', **kw)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # the pre-training scan warns about the overflowing rows
        eager = train_model(copy.deepcopy(model), tr, va, **kw)
        monkeypatch.setitem(T._GRAPH_RECORDERS, 'cpu', _EagerRecorder)
        trainer = T.Trainer(copy.deepcopy(model), tr, va, **kw)
        graphed = trainer.fit()
    assert eager.params['cuda_graph_steps'] == 0 and "device 'cpu'" in eager.params['cuda_graphs_off']
    full = int((graphed.history.batch_size == 64).sum())   # the short last batch of each epoch and the warm-up run eagerly
    assert graphed.params['cuda_graph_steps'] == full - T._StepGraph.warmup_steps and graphed.params['cuda_graphs_off'] is None
    assert full < len(graphed.history)
    pd.testing.assert_frame_equal(graphed.history, eager.history)
    pd.testing.assert_frame_equal(graphed.epochs.drop(columns='seconds'), eager.epochs.drop(columns='seconds'))
    for (k, a), b in zip(eager.model.state_dict().items(), graphed.model.state_dict().values()): assert torch.equal(a, b), k
    if kind.startswith('tensors'): assert 0 < graphed.n_skipped_steps == eager.n_skipped_steps
    # the optimiser's groups hold plain floats again (checkpoints, the scheduler)
    assert all(type(g['lr']) is float and g['capturable'] is False for g in trainer.optimizer.param_groups)


def test_which_runs_replay_a_graph(monkeypatch):
    import scalp_lib.train as T
    from scalp_lib.train import Trainer
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(300, 3)).astype(np.float32), rng.integers(0, 3, 300)
    kw = dict(epochs=1, batch_size=32, progress=False, device='cpu', last_batch='keep')
    assert Trainer(_tiny(), (X, y), **kw).fit().params['cuda_graphs_off'] == "device 'cpu' (CUDA only)"
    monkeypatch.setitem(T._GRAPH_RECORDERS, 'cpu', _EagerRecorder)
    # 300 = 9 x 32 + 12: 'keep' gives 9 full steps and a short one; 3 eager warm-up steps, 6 replayed
    assert Trainer(_tiny(), (X, y), **kw).fit().params['cuda_graph_steps'] == 9 - 3
    # 'merge' (the default): the 12-sample tail joins the 9th batch (44 samples), which is not full-size: 8 - 3 replayed
    merged = Trainer(_tiny(), (X, y), **{**kw, 'last_batch': 'merge'}).fit()
    assert merged.params['steps_per_epoch'] == 9 and merged.params['cuda_graph_steps'] == 8 - 3
    assert Trainer(_tiny(), (X, y), cuda_graphs=False, **kw).fit().params['cuda_graphs_off'] == 'cuda_graphs=False'
    class EpochEnd(TrainerCallback):
        def on_epoch_end(self, trainer, row): pass
    assert Trainer(_tiny(), (X, y), callbacks=[EpochEnd()], **kw).fit().params['cuda_graph_steps'] == 6  # no per-step hook
    res = Trainer(_tiny(), (X, y), callbacks=[_Snap(), lambda tr, info: None], **kw).fit()
    assert res.params['cuda_graph_steps'] == 0 and res.params['cuda_graphs_off'] == "per-step callbacks ['_Snap', '_FunctionCallback']"


def test_a_failed_recording_warns_and_trains_eagerly(monkeypatch):
    import scalp_lib.train as T
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(300, 3)).astype(np.float32), rng.integers(0, 3, 300)
    kw = dict(epochs=2, batch_size=32, progress=False, device='cpu')
    eager = train_model(_tiny(), (X, y), **kw)
    monkeypatch.setitem(T._GRAPH_RECORDERS, 'cpu', _FailingRecorder)
    with pytest.warns(RuntimeWarning, match='recording the training step as a CUDA graph failed, training continues eagerly'):
        res = train_model(_tiny(), (X, y), **kw)
    assert res.params['cuda_graph_steps'] == 0 and 'not permitted when stream is capturing' in res.params['cuda_graphs_off']
    pd.testing.assert_frame_equal(res.history, eager.history)


# ---------------------------------------------------------------- GPU (skipped without CUDA; CI has none)

gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')


@pytest.mark.gpu
@gpu
def test_gpu_window_batcher_training_and_bounded_eval_memory():
    from scalp_lib.sequences import WindowBatcher
    rng = np.random.default_rng(0)
    n, F, L = 300_000, 56, 60
    X = rng.normal(size=(n, F)).astype(np.float32)
    y = rng.integers(0, 3, n)
    torch.manual_seed(0)
    m = build_model({'type': 'lstm', 'input_dim': F, 'hidden_size': 128, 'num_layers': 2, 'num_classes': 3})
    wb = WindowBatcher(X[:200_000], y[:200_000], L, device='cuda')
    wv = WindowBatcher(X[200_000:], y[200_000:], L, device='cuda')
    res = train_model(m, wb, wv, epochs=1, batch_size=4096, progress=False)
    assert res.device.startswith('cuda') and res.params['bf16'] and res.n_skipped_steps == 0
    assert res.params['cuda_graphs_off'] is None and res.params['cuda_graph_steps'] == 200_000 // 4096 - 3
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    p = predict_proba(res.model, wv)  # settings' eval_batch_size
    assert p.shape == (len(wv.dataset), 3)
    assert torch.cuda.max_memory_allocated() - base < 4 * 2**30


@pytest.mark.gpu
@gpu
def test_gpu_resume_runs():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(5000, 8)).astype(np.float32), rng.integers(0, 3, 5000)
    torch.manual_seed(0)
    m = build_model({'type': 'transformer', 'input_dim': 8, 'd_model': 32, 'num_heads': 4, 'num_layers': 1, 'num_classes': 3})
    res = train_model(m, (X, y), (X[:500], y[:500]), epochs=2, batch_size=256, device='cuda', progress=False)
    assert res.n_steps == 2 * math.ceil(5000 / 256) and math.isfinite(res.best_val_loss)


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize('source', ['window batcher', 'sequence dataset'])
def test_gpu_graph_steps_equal_the_eager_steps(source):
    """On CUDA the replayed graph computes the eager step. With a learning rate exact in float32 (constant 2**-10) the
    two runs agree to float rounding; under the warm-up/cosine schedule the graph reads each lr as float32 (the eager
    fused kernel takes it as float64), and the losses stay within the stated 1e-3 relative tolerance."""
    from scalp_lib.sequences import SequenceDataset, WindowBatcher
    rng = np.random.default_rng(0)
    n, F, L = 24_000, 16, 30
    X = rng.normal(size=(n, F)).astype(np.float32)
    y = np.digitize(X[:, 0] + 0.5 * np.roll(X[:, 1], 3), [-0.5, 0.5])
    cut = 20_000
    if source == 'window batcher': tr, va = WindowBatcher(X[:cut], y[:cut], L, device='cuda'), WindowBatcher(X[cut:], y[cut:], L, device='cuda')
    else: tr, va = SequenceDataset(X[:cut], y[:cut], L), SequenceDataset(X[cut:], y[cut:], L)
    def run(graphs, **kw):
        torch.manual_seed(0)
        m = build_model({'type': 'lstm', 'input_dim': F, 'hidden_size': 64, 'num_layers': 2, 'dropout_rate': 0.1, 'num_classes': 3})
        return train_model(m, tr, va, epochs=3, batch_size=2048, device='cuda', progress=False, seed=0, cuda_graphs=graphs, **kw)
    for what, kw, rtol in (('constant lr 2**-10', dict(lr=2**-10, warmup_frac=0.0, min_lr_frac=1.0), 1e-5),
                           ('warm-up + cosine', {}, 1e-3)):
        e, g = run(False, **kw), run(True, **kw)
        dl = np.abs(g.history.loss / e.history.loss - 1).max()
        dg = np.abs(g.history.grad_norm / e.history.grad_norm - 1).max()
        dw = max(float((a - b).abs().max()) for a, b in zip(e.model.state_dict().values(), g.model.state_dict().values()))
        print(f"\n{source}, {what}: max relative loss diff {dl:.2e}, grad norm {dg:.2e}, max |weight diff| {dw:.2e}, "
              f"val loss {e.epochs.val_loss.tolist()} vs {g.epochs.val_loss.tolist()}, "
              f"identical histories: {g.history.equals(e.history)}")
        assert e.params['cuda_graph_steps'] == 0 and g.params['cuda_graph_steps'] == 3 * ((cut - L) // 2048) - 3
        assert (g.history.skipped == e.history.skipped).all() and not g.history.skipped.any()
        np.testing.assert_allclose(g.history.loss, e.history.loss, rtol=rtol)
        np.testing.assert_allclose(g.epochs.val_loss, e.epochs.val_loss, rtol=rtol)


_SYNCING_CHILD = textwrap.dedent('''
    import sys, warnings
    sys.path.insert(0, {root!r})
    import numpy as np, torch
    from scalp_lib.models import FeedForwardNet
    from scalp_lib.train import train_model
    class Syncing(FeedForwardNet):
        def forward(self, x):
            if not bool(torch.isfinite(x).all()): raise ValueError('non-finite input')  # a host read: cannot be recorded
            return super().forward(x)
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(4000, 6)).astype(np.float32), rng.integers(0, 3, 4000)
    def model():
        torch.manual_seed(0)
        return Syncing(6, [32], dropout_rate=0.0, num_classes=3)
    ref = train_model(model(), (X, y), epochs=2, batch_size=256, device='cuda', progress=False, cuda_graphs=False)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        res = train_model(model(), (X, y), epochs=2, batch_size=256, device='cuda', progress=False)
    msgs = [str(x.message) for x in w if 'CUDA graph failed' in str(x.message)]
    assert len(msgs) == 1, [str(x.message) for x in w]
    assert res.params['cuda_graph_steps'] == 0 and res.params['cuda_graphs_off'], res.params
    assert len(res.history) == len(ref.history) and np.isfinite(res.history.loss).all()
    np.testing.assert_allclose(res.history.loss, ref.history.loss, rtol=1e-4)
    print('fallback ok:', msgs[0][:160], '| max relative loss diff', float(np.abs(res.history.loss / ref.history.loss - 1).max()))
''')


@pytest.mark.gpu
@gpu
def test_gpu_a_step_that_cannot_be_recorded_trains_eagerly():
    "A model that reads a device value on the host cannot be recorded: the run warns and continues eagerly (own process)."
    r = subprocess.run([sys.executable, '-c', _SYNCING_CHILD.format(root=str(ROOT))], capture_output=True, text=True, timeout=300)
    print(r.stdout[-2000:], r.stderr[-2000:])
    assert r.returncode == 0 and 'fallback ok' in r.stdout


# ---------------------------------------------------------------- the training report template

def test_training_report_renders_with_every_section(tmp_path):
    from scalp_lib.report import run_report
    from scalp_lib.checkpoint import load_checkpoint, CheckpointManager
    from report_checks import SMALL, assert_self_contained_html
    small = {**SMALL['training'], 'checkpoint_dir': str(tmp_path / 'ck')}   # CI's training render: one for both sets of checks
    paths = run_report('training', small, output_dir=tmp_path)
    html = assert_self_contained_html(paths)
    assert 'Traceback' not in html and 'from scalp_lib' not in html
    assert html.count('data:image/png;base64') >= 4  # learning curves, optimisation trace, confusion, calibration
    for section in ('Data and splits', 'Learning curves', 'learning-rate schedule', 'Skipped steps', 'confusion matrix',
                    'Calibration', 'Against the baselines, with the spread', 'logistic regression', 'gradient boosting',
                    'the majority class', 'Checkpoint', 'Run metadata'):
        assert section in html, section
    best = CheckpointManager(tmp_path / 'ck').best_path
    assert best is not None and best.name in html
    ck = load_checkpoint(best)
    assert ck['instrument'] == 'ES' and ck['label_spec']['kind'] == 'direction' and ck['scaler_state'] is not None


# ---------------------------------------------------------------- resuming on other data of the same shape is refused

def _resume_data(seed=0, n=600, f=5):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(n, f)).astype(np.float32), columns=[f'f{i}' for i in range(f)])
    y = np.digitize(X['f0'] - X['f1'] + 0.5 * rng.normal(size=n), [-0.6, 0.6])
    return X, y


class _Crash(Exception): pass


def _interrupted_run(ckdir):
    "Four epochs of 8 steps, crashed at step 10 (after the checkpoint at step 9): checkpoint_dir holds a resumable last.pt."
    X, y = _resume_data()
    torch.manual_seed(0)
    model = build_model({'type': 'feedforward', 'input_dim': 5, 'hidden_dims': [8], 'num_classes': 3})
    def crash(tr, info):
        if info.step == 10: raise _Crash()
    with pytest.raises(_Crash):
        train_model(model, (X[:450], y[:450]), (X[450:], y[450:]), epochs=4, batch_size=64, checkpoint_dir=ckdir,
                    checkpoint_every_steps=3, progress=False, seed=1, device='cpu', callbacks=[crash])
    return X, y


def _resume(ckdir, X, y):
    torch.manual_seed(0)
    model = build_model({'type': 'feedforward', 'input_dim': X.shape[1], 'hidden_dims': [8], 'num_classes': 3})
    return train_model(model, (X[:450], y[:450]), (X[450:], y[450:]), epochs=4, batch_size=64, checkpoint_dir=ckdir,
                       checkpoint_every_steps=3, progress=False, seed=1, device='cpu', resume=True)


@pytest.mark.parametrize('change, says', [
    ('one_value', 'training data: the same number of samples (450) but other values'),
    ('targets', 'training data: the same number of samples (450) but other values'),
    ('val_values', 'validation data: the same number of samples (150) but other values'),
    ('reordered', "feature order: the same 5 features in another order (first difference at column 0: 'f0' when saved, 'f1' now)"),
    ('renamed', "feature names: ['f3'] no longer given, ['volume_z'] new"),
    ('same_names_other_column', 'training data: the same number of samples (450) but other values'),
])
def test_resume_on_other_data_of_the_same_shape_is_refused(tmp_path, change, says):
    from scalp_lib.train import ResumeError
    X, y = _interrupted_run(tmp_path / 'ck')
    X2, y2 = X.copy(), y.copy()
    if change == 'one_value': X2.iloc[123, 2] += 0.25
    if change == 'targets': y2[10] = (y2[10] + 1) % 3
    if change == 'val_values': X2.iloc[500, 0] -= 1.0
    if change == 'reordered': X2 = X2[['f1', 'f0', 'f2', 'f3', 'f4']]
    if change == 'renamed': X2 = X2.rename(columns={'f3': 'volume_z'})
    if change == 'same_names_other_column': X2['f4'] = X2['f3'].to_numpy()   # names unchanged, a column's content replaced
    with pytest.raises(ResumeError) as e:
        _resume(tmp_path / 'ck', X2, y2)
    assert says in str(e.value) and str(tmp_path / 'ck' / 'last.pt') in str(e.value)


def test_resume_on_the_same_data_continues_and_checks_window_batchers(tmp_path):
    X, y = _interrupted_run(tmp_path / 'ck')
    res = _resume(tmp_path / 'ck', X.copy(), y.copy())              # equal content in new arrays: accepted
    assert res.resumed_from == str(tmp_path / 'ck' / 'last.pt') and len(res.epochs) == 4
    from scalp_lib.sequences import WindowBatcher
    from scalp_lib.train import ResumeError, as_batch_source, data_fingerprint
    M = X.to_numpy()
    fp = lambda m, starts: data_fingerprint(as_batch_source(WindowBatcher(m, y, 10, valid_starts=starts, batch_size=64),
                                                            torch.device('cpu'), 3))
    s = np.arange(0, 400, dtype=np.int64)
    assert fp(M, s) == fp(M.copy(), s.copy())
    M2 = M.copy(); M2[377, 1] += 1e-4
    assert fp(M2, s)['sha256'] != fp(M, s)['sha256'] and fp(M, s[1:])['sha256'] != fp(M, s)['sha256']


def test_a_damaged_resumable_state_is_a_named_error(tmp_path):
    "A last.pt that loads but lacks part of the trainer's state (edited, or written by other code) used to raise a bare KeyError."
    from scalp_lib.train import ResumeError
    X, y = _interrupted_run(tmp_path / 'ck')
    last = tmp_path / 'ck' / 'last.pt'
    ck = torch.load(last, weights_only=True)
    del ck['trainer_state']['history']
    torch.save(ck, last)
    with pytest.raises(ResumeError, match=r"last.pt: damaged resumable state \(KeyError"):
        _resume(tmp_path / 'ck', X, y)
