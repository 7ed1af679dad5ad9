"""Tests for scalp_lib.sequences: the seed's loop as the reference (000 #10), shapes, no copies, batches that are
never empty (seed 002), windows that never cross a boundary or a gap, CPU/device-path equality, and memory checks."""
import copy
import math
import pickle
import time

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from scalp_lib.sequences import (InsufficientMemoryError, SequenceDataset, SequenceError, WindowBatcher,
                                 WindowBatchSampler, batch_bounds, epoch_order, estimate_memory, make_dataloader,
                                 target_offset, valid_window_starts)


def seed_sequences(features, targets, seq_length):
    "The seed's SequenceDataset.__init__ loop, verbatim (seed 000 bug #10): the reference implementation."
    X_seq, y_seq = [], []
    for i in range(len(features) - seq_length):
        X_seq.append(features[i:i + seq_length])
        y_seq.append(targets[i + seq_length])
    return np.array(X_seq), np.array(y_seq)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10**6), n=st.integers(2, 400), p=st.integers(1, 9), L=st.integers(1, 50),
       float_targets=st.booleans())
def test_values_identical_to_seed_loop(seed, n, p, L, float_targets):
    if n <= L:
        with pytest.raises(SequenceError, match='too few'):
            SequenceDataset(np.zeros((n, p), np.float32), np.zeros(n), L)
        return
    rng = np.random.default_rng(seed)
    F = rng.standard_normal((n, p), dtype=np.float32)
    y = rng.standard_normal(n).astype(np.float32) if float_targets else rng.integers(0, 3, n)
    X_ref, y_ref = seed_sequences(F, y, L)
    ds = SequenceDataset(F, y, L)
    assert len(ds) == n - L and ds.windows.shape == (n - L, L, p) == X_ref.shape
    xb, yb = ds.__getitems__(np.arange(len(ds)))
    np.testing.assert_array_equal(xb.numpy(), X_ref)
    np.testing.assert_array_equal(yb.numpy(), y_ref)
    i = int(rng.integers(len(ds)))
    np.testing.assert_array_equal(ds[i][0].numpy(), X_ref[i])
    assert ds[i][1].item() == pytest.approx(float(y_ref[i]))
    # every batch path gives the seed's windows in the epoch's order
    order = epoch_order(len(ds), True, seed, 0)
    bs = int(rng.integers(1, 64))
    got_x = torch.cat([x for x, _ in make_dataloader(ds, bs, seed=seed, last_batch='keep')]).numpy()
    np.testing.assert_array_equal(got_x, X_ref[order])
    for gather in ('dataset', 'device'):
        wb = WindowBatcher(F, y, L, batch_size=bs, seed=seed, last_batch='keep', gather=gather)
        xs, ys = zip(*wb)
        np.testing.assert_array_equal(torch.cat(xs).numpy(), X_ref[order])
        np.testing.assert_array_equal(torch.cat(ys).numpy(), y_ref[order])


def test_label_bar_alignment():
    F = np.arange(40, dtype=np.float32).reshape(20, 2)
    y = np.arange(20)
    ds = SequenceDataset(F, y, 5, align='label_bar')
    assert len(ds) == 16 and target_offset(5, 'label_bar') == 4
    for i in range(len(ds)):
        x, t = ds[i]
        np.testing.assert_array_equal(x.numpy(), F[i:i + 5])
        assert t.item() == i + 4                      # the label of the window's last bar
        assert x[-1, 0].item() == F[t.item(), 0]      # no bar after the target's bar is in the window


def test_creation_is_a_view_and_o1(tmp_path):
    "The seed's own performance test (1M x 56, < 60 s, shape (999_940, 60, 56)), tightened: a view in < 50 ms."
    F = np.random.default_rng(0).standard_normal((1_000_000, 56), dtype=np.float32)
    y = np.zeros(1_000_000, np.int64)
    t0 = time.perf_counter()
    ds = SequenceDataset(F, y, seq_length=60)
    elapsed = time.perf_counter() - t0
    assert elapsed < 0.05, f"creation took {elapsed:.3f}s"
    assert ds.windows.shape == (999_940, 60, 56)
    assert ds.features is F and np.shares_memory(ds.windows, F)
    assert not ds.windows.flags.writeable


