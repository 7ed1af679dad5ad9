"""scalp_lib.train under DistributedDataParallel: two CPU processes (gloo) launched with torchrun.

One torchrun launch trains three runs in the same two processes (T: no dropout, for the trajectory against one
process; A: dropout and an odd sample count, uninterrupted, with checkpoints; B: the same as A, crashed at step 11
on both ranks); a second launch, in fresh processes, resumes B from its last checkpoint (C). CI has 2 cores and no
GPU; the whole module takes about 30 s there. `SCALP_DDP_TEST_DEVICE=cuda` runs the two ranks on two GPUs (NCCL)
instead; the trajectory test compares with a CPU run and is meant for the CPU.
"""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data.distributed import DistributedSampler

from scalp_lib.checkpoint import load_checkpoint, load_model
from scalp_lib.models import build_model
from scalp_lib.train import _epoch_permutation, train_model

ROOT = Path(__file__).resolve().parents[1]
N_TRAIN_EVEN, N_TRAIN_ODD, N_VAL, BATCH = 900, 901, 300, 64
VAL_LOSS_TOL = 1e-4  # 2 processes vs 1, no dropout: only the order of float sums differs (measured: below 1e-6)


def _data():
    rng = np.random.default_rng(0)
    n = N_TRAIN_ODD + N_VAL
    X = rng.normal(size=(n, 5)).astype(np.float32)
    y = np.digitize(X[:, 0] - X[:, 1] + 0.5 * rng.normal(size=n), [-0.6, 0.6])
    return X, y


def _model(dropout):
    torch.manual_seed(0)
    return build_model({'type': 'feedforward', 'input_dim': 5, 'hidden_dims': [32, 16], 'dropout_rate': dropout, 'num_classes': 3})


_WORKER = textwrap.dedent('''
    import os, sys
    sys.path.insert(0, {root!r})
    import numpy as np, torch
    torch.set_num_threads(1)
    import scalp_lib.checkpoint as ckmod
    from scalp_lib.models import build_model
    from scalp_lib.train import train_model
    mode, out = sys.argv[1], sys.argv[2]
    rank = int(os.environ['RANK'])
    rng = np.random.default_rng(0)
    n = {n_odd} + {n_val}
    X = rng.normal(size=(n, 5)).astype(np.float32)
    y = np.digitize(X[:, 0] - X[:, 1] + 0.5 * rng.normal(size=n), [-0.6, 0.6])
    val = (X[{n_odd}:], y[{n_odd}:])
    def model(dropout):
        torch.manual_seed(0 if rank == 0 else 99)  # DDP must broadcast rank 0's initial weights
        return build_model({{'type': 'feedforward', 'input_dim': 5, 'hidden_dims': [32, 16], 'dropout_rate': dropout, 'num_classes': 3}})
    writes = []  # every checkpoint file this process writes
    _save = ckmod.atomic_torch_save
    def recording_save(obj, path):
        writes.append(str(path)); return _save(obj, path)
    ckmod.atomic_torch_save = recording_save
    class Recorder:
        def __init__(self): self.seen = []
        def on_step(self, trainer, info): self.seen.append(info.indices.cpu().clone())
    class Crash(Exception): pass
    def crash_at_11(trainer, info):
        if info.step == 11: raise Crash()
    kw = dict(batch_size={batch}, lr=3e-3, progress=False, seed=7, device=os.environ.get('SCALP_DDP_TEST_DEVICE', 'cpu'), distributed='auto')
    ck_kw = dict(epochs=3, checkpoint_every_steps=4, keep_best=2)
    res = {{}}
    def summary(r, rec=None):
        return {{'val_loss': r.epochs.val_loss.tolist(), 'history': r.history, 'state': {{k: v.cpu() for k, v in r.model.state_dict().items()}},
                'world_size': r.world_size, 'rank': r.rank, 'best': r.best_checkpoint, 'last': r.last_checkpoint,
                'resumed_from': r.resumed_from, 'params': r.params, 'seen': None if rec is None else rec.seen}}
    if mode == 'first':
        try: train_model(model(0.0), (X[:{n_even}], y[:{n_even}]), val, epochs=1, **{{**kw, 'batch_size': {batch} - 1}})
        except ValueError as e: res['odd_batch_error'] = f"{{type(e).__name__}}: {{e}}"
        rec = Recorder()
        r = train_model(model(0.0), (X[:{n_even}], y[:{n_even}]), val, epochs=3, callbacks=[rec], **kw)
        res['T'] = summary(r, rec)
        rec = Recorder()
        r = train_model(model(0.2), (X[:{n_odd}], y[:{n_odd}]), val, checkpoint_dir=os.path.join(out, 'A'), callbacks=[rec], **ck_kw, **kw)
        res['A'] = summary(r, rec)
        res['A_writes'] = list(writes)
        try:
            train_model(model(0.2), (X[:{n_odd}], y[:{n_odd}]), val, checkpoint_dir=os.path.join(out, 'B'), callbacks=[crash_at_11], **ck_kw, **kw)
            res['B_crashed'] = False
        except Crash:
            res['B_crashed'] = True
    else:
        torch.manual_seed(123 + rank)  # a fresh, different model: everything must come from the checkpoint
        m = build_model({{'type': 'feedforward', 'input_dim': 5, 'hidden_dims': [32, 16], 'dropout_rate': 0.2, 'num_classes': 3}})
        r = train_model(m, (X[:{n_odd}], y[:{n_odd}]), val, checkpoint_dir=os.path.join(out, 'B'), resume=True, **ck_kw, **kw)
        res['C'] = summary(r)
        res['C_writes'] = list(writes)
    torch.save(res, os.path.join(out, f'{{mode}}_rank{{rank}}.pt'))
''').format(root=str(ROOT), n_even=N_TRAIN_EVEN, n_odd=N_TRAIN_ODD, n_val=N_VAL, batch=BATCH)


