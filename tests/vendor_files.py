"""The real ES 1-minute bars written in other vendors' layouts: test fixtures made at test time, never committed.

Every writer keeps the ES file's own prices and volumes; only the layout changes, and the stamps are written in UTC
(load with `tz='UTC'`) so the fall-back hour of 2 November cannot make a wall-clock stamp ambiguous.
`ninjatrader_mes` labels the same bars as MES: the micro quotes the same index points on the same 0.25 grid, so the
prices are valid MES prices, but they are ES prices and ES volumes, not a real MES file.
"""
from pathlib import Path

import pandas as pd

ES_FILE = "es_1min_2025-09_11.csv.gz"
LAYOUTS = ("ninjatrader", "kibot", "firstrate", "tradestation", "vendor_header", "dbn")


def es_bars(shared_data) -> pd.DataFrame:
    "The real ES bars as the loader reads them (New York wall-clock plus a fixed 5 hours in the file)."
    from scalp_lib.data import load_bars
    return load_bars(Path(shared_data) / ES_FILE, tz="America/New_York", ts_offset="5h", instrument="ES")


def _columns(bars: pd.DataFrame) -> dict:
    utc = bars.index.tz_convert("UTC")
    return {"utc": utc, "open": bars["open"].to_numpy(), "high": bars["high"].to_numpy(), "low": bars["low"].to_numpy(),
            "close": bars["close"].to_numpy(), "volume": bars["volume"].to_numpy().astype("int64")}


def write_layout(bars: pd.DataFrame, path, layout: str) -> Path:
    "Write `bars` (a load_bars frame) at `path` in one vendor `layout` (see LAYOUTS); stamps in UTC."
    path, c = Path(path), _columns(bars)
    prices = {k: c[k] for k in ("open", "high", "low", "close")}
    if layout == "ninjatrader":      # yyyyMMdd HHmmss;open;high;low;close;volume, no header
        df = pd.DataFrame({"t": c["utc"].strftime("%Y%m%d %H%M%S"), **prices, "v": c["volume"]})
        df.to_csv(path, sep=";", header=False, index=False)
    elif layout == "kibot":          # MM/DD/YYYY,HH:MM,open,high,low,close,volume, no header
        df = pd.DataFrame({"d": c["utc"].strftime("%m/%d/%Y"), "t": c["utc"].strftime("%H:%M"), **prices, "v": c["volume"]})
        df.to_csv(path, header=False, index=False)
    elif layout == "firstrate":      # YYYY-MM-DD HH:MM:SS,open,high,low,close,volume, no header
        df = pd.DataFrame({"t": c["utc"].strftime("%Y-%m-%d %H:%M:%S"), **prices, "v": c["volume"]})
        df.to_csv(path, header=False, index=False)
    elif layout == "tradestation":   # "Date","Time","Open","High","Low","Close","Up","Down": volume = Up + Down
        up = (c["volume"] + 1) // 2
        df = pd.DataFrame({"Date": c["utc"].strftime("%m/%d/%Y"), "Time": c["utc"].strftime("%H%M"),
                           **{k.title(): v for k, v in prices.items()}, "Up": up, "Down": c["volume"] - up})
        df.to_csv(path, index=False, quoting=2)  # csv.QUOTE_NONNUMERIC: quoted names and dates, as TradeStation writes
    elif layout == "vendor_header":  # Databento-style CSV names: ts_event (ISO UTC, ns), Last for close, Vol
        df = pd.DataFrame({"ts_event": c["utc"].strftime("%Y-%m-%dT%H:%M:%S.000000000Z"), "Open": c["open"],
                           "High": c["high"], "Low": c["low"], "Last": c["close"], "Vol": c["volume"]})
        df.to_csv(path, index=False)
    elif layout == "dbn":            # Databento DBN, OHLCV-1m schema, zstd when the name ends in .zst
        from scalp_lib.vendors import write_dbn
        write_dbn(path, bars.assign(contract="ESZ5"))
    else:
        raise ValueError(f"unknown layout {layout!r}; one of {LAYOUTS}")
    return path


def ninjatrader_mes(shared_data, folder, n_bars: int | None = None) -> Path:
    """The real ES bars as a NinjaTrader file for MES (`MES 12-25.Last.txt`, UTC stamps): same prices, ES volumes.

    Load it with `load_bars(path, instrument='MES', tz='UTC')`, or in a report with
    `-p data_path PATH -p instrument MES -p tz UTC`."""
    bars = es_bars(shared_data)
    if n_bars is not None: bars = bars.iloc[:n_bars]
    return write_layout(bars, Path(folder) / "MES 12-25.Last.txt", "ninjatrader")
