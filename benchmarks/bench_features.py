"""Speed and peak memory of the feature layer (`scalp_lib.features`), full default feature set.

Usage:
    python benchmarks/bench_features.py make    ROWS PATH            # synthetic 1-minute ES bars -> Parquet (1M-row groups)
    python benchmarks/bench_features.py inmem   PATH [--loader L]     # ScalpingFeatureEngineer on the whole file
    python benchmarks/bench_features.py demo    ROWS                  # bars from demo_bars in the same process, then features
    python benchmarks/bench_features.py chunked PATH OUT [CHUNK_ROWS] # generate_features_chunked -> Parquet
Loaders for `inmem`: `pandas` (pd.read_parquet, the default: measures the feature layer) or `load_bars` (the full
validated path). Peak memory: run under `/usr/bin/time -v` and read "Maximum resident set size".
Each command prints one JSON line with rows, seconds (feature computation only), rows/s and the output size.
"""
import json
import os
import resource
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
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


def _report(kind, n, k, secs, extra=None):
    out = {"mode": kind, "rows": n, "features": k, "seconds": round(secs, 2), "rows_per_s": round(n / secs),
           "float32_output_mib": round(n * k * 4 / 2**20, 1), "peak_rss_mib_getrusage": round(_peak_mib(), 1)}
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


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "make":
        make(int(args[0]), args[1])
    elif cmd == "inmem":
        inmem(args[0], args[2] if len(args) > 2 and args[1] == "--loader" else "pandas")
    elif cmd == "demo":
        demo(int(args[0]))
    elif cmd == "chunked":
        chunked(args[0], args[1], int(args[2]) if len(args) > 2 else 500_000)
    else:
        sys.exit(__doc__)
