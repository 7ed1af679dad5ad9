"""scalp_lib.backtest against an independent event-by-event reference, plus properties a desk relies on.

`reference_backtest` walks the bars one at a time, in four phases per bar (the open, inside the bar, the close,
the decision on the close), exactly as the rules in nbs/12_backtest.ipynb state them. It shares no code with
the vectorised engine. The property tests require IDENTICAL ledgers on random bars and random signals.
"""
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import scalp_lib.backtest as bt
from scalp_lib.backtest import run_backtest, SignalError, ProbaError, BacktestError, momentum_proba
from scalp_lib.data import demo_bars
from scalp_lib.config import get_instrument, ScalpLibError
from scalp_lib.data import DataValidationError, session_dates


# ---------------------------------------------------------------- the reference, one bar at a time
def reference_backtest(o, h, l, c, sig, sess, *, tp=None, sl=None, max_hold=None, flat_eod=True,
                       rule='stop_first', reentry='fresh'):
    "Trades as a list of dicts; prices in integer ticks. Written for clarity, not speed."
    n = len(o)
    trades = []
    pos = None            # the open position: dict(side, contracts, entry_bar, entry, worst, best)
    pending_entry = None  # (side, contracts) to fill at the next open
    pending_exit = None   # exit reason to fill at the next open

    def close_position(bar, price, reason, fill, ambiguous=False):
        nonlocal pos
        s, P = pos['side'], pos['entry']
        worst = min(pos['worst'], price) if s > 0 else max(pos['worst'], price)
        best = max(pos['best'], price) if s > 0 else min(pos['best'], price)
        trades.append(dict(entry_bar=pos['entry_bar'], exit_bar=bar, side=s, contracts=pos['contracts'],
                           entry_ticks=int(P), exit_ticks=int(price), exit_reason=reason, exit_fill=fill,
                           ambiguous=ambiguous, mae_ticks=int(max(0, s * (P - worst))),
                           mfe_ticks=int(max(0, s * (best - P)))))
        pos = None

    for t in range(n):
        # 1. the open: protective orders the bar gapped through, then orders decided at the previous close
        if pos is not None and pos['entry_bar'] < t:
            move = pos['side'] * (o[t] - pos['entry'])
            if sl is not None and move <= -sl: close_position(t, o[t], 'stop_loss', 'open')
            elif tp is not None and move >= tp: close_position(t, o[t], 'take_profit', 'open')
            elif pending_exit is not None: close_position(t, o[t], pending_exit, 'open')
        pending_exit = None
        if pending_entry is not None:
            assert pos is None, 'an entry may only fill when flat'
            s, k = pending_entry
            pos = dict(side=s, contracts=k, entry_bar=t, entry=o[t], worst=o[t], best=o[t])
            pending_entry = None
        # 2. inside the bar: stop and target against the bar's range
        if pos is not None:
            s, P = pos['side'], pos['entry']
            adverse, favourable = (l[t], h[t]) if s > 0 else (h[t], l[t])
            stop_hit = sl is not None and s * (adverse - P) <= -sl
            target_hit = tp is not None and s * (favourable - P) >= tp
            if stop_hit and target_hit:
                if rule == 'stop_first': close_position(t, P - s * sl, 'stop_loss', 'intrabar', True)
                else: close_position(t, P + s * tp, 'take_profit', 'intrabar', True)
            elif stop_hit: close_position(t, P - s * sl, 'stop_loss', 'intrabar')
            elif target_hit: close_position(t, P + s * tp, 'take_profit', 'intrabar')
        if pos is not None:   # the position lived through the whole bar
            if pos['side'] > 0: pos['worst'], pos['best'] = min(pos['worst'], l[t]), max(pos['best'], h[t])
            else: pos['worst'], pos['best'] = max(pos['worst'], h[t]), min(pos['best'], l[t])
        # 3. the close: session end, end of data
        if pos is not None:
            last_of_session = t == n - 1 or sess[t + 1] != sess[t]
            if flat_eod and last_of_session: close_position(t, c[t], 'session_end', 'close')
            elif t == n - 1: close_position(t, c[t], 'end_of_data', 'close')
        # 4. decisions on the close, filled at the next open
        if t + 1 < n:
            can_enter = (not flat_eod) or sess[t + 1] == sess[t]
            candidate = sig[t] != 0 and (reentry == 'level' or t == 0 or sig[t] != sig[t - 1])
            side_t = int(np.sign(sig[t]))
            if pos is not None:
                if side_t != pos['side']:
                    pending_exit = 'flat_signal' if side_t == 0 else 'opposite_signal'
                    if side_t != 0 and candidate and can_enter: pending_entry = (side_t, abs(int(sig[t])))
                if max_hold is not None and t + 1 - pos['entry_bar'] >= max_hold: pending_exit = 'max_hold'
            elif candidate and can_enter:
                pending_entry = (side_t, abs(int(sig[t])))
    return trades


