"""Training and evaluation throughput on a GPU: LSTM 2 x 128, 56 features, seq_length 60, batch 4096, bf16.

Measures, in one process on one device, interleaved:
  1. pure model compute: forward (bf16 autocast) + loss + backward + fused AdamW on one fixed device batch,
     launched eagerly from Python (the reference of the target) and replayed from a CUDA graph (what the GPU can do
     when launch overhead is gone);
  2. the eager pure compute plus the window gather from a device-resident feature matrix (random windows each step);
  3. the full trainer (`scalp_lib.train.train_model` on a `scalp_lib.sequences.WindowBatcher`): guards, clipping,
     scheduler, class weights, history; one epoch over --n-train samples, --repeats times, with CUDA graphs (the
     default) and without (`cuda_graphs=False`), and, with --baseline, another checkout's trainer in the same runs.
     The gap between the eager and the graphed variants is host launch time (the GPU waiting for Python); the gap
     between the graphed trainer and the graphed pure compute is the trainer's own GPU work (gather, guards, history);
  4. `predict_proba` over --n-eval samples in batches of --eval-batch: time and peak GPU memory.

    python benchmarks/bench_train_gpu.py                      # the issue's sizes (needs a CUDA GPU)
    python benchmarks/bench_train_gpu.py --baseline /path/to/other/checkout/scalp_lib
    python benchmarks/bench_train_gpu.py --device cpu --quick # a smoke test of the script itself
"""
import argparse
import importlib
import importlib.util
import json
import statistics
import sys
import time
import warnings
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
    "Warm up, then the wall time of n_steps with a device sync at both ends."
    for _ in range(warmup): step()
    sync(dev)
    t = time.perf_counter()
    for _ in range(n_steps): step()
    sync(dev)
    return time.perf_counter() - t


def make_model(cfg, seed=0):
    torch.manual_seed(seed)
    return build_model(cfg)


def load_baseline(path):
    "Import the scalp_lib package at `path` (another checkout's `scalp_lib/` folder) as `scalp_lib_baseline`."
    path = Path(path).resolve()
    spec = importlib.util.spec_from_file_location('scalp_lib_baseline', path / '__init__.py', submodule_search_locations=[str(path)])
    mod = importlib.util.module_from_spec(spec)
    sys.modules['scalp_lib_baseline'] = mod
    spec.loader.exec_module(mod)
    return importlib.import_module('scalp_lib_baseline.train')


def pure_compute(cfg, xb, yb, dev, amp):
    "An eager pure-compute step: forward, loss, backward, fused AdamW, on the fixed batch (xb, yb)."
    m = make_model(cfg).to(dev).train()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3, fused=True)
    def step(x=xb, t=yb):
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            logits = m(x)
        F.cross_entropy(logits.float(), t).backward()
        opt.step(); opt.zero_grad(set_to_none=True)
    return step


def pure_compute_graphed(cfg, xb, yb, dev, amp):
    "The same step recorded once as a CUDA graph (capturable fused AdamW) and replayed."
    m = make_model(cfg).to(dev).train()
    opt = torch.optim.AdamW(m.parameters(), lr=torch.tensor(1e-3, device=dev), fused=True, capturable=True)
    def body():
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            logits = m(xb)
        F.cross_entropy(logits.float(), yb).backward()
        opt.step()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # capturable=True stepped outside a capture during the warm-up
        for _ in range(3): body(); opt.zero_grad(set_to_none=True)
    sync(dev)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g): body()
    return g.replay


