"""Peak memory of chunked bar validation (`validate_file`) versus file length.

Usage:
    python benchmarks/bench_data.py make  ROWS PATH      # write ROWS synthetic 1-minute bars to Parquet (1M-row groups)
    python benchmarks/bench_data.py check PATH [CHUNK]   # validate chunk by chunk, print time and counts
Measure peak memory with: /usr/bin/time -v python benchmarks/bench_data.py check PATH  (Maximum resident set size)
"""
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def make(rows: int, path: str):
    from scalp_lib.data import demo_bars
    days_per_block = 700  # ~966k bars per block keeps generation memory small
    writer, done, seed, start, price = None, 0, 0, "2000-01-03", None
    import pandas as pd
    while done < rows:
        b = demo_bars(n_days=days_per_block, seed=seed, start=start, start_price=price)  # price carried across blocks
        price = float(b["close"].iloc[-1])
        b = b.iloc[: rows - done].reset_index()
        t = pa.Table.from_pandas(b, preserve_index=False)
        if writer is None:
            writer = pq.ParquetWriter(path, t.schema)
        writer.write_table(t, row_group_size=1_000_000)
        done += len(b)
        seed += 1
        start = str((pd.Timestamp(b["timestamp"].iloc[-1]).tz_convert("America/Chicago") + pd.Timedelta(days=2)).date())
    writer.close()
    print(f"wrote {done:,} rows to {path}")


def check(path: str, chunk_rows: int = 1_000_000):
    from scalp_lib.data import validate_file
    t0 = time.perf_counter()
    rep = validate_file(path, chunk_rows=chunk_rows, progress=False)
    dt = time.perf_counter() - t0
    print(f"validated {rep.n_rows_in:,} rows in {dt:.1f} s ({rep.n_rows_in / dt:,.0f} rows/s), chunk_rows={chunk_rows:,}")
    print(rep.summary())


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "make":
        make(int(sys.argv[2]), sys.argv[3])
    else:
        check(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 1_000_000)
