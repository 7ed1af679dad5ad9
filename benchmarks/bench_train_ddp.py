"""Multi-GPU training (issue 8): the scalp_lib trainer under torchrun + DistributedDataParallel vs one GPU.

LSTM 2 x 128 (dropout 0.1), 56 features, seq_length 60, global batch 4096, bf16 autocast, windows gathered on the
device (`WindowBatcher` on each rank's GPU, every rank holding the whole feature matrix). Run it once as a single
process and once under torchrun, then compare:

    export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1   # NVLink multicast off
    python3 benchmarks/bench_train_ddp.py --json single.json
    torchrun --standalone --nproc_per_node=2 benchmarks/bench_train_ddp.py --json ddp.json
    python3 benchmarks/bench_train_ddp.py --compare single.json ddp.json

On one GPU the trainer replays each full-size step from a CUDA graph (`cuda_graphs`, settings.ini [train]); a
distributed run trains eagerly. `--cuda-graphs off` times the one-GPU trainer eagerly too, to separate the two effects.

Each run measures
  (a/b) the full trainer's throughput (`train_model` on a WindowBatcher, guards, clipping, schedule, history;
        one epoch over --n-train windows, after a short warm-up run), and a bare loop (forward, loss, backward,
        fused AdamW, DDP when distributed) on random device-gathered windows as the reference;
  (c)   the validation-loss trajectory of --traj-epochs epochs on a smaller learnable data set (--traj-train
        training and --traj-val validation windows), same seed and global batch; the single-process run also
        trains with another trainer seed, to show how far apart two equally valid runs are.
--device cpu --quick checks the script (gloo under torchrun on a CPU); its figures are not benchmarks.
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import numpy as np
import torch
import torch.nn.functional as F

from scalp_lib.models import build_model
from scalp_lib.sequences import WindowBatcher
from scalp_lib.train import distributed_env, init_distributed, train_model


def learnable_data(n_rows, n_features, seed):
    "Random features; the class of row t depends on features 0 and 1 over rows t-10..t-1 (inside the window ending at t-1)."
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n_rows, n_features, generator=g)
    s = (X[:, 0] - 0.5 * X[:, 1]).double()
    c = torch.cumsum(torch.cat([torch.zeros(1, dtype=torch.float64), s]), 0)
    signal = torch.zeros(n_rows, dtype=torch.float64)
    signal[10:] = c[10:n_rows] - c[:n_rows - 10]          # sum of s over rows t-10 .. t-1
    signal += 1.5 * torch.randn(n_rows, generator=g, dtype=torch.float64)
    q = torch.quantile(signal[:min(n_rows, 1_000_000)].float(), torch.tensor([1 / 3, 2 / 3]))
    y = torch.bucketize(signal.float(), q)
    return X.numpy(), y.numpy()


def make_model(cfg, seed=0):
    torch.manual_seed(seed)
    return build_model(cfg)


def sync(dev):
    if dev.type == 'cuda': torch.cuda.synchronize(dev)


def bare_loop(cfg, feats, tg, L, per_rank_batch, steps, dev, amp, ddp):
    "Forward + loss + backward + fused AdamW on random device-gathered windows; DDP-wrapped when distributed."
    m = make_model(cfg).to(dev).train()
    net = torch.nn.parallel.DistributedDataParallel(m, device_ids=[dev.index] if dev.type == 'cuda' else None) if ddp else m
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3, fused=dev.type == 'cuda')
    steps_t = torch.arange(L, device=dev)
    g = torch.Generator(device=dev).manual_seed(1000 + (torch.distributed.get_rank() if ddp else 0))
    n = len(feats) - L
    def step():
        idx = torch.randint(0, n, (per_rank_batch,), device=dev, generator=g)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            logits = net(feats[idx[:, None] + steps_t])
        F.cross_entropy(logits.float(), tg[idx + L]).backward()
        opt.step(); opt.zero_grad(set_to_none=True)
    for _ in range(max(3, steps // 10)): step()
    sync(dev)
    t = time.perf_counter()
    for _ in range(steps): step()
    sync(dev)
    return time.perf_counter() - t


def run(a):
    env = distributed_env()
    ddp = env is not None and env['world_size'] > 1
    ctx = init_distributed(a.device) if ddp else None
    dev = ctx.device if ddp else torch.device(a.device)
    rank, world = (ctx.rank, ctx.world_size) if ddp else (0, 1)
    say = (lambda *s: print(*s, flush=True)) if rank == 0 else (lambda *s: None)
    amp = dev.type == 'cuda'
    L, Fn, B = a.seq_length, a.features, a.batch_size
    cfg = {'type': 'lstm', 'input_dim': Fn, 'hidden_size': 128, 'num_layers': 2, 'dropout_rate': 0.1, 'num_classes': 3}
    out = {'world_size': world, 'device': torch.cuda.get_device_name(dev) if dev.type == 'cuda' else 'cpu',
           'torch': torch.__version__, 'nccl': '.'.join(map(str, torch.cuda.nccl.version())) if dev.type == 'cuda' else None,
           'backend': ctx.backend if ddp else None, 'config': cfg, 'batch_size_global': B, 'seq_length': L,
           'n_train': a.n_train, 'NCCL_NVLS_ENABLE': os.environ.get('NCCL_NVLS_ENABLE')}
    say(f"world_size {world}, device {out['device']}, torch {out['torch']}, nccl {out['nccl']}, backend {out['backend']}, "
        f"NCCL_NVLS_ENABLE={out['NCCL_NVLS_ENABLE']}")

    # (a/b) throughput: the full trainer, then the bare loop
    t0 = time.perf_counter()
    X, y = learnable_data(a.n_train + L, Fn, seed=0)
    say(f"data {X.shape} made in {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    wb = WindowBatcher(X, y, L, device=dev, batch_size=B, gather='device')
    out['batcher_create_s'] = time.perf_counter() - t0
    n_warm = min(a.n_train, 50 * B)
    warm = WindowBatcher(X[:n_warm + L], y[:n_warm + L], L, device=dev, batch_size=B, gather='device')
    graphs = {'off': {'cuda_graphs': False}, 'default': {}}[a.cuda_graphs]
    train_model(make_model(cfg), warm, epochs=1, batch_size=B, device=dev, progress=False, seed=0, **graphs)  # cuDNN, NCCL, allocator warm-up
    del warm
    res = train_model(make_model(cfg), wb, epochs=1, batch_size=B, device=dev, progress=False, seed=0, **graphs)
    out.update(trainer_samples_per_s=res.train_samples_per_s, trainer_epoch_s=float(res.epochs.seconds.iloc[0]),
               trainer_total_s=res.seconds, trainer_steps=res.n_steps, trainer_skipped=res.n_skipped_steps,
               trainer_time_to_first_step_s=res.time_to_first_step_s, trainer_train_loss=float(res.epochs.train_loss.iloc[0]),
               trainer_params=res.params.get('per_rank_batch_size', B), trainer_graph_steps=res.params.get('cuda_graph_steps'),
               trainer_graphs_off=res.params.get('cuda_graphs_off'))
    say(f"full trainer: {res.train_samples_per_s:,.0f} samples/s over {res.n_steps} steps ({float(res.epochs.seconds.iloc[0]):.2f} s), "
        f"per-rank batch {B // world}, skipped {res.n_skipped_steps}, train loss {out['trainer_train_loss']:.4f}, "
        f"CUDA-graph steps {out['trainer_graph_steps']} ({out['trainer_graphs_off'] or 'graphs on'})")
    feats, tg = wb.features, wb.targets.long()
    s = bare_loop(cfg, feats, tg, L, B // world, a.steps, dev, amp, ddp)
    out['bare_loop_samples_per_s'] = a.steps * B / s
    say(f"bare loop: {out['bare_loop_samples_per_s']:,.0f} samples/s ({a.steps} steps of {B // world} per rank)")
    del wb, feats, tg, X, y, res
    if dev.type == 'cuda': torch.cuda.empty_cache()

    if a.no_trajectory:
        if rank == 0 and a.json: Path(a.json).write_text(json.dumps(out, indent=1, default=float))
        return
    # (c) validation-loss trajectory on a smaller learnable data set
    Xt, yt = learnable_data(a.traj_train + a.traj_val + 2 * L, Fn, seed=1)
    cut = a.traj_train + L
    wtr = WindowBatcher(Xt[:cut], yt[:cut], L, device=dev, batch_size=B, gather='device')
    wva = WindowBatcher(Xt[cut:], yt[cut:], L, device=dev, batch_size=B, gather='device')
    out['trajectory'] = {}
    for trainer_seed in ([0, 1] if not ddp else [0]):
        r = train_model(make_model(cfg, seed=0), wtr, wva, epochs=a.traj_epochs, batch_size=B, device=dev, progress=False,
                        seed=trainer_seed, early_stopping_patience=0, **graphs)
        out['trajectory'][f'seed{trainer_seed}'] = {'val_loss': r.epochs.val_loss.tolist(), 'val_accuracy': r.epochs.val_accuracy.tolist(),
                                                     'train_loss': r.epochs.train_loss.tolist(), 'skipped': r.n_skipped_steps}
        say(f"trajectory seed {trainer_seed}: val loss " + ', '.join(f"{v:.5f}" for v in r.epochs.val_loss)
            + " | val acc " + ', '.join(f"{v:.4f}" for v in r.epochs.val_accuracy))
    if rank == 0 and a.json: Path(a.json).write_text(json.dumps(out, indent=1, default=float))


def compare(single_path, ddp_path):
    s, d = json.loads(Path(single_path).read_text()), json.loads(Path(ddp_path).read_text())
    W = d['world_size']
    ratio = d['trainer_samples_per_s'] / s['trainer_samples_per_s']
    bare = d['bare_loop_samples_per_s'] / s['bare_loop_samples_per_s']
    v1, vd, v1b = (np.array(s['trajectory']['seed0']['val_loss']), np.array(d['trajectory']['seed0']['val_loss']),
                   np.array(s['trajectory']['seed1']['val_loss']))
    print(f"device: {d['device']} x {W}, torch {d['torch']}, NCCL {d['nccl']}, NCCL_NVLS_ENABLE={d['NCCL_NVLS_ENABLE']}")
    print(f"full trainer, 1 GPU : {s['trainer_samples_per_s']:>12,.0f} samples/s ({s['trainer_epoch_s']:.2f} s per epoch of {s['n_train']:,}; "
          f"CUDA-graph steps {s.get('trainer_graph_steps')} of {s['trainer_steps']})")
    print(f"full trainer, {W} GPUs: {d['trainer_samples_per_s']:>12,.0f} samples/s ({d['trainer_epoch_s']:.2f} s per epoch)  ->  {ratio:.3f}x (target >= 1.9x)")
    print(f"bare loop,    1 GPU : {s['bare_loop_samples_per_s']:>12,.0f} samples/s")
    print(f"bare loop,    {W} GPUs: {d['bare_loop_samples_per_s']:>12,.0f} samples/s  ->  {bare:.3f}x")
    print("validation loss per epoch (same seed and global batch):")
    print("epoch  1 GPU seed 0   %d GPUs seed 0   |diff|     1 GPU seed 1   |seed diff|" % W)
    for e in range(len(v1)):
        print(f"{e:5d}  {v1[e]:12.5f}  {vd[e]:13.5f}  {abs(vd[e] - v1[e]):9.5f}  {v1b[e]:12.5f}  {abs(v1b[e] - v1[e]):9.5f}")
    print(f"max |DDP - 1 GPU| = {np.abs(vd - v1).max():.5f} (tolerance 0.01); max |seed 1 - seed 0| on 1 GPU = {np.abs(v1b - v1).max():.5f}; "
          f"val loss fell {v1[0] - v1[-1]:.4f} over the run")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--n-train', type=int, default=6_200_000)
    ap.add_argument('--features', type=int, default=56)
    ap.add_argument('--seq-length', type=int, default=60)
    ap.add_argument('--batch-size', type=int, default=4096, help='the global batch')
    ap.add_argument('--steps', type=int, default=300, help='timed steps of the bare loop')
    ap.add_argument('--traj-train', type=int, default=600_000)
    ap.add_argument('--traj-val', type=int, default=100_000)
    ap.add_argument('--traj-epochs', type=int, default=4)
    ap.add_argument('--no-trajectory', action='store_true', help='throughput only')
    ap.add_argument('--cuda-graphs', choices=['default', 'off'], default='default',
                    help="'off': the trainer runs eagerly (cuda_graphs=False) also on one GPU; 'default': settings.ini")
    ap.add_argument('--device', default='cuda')
    ap.add_argument('--quick', action='store_true', help='tiny sizes, for checking the script on a CPU')
    ap.add_argument('--json', default=None)
    ap.add_argument('--compare', nargs=2, metavar=('SINGLE_JSON', 'DDP_JSON'))
    a = ap.parse_args()
    if a.compare: return compare(*a.compare)
    if a.quick: a.n_train, a.steps, a.batch_size, a.traj_train, a.traj_val, a.traj_epochs, a.features = 8192, 4, 256, 4096, 1024, 2, 8
    run(a)


if __name__ == '__main__':
    main()