# ---------------------------------------------------------------- random markets
def make_market(rng, n, tick_scale=3, gap_prob=0.1, sess_prob=0.05):
    "Integer-tick OHLC with gaps, and session ids that change now and then."
    c = 4000 + np.cumsum(rng.integers(-tick_scale, tick_scale + 1, n))
    o = np.empty(n, np.int64)
    o[0] = c[0]
    o[1:] = c[:-1]
    o = o + np.where(rng.random(n) < gap_prob, rng.integers(-8, 9, n), 0)
    h = np.maximum(o, c) + rng.integers(0, 4, n)
    l = np.minimum(o, c) - rng.integers(0, 4, n)
    sess = np.cumsum(rng.random(n) < sess_prob)
    return o, h, l, c, sess


def make_signal(rng, n, kind):
    if kind == 'noise': return rng.integers(-2, 3, n)
    if kind == 'regimes':
        change = rng.random(n) < 0.15
        vals = rng.integers(-2, 3, n)
        return vals[np.maximum.accumulate(np.where(change, np.arange(n), 0))]
    return np.full(n, rng.choice([-1, 1, 2]), dtype=np.int64)   # a standing signal


def to_bars(o, h, l, c, sess, tick=0.25):
    "A scalp_lib bar frame whose session calendar reproduces `sess` (each session a Globex evening start)."
    first_of = np.concatenate(([0], np.flatnonzero(np.diff(sess)) + 1))
    sess_no = np.cumsum(np.concatenate(([1], np.diff(sess) != 0))) - 1
    minute = np.arange(len(o)) - first_of[sess_no]
    day0 = pd.Timestamp('2024-01-08 17:00')
    stamps = day0 + pd.to_timedelta(sess_no, unit='D') + pd.to_timedelta(minute, unit='min')
    idx = pd.DatetimeIndex(stamps).tz_localize('America/Chicago').rename('timestamp')
    return pd.DataFrame({'open': o * tick, 'high': h * tick, 'low': l * tick, 'close': c * tick, 'volume': 1.0}, index=idx)


def ledger_as_dicts(trades, tick=0.25):
    return [dict(entry_bar=int(r.entry_bar), exit_bar=int(r.exit_bar), side=int(r.side), contracts=int(r.contracts),
                 entry_ticks=int(round(r.entry_price / tick)), exit_ticks=int(round(r.exit_price / tick)),
                 exit_reason=str(r.exit_reason), exit_fill=str(r.exit_fill), ambiguous=bool(r.ambiguous),
                 mae_ticks=int(r.mae_ticks), mfe_ticks=int(r.mfe_ticks)) for r in trades.itertuples()]


def engine_cfg(kw):
    return dict(take_profit_ticks=kw['tp'], stop_loss_ticks=kw['sl'], max_hold_bars=kw['max_hold'], flat_at_session_end=kw['flat_eod'],
                intrabar_rule=kw['rule'], reentry=kw['reentry'])


def engine_dicts(o, h, l, c, sig, sess, kw):
    "The compiled engine's trades, straight from the kernel (no DataFrame in between)."
    new_session = np.concatenate(([True], sess[1:] != sess[:-1]))
    tr, _ = bt._simulate(o, h, l, c, np.asarray(sig, np.int64), new_session, engine_cfg(kw))
    return [dict(entry_bar=int(tr['entry_bar'][i]), exit_bar=int(tr['exit_bar'][i]), side=int(tr['side'][i]),
                 contracts=int(tr['contracts'][i]), entry_ticks=int(tr['entry_px'][i]), exit_ticks=int(tr['exit_px'][i]),
                 exit_reason=bt.EXIT_REASONS[tr['reason'][i]], exit_fill=bt.EXIT_FILLS[tr['phase'][i]],
                 ambiguous=bool(tr['ambiguous'][i]), mae_ticks=int(tr['mae'][i]), mfe_ticks=int(tr['mfe'][i]))
            for i in range(len(tr['entry_bar']))]


def kwargs_for(kw):
    return dict(take_profit_ticks=kw['tp'] or 0, stop_loss_ticks=kw['sl'] or 0, max_hold_bars=kw['max_hold'] or 0,
                flat_at_session_end=kw['flat_eod'], intrabar_rule=kw['rule'], reentry=kw['reentry'],
                commission_per_side_dollars=0.0, slippage_ticks=0.0, initial_capital_dollars=1e6)