def trainer_run(train_fn, cfg, wb, B, dev, **kw):
    "One epoch of a trainer over the WindowBatcher; returns its TrainResult."
    return train_fn(make_model(cfg), wb, epochs=1, batch_size=B, device=dev, progress=False, seed=0, **kw)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--n-train', type=int, default=6_200_000)
    ap.add_argument('--n-eval', type=int, default=2_200_000)
    ap.add_argument('--features', type=int, default=56)
    ap.add_argument('--seq-length', type=int, default=60)
    ap.add_argument('--batch-size', type=int, default=4096)
    ap.add_argument('--eval-batch', type=int, default=None, help='default: settings.ini [train] eval_batch_size')
    ap.add_argument('--steps', type=int, default=300, help='timed steps for the pure-compute measurements')
    ap.add_argument('--repeats', type=int, default=2, help='one-epoch trainer runs per variant, interleaved')
    ap.add_argument('--baseline', default=None, help="another checkout's scalp_lib/ folder: its trainer is timed in the same runs")
    ap.add_argument('--no-eval', action='store_true', help='skip the evaluation measurements')
    ap.add_argument('--device', default='cuda')
    ap.add_argument('--quick', action='store_true', help='tiny sizes, for checking the script on a CPU')
    ap.add_argument('--json', default=None, help='write the figures here')
    a = ap.parse_args()
    if a.quick: a.n_train, a.n_eval, a.steps, a.batch_size, a.eval_batch, a.repeats = 20_000, 10_000, 5, 512, 2048, 1
    from scalp_lib.config import section_defaults
    a.eval_batch = int(section_defaults('train', eval_batch_size=a.eval_batch)['eval_batch_size'])
    dev = torch.device(a.device)
    cuda = dev.type == 'cuda'
    Fn, L, B = a.features, a.seq_length, a.batch_size
    cfg = {'type': 'lstm', 'input_dim': Fn, 'hidden_size': 128, 'num_layers': 2, 'dropout_rate': 0.1, 'num_classes': 3}
    out = {'device': torch.cuda.get_device_name(dev) if cuda else 'cpu', 'torch': torch.__version__,
           'cudnn': torch.backends.cudnn.version() if cuda else None, 'config': cfg, 'batch_size': B, 'seq_length': L,
           'n_train': a.n_train, 'n_eval': a.n_eval, 'date': time.strftime('%Y-%m-%d')}
    print(f"device: {out['device']}, torch {torch.__version__}, cuDNN {out['cudnn']}, model params {count_parameters(make_model(cfg)):,}", flush=True)
    trainers = {'trainer, CUDA graphs': (train_model, {}), 'trainer, eager (cuda_graphs=False)': (train_model, {'cuda_graphs': False})}
    if a.baseline:
        base = load_baseline(a.baseline)
        trainers['baseline trainer (--baseline)'] = (base.train_model, {})
        print(f"baseline: {base.__file__}", flush=True)

    # data in host memory: the reference point for 'time to first step'
    g = torch.Generator().manual_seed(0)
    X = torch.randn(a.n_train + L, Fn, generator=g).numpy()
    y = torch.randint(0, 3, (a.n_train + L,), generator=g).numpy()
    amp = cuda

    # 1./2. pure model compute on one fixed device batch, eager and graphed; then with the window gather
    xb, yb = torch.randn(B, L, Fn, device=dev), torch.randint(0, 3, (B,), device=dev)
    warm = 20 if not a.quick else 1
    pure = {'eager': [], 'graphed': []}
    steps = {'eager': pure_compute(cfg, xb, yb, dev, amp)}
    if cuda: steps['graphed'] = pure_compute_graphed(cfg, xb, yb, dev, amp)
    for _ in range(2):  # interleaved, twice
        for k, fn in steps.items(): pure[k].append(a.steps * B / timed_steps(fn, a.steps, warm, dev))
    out['pure_compute_samples_per_s_runs'] = pure['eager']
    out['pure_compute_samples_per_s'] = statistics.mean(pure['eager'])
    if cuda:
        out['pure_compute_graphed_samples_per_s_runs'] = pure['graphed']
        out['pure_compute_graphed_samples_per_s'] = statistics.mean(pure['graphed'])
    feats, tg = torch.from_numpy(X).to(dev), torch.from_numpy(y).to(dev)
    steps_t = torch.arange(L, device=dev)
    eager_step = pure_compute(cfg, xb, yb, dev, amp)
    def gather_step():
        idx = torch.randint(0, a.n_train, (B,), device=dev)
        eager_step(feats[idx[:, None] + steps_t], tg[idx + L])
    s = timed_steps(gather_step, a.steps, 5 if not a.quick else 1, dev)
    out['compute_plus_gather_samples_per_s'] = a.steps * B / s
    del feats, tg
    if cuda: torch.cuda.empty_cache()

    # 3. the full trainers, one epoch over n_train windows each, interleaved
    t0 = time.perf_counter()
    wb = WindowBatcher(X, y, L, device=dev, batch_size=B)
    out['batcher_create_s'] = time.perf_counter() - t0
    runs = {k: [] for k in trainers}
    for r in range(a.repeats):
        for k, (fn, kw) in trainers.items():
            res = trainer_run(fn, cfg, wb, B, dev, **kw)
            runs[k].append(res)
            print(f"  run {r + 1} {k}: {res.train_samples_per_s:,.0f} samples/s, epoch {float(res.epochs.seconds.iloc[0]):.2f} s, "
                  f"graph steps {res.params.get('cuda_graph_steps', 'n/a')} of {res.n_steps}, skipped {res.n_skipped_steps}", flush=True)
            del res
            if cuda: torch.cuda.empty_cache()
    out['trainers'] = {}
    for k, rs in runs.items():
        sps = [r.train_samples_per_s for r in rs]
        out['trainers'][k] = {'samples_per_s_runs': sps, 'samples_per_s': statistics.mean(sps),
                              'vs_pure_compute': statistics.mean(sps) / out['pure_compute_samples_per_s'],
                              'epoch_s': [float(r.epochs.seconds.iloc[0]) for r in rs], 'total_s': [r.seconds for r in rs],
                              'steps': rs[0].n_steps, 'graph_steps': rs[0].params.get('cuda_graph_steps'),
                              'graphs_off': rs[0].params.get('cuda_graphs_off'), 'skipped': [r.n_skipped_steps for r in rs],
                              'time_to_first_step_s': rs[0].time_to_first_step_s,
                              'final_train_loss': [float(r.epochs.train_loss.iloc[0]) for r in rs]}
        if cuda: out['trainers'][k]['vs_pure_compute_graphed'] = statistics.mean(sps) / out['pure_compute_graphed_samples_per_s']
    main_k = 'trainer, CUDA graphs'
    out['trainer_samples_per_s'] = out['trainers'][main_k]['samples_per_s']
    out['trainer_vs_pure_compute'] = out['trainers'][main_k]['vs_pure_compute']
    out['time_to_first_step_from_host_data_s'] = out['batcher_create_s'] + out['trainers'][main_k]['time_to_first_step_s']
    model = runs[main_k][-1].model
    del runs

    # 4. evaluation of n_eval windows in bounded batches
    if not a.no_eval:
        we = WindowBatcher(X[: a.n_eval + L], y[: a.n_eval + L], L, device=dev, batch_size=B)
        if cuda:
            sync(dev); torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats(dev)
            before = torch.cuda.memory_allocated(dev)
        t0 = time.perf_counter()
        p = predict_proba(model, we, batch_size=a.eval_batch)
        sync(dev)
        out['eval_s'] = time.perf_counter() - t0
        out['eval_samples_per_s'] = len(p) / out['eval_s']
        if cuda:
            out['eval_peak_gpu_GiB'] = torch.cuda.max_memory_allocated(dev) / GiB
            out['eval_resident_before_GiB'] = before / GiB
        assert p.shape == (a.n_eval, 3) and np.allclose(p.sum(1), 1, atol=1e-4)

    ms = lambda sps: 1e3 * B / sps
    rows = [('pure model compute, eager (fixed device batch)', f"{out['pure_compute_samples_per_s']:,.0f} samples/s ({ms(out['pure_compute_samples_per_s']):.3f} ms/step; runs {', '.join(f'{v:,.0f}' for v in pure['eager'])})")]
    if cuda:
        rows.append(('pure model compute, CUDA graph', f"{out['pure_compute_graphed_samples_per_s']:,.0f} samples/s ({ms(out['pure_compute_graphed_samples_per_s']):.3f} ms/step; runs {', '.join(f'{v:,.0f}' for v in pure['graphed'])})"))
    rows.append(('pure compute, eager + device window gather', f"{out['compute_plus_gather_samples_per_s']:,.0f} samples/s"))
    for k, t in out['trainers'].items():
        extra = f", {t['vs_pure_compute_graphed']:.3f}x graphed pure" if cuda else ''
        rows.append((f"{k}", f"{t['samples_per_s']:,.0f} samples/s ({ms(t['samples_per_s']):.3f} ms/step) = {t['vs_pure_compute']:.3f}x eager pure{extra}; "
                            f"graph steps {t['graph_steps']}/{t['steps']}"))
    rows.append(('full trainer (CUDA graphs) / pure compute (eager)', f"{out['trainer_vs_pure_compute']:.3f}x (target >= 0.93)"))
    rows.append(('time to first step: WindowBatcher creation + train_model to end of step 1', f"{out['time_to_first_step_from_host_data_s']:.2f} s"))
    if 'eval_s' in out:
        rows.append((f"predict_proba over {a.n_eval:,} samples, batch {a.eval_batch}", f"{out['eval_s']:.2f} s, {out['eval_samples_per_s']:,.0f} samples/s"
                     + (f", peak GPU {out['eval_peak_gpu_GiB']:.2f} GiB" if cuda else '')))
    w = max(len(r[0]) for r in rows)
    print('\n'.join(f"{k:<{w}}  {v}" for k, v in rows), flush=True)
    if a.json: Path(a.json).write_text(json.dumps(out, indent=1, default=float))


if __name__ == '__main__':
    main()
