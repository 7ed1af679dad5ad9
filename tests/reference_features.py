"""Frozen reference: the feature layer as it was before the compiled kernels (pandas rolling/ewm, dense volume profile).

Test-only. `tests/test_features.py` compares every feature of `scalp_lib.features` with this implementation,
bit for bit, NaN positions and warm-up rows included, and the FeatureReport with this report. Do not edit it to
make a test pass: a difference is a change of results and must be explained (and this file then updated on
purpose, in its own commit). It has its own registry, so importing it does not touch scalp_lib's.
Copied from scalp_lib/features.py at commit ccf490c (engine, report and every feature group; the chunked path and
the causality helpers are not needed here and were left out).
"""
from __future__ import annotations
import inspect
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
import numpy as np
import pandas as pd
from tqdm.auto import tqdm
from scalp_lib.config import ScalpLibError, InstrumentSpec, get_instrument, load_settings, section_defaults
from scalp_lib.data import OHLCV, session_dates, minutes_since_open


class FeatureError(ScalpLibError, ValueError):
    "Bars, parameters or a feature group that the feature layer cannot use; the message names the bad value."

class UnknownFeatureGroupError(ScalpLibError, KeyError):
    "A feature-group name that is not registered; the message lists the registered ones."
    def __str__(self): return str(self.args[0]) if self.args else ''

@dataclass(frozen=True)
class FeatureGroup:
    "A registered feature group: a function of past bars and what the engine must know about it."
    name: str
    fn: Callable                        # fn(df, spec, **params) -> DataFrame, one column per feature
    lookback_bars: int|Callable         # longest look-back in bars, or a function params -> bars
    session_anchored: bool = False      # values depend on bars back to the session open
    settings_prefix: str = ''           # settings.ini [features] keys `<prefix>_<param>` override params
    default: bool = True                # computed when no group list is given

    @property
    def defaults(self)->dict:
        "The group's parameters and their default values, from the function signature."
        ps = list(inspect.signature(self.fn).parameters.values())[2:]
        return {p.name: p.default for p in ps if p.default is not inspect.Parameter.empty}

    def lookback(self, params:dict|None=None)->int:
        "Longest look-back in bars for these parameters."
        p = {**self.defaults, **(params or {})}
        lb = self.lookback_bars(p) if callable(self.lookback_bars) else self.lookback_bars
        return int(lb)

    @property
    def doc(self)->str: return (inspect.getdoc(self.fn) or '').split('\n')[0]

_REGISTRY: dict[str, FeatureGroup] = {}

def register_feature_group(name:str, # group name used in `groups=` and `exclude=`
                           fn:Callable, # fn(df, spec, **params) -> DataFrame of features with df's index
                           *, lookback_bars:int|Callable, # longest look-back in bars, or a function params -> bars
                           session_anchored:bool=False, # True when values reach back to the session open (VWAP)
                           settings_prefix:str|None=None, # prefix of settings.ini parameter keys; default: `name`
                           default:bool=True, # part of the default set
                           replace:bool=False, # allow replacing a group of the same name
                          )->FeatureGroup: # the registered group
    "Add a feature group to the registry: one function plus this one line."
    if not isinstance(name, str) or not name.isidentifier():
        raise FeatureError(f"feature group name must be an identifier-like string, got {name!r}")
    if name in _REGISTRY and not replace:
        raise FeatureError(f"feature group '{name}' is already registered; pass replace=True to replace it")
    if not callable(fn): raise FeatureError(f"feature group '{name}': fn must be callable, got {type(fn).__name__}")
    ps = list(inspect.signature(fn).parameters.values())
    if len(ps) < 2 or any(p.default is inspect.Parameter.empty and p.kind is not p.VAR_KEYWORD for p in ps[2:]):
        raise FeatureError(f"feature group '{name}': fn must look like fn(df, spec, **params) with defaults for every param")
    if not callable(lookback_bars) and not (isinstance(lookback_bars, (int, np.integer)) and lookback_bars >= 0):
        raise FeatureError(f"feature group '{name}': lookback_bars must be an int >= 0 or a function, got {lookback_bars!r}")
    g = FeatureGroup(name, fn, lookback_bars, bool(session_anchored), settings_prefix or name, bool(default))
    g.lookback()  # a broken lookback function fails here, not in the middle of a run
    _REGISTRY[name] = g
    return g

def unregister_feature_group(name:str)->FeatureGroup:
    "Remove a group from the registry (for experiments and tests); returns it."
    if name not in _REGISTRY:
        raise UnknownFeatureGroupError(f"no feature group '{name}'; registered: {sorted(_REGISTRY)}")
    return _REGISTRY.pop(name)

def feature_groups()->pd.DataFrame:
    "The registered groups: default membership, look-back with default parameters, session anchoring, parameters."
    rows = [dict(group=g.name, default=g.default, lookback_bars=g.lookback(), session_anchored=g.session_anchored,
                 params=g.defaults, summary=g.doc) for g in _REGISTRY.values()]
    return pd.DataFrame(rows, columns=['group','default','lookback_bars','session_anchored','params','summary']).set_index('group')

def _safe_div(num, # numerator (array or scalar)
              den, # denominator
              fill:float=np.nan, # result where den == 0
             )->np.ndarray: # float64; never +-inf from a zero denominator
    "num / den, with `fill` where the denominator is zero."
    num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
    out = np.full(np.broadcast_shapes(num.shape, den.shape), fill, np.float64)
    np.divide(num, den, out=out, where=den != 0)
    return out

def _lag(x:np.ndarray, k:int)->np.ndarray:
    "`x` delayed by k >= 1 bars (NaN for the first k)."
    out = np.full(len(x), np.nan)
    if k < len(x): out[k:] = x[:len(x) - k]
    return out

