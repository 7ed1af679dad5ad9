"""scalp_lib against its peers, measured side by side in one process on identical inputs.

Usage:
    python benchmarks/compare_peers.py features [--rows N] [--repeats R] [--bars PATH] [--json OUT]
    python benchmarks/compare_peers.py backtest [--rows 1000000 10000000] [--repeats R] [--bt-rows 100000 1000000] [--json OUT]

Subcommands (one per comparison; each prints a summary table and one JSON line with every measurement):
    features   the default 64-feature set (`ScalpingFeatureEngineer(bars).generate_all_features()`) against the
               `ta` package's vectorized indicator set (`ta.add_all_ta_features(..., vectorized=True)`, about 68
               indicators) on the same bars.
    backtest   `scalp_lib.backtest.run_backtest` against vectorbt (`Portfolio.from_signals` for the plain signal
               rule; `Portfolio.from_order_func(flexible=True)` for take-profit, stop-loss, max-hold and session-flat,
               which `from_signals` cannot express) and against backtesting.py (plain rule, on --bt-rows bars: it runs
               a Python call per bar). The trades are compared (entry and exit bar, side, prices, P&L) and the script
               stops if they differ, before anything is timed.

Rules common to every comparison:
- one core: OMP/MKL/OpenBLAS/NUMBA thread counts are set to 1 before numpy is imported;
- identical inputs: both libraries get the same float64 OHLCV bars;
- interleaved: repeat r runs scalp_lib then the peer when r is even, the peer then scalp_lib when r is odd, so a
  change in machine load hits both; the ratio reported is of the medians (and each repeat's own ratio is listed);
- warm-up: each side runs once on 20,000 bars before timing (numba kernels load from their cache, or compile on a
  machine's first run; the compile time is reported separately and is not in the timed runs);
- both wall-clock and process CPU seconds are printed, with the 1/5/15-minute load average before and after:
  on a shared machine the CPU seconds and the ratio are the meaningful figures.
Peers are not runtime dependencies: install them with `pip install -e ".[bench]"`.
"""
import os

for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse
import json
import platform
import resource
import statistics
import sys
import time
import warnings

import numpy as np
import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _load():
    return [round(x, 2) for x in os.getloadavg()]


def _machine():
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores_visible": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__, "pandas": pd.__version__}


def _rusage():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime, r.ru_minflt


def _timed(fn, detail=None):
    "Run fn(); return (result, wall seconds, process CPU seconds); append (user s, system s, page faults) to `detail`."
    u0, s0, f0 = _rusage()
    w0, c0 = time.perf_counter(), time.process_time()
    res = fn()
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    u1, s1, f1 = _rusage()
    if detail is not None:
        detail.append((round(u1 - u0, 3), round(s1 - s0, 3), f1 - f0))
    return res, wall, cpu


def _interleave(sides: dict, repeats: int):
    "sides: name -> zero-argument callable. Returns {name: [(wall, cpu), ...]} in the interleaved order."
    names = list(sides)
    runs, detail = {n: [] for n in names}, {n: [] for n in names}
    for r in range(repeats):
        for n in (names if r % 2 == 0 else names[::-1]):
            _, wall, cpu = _timed(sides[n], detail[n])
            runs[n].append((wall, cpu))
    return runs, detail