def test_memmap_dataset_pickles_by_file_name(tmp_path):
    mm = np.lib.format.open_memmap(tmp_path / 'f.npy', mode='w+', dtype=np.float32, shape=(100_000, 16))
    mm[:] = np.random.default_rng(1).normal(size=(100_000, 16)); mm.flush(); del mm
    F = np.load(tmp_path / 'f.npy', mmap_mode='r')
    ds = SequenceDataset(F, np.zeros(100_000, np.int64), 30)
    blob = pickle.dumps(ds)
    assert len(blob) < 2_000_000                          # the data (6.4 MB) was not pickled
    back = pickle.loads(blob)
    assert isinstance(back.features, np.memmap)
    np.testing.assert_array_equal(back[12345][0].numpy(), ds[12345][0].numpy())
    # a slice of a memmap is pickled with its data (correct, if not small)
    ds2 = SequenceDataset(F[10:500], np.zeros(490, np.int64), 30)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(ds2))[0][0].numpy(), F[10:40])


def test_dataloader_with_worker_process():
    F = np.random.default_rng(2).standard_normal((300, 4), dtype=np.float32)
    y = np.arange(300)
    ds = SequenceDataset(F, y, 10)
    a = [b for b in make_dataloader(ds, 32, seed=1, num_workers=1)]
    b = [b for b in make_dataloader(ds, 32, seed=1, num_workers=0)]
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


@settings(max_examples=400, deadline=None)
@given(n_items=st.integers(1, 100_000), bs=st.integers(1, 10_000), mode=st.sampled_from(['keep', 'drop', 'merge']))
def test_last_batch_never_empty(n_items, bs, mode):
    "Seed 002: `Expected input batch_size (1) to match target batch_size (0)`. No batch is ever empty."
    if mode == 'drop' and n_items < bs:
        with pytest.raises(SequenceError, match='empty epoch'):
            batch_bounds(n_items, bs, mode)
        return
    sizes = np.diff(batch_bounds(n_items, bs, mode))
    assert len(sizes) >= 1 and sizes.min() >= 1
    if mode == 'drop':
        assert (sizes == bs).all() and n_items - sizes.sum() < bs
    else:
        assert sizes.sum() == n_items
        assert (sizes[:-1] == bs).all()
    if mode == 'merge' and len(sizes) > 1:
        assert math.ceil(bs / 2) <= sizes[-1] < bs + math.ceil(bs / 2)


@pytest.mark.parametrize('mode', ['keep', 'drop', 'merge'])
def test_real_iteration_never_yields_empty_batch(mode):
    rng = np.random.default_rng(3)
    for _ in range(60):
        n = int(rng.integers(12, 400)); bs = int(rng.integers(1, 80)); L = 10
        F = rng.standard_normal((n, 3), dtype=np.float32); y = rng.integers(0, 3, n)
        m = n - L
        if mode == 'drop' and m < bs: continue
        loader = make_dataloader(SequenceDataset(F, y, L), bs, last_batch=mode, seed=int(bs))
        wb = WindowBatcher(F, y, L, batch_size=bs, last_batch=mode, gather='device', seed=int(bs))
        for it in (loader, wb):
            sizes = [len(yb) for xb, yb in it]
            assert len(sizes) == len(it) and min(sizes) >= 1
            assert all(len(xb) == len(yb) for xb, yb in it)