def _rolling(x, w:int): return pd.Series(x).rolling(int(w), min_periods=int(w))

def _ewm_mean(x, alpha:float, min_periods:int)->np.ndarray:
    "Recursive EWM y_t = alpha x_t + (1 - alpha) y_{t-1}, started at the first value (Wilder when alpha = 1/n)."
    return pd.Series(x).ewm(alpha=alpha, adjust=False, min_periods=int(min_periods)).mean().to_numpy()

def _ewm_lookback(alpha:float, tol:float=1e-8)->int:
    "Bars after which an EWM's starting value weighs less than `tol`: its effective, finite memory."
    return int(math.ceil(math.log(tol) / math.log(1.0 - alpha)))

def _ohlcv(df:pd.DataFrame)->tuple: return tuple(df[k].to_numpy(np.float64) for k in OHLCV)

def _session_start_rows(sess:np.ndarray)->np.ndarray:
    "For every row, the position of the first row of its session (rows are in time order)."
    new = np.ones(len(sess), bool)
    new[1:] = sess[1:] != sess[:-1]
    first = np.flatnonzero(new)
    return first[np.cumsum(new) - 1]

def _session_cumsum(x:np.ndarray, start:np.ndarray)->np.ndarray:
    "Cumulative sum of x restarted at each session's first row."
    cs = np.cumsum(x)
    return cs - (cs[start] - x[start])

def returns_features(df:pd.DataFrame, # bars: OHLCV columns, tz-aware index
                     spec:InstrumentSpec, # instrument (tick size)
                     horizons=(1, 5, 15, 30, 60), # log-return horizons, bars
                     tick_horizons=(1, 5, 15), # close-to-close change horizons, bars, measured in ticks
                    )->pd.DataFrame:
    "Log returns of the close over several horizons, and close-to-close changes in ticks."
    c = df['close'].to_numpy(np.float64)
    lc = np.log(c)
    out = {f'log_ret_{h}': lc - _lag(lc, h) for h in horizons}
    out.update({f'chg_{h}_ticks': (c - _lag(c, h)) / spec.tick_size for h in tick_horizons})
    return pd.DataFrame(out, index=df.index, copy=False)

register_feature_group('returns', returns_features, lookback_bars=lambda p: max((*p['horizons'], *p['tick_horizons']), default=0))

def volatility_features(df:pd.DataFrame, # bars
                        spec:InstrumentSpec, # instrument
                        windows=(15, 60), # trailing windows, bars; the ratio uses the first two
                       )->pd.DataFrame:
    "Realised volatility per bar in percent: close-to-close, Parkinson and Garman-Klass, and a short/long ratio."
    o, h, l, c, _ = _ohlcv(df)
    lc = np.log(c)
    r = lc - _lag(lc, 1)
    hl2 = np.log(h / l) ** 2
    gk = 0.5 * hl2 - (2 * np.log(2) - 1) * np.log(c / o) ** 2
    out = {}
    for w in windows:
        out[f'rvol_cc_{w}_pct'] = 100 * _rolling(r, w).std().to_numpy()
        out[f'rvol_pk_{w}_pct'] = 100 * np.sqrt(np.maximum(_rolling(hl2, w).mean().to_numpy(), 0) / (4 * np.log(2)))
        out[f'rvol_gk_{w}_pct'] = 100 * np.sqrt(np.maximum(_rolling(gk, w).mean().to_numpy(), 0))
    if len(windows) >= 2:
        w0, w1 = windows[:2]
        out[f'rvol_ratio_{w0}_{w1}'] = _safe_div(out[f'rvol_cc_{w0}_pct'], out[f'rvol_cc_{w1}_pct'], fill=1.0)
    return pd.DataFrame(out, index=df.index, copy=False)

register_feature_group('volatility', volatility_features, lookback_bars=lambda p: max(p['windows']) + 1)

def _true_range(h, l, c)->np.ndarray:
    pc = _lag(c, 1)
    return np.fmax(h - l, np.fmax(np.abs(h - pc), np.abs(l - pc)))  # fmax: the first bar's TR is its range

def _atr(h, l, c, window:int)->np.ndarray: return _ewm_mean(_true_range(h, l, c), 1.0 / window, window)

def atr_features(df:pd.DataFrame, # bars
                 spec:InstrumentSpec, # instrument (tick size)
                 window=14, # Wilder smoothing length, bars
                )->pd.DataFrame:
    "Average true range in ticks, and this bar's range in ticks and in ATRs (0 if the ATR is 0)."
    _, h, l, c, _ = _ohlcv(df)
    atr = _atr(h, l, c, window)
    return pd.DataFrame({f'atr_{window}_ticks': atr / spec.tick_size,
                         'range_ticks': (h - l) / spec.tick_size,
                         f'range_atr_{window}': _safe_div(h - l, atr, fill=0.0)}, index=df.index, copy=False)

register_feature_group('atr', atr_features, lookback_bars=lambda p: _ewm_lookback(1 / p['window']) + p['window'])

def rsi_features(df:pd.DataFrame, # bars
                 spec:InstrumentSpec, # instrument
                 windows=(7, 14), # Wilder smoothing lengths, bars
                )->pd.DataFrame:
    "Relative strength index (0-100, Wilder smoothing); 50 when there was no price change at all."
    c = df['close'].to_numpy(np.float64)
    d = c - _lag(c, 1)
    up, dn = np.where(d > 0, d, 0.0), np.where(d < 0, -d, 0.0)
    out = {}
    for w in windows:
        au, ad = _ewm_mean(up, 1.0 / w, w), _ewm_mean(dn, 1.0 / w, w)
        out[f'rsi_{w}'] = 100 * _safe_div(au, au + ad, fill=0.5)
    return pd.DataFrame(out, index=df.index, copy=False)

