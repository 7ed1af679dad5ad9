"""Training and evaluation throughput on a GPU (issue 5): LSTM 2 x 128, 56 features, seq_length 60, batch 4096, bf16.

Measures, in one process on one device:
  1. pure model compute: forward (bf16 autocast) + loss + backward + fused AdamW on one fixed device batch;
  2. the same with the window gather from a device-resident feature matrix (random windows each step);
  3. the full trainer (`scalp_lib.train.train_model` on a `scalp_lib.sequences.WindowBatcher`): guards, clipping,
     scheduler, class weights, history; one epoch over --n-train samples; time to first step;
  4. `predict_proba` over --n-eval samples in batches of --eval-batch: time and peak GPU memory.

    python benchmarks/bench_train_gpu.py                      # the issue's sizes (needs a CUDA GPU)
    python benchmarks/bench_train_gpu.py --device cpu --quick # a smoke test of the script itself
"""
import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import numpy as np
import torch
import torch.nn.functional as F

from scalp_lib.models import build_model, count_parameters
from scalp_lib.sequences import WindowBatcher
from scalp_lib.train import predict_proba, train_model

GiB = 2**30


def sync(dev):
    if dev.type == 'cuda': torch.cuda.synchronize(dev)


def timed_steps(step, n_steps, warmup, dev):
    "Median-free simple timing: warm up, then wall time of n_steps with a sync at both ends."
    for _ in range(warmup): step()
    sync(dev)
    t = time.perf_counter()
    for _ in range(n_steps): step()
    sync(dev)
    return time.perf_counter() - t


