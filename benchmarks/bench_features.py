"""Speed and peak memory of the feature layer (`scalp_lib.features`), full default feature set.

Usage:
    python benchmarks/bench_features.py suite   [DIR]                 # everything below, one command (files made in DIR)
    python benchmarks/bench_features.py make    ROWS PATH            # synthetic 1-minute ES bars -> Parquet (1M-row groups)
    python benchmarks/bench_features.py inmem   PATH [--loader L]     # ScalpingFeatureEngineer on the whole file
    python benchmarks/bench_features.py demo    ROWS                  # bars from demo_bars in the same process, then features
    python benchmarks/bench_features.py chunked PATH OUT [CHUNK_ROWS] # generate_features_chunked -> Parquet
    python benchmarks/bench_features.py repeat  ROWS [N]             # demo bars in memory, N timed runs (median)
    python benchmarks/bench_features.py compile                      # first call with an empty numba cache (compile cost)
`suite` = compile, repeat 1000000 5, and chunked on 2,000,000 and 8,000,000 rows (each measurement in its own
process, so each peak RSS is that run's own), then a summary table; with the load average before and after.
Loaders for `inmem`: `pandas` (pd.read_parquet, the default: measures the feature layer) or `load_bars` (the full
validated path). Peak memory: run under `/usr/bin/time -v` and read "Maximum resident set size".
Each command prints one JSON line with rows, seconds (feature computation only), rows/s and the output size.
"""
import json
import os
import resource
import sys
import time

for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_v, "1")
import statistics
import subprocess
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq


def _peak_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make(rows: int, path: str):
    "ROWS bars from demo_bars in pieces of 700 sessions (bounded memory), one continuous calendar."
    from scalp_lib.data import demo_bars
    writer, done, seed, start, price = None, 0, 0, "2000-01-03", None
    while done < rows:
        b = demo_bars(n_days=700, seed=seed, start=start, start_price=price)
        b = b.iloc[: rows - done]
        t = pa.Table.from_pandas(b.reset_index(), preserve_index=False)
        if writer is None:
            writer = pq.ParquetWriter(path, t.schema)
        writer.write_table(t, row_group_size=1_000_000)
        done += len(b)
        seed += 1
        price = float(b["close"].iloc[-1])
        start = str((b.index[-1].tz_convert("America/Chicago") + pd.Timedelta(days=2)).date())
    writer.close()
    print(json.dumps({"wrote_rows": done, "path": path}))


def _cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime


def _report(kind, n, k, secs, extra=None):
    u, s = _cpu()
    out = {"mode": kind, "rows": n, "features": k, "seconds": round(secs, 2), "rows_per_s": round(n / secs),
           "float32_output_mib": round(n * k * 4 / 2**20, 1), "peak_rss_mib_getrusage": round(_peak_mib(), 1),
           "process_user_s": round(u, 2), "process_sys_s": round(s, 2)}
    out.update(extra or {})
    print(json.dumps(out))


def inmem(path: str, loader: str = "pandas"):
    from scalp_lib.features import ScalpingFeatureEngineer
    t0 = time.perf_counter()
    if loader == "load_bars":
        from scalp_lib.data import load_bars
        bars = load_bars(path)
    else:
        bars = pd.read_parquet(path).set_index("timestamp")
    t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    fe = ScalpingFeatureEngineer(bars, instrument="ES")
    X = fe.generate_all_features()
    secs = time.perf_counter() - t0
    assert X.dtypes.eq(np.float32).all() and len(X) == len(bars)
    _report(f"inmem/{loader}", len(X), X.shape[1], secs, {"load_seconds": round(t_load, 2), "warmup_rows": fe.report.warmup_rows,
                                                         "inf_replaced": fe.report.inf_replaced})


