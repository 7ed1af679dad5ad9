"""Backtest speed on ~10 million one-minute bars: the whole run_backtest call, where its time goes, and the compile cost.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_backtest.py [--days 7247] [--repeat 3] [--cold]

One core (numpy single-threaded, numba kernels are serial). Times are wall-clock seconds of the call, with the process
CPU seconds beside them; the first call in the process and the best of `--repeat` further calls are printed.
`--cold` points numba's cache at an empty folder first, so the first call shows the compile cost a machine pays once
(cached in `scalp_lib/__pycache__` afterwards). Peers side by side: `benchmarks/compare_peers.py backtest`.
"""
import argparse, os, platform, sys, tempfile, time
os.environ.setdefault('OMP_NUM_THREADS', '1')
os.environ.setdefault('NUMBA_NUM_THREADS', '1')
if '--cold' in sys.argv: os.environ['NUMBA_CACHE_DIR'] = tempfile.mkdtemp(prefix='numba-cold-')
import numpy as np
import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import scalp_lib.backtest as bt
from scalp_lib.backtest import run_backtest, signal_from_proba, momentum_proba
from scalp_lib.config import get_instrument
from scalp_lib.data import demo_bars
from scalp_lib.metrics import compute_metrics


def timed(fn, repeat):
    w0, c0 = time.perf_counter(), time.process_time(); out = fn()
    cold = (time.perf_counter() - w0, time.process_time() - c0)
    warm = []
    for _ in range(repeat):
        w0, c0 = time.perf_counter(), time.process_time(); out = fn()
        warm.append((time.perf_counter() - w0, time.process_time() - c0))
    return out, cold, min(warm) if warm else (float('nan'), float('nan'))


def regime_signal(n, rng, p_change=0.05):
    "Random regimes of -1/0/+1 with mean length 1/p_change bars."
    change = rng.random(n) < p_change
    vals = rng.integers(-1, 2, n)
    return vals[np.maximum.accumulate(np.where(change, np.arange(n), 0))]


def breakdown(bars, sig, reentry='fresh'):
    "Where the time of one run_backtest call goes (the same steps, timed one by one; best of 3, CPU seconds)."
    spec, cfg = get_instrument('ES'), bt.backtest_settings(reentry=reentry)
    steps = {}
    def step(name, fn):
        best = float('inf')
        for _ in range(3):
            c0 = time.process_time(); out = fn(); best = min(best, time.process_time() - c0)
        steps[name] = best
        return out
    o, h, l, c, inv = step('check bars (one compiled pass)', lambda: bt._bar_prices(bars, spec))
    s = step('check signal', lambda: bt._check_signal(sig, bars))
    sess = step('session dates (one tz lookup per hour)', lambda: bt._session_dates(bars.index, spec))
    new = np.concatenate(([True], sess[1:] != sess[:-1]))
    tr, outcome = step('simulation (compiled pass)', lambda: bt._simulate(o, h, l, c, s, new, cfg, inv))
    trades = step('ledger DataFrame', lambda: bt._ledger(tr, bars, spec, 2.25, 1.0))
    eq, pos = step('per-bar equity and position (compiled)', lambda: bt._equity(tr, trades, c, inv, spec, 1e9))
    equity = pd.Series(eq, index=bars.index, copy=False)
    step('compute_metrics', lambda: compute_metrics(trades, equity, instrument=spec, initial_capital_dollars=1e9, sessions=sess))
    step('reconciliation table', lambda: bt.signal_reconciliation(outcome, len(bars), int(trades['bars_held'].sum())))
    print(f"\nbreakdown ({reentry}, {len(trades):,} trades), best of 3 per step, CPU seconds:")
    for k, v in steps.items(): print(f"  {k:<42s} {v:6.3f} s")
    print(f"  {'sum':<42s} {sum(steps.values()):6.3f} s")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--days', type=int, default=7247, help='demo sessions (1380 bars each): 7247 -> 10,000,860 bars')
    ap.add_argument('--repeat', type=int, default=3)
    ap.add_argument('--cold', action='store_true', help='empty numba cache: the first call compiles')
    a = ap.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible, python {platform.python_version()}, "
          f"numpy {np.__version__}, pandas {pd.__version__}, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}, "
          f"load average {os.getloadavg()}")
    small = demo_bars(n_days=4, seed=0)
    w0 = time.perf_counter(); run_backtest(small, regime_signal(len(small), np.random.default_rng(0)))
    print(f"first call in this process ({len(small):,} bars; numba {'compiles: --cold' if a.cold else 'loads its cache, or compiles on a first run'}): "
          f"{time.perf_counter() - w0:.2f} s")
    t0 = time.perf_counter()
    bars = demo_bars(n_days=a.days, seed=0)
    print(f"bars: {len(bars):,} ({a.days} demo sessions), generated in {time.perf_counter() - t0:.1f} s")
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    mom = signal_from_proba(momentum_proba(bars), entry_threshold=0.6, hold=True)
    print(f"momentum baseline signal (momentum_proba + signal_from_proba): {time.perf_counter() - t0:.2f} s, not timed below")
    breakdown(bars, mom)
    breakdown(bars, mom, 'level')
    cases = [('momentum baseline, defaults (tp 8, sl 8, max hold 60, flat at session end, fresh)', mom, {}),
             ('random regimes (mean 20 bars), defaults', regime_signal(len(bars), rng), {}),
             ('momentum baseline, reentry=level (a trade on most bars)', mom, dict(reentry='level')),
             ('standing long signal, reentry=level, no session flat', np.ones(len(bars), np.int64), dict(reentry='level', flat_at_session_end=False)),
             ('random regimes (mean 20 bars), reentry=level', regime_signal(len(bars), rng), dict(reentry='level'))]
    for name, sig, kw in cases:
        load = os.getloadavg()[0]
        res, cold, warm = timed(lambda: run_backtest(bars, sig, initial_capital_dollars=1e9, **kw), a.repeat)
        print(f"\n[{name}]\n  run_backtest: {len(res.trades):,} trades; first call {cold[0]:.2f} s ({cold[1]:.2f} s CPU), "
              f"best of {a.repeat} more {warm[0]:.2f} s ({warm[1]:.2f} s CPU), {len(bars) / warm[0] / 1e6:.1f} M bars/s; "
              f"1-min load average before: {load:.2f} on {os.cpu_count()} CPUs")


if __name__ == '__main__':
    main()