register_feature_group('rsi', rsi_features, lookback_bars=lambda p: _ewm_lookback(1 / max(p['windows'])) + max(p['windows']))

def macd_features(df:pd.DataFrame, # bars
                  spec:InstrumentSpec, # instrument
                  fast=12, slow=26, signal=9, # EMA spans, bars
                  atr_window=14, # ATR used as the unit, bars
                 )->pd.DataFrame:
    "MACD line, signal line and histogram in units of ATR (scale-free momentum; 0 where the ATR is 0)."
    _, h, l, c, _ = _ohlcv(df)
    line = _ewm_mean(c, 2 / (fast + 1), fast) - _ewm_mean(c, 2 / (slow + 1), slow)
    sig = _ewm_mean(line, 2 / (signal + 1), signal)
    atr = _atr(h, l, c, atr_window)
    return pd.DataFrame({'macd_atr': _safe_div(line, atr, 0.0), 'macd_signal_atr': _safe_div(sig, atr, 0.0),
                         'macd_hist_atr': _safe_div(line - sig, atr, 0.0)}, index=df.index, copy=False)

register_feature_group('macd', macd_features, lookback_bars=lambda p: max(
    _ewm_lookback(2 / (p['slow'] + 1)) + p['slow'] + _ewm_lookback(2 / (p['signal'] + 1)) + p['signal'],
    _ewm_lookback(1 / p['atr_window']) + p['atr_window']))

def bollinger_features(df:pd.DataFrame, # bars
                       spec:InstrumentSpec, # instrument
                       window=20, # moving-average length, bars
                       n_std=2.0, # band half-width in standard deviations (population s.d., as `ta`)
                      )->pd.DataFrame:
    "Bollinger %b (0.5 for a zero-width band) and band width in percent of the moving average."
    c = df['close'].to_numpy(np.float64)
    r = _rolling(c, window)
    mid, sd = r.mean().to_numpy(), r.std(ddof=0).to_numpy()
    width = 2 * n_std * sd
    return pd.DataFrame({f'bb_pctb_{window}': _safe_div(c - (mid - n_std * sd), width, fill=0.5),
                         f'bb_width_{window}_pct': 100 * width / mid}, index=df.index, copy=False)

register_feature_group('bollinger', bollinger_features, lookback_bars=lambda p: p['window'])

def stochastic_features(df:pd.DataFrame, # bars
                        spec:InstrumentSpec, # instrument
                        window=14, # high/low look-back, bars
                        smooth=3, # %D moving-average length, bars
                       )->pd.DataFrame:
    "Stochastic oscillator %K and its moving average %D (0-100); 50 when the window's range is zero."
    _, h, l, c, _ = _ohlcv(df)
    ll, hh = _rolling(l, window).min().to_numpy(), _rolling(h, window).max().to_numpy()
    k = 100 * _safe_div(c - ll, hh - ll, fill=0.5)
    return pd.DataFrame({f'stoch_k_{window}': k, f'stoch_d_{window}': _rolling(k, smooth).mean().to_numpy()}, index=df.index, copy=False)

register_feature_group('stochastic', stochastic_features, lookback_bars=lambda p: p['window'] + p['smooth'])

def zscore_features(df:pd.DataFrame, # bars
                    spec:InstrumentSpec, # instrument
                    price_windows=(60, 240), # close z-score windows, bars
                    volume_windows=(60, 240), # log-volume z-score windows, bars
                   )->pd.DataFrame:
    "Rolling z-scores of the close and of log(1 + volume); 0 when the window has no variation."
    _, _, _, c, v = _ohlcv(df)
    lv = np.log1p(v)
    out = {}
    for w in price_windows:
        r = _rolling(c, w)
        out[f'close_z_{w}'] = _safe_div(c - r.mean().to_numpy(), r.std().to_numpy(), fill=0.0)
    for w in volume_windows:
        r = _rolling(lv, w)
        out[f'volume_z_{w}'] = _safe_div(lv - r.mean().to_numpy(), r.std().to_numpy(), fill=0.0)
    return pd.DataFrame(out, index=df.index, copy=False)

register_feature_group('zscore', zscore_features, lookback_bars=lambda p: max((*p['price_windows'], *p['volume_windows']), default=0))

def vwap_features(df:pd.DataFrame, # bars
                  spec:InstrumentSpec, # instrument (tick size, session calendar)
                  slope_bars=5, # VWAP slope horizon, bars (within the session)
                 )->pd.DataFrame:
    "Session-anchored VWAP: distance of the close in ticks and in session s.d., and the VWAP slope in ticks."
    _, h, l, c, v = _ohlcv(df)
    start = _session_start_rows(session_dates(df.index, spec))
    tp = (h + l + c) / 3
    x = tp - tp[start]  # centred on the session's first price: keeps the variance sums accurate
    cv = _session_cumsum(v, start)
    mean_x = _safe_div(_session_cumsum(v * x, start), cv)
    var = np.maximum(_safe_div(_session_cumsum(v * x * x, start), cv) - mean_x ** 2, 0.0)
    vwap = tp[start] + mean_x
    back = np.maximum(np.arange(len(c)) - slope_bars, start)
    return pd.DataFrame({'vwap_dist_ticks': (c - vwap) / spec.tick_size,
                         'vwap_dist_sd': _safe_div(c - vwap, np.sqrt(var), fill=0.0),
                         f'vwap_slope_{slope_bars}_ticks': (vwap - vwap[back]) / spec.tick_size}, index=df.index, copy=False)

register_feature_group('vwap', vwap_features, lookback_bars=0, session_anchored=True)