def demo(rows: int):
    from scalp_lib.data import demo_bars
    from scalp_lib.features import ScalpingFeatureEngineer
    days = -(-rows // 1380)
    t0 = time.perf_counter()
    bars = demo_bars(n_days=days, seed=0).iloc[:rows]
    t_gen = time.perf_counter() - t0
    t0 = time.perf_counter()
    X = ScalpingFeatureEngineer(bars).generate_all_features()
    secs = time.perf_counter() - t0
    _report("demo_bars+inmem", len(X), X.shape[1], secs, {"demo_bars_seconds": round(t_gen, 2)})


def chunked(path: str, out: str, chunk_rows: int = 500_000):
    from scalp_lib.features import generate_features_chunked
    t0 = time.perf_counter()
    rep = generate_features_chunked(path, out, chunk_rows=chunk_rows, instrument="ES", progress=False)
    secs = time.perf_counter() - t0
    _report("chunked", rep.n_rows, rep.n_features, secs, {"chunk_rows": chunk_rows, "out_mib": round(os.path.getsize(out) / 2**20, 1)})


def repeat(rows: int, n: int = 5):
    "demo bars in memory: one warm-up, then n timed runs; wall, user and system seconds of each, and medians."
    from scalp_lib.data import demo_bars
    from scalp_lib.features import ScalpingFeatureEngineer
    bars = demo_bars(n_days=-(-rows // 1380), seed=1).iloc[:rows]
    ScalpingFeatureEngineer(bars.iloc[:20_000]).generate_all_features()
    runs = []
    for _ in range(n):
        u0, s0 = _cpu(); t0 = time.perf_counter()
        X = ScalpingFeatureEngineer(bars).generate_all_features()
        w = time.perf_counter() - t0; u1, s1 = _cpu()
        runs.append((round(w, 3), round(u1 - u0, 3), round(s1 - s0, 3)))
    med = statistics.median(r[0] for r in runs)
    print(json.dumps({"mode": "repeat", "rows": len(bars), "features": X.shape[1], "runs_wall_user_sys_s": runs,
                      "median_wall_s": med, "median_bars_per_s": round(len(bars) / med),
                      "median_cpu_bars_per_s": round(len(bars) / statistics.median(r[1] + r[2] for r in runs)),
                      "load_avg": [round(x, 2) for x in os.getloadavg()]}))


def compile_cost():
    "First call with an empty numba cache: the one-time compile cost of a machine (the cache then holds it)."
    import tempfile
    code = ("import time; t=time.perf_counter(); from scalp_lib.features import ScalpingFeatureEngineer; "
            "from scalp_lib.data import demo_bars; b=demo_bars(n_days=2); t1=time.perf_counter(); "
            "ScalpingFeatureEngineer(b).generate_all_features(); t2=time.perf_counter(); "
            "ScalpingFeatureEngineer(b).generate_all_features(); t3=time.perf_counter(); "
            "print(round(t1-t,2), round(t2-t1,2), round(t3-t2,3))")
    with tempfile.TemporaryDirectory() as d:
        cold = subprocess.run([sys.executable, "-c", code], env={**os.environ, "NUMBA_CACHE_DIR": d},
                              capture_output=True, text=True, check=True).stdout.split()
        warm = subprocess.run([sys.executable, "-c", code], env={**os.environ, "NUMBA_CACHE_DIR": d},
                              capture_output=True, text=True, check=True).stdout.split()
    print(json.dumps({"mode": "compile", "import_s": float(cold[0]), "first_call_cold_cache_s": float(cold[1]),
                      "first_call_warm_cache_s": float(warm[1]), "second_call_s": float(warm[2])}))


def suite(d: str = "/tmp/fb"):
    os.makedirs(d, exist_ok=True)
    me = [sys.executable, os.path.abspath(__file__)]
    for rows, name in ((2_000_000, "b2m.parquet"), (8_000_000, "b8m.parquet")):
        if not os.path.exists(os.path.join(d, name)):
            subprocess.run(me + ["make", str(rows), os.path.join(d, name)], check=True)
    load0 = [round(x, 2) for x in os.getloadavg()]
    lines = []
    for args in (["compile"], ["repeat", "1000000", "5"],
                 ["chunked", os.path.join(d, "b2m.parquet"), os.path.join(d, "f2m.parquet")],
                 ["chunked", os.path.join(d, "b8m.parquet"), os.path.join(d, "f8m.parquet")]):
        out = subprocess.run(me + args, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        print(out, flush=True)
        lines.append(json.loads(out))
    comp, rep, c2, c8 = lines
    print(f"load average before {load0}, after {[round(x, 2) for x in os.getloadavg()]}")
    print(f"compile: first call with an empty numba cache {comp['first_call_cold_cache_s']} s, "
          f"with the cache {comp['first_call_warm_cache_s']} s")
    print(f"in memory, {rep['rows']:,} demo bars: median {rep['median_wall_s']} s = {rep['median_bars_per_s']:,} bars/s "
          f"(CPU: {rep['median_cpu_bars_per_s']:,} bars/s); runs (wall, user, sys) {rep['runs_wall_user_sys_s']}")
    for c in (c2, c8):
        print(f"chunked {c['rows']:,} rows: {c['seconds']} s = {c['rows_per_s']:,} rows/s, peak RSS "
              f"{c['peak_rss_mib_getrusage']} MiB, user {c['process_user_s']} s, sys {c['process_sys_s']} s")


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "suite":
        suite(*args[:1])
    elif cmd == "repeat":
        repeat(int(args[0]), int(args[1]) if len(args) > 1 else 5)
    elif cmd == "compile":
        compile_cost()
    elif cmd == "make":
        make(int(args[0]), args[1])
    elif cmd == "inmem":
        inmem(args[0], args[2] if len(args) > 2 and args[1] == "--loader" else "pandas")
    elif cmd == "demo":
        demo(int(args[0]))
    elif cmd == "chunked":
        chunked(args[0], args[1], int(args[2]) if len(args) > 2 else 500_000)
    else:
        sys.exit(__doc__)
