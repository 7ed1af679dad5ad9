"""End-to-end pipeline at full size (issue 8): time and peak memory per stage, and walk-forward memory vs folds.

Usage (always under /usr/bin/time -v for the whole-process peak, "Maximum resident set size"):
    python benchmarks/bench_pipeline.py run BARS RUN_DIR [--max-train-windows N] [--max-val-windows N]
    python benchmarks/bench_pipeline.py wf  BARS RUN_DIR N_SPLITS [--max-train-windows N]
    python benchmarks/bench_pipeline.py table RUN_DIR        # per-stage table (markdown) from RUN_DIR/manifest.json

BARS is a synthetic 1-minute bar file, e.g. written once by
    python benchmarks/bench_data.py make 15800000 /tmp/bench/bars_15m.parquet
Model: LSTM(hidden 16, 1 layer) on windows of 30 bars, direction labels (10 bars, 2-tick dead band), one epoch
on the CPU with one thread (OMP_NUM_THREADS=1), batch 1024.
"""
import argparse
import json
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
import torch

torch.set_num_threads(1)
from scalp_lib.pipeline import PipelineConfig, run_pipeline, walk_forward  # noqa: E402


def config(bars, run_dir, max_train=None, max_val=None, progress=True):
    return PipelineConfig(
        data_path=bars, run_dir=run_dir, name="bench", seq_length=30,
        model={"type": "lstm", "hidden_size": 16, "num_layers": 1, "dropout_rate": 0.0},
        train={"epochs": 1, "batch_size": 1024, "eval_batch_size": 8192, "checkpoint_every_steps": 0},
        max_train_windows=max_train, max_val_windows=max_val,
        backtest={"entry_threshold": 0.45}, progress=progress)


def table(run_dir):
    m = json.load(open(os.path.join(run_dir, "manifest.json")))
    print(f"status: {m['status']}  rows: {m['data'].get('rows_used')}  git: {m['git_revision']}")
    print("| stage | seconds | peak RSS (MiB) | of which anonymous (MiB) | process max RSS so far (MiB) |")
    print("|---|---:|---:|---:|---:|")
    for k, s in m["stages"].items():
        anon = s.get("peak_rss_anon_mib")
        anon = "n/a" if anon is None else f"{anon:,.0f}"
        print(f"| {k} | {s['seconds']:.1f} | {s['peak_rss_mib']:,.0f} | {anon} | {s['process_maxrss_mib']:,.0f} |")
    tot = sum(s["seconds"] for s in m["stages"].values())
    anon = [s.get("peak_rss_anon_mib") for s in m["stages"].values() if s.get("peak_rss_anon_mib") is not None]
    anon = f"{max(anon):,.0f}" if anon else "n/a"
    print(f"| **total** | {tot:.1f} | {max(s['peak_rss_mib'] for s in m['stages'].values()):,.0f} | {anon} | |")
    for k in ("split", "scale", "windows", "features", "labels"):
        if k in m["counts"]:
            print(f"{k}: {json.dumps(m['counts'][k], default=str)[:600]}")
    for k, v in m["metrics"].items():
        print(f"metrics {k}: {json.dumps(v, default=str)[:600]}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["run", "wf", "table"])
    ap.add_argument("args", nargs="+")
    ap.add_argument("--max-train-windows", type=int, default=None)
    ap.add_argument("--max-val-windows", type=int, default=None)
    a = ap.parse_args()
    t0 = time.perf_counter()
    if a.cmd == "table":
        table(a.args[0])
        return
    bars, run_dir = a.args[0], a.args[1]
    cfg = config(bars, run_dir, a.max_train_windows, a.max_val_windows)
    if a.cmd == "run":
        r = run_pipeline(cfg)
    else:
        r = walk_forward(cfg, {"n_splits": int(a.args[2])}, warm_start=True)
    print(r)
    print(f"wall {time.perf_counter() - t0:.1f} s")
    table(run_dir)


if __name__ == "__main__":
    sys.exit(main())
