"""scalp_lib against its peers, measured side by side in one process on identical inputs.

Usage:
    python benchmarks/compare_peers.py features [--rows N] [--repeats R] [--bars PATH] [--json OUT]

Subcommands (one per comparison; each prints a summary table and one JSON line with every measurement):
    features   the default 64-feature set (`ScalpingFeatureEngineer(bars).generate_all_features()`) against the
               `ta` package's vectorized indicator set (`ta.add_all_ta_features(..., vectorized=True)`, about 68
               indicators) on the same bars.

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
    args = p.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