def _bars(rows: int, path: str | None):
    from scalp_lib.data import demo_bars
    if path:
        bars = pd.read_parquet(path)
        if "timestamp" in bars.columns:
            bars = bars.set_index("timestamp")
        return bars.iloc[:rows] if rows else bars
    days = -(-rows // 1380)
    return demo_bars(n_days=days, seed=1).iloc[:rows]


# ------------------------------------------------------------------------------------------------ features
def features(args):
    import ta
    from scalp_lib import features as F

    bars = _bars(args.rows, args.bars)
    n = len(bars)
    ohlcv = bars[["open", "high", "low", "close", "volume"]].astype(np.float64)
    peer_input = ohlcv.reset_index(drop=True)          # ta works on plain columns; the copy below is not timed

    def ours():
        fe = F.ScalpingFeatureEngineer(ohlcv, instrument="ES")
        X = fe.generate_all_features()
        return X.shape[1]

    def peer_on(frame):
        def run():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = ta.add_all_ta_features(frame, "open", "high", "low", "close", "volume", fillna=False,
                                             vectorized=True)
            return out.shape[1] - 5
        return run

    # warm-up (and the compile cost on a machine whose numba cache is cold)
    _, compile_wall, compile_cpu = _timed(lambda: F.ScalpingFeatureEngineer(ohlcv.iloc[:20_000], instrument="ES")
                                          .generate_all_features())
    peer_on(peer_input.iloc[:20_000].copy())()
    n_ours = len(F.ScalpingFeatureEngineer(ohlcv.iloc[:1000], instrument="ES").feature_names)
    n_peer = peer_on(peer_input.iloc[:1000].copy())()

    load_before = _load()
    frames = [peer_input.copy() for _ in range(args.repeats)]   # a fresh frame per peer run (ta adds columns to it)
    it = iter(frames)
    runs, detail = _interleave({"scalp_lib": ours, "ta": lambda: peer_on(next(it))()}, args.repeats)
    load_after = _load()

    med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in runs.items()}
    per_repeat = [round(runs["ta"][r][0] / runs["scalp_lib"][r][0], 3) for r in range(args.repeats)]
    res = {
        "comparison": "features", "rows": n, "repeats": args.repeats,
        "features": {"scalp_lib": n_ours, "ta": n_peer},
        "wall_s": {k: [round(w, 3) for w, _ in v] for k, v in runs.items()},
        "cpu_s": {k: [round(c, 3) for _, c in v] for k, v in runs.items()},
        "user_sys_s_page_faults": detail,
        "median_bars_per_s_wall": {k: round(n / m[0]) for k, m in med.items()},
        "median_bars_per_s_cpu": {k: round(n / m[1]) for k, m in med.items()},
        "ratio_wall_median": round(med["ta"][0] / med["scalp_lib"][0], 3),
        "ratio_cpu_median": round(med["ta"][1] / med["scalp_lib"][1], 3),
        "ratio_wall_per_repeat": per_repeat,
        "scalp_lib_first_call_20k_bars_s": {"wall": round(compile_wall, 2), "cpu": round(compile_cpu, 2)},
        "load_avg_before": load_before, "load_avg_after": load_after,
        "machine": _machine(), "ta": getattr(ta, "__version__", "?"),
    }
    if args.groups:
        res["scalp_lib_group_cpu_ms_per_1m_bars"] = _group_costs(ohlcv)
    print(f"features: {n:,} bars, {args.repeats} interleaved repeats, one core; load avg {load_before} -> {load_after}")
    print(f"{'':12s} {'features':>9s} {'median wall s':>14s} {'bars/s (wall)':>14s} {'median CPU s':>13s} {'bars/s (CPU)':>13s}")
    for k in ("scalp_lib", "ta"):
        print(f"{k:12s} {res['features'][k]:9d} {med[k][0]:14.3f} {n / med[k][0]:14,.0f} {med[k][1]:13.3f} {n / med[k][1]:13,.0f}")
    for k in ("scalp_lib", "ta"):
        print(f"  {k}: (user s, system s, page faults) per run {detail[k]}")
    print(f"scalp_lib / ta speed: {res['ratio_wall_median']}x (wall, medians), {res['ratio_cpu_median']}x (CPU); "
          f"per repeat {per_repeat}")
    print(f"scalp_lib first call on 20,000 bars (numba cache load or compile): {compile_wall:.2f} s")
    if args.groups:
        print("scalp_lib CPU per group, ms per 1M bars (one block of each group, median of 5):")
        for g, ms in res["scalp_lib_group_cpu_ms_per_1m_bars"].items():
            print(f"  {g:16s} {ms:8.1f}")
    print(json.dumps(res))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)


def _group_costs(ohlcv, rows=131_462, reps=5):
    "CPU milliseconds per 1M bars of each default group on one engine-sized block (block_rows + overlap)."
    from scalp_lib import features as F
    spec = F.get_instrument("ES")
    blk = F._bar_frame(ohlcv.iloc[:rows])
    plan = F._FeaturePlan(spec)
    out = {}
    for g in plan.groups:
        g.fn(blk, spec, **plan.params[g.name])
        ts = []
        for _ in range(reps):
            _, _, cpu = _timed(lambda: g.fn(blk, spec, **plan.params[g.name]))
            ts.append(cpu)
        out[g.name] = round(statistics.median(ts) / len(blk) * 1e9, 1)
    return out