@st.composite
def bar_layouts(draw):
    n = draw(st.integers(5, 400))
    steps = draw(st.lists(st.sampled_from([1, 1, 1, 1, 2, 5, 31, 60, 2000]), min_size=n - 1, max_size=n - 1))
    ts = pd.Timestamp('2024-01-02 08:30', tz='America/Chicago') + pd.to_timedelta(np.r_[0, np.cumsum(steps)], unit='min')
    bounds = draw(st.lists(st.integers(0, n), max_size=4))
    L = draw(st.integers(1, 40))
    a = draw(st.integers(0, n)); b = draw(st.integers(a, n))
    rows_kind = draw(st.sampled_from(['none', 'slice', 'array']))
    align = draw(st.sampled_from(['seed', 'label_bar']))
    return n, pd.DatetimeIndex(ts), bounds, L, (a, b), rows_kind, align


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layout=bar_layouts(), data=st.data())
def test_windows_never_cross_boundaries_or_gaps(layout, data):
    n, ts, bounds, L, (a, b), rows_kind, align = layout
    rows = None
    allowed = np.ones(n, bool)
    first = 0
    if rows_kind == 'slice':
        rows = slice(a, b); allowed[:] = False; allowed[a:b] = True; first = a
    elif rows_kind == 'array':
        r = np.array(sorted(set(data.draw(st.lists(st.integers(0, n - 1), max_size=n)))), dtype=np.int64)
        rows = r; allowed[:] = False; allowed[r] = True; first = int(r.min()) if len(r) else n
    starts = valid_window_starts(n, L, align=align, rows=rows, boundaries=bounds, timestamps=ts, max_gap_minutes=30)
    off = target_offset(L, align)
    gap_minutes = np.diff(ts.asi8) / 60e9
    expected = []
    for i in range(max(0, n - off)):
        span = range(i, i + off + 1)                          # window bars and the target row
        crosses_gap = any(gap_minutes[j - 1] > 30 for j in span[1:])
        crosses_boundary = any(i < c <= i + off for c in bounds)
        if not crosses_gap and not crosses_boundary and allowed[i + off] and i >= first: expected.append(i)
    np.testing.assert_array_equal(starts, np.array(expected, dtype=np.int64))
    if len(starts):
        ds = SequenceDataset(np.zeros((n, 2), np.float32), np.zeros(n), L, valid_starts=starts, align=align)
        assert len(ds) == len(starts)


@pytest.mark.parametrize('align', ['seed', 'label_bar'])
def test_window_batcher_cpu_equals_dataset_path(align):
    rng = np.random.default_rng(4)
    F = rng.standard_normal((3000, 11), dtype=np.float32)
    y = rng.standard_normal(3000).astype(np.float32)
    starts = valid_window_starts(3000, 25, align=align, boundaries=[1000, 2000])
    for gather in ('device', 'dataset'):
        wb = WindowBatcher(F, y, 25, valid_starts=starts, align=align, batch_size=128, seed=9, gather=gather)
        dl = make_dataloader(SequenceDataset(F, y, 25, valid_starts=starts, align=align), 128, seed=9)
        for epoch in range(3):
            pairs = list(zip(wb, dl))
            assert len(pairs) == len(wb) == len(dl)
            for (xa, ya), (xb, yb) in pairs:
                assert xa.dtype == torch.float32 and xa.shape[1:] == (25, 11)
                assert torch.equal(xa, xb) and torch.equal(ya, yb)
    wb.set_epoch(1); dl.batch_sampler.set_epoch(1)
    assert torch.equal(next(iter(wb))[0], next(iter(dl))[0])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_window_batcher_cuda_equals_cpu():
    rng = np.random.default_rng(5)
    F = rng.standard_normal((50_000, 56), dtype=np.float32)
    y = rng.integers(0, 3, 50_000)
    starts = valid_window_starts(50_000, 60, boundaries=[20_000])
    gpu = WindowBatcher(F, y, 60, valid_starts=starts, batch_size=4096, seed=1, device='cuda')
    cpu = WindowBatcher(F, y, 60, valid_starts=starts, batch_size=4096, seed=1)
    assert gpu.features.is_cuda
    n = 0
    for (xg, yg), (xc, yc) in zip(gpu, cpu):
        assert xg.is_cuda and yg.is_cuda
        assert torch.equal(xg.cpu(), xc) and torch.equal(yg.cpu(), yc)
        n += 1
    assert n == len(cpu)
    est = estimate_memory(50_000, 56, 60, 4096, device='cuda')
    assert est.device_available is not None and est.device['feature matrix'] == 50_000 * 56 * 4