def make_model(cfg, seed=0):
    torch.manual_seed(seed)
    return build_model(cfg)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--n-train', type=int, default=6_200_000)
    ap.add_argument('--n-eval', type=int, default=2_200_000)
    ap.add_argument('--features', type=int, default=56)
    ap.add_argument('--seq-length', type=int, default=60)
    ap.add_argument('--batch-size', type=int, default=4096)
    ap.add_argument('--eval-batch', type=int, default=None, help='default: settings.ini [train] eval_batch_size')
    ap.add_argument('--steps', type=int, default=300, help='timed steps for the pure-compute measurements')
    ap.add_argument('--device', default='cuda')
    ap.add_argument('--quick', action='store_true', help='tiny sizes, for checking the script on a CPU')
    ap.add_argument('--json', default=None, help='write the figures here')
    a = ap.parse_args()
    if a.quick: a.n_train, a.n_eval, a.steps, a.batch_size, a.eval_batch = 20_000, 10_000, 5, 512, 2048
    from scalp_lib.config import section_defaults
    a.eval_batch = int(section_defaults('train', eval_batch_size=a.eval_batch)['eval_batch_size'])
    dev = torch.device(a.device)
    Fn, L, B = a.features, a.seq_length, a.batch_size
    cfg = {'type': 'lstm', 'input_dim': Fn, 'hidden_size': 128, 'num_layers': 2, 'dropout_rate': 0.1, 'num_classes': 3}
    out = {'device': torch.cuda.get_device_name(dev) if dev.type == 'cuda' else 'cpu', 'torch': torch.__version__,
           'config': cfg, 'batch_size': B, 'seq_length': L, 'n_train': a.n_train, 'n_eval': a.n_eval}
    print(f"device: {out['device']}, torch {torch.__version__}, model params {count_parameters(make_model(cfg)):,}", flush=True)

    # data in host memory: the reference point for 'time to first step'
    g = torch.Generator().manual_seed(0)
    X = torch.randn(a.n_train + L, Fn, generator=g).numpy()
    y = torch.randint(0, 3, (a.n_train + L,), generator=g).numpy()
    amp = dev.type == 'cuda'

    # 1. pure model compute on one fixed device batch
    m = make_model(cfg).to(dev).train()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3, fused=True)
    xb, yb = torch.randn(B, L, Fn, device=dev), torch.randint(0, 3, (B,), device=dev)
    def pure_step(xb=xb, yb=yb):
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            logits = m(xb)
        F.cross_entropy(logits.float(), yb).backward()
        opt.step(); opt.zero_grad(set_to_none=True)
    s = timed_steps(pure_step, a.steps, 20 if not a.quick else 1, dev)
    out['pure_compute_samples_per_s'] = a.steps * B / s

    # 2. pure compute + window gather from a device-resident matrix (random windows each step)
    feats, tg = torch.from_numpy(X).to(dev), torch.from_numpy(y).to(dev)
    steps_t = torch.arange(L, device=dev)
    def gather_step():
        idx = torch.randint(0, a.n_train, (B,), device=dev)
        pure_step(feats[idx[:, None] + steps_t], tg[idx + L])
    s = timed_steps(gather_step, a.steps, 5 if not a.quick else 1, dev)
    out['compute_plus_gather_samples_per_s'] = a.steps * B / s
    del feats, tg, m, opt
    if dev.type == 'cuda': torch.cuda.empty_cache()

    # 3. the full trainer, one epoch over n_train windows
    t0 = time.perf_counter()
    wb = WindowBatcher(X, y, L, device=dev, batch_size=B)
    out['batcher_create_s'] = time.perf_counter() - t0
    res = train_model(make_model(cfg), wb, epochs=1, batch_size=B, device=dev, progress=False, seed=0)
    out['trainer_samples_per_s'] = res.train_samples_per_s
    out['trainer_epoch_s'] = float(res.epochs.seconds.iloc[0])
    out['trainer_total_s'] = res.seconds
    out['trainer_steps'] = res.n_steps
    out['trainer_skipped_steps'] = res.n_skipped_steps
    out['trainer_time_to_first_step_s'] = res.time_to_first_step_s
    out['time_to_first_step_from_host_data_s'] = out['batcher_create_s'] + res.time_to_first_step_s
    out['trainer_vs_pure_compute'] = res.train_samples_per_s / out['pure_compute_samples_per_s']
    out['final_train_loss'] = float(res.epochs.train_loss.iloc[0])
    model = res.model
    del wb, res
    if dev.type == 'cuda': torch.cuda.empty_cache()

    # 4. evaluation of n_eval windows in bounded batches
    we = WindowBatcher(X[: a.n_eval + L], y[: a.n_eval + L], L, device=dev, batch_size=B)
    if dev.type == 'cuda':  # peak memory against the evaluation batch size, on the first 300k windows
        wsmall = WindowBatcher(X[: 300_000 + L], y[: 300_000 + L], L, device=dev, batch_size=B)
        out['eval_peak_by_batch_GiB'] = {}
        for eb in (2048, 4096, 8192, 16384):
            sync(dev); torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats(dev)
            t0 = time.perf_counter(); predict_proba(model, wsmall, batch_size=eb); sync(dev)
            out['eval_peak_by_batch_GiB'][eb] = (torch.cuda.max_memory_allocated(dev) / GiB, 300_000 / (time.perf_counter() - t0))
        del wsmall
        print('eval batch -> peak GPU GiB (all allocations), samples/s: ' +
              ', '.join(f"{k}: {v[0]:.2f} GiB, {v[1]:,.0f}/s" for k, v in out['eval_peak_by_batch_GiB'].items()), flush=True)
        torch.cuda.empty_cache()
    if dev.type == 'cuda':
        sync(dev); torch.cuda.reset_peak_memory_stats(dev)
        before = torch.cuda.memory_allocated(dev)
    t0 = time.perf_counter()
    p = predict_proba(model, we, batch_size=a.eval_batch)
    sync(dev)
    out['eval_s'] = time.perf_counter() - t0
    out['eval_samples_per_s'] = len(p) / out['eval_s']
    if dev.type == 'cuda':
        out['eval_peak_gpu_GiB'] = torch.cuda.max_memory_allocated(dev) / GiB
        out['eval_peak_gpu_above_start_GiB'] = (torch.cuda.max_memory_allocated(dev) - before) / GiB
        out['eval_resident_before_GiB'] = before / GiB
    assert p.shape == (a.n_eval, 3) and np.allclose(p.sum(1), 1, atol=1e-4)

    rows = [('pure model compute (fixed device batch)', f"{out['pure_compute_samples_per_s']:,.0f} samples/s"),
            ('compute + device window gather', f"{out['compute_plus_gather_samples_per_s']:,.0f} samples/s"),
            ('full trainer (WindowBatcher, guards, clip, schedule, history)', f"{out['trainer_samples_per_s']:,.0f} samples/s"),
            ('full trainer / pure compute', f"{out['trainer_vs_pure_compute']:.3f}x (target >= 0.9)"),
            (f"one epoch over {a.n_train:,} samples ({out['trainer_steps']} steps)", f"{out['trainer_epoch_s']:.2f} s in the loop, {out['trainer_total_s']:.2f} s for train_model (target < 15 s)"),
            ('time to first step: WindowBatcher creation + train_model to end of step 1', f"{out['time_to_first_step_from_host_data_s']:.2f} s ({out['batcher_create_s']:.2f} + {out['trainer_time_to_first_step_s']:.2f}) (target < 30 s)"),
            (f"predict_proba over {a.n_eval:,} samples, batch {a.eval_batch}", f"{out['eval_s']:.2f} s, {out['eval_samples_per_s']:,.0f} samples/s")]
    if dev.type == 'cuda':
        rows.append(('peak GPU memory during that evaluation (all allocations)', f"{out['eval_peak_gpu_GiB']:.2f} GiB (of which {out['eval_resident_before_GiB']:.2f} GiB resident before: features + model) (target < 4 GiB)"))
    w = max(len(r[0]) for r in rows)
    print('\n'.join(f"{k:<{w}}  {v}" for k, v in rows), flush=True)
    if a.json: Path(a.json).write_text(json.dumps(out, indent=1, default=float))


if __name__ == '__main__':
    main()
