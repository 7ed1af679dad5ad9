"""Cost of one multi-horizon model against one single-horizon model per horizon: same data, same epochs.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_multihorizon.py [--model lstm] [--rows 20000] [--epochs 2] [--repeat 3] [--device cpu]

After one untimed warm-up run, for each repeat, in one process and interleaved (so a machine shared with other jobs slows both sides alike):
train one model with `horizons=[5, 10, 30]` on the (n, 3) target matrix, then one single-head model per horizon on
its column, all with the same architecture, batch size, epochs, learning rate and seed. Prints the training seconds
(median over repeats), trainable parameters, prediction seconds on the validation windows, and the validation
accuracy per horizon of both approaches (synthetic data: horizon h's label depends on a different feature mix).
"""
import argparse
import statistics
import time

import numpy as np
import torch

from scalp_lib.models import build_model, count_parameters
from scalp_lib.sequences import WindowBatcher, valid_window_starts
from scalp_lib.train import horizon_metrics, predict_proba, train_model

HORIZONS = [5, 10, 30]


def make_data(rows:int, n_features:int, seed:int=0):
    "AR(1) features; the label of horizon h is the tercile of a different feature mix plus noise."
    rng = np.random.default_rng(seed)
    X = np.zeros((rows, n_features), np.float32)
    eps = rng.normal(size=(rows, n_features)).astype(np.float32)
    for t in range(1, rows): X[t] = 0.9 * X[t - 1] + eps[t]
    X /= X.std(axis=0)
    Y = []
    for j, h in enumerate(HORIZONS):
        s = X[:, j] - 0.5 * X[:, j + 3] + 0.8 * rng.normal(size=rows)
        Y.append(np.digitize(s, np.quantile(s, [1 / 3, 2 / 3])))
    return X, np.stack(Y, axis=1).astype(np.int64)


def config(kind:str, n_features:int)->dict:
    if kind == 'lstm': return {'type': 'lstm', 'input_dim': n_features, 'hidden_size': 64, 'num_layers': 2, 'dropout_rate': 0.1}
    if kind == 'transformer': return {'type': 'transformer', 'input_dim': n_features, 'd_model': 64, 'num_heads': 4, 'num_layers': 2, 'dropout_rate': 0.1}
    return {'type': 'feedforward', 'input_dim': n_features, 'hidden_dims': [128, 64], 'dropout_rate': 0.1}


def run(kind, X, Y, seq_length, epochs, batch_size, device, horizons=None, column=None):
    "Train one model; returns (train seconds, parameters, predict seconds, val probabilities)."
    n_tr = int(0.8 * len(X))
    target = Y if column is None else Y[:, column]
    tr = WindowBatcher(X[:n_tr], target[:n_tr], seq_length, valid_starts=valid_window_starts(n_tr, seq_length), batch_size=batch_size, device=device)
    va = WindowBatcher(X[n_tr:], target[n_tr:], seq_length, valid_starts=valid_window_starts(len(X) - n_tr, seq_length),
                       batch_size=batch_size, shuffle=False, device=device)
    torch.manual_seed(0)
    model = build_model({**config(kind, X.shape[1]), **({'horizons': horizons} if horizons else {})})
    t0 = time.perf_counter()
    train_model(model, tr, None, epochs=epochs, batch_size=batch_size, lr=2e-3, progress=False, seed=0, device=device)
    if device != 'cpu': torch.cuda.synchronize()
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    P = predict_proba(model, va)
    pred_s = time.perf_counter() - t0
    return train_s, count_parameters(model), pred_s, P, Y[n_tr:][va.dataset.target_rows()]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--model', default='lstm', choices=['lstm', 'transformer', 'feedforward'])
    ap.add_argument('--rows', type=int, default=20_000)
    ap.add_argument('--features', type=int, default=32)
    ap.add_argument('--seq-length', type=int, default=30)
    ap.add_argument('--epochs', type=int, default=2)
    ap.add_argument('--batch-size', type=int, default=512)
    ap.add_argument('--repeat', type=int, default=3)
    ap.add_argument('--device', default='cpu')
    a = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    X, Y = make_data(a.rows, a.features)
    print(f"{a.model}: {a.rows:,} rows x {a.features} features, windows of {a.seq_length}, {a.epochs} epochs, batch {a.batch_size}, "
          f"horizons {HORIZONS}, device {a.device}, torch threads {torch.get_num_threads()}")
    run(a.model, X[:2000], Y[:2000], a.seq_length, 1, a.batch_size, a.device, horizons=HORIZONS)   # warm-up (lazy init), not timed
    multi_t, single_t, multi_p, single_p = [], [], [], []
    for r in range(a.repeat):
        tm, pm, qm, Pm, Yv = run(a.model, X, Y, a.seq_length, a.epochs, a.batch_size, a.device, horizons=HORIZONS)
        singles = [run(a.model, X, Y, a.seq_length, a.epochs, a.batch_size, a.device, column=j) for j in range(len(HORIZONS))]
        multi_t.append(tm); single_t.append(sum(s[0] for s in singles))
        multi_p.append(qm); single_p.append(sum(s[2] for s in singles))
        print(f"  repeat {r}: multi {tm:.2f} s, {len(HORIZONS)} singles {single_t[-1]:.2f} s (ratio {single_t[-1] / tm:.2f})")
    params_single = sum(s[1] for s in singles)
    acc_multi = horizon_metrics(Yv, Pm, HORIZONS)['accuracy']
    acc_single = [horizon_metrics(Yv[:, [j]], s[3][:, None], [h])['accuracy'].iloc[0] for j, (h, s) in enumerate(zip(HORIZONS, singles))]
    med = statistics.median
    print(f"training seconds (median of {a.repeat}): multi-horizon {med(multi_t):.2f}, {len(HORIZONS)} single-horizon models {med(single_t):.2f}, "
          f"ratio {med(single_t) / med(multi_t):.2f}x")
    print(f"prediction seconds (median): multi {med(multi_p):.3f}, singles {med(single_p):.3f}")
    print(f"trainable parameters: multi-horizon {pm:,}, {len(HORIZONS)} single-horizon models {params_single:,} ({params_single / pm:.2f}x)")
    print("validation accuracy per horizon (last repeat): " + ', '.join(
        f"h{h}: multi {am:.3f} / single {as_:.3f}" for h, am, as_ in zip(HORIZONS, acc_multi, acc_single)))


if __name__ == '__main__':
    main()
