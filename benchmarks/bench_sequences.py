"""Benchmarks for scalp_lib.sequences / splits / preprocess at the seed's full size: 6.2M x 56 float32, seq_length 60.

Subcommands (run each in its own process; see BENCHMARKS.md for the exact commands and figures):

  make-data   write random float32 features (.npy, memory-mappable) and int64 targets under --dir
  create      dataset creation time and extra RSS over the feature matrix (RAM and memmap), valid-start arrays
  epoch       one full epoch of batches of --batch-size on the CPU: GB/s of window bytes vs memory-copy bandwidth
  walkforward process --folds walk-forward folds one at a time (scale on train rows, window, iterate); wrap it in
              /usr/bin/time -v to get the peak RSS ("Maximum resident set size")

Everything is single-threaded (OMP_NUM_THREADS=1, torch.set_num_threads(1)) on purpose: it is the honest figure
for one data-loading thread on this 2-core machine.
"""
import argparse
import gc
import json
import os
import resource
import sys
import time
from pathlib import Path

os.environ.setdefault('OMP_NUM_THREADS', '1')
import numpy as np
import torch

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from scalp_lib.preprocess import RobustFeatureScaler  # noqa: E402
from scalp_lib.sequences import (SequenceDataset, WindowBatcher, make_dataloader, valid_window_starts)  # noqa: E402
from scalp_lib.splits import PurgedWalkForward  # noqa: E402

GB = 1e9


def rss_bytes():
    "Current resident set size of this process (from /proc/self/statm)."
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')


def peak_rss_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def paths(d):
    d = Path(d)
    return d / 'features.npy', d / 'targets.npy'


def make_data(a):
    fpath, tpath = paths(a.dir)
    fpath.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    mm = np.lib.format.open_memmap(fpath, mode='w+', dtype=np.float32, shape=(a.rows, a.features))
    rng = np.random.default_rng(0)
    step = 500_000
    for i in range(0, a.rows, step):
        mm[i:i + step] = rng.standard_normal((min(step, a.rows - i), a.features), dtype=np.float32)
    mm.flush(); del mm
    np.save(tpath, rng.integers(0, 3, a.rows).astype(np.int64))
    print(json.dumps({'made': str(fpath), 'rows': a.rows, 'features': a.features,
                      'GB': round(a.rows * a.features * 4 / GB, 3), 'seconds': round(time.perf_counter() - t0, 1)}))


def load_in_ram(d):
    fpath, tpath = paths(d)
    F = np.load(fpath)             # fully read into RAM
    y = np.load(tpath)
    return F, y