def _torchrun(script, mode, out):
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONUNBUFFERED': '1'}
    for k in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT'): env.pop(k, None)
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', str(script), mode, str(out)]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, f"torchrun {mode} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return [torch.load(out / f'{mode}_rank{r}.pt', weights_only=False) for r in range(2)]


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp('ddp')
    script = out / 'worker.py'
    script.write_text(_WORKER)
    first = _torchrun(script, 'first', out)
    resumed = _torchrun(script, 'resume', out)
    return out, first, resumed


def test_both_ranks_trained_together_and_agree(runs):
    _, first, _ = runs
    for tag in ('T', 'A'):
        r0, r1 = first[0][tag], first[1][tag]
        assert (r0['world_size'], r0['rank'], r1['rank']) == (2, 0, 1)
        assert r0['params']['per_rank_batch_size'] == BATCH // 2
        assert r0['val_loss'] == r1['val_loss']  # all-reduced validation metrics
        pd.testing.assert_frame_equal(r0['history'], r1['history'])  # all-reduced step metrics
        for k, v in r0['state'].items(): assert torch.equal(v, r1['state'][k]), (tag, k)


def test_a_global_batch_that_does_not_split_evenly_is_refused(runs):
    _, first, _ = runs
    for r in range(2):
        assert first[r]['odd_batch_error'] == f"DistributedError: batch_size {BATCH - 1} is the global batch and must split evenly over 2 processes"


