"""Load time of `load_bars` by file layout (header CSV, NinjaTrader, Kibot-style, Databento DBN).

Usage:
    python benchmarks/bench_loading.py ROWS [LAYOUT ...]   # writes ROWS synthetic bars per layout to a temp folder, loads each 3 times
Run it once with the library of another revision on PYTHONPATH (header layout only) to compare the common path.
"""
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main(rows: int, layouts):
    from scalp_lib.data import demo_bars, load_bars
    bars = demo_bars(n_days=rows // 1380 + 1, seed=0).iloc[:rows]
    d = Path(tempfile.mkdtemp())
    for layout in layouts:
        if layout == "header":
            p = d / "bars.csv"   # timestamp,open,high,low,close,volume with naive exchange-time stamps
            bars.tz_localize(None).reset_index().to_csv(p, index=False)
        else:
            from vendor_files import write_layout
            p = write_layout(bars, d / {"dbn": "b.dbn.zst"}.get(layout, f"b_{layout}.txt"), layout)
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            b = load_bars(p, tz="UTC" if layout != "header" else None, instrument="ES")
            times.append(time.perf_counter() - t0)
        assert len(b) == rows
        print(f"{layout:14s} {rows:>10,} rows  best of 3: {min(times):6.2f} s  ({rows / min(times):,.0f} rows/s)")


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2:] or ["header", "ninjatrader", "kibot", "dbn"])
