"""The triple-barrier labels as they were before the numba kernel: frozen here, for equivalence tests only.

A verbatim copy of `triple_barrier_labels` and the helpers it uses from scalp_lib/labels.py at the commit before the
kernel was introduced. The label report class and the NaN reasons are imported (they are data, not computation).
Do not edit: tests/test_labels.py requires the new kernel to give identical frames and reports.
"""
from __future__ import annotations
import math
import numpy as np
import pandas as pd
from tqdm.auto import tqdm
from scalp_lib.config import InstrumentSpec, get_instrument, section_defaults
from scalp_lib.data import session_dates
from scalp_lib.labels import LabelError, LabelReport

_TOL_TICKS = 1e-6  # price comparisons in ticks allow this much float error (CL's 0.01 tick is not exact in binary)

def _instrument(bars, instrument)->InstrumentSpec:
    if instrument is None:
        instrument = bars.attrs.get('instrument') or section_defaults('data')['default_instrument']
    return get_instrument(instrument)

def _check_bars(bars, cols)->dict:
    "float64 arrays of `cols`; refuses what is not a time-ordered bar frame."
    if not isinstance(bars, pd.DataFrame): raise LabelError(f"bars must be a DataFrame, got {type(bars).__name__}")
    missing = [c for c in cols if c not in bars.columns]
    if missing: raise LabelError(f"bars lack column(s) {missing}; has {list(bars.columns)}")
    if not (bars.index.is_monotonic_increasing and bars.index.is_unique):
        raise LabelError("bars.index must be strictly increasing (sorted, no duplicate time stamps): labels count rows forward")
    out = {}
    for c in cols:
        try: out[c] = np.asarray(bars[c], dtype=np.float64)
        except (TypeError, ValueError) as e: raise LabelError(f"bars['{c}'] is not numeric ({bars[c].dtype})") from e
    return out

def _positive_int(v, name)->int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise LabelError(f"{name} must be a positive integer number of bars, got {v!r}")
    return int(v)

def _nonneg(v, name, allow_inf=False)->float:
    try: f = float(v)
    except (TypeError, ValueError): raise LabelError(f"{name} must be a number, got {v!r}") from None
    if not (f >= 0) or (math.isinf(f) and not allow_inf): raise LabelError(f"{name} must be >= 0 and finite, got {v!r}")
    return f

def _session_codes(bars, spec, within_session)->np.ndarray|None:
    "Integer session number of each bar (0, 1, ...), or None when labels may cross sessions."
    if not within_session: return None
    if not isinstance(bars.index, pd.DatetimeIndex) or bars.index.tz is None:
        raise LabelError("within_session=True needs a tz-aware DatetimeIndex of bar start times; "
                         "pass within_session=False to let labels cross sessions")
    d = session_dates(bars.index, spec)
    if len(d) == 0: return np.zeros(0, np.int64)
    return np.concatenate([[0], np.cumsum(d[1:] != d[:-1])]).astype(np.int64)

def _horizon_mask(n, h, sess):
    "For each row t: does bar t+h exist (`past_end` if not) and lie in t's session (`session_end` if not)?"
    pos = np.arange(n)
    past_end = pos + h >= n
    session_end = np.zeros(n, dtype=bool)
    if sess is not None:
        inside = np.flatnonzero(~past_end)
        session_end[inside] = sess[inside + h] != sess[inside]
    return ~(past_end | session_end), past_end, session_end

def _report(name, n, label, nan_reasons:dict, classes=True, **kw)->LabelReport:
    "Build the LabelReport; every NaN row must be attributed to exactly one reason."
    y = np.asarray(label, dtype=np.float64)
    nan = np.isnan(y)
    counts = {k: int(np.count_nonzero(m)) for k, m in nan_reasons.items() if np.count_nonzero(m)}
    attributed = np.zeros(n, dtype=bool)
    for m in nan_reasons.values(): attributed |= m
    if (attributed != nan).any():  # a NaN without a reason, or a reason on a labelled row: a bug, never silent
        raise LabelError(f"{name}: internal NaN accounting failed ({int((attributed != nan).sum())} rows)")
    cc = {k: int(np.count_nonzero(y == k)) for k in (0, 1, 2)} if classes else {}
    return LabelReport(name, n_rows=n, n_labelled=int((~nan).sum()), nan_counts=counts, class_counts=cc, **kw)

def _exclusive(masks:dict)->dict:
    "Make NaN-reason masks disjoint: the first reason listed wins."
    out, taken = {}, None
    for k, m in masks.items():
        m = np.asarray(m, dtype=bool)
        out[k] = m if taken is None else m & ~taken
        taken = m.copy() if taken is None else taken | m
    return out