def test_ranks_draw_disjoint_shares_that_cover_the_epoch(runs):
    "T (900 samples): per batch the halves are disjoint and form the single-process batch; A (901): one padded sample."
    _, first, _ = runs
    t0, t1 = first[0]['T']['seen'], first[1]['T']['seen']
    steps, tail = divmod(N_TRAIN_EVEN, BATCH)   # 14 full batches and a 4-sample tail
    assert 0 < 2 * tail < BATCH                   # settings' last_batch='merge': the tail joins the 14th batch (68 samples)
    assert len(t0) == len(t1) == 3 * steps
    for s, (a, b) in enumerate(zip(t0, t1)):
        epoch, i = divmod(s, steps)
        assert len(a) == len(b) == (BATCH + tail if i == steps - 1 else BATCH) // 2
        assert not set(a.tolist()) & set(b.tolist())
        glob = _epoch_permutation(N_TRAIN_EVEN, 7, epoch)[i * BATCH:(N_TRAIN_EVEN if i == steps - 1 else (i + 1) * BATCH)]
        assert sorted(torch.cat([a, b]).tolist()) == sorted(glob.tolist())
    a0, a1 = first[0]['A']['seen'], first[1]['A']['seen']
    for epoch in range(3):
        e0 = torch.cat(a0[epoch * steps:(epoch + 1) * steps]); e1 = torch.cat(a1[epoch * steps:(epoch + 1) * steps])
        assert len(e0) == len(e1) == (N_TRAIN_ODD + 1) // 2
        assert set(e0.tolist()) | set(e1.tolist()) == set(range(N_TRAIN_ODD))  # together: the whole epoch
        order = _epoch_permutation(N_TRAIN_ODD, 7, epoch)
        for r, e in enumerate((e0, e1)):  # exactly DistributedSampler's shares of the epoch's order
            assert e.tolist() == order[list(DistributedSampler(range(N_TRAIN_ODD), num_replicas=2, rank=r, shuffle=False))].tolist()
        assert (set(e0.tolist()) & set(e1.tolist())) == {int(order[0])}  # the one padded sample repeats the head
    hist = first[0]['A']['history']
    assert hist.groupby('epoch').batch_size.sum().tolist() == [N_TRAIN_ODD + 1] * 3


def test_two_processes_follow_the_single_process_validation_trajectory(runs):
    _, first, _ = runs
    X, y = _data()
    single = train_model(_model(0.0), (X[:N_TRAIN_EVEN], y[:N_TRAIN_EVEN]), (X[N_TRAIN_ODD:], y[N_TRAIN_ODD:]), epochs=3,
                         batch_size=BATCH, lr=3e-3, progress=False, seed=7, device='cpu', distributed=False)
    ddp = np.array(first[0]['T']['val_loss'])
    assert single.epochs.val_loss.iloc[-1] < single.epochs.val_loss.iloc[0] - 0.05  # the trajectory actually moves
    np.testing.assert_allclose(ddp, single.epochs.val_loss.values, rtol=0, atol=VAL_LOSS_TOL)
    np.testing.assert_allclose(first[0]['T']['history'].loss.values, single.history.loss.values, rtol=0, atol=1e-4)


def test_only_rank_0_writes_checkpoints(runs):
    out, first, resumed = runs
    assert first[1]['A_writes'] == [] and resumed[1]['C_writes'] == []
    assert any(p.endswith('last.pt') for p in first[0]['A_writes'])
    assert any('epoch' in Path(p).name for p in first[0]['A_writes'])
    assert first[1]['A']['best'] == first[0]['A']['best'] and Path(first[0]['A']['best']).is_file()
    ck = load_checkpoint(out / 'A' / 'last.pt')
    assert not any(k.startswith('module.') for k in ck['state_dict'])  # the plain model, not the DDP wrapper
    assert len(ck['trainer_state']['rank_rng_states']) == 2
    m, _ = load_model(first[0]['A']['best'])
    for k, v in m.state_dict().items(): assert torch.equal(v, first[0]['A']['state'][k]), k  # best weights restored


def test_resume_after_an_interrupted_ddp_run_gives_the_uninterrupted_weights(runs):
    out, first, resumed = runs
    assert first[0]['B_crashed'] and first[1]['B_crashed']
    for r in range(2):
        a, c = first[r]['A'], resumed[r]['C']
        assert c['resumed_from'] == str(out / 'B' / 'last.pt')
        pd.testing.assert_frame_equal(a['history'], c['history'])
        assert a['val_loss'] == c['val_loss']
        for k, v in a['state'].items(): assert torch.equal(v, c['state'][k]), (r, k)
