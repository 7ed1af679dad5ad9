"""The backtest engine as it was before the numba kernel: frozen here, for equivalence tests only.

A verbatim copy of the simulation, ledger, equity and run_backtest code of scalp_lib/backtest.py at the commit
before the kernel was introduced ("Backtest: shifted signals refused on both paths, short contract segments
counted, minimum-sample guards"). Plots, cost scenarios and the grid are left out. Do not edit: the tests in
tests/test_backtest.py require the new engine to give identical ledgers, equity curves, positions and counts.
"""
from __future__ import annotations
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from scalp_lib.config import ScalpLibError, InstrumentSpec, get_instrument, section_defaults
from scalp_lib.data import DataValidationError, session_dates
from scalp_lib.metrics import PerformanceMetrics, compute_metrics, sample_minimums

class BacktestError(ScalpLibError, ValueError):
    "A backtest setting or argument that cannot be used."

class SignalError(BacktestError):
    "A position signal that does not fit the bars (length, index, NaN, non-integer contracts)."

class ProbaError(SignalError):
    "Class probabilities that are not an (n_bars, 3) array of probabilities summing to 1."

INTRABAR_RULES = ('stop_first', 'target_first')
REENTRY_MODES = ('fresh', 'level')

def _off(v)->bool: return v is None or (isinstance(v, str) and v.strip().lower() in ('none', '', 'off'))

def _opt_int(name:str, v)->int|None:
    "A positive whole number, or None when disabled (settings 'none' or 0)."
    if _off(v) or (not isinstance(v, bool) and isinstance(v, (int, float, np.integer, np.floating)) and v == 0): return None
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or v < 0 or v != int(v):
        raise BacktestError(f"{name} must be a positive whole number (0 or 'none' disables it), got {v!r}")
    return int(v)

def backtest_settings(**overrides)->dict:
    "The `[backtest]` settings with keyword overrides (None = keep the file's value), checked and typed."
    s = section_defaults('backtest', **overrides)
    if s.get('fill') != 'next_open':
        raise BacktestError(f"fill={s.get('fill')!r} is not supported: a decision made on a bar's close can only fill at the "
                            "NEXT bar's open ('next_open'); same-bar fills use prices not yet known when deciding")
    if s['intrabar_rule'] not in INTRABAR_RULES: raise BacktestError(f"intrabar_rule must be one of {INTRABAR_RULES}, got {s['intrabar_rule']!r}")
    if s['reentry'] not in REENTRY_MODES: raise BacktestError(f"reentry must be one of {REENTRY_MODES}, got {s['reentry']!r}")
    for k in ('take_profit_ticks', 'stop_loss_ticks', 'max_hold_bars'): s[k] = _opt_int(k, s[k])
    if not isinstance(s['flat_at_session_end'], (bool, np.bool_)): raise BacktestError(f"flat_at_session_end must be True or False, got {s['flat_at_session_end']!r}")
    s['flat_threshold'] = None if _off(s['flat_threshold']) else float(s['flat_threshold'])
    return s

def _first_at(index, mask)->str:
    i = int(np.flatnonzero(mask)[0])
    return f"first at row {i} ({index[i]})"

def bar_ticks(bars:pd.DataFrame, # OHLCV bars from scalp_lib.data
              spec:InstrumentSpec, # contract spec (tick size)
             )->tuple: # open, high, low, close as int64 ticks
    "Check bars for the backtest and convert prices to integer ticks."
    if not isinstance(bars, pd.DataFrame): raise DataValidationError(f"bars must be a DataFrame, got {type(bars).__name__}")
    missing = [k for k in ('open', 'high', 'low', 'close') if k not in bars.columns]
    if missing: raise DataValidationError(f"bars lack column(s) {missing}; columns present: {list(bars.columns)}")
    if len(bars) < 2: raise DataValidationError(f"a backtest needs at least 2 bars, got {len(bars)}")
    idx = bars.index
    if not isinstance(idx, pd.DatetimeIndex) or idx.tz is None:
        raise DataValidationError("bars need a tz-aware DatetimeIndex (load them with scalp_lib.data.load_bars)")
    if not (idx.is_monotonic_increasing and idx.is_unique):
        raise DataValidationError("bar time stamps must be strictly increasing (sort and de-duplicate with scalp_lib.data.load_bars)")
    out, inv = [], 1.0 / spec.tick_size
    for k in ('open', 'high', 'low', 'close'):
        px = bars[k].to_numpy(np.float64)
        off = px * inv
        t = np.rint(off)
        np.subtract(off, t, out=off)
        np.abs(off, out=off)
        if not off.max() <= 1e-6 or t.min() < 1:            # max propagates NaN (and inf - inf is NaN)
            ok = off <= 1e-6
            bad = ~np.isfinite(px) | (px <= 0)
            if bad.any(): raise DataValidationError(f"column {k!r}: {int(bad.sum())} missing, infinite or non-positive prices, {_first_at(idx, bad)}")
            raise DataValidationError(f"column {k!r}: {int((~ok).sum())} prices off the {spec.symbol} tick grid "
                                      f"({spec.tick_size}), {_first_at(idx, ~ok)}")
        out.append(t.astype(np.int64))
    o, h, l, c = out
    bad = (h < np.maximum(o, c)) | (l > np.minimum(o, c))
    if bad.any(): raise DataValidationError(f"{int(bad.sum())} bars with high below open/close or low above open/close, {_first_at(idx, bad)}")
    return o, h, l, c