def bench_create(a):
    fpath, tpath = paths(a.dir)
    out = {}
    # in RAM
    F, y = load_in_ram(a.dir)
    gc.collect()
    base = rss_bytes()
    t0 = time.perf_counter()
    ds = SequenceDataset(F, y, a.seq_length)
    out['create_ram_seconds'] = time.perf_counter() - t0
    out['create_ram_extra_rss_bytes'] = rss_bytes() - base
    out['feature_matrix_bytes'] = F.nbytes
    out['create_ram_extra_pct'] = 100 * out['create_ram_extra_rss_bytes'] / F.nbytes
    out['n_windows'] = len(ds)
    x, t = ds[len(ds) - 1]
    assert x.shape == (a.seq_length, F.shape[1])
    # valid starts with a session gap rule (synthetic 1-minute bars, 1380 per session, 60-minute break)
    per_day = 1380
    minutes = (np.arange(len(F)) // per_day) * (24 * 60) + (np.arange(len(F)) % per_day)
    ts = (np.datetime64('2024-01-02T17:00') + minutes.astype('timedelta64[m]')).astype('datetime64[ns]')
    del minutes
    gc.collect()
    base2 = rss_bytes()
    t0 = time.perf_counter()
    starts = valid_window_starts(len(F), a.seq_length, timestamps=ts, max_gap_minutes=30)
    out['valid_starts_seconds'] = time.perf_counter() - t0
    t0 = time.perf_counter()
    ds2 = SequenceDataset(F, y, a.seq_length, valid_starts=starts)
    out['create_with_starts_seconds'] = time.perf_counter() - t0
    out['valid_starts_count'] = len(starts)
    out['valid_starts_bytes'] = starts.nbytes
    out['valid_starts_pct_of_features'] = 100 * starts.nbytes / F.nbytes
    out['valid_starts_extra_rss_bytes'] = rss_bytes() - base2
    del ds, ds2, starts, F, y, ts
    gc.collect()
    # memory-mapped, never read in full
    Fm = np.load(fpath, mmap_mode='r'); ym = np.load(tpath, mmap_mode='r')
    base = rss_bytes()
    t0 = time.perf_counter()
    dsm = SequenceDataset(Fm, ym, a.seq_length)
    out['create_memmap_seconds'] = time.perf_counter() - t0
    out['create_memmap_extra_rss_bytes'] = rss_bytes() - base
    out['peak_rss_bytes'] = peak_rss_bytes()
    print(json.dumps(out, indent=1))


def memcpy_bandwidth(total_bytes, batch_bytes, repeats=3):
    "Plain numpy copies: one large preallocated copy, and fresh batch-sized copies (like a gather allocates)."
    n = total_bytes // 4
    src = np.ones(n, np.float32)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    best = float('inf')
    for _ in range(repeats):
        t0 = time.perf_counter(); np.copyto(dst, src); best = min(best, time.perf_counter() - t0)
    big = src.nbytes / best
    del dst
    nb = batch_bytes // 4
    chunks = [src[i:i + nb] for i in range(0, n - nb + 1, nb)]
    t0 = time.perf_counter()
    for c in chunks: c.copy()
    fresh = len(chunks) * nb * 4 / (time.perf_counter() - t0)
    return big, fresh


class _PerItem(torch.utils.data.Dataset):
    "The same dataset without __getitems__: what a plain DataLoader does (one Python call per window)."
    def __init__(self, ds): self.ds = ds
    def __len__(self): return len(self.ds)
    def __getitem__(self, i): return self.ds[i]


def bench_epoch(a):
    F, y = load_in_ram(a.dir)
    L, bs = a.seq_length, a.batch_size
    ds = SequenceDataset(F, y, L)
    window_bytes = L * F.shape[1] * 4
    out = {'n_windows': len(ds), 'batch_size': bs, 'window_bytes': window_bytes}
    big, fresh = memcpy_bandwidth(int(1e9), bs * window_bytes)
    out['before_memcpy_1GB_preallocated_GBps'] = big / GB
    out['before_memcpy_batch_sized_fresh_GBps'] = fresh / GB

    def run(name, it, limit=None):
        n_items = n_batches = 0
        t0 = time.perf_counter()
        for xb, yb in it:
            n_items += len(yb); n_batches += 1
            if limit and n_batches >= limit: break
        dt = time.perf_counter() - t0
        out[f'{name}_seconds'] = dt
        out[f'{name}_batches'] = n_batches
        out[f'{name}_windows'] = n_items
        out[f'{name}_GBps'] = n_items * window_bytes / dt / GB
        out[f'{name}_windows_per_s'] = n_items / dt
        print(name, json.dumps({k: v for k, v in out.items() if k.startswith(name)}), flush=True)

    run('dataloader_shuffled_epoch', make_dataloader(ds, bs, shuffle=True, seed=0))
    run('windowbatcher_cpu_shuffled_epoch', WindowBatcher(F, y, L, batch_size=bs, shuffle=True, seed=0))
    run('dataloader_sequential_epoch', make_dataloader(ds, bs, shuffle=False))
    naive = torch.utils.data.DataLoader(_PerItem(ds), batch_size=bs, shuffle=True)   # per-sample __getitem__ + default collate
    run('naive_per_item_dataloader_30_batches', naive, limit=30)
    run('windowbatcher_device_gather_on_cpu_200_batches', WindowBatcher(F, y, L, batch_size=bs, seed=0, gather='device'), limit=200)
    big, fresh = memcpy_bandwidth(int(1e9), bs * window_bytes)      # again: the machine is shared, load varies
    out['after_memcpy_1GB_preallocated_GBps'] = big / GB
    out['after_memcpy_batch_sized_fresh_GBps'] = fresh / GB
    out['loadavg_1min_at_end'] = os.getloadavg()[0]
    out['peak_rss_bytes'] = peak_rss_bytes()
    print(json.dumps(out, indent=1))


def bench_walkforward(a):
    fpath, tpath = paths(a.dir)
    F, y = load_in_ram(a.dir)
    n = len(F)
    L, bs = a.seq_length, a.batch_size
    cv = PurgedWalkForward(a.folds, test_bars=a.test_bars, horizon_bars=a.horizon_bars, embargo_bars=a.embargo_bars)
    report = []
    t_all = time.perf_counter()
    for fold in cv.folds(n):
        t0 = time.perf_counter()
        end = fold.test.stop
        scaler = RobustFeatureScaler(subsample=a.scaler_subsample, warn=False).fit(F[fold.train])
        scaled = scaler.transform(F[:end])                     # train + gap + test rows of this fold only
        tr_starts = valid_window_starts(end, L, rows=fold.train)
        te_starts = valid_window_starts(end, L, rows=fold.test)
        tr = make_dataloader(SequenceDataset(scaled, y[:end], L, valid_starts=tr_starts), bs, seed=fold.k)
        te = make_dataloader(SequenceDataset(scaled, y[:end], L, valid_starts=te_starts), bs, shuffle=False)
        seen = 0
        for i, (xb, yb) in enumerate(tr):
            seen += len(yb)
            if i + 1 >= a.batches_per_fold: break
        for i, (xb, yb) in enumerate(te):
            seen += len(yb)
            if i + 1 >= a.batches_per_fold: break
        report.append(dict(fold=fold.k, n_train=fold.n_train, test=f'{fold.test.start}..{fold.test.stop - 1}',
                           train_windows=len(tr_starts), test_windows=len(te_starts), windows_iterated=seen,
                           seconds=round(time.perf_counter() - t0, 2), rss_GB=round(rss_bytes() / GB, 3)))
        print(json.dumps(report[-1]), flush=True)
        del scaler, scaled, tr_starts, te_starts, tr, te, xb, yb       # nothing of a fold survives it
        gc.collect()
    print(json.dumps({'folds': a.folds, 'test_bars': a.test_bars, 'seconds': round(time.perf_counter() - t_all, 1),
                      'peak_rss_GB_getrusage': round(peak_rss_bytes() / GB, 3),
                      'feature_matrix_GB': round(F.nbytes / GB, 3)}))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('cmd', choices=['make-data', 'create', 'epoch', 'walkforward'])
    p.add_argument('--dir', default='/tmp/scalp_bench_seq')
    p.add_argument('--rows', type=int, default=6_200_000)
    p.add_argument('--features', type=int, default=56)
    p.add_argument('--seq-length', type=int, default=60)
    p.add_argument('--batch-size', type=int, default=4096)
    p.add_argument('--folds', type=int, default=10)
    p.add_argument('--test-bars', type=int, default=6_200_000 // 11)
    p.add_argument('--horizon-bars', type=int, default=10)
    p.add_argument('--embargo-bars', type=int, default=60)
    p.add_argument('--batches-per-fold', type=int, default=20)
    p.add_argument('--scaler-subsample', type=int, default=1_000_000)
    a = p.parse_args(argv)
    {'make-data': make_data, 'create': bench_create, 'epoch': bench_epoch, 'walkforward': bench_walkforward}[a.cmd](a)


if __name__ == '__main__':
    main()
