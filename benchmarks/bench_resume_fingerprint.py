"""Cost of the resume fingerprint (scalp_lib.train.data_fingerprint) on a full-size training matrix.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_resume_fingerprint.py [ROWS] [FEATURES] [REPEATS]

Builds a float32 matrix (default 6,000,000 x 56, 1.25 GiB) and int64 targets in memory, then times, interleaved in
one process (so a shared machine's load hits every method alike):
- full:    data_fingerprint of (X, y) as the trainer sees them (SHA-256 of every byte, 64 MiB blocks),
- batcher: data_fingerprint of a WindowBatcher over the same matrix (features, targets, window starts),
- strided: SHA-256 of every 997th row only (the cheaper alternative that was not chosen: it misses most edits),
- read:    one read-only pass over the matrix (X.sum), a floor for anything that reads every byte.
Prints one JSON line per repeat and the median of each.
"""
import hashlib
import json
import statistics
import sys
import time

import numpy as np
import torch

from scalp_lib.sequences import WindowBatcher
from scalp_lib.train import as_batch_source, data_fingerprint


def main(rows=6_000_000, feats=56, repeats=3):
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((rows, feats), dtype=np.float32)
    y = rng.integers(0, 3, rows)
    cpu = torch.device('cpu')
    src = as_batch_source((X, y), cpu, 3)            # as Trainer builds it (a CPU tensor view of X)
    wb = WindowBatcher(X, y, 60, valid_starts=np.arange(0, rows - 60, dtype=np.int64), batch_size=4096)
    wsrc = as_batch_source(wb, cpu, 3)
    runs = {'full': lambda: data_fingerprint(src), 'batcher': lambda: data_fingerprint(wsrc),
            'strided': lambda: hashlib.sha256(np.ascontiguousarray(X[::997]).tobytes()).hexdigest(),
            'read': lambda: float(X.sum(dtype=np.float64))}
    out = {k: [] for k in runs}
    for r in range(repeats):
        rec = {}
        for k, fn in runs.items():
            t = time.perf_counter(); fn(); rec[k] = round(time.perf_counter() - t, 3)
            out[k].append(rec[k])
        print(json.dumps({'repeat': r, **rec}), flush=True)
    print(json.dumps({'rows': rows, 'features': feats, 'gib': round(X.nbytes / 2**30, 2),
                      'median_s': {k: statistics.median(v) for k, v in out.items()}}))


if __name__ == '__main__':
    main(*map(int, sys.argv[1:]))
