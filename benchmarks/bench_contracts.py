"""Time and peak memory of continuous contracts and of as-of alignment of outside series.

Usage:
    python benchmarks/bench_contracts.py contracts SESSIONS   # demo contracts over SESSIONS sessions -> select + 3 adjustments
    python benchmarks/bench_contracts.py align BARS           # align a daily and a 1-minute outside series to BARS bars
    python benchmarks/bench_contracts.py features BARS        # VIX + ES-NQ spread feature groups through ScalpingFeatureEngineer
Measure peak memory with: /usr/bin/time -v python benchmarks/bench_contracts.py ...  (Maximum resident set size)
"""
import sys
import time


def _t(label, f):
    t0 = time.perf_counter()
    out = f()
    print(f"{label}: {time.perf_counter() - t0:.2f} s")
    return out


def contracts(sessions: int):
    from scalp_lib.contracts import continuous_series, demo_contracts, load_contracts, select_contracts
    raw = _t(f"demo_contracts({sessions} sessions)", lambda: demo_contracts(n_days=sessions, seed=0, start="2023-01-03"))
    n = sum(len(d) for d in raw.values())
    print(f"  {len(raw)} contracts, {n:,} contract bars")
    loaded = _t("load_contracts (load_bars validation of every contract)", lambda: load_contracts(raw))
    sel = _t("select_contracts (volume rule)", lambda: select_contracts(loaded))
    print(f"  {len(sel.chosen):,} bars in the continuous series, {len(sel.roll_table)} rolls")
    for how in ("none", "difference", "ratio"):
        _t(f"continuous_series(adjustment='{how}') from loaded contracts", lambda: continuous_series(loaded, adjustment=how))


def align(bars_n: int):
    import pandas as pd
    from scalp_lib.data import demo_bars
    from scalp_lib.exogenous import align_asof, demo_vix
    days = bars_n // 1380 + 1
    bars = _t(f"demo_bars({days} sessions)", lambda: demo_bars(n_days=days, seed=0, start="2000-01-03").iloc[:bars_n])
    vix = demo_vix(bars, seed=0)
    other = demo_bars(n_days=days, seed=1, instrument="NQ", start="2000-01-03")["close"]
    a = _t(f"align_asof daily series ({len(vix):,} values) -> {len(bars):,} bars", lambda: align_asof(bars, vix, publication_lag="15min"))
    print(" ", a.attrs["alignment"].summary())
    b = _t(f"align_asof 1-minute series ({len(other):,} values) -> {len(bars):,} bars",
           lambda: align_asof(bars, other, publication_lag="1min", bar_time="close", tolerance="5min"))
    print(" ", b.attrs["alignment"].summary())


def features(bars_n: int):
    from scalp_lib.data import demo_bars
    from scalp_lib.exogenous import demo_vix, register_outside_series, register_spread_zscore
    from scalp_lib.features import ScalpingFeatureEngineer
    days = bars_n // 1380 + 1
    bars = demo_bars(n_days=days, seed=0, start="2000-01-03").iloc[:bars_n]
    register_outside_series("vix", demo_vix(bars, seed=0), publication_lag="15min")
    register_spread_zscore("es_nq", demo_bars(n_days=days, seed=1, instrument="NQ", start="2000-01-03"), window_bars=390)
    F = _t(f"ScalpingFeatureEngineer(groups=['vix', 'es_nq']) on {len(bars):,} bars",
           lambda: ScalpingFeatureEngineer(bars, groups=["vix", "es_nq"]).generate_all_features())
    print(f"  {F.shape[1]} features, NaN share {F.isna().to_numpy().mean():.4f}")


if __name__ == "__main__":
    cmd, n = sys.argv[1], int(sys.argv[2])
    {"contracts": contracts, "align": align, "features": features}[cmd](n)