def _check_signal(signal, bars:pd.DataFrame)->np.ndarray:
    "One whole number of contracts per bar, no NaN: an int64 array."
    if isinstance(signal, pd.DataFrame):
        if signal.shape[1] != 1: raise SignalError(f"signal must be one column, got {signal.shape[1]}")
        signal = signal.iloc[:, 0]
    s = np.asarray(signal)
    if s.ndim != 1: raise SignalError(f"signal must be one-dimensional, got shape {s.shape}")
    if len(s) != len(bars): raise SignalError(f"signal has {len(s)} values but there are {len(bars)} bars")
    if s.dtype.kind == 'b' or s.dtype.kind not in 'iuf': raise SignalError(f"signal must be numeric contracts, got dtype {s.dtype}")
    sf = s.astype(np.float64)
    nan = ~np.isfinite(sf)
    if nan.any(): raise SignalError(f"signal has {int(nan.sum())} NaN or infinite values, {_first_at(bars.index, nan)}; "
                                    "use 0 for 'flat' (nothing is filled in silently)")
    frac = sf != np.round(sf)
    if frac.any(): raise SignalError(f"signal must be whole contracts, {int(frac.sum())} values are not, {_first_at(bars.index, frac)}")
    return sf.astype(np.int64)

def _check_proba(proba, n:int, index)->np.ndarray:
    "An (n, 3) float array of down/flat/up probabilities summing to 1."
    p = proba.to_numpy(np.float64) if isinstance(proba, pd.DataFrame) else np.asarray(proba, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 3: raise ProbaError(f"proba must have shape (n_bars, 3) for down/flat/up, got {p.shape}")
    if len(p) != n: raise ProbaError(f"proba has {len(p)} rows but there are {n} bars")
    bad = ~np.isfinite(p).all(axis=1)
    if bad.any(): raise ProbaError(f"proba has {int(bad.sum())} rows with NaN or infinite values, {_first_at(index, bad)}")
    bad = ((p < 0) | (p > 1)).any(axis=1)
    if bad.any(): raise ProbaError(f"proba has {int(bad.sum())} rows with values outside [0, 1], {_first_at(index, bad)}")
    sums = p.sum(axis=1)
    bad = np.abs(sums - 1) > 1e-4
    if bad.any(): raise ProbaError(f"proba rows must sum to 1: {int(bad.sum())} do not (worst sum {sums[bad][np.argmax(np.abs(sums[bad] - 1))]:.6f}), "
                                   f"{_first_at(index, bad)}; pass softmax probabilities, not logits")
    return p

def _inputs_on_bars(bars:pd.DataFrame, signal, proba)->tuple:
    "Exactly one of `signal` / `proba`; a pandas one must have the bars' index (used by position, a shift is look-ahead)."
    if (signal is None) == (proba is None): raise SignalError("pass exactly one of `signal` (contracts per bar) or `proba` (n_bars x 3)")
    idx = getattr(bars, 'index', None)
    for name, x, err in (('signal', signal, SignalError), ('proba', proba, ProbaError)):
        if isinstance(x, (pd.Series, pd.DataFrame)) and idx is not None and len(x) == len(idx) and not x.index.equals(idx):
            try: i = int(np.argmax(np.asarray(x.index != idx)))      # first row that differs
            except (TypeError, ValueError): i = 0                    # indexes of different kinds
            raise err(f"{name}'s index differs from the bars' index (row {i}: {x.index[i]} vs bar {idx[i]}): align it "
                      f"({name}.reindex(bars.index)) first; used by position, a shifted {name} would trade on values not known yet")
    return signal, proba

def signal_from_proba(proba, # (n_bars, 3) probabilities of down / flat / up, rows summing to 1
                      entry_threshold:float|None=None, # enter when a side's probability exceeds this; default settings
                      flat_threshold:float|None=None, # target flat when P(flat) exceeds this; default settings ('none': no flat zone)
                      contracts:int|None=None, # position size in contracts; default settings
                      hold:bool|None=None, # keep the last target where no rule fires; default settings hold_signal
                      index=None, # bar index, for error messages only
                     )->np.ndarray: # int64 target position per bar
    "Target position per bar from class probabilities: threshold entries, optional flat zone, hold or flat otherwise."
    s = section_defaults('backtest', entry_threshold=entry_threshold, contracts=contracts, hold_signal=hold)
    thr, k, hold = float(s['entry_threshold']), s['contracts'], s['hold_signal']
    ft = s['flat_threshold'] if flat_threshold is None else flat_threshold
    ft = None if _off(ft) else float(ft)
    if not 0 < thr < 1: raise BacktestError(f"entry_threshold must be in (0, 1), got {thr}")
    if ft is not None and not 0 < ft <= 1: raise BacktestError(f"flat_threshold must be in (0, 1] or None, got {ft}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1: raise BacktestError(f"contracts must be a whole number >= 1, got {k!r}")
    p = proba.to_numpy(np.float64) if isinstance(proba, pd.DataFrame) else np.asarray(proba, dtype=np.float64)
    p = _check_proba(p, len(p), index if index is not None else pd.RangeIndex(len(p)))
    down, flat, up = p[:, 0], p[:, 1], p[:, 2]
    go_long = (up > thr) & ~(down > thr)
    go_short = (down > thr) & ~(up > thr)
    go_flat = (flat > ft) if ft is not None else np.zeros(len(p), bool)
    fired = go_long | go_short | go_flat
    target = np.where(go_flat, 0, np.where(go_long, k, np.where(go_short, -k, 0))).astype(np.int64)
    if hold:
        last = np.maximum.accumulate(np.where(fired, np.arange(len(p)), -1))   # last bar where a rule fired
        target = np.where(last >= 0, target[np.maximum(last, 0)], 0)
    return target

def momentum_proba(bars:pd.DataFrame, # bars with a `close` column
                   lookback_bars:int=30, # momentum horizon
                   sharpness:float=1.0, # scales the z-score before the softmax
                  )->np.ndarray: # (n_bars, 3) down / flat / up pseudo-probabilities
    "Causal momentum baseline: softmax of (-z, 0, z) for the lookback move's volatility-scaled z-score."
    if lookback_bars < 2: raise BacktestError(f"lookback_bars must be >= 2, got {lookback_bars}")
    logc = np.log(bars['close'].to_numpy(np.float64))
    r1 = pd.Series(np.diff(logc, prepend=np.nan))
    vol = r1.rolling(lookback_bars * 4, min_periods=lookback_bars).std().to_numpy()
    move = logc - pd.Series(logc).shift(lookback_bars).to_numpy()
    with np.errstate(divide='ignore', invalid='ignore'):
        z = move / (vol * math.sqrt(lookback_bars))
    z = np.nan_to_num(z, nan=0.0, posinf=0.0, neginf=0.0) * sharpness
    logits = np.stack([-z, np.zeros_like(z), z], axis=1)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)

EXIT_REASONS = ('stop_loss', 'take_profit', 'max_hold', 'flat_signal', 'opposite_signal', 'session_end', 'end_of_data')
EXIT_FILLS = ('open', 'intrabar', 'close')
_NEVER = np.iinfo(np.int64).max // 4      # an event time after every real one
_FAR = np.iinfo(np.int64).max // 8        # a price distance (ticks) no bar reaches: a disabled stop or target

class _Market:
    "Bars, signal and rules as flat int64 arrays, plus the lookups the exit search needs (all by binary search)."
    def __init__(self, o, h, l, c, sig, new_session, tp, sl, max_hold, flat_eod, rule, reentry):
        n = len(o)
        self.o, self.h, self.l, self.c, self.n, self.sig = o, h, l, c, n, sig
        self.sgn = np.sign(sig)
        self.tp, self.sl, self.max_hold, self.flat_eod, self.rule = tp, sl, max_hold, flat_eod, rule
        sign_change = np.empty(n, dtype=bool)
        sign_change[0] = True
        np.not_equal(self.sgn[1:], self.sgn[:-1], out=sign_change[1:])
        self.run_starts = np.flatnonzero(sign_change)               # first bar of each run of one signal sign
        self.sess_starts = np.flatnonzero(new_session)              # first bar of each session
        # bars on whose close an entry may be decided
        cand = sig != 0
        if reentry == 'fresh': cand[1:] &= sig[1:] != sig[:-1]
        cand[-1] = False                                            # no next bar to fill on
        if flat_eod: cand[:-1] &= ~new_session[1:]                  # never fill across the session break
        self.cand_idx = np.flatnonzero(cand)
        self._cand_or_end = np.append(self.cand_idx, n)
        self._run_next = np.append(self.run_starts, n)
        self._sess_last = np.append(self.sess_starts[1:] - 1, n - 1)
        # independent segments: runs of one non-zero sign, cut at session breaks when flat at session end
        starts = np.flatnonzero(sign_change | new_session) if flat_eod else self.run_starts
        ends = np.append(starts[1:] - 1, n - 1)
        keep = self.sgn[starts] != 0
        self.seg_first, self.seg_last = starts[keep], ends[keep]

    def next_cand(self, b):
        "First candidate decision bar at or after each bar of `b` (n when none)."
        return self._cand_or_end[np.searchsorted(self.cand_idx, b)]
    def run_next(self, b):
        "First bar after the run of equal signal sign that each bar of `b` belongs to (n when it reaches the end)."
        return self._run_next[np.searchsorted(self.run_starts, b, side='right')]
    def sess_last(self, b):
        "Last bar of the session of each bar of `b`."
        return self._sess_last[np.searchsorted(self.sess_starts, b, side='right') - 1]

def _first_touch(m:_Market, entry, last_bar, lo_level, hi_level, budget:int=1 << 21)->np.ndarray:
    "For each trade, the first bar in [entry, last_bar] with low <= lo_level or high >= hi_level, else -1."
    out = np.full(len(entry), -1, dtype=np.int64)
    todo, pos, width = np.arange(len(entry)), entry.copy(), 4
    while todo.size:
        w = int(max(1, min(width, budget // todo.size)))        # bounded memory: todo.size * w cells
        p, stop_at = pos[todo], last_bar[todo]
        bars_ = p[:, None] + np.arange(w)
        safe = np.minimum(bars_, m.n - 1)
        touch = (m.l[safe] <= lo_level[todo][:, None]) | (m.h[safe] >= hi_level[todo][:, None])
        touch &= bars_ <= stop_at[:, None]
        found = touch.any(axis=1)
        out[todo[found]] = p[found] + touch.argmax(axis=1)[found]
        more = ~found & (p + w <= stop_at)
        pos[todo[more]] = p[more] + w
        todo = todo[more]
        width = min(width * 2, 512)
    return out

def _exits(m:_Market, D:np.ndarray)->dict:
    "Exit of each trade decided on a bar of `D` (filled at the next open): bar, fill phase, price (ticks), reason."
    n, o, h, l, c = m.n, m.o, m.h, m.l, m.c
    entry_bar, side = D + 1, m.sgn[D]
    entry_px = o[entry_bar]
    k = len(D)
    # event time = 3*bar + phase (0 open, 1 intrabar, 2 close); rows follow EXIT_REASONS with the two signal
    # reasons sharing row 3: stop, target, max_hold, signal, session_end, end_of_data
    ev = np.full((6, k), _NEVER, dtype=np.int64)
    if m.max_hold is not None:
        t_bar = entry_bar + m.max_hold
        ev[2] = np.where(t_bar <= n - 1, 3 * t_bar, _NEVER)
    sig_bar = m.run_next(D)                                     # first close with another sign: exit next open
    ev[3] = np.where(sig_bar + 1 <= n - 1, 3 * (sig_bar + 1), _NEVER)
    if m.flat_eod: ev[4] = 3 * m.sess_last(entry_bar) + 2
    ev[5] = 3 * (n - 1) + 2
    known = ev[2:].min(axis=0)
    ambiguous = np.zeros(k, dtype=bool)
    stop_px, target_px = np.zeros(k, dtype=np.int64), np.zeros(k, dtype=np.int64)
    if m.tp is not None or m.sl is not None:
        sl = m.sl if m.sl is not None else _FAR
        tp = m.tp if m.tp is not None else _FAR
        lo_level = np.where(side > 0, entry_px - sl, entry_px - tp)       # long stop, short target
        hi_level = np.where(side > 0, entry_px + tp, entry_px + sl)       # long target, short stop
        j = _first_touch(m, entry_bar, known // 3, lo_level, hi_level)
        hit = np.flatnonzero(j >= 0)
        jb, eb, sd, lo, hi = j[hit], entry_bar[hit], side[hit], lo_level[hit], hi_level[hit]
        oj = o[jb]
        gap_lo, gap_hi = (jb > eb) & (oj <= lo), (jb > eb) & (oj >= hi)     # the bar OPENED beyond a level
        gap_stop, gap_target = np.where(sd > 0, gap_lo, gap_hi), np.where(sd > 0, gap_hi, gap_lo)
        gapped = gap_stop | gap_target
        in_stop = np.where(sd > 0, l[jb] <= lo, h[jb] >= hi) & ~gapped
        in_target = np.where(sd > 0, h[jb] >= hi, l[jb] <= lo) & ~gapped
        both = in_stop & in_target                                           # order inside the bar unknown
        if m.rule == 'stop_first': in_target &= ~both
        else: in_stop &= ~both
        ev[0, hit] = np.where(gap_stop, 3 * jb, np.where(in_stop, 3 * jb + 1, _NEVER))
        ev[1, hit] = np.where(gap_target, 3 * jb, np.where(in_target, 3 * jb + 1, _NEVER))
        stop_px[hit] = np.where(gap_stop, oj, np.where(sd > 0, lo, hi))
        target_px[hit] = np.where(gap_target, oj, np.where(sd > 0, hi, lo))
        ambiguous[hit] = both
    row = ev.argmin(axis=0)                                                 # first row wins a tie
    when = ev[row, np.arange(k)]
    exit_bar, phase = when // 3, when % 3
    price = np.select([row == 0, row == 1, phase == 0], [stop_px, target_px, o[np.minimum(exit_bar, n - 1)]], c[exit_bar])
    flat_next = m.sgn[np.minimum(sig_bar, n - 1)] == 0
    reason = np.select([row <= 2, row == 3], [row, np.where(flat_next, 3, 4)], row + 1)
    ambiguous &= (phase == 1) & (row <= 1)
    return dict(decision=D, entry_bar=entry_bar, side=side, entry_px=entry_px, exit_bar=exit_bar, phase=phase,
                exit_px=price, reason=reason, ambiguous=ambiguous)

def _take(d:dict, idx)->dict: return {k: v[idx] for k, v in d.items()}

def _simulate(m:_Market, many:int=512, batch:int=1 << 16)->dict|None:
    "All trades, in entry order: one trade per live segment per round; speculative batches once few segments remain."
    parts = []
    d = m.next_cand(m.seg_first)                 # each segment's first entry decision is certain
    last = m.seg_last
    live = d <= last
    d, last = d[live], last[live]
    while d.size:
        if d.size >= many:
            res = _exits(m, d)
            parts.append(res)
            d_next = m.next_cand(res['exit_bar'])   # flat from the exit bar's close on
            live = d_next <= last
            d, last = d_next[live], last[live]
            continue
        # few segments: evaluate each one's next `per` candidate decisions at once, then follow the chain
        per = max(2, batch // d.size)
        rank = np.searchsorted(m.cand_idx, d)
        spans = [m.cand_idx[r:r + per] for r in rank]
        spans = [s[s <= z] for s, z in zip(spans, last.tolist())]
        res = _exits(m, np.concatenate(spans))
        nxt = m.next_cand(res['exit_bar']).tolist()
        taken, d_new, last_new, off = [], [], [], 0
        for s, z in zip(spans, last.tolist()):
            pos_of = {b: i for i, b in enumerate(s.tolist())}
            i = 0
            while True:
                taken.append(off + i)
                b = nxt[off + i]
                if b > z: break                                  # the segment is done
                if b not in pos_of: d_new.append(b); last_new.append(z); break   # beyond this batch
                i = pos_of[b]
            off += len(s)
        parts.append(_take(res, np.array(taken, dtype=np.int64)))
        d, last = np.array(d_new, dtype=np.int64), np.array(last_new, dtype=np.int64)
    if not parts: return None
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return _take(out, np.argsort(out['entry_bar'], kind='stable'))

def _excursions(m:_Market, tr:dict)->tuple:
    "MAE and MFE in ticks: over the bars held through, plus the exit price (the exit bar's range after the fill is unknown)."
    e, x, side, P, Q = tr['entry_bar'], tr['exit_bar'], tr['side'], tr['entry_px'], tr['exit_px']
    last_full = np.where(tr['phase'] == 2, x, x - 1)
    held = last_full >= e
    idx = np.empty(2 * len(e), dtype=np.int64)
    idx[0::2], idx[1::2] = e, last_full + 1
    lo = np.minimum.reduceat(np.append(m.l, 0), idx)[0::2]      # min over [e, last_full]; masked where empty
    hi = np.maximum.reduceat(np.append(m.h, 0), idx)[0::2]
    low, high = np.where(held, np.minimum(lo, Q), Q), np.where(held, np.maximum(hi, Q), Q)
    worst, best = np.where(side > 0, low, high), np.where(side > 0, high, low)
    return np.maximum(0, side * (P - worst)), np.maximum(0, side * (best - P))

@dataclass
class BacktestResult:
    "Trades, per-bar equity (dollars), metrics, counts and the settings used by one backtest."
    trades: pd.DataFrame          # one row per round trip
    equity: pd.Series             # dollars after each bar's close
    metrics: PerformanceMetrics   # from scalp_lib.metrics
    position: pd.Series           # signed contracts held after each bar's close
    signal: pd.Series             # the target position per bar that was simulated
    counts: dict                  # ambiguous bars, gap fills, exits per reason, ...
    settings: dict                # every rule, cost and contract figure used
    def summary(self)->str:
        "One line: trades, net after costs, win rate, Sharpe (or why it is withheld), drawdown, and what was not traded."
        m, c = self.metrics, self.counts
        sharpe = (f"Sharpe {m.sharpe:.2f} ({m.periods_per_year:.1f} sessions/yr)" if m.sample_ok else
                  f"Sharpe withheld: too few sessions ({m.n_sessions} < {m.min_sessions}) for annualised figures")
        few = '' if m.trades_ok else f" of only {m.n_trades} trades (< {m.min_trades})"
        out = (f"{self.settings['instrument']}: {m.n_trades:,} trades, net ${m.net_profit:,.2f} after ${m.commission_paid + m.slippage_paid:,.2f} "
               f"costs, win rate {m.win_rate_pct:.1f}%{few}, {sharpe}, "
               f"max drawdown ${m.max_drawdown_dollars:,.2f}; {c['ambiguous_bars']} ambiguous bars ({self.settings['intrabar_rule']})")
        if c.get('n_rolls'): out += f"; {c['n_rolls']} roll(s)"
        if c.get('segments_too_short'):
            out += f", {c['segments_too_short']} contract segment(s) too short to trade ({c['bars_in_short_segments']} bar(s), no trades)"
        return out
    def __repr__(self): return f"BacktestResult({self.summary()})"

def _ledger(tr:dict|None, m:_Market, bars:pd.DataFrame, spec:InstrumentSpec, comm:float, slip:float)->pd.DataFrame:
    if tr is None: tr = {k: np.zeros(0, np.int64) for k in ('decision', 'entry_bar', 'side', 'entry_px', 'exit_bar', 'phase', 'exit_px', 'reason')} | {'ambiguous': np.zeros(0, bool)}
    e, x, side = tr['entry_bar'], tr['exit_bar'], tr['side']
    contracts = np.abs(m.sig[tr['decision']])
    ticks = side * (tr['exit_px'] - tr['entry_px'])
    gross = ticks * spec.tick_value_dollars * contracts
    commission = 2 * comm * contracts
    slippage = 2 * slip * spec.tick_value_dollars * contracts
    mae, mfe = _excursions(m, tr) if len(e) else (np.zeros(0, np.int64), np.zeros(0, np.int64))
    idx = bars.index
    return pd.DataFrame({
        'entry_time': idx[e], 'exit_time': idx[x], 'entry_bar': e, 'exit_bar': x,
        'side': side.astype(np.int8), 'contracts': contracts,
        'entry_price': tr['entry_px'] * spec.tick_size, 'exit_price': tr['exit_px'] * spec.tick_size,
        'exit_fill': pd.Categorical.from_codes(tr['phase'], EXIT_FILLS),
        'ticks': ticks, 'gross_dollars': gross, 'commission_dollars': commission, 'slippage_dollars': slippage,
        'cost_dollars': commission + slippage, 'net_dollars': gross - commission - slippage,
        'exit_reason': pd.Categorical.from_codes(tr['reason'], EXIT_REASONS),
        'bars_held': np.where(tr['phase'] == 0, x - e, x - e + 1), 'mae_ticks': mae, 'mfe_ticks': mfe,
        'ambiguous': tr['ambiguous']}, index=pd.RangeIndex(len(e), name='trade'))

def _equity(trades:pd.DataFrame, m:_Market, spec:InstrumentSpec, capital:float)->tuple:
    "Per-bar equity in dollars and the signed position after each close (integer tick arithmetic until the dollars)."
    n = m.n
    e, x = trades['entry_bar'].to_numpy(), trades['exit_bar'].to_numpy()
    qty = trades['side'].to_numpy(np.int64) * trades['contracts'].to_numpy(np.int64)
    P = np.rint(trades['entry_price'].to_numpy() / spec.tick_size).astype(np.int64)
    Q = np.rint(trades['exit_price'].to_numpy() / spec.tick_size).astype(np.int64)
    # entries are strictly increasing; exits may repeat (a reversal stopped out on its entry bar): np.add.at for them
    delta = np.zeros(n + 1, dtype=np.int64)
    delta[e] += qty
    np.subtract.at(delta, x, qty)
    position = np.cumsum(delta[:n])                     # held after bar j's close, for entry <= j < exit bar
    ticks = np.empty(n, dtype=np.int64)
    ticks[0] = 0
    np.subtract(m.c[1:], m.c[:-1], out=ticks[1:])
    ticks[1:] *= position[:-1]                          # held through the bar: close-to-close
    ticks[e] += qty * (m.c[e] - P)                      # entry bar: entry price to the close
    np.add.at(ticks, x, qty * (Q - m.c[x]))             # exit bar: the close replaced by the exit price
    dollars = ticks * spec.tick_value_dollars
    half_cost = trades['cost_dollars'].to_numpy() / 2   # each side's costs on its own bar
    dollars[e] -= half_cost
    np.subtract.at(dollars, x, half_cost)
    np.cumsum(dollars, out=dollars)
    dollars += capital
    equity = dollars
    return equity, position

def run_backtest(bars:pd.DataFrame, # OHLC bars (scalp_lib.data layout), tz-aware index
                 signal=None, # target position in contracts per bar, decided on that bar's close
                 proba=None, # or (n_bars, 3) down/flat/up probabilities, turned into a signal by `signal_from_proba`
                 *,
                 instrument:str|InstrumentSpec='ES', # contract spec: tick size and value, commission, slippage, sessions
                 take_profit_ticks:int|None=None, # from the entry price; 0 disables; default settings [backtest]
                 stop_loss_ticks:int|None=None, # from the entry price; 0 disables
                 max_hold_bars:int|None=None, # exit at the next open after this many bars; 0 disables
                 flat_at_session_end:bool|None=None, # close at each session's last bar; no entry fills across the break
                 intrabar_rule:str|None=None, # 'stop_first' | 'target_first' when both levels are inside one bar
                 reentry:str|None=None, # 'fresh' | 'level' (see the rules above)
                 fill:str|None=None, # only 'next_open'
                 commission_per_side_dollars:float|None=None, # per contract per side; default: the instrument's
                 slippage_ticks:float|None=None, # per contract per side; default: the instrument's
                 entry_threshold:float|None=None, # proba only: see `signal_from_proba`
                 flat_threshold:float|None=None, # proba only
                 contracts:int|None=None, # proba only: position size
                 hold:bool|None=None, # proba only: keep the last target where no rule fires
                 initial_capital_dollars:float|None=None, # default settings [metrics]
                 n_trials:int=1, # configurations tried, for the deflated Sharpe ratio
                 trials_sharpe_std:float|None=None, # s.d. of per-period Sharpe across those trials
                 min_sessions:int|None=None, # fewer sessions: annualised figures withheld; default settings [metrics]
                 min_trades:int|None=None, # fewer trades: trade statistics marked; default settings [metrics]
                )->BacktestResult:
    "Simulate one futures position at a time: next-open fills, tick-based exits, session rules, costs; ledger and equity."
    signal, proba = _inputs_on_bars(bars, signal, proba)
    capital = float(section_defaults('metrics', initial_capital_dollars=initial_capital_dollars)['initial_capital_dollars'])
    min_sessions, min_trades = sample_minimums(min_sessions, min_trades)
    if 'contract' in bars.columns and bars['contract'].nunique(dropna=False) > 1:
        kw = dict(instrument=instrument, take_profit_ticks=take_profit_ticks, stop_loss_ticks=stop_loss_ticks, max_hold_bars=max_hold_bars,
                  flat_at_session_end=flat_at_session_end, intrabar_rule=intrabar_rule, reentry=reentry, fill=fill,
                  commission_per_side_dollars=commission_per_side_dollars, slippage_ticks=slippage_ticks, entry_threshold=entry_threshold,
                  flat_threshold=flat_threshold, contracts=contracts, hold=hold, initial_capital_dollars=capital,
                  n_trials=n_trials, trials_sharpe_std=trials_sharpe_std, min_sessions=min_sessions, min_trades=min_trades)
        return _run_by_contract(bars, signal, proba, kw)
    spec = get_instrument(instrument)
    cfg = backtest_settings(take_profit_ticks=take_profit_ticks, stop_loss_ticks=stop_loss_ticks, max_hold_bars=max_hold_bars,
                            flat_at_session_end=flat_at_session_end, intrabar_rule=intrabar_rule, reentry=reentry, fill=fill)
    comm = spec.commission_per_side_dollars if commission_per_side_dollars is None else float(commission_per_side_dollars)
    slip = spec.slippage_ticks if slippage_ticks is None else float(slippage_ticks)
    if not (comm >= 0 and slip >= 0): raise BacktestError(f"costs must be >= 0, got commission {comm}, slippage {slip}")
    o, h, l, c = bar_ticks(bars, spec)
    if proba is not None:
        signal = signal_from_proba(_check_proba(proba, len(bars), bars.index), entry_threshold, flat_threshold, contracts, hold, bars.index)
    sig = _check_signal(signal, bars)
    sess = session_dates(bars.index, spec)
    new_session = np.concatenate(([True], sess[1:] != sess[:-1]))
    m = _Market(o, h, l, c, sig, new_session, cfg['take_profit_ticks'], cfg['stop_loss_ticks'], cfg['max_hold_bars'],
                bool(cfg['flat_at_session_end']), cfg['intrabar_rule'], cfg['reentry'])
    trades = _ledger(_simulate(m), m, bars, spec, comm, slip)
    equity, position = _equity(trades, m, spec, capital)
    equity = pd.Series(equity, index=bars.index, name='equity_dollars')
    metrics = compute_metrics(trades, equity, instrument=spec, initial_capital_dollars=capital, n_trials=n_trials,
                              trials_sharpe_std=trials_sharpe_std, sessions=sess, min_sessions=min_sessions, min_trades=min_trades)
    reasons = trades['exit_reason'].value_counts().reindex(list(EXIT_REASONS), fill_value=0)
    last_of_session = np.append(new_session[1:], True)
    counts = dict(n_bars=len(bars), n_sessions=int(new_session.sum()), n_trades=len(trades),
                  ambiguous_bars=int(trades['ambiguous'].sum()),
                  gap_fills=int(((trades['exit_fill'] == 'open') & trades['exit_reason'].isin(['stop_loss', 'take_profit'])).sum()),
                  signal_bars_nonzero=int((sig != 0).sum()),
                  nonzero_signals_on_session_last_bar=int(((sig != 0) & last_of_session).sum()) if cfg['flat_at_session_end'] else 0,
                  **{f"exit_{k}": int(v) for k, v in reasons.items()})
    settings = dict(instrument=spec.symbol, tick_size=spec.tick_size, tick_value_dollars=spec.tick_value_dollars,
                    point_value_dollars=spec.point_value_dollars, commission_per_side_dollars=comm, slippage_ticks=slip,
                    initial_capital_dollars=capital, signal_source='proba' if proba is not None else 'signal',
                    **{k: cfg[k] for k in ('fill', 'intrabar_rule', 'reentry', 'take_profit_ticks', 'stop_loss_ticks',
                                           'max_hold_bars', 'flat_at_session_end')})
    if proba is not None:      # the values signal_from_proba used, defaults resolved
        used = section_defaults('backtest', entry_threshold=entry_threshold, flat_threshold=flat_threshold, contracts=contracts, hold_signal=hold)
        settings.update({k: used[k] for k in ('entry_threshold', 'flat_threshold', 'contracts', 'hold_signal')})
    return BacktestResult(trades, equity, metrics, pd.Series(position, index=bars.index, name='contracts'),
                          pd.Series(sig, index=bars.index, name='signal'), counts, settings)

MIN_SEGMENT_BARS = 2      # a decision on a bar's close fills at the next bar's open: fewer bars cannot trade

@dataclass
class _IdleSegment:
    "A contract segment too short to trade: no trades, no position, flat equity, and its target signal for the record."
    equity: pd.Series
    position: pd.Series
    signal: pd.Series
    trades = None

def _idle_segment(seg:pd.DataFrame, sig, proba, kw:dict, capital:float)->_IdleSegment:
    "The stand-in result of a segment too short to trade (equity at `capital`: chained like any segment's)."
    if sig is None: sig = signal_from_proba(proba, kw['entry_threshold'], kw['flat_threshold'], kw['contracts'], kw['hold'], seg.index)
    return _IdleSegment(pd.Series(capital, index=seg.index, name='equity_dollars', dtype=np.float64),
                        pd.Series(np.zeros(len(seg), np.int64), index=seg.index, name='contracts'),
                        pd.Series(np.asarray(sig, np.int64), index=seg.index, name='signal'))

def _run_by_contract(bars:pd.DataFrame, signal, proba, kw:dict)->BacktestResult:
    "Backtest each contract's bars on their own and chain the results: no position crosses a roll."
    from scalp_lib.contracts import roll_boundaries
    spec = get_instrument(kw['instrument'])
    bar_ticks(bars, spec)                                      # every bar checked once, rows of the whole series
    sig = None if signal is None else _check_signal(signal, bars)
    pr = None if proba is None else _check_proba(proba, len(bars), bars.index)
    capital = kw['initial_capital_dollars']
    starts = np.flatnonzero(np.asarray(roll_boundaries(bars), bool))
    if not len(starts) or starts[0] != 0: starts = np.r_[0, starts]
    bounds = np.r_[starts, len(bars)]
    parts = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        seg = bars.iloc[a:b].drop(columns='contract')
        s_, p_ = (None if sig is None else sig[a:b]), (None if pr is None else pr[a:b])
        parts.append((a, _idle_segment(seg, s_, p_, kw, capital) if b - a < MIN_SEGMENT_BARS else run_backtest(seg, s_, p_, **kw)))
    traded = [(a, r) for a, r in parts if r.trades is not None]
    if not traded: raise BacktestError(f"no contract segment has the {MIN_SEGMENT_BARS} bars a trade needs ({len(parts)} segments, {len(bars)} bars)")
    trades, equity, offset = [], [], 0.0
    for i, (a, r) in enumerate(parts):
        equity.append(r.equity + offset)
        offset += float(r.equity.iloc[-1]) - capital
        if r.trades is None: continue
        t = r.trades.copy()
        t['entry_bar'] += a; t['exit_bar'] += a
        reason = t['exit_reason'].astype(str)
        if i < len(parts) - 1: reason = reason.where(reason != 'end_of_data', 'roll')
        t['exit_reason'] = reason
        trades.append(t)
    trades = pd.concat(trades, ignore_index=True)
    trades['exit_reason'] = pd.Categorical(trades['exit_reason'], categories=list(EXIT_REASONS) + ['roll'])
    equity = pd.concat(equity).rename('equity_dollars')
    sess = session_dates(bars.index, spec)
    metrics = compute_metrics(trades, equity, instrument=spec, initial_capital_dollars=capital, n_trials=kw['n_trials'],
                              trials_sharpe_std=kw['trials_sharpe_std'], sessions=sess, min_sessions=kw['min_sessions'],
                              min_trades=kw['min_trades'])
    signal_out = pd.concat([r.signal for _, r in parts])
    counts = {k: sum(r.counts[k] for _, r in traded) for k in traded[0][1].counts}
    short = [r for _, r in parts if r.trades is None]
    counts.update(n_bars=len(bars), n_sessions=len(np.unique(sess)), signal_bars_nonzero=int((signal_out != 0).sum()),
                  n_rolls=len(parts) - 1, segments_too_short=len(short), bars_in_short_segments=sum(len(r.equity) for r in short),
                  exit_end_of_data=int((trades['exit_reason'] == 'end_of_data').sum()), exit_roll=int((trades['exit_reason'] == 'roll').sum()))
    settings = {**traded[-1][1].settings, 'contracts_traded': list(pd.unique(bars['contract']))}
    return BacktestResult(trades, equity, metrics, pd.concat([r.position for _, r in parts]), signal_out, counts, settings)