case = st.fixed_dictionaries(dict(
    seed=st.integers(0, 2**32 - 1), n=st.integers(2, 70), kind=st.sampled_from(['noise', 'regimes', 'standing']),
    tp=st.sampled_from([None, 1, 3, 6]), sl=st.sampled_from([None, 1, 4, 7]), max_hold=st.sampled_from([None, 1, 3, 10]),
    flat_eod=st.booleans(), rule=st.sampled_from(['stop_first', 'target_first']), reentry=st.sampled_from(['fresh', 'level'])))


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case)
def test_identical_ledgers_property(kw):
    "run_backtest and the reference give the same trades, field by field, on random bars and signals."
    rng = np.random.default_rng(kw['seed'])
    o, h, l, c, sess = make_market(rng, kw['n'])
    sig = make_signal(rng, kw['n'], kw['kind'])
    ref = reference_backtest(o, h, l, c, sig, sess, tp=kw['tp'], sl=kw['sl'], max_hold=kw['max_hold'],
                             flat_eod=kw['flat_eod'], rule=kw['rule'], reentry=kw['reentry'])
    bars = to_bars(o, h, l, c, sess)
    assert (np.diff(session_dates(bars.index)) != np.timedelta64(0)).tolist() == (np.diff(sess) != 0).tolist()
    res = run_backtest(bars, sig, **kwargs_for(kw))
    assert ledger_as_dicts(res.trades) == ref
    assert engine_dicts(o, h, l, c, sig, sess, kw) == ref
    # the equity curve adds up to the ledger, and costs are zero: pure price arithmetic
    t = res.trades
    np.testing.assert_allclose(res.equity.iloc[-1] - 1e6, t.net_dollars.sum(), atol=1e-6)
    np.testing.assert_array_equal(t.net_dollars, (t.exit_price - t.entry_price) * t.side * 50.0 * t.contracts)