def test_nan_targets_refused_and_skippable():
    F = np.zeros((100, 2), np.float32)
    y = np.r_[np.zeros(90), np.full(10, np.nan)]
    with pytest.raises(SequenceError, match='10 item'):
        SequenceDataset(F, y, 5)
    starts = valid_window_starts(100, 5, targets=y)
    ds = SequenceDataset(F, y, 5, valid_starts=starts)
    assert len(ds) == 85 and np.isfinite(ds.__getitems__(np.arange(len(ds)))[1].numpy()).all()


def test_estimate_memory_refuses_what_cannot_fit():
    with pytest.raises(InsufficientMemoryError, match='DOES NOT FIT'):
        estimate_memory(2 * 10**9, 56, 60, 4096)
    assert isinstance(InsufficientMemoryError('x'), MemoryError)
    est = estimate_memory(100_000, 56, 60, 512, torch.nn.LSTM(56, 32, batch_first=True))
    assert est.fits and est.host['batch windows (2 in flight)'] == 2 * 512 * 60 * 56 * 4
    assert est.host['activations (rough)'] > 512 * 60 * 32 * 4


def test_bad_arguments_are_named():
    F = np.zeros((100, 3), np.float32)
    with pytest.raises(SequenceError, match="last_batch='tail'"):
        WindowBatchSampler(10, 4, last_batch='tail')
    with pytest.raises(SequenceError, match='2-D'):
        SequenceDataset(np.zeros(100, np.float32), np.zeros(100), 5)
    with pytest.raises(SequenceError, match='valid_starts is empty'):
        SequenceDataset(F, np.zeros(100), 5, valid_starts=np.array([], dtype=np.int64))
    with pytest.raises(SequenceError, match='strictly increasing'):
        valid_window_starts(3, 1, timestamps=pd.DatetimeIndex(['2024-01-02', '2024-01-02', '2024-01-03']))
    with pytest.raises(SequenceError, match="gather='dataset' only works"):
        WindowBatcher(F, np.zeros(100), 5, device='meta', gather='dataset')


def test_reused_batch_buffers_never_overwrite_a_live_batch():
    "Batches kept by the caller stay intact; memory of dropped batches is reused (no fresh 55 MB per step)."
    rng = np.random.default_rng(6)
    F = rng.standard_normal((5000, 8), dtype=np.float32)
    y = rng.integers(0, 3, 5000)
    ds = SequenceDataset(F, y, 30)
    X_ref, _ = seed_sequences(F, y, 30)
    loader = make_dataloader(ds, 256, seed=2, last_batch='keep')
    kept = list(loader)                                   # every batch alive at once
    order = epoch_order(len(ds), True, 2, 0)
    np.testing.assert_array_equal(torch.cat([x for x, _ in kept]).numpy(), X_ref[order])
    assert len({x.data_ptr() for x, _ in kept}) == len(kept)
    del kept
    ptrs = set()
    for x, _ in loader:                                   # batches dropped as we go: a few buffers recycled
        ptrs.add(x.data_ptr())
    assert len(ptrs) <= 3
    # a batch held inside an autograd graph is not reused until the graph is gone
    lin = torch.nn.Linear(8, 1)
    twin = copy.deepcopy(lin)
    it = iter(make_dataloader(ds, 256, shuffle=False))
    x0, _ = next(it)
    twin(x0.clone()).sum().backward()                   # the gradient batch 0 must give
    out = lin(x0).sum(); del x0
    for _ in range(5): next(it)
    out.backward()                                       # uses the saved input: must still be batch 0
    assert torch.equal(lin.weight.grad, twin.weight.grad)