def _atr_ticks(bars:pd.DataFrame, window_bars:int, tick_size:float)->np.ndarray:
    "Wilder's average true range in ticks at each bar, from bars up to and including that bar (causal)."
    a = _check_bars(bars, ['high', 'low', 'close'])
    prev_close = np.concatenate([[np.nan], a['close'][:-1]])
    tr = np.fmax(a['high'] - a['low'], np.fmax(np.abs(a['high'] - prev_close), np.abs(a['low'] - prev_close)))
    atr = pd.Series(tr).ewm(alpha=1.0 / window_bars, adjust=False, min_periods=window_bars).mean().to_numpy()
    return atr / tick_size

def _barrier_width(ticks, atr_mult, atr, name)->np.ndarray|float:
    "Width in whole ticks (rounded up, >= 1), NaN where the ATR is NaN, inf when the side has no barrier."
    if ticks is not None and atr_mult is not None:
        raise LabelError(f"give {name}_ticks or {name}_atr, not both")
    if ticks is not None:
        w = _nonneg(ticks, f'{name}_ticks')
        if w <= 0: raise LabelError(f"{name}_ticks must be > 0, got {ticks!r}")
        return float(max(math.ceil(w - _TOL_TICKS), 1))
    if atr_mult is not None:
        m = _nonneg(atr_mult, f'{name}_atr')
        if m <= 0: raise LabelError(f"{name}_atr must be > 0, got {atr_mult!r}")
        w = np.ceil(m * atr - _TOL_TICKS)
        return np.where(np.isnan(w), np.nan, np.maximum(w, 1.0))
    return math.inf

_BARRIERS = ['sl', 'vertical', 'pt', 'ambiguous']
_TIE_RULES = ('stop_first', 'target_first', 'nan')