def _summary(runs: dict, ours: str, peer: str) -> dict:
    "Medians of both sides, the ratio of the medians (peer / ours: > 1 means scalp_lib is faster), per-repeat ratios."
    med = lambda k, i: statistics.median(x[i] for x in runs[k])
    return {"ours_wall_s": med(ours, 0), "peer_wall_s": med(peer, 0), "ours_cpu_s": med(ours, 1), "peer_cpu_s": med(peer, 1),
            "ratio_wall": med(peer, 0) / med(ours, 0), "ratio_cpu": med(peer, 1) / med(ours, 1),
            "per_repeat_ratio_cpu": [round(p[1] / o[1], 3) for o, p in zip(runs[ours], runs[peer])]}


# ----------------------------------------------------------------------------------------------- backtest
TICK, POINT_VALUE, COMMISSION = 0.25, 50.0, 2.25          # ES: $12.50 a tick, $2.25 per side per contract


def _regime_signal(n, seed=0, mean_run=20):
    """Target position -1/0/+1 in random regimes (mean length `mean_run` bars); flat on the first two bars (backtesting.py
    first calls a strategy on the second bar) and on the last two (no trade left open at the end)."""
    rng = np.random.default_rng(seed)
    change = rng.random(n) < 1 / mean_run
    vals = rng.integers(-1, 2, n)
    sig = vals[np.maximum.accumulate(np.where(change, np.arange(n), 0))].astype(np.int64)
    sig[:2] = sig[-2:] = 0
    return sig


RULES = dict(take_profit_ticks=8, stop_loss_ticks=8, max_hold_bars=60, flat_at_session_end=True, reentry='fresh',
             intrabar_rule='stop_first')
PLAIN = dict(take_profit_ticks=0, stop_loss_ticks=0, max_hold_bars=0, flat_at_session_end=False, reentry='fresh',
             intrabar_rule='stop_first')


def _ours(bars, sig, rules):
    "scalp_lib's whole call. Commission only with the rules: vectorbt charges a reversal's one order one fixed fee."
    from scalp_lib.backtest import run_backtest
    fee = COMMISSION if rules is RULES else 0.0
    return run_backtest(bars, sig, instrument='ES', commission_per_side_dollars=fee, slippage_ticks=0.0,
                        initial_capital_dollars=1e9, **rules)


def _our_trades(res):
    t = res.trades
    return pd.DataFrame({'entry_bar': t.entry_bar.to_numpy(), 'exit_bar': t.exit_bar.to_numpy(),
                         'entry_price': t.entry_price.to_numpy(), 'exit_price': t.exit_price.to_numpy(),
                         'side': t.side.to_numpy().astype(np.int64), 'pnl_dollars': t.net_dollars.to_numpy()})


def _vbt_frame(bars):
    "vectorbt gets the same wall-clock stamps without a time zone (with one, pandas' Timestamp boxing dominates its run)."
    return bars[['open', 'high', 'low', 'close']].set_axis(bars.index.tz_localize(None))


def _vbt_plain(vbt, bars, sig):
    "The plain signal rule in vectorbt: entries/exits on the signal's changes, shifted one bar, filled at that bar's open."
    b = _vbt_frame(bars)
    s = pd.Series(sig, index=b.index)
    prev = s.shift(1, fill_value=0)
    sh = lambda m: m.shift(1, fill_value=False)
    return vbt.Portfolio.from_signals(b['close'], entries=sh((s > 0) & (prev <= 0)), exits=sh((s <= 0) & (prev > 0)),
                                      short_entries=sh((s < 0) & (prev >= 0)), short_exits=sh((s >= 0) & (prev < 0)),
                                      price=b['open'], size=POINT_VALUE, init_cash=1e9, freq='1min')


_ORDER_FUNC = None