def volume_features(df:pd.DataFrame, # bars
                    spec:InstrumentSpec, # instrument
                    ratio_windows=(5, 20), # relative-volume windows, bars
                    imbalance_windows=(5, 20, 60), # close-location imbalance windows, bars
                    tick_windows=(20, 60), # tick-rule imbalance windows, bars
                   )->pd.DataFrame:
    "Relative volume and signed-volume order-flow proxies (close location, tick rule); never inf on zero volume."
    _, h, l, c, v = _ohlcv(df)
    out = {f'vol_logratio_{w}': np.log1p(v) - np.log1p(_rolling(v, w).mean().to_numpy()) for w in ratio_windows}
    clv = _safe_div((c - l) - (h - c), h - l, fill=0.0)
    out['clv'] = clv
    sign = np.sign(c - _lag(c, 1))
    def imbalance(signed, w):
        return np.clip(_safe_div(_rolling(signed, w).sum().to_numpy(), _rolling(v, w).sum().to_numpy(), fill=0.0), -1, 1)
    out.update({f'clv_imb_{w}': imbalance(clv * v, w) for w in imbalance_windows})
    out.update({f'tick_imb_{w}': imbalance(sign * v, w) for w in tick_windows})
    return pd.DataFrame(out, index=df.index, copy=False)

register_feature_group('volume', volume_features, lookback_bars=lambda p: max(
    (*p['ratio_windows'], *p['imbalance_windows'], *[w + 1 for w in p['tick_windows']]), default=0))

_VP_FIXED = 1 << 16        # fixed-point volume unit (1/65536 contract): integer sums are exact
_VP_MAX_CELLS = 1 << 22    # cells of one sub-block matrix (32 MiB of int64)
_VP_SUB_ROWS = 256         # output rows per sub-block (fastest on the benchmark machine)

