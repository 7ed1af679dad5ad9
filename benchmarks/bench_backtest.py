"""Backtest speed on ~10 million one-minute bars, with vectorbt's Portfolio.from_signals side by side when importable.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_backtest.py [--days 7247] [--repeat 3]
    # with vectorbt from an isolated target dir (not installed into .venv):
    PYTHONPATH=/tmp/vbtlib OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_backtest.py

One core: numpy is single-threaded here and OMP_NUM_THREADS=1. Times are wall-clock seconds of the call; the
first call in the process (cold: fresh memory pages) and the best of `--repeat` further calls are both printed.
"""
import argparse, os, platform, sys, time
os.environ.setdefault('OMP_NUM_THREADS', '1')
import numpy as np
import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from scalp_lib.backtest import run_backtest, signal_from_proba, momentum_proba
from scalp_lib.data import demo_bars


def timed(fn, repeat):
    t0 = time.perf_counter(); out = fn(); cold = time.perf_counter() - t0
    warm = []
    for _ in range(repeat):
        t0 = time.perf_counter(); out = fn(); warm.append(time.perf_counter() - t0)
    return out, cold, min(warm) if warm else float('nan')


def regime_signal(n, rng, p_change=0.05):
    "Random regimes of -1/0/+1 with mean length 1/p_change bars."
    change = rng.random(n) < p_change
    vals = rng.integers(-1, 2, n)
    return vals[np.maximum.accumulate(np.where(change, np.arange(n), 0))]


def vectorbt_run(vbt, bars, signal, tp_ticks, sl_ticks, tick, naive_index=True):
    """The same target signal as vectorbt orders: decided on the close, filled at the next open (shifted), stops in %.

    With the tz-aware index of our bars, vectorbt 1.2 + pandas 3 spend ~90% of the call turning the index into
    Timestamp objects (measured with cProfile: pandas `_iter_convert_chunk`); `naive_index=True` hands it the same
    wall-clock times without a time zone, which measures its simulation rather than that conversion."""
    if naive_index: bars = bars.set_axis(bars.index.tz_localize(None))
    sig = pd.Series(signal, index=bars.index)
    prev = sig.shift(1, fill_value=0)
    long_entries = ((sig > 0) & (prev <= 0)).shift(1, fill_value=False)
    long_exits = ((sig <= 0) & (prev > 0)).shift(1, fill_value=False)
    short_entries = ((sig < 0) & (prev >= 0)).shift(1, fill_value=False)
    short_exits = ((sig >= 0) & (prev < 0)).shift(1, fill_value=False)
    px = bars['close'].mean()
    pf = vbt.Portfolio.from_signals(bars['close'], entries=long_entries, exits=long_exits, short_entries=short_entries,
                                    short_exits=short_exits, price=bars['open'], open=bars['open'], high=bars['high'],
                                    low=bars['low'], size=1, sl_stop=sl_ticks * tick / px, tp_stop=tp_ticks * tick / px,
                                    fixed_fees=2.25, init_cash=1e9, freq='1min')
    return pf.trades.count()