def _vbt_rules_func():
    "The rules of scalp_lib.backtest as a vectorbt flexible order function (several orders per bar, in bar order)."
    global _ORDER_FUNC
    if _ORDER_FUNC is not None: return _ORDER_FUNC
    from numba import njit
    from vectorbt.portfolio.nb import order_nb, close_position_nb, order_nothing_nb
    # state: 0 stage, 1 in_pos, 2 side, 3 entry_bar, 4 entry_px (ticks), 5 pending entry side, 6 pending exit
    @njit
    def flex_order(c, o, h, l, cl, sig, new_session, tp, sl, max_hold, flat_eod, inv, size, fee, st):
        i, n = c.i, len(o)
        if c.call_idx == 0: st[0] = 0
        while True:
            stage = st[0]
            st[0] += 1
            if stage == 0:                                   # the open: gap through a level, or a decided exit
                if st[1] == 1 and st[3] < i:
                    move = st[2] * (np.int64(np.rint(o[i] * inv)) - st[4])
                    if (sl >= 0 and move <= -sl) or (tp >= 0 and move >= tp) or st[6] == 1:
                        st[1] = 0
                        return 0, close_position_nb(price=o[i], fixed_fees=fee)
            elif stage == 1:                                 # a pending entry
                st[6] = 0
                if st[5] != 0:
                    st[1], st[2], st[3], st[4], st[5] = 1, st[5], i, np.int64(np.rint(o[i] * inv)), 0
                    return 0, order_nb(size=st[2] * size, price=o[i], fixed_fees=fee)
            elif stage == 2:                                 # inside the bar: stop first, then target
                if st[1] == 1:
                    P, s = st[4], st[2]
                    adverse = np.int64(np.rint((l[i] if s > 0 else h[i]) * inv))
                    favourable = np.int64(np.rint((h[i] if s > 0 else l[i]) * inv))
                    if sl >= 0 and s * (adverse - P) <= -sl:
                        st[1] = 0
                        return 0, close_position_nb(price=(P - s * sl) / inv, fixed_fees=fee)
                    if tp >= 0 and s * (favourable - P) >= tp:
                        st[1] = 0
                        return 0, close_position_nb(price=(P + s * tp) / inv, fixed_fees=fee)
            elif stage == 3:                                 # the close: session end, end of data
                if st[1] == 1 and (i == n - 1 or (flat_eod and new_session[i + 1])):
                    st[1] = 0
                    return 0, close_position_nb(price=cl[i], fixed_fees=fee)
            else:                                            # the decision on the close
                if i < n - 1:
                    s = sig[i]
                    side = (s > 0) - (s < 0)
                    can_enter = not (flat_eod and new_session[i + 1])
                    cand = s != 0 and (i == 0 or s != sig[i - 1])
                    if st[1] == 1:
                        if side != st[2]:
                            st[6] = 1
                            if side != 0 and cand and can_enter: st[5] = side
                        if max_hold >= 0 and i + 1 - st[3] >= max_hold: st[6] = 1
                    elif cand and can_enter: st[5] = side
                return -1, order_nothing_nb()
    _ORDER_FUNC = flex_order
    return flex_order


def _vbt_rules(vbt, bars, sig, new_session):
    b = _vbt_frame(bars)
    f = lambda x: b[x].to_numpy()
    st = np.zeros(8, np.int64)
    r = RULES
    return vbt.Portfolio.from_order_func(
        b['close'], _vbt_rules_func(), f('open'), f('high'), f('low'), f('close'), sig, new_session,
        r['take_profit_ticks'], r['stop_loss_ticks'], r['max_hold_bars'], r['flat_at_session_end'], 1 / TICK,
        POINT_VALUE, COMMISSION, st, flexible=True, init_cash=1e9, freq='1min', max_orders=2 * len(b))


def _vbt_user_call(make, stats=True):
    "What a vectorbt user runs for the same output: the simulation, the trade ledger, the equity curve, the statistics."
    def run():
        pf = make()
        ledger = pf.trades.records_readable
        equity = pf.value()
        if not stats: return pf, ledger, equity
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            st = pf.stats()
        return pf, ledger, equity, st
    return run


def _vbt_trades(pf):
    t = pf.trades.records
    closed = t['status'] == 1
    sign = np.where(t['direction'] == 0, 1, -1)
    return pd.DataFrame({'entry_bar': t['entry_idx'], 'exit_bar': t['exit_idx'], 'entry_price': t['entry_price'],
                         'exit_price': t['exit_price'], 'side': sign, 'pnl_dollars': t['pnl']})[closed].reset_index(drop=True)


def _same_trades(a: pd.DataFrame, b: pd.DataFrame, what: str):
    "Identical entry/exit bars and sides; prices and P&L equal to a thousandth of a cent (float arithmetic of the peer)."
    if len(a) != len(b): raise SystemExit(f"{what}: {len(a)} trades in scalp_lib, {len(b)} in the peer: not the same work")
    for k in ('entry_bar', 'exit_bar', 'side'):
        bad = np.flatnonzero(a[k].to_numpy() != b[k].to_numpy())
        if len(bad): raise SystemExit(f"{what}: {k} differs in {len(bad)} trades, first trade {bad[0]}:\n{a.iloc[bad[0]]}\n{b.iloc[bad[0]]}")
    for k in ('entry_price', 'exit_price', 'pnl_dollars'):
        d = np.abs(a[k].to_numpy() - b[k].to_numpy())
        if d.max(initial=0) > 1e-5: raise SystemExit(f"{what}: {k} differs by up to {d.max()} (trade {int(d.argmax())})")
    return len(a)