def _vp_levels(lo:np.ndarray, # int64 bin of each bar's low
               hi:np.ndarray, # int64 bin of each bar's high (>= lo)
               vol:np.ndarray, # int64 fixed-point volume of each bar
               window:int, # trailing window, bars (including the current bar)
               q_lo:float, q_hi:float, # cumulative-volume fractions bounding the value area
               timestamps=None, # for error messages
              )->tuple: # poc, val, vah bins as float64 (NaN: fewer than `window` bars, or no volume)
    "Rolling volume-profile levels (VPOC, value-area low/high bins) over the trailing `window` bars."
    n = len(lo)
    poc, val, vah = (np.full(n, np.nan) for _ in range(3))
    s = window - 1
    while s < n:
        m = min(_VP_SUB_ROWS, n - s)
        while True:
            a, e = s - window + 1, s + m
            base = int(lo[a:e].min())
            nb = int(hi[a:e].max()) - base + 2
            if (e - a + 1) * nb <= _VP_MAX_CELLS or m == 1: break
            m = max(1, m // 2)
        if (e - a + 1) * nb > _VP_MAX_CELLS:
            at = f" at {timestamps[s]}" if timestamps is not None else ''
            raise FeatureError(f"volume profile: the {window} bars ending{at} span {nb - 2} bins; too wide for a profile "
                               f"of {_VP_MAX_CELLS} cells. Use wider bins (settings [features] vp_bin_ticks) or check the data")
        blo, bhi = lo[a:e] - base, hi[a:e] - base
        share = vol[a:e] // (bhi - blo + 1)
        P = np.zeros((e - a + 1, nb), np.int64)   # row 0 stays zero: the empty prefix
        rows = np.arange(1, e - a + 1)
        P[rows, blo] = share                      # each bar as a difference array along bins
        P[rows, bhi + 1] -= share
        np.cumsum(P, axis=0, out=P)               # prefix sums over bars
        t = np.arange(s, e) - a + 1
        H = P[t] - P[t - window]                  # the trailing window, still as a difference array
        np.cumsum(H, axis=1, out=H)               # the window's profile, one row per output bar
        top = H.argmax(axis=1)
        np.cumsum(H, axis=1, out=H)
        total = H[:, -1]
        lo_b = (H < (q_lo * total)[:, None]).sum(axis=1)
        hi_b = (H < (q_hi * total)[:, None]).sum(axis=1)
        ok = total > 0
        poc[s:e] = np.where(ok, top + base, np.nan)
        val[s:e] = np.where(ok, lo_b + base, np.nan)
        vah[s:e] = np.where(ok, hi_b + base, np.nan)
        s = e
    return poc, val, vah

def volume_profile_features(df:pd.DataFrame, # bars
                            spec:InstrumentSpec, # instrument (tick size)
                            window_bars=390, # trailing profile window, bars
                            value_area_pct=70, # share of the window's volume inside the value area, percent
                            bin_ticks=1, # price-bin width, ticks
                           )->pd.DataFrame:
    "Rolling causal volume profile: distance of the close to VPOC, value-area high and low in ticks, width, position in the area."
    if not 0 < value_area_pct < 100: raise FeatureError(f"value_area_pct must be in (0, 100), got {value_area_pct}")
    if int(bin_ticks) < 1 or int(window_bars) < 1:
        raise FeatureError(f"bin_ticks and window_bars must be >= 1, got {bin_ticks}, {window_bars}")
    _, h, l, c, v = _ohlcv(df)
    k, tick = int(bin_ticks), spec.tick_size
    lo = np.floor(np.round(l / tick) / k).astype(np.int64)
    hi = np.floor(np.round(h / tick) / k).astype(np.int64)
    if len(v) and v.max() * (window_bars + _VP_SUB_ROWS) * _VP_FIXED > 2.0 ** 62:
        raise FeatureError(f"volume profile: bar volume {v.max():g} is too large for exact fixed-point sums")
    vol = np.round(v * _VP_FIXED).astype(np.int64)
    q = (1 - value_area_pct / 100) / 2
    poc, val, vah = _vp_levels(lo, hi, vol, int(window_bars), q, 1 - q, df.index)
    centre = lambda b: b * k + (k - 1) / 2  # bin -> price in ticks
    ct = c / tick
    return pd.DataFrame({'vpoc_dist_ticks': ct - centre(poc), 'vah_dist_ticks': ct - centre(vah),
                         'val_dist_ticks': ct - centre(val), 'va_width_ticks': centre(vah) - centre(val),
                         'va_pos': np.clip(_safe_div(ct - centre(val), centre(vah) - centre(val), fill=0.5), -1, 2)},
                        index=df.index, copy=False)

register_feature_group('volume_profile', volume_profile_features, lookback_bars=lambda p: p['window_bars'], settings_prefix='vp')

def time_features(df:pd.DataFrame, # bars
                  spec:InstrumentSpec, # instrument (exchange time zone, session times)
                 )->pd.DataFrame:
    "Cyclical time of day, minutes since the session open and until its close, and the trading date's weekday (0 = Monday)."
    local = df.index.tz_convert(spec.tz)
    minute_of_day = (local.hour * 60 + local.minute + local.second / 60).to_numpy(np.float64)
    angle = 2 * np.pi * minute_of_day / 1440
    since = minutes_since_open(df.index, spec).astype(np.float64)
    dates = session_dates(df.index, spec)
    weekday = (dates.astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday (3)
    # the scheduled close of each trading date (early closes included); the regular length on dates without a session
    from scalp_lib.exchange_calendar import exchange_sessions
    sess = exchange_sessions(str(dates.min()), str(dates.max()), spec) if len(dates) else None
    open_at = pd.Timedelta(hours=spec.session_open.hour, minutes=spec.session_open.minute)
    length = {} if sess is None else {d.date(): ((c.tz_convert(spec.tz).tz_localize(None) - c.tz_convert(spec.tz).tz_localize(None).normalize()
                                                   - open_at) // pd.Timedelta(minutes=1)) % 1440 for d, c in sess['close'].items()}
    close_since = np.array([length.get(d, spec.session_minutes) for d in pd.DatetimeIndex(dates).date], np.float64)
    return pd.DataFrame({'tod_sin': np.sin(angle), 'tod_cos': np.cos(angle), 'minutes_since_open': since,
                         'minutes_to_close': close_since - since, 'day_of_week': weekday.astype(np.float64)},
                        index=df.index, copy=False)

register_feature_group('time', time_features, lookback_bars=0)

def _anchor_offset_minutes(anchor, spec:InstrumentSpec)->int:
    "Minutes from the session open to the anchor ('session' or an exchange-time 'HH:MM')."
    if anchor == 'session': return 0
    try: hh, mm = (int(x) for x in str(anchor).split(':'))
    except ValueError: raise FeatureError(f"opening-range anchor must be 'session' or 'HH:MM', got {anchor!r}") from None
    open_min = spec.session_open.hour * 60 + spec.session_open.minute
    return (hh * 60 + mm - open_min) % 1440

def opening_range_features(df:pd.DataFrame, # bars
                           spec:InstrumentSpec, # instrument (session calendar, tick size)
                           minutes=30, # opening-range length, minutes
                           anchor='session', # 'session' (session open) or exchange-time 'HH:MM'
                          )->pd.DataFrame:
    "Opening range: distance of the close to its high and low in ticks, its width, the close's position, completion."
    _, h, l, c, _ = _ohlcv(df)
    start = _session_start_rows(session_dates(df.index, spec))
    t = minutes_since_open(df.index, spec) - _anchor_offset_minutes(anchor, spec)  # minutes since the anchor
    inside = (t >= 0) & (t < minutes)
    or_hi = pd.Series(np.where(inside, h, -np.inf)).groupby(start).cummax().to_numpy()
    or_lo = pd.Series(np.where(inside, l, np.inf)).groupby(start).cummin().to_numpy()
    known = (t >= 0) & np.isfinite(or_hi)
    or_hi, or_lo = np.where(known, or_hi, np.nan), np.where(known, or_lo, np.nan)
    tick = spec.tick_size
    return pd.DataFrame({'or_high_dist_ticks': (c - or_hi) / tick, 'or_low_dist_ticks': (c - or_lo) / tick,
                         'or_width_ticks': (or_hi - or_lo) / tick,
                         'or_pos': np.clip(_safe_div(c - or_lo, or_hi - or_lo, fill=0.5), -1, 2),
                         'or_complete': (t >= minutes - 1).astype(np.float64)}, index=df.index, copy=False)

register_feature_group('opening_range', opening_range_features, lookback_bars=0, session_anchored=True, settings_prefix='or')

def candle_features(df:pd.DataFrame, # bars
                    spec:InstrumentSpec, # instrument
                   )->pd.DataFrame:
    "Bar shape relative to its range: signed body, upper and lower wick (all 0 for a flat bar)."
    o, h, l, c, _ = _ohlcv(df)
    rng = h - l
    return pd.DataFrame({'candle_body': _safe_div(c - o, rng, 0.0),
                         'candle_upper_wick': _safe_div(h - np.maximum(o, c), rng, 0.0),
                         'candle_lower_wick': _safe_div(np.minimum(o, c) - l, rng, 0.0)}, index=df.index, copy=False)

register_feature_group('candle', candle_features, lookback_bars=0)

def channel_features(df:pd.DataFrame, # bars
                     spec:InstrumentSpec, # instrument (tick size)
                     windows=(60, 240), # channel look-backs, bars
                    )->pd.DataFrame:
    "Distance of the close below the trailing high and above the trailing low (Donchian channel), in ticks."
    _, h, l, c, _ = _ohlcv(df)
    out = {}
    for w in windows:
        out[f'high_dist_{w}_ticks'] = (c - _rolling(h, w).max().to_numpy()) / spec.tick_size
        out[f'low_dist_{w}_ticks'] = (c - _rolling(l, w).min().to_numpy()) / spec.tick_size
    return pd.DataFrame(out, index=df.index, copy=False)

register_feature_group('channel', channel_features, lookback_bars=lambda p: max(p['windows'], default=0))

@dataclass
class FeatureReport:
    "Diagnostics of one feature run: per-feature counts, warm-up, constant features and highly correlated pairs."
    n_rows: int
    table: pd.DataFrame            # one row per feature: group, nan_count, inf_count, warmup_rows, min, max, constant
    correlated_pairs: pd.DataFrame # feature_a, feature_b, corr with |corr| >= corr_threshold
    corr_threshold: float
    lookback_bars: dict            # declared look-back per group
    overlap_bars: int              # rows each block is computed from before its first row
    seconds: float = float('nan')  # wall time of the run
    notes: list = field(default_factory=list)

    @property
    def n_features(self)->int: return len(self.table)
    @property
    def warmup_rows(self)->int:
        "Rows at the start before every feature has had a value."
        return int(self.table['warmup_rows'].max()) if len(self.table) else 0
    @property
    def constant_features(self)->list: return self.table.index[self.table['constant']].tolist()
    @property
    def inf_replaced(self)->int: return int(self.table['inf_count'].sum())
    def to_frame(self)->pd.DataFrame:
        "The per-feature table."
        return self.table.copy()
    def summary(self)->str:
        rate = f", {self.n_rows / self.seconds:,.0f} rows/s" if self.seconds == self.seconds and self.seconds > 0 else ''
        return (f"{self.n_rows:,} rows x {self.n_features} features from {len(self.lookback_bars)} groups{rate}; "
                f"warm-up {self.warmup_rows} rows (reported, not dropped); NaN {int(self.table['nan_count'].sum()):,}; "
                f"inf replaced by NaN {self.inf_replaced:,}; constant: {self.constant_features or 'none'}; "
                f"pairs with |corr| >= {self.corr_threshold}: {len(self.correlated_pairs)}")
    def __repr__(self): return f"FeatureReport({self.summary()})"
    def _repr_html_(self):
        notes = ''.join(f"<li>{n}</li>" for n in self.notes)
        pairs = self.correlated_pairs.to_html(index=False, float_format='%.3f') if len(self.correlated_pairs) else '<p>none</p>'
        return (f"<p><b>Features</b>: {self.summary()}</p>" + (f"<ul>{notes}</ul>" if notes else '')
                + f"<p><b>Highly correlated pairs</b></p>{pairs}"
                + f"<details><summary>Per-feature table</summary>{self.table.to_html(float_format='%.4g')}</details>")

_CORR_FIRST, _CORR_EVERY = 4096, 32  # the first 4,096 rows, then every 32nd row, feed the correlation estimate

class _ReportBuilder:
    "Accumulates a FeatureReport block by block (in memory and out of core alike)."
    def __init__(self, names:list, groups:list, corr_threshold:float, first_rows:int=_CORR_FIRST):
        k = len(names)
        self.names, self.groups, self.thr, self.first_rows = names, groups, corr_threshold, first_rows
        self.nan, self.inf = np.zeros(k, np.int64), np.zeros(k, np.int64)
        self.warm = np.full(k, -1, np.int64)   # first row with a value; -1: none yet
        self.mn, self.mx = np.full(k, np.inf), np.full(k, -np.inf)
        self.shift, self.shift_set = np.zeros(k), np.zeros(k, bool)  # per-feature offset: numerically stable sums
        self.n = np.zeros((k, k)); self.sx = np.zeros((k, k)); self.sxx = np.zeros((k, k)); self.sxy = np.zeros((k, k))

    def add(self, vals:np.ndarray, # (k, m) float32 block, inf already replaced by NaN
            infs:np.ndarray, # (k,) infinities replaced in this block
            row0:int): # global row of the block's first column
        fin = ~np.isnan(vals)
        self.nan += (~fin).sum(axis=1); self.inf += infs
        pending = self.warm < 0
        if pending.any():
            has = fin[pending].any(axis=1)
            idx = np.flatnonzero(pending)[has]
            self.warm[idx] = row0 + fin[idx].argmax(axis=1)
        with np.errstate(invalid='ignore'):
            self.mn = np.fmin(self.mn, np.fmin.reduce(vals, axis=1))   # fmin/fmax skip NaN
            self.mx = np.fmax(self.mx, np.fmax.reduce(vals, axis=1))
        rows = np.arange(row0, row0 + vals.shape[1])
        pick = (rows < self.first_rows) | (rows % _CORR_EVERY == 0)
        x, f = vals[:, pick].astype(np.float64), fin[:, pick]
        unset = ~self.shift_set & f.any(axis=1)
        if unset.any():
            self.shift[unset] = x[unset, f[unset].argmax(axis=1)]
            self.shift_set[unset] = True
        x = np.where(f, x - self.shift[:, None], 0.0)
        m = f.astype(np.float64)
        self.n += m @ m.T; self.sx += x @ m.T; self.sxx += (x * x) @ m.T; self.sxy += x @ x.T

    def finish(self, n_rows:int, lookbacks:dict, overlap:int, seconds:float, notes=None)->FeatureReport:
        with np.errstate(invalid='ignore', divide='ignore'):
            cov = self.n * self.sxy - self.sx * self.sx.T
            var_a = self.n * self.sxx - self.sx ** 2
            corr = cov / np.sqrt(var_a * var_a.T)
        pairs = []
        k = len(self.names)
        for i in range(k):
            for j in range(i + 1, k):
                if self.n[i, j] > 2 and np.isfinite(corr[i, j]) and abs(corr[i, j]) >= self.thr:
                    pairs.append((self.names[i], self.names[j], float(np.clip(corr[i, j], -1, 1))))
        pairs = pd.DataFrame(pairs, columns=['feature_a', 'feature_b', 'corr'])
        if len(pairs): pairs = pairs.reindex(pairs['corr'].abs().sort_values(ascending=False).index).reset_index(drop=True)
        has = self.warm >= 0
        table = pd.DataFrame({'group': self.groups, 'nan_count': self.nan, 'inf_count': self.inf,
                              'warmup_rows': np.where(has, self.warm, n_rows),
                              'min': np.where(has, self.mn, np.nan), 'max': np.where(has, self.mx, np.nan),
                              'constant': has & (self.mn == self.mx)}, index=pd.Index(self.names, name='feature'))
        return FeatureReport(n_rows, table, pairs, self.thr, dict(lookbacks), overlap, seconds, list(notes or []))

def _as_names(x)->list:
    "A group list from a comma-separated string or an iterable of names."
    if x is None: return []
    if isinstance(x, str): return [s.strip() for s in x.split(',') if s.strip()]
    return [str(s) for s in x]

def _coerce_like(value, default, key:str):
    "A settings.ini value converted to the type of the parameter's default (tuples from '1, 5, 15')."
    try:
        if isinstance(default, tuple):
            if isinstance(value, str): return tuple(int(s) for s in value.split(',') if s.strip())
            return tuple(value) if isinstance(value, (list, tuple)) else (int(value),)
        if isinstance(default, bool): return bool(value)
        if isinstance(default, int) and not isinstance(value, bool): return int(value)
        if isinstance(default, float): return float(value)
    except (TypeError, ValueError):
        raise FeatureError(f"settings [features] {key} = {value!r} cannot be read as {type(default).__name__}") from None
    return value

class _FeaturePlan:
    "Selected groups with resolved parameters, the block overlap, and the computation of one block."
    def __init__(self, spec:InstrumentSpec, config:dict|None=None, groups=None, exclude=None, params:dict|None=None):
        self.spec = spec
        cfg = section_defaults('features', **{k: v for k, v in (config or {}).items() if k != 'params'})
        sel = _as_names(groups if groups is not None else cfg.get('groups', 'default'))
        if sel == ['default']: sel = [n for n, g in _REGISTRY.items() if g.default]
        elif sel == ['all']: sel = list(_REGISTRY)
        excl = _as_names(exclude if exclude is not None else cfg.get('exclude', ''))
        unknown = [n for n in sel + excl if n not in _REGISTRY]
        if unknown: raise UnknownFeatureGroupError(f"unknown feature group(s) {unknown}; registered: {list(_REGISTRY)}")
        self.groups = [_REGISTRY[n] for n in dict.fromkeys(sel) if n not in excl]
        if not self.groups: raise FeatureError(f"no feature group left to compute (groups={sel}, exclude={excl})")
        user = {}
        for src in ((config or {}).get('params') or {}, params or {}):
            for gname, p in src.items():
                if gname not in _REGISTRY: raise UnknownFeatureGroupError(f"params given for unknown feature group '{gname}'; registered: {list(_REGISTRY)}")
                user.setdefault(gname, {}).update(p)
        self.params = {}
        for g in self.groups:
            p = dict(g.defaults)
            for k in p:
                key = f"{g.settings_prefix}_{k}"
                if key in cfg: p[k] = _coerce_like(cfg[key], p[k], key)
            for k, v in user.get(g.name, {}).items():
                if k not in p: raise FeatureError(f"feature group '{g.name}' has no parameter '{k}'; its parameters: {list(p)}")
                p[k] = v
            self.params[g.name] = p
        self.lookbacks = {g.name: g.lookback(self.params[g.name]) for g in self.groups}
        self.overlap = max(self.lookbacks.values())
        self.session_anchored = any(g.session_anchored for g in self.groups)
        self.block_rows = int(cfg.get('block_rows', 131072))
        if self.block_rows < 1: raise FeatureError(f"block_rows must be >= 1, got {self.block_rows}")
        self.corr_threshold = float(cfg.get('corr_threshold', 0.95))
        self.names, self.feature_groups = None, None

    def start_row(self, s:int, session_start:int)->int:
        "First row the block starting at global row `s` is computed from."
        a = s - self.overlap
        if self.session_anchored: a = min(a, session_start)
        return max(a, 0)

    def compute(self, frame:pd.DataFrame, # bars from the block's computation start to its end
                skip:int, # leading rows of `frame` that belong to earlier blocks
               )->tuple: # (names, groups, float32 values (k, m), inf counts (k,))
        "Every selected group on `frame`; the rows from `skip` on as float32 with infinities replaced and counted."
        names, owners, cols = [], [], []
        for g in self.groups:
            res = g.fn(frame, self.spec, **self.params[g.name])
            if not isinstance(res, pd.DataFrame) or len(res) != len(frame):
                raise FeatureError(f"feature group '{g.name}' must return a DataFrame with {len(frame)} rows, "
                                   f"got {type(res).__name__} of length {len(res) if hasattr(res, '__len__') else '?'}")
            for name in res.columns:
                names.append(str(name)); owners.append(g.name); cols.append(res[name])
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise FeatureError(f"feature names produced by more than one group: {dup}")
        m = len(frame) - skip
        vals = np.empty((len(cols), m), np.float32)
        with np.errstate(over='ignore', invalid='ignore'):
            for i, col in enumerate(cols):
                try: vals[i] = np.asarray(col.to_numpy()[skip:], dtype=np.float32)
                except (TypeError, ValueError) as e:
                    raise FeatureError(f"feature '{names[i]}' (group '{owners[i]}') is not numeric: {e}") from None
        inf = np.isinf(vals)
        infs = inf.sum(axis=1)
        if infs.any(): vals[inf] = np.nan
        if self.names is None: self.names, self.feature_groups = names, owners
        elif names != self.names: raise FeatureError("feature groups returned different columns for different blocks")
        return names, owners, vals, infs

def _check_bars(df)->None:
    "Raise FeatureError unless `df` is a usable bar frame: OHLCV columns, sorted unique tz-aware index, sane values."
    if not isinstance(df, pd.DataFrame): raise FeatureError(f"bars must be a DataFrame, got {type(df).__name__}")
    missing = [k for k in OHLCV if k not in df.columns]
    if missing: raise FeatureError(f"bars lack column(s) {missing}; columns present: {list(df.columns)} (use scalp_lib.data.load_bars)")
    if not isinstance(df.index, pd.DatetimeIndex) or df.index.tz is None:
        raise FeatureError("bars need a tz-aware DatetimeIndex (use scalp_lib.data.load_bars)")
    if len(df) == 0: raise FeatureError("bars are empty")
    if not df.index.is_monotonic_increasing or not df.index.is_unique:
        raise FeatureError("bar time stamps must be strictly increasing (sort and de-duplicate with load_bars(policy='repair'))")
    for k in OHLCV:
        if not pd.api.types.is_numeric_dtype(df[k]) or pd.api.types.is_bool_dtype(df[k]):
            raise FeatureError(f"column '{k}' must be numeric, got {df[k].dtype}")
    o, h, l, c, v = (df[k].to_numpy(np.float64) for k in OHLCV)
    problems = {'non-finite value': ~(np.isfinite(o) & np.isfinite(h) & np.isfinite(l) & np.isfinite(c) & np.isfinite(v)),
                'price <= 0': (np.minimum(np.minimum(o, c), np.minimum(h, l)) <= 0),
                'negative volume': v < 0, 'high < low': h < l}
    for what, mask in problems.items():
        if mask.any():
            raise FeatureError(f"{int(mask.sum())} bar(s) with {what}, first at {df.index[np.argmax(mask)]}; "
                               f"validate the bars with scalp_lib.data.load_bars first")

def _bar_frame(df:pd.DataFrame)->pd.DataFrame:
    "OHLCV as float64 on the same index and without attrs (pandas deep-copies attrs on every slice)."
    return pd.DataFrame({k: df[k].to_numpy(np.float64) for k in OHLCV}, index=df.index, copy=False)

class ScalpingFeatureEngineer:
    "Compute the selected feature groups for a bar frame: float32 features with the bars' index, and a FeatureReport."
    def __init__(self, df:pd.DataFrame, # bars: OHLCV float columns, sorted tz-aware index (load_bars output)
                 *, instrument:str|InstrumentSpec|None=None, # default: df.attrs['instrument'], then settings [data]
                 config:dict|None=None, # overrides of settings [features] keys; 'params': {group: {param: value}}
                 groups=None, # group names (list or 'a, b'), 'default' or 'all'; default: settings [features] groups
                 exclude=None, # group names to leave out
                 params:dict|None=None, # {group: {param: value}}, wins over config and settings
                 progress:bool=False, # tqdm bar over blocks
                ):
        _check_bars(df)
        if 'contract' in df.columns and df['contract'].nunique() > 1 and df.attrs.get('adjustment', 'none') == 'none':
            raise FeatureError("these bars are a raw continuous series over several contracts: features across a roll would "
                               "see the price gap between contracts as a move. Compute features on an adjusted series "
                               "(scalp_lib.contracts.continuous_series(..., adjustment='ratio' or 'difference')) and backtest on the raw one")
        self.df, self._bars = df, _bar_frame(df)
        self.spec = get_instrument(instrument or df.attrs.get('instrument') or load_settings().get('data', 'default_instrument', 'ES'))
        self.plan = _FeaturePlan(self.spec, config, groups, exclude, params)
        self.progress = progress
        self.features, self.report = None, None

    @property
    def groups(self)->list: return [g.name for g in self.plan.groups]
    @property
    def lookback_bars(self)->dict: return dict(self.plan.lookbacks)
    @property
    def feature_names(self)->list:
        "Names of the features, in output order (computed on a few bars if features were not generated yet)."
        if self.plan.names is None: self.plan.compute(self._bars.iloc[:min(len(self._bars), 32)], 0)
        return list(self.plan.names)

    def generate_all_features(self)->pd.DataFrame: # float32 features, same index as the bars
        "Compute every selected group block by block; sets `.features` and `.report`."
        t0 = time.perf_counter()
        df, plan, n = self._bars, self.plan, len(self._bars)
        G = plan.block_rows
        sess_start = _session_start_rows(session_dates(df.index, self.spec)) if plan.session_anchored else None
        out, rb = None, None
        with tqdm(total=n, unit=' bars', unit_scale=True, desc='features', disable=not self.progress) as bar:
            for s in range(0, n, G):
                e = min(s + G, n)
                a = plan.start_row(s, sess_start[s] if sess_start is not None else s)
                names, owners, vals, infs = plan.compute(df.iloc[a:e], s - a)
                if out is None:
                    out = np.empty((len(names), n), np.float32)   # feature-major: each column contiguous
                    rb = _ReportBuilder(names, owners, plan.corr_threshold)
                out[:, s:e] = vals
                rb.add(vals, infs, s)
                bar.update(e - s)
        self.features = pd.DataFrame(out.T, index=df.index, columns=names, copy=False)
        self.report = rb.finish(n, plan.lookbacks, plan.overlap, time.perf_counter() - t0)
        return self.features
