"""Label speed on about a million synthetic 1-minute bars (725 ES sessions of scalp_lib.data.demo_bars).

    OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 /usr/bin/time -v .venv/bin/python benchmarks/bench_labels.py [--days 725] [--only triple_barrier]

Prints one line per label function: rows, seconds (best of --repeat), rows per second; one core (numba kernels are
serial). The first triple-barrier call in the process (numba cache load, or its compilation on a first run) is
printed separately and not in the best-of figures.
"""
import argparse
import os
import time
os.environ.setdefault('OMP_NUM_THREADS', '1')
os.environ.setdefault('NUMBA_NUM_THREADS', '1')

from scalp_lib.data import demo_bars
from scalp_lib import labels as L

CASES = {
    'direction': lambda b: L.direction_labels(b, 10, 2),
    'triple_barrier_ticks_V30': lambda b: L.triple_barrier_labels(b, pt_ticks=8, sl_ticks=8, vertical_bars=30),
    'triple_barrier_atr_V30': lambda b: L.triple_barrier_labels(b, pt_atr=2.0, sl_atr=1.0, vertical_bars=30),
    'triple_barrier_ticks_V120': lambda b: L.triple_barrier_labels(b, pt_ticks=40, sl_ticks=40, vertical_bars=120),
    'forward_log_return': lambda b: L.forward_log_return(b, 10),
    'vol_scaled_return': lambda b: L.vol_scaled_return(b, 10),
    'rank_target_past20': lambda b: L.rank_target(b, 10),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--days', type=int, default=725)
    ap.add_argument('--repeat', type=int, default=3)
    ap.add_argument('--only', default=None)
    a = ap.parse_args()
    t0 = time.perf_counter()
    L.triple_barrier_labels(demo_bars(n_days=2, seed=1))
    print(f"first triple_barrier_labels call in this process (2 sessions): {time.perf_counter() - t0:.2f} s")
    bars = demo_bars(n_days=a.days, seed=1)
    print(f"bars: {len(bars):,} rows; load average {os.getloadavg()}")
    for name, f in CASES.items():
        if a.only and a.only not in name: continue
        best = min(_timed(f, bars) for _ in range(a.repeat))
        print(f"{name:28s} {len(bars):>10,} rows  {best:7.3f} s  {len(bars)/best/1e6:6.2f} M rows/s")


def _timed(f, bars):
    t0 = time.perf_counter()
    f(bars)
    return time.perf_counter() - t0


if __name__ == '__main__':
    main()