def test_identical_ledgers_many_random_cases():
    "A deterministic sweep (numpy RNG) over longer series, where the engine's rounds and batches matter."
    rng = np.random.default_rng(2024)
    seen_reasons, seen_fills, n_trades, n_ambiguous = set(), set(), 0, 0
    for i in range(300):
        n = int(rng.integers(50, 400))
        o, h, l, c, sess = make_market(rng, n, sess_prob=float(rng.choice([0.0, 0.01, 0.05])))
        sig = make_signal(rng, n, ['noise', 'regimes', 'standing'][i % 3])
        kw = dict(tp=[None, 2, 5][i % 3], sl=[None, 3, 6][(i // 3) % 3], max_hold=[None, 2, 25][(i // 9) % 3],
                  flat_eod=bool(i % 2), rule=['stop_first', 'target_first'][(i // 2) % 2], reentry=['fresh', 'level'][(i // 4) % 2])
        ref = reference_backtest(o, h, l, c, sig, sess, **kw)
        assert engine_dicts(o, h, l, c, sig, sess, kw) == ref, (i, kw)
        seen_reasons |= {t['exit_reason'] for t in ref}
        seen_fills |= {(t['exit_reason'], t['exit_fill']) for t in ref}
        n_trades += len(ref)
        n_ambiguous += sum(t['ambiguous'] for t in ref)
    # the sweep is not vacuous: every exit reason, gap fills on both levels, ambiguous bars, many trades
    assert seen_reasons == set(bt.EXIT_REASONS), seen_reasons
    assert {('stop_loss', 'open'), ('take_profit', 'open'), ('stop_loss', 'intrabar'), ('take_profit', 'intrabar')} <= seen_fills
    assert n_trades > 5000 and n_ambiguous > 100, (n_trades, n_ambiguous)


def test_fills_are_next_open_and_causal():
    "Every entry fills at the open of the bar after a non-zero signal; rewriting later bars never changes earlier trades."
    rng = np.random.default_rng(7)
    n = 3000
    o, h, l, c, sess = make_market(rng, n, sess_prob=0.002)
    sig = make_signal(rng, n, 'regimes')
    bars = to_bars(o, h, l, c, sess)
    kw = dict(take_profit_ticks=5, stop_loss_ticks=5, max_hold_bars=20, reentry='level')
    t = run_backtest(bars, sig, **kw).trades
    assert len(t) > 100
    np.testing.assert_array_equal(t.entry_price, bars.open.to_numpy()[t.entry_bar])
    decided = t.entry_bar.to_numpy() - 1
    assert (np.sign(sig[decided]) == t.side.to_numpy()).all() and (np.abs(sig[decided]) == t.contracts.to_numpy()).all()
    assert (t.exit_bar.to_numpy()[:-1] <= t.entry_bar.to_numpy()[1:]).all()          # one position at a time
    k = 1500
    o2, h2, l2, c2 = (a.copy() for a in (o, h, l, c))
    shock = rng.integers(-30, 31, n - k - 1)
    for a in (o2, h2, l2, c2): a[k + 1:] += shock
    t2 = run_backtest(to_bars(o2, h2, l2, c2, sess), sig, **kw).trades
    before = t[t.exit_bar <= k].drop(columns=[])
    pd.testing.assert_frame_equal(before, t2[t2.exit_bar <= k])


def test_ambiguous_bar_rule_and_count():
    "Both levels inside one bar: the setting decides, the trade is flagged, the count says how many."
    o = np.array([100, 100, 100, 100]) * 4
    h = np.array([100, 102, 100, 100]) * 4
    l = np.array([100, 98, 100, 100]) * 4
    c = o.copy()
    bars = to_bars(o, h, l, c, np.zeros(4, int))
    for rule, ticks, reason in (('stop_first', -4, 'stop_loss'), ('target_first', 4, 'take_profit')):
        r = run_backtest(bars, [1, 0, 0, 0], take_profit_ticks=4, stop_loss_ticks=4, intrabar_rule=rule,
                         commission_per_side_dollars=0, slippage_ticks=0)
        assert r.trades.ticks.tolist() == [ticks] and r.trades.exit_reason.tolist() == [reason]
        assert r.counts['ambiguous_bars'] == 1 and r.trades.ambiguous.tolist() == [True]
    assert bt.backtest_settings()['intrabar_rule'] == 'stop_first'      # the conservative default, from settings.ini


def test_gap_through_stop_fills_at_open():
    "A bar that opens beyond the stop fills at that open, not at the stop price."
    o = np.array([400, 400, 380, 380])
    bars = to_bars(o, o + 1, o - 1, o, np.zeros(4, int))
    r = run_backtest(bars, [1, 1, 1, 1], stop_loss_ticks=4, take_profit_ticks=0, commission_per_side_dollars=0, slippage_ticks=0)
    assert r.trades.exit_price.tolist() == [95.0] and r.trades.ticks.tolist() == [-20]
    assert r.trades.exit_fill.tolist() == ['open'] and r.counts['gap_fills'] == 1


def test_dollars_through_the_contract_spec():
    "Same trades, different contracts: dollars scale with tick value; costs are per contract per side."
    rng = np.random.default_rng(3)
    o, h, l, c, sess = make_market(rng, 500)
    sig = make_signal(rng, 500, 'regimes')
    bars = to_bars(o, h, l, c, sess)
    es = run_backtest(bars, sig, instrument='ES', take_profit_ticks=6, stop_loss_ticks=6)
    mes = run_backtest(bars, sig, instrument='MES', take_profit_ticks=6, stop_loss_ticks=6)
    pd.testing.assert_series_equal(es.trades.ticks, mes.trades.ticks)
    np.testing.assert_allclose(es.trades.gross_dollars, 10 * mes.trades.gross_dollars)
    spec = get_instrument('ES')
    np.testing.assert_allclose(es.trades.cost_dollars, es.trades.contracts * 2 * (spec.commission_per_side_dollars
                                                                                  + spec.slippage_ticks * spec.tick_value_dollars))
    np.testing.assert_allclose(es.equity.iloc[-1] - es.settings['initial_capital_dollars'], es.trades.net_dollars.sum(), atol=1e-6)


def test_hand_built_ten_bars_exact():
    "The ten-bar example of the notebook, to the cent."
    idx = pd.date_range('2024-01-08 08:30', periods=10, freq='min', tz='America/Chicago', name='timestamp')
    ten = pd.DataFrame({'open':  [100.00, 100.50, 100.75, 101.50, 101.00, 102.50, 102.50, 102.25, 102.00, 102.25],
                        'high':  [100.50, 101.00, 101.75, 101.75, 101.25, 102.75, 102.75, 103.50, 102.25, 102.50],
                        'low':   [99.75, 100.25, 100.50, 101.00, 100.50, 102.25, 102.25, 101.00, 101.75, 102.00],
                        'close': [100.25, 100.75, 101.50, 101.25, 100.75, 102.50, 102.50, 102.00, 102.00, 102.50],
                        'volume': 100.0}, index=idx)
    r = run_backtest(ten, [1, 1, 1, -1, -1, 0, 2, 2, 1, 1], take_profit_ticks=4, stop_loss_ticks=4, max_hold_bars=0,
                     commission_per_side_dollars=0, slippage_ticks=0, initial_capital_dollars=10_000)
    assert r.trades.net_dollars.tolist() == [50.0, -75.0, -100.0, 12.5]
    assert r.equity.iloc[-1] == 10_000 - 112.5
    r = run_backtest(ten, [1, 1, 1, -1, -1, 0, 2, 2, 1, 1], take_profit_ticks=4, stop_loss_ticks=4, max_hold_bars=0,
                     initial_capital_dollars=10_000)
    assert r.trades.net_dollars.tolist() == [20.5, -104.5, -159.0, -17.0]


def test_bad_inputs_raise_named_errors():
    rng = np.random.default_rng(0)
    o, h, l, c, sess = make_market(rng, 20)
    bars = to_bars(o, h, l, c, sess)
    cases = [(lambda: run_backtest(bars, np.zeros(19)), SignalError, '19 values but there are 20 bars'),
             (lambda: run_backtest(bars, np.r_[np.nan, np.zeros(19)]), SignalError, 'NaN'),
             (lambda: run_backtest(bars, pd.Series(0, index=bars.index + pd.Timedelta('1min'))), SignalError, 'index differs'),
             (lambda: run_backtest(bars, proba=np.full((20, 3), 0.5)), ProbaError, 'sum to 1'),
             (lambda: run_backtest(bars, proba=np.full((20, 3), np.nan)), ProbaError, 'NaN'),
             (lambda: run_backtest(bars, np.zeros(20), proba=np.full((20, 3), 1 / 3)), SignalError, 'exactly one'),
             (lambda: run_backtest(bars.iloc[::-1], np.zeros(20)), DataValidationError, 'strictly increasing'),
             (lambda: run_backtest(bars.assign(close=bars.close + 0.1), np.zeros(20)), DataValidationError, 'tick grid'),
             (lambda: run_backtest(bars.drop(columns='low'), np.zeros(20)), DataValidationError, "['low']"),
             (lambda: run_backtest(bars, np.zeros(20), fill='same_close'), BacktestError, 'NEXT bar'),
             (lambda: run_backtest(bars, np.zeros(20), reentry='always'), BacktestError, 'reentry')]
    for fn, err, text in cases:
        with pytest.raises(err, match=None) as info: fn()
        assert text in str(info.value), (text, str(info.value))
        assert isinstance(info.value, ScalpLibError) and isinstance(info.value, ValueError)


def test_real_es_minutes(shared_data):
    "The real ES file: invariants hold, no trade crosses a session, ledger and equity agree."
    from scalp_lib.data import load_bars
    bars = load_bars(shared_data / 'es_1min_2025-09_11.csv.gz', ts_offset='5h', tz='America/New_York', instrument='ES')
    r = run_backtest(bars, proba=momentum_proba(bars), entry_threshold=0.6)
    t = r.trades
    assert len(t) > 100
    sd = session_dates(bars.index)
    assert (sd[t.entry_bar] == sd[t.exit_bar]).all()
    np.testing.assert_array_equal(t.entry_price, bars.open.to_numpy()[t.entry_bar])
    np.testing.assert_allclose(r.equity.iloc[-1] - r.settings['initial_capital_dollars'], t.net_dollars.sum(), atol=1e-6)
    assert 240 < r.metrics.periods_per_year < 262, r.metrics.periods_per_year_note


# ---------------------------------------------------------------- continuous (multi-contract) series
def _with_contracts(bars, sizes):
    "The bars labelled with consecutive contracts of the given numbers of bars (a continuous series on raw prices)."
    assert sum(sizes) == len(bars)
    return bars.assign(contract=np.repeat([f"C{i}" for i in range(len(sizes))], sizes))


def _shifted_inputs(bars):
    later = bars.index + pd.Timedelta('1min')
    proba = momentum_proba(bars.drop(columns='contract', errors='ignore'), lookback_bars=5)
    return {'signal Series': (dict(signal=pd.Series(1, index=later)), SignalError),
            'one-column signal frame': (dict(signal=pd.DataFrame({'s': 1}, index=later)), SignalError),
            'proba frame': (dict(proba=pd.DataFrame(proba, index=later)), ProbaError)}


@pytest.mark.parametrize('what', ['signal Series', 'one-column signal frame', 'proba frame'])
def test_a_shifted_signal_is_refused_on_both_paths_alike(what):
    "Used by position, a signal stamped one bar later is a future signal: single- and multi-contract runs refuse it alike."
    rng = np.random.default_rng(3)
    single = to_bars(*make_market(rng, 40, sess_prob=0.0))
    multi = _with_contracts(single, [25, 15])
    messages = []
    for bars in (single, multi):
        kw, err = _shifted_inputs(bars)[what]
        with pytest.raises(err) as info:
            run_backtest(bars, **kw)
        messages.append(str(info.value))
    assert messages[0] == messages[1], messages
    assert "index differs from the bars' index (row 0:" in messages[0] and 'reindex(bars.index)' in messages[0]


SHORT_LAYOUTS = {  # contract segment sizes of a 60-bar series: a 1- or 2-bar contract at the start, middle or end
    '1 bar at the start': [1, 59], '1 bar in the middle': [30, 1, 29], '1 bar at the end': [59, 1],
    '2 bars at the start': [2, 58], '2 bars in the middle': [30, 2, 28], '2 bars at the end': [58, 2]}


@pytest.mark.parametrize('layout', list(SHORT_LAYOUTS))
def test_short_contract_segments(layout):
    "A 1-bar contract (a feed just after a roll) trades nothing and is counted; a 2-bar one trades; neither fails the run."
    sizes = SHORT_LAYOUTS[layout]
    rng = np.random.default_rng(7)
    bars = _with_contracts(to_bars(*make_market(rng, 60, sess_prob=0.0)), sizes)
    kw = dict(take_profit_ticks=0, stop_loss_ticks=0, max_hold_bars=0, flat_at_session_end=False,
              commission_per_side_dollars=0.0, slippage_ticks=0.0, initial_capital_dollars=1e6)
    r = run_backtest(bars, np.ones(len(bars), int), **kw)
    starts = np.cumsum([0] + sizes[:-1])
    long_segs = [(a, a + k) for a, k in zip(starts, sizes) if k >= 2]
    # a standing long: one trade per contract of >= 2 bars, from its second bar's open to its last close
    assert r.trades.entry_bar.tolist() == [a + 1 for a, _ in long_segs]
    assert r.trades.exit_bar.tolist() == [b - 1 for _, b in long_segs]
    assert r.trades.exit_reason.tolist() == ['end_of_data' if b == len(bars) else 'roll' for _, b in long_segs]
    n_short = sum(k < 2 for k in sizes)
    assert (r.counts['segments_too_short'], r.counts['bars_in_short_segments']) == (n_short, n_short)
    assert r.counts['n_rolls'] == len(sizes) - 1 and r.counts['n_bars'] == len(bars)
    for a, k in zip(starts, sizes):
        if k >= 2: continue
        assert r.position.iloc[a] == 0                                         # no position on the short contract
        before = r.equity.iloc[a - 1] if a else 1e6
        assert r.equity.iloc[a] == before                                      # equity flat through it
        assert 'too short to trade' in r.summary()
    np.testing.assert_allclose(r.equity.iloc[-1] - 1e6, r.trades.net_dollars.sum(), atol=1e-6)
    # with a random signal, each contract of >= 2 bars trades exactly as it would alone
    sig = make_signal(rng, len(bars), 'noise')
    rr = run_backtest(bars, sig, **{**kw, 'take_profit_ticks': 3, 'stop_loss_ticks': 3})
    for a, b in long_segs:
        alone = run_backtest(bars.iloc[a:b].drop(columns='contract'), sig[a:b], **{**kw, 'take_profit_ticks': 3, 'stop_loss_ticks': 3})
        got = rr.trades[(rr.trades.entry_bar >= a) & (rr.trades.entry_bar < b)]
        assert got.entry_bar.tolist() == (alone.trades.entry_bar + a).tolist()
        assert got.net_dollars.tolist() == alone.trades.net_dollars.tolist()
    assert rr.signal.tolist() == sig.tolist() and len(rr.equity) == len(bars)


# ---------------------------------------------------------------- the compiled engine against the frozen earlier engine
import dataclasses  # noqa: E402
import math  # noqa: E402

import reference_backtest as frozen  # noqa: E402  (tests/reference_backtest.py: the vectorised engine, frozen)


def _same_metrics(a, b):
    for k, x in dataclasses.asdict(a).items():
        y = getattr(b, k)
        assert (isinstance(x, float) and math.isnan(x) and isinstance(y, float) and math.isnan(y)) or x == y, (k, x, y)


def same_as_frozen(bars, signal=None, proba=None, **kw):
    "Bit for bit: ledger, equity, position, signal, counts, settings and metrics of both engines (or the same error)."
    try: old = frozen.run_backtest(bars, signal, proba, **kw)
    except ZeroDivisionError: return None  # periods_per_year on weekend-only sessions: fixed since in scalp_lib.metrics
    except Exception as e:                 # any other failure: the same in both
        with pytest.raises(type(e)) as info: run_backtest(bars, signal, proba, **kw)
        assert str(info.value) == str(e)
        return None
    new = run_backtest(bars, signal, proba, **kw)
    pd.testing.assert_frame_equal(new.trades, old.trades, check_exact=True)
    for k in ('equity', 'position', 'signal'):
        pd.testing.assert_series_equal(getattr(new, k), getattr(old, k), check_exact=True)
    assert new.counts == old.counts and new.settings == old.settings
    _same_metrics(new.metrics, old.metrics)
    return new


def random_config(rng):
    return dict(take_profit_ticks=int(rng.choice([0, 1, 3, 6])), stop_loss_ticks=int(rng.choice([0, 1, 4, 7])),
                max_hold_bars=int(rng.choice([0, 1, 3, 10])), flat_at_session_end=bool(rng.integers(2)),
                intrabar_rule=str(rng.choice(['stop_first', 'target_first'])), reentry=str(rng.choice(['fresh', 'level'])),
                commission_per_side_dollars=float(rng.choice([0.0, 2.25, 1.1])), slippage_ticks=float(rng.choice([0.0, 1.0, 0.5])),
                initial_capital_dollars=float(rng.choice([1e5, 1e6])))


def test_engine_equals_frozen_engine_on_random_inputs():
    "Every exit rule, intrabar rule, re-entry mode, cost, session layout and signal kind; single- and multi-contract; proba."
    rng = np.random.default_rng(2025)
    kinds, failed = set(), 0
    for i in range(150):
        n = int(rng.integers(2, 300))
        o, h, l, c, sess = make_market(rng, n, sess_prob=float(rng.choice([0.0, 0.01, 0.05])))
        bars = to_bars(o, h, l, c, sess)
        kw = random_config(rng)
        if i % 5 == 4 and n >= 4:                      # a continuous series of several contracts, some maybe one bar long
            cuts = np.sort(rng.choice(np.arange(1, n), size=min(3, n - 1), replace=False))
            bars = _with_contracts(bars, np.diff(np.r_[0, cuts, n]).tolist())
        if i % 7 == 6:
            r = same_as_frozen(bars, proba=momentum_proba(bars.drop(columns='contract', errors='ignore'), lookback_bars=3),
                               entry_threshold=float(rng.choice([0.4, 0.5])), **kw)
        else:
            r = same_as_frozen(bars, make_signal(rng, n, ['noise', 'regimes', 'standing'][i % 3]), **kw)
        if r is not None: kinds |= set(r.trades.exit_reason.astype(str))
        else: failed += 1
    assert kinds >= set(bt.EXIT_REASONS) | {'roll'}, kinds
    assert failed < 10, failed


def test_engine_equals_frozen_engine_on_real_es(shared_data):
    "The real ES file (America/New_York stamps shifted by 5 h): defaults, level re-entry, target first, no session flat."
    from scalp_lib.data import load_bars
    bars = load_bars(shared_data / 'es_1min_2025-09_11.csv.gz', ts_offset='5h', tz='America/New_York', instrument='ES')
    proba = momentum_proba(bars)
    for kw in (dict(), dict(reentry='level'), dict(intrabar_rule='target_first', max_hold_bars=5, stop_loss_ticks=3),
               dict(flat_at_session_end=False, take_profit_ticks=0)):
        r = same_as_frozen(bars, proba=proba, entry_threshold=0.5, **kw)
        assert len(r.trades) > 100
    sig = make_signal(np.random.default_rng(1), len(bars), 'regimes')
    same_as_frozen(bars, sig, reentry='level')


def test_session_dates_one_lookup_per_hour_equal_session_dates(shared_data):
    "The backtest's session calendar equals scalp_lib.data.session_dates on the real file and across DST changes."
    from scalp_lib.data import load_bars
    bars = load_bars(shared_data / 'es_1min_2025-09_11.csv.gz', ts_offset='5h', tz='America/New_York', instrument='ES')
    for sym in ('ES', 'CL'):
        spec = get_instrument(sym)
        np.testing.assert_array_equal(bt._session_dates(bars.index, spec), session_dates(bars.index, spec))
    idx = pd.date_range('2024-03-01', '2024-11-30', freq='7min', tz='UTC')
    for tz in ('America/Chicago', 'America/New_York', 'Europe/London'):
        np.testing.assert_array_equal(bt._session_dates(idx.tz_convert(tz), get_instrument('ES')),
                                      session_dates(idx.tz_convert(tz), get_instrument('ES')))


def test_integer_signal_fast_path_equals_float_route():
    rng = np.random.default_rng(0)
    bars = to_bars(*make_market(rng, 50))
    for dtype in (np.int8, np.int32, np.uint8, np.int64, np.float64, np.float32):
        s = rng.integers(0, 3, 50).astype(dtype)
        out = bt._check_signal(s, bars)
        assert out.dtype == np.int64 and out.tolist() == [int(v) for v in s]


# ---------------------------------------------------------------- signal-to-trade reconciliation
recon_case = st.fixed_dictionaries(dict(
    seed=st.integers(0, 2**32 - 1), n=st.integers(2, 120), kind=st.sampled_from(['noise', 'regimes', 'standing']),
    tp=st.sampled_from([0, 2, 5]), sl=st.sampled_from([0, 3]), max_hold=st.sampled_from([0, 2, 9]), flat_eod=st.booleans(),
    reentry=st.sampled_from(['fresh', 'level']), contracts=st.sampled_from([None, [1, 1], [3, 2]])))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(recon_case)
def test_reconciliation_adds_up(kw):
    "signal bars = entries + skipped bars (by reason), per side; entries = trades; every reason means what it says."
    rng = np.random.default_rng(kw['seed'])
    n = kw['n']
    o, h, l, c, sess = make_market(rng, n, sess_prob=0.05)
    bars = to_bars(o, h, l, c, sess)
    if kw['contracts'] and n >= 4:
        cut = np.sort(rng.choice(np.arange(1, n), 2, replace=False)) if n > 3 else [1, 2]
        bars = _with_contracts(bars, np.diff(np.r_[0, cut, n]).tolist())
    sig = make_signal(rng, n, kw['kind'])
    r = run_backtest(bars, sig, take_profit_ticks=kw['tp'], stop_loss_ticks=kw['sl'], max_hold_bars=kw['max_hold'],
                     flat_at_session_end=kw['flat_eod'], reentry=kw['reentry'])
    rec = r.reconciliation
    for col in ('long', 'short', 'total'):
        assert rec.loc['signal_bars', col] == rec[col].drop('signal_bars').sum()
    assert rec.loc['signal_bars', 'long'] == (sig > 0).sum() and rec.loc['signal_bars', 'short'] == (sig < 0).sum()
    assert rec.loc['entry', 'total'] == len(r.trades)
    assert rec.loc['entry', 'long'] == (r.trades.side > 0).sum()
    if kw['reentry'] == 'level': assert rec.loc['fresh_needs_change', 'total'] == 0
    if not kw['flat_eod']: assert rec.loc['session_last_bar', 'total'] == 0
    last_short = 'contract' in bars and (bars['contract'] == bars['contract'].iloc[-1]).sum() < 2
    assert rec.loc['end_of_data', 'total'] == (0 if last_short else int(sig[-1] != 0))
    assert rec.attrs['exposure_pct'] == pytest.approx(r.metrics.exposure_pct)


def test_reconciliation_names_the_rule_that_decides():
    "A standing signal with reentry='fresh' trades once a session at most: the verdict blames the rule, with its thresholds."
    bars = demo_bars(n_days=5, seed=3)
    r = run_backtest(bars, np.ones(len(bars), int), take_profit_ticks=4, stop_loss_ticks=4)
    rec = r.reconciliation
    assert rec.loc['entry', 'total'] == len(r.trades) <= 5
    assert rec.loc['fresh_needs_change', 'pct_of_signal_bars'] > 90
    words = bt.signal_verdict(r)
    assert words.startswith("The re-entry rule (reentry='fresh' waits for the signal to change), not the model's signal")
    assert 'signal on 100.0% of bars' in words and 'entries < 5% of signal bars' in words and 'too few to measure' in words
    assert words in r.summary()
    model = run_backtest(bars, make_signal(np.random.default_rng(0), len(bars), 'regimes'))
    assert bt.signal_verdict(model).startswith("The model's signal decides when trades happen")


def test_reconciliation_with_probabilities_and_rolls():
    "From probabilities: fired + held = signal bars; across contracts: the last bar of each but the last is a roll."
    rng = np.random.default_rng(4)
    bars = _with_contracts(to_bars(*make_market(rng, 90, sess_prob=0.0)), [40, 1, 49])
    proba = momentum_proba(bars.drop(columns='contract'), lookback_bars=3)
    r = run_backtest(bars, proba=proba, entry_threshold=0.45, flat_threshold=0.5, flat_at_session_end=False)
    pb, rec = r.proba_breakdown, r.reconciliation
    assert pb.loc['bars', 'total'] == pb.loc[['rule_fired', 'flat_zone', 'both_sides_above_threshold', 'below_threshold'], 'total'].sum() == 90
    for col in ('long', 'short'):
        assert pb.loc['signal_bars', col] == pb.loc['rule_fired', col] + pb.loc['held', col] == rec.loc['signal_bars', col]
    sig = r.signal.to_numpy()
    assert rec.loc['short_segment', 'total'] == int(sig[40] != 0)
    assert rec.loc['contract_roll', 'total'] == int(sig[39] != 0)
    assert rec.loc['end_of_data', 'total'] == int(sig[-1] != 0)
    assert rec.loc['signal_bars', 'total'] == rec['total'].drop('signal_bars').sum()
    assert 'from the probabilities, a rule fired on' in bt.signal_verdict(r) and 'held an earlier bar' in r.summary()


# ---------------------------------------------------------------- sensitivity grid
def test_sensitivity_grid_marks_configurations_without_trades():
    "A threshold no probability reaches makes no trades: NaN and marked (not 0), counted in N, not in the Sharpe spread."
    bars = demo_bars(n_days=20, seed=0)
    grid = bt.sensitivity_grid(bars, momentum_proba(bars), entry_thresholds=(0.5, 0.9999), slippage_ticks=(0.0, 1.0))
    assert grid.loc[0.9999].isna().all() and grid.attrs['no_trades'].loc[0.9999].all()
    assert grid.loc[0.5].notna().all() and not grid.attrs['no_trades'].loc[0.5].any()
    assert grid.attrs['n_trials'] == 4 and grid.attrs['n_trials_with_sharpe'] == 2
    cells = grid.attrs['metrics']
    per_period = [cells[(0.5, s)].sharpe / math.sqrt(cells[(0.5, s)].periods_per_year) for s in (0.0, 1.0)]
    assert grid.attrs['trials_sharpe_std'] == pytest.approx(np.std(per_period, ddof=1))


def test_plot_sensitivity_survives_an_all_nan_grid_and_an_outlier_row():
    import matplotlib.pyplot as plt
    idx, cols = pd.Index([0.4, 0.5, 0.6], name='entry_threshold'), pd.Index([0.0, 1.0, 2.0], name='slippage_ticks')
    empty = pd.DataFrame(np.nan, index=idx, columns=cols)
    empty.attrs.update(metric='sharpe')
    fig = bt.plot_sensitivity(empty, unit='ratio')
    assert sum(t.get_text() == 'n/a' for t in fig.axes[0].texts) == 9
    grid = pd.DataFrame([[5e6, 4e6, 3e6], [100, -200, -300], [50, -80, -400]], index=idx, columns=cols)
    grid.attrs.update(metric='net_profit')
    fig = bt.plot_sensitivity(grid)
    assert fig.axes[1].get_ylim() == (-400, 400)               # the colour bar: the ordinary cells, not the outlier row
    assert sum(t.get_text().endswith('*') for t in fig.axes[0].texts) == 3
    plt.close('all')


def test_a_backtest_on_weekend_dated_sessions_only_does_not_crash():
    "Short runs whose sessions all carry a weekend date: periods_per_year divided by zero possible days before."
    idx = pd.date_range('2024-01-12 17:00', periods=30, freq='min', tz='America/Chicago')   # Friday evening: Saturday's session
    assert set(pd.DatetimeIndex(session_dates(idx)).day_of_week) == {5}
    px = np.full(30, 4800.0)
    bars = pd.DataFrame({'open': px, 'high': px + 0.25, 'low': px - 0.25, 'close': px, 'volume': 1.0}, index=idx)
    r = run_backtest(bars, np.r_[0, np.ones(29, int)], flat_at_session_end=False)
    assert len(r.trades) == 1 and r.metrics.periods_per_year > 0