def breakdown(bars, sig):
    "Where the time of one run_backtest call goes (the same steps, timed one by one; best of 2)."
    import scalp_lib.backtest as bt
    from scalp_lib.config import get_instrument
    from scalp_lib.data import session_dates
    from scalp_lib.metrics import compute_metrics
    spec, cfg = get_instrument('ES'), bt.backtest_settings()
    steps = {}
    def step(name, fn):
        best = float('inf')
        for _ in range(2):
            t0 = time.perf_counter(); out = fn(); best = min(best, time.perf_counter() - t0)
        steps[name] = best
        return out
    o, h, l, c = step('check bars, prices -> int ticks', lambda: bt.bar_ticks(bars, spec))
    s = step('check signal', lambda: bt._check_signal(sig, bars))
    sess = step('session_dates (scalp_lib.data)', lambda: session_dates(bars.index, spec))
    new = np.concatenate(([True], sess[1:] != sess[:-1]))
    m = step('engine set-up (_Market)', lambda: bt._Market(o, h, l, c, s, new, cfg['take_profit_ticks'], cfg['stop_loss_ticks'],
                                                          cfg['max_hold_bars'], True, cfg['intrabar_rule'], cfg['reentry']))
    tr = step('engine: trades and exits (_simulate)', lambda: bt._simulate(m))
    trades = step('ledger DataFrame incl. MAE/MFE', lambda: bt._ledger(tr, m, bars, spec, 2.25, 1.0))
    eq, pos = step('per-bar equity and position', lambda: bt._equity(trades, m, spec, 1e9))
    equity = pd.Series(eq, index=bars.index)
    step('compute_metrics', lambda: compute_metrics(trades, equity, instrument=spec, initial_capital_dollars=1e9, sessions=sess))
    print("\nbreakdown (momentum baseline, defaults), best of 2 per step:")
    for k, v in steps.items(): print(f"  {k:<40s} {v:6.3f} s")
    print(f"  {'sum':<40s} {sum(steps.values()):6.3f} s")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--days', type=int, default=7247, help='demo sessions (1380 bars each): 7247 -> 10,000,860 bars')
    ap.add_argument('--repeat', type=int, default=3)
    ap.add_argument('--no-vectorbt', action='store_true')
    ap.add_argument('--main-only', action='store_true', help='only the first case (momentum baseline, defaults)')
    a = ap.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible, python {platform.python_version()}, "
          f"numpy {np.__version__}, pandas {pd.__version__}, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}")
    t0 = time.perf_counter()
    bars = demo_bars(n_days=a.days, seed=0)
    print(f"bars: {len(bars):,} ({a.days} demo sessions), generated in {time.perf_counter() - t0:.1f} s")
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    mom = signal_from_proba(momentum_proba(bars), entry_threshold=0.6, hold=True)
    print(f"momentum baseline signal (momentum_proba + signal_from_proba): {time.perf_counter() - t0:.2f} s, not timed below")
    cases = [('momentum baseline, defaults (tp 8, sl 8, max hold 60, flat at session end, fresh)', mom, {}, a.repeat),
             ('random regimes (mean 20 bars), defaults', regime_signal(len(bars), rng), {}, a.repeat),
             ('momentum baseline, reentry=level (a trade on most bars: the slow case)', mom, dict(reentry='level'), 1),
             ('random regimes (mean 20 bars), reentry=level', regime_signal(len(bars), rng), dict(reentry='level'), 1)]
    if a.main_only: cases = cases[:1]
    vbt = None
    if not a.no_vectorbt:
        try:
            import vectorbt as vbt
            print(f"vectorbt {vbt.__version__} imported from {os.path.dirname(vbt.__file__)}")
        except ImportError as e:
            print(f"vectorbt not importable ({e}): no comparison")
    breakdown(bars, mom)
    for name, sig, kw, rep in cases:
        load = os.getloadavg()[0]
        res, cold, warm = timed(lambda: run_backtest(bars, sig, initial_capital_dollars=1e9, **kw), rep)
        print(f"\n[{name}]\n  scalp_lib run_backtest: {len(res.trades):,} trades; first call {cold:.2f} s, best of {rep} more {warm:.2f} s "
              f"({len(bars) / warm / 1e6:.1f} M bars/s; 1-min load average before: {load:.2f} on {os.cpu_count()} CPUs)")
        if vbt is not None and not kw and not a.main_only:
            small = bars.iloc[:5000]
            t0 = time.perf_counter(); vectorbt_run(vbt, small, sig[:5000], 8, 8, 0.25); jit = time.perf_counter() - t0
            n_vbt, vcold, vwarm = timed(lambda: vectorbt_run(vbt, bars, sig, 8, 8, 0.25), 1)
            print(f"  vectorbt Portfolio.from_signals (same signals, next-open price, % stops, tz-naive index): {n_vbt:,} trades; "
                  f"first call on 5,000 bars (numba compile) {jit:.2f} s; on all bars: first call {vcold:.2f} s, second {vwarm:.2f} s")
            t0 = time.perf_counter(); vectorbt_run(vbt, bars, sig, 8, 8, 0.25, naive_index=False); tz_aware = time.perf_counter() - t0
            print(f"  vectorbt, the same call with the bars' tz-aware index: {tz_aware:.2f} s")


if __name__ == '__main__':
    main()