def _bt_run(bars, sig):
    "backtesting.py, the plain signal rule: orders on the signal's changes at the close, filled at the next open."
    from backtesting import Backtest, Strategy
    data = bars[['open', 'high', 'low', 'close', 'volume']].set_axis(['Open', 'High', 'Low', 'Close', 'Volume'], axis=1)

    class Signal(Strategy):
        def init(self): pass
        def next(self):
            i = len(self.data) - 1
            s, prev = sig[i], (sig[i - 1] if i else 0)
            if s == prev: return
            if self.position and np.sign(s) != np.sign(prev): self.position.close()
            if s > 0: self.buy(size=1)
            elif s < 0: self.sell(size=1)

    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        bt = Backtest(data, Signal, cash=1e9, commission=0.0, trade_on_close=False, exclusive_orders=False, finalize_trades=True)
        stats = bt.run()
    return stats


def _bt_trades(stats):
    t = stats['_trades']
    return pd.DataFrame({'entry_bar': t['EntryBar'].to_numpy(), 'exit_bar': t['ExitBar'].to_numpy(),
                         'entry_price': t['EntryPrice'].to_numpy(), 'exit_price': t['ExitPrice'].to_numpy(),
                         'side': np.sign(t['Size'].to_numpy()).astype(np.int64),
                         'pnl_dollars': t['PnL'].to_numpy() * POINT_VALUE}).sort_values('entry_bar', kind='stable').reset_index(drop=True)