def triple_barrier_labels(bars:pd.DataFrame, # OHLCV bars, strictly increasing index
                          *,
                          pt_ticks:float|None=None, # profit-take distance above close[t], ticks
                          sl_ticks:float|None=None, # stop distance below close[t], ticks
                          pt_atr:float|None=None, # profit-take distance as a multiple of ATR(t) in ticks
                          sl_atr:float|None=None, # stop distance as a multiple of ATR(t) in ticks
                          atr_ticks:pd.Series|np.ndarray|None=None, # ATR in ticks per bar (causal); default: Wilder ATR here
                          atr_window_bars:int|None=None, # window of the ATR computed here; default settings
                          vertical_bars:int|None=None, # V: the vertical barrier, bars after t; default settings
                          tie_rule:str|None=None, # both barriers inside one bar: stop_first | target_first | nan
                          vertical_label:str='zero', # at the vertical barrier: 'zero' -> flat (1), 'sign' -> sign of return
                          instrument:str|InstrumentSpec|None=None, # tick size and session calendar
                          within_session:bool|None=None, # the path stops at the session's last bar; default settings
                          progress:bool=False, # tqdm bar over the V offsets
                         )->pd.DataFrame: # label, t1, t1_pos, ret_ticks, ret_log, barrier, pt/sl_width_ticks
    "Triple-barrier labels: first touch of profit-take, stop or vertical barrier over bars t+1..t+V, entry at close[t]."
    cfg = section_defaults('labels', vertical_bars=vertical_bars, tie_rule=tie_rule,
                           atr_window_bars=atr_window_bars, within_session=within_session)
    V = _positive_int(cfg['vertical_bars'], 'vertical_bars')
    rule = cfg['tie_rule']
    if rule not in _TIE_RULES: raise LabelError(f"tie_rule must be one of {_TIE_RULES}, got {rule!r}")
    if vertical_label not in ('zero', 'sign'): raise LabelError(f"vertical_label must be 'zero' or 'sign', got {vertical_label!r}")
    spec = _instrument(bars, instrument)
    tick = spec.tick_size
    a = _check_bars(bars, ['open', 'high', 'low', 'close'])
    n = len(bars)
    if all(v is None for v in (pt_ticks, sl_ticks, pt_atr, sl_atr)):
        pt_ticks, sl_ticks = cfg['pt_ticks'], cfg['sl_ticks']
    atr = None
    if pt_atr is not None or sl_atr is not None:
        if atr_ticks is None: atr = _atr_ticks(bars, _positive_int(cfg['atr_window_bars'], 'atr_window_bars'), tick)
        else:
            atr = np.asarray(atr_ticks, dtype=np.float64)
            if atr.shape != (n,): raise LabelError(f"atr_ticks has shape {atr.shape}, bars have {n} rows")
    pt_w = np.broadcast_to(_barrier_width(pt_ticks, pt_atr, atr, 'pt'), (n,)).astype(np.float64)
    sl_w = np.broadcast_to(_barrier_width(sl_ticks, sl_atr, atr, 'sl'), (n,)).astype(np.float64)
    sess = _session_codes(bars, spec, bool(cfg['within_session']))

    # all prices in ticks; rows of the result
    o, hi, lo, c = (a[k] / tick for k in ('open', 'high', 'low', 'close'))
    label = np.full(n, np.nan); ret_ticks = np.full(n, np.nan)
    t1_pos = np.full(n, -1, dtype=np.int64); barrier = np.full(n, -1, dtype=np.int8)
    reason = {k: np.zeros(n, dtype=bool) for k in ('past_end', 'session_end', 'missing_input', 'ambiguous')}
    reason['missing_input'] = np.isnan(c) | np.isnan(pt_w) | np.isnan(sl_w)
    pending = np.flatnonzero(~reason['missing_input'])
    n_ambiguous = 0
    for k in tqdm(range(1, V + 1), desc='triple barrier', unit='offset', disable=not progress):
        if pending.size == 0: break
        j = pending + k
        # the path ends: past the data, or (within_session) in the next session
        end = j >= n
        reason['past_end'][pending[end]] = True
        if sess is not None:
            nxt = np.zeros_like(end); live = ~end
            nxt[live] = sess[j[live]] != sess[pending[live]]
            reason['session_end'][pending[nxt]] = True
            end |= nxt
        pending, j = pending[~end], j[~end]
        bad = np.isnan(o[j]) | np.isnan(hi[j]) | np.isnan(lo[j]) | np.isnan(c[j])
        reason['missing_input'][pending[bad]] = True
        pending, j = pending[~bad], j[~bad]
        entry = c[pending]
        up = entry + pt_w[pending]; dn = entry - sl_w[pending]
        gap_up = o[j] >= up - _TOL_TICKS
        gap_dn = o[j] <= dn + _TOL_TICKS
        hit_up = hi[j] >= up - _TOL_TICKS
        hit_dn = lo[j] <= dn + _TOL_TICKS
        tie = hit_up & hit_dn & ~gap_up & ~gap_dn
        n_ambiguous += int(tie.sum())
        take_pt = gap_up | (hit_up & ~hit_dn & ~gap_dn) | (tie & (rule == 'target_first'))
        take_sl = ~take_pt & (gap_dn | (hit_dn & ~tie) | (tie & (rule == 'stop_first')))
        unresolved_tie = tie & (rule == 'nan')
        exit_ticks = np.where(take_pt, np.where(gap_up, o[j], up), np.where(gap_dn, o[j], dn))
        vertical = ~(take_pt | take_sl | unresolved_tie) & (k == V)
        exit_ticks = np.where(vertical, c[j], exit_ticks)
        done = take_pt | take_sl | unresolved_tie | vertical
        rows = pending[done]
        t1_pos[rows] = j[done]
        r = np.round(exit_ticks[done] - entry[done], 6)
        ret_ticks[rows] = np.where(unresolved_tie[done], np.nan, r)
        code = np.select([take_pt[done], take_sl[done], vertical[done]], [2, 0, 1], default=3).astype(np.int8)
        barrier[rows] = code
        lab = code.astype(np.float64)
        if vertical_label == 'sign':
            lab = np.where(code == 1, np.sign(r) + 1.0, lab)
        lab[code == 3] = np.nan
        label[rows] = lab
        reason['ambiguous'][rows[code == 3]] = True
        pending = pending[~done]
    assert pending.size == 0  # every row was decided or given a NaN reason
    with np.errstate(divide='ignore', invalid='ignore'):
        ret_log = np.log((c + ret_ticks) / c)
    index = bars.index
    t1 = pd.Series(index.take(np.maximum(t1_pos, 0)), index=index).where(t1_pos >= 0) if n else pd.Series([], index=index, dtype=object)
    t1_pos_out = np.where(t1_pos >= 0, t1_pos, np.nan)    # float: NaN where no bar decided (as splits expects)
    out = pd.DataFrame({'label': label, 't1': t1, 't1_pos': t1_pos_out, 'ret_ticks': ret_ticks, 'ret_log': ret_log,
                        'barrier': pd.Categorical.from_codes(barrier, categories=_BARRIERS),
                        'pt_width_ticks': pt_w, 'sl_width_ticks': sl_w}, index=index)
    names = {0: 'sl', 1: 'vertical', 2: 'pt', 3: 'ambiguous'}
    out.attrs['label_report'] = _report('triple_barrier', n, label, _exclusive(reason),
        params=dict(pt_ticks=pt_ticks, sl_ticks=sl_ticks, pt_atr=pt_atr, sl_atr=sl_atr, vertical_bars=V, tie_rule=rule,
                    vertical_label=vertical_label, within_session=bool(cfg['within_session']), instrument=spec.symbol),
        extra={'ambiguous_bars': n_ambiguous, **{f'by_{names[b]}': int((barrier == b).sum()) for b in range(3)},
               'mean_holding_bars': round(float(np.mean((t1_pos - np.arange(n))[~np.isnan(label)])), 2) if (~np.isnan(label)).any() else float('nan')})
    return out

