"""Study throughput: trials per hour of one fixed small study with 1, 2, ... worker processes (issue 16; issue 17 run 2).

Usage:
    python benchmarks/bench_study.py [--workers 1,2] [--device cpu|cuda] [--trials 12] [--days 40] [--model ffn|lstm] [--epochs 2]

Each worker count runs the same study from scratch in a fresh folder (same data, same space, random sampler with the
same seed, no pruner: every trial trains every fold), through `scalp_lib.study.run_study(..., final=False)`. With
more than one worker each worker is its own Python process; with one, the worker runs in this process. With
`--device cuda`, worker i trains on GPU i (mod the number of GPUs): run it with `--workers 1,N` on an N-GPU machine.

Two figures per worker count:
- end to end: n_trials / wall time of run_study (process start, imports, data cut and feature computation included);
- steady state: trials finished per hour between the first trial's start and the last trial's end (storage time stamps).
"""
import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
import optuna
import torch

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
from scalp_lib.data import demo_bars  # noqa: E402
from scalp_lib.study import StudyConfig, run_study  # noqa: E402

MODELS = {
    "ffn": ({"seq_length": 0, "model": {"type": "feedforward", "hidden_dims": [64, 32]}},
            {"model.hidden_dims": {"type": "categorical", "choices": [[32], [64, 32], [128, 64]]}}),
    "lstm": ({"seq_length": 30, "model": {"type": "lstm", "hidden_size": 64, "num_layers": 1}},
             {"model.hidden_size": {"type": "categorical", "choices": [32, 64, 128]}}),
}


def study_config(folder: Path, bars: Path, args, name: str) -> StudyConfig:
    base, space = MODELS[args.model]
    base = {**base, "feature_groups": "default", "train": {"epochs": args.epochs, "batch_size": 1024},
            "backtest": {"entry_threshold": 0.5}}
    space = {**space, "train.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
             "backtest.entry_threshold": {"type": "float", "low": 0.4, "high": 0.6}}
    return StudyConfig(name=name, study_dir=str(folder / name), data_path=str(bars), base=base, space=space,
                       n_trials=args.trials, test_frac=0.2, validation={"n_splits": 3, "embargo_bars": 60},
                       sampler={"type": "random"}, pruner={"type": "none"}, seed=0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--days", type=int, default=40)
    ap.add_argument("--model", default="ffn", choices=sorted(MODELS))
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--keep", action="store_true", help="keep the study folders")
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    root = Path(tempfile.mkdtemp(prefix="bench_study_"))
    bars = root / "bars.parquet"
    b = demo_bars(n_days=args.days, seed=0)
    b.attrs = {}
    b.reset_index().to_parquet(bars, index=False)
    gpus = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    print(f"# {platform.node()}: {os.cpu_count()} CPUs, GPUs: {torch.cuda.device_count()} x {gpus}; torch {torch.__version__}, "
          f"optuna {optuna.__version__}; OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}")
    print(f"# {len(b):,} bars ({args.days} sessions), model {args.model}, {args.epochs} epochs x 3 folds per trial, "
          f"{args.trials} trials, device {args.device}")
    print("| workers | trials | end-to-end wall (s) | end-to-end trials/hour | steady-state trials/hour | mean trial (s) |")
    print("|---:|---:|---:|---:|---:|---:|")
    for w in [int(x) for x in args.workers.split(",")]:
        cfg = study_config(root, bars, args, f"w{w}")
        t0 = time.perf_counter()
        res = run_study(cfg, workers=w, device=args.device, final=False)
        wall = time.perf_counter() - t0
        st = optuna.load_study(study_name=cfg.name, storage=f"sqlite:///{Path(cfg.study_dir) / 'study.db'}")
        done = [t for t in st.get_trials() if t.state == optuna.trial.TrialState.COMPLETE]
        span = (max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)).total_seconds()
        mean = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in done) / len(done)
        print(f"| {w} | {len(done)} | {wall:.1f} | {3600 * len(done) / wall:,.0f} | {3600 * len(done) / span:,.0f} | {mean:.2f} |",
              flush=True)
        assert res.counts["complete"] == args.trials
    if not args.keep: shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