def backtest(args):
    import vectorbt as vbt
    from scalp_lib.data import demo_bars, session_dates
    from scalp_lib.config import get_instrument
    out = {"machine": _machine(), "load_before": _load(), "vectorbt": vbt.__version__, "cases": []}
    print(f"machine: {out['machine']}; vectorbt {vbt.__version__}; load {out['load_before']}")
    rows_max = max(args.rows + args.bt_rows)
    t0 = time.perf_counter()
    all_bars = demo_bars(n_days=-(-rows_max // 1380), seed=0)
    print(f"bars: demo_bars, {len(all_bars):,} generated in {time.perf_counter() - t0:.1f} s (not timed)")
    # compile / cache-load cost of each side, on a small slice
    small = all_bars.iloc[:20_000]
    ssig = _regime_signal(len(small))
    sess = session_dates(small.index, get_instrument('ES'))
    sns = np.concatenate(([True], sess[1:] != sess[:-1]))
    compile_s = {}
    _, compile_s['scalp_lib run_backtest, first call'], _ = _timed(lambda: _ours(small, ssig, RULES))
    _, compile_s['vectorbt from_signals + ledger + value + stats, first call'], _ = _timed(_vbt_user_call(lambda: _vbt_plain(vbt, small, ssig)))
    _, compile_s['vectorbt from_order_func (rules) + ledger + value + stats, first call'], _ = _timed(_vbt_user_call(lambda: _vbt_rules(vbt, small, ssig, sns)))
    out['first_call_s_on_20000_bars'] = compile_s
    for k, v in compile_s.items(): print(f"  {k}: {v:.2f} s (20,000 bars: compile or cache load)")
    for rows in args.rows:
        bars = all_bars.iloc[:rows]
        sig = _regime_signal(rows)
        sess = session_dates(bars.index, get_instrument('ES'))
        new_session = np.concatenate(([True], sess[1:] != sess[:-1]))
        for name, rules, make in (('plain signal rule', PLAIN, lambda: _vbt_plain(vbt, bars, sig)),
                                  ('tp 8, sl 8, max hold 60, flat at session end', RULES,
                                   lambda: _vbt_rules(vbt, bars, sig, new_session))):
            ours = _ours(bars, sig, rules)
            pf = make()
            n = _same_trades(_our_trades(ours), _vbt_trades(pf), f"{rows:,} bars, {name}")
            sides = {'scalp_lib': lambda: _ours(bars, sig, rules), 'vectorbt': _vbt_user_call(make),
                     'vectorbt simulation only': make, 'vectorbt without stats()': _vbt_user_call(make, stats=False)}
            runs, _ = _interleave(sides, args.repeats)
            res = {"rows": rows, "case": name, "trades": n, "load_after": _load(), **_summary(runs, 'scalp_lib', 'vectorbt')}
            res['vs_vectorbt_simulation_only'] = _summary(runs, 'scalp_lib', 'vectorbt simulation only')
            res['vs_vectorbt_without_stats'] = _summary(runs, 'scalp_lib', 'vectorbt without stats()')
            out['cases'].append(res)
            print(f"\n[{rows:,} bars, {name}] identical trades: {n:,}")
            print(f"  scalp_lib run_backtest (validation, simulation, ledger, equity, metrics):  median {res['ours_wall_s']:.3f} s wall, {res['ours_cpu_s']:.3f} s CPU")
            print(f"  vectorbt (simulation, trades.records_readable, value(), stats()):          median {res['peer_wall_s']:.3f} s wall, {res['peer_cpu_s']:.3f} s CPU")
            print(f"  ratio vectorbt / scalp_lib: {res['ratio_cpu']:.2f}x CPU, {res['ratio_wall']:.2f}x wall "
                  f"(per repeat, CPU: {res['per_repeat_ratio_cpu']}); load after {res['load_after']}")
            s = res['vs_vectorbt_without_stats']
            print(f"  vs vectorbt without stats() (simulation, ledger, equity):          {s['peer_cpu_s']:.3f} s CPU, ratio {s['ratio_cpu']:.2f}x")
            s = res['vs_vectorbt_simulation_only']
            print(f"  vs vectorbt's simulation alone (the Portfolio object, nothing read): {s['peer_cpu_s']:.3f} s CPU, ratio {s['ratio_cpu']:.2f}x "
                  f"(per repeat: {s['per_repeat_ratio_cpu']})")
    # backtesting.py: a Python loop per bar, so smaller sizes
    for rows in args.bt_rows:
        bars = all_bars.iloc[:rows]
        sig = _regime_signal(len(bars))
        ours = _ours(bars, sig, PLAIN)
        n = _same_trades(_our_trades(ours).assign(pnl_dollars=ours.trades.gross_dollars.to_numpy()),
                         _bt_trades(_bt_run(bars, sig)), f"backtesting.py, {len(bars):,} bars")
        runs, _ = _interleave({'scalp_lib': lambda: _ours(bars, sig, PLAIN), 'backtesting.py': lambda: _bt_run(bars, sig)},
                           max(1, min(args.repeats, 3)))
        res = {"rows": len(bars), "case": 'plain signal rule (backtesting.py)', "trades": n, "load_after": _load(),
               **_summary(runs, 'scalp_lib', 'backtesting.py')}
        out['cases'].append(res)
        print(f"\n[{len(bars):,} bars, plain signal rule] backtesting.py, identical trades: {n:,}")
        print(f"  scalp_lib {res['ours_cpu_s']:.3f} s CPU, backtesting.py {res['peer_cpu_s']:.3f} s CPU: "
              f"ratio {res['ratio_cpu']:.1f}x CPU, {res['ratio_wall']:.1f}x wall (per repeat, CPU: {res['per_repeat_ratio_cpu']})")
    out['load_after'] = _load()
    print(json.dumps(out))
    if args.json:
        with open(args.json, 'w') as f: json.dump(out, f, indent=1)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("features", help="default feature set vs ta.add_all_ta_features(vectorized=True)")
    f.add_argument("--rows", type=int, default=1_000_000, help="bars (default 1,000,000; demo_bars, seed 1)")
    f.add_argument("--repeats", type=int, default=5, help="interleaved repeats per side (median reported)")
    f.add_argument("--bars", default=None, help="Parquet bar file instead of demo bars (first --rows rows)")
    f.add_argument("--groups", action="store_true", help="also time each scalp_lib feature group")
    f.add_argument("--json", default=None, help="also write the result to this file")
    f.set_defaults(func=features)
    b = sub.add_parser("backtest", help="run_backtest vs vectorbt (from_signals / from_order_func) and backtesting.py")
    b.add_argument("--rows", type=int, nargs='+', default=[1_000_000, 10_000_000], help="bar counts (demo_bars, seed 0)")
    b.add_argument("--repeats", type=int, default=3, help="interleaved repeats per side (median reported)")
    b.add_argument("--bt-rows", type=int, nargs='*', default=[100_000, 1_000_000], help="bar counts for backtesting.py (none: skip)")
    b.add_argument("--json", default=None, help="also write the result to this file")
    b.set_defaults(func=backtest)
    args = p.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
