"""scalp_lib.feature_analysis on real feature frames, and the feature-diagnostics report end to end.

The notebook nbs/03a_feature_analysis.ipynb is also run here through nbdev's runner: tests/test_notebooks.py only
collects `NN_name.ipynb`, and `03a_` does not match that pattern.
"""
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scalp_lib import feature_analysis as fa
from scalp_lib.data import demo_bars
from scalp_lib.features import ScalpingFeatureEngineer
from scalp_lib.labels import direction_labels, forward_log_return, make_labels, LabelSpec
from scalp_lib.report import ReportExecutionError, ReportParameterError, run_report

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def feats():
    bars = demo_bars(n_days=6, seed=11)
    X = ScalpingFeatureEngineer(bars).generate_all_features()
    return bars, X


def test_summary_counts_match_the_data(feats):
    bars, X = feats
    X = X.copy()
    X.iloc[500:503, 0] = np.inf
    s = fa.feature_summary(X)
    c0 = X.columns[0]
    assert s.loc[c0, 'n_inf'] == 3
    assert (s['n_nan'] == X.isna().sum()).all()
    first_valid = X.apply(lambda col: int(np.argmax(np.isfinite(col.to_numpy()))))
    assert (s['warmup_rows'] == first_valid).all()
    # quantiles of a column without NaN agree with numpy
    c = [k for k in X.columns if X[k].notna().all()][0]
    np.testing.assert_allclose(s.loc[c, ['q25', 'median', 'q75']].astype(float),
                               np.quantile(X[c].astype('float64'), [.25, .5, .75]))


def test_predictive_power_finds_a_planted_leak(feats):
    bars, X = feats
    y = direction_labels(bars, 10, 2)
    fwd = forward_log_return(bars, 10, clip=np.inf)
    leaky = X.assign(leak=fwd.to_numpy() + np.random.default_rng(0).normal(0, 1e-5, len(X)))
    pp = fa.predictive_power(leaky, y, fwd, mi_max_rows=3000, ic_max_rows=20_000)
    assert pp.index[0] == 'leak'
    assert pp.loc['leak', 'rank_ic'] > 0.9 and pp.loc['leak', 'mi_above_noise']
    # honest features are far weaker on the weakly predictable demo data
    assert pp.drop('leak')['rank_ic'].abs().max() < 0.3


def test_mutual_information_of_noise_is_at_the_ceiling():
    rng = np.random.default_rng(3)
    idx = pd.date_range('2024-01-08 09:00', periods=4000, freq='min', tz='America/Chicago')
    X = pd.DataFrame(rng.standard_normal((4000, 5)), index=idx, columns=[f'n{i}' for i in range(5)])
    y = pd.Series(rng.integers(0, 3, 4000).astype(float), index=idx)
    pp = fa.predictive_power(X, y, mi_max_rows=4000, n_noise=10)
    assert pp['mi_above_noise'].sum() <= 1      # noise features are (almost) never above a 10-column noise ceiling


def test_stationarity_and_drift_flag_a_random_walk(feats):
    bars, X = feats
    rw = X.assign(random_walk=np.cumsum(np.random.default_rng(1).standard_normal(len(X))))
    st = fa.stationarity_table(rw)
    assert not st.loc['random_walk', 'stationary'] and st.loc['random_walk', 'adf_pvalue'] > 0.05
    assert st.loc['random_walk', 'mean_drift'] > 0.5 > st.loc['log_ret_1', 'mean_drift']
    dt = fa.drift_table(rw)
    assert dt.loc['random_walk', 'flagged']


def test_binary_and_calendar_features_are_never_flagged(feats):
    "A rare binary flag has a huge kurtosis and the weekday 'drifts' by construction: shown, not flagged."
    bars, X = feats
    kinds = fa.feature_kinds(X)                               # from the names when no groups are given
    assert kinds['day_of_week'] == 'calendar' and kinds['tod_sin'] == 'calendar' and kinds['log_ret_1'] == 'continuous'
    n = len(X)
    Y = X.assign(rare=(np.arange(n) % 200 == 0).astype(float), weekday_copy=X['day_of_week'])
    k2 = fa.feature_kinds(Y, groups=pd.Series({'weekday_copy': 'time'}))
    assert k2['rare'] == 'binary' and k2['weekday_copy'] == 'calendar'
    s = fa.feature_summary(Y, kinds=k2)
    assert s.loc['rare', 'excess_kurtosis'] > 100 and not s.loc['rare', 'heavy_tailed']
    assert s.loc['log_ret_1', 'heavy_tailed']                                   # a continuous heavy tail is still flagged
    d = fa.drift_table(Y.assign(trend=np.arange(n, dtype=float)), kinds=k2)
    assert not d.loc[['rare', 'weekday_copy', 'day_of_week', 'tod_sin'], 'flagged'].any()
    assert d.loc[['rare', 'weekday_copy', 'day_of_week', 'tod_sin'], 'exempt'].all()
    assert d.loc['trend', 'flagged'] and d.loc['trend', 'kind'] == 'continuous'
    # the stationarity figure draws the most drifting continuous features, not the weekday that drifts by construction
    import matplotlib.pyplot as plt
    st = fa.stationarity_table(Y[['weekday_copy', 'log_ret_1', 'log_ret_5', 'rare']], adf_max_rows=200)
    assert st.index[0] == 'weekday_copy'                                  # the weekday drifts most here
    fig = fa.plot_stationarity(Y, st, top=2, kinds=k2)
    assert fig.axes[0].get_legend_handles_labels()[1] == [c for c in st.index if c.startswith('log_ret')]
    plt.close(fig)


def test_drift_is_flagged_by_size_not_by_p_value():
    "Two samples of 20,000 rows from distributions 0.05 s.d. apart: p ~ 0 but KS ~ 0.02, below the 0.1 threshold."
    rng = np.random.default_rng(0)
    X = pd.DataFrame({'a': np.r_[rng.normal(0, 1, 60_000), rng.normal(0.05, 1, 40_000)],
                      'b': np.r_[rng.normal(0, 1, 60_000), rng.normal(1.0, 1, 40_000)]})
    d = fa.drift_table(X, max_rows=20_000)
    assert not any(c.startswith('p_') for c in d.columns)
    assert 0.0 < d.loc['a', 'ks_test'] < 0.1 and not d.loc['a', 'flagged']
    assert d.loc['b', 'ks_test'] > 0.3 and d.loc['b', 'flagged']
    from scipy import stats
    assert stats.ks_2samp(X['a'][:60_000].sample(20_000, random_state=0), X['a'][80_000:], method='asymp').pvalue < 0.01   # "significant"
    assert d.loc['a', 'ks_noise'] == pytest.approx(fa.ks_noise_level(20_000, 20_000), rel=1e-12)
    assert fa.ks_noise_level(20_000, 20_000) == pytest.approx(np.sqrt(-np.log(0.005) / 2) * np.sqrt(2 / 20_000), rel=1e-12)


def test_correlation_clusters_are_pairwise_redundant(feats):
    bars, X = feats
    corr = fa.feature_correlation(X)
    cl = fa.correlation_clusters(corr, 0.95)
    pairs = fa.correlated_pairs(corr, 0.95)
    members = [m.split(', ') for m in cl['members']]
    for m, rep in zip(members, cl['representative']):
        sub = corr.loc[m, m].abs().to_numpy()
        assert sub.min() >= 0.95 and rep in m
    in_pairs = set(pairs['feature_a']) | set(pairs['feature_b'])
    assert set().union(*members) <= in_pairs                  # one measure: every grouped feature is in a listed pair
    assert sorted(len(m) for m in members) == sorted(cl['size'])
    fig = fa.plot_correlation_overview(corr, show_threshold=0.9, max_features=12)
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert 2 <= len(labels) <= 12 and set(labels) <= set(corr.index)
    strongest = corr.abs().where(~np.eye(len(corr), dtype=bool)).max()
    assert (strongest[labels] >= 0.9).all()


# ---------------------------------------------------------------------------------------------------------------
# the report
def test_feature_diagnostics_report_small(tmp_path):
    p = run_report('feature_diagnostics', {'demo_days': 4, 'mi_max_rows': 2000, 'adf_max_rows': 500,
                                           'label_spec': '{"kind": "triple_barrier", "pt_ticks": 6, "sl_ticks": 6}'},
                   output_dir=tmp_path)
    html = p.html.read_text()
    for section in ('Feature diagnostics: ES', 'Data quality', 'Feature table', 'Distributions', 'Correlation structure',
                    'Single-feature predictive power', 'Stationarity', 'Train-versus-test drift', 'Run metadata'):
        assert section in html, section
    assert html.count('data:image/png;base64') >= 6 and 'Traceback' not in html
    assert 'triple_barrier' in html and 'from scalp_lib' not in html
    # the numbers on the page are the library's on the same data: one correlation measure, one count of pairs
    import json, nbformat, re
    from scalp_lib.config import get_instrument
    nb = nbformat.read(str(p.notebook), as_version=4)
    text = "\n".join(o.get("data", {}).get("text/markdown", "") for c in nb.cells for o in c.get("outputs", []))
    bars = demo_bars(n_days=4, seed=0)
    eng = ScalpingFeatureEngineer(bars)
    X = eng.generate_all_features()
    corr = fa.feature_correlation(X, seed=0)
    pairs, cl = fa.correlated_pairs(corr, eng.report.corr_threshold), fa.correlation_clusters(corr, eng.report.corr_threshold)
    assert f"**{len(pairs)} pairs** with |Spearman rho| >= {eng.report.corr_threshold}, forming **{len(cl)} redundant group(s)**" in text
    assert f"**{len(pairs)} pairs with |rho| >= {eng.report.corr_threshold}**" in text
    assert 'pairs with |corr|' not in html                       # the feature layer's Pearson count is not shown
    drift = fa.drift_table(X, kinds=fa.feature_kinds(X, groups=eng.report.table['group']), seed=0)
    assert f"{int(drift['flagged'].sum())} flagged, {int(drift['exempt'].sum())} exempt" in text
    assert 'p_val' not in html and 'p_test' not in html


def test_feature_diagnostics_bad_parameters(tmp_path):
    with pytest.raises(ReportExecutionError, match="label_spec"):
        run_report('feature_diagnostics', {'demo_days': 2, 'label_spec': '{"kind": "forecast"}'}, output_dir=tmp_path)
    with pytest.raises(ReportExecutionError, match="unknown group"):
        run_report('feature_diagnostics', {'demo_days': 2, 'feature_groups': 'returns, moon_phase'}, output_dir=tmp_path)
    with pytest.raises(ReportParameterError, match="did you mean 'max_bars'"):
        run_report('feature_diagnostics', {'max_bar': 10}, output_dir=tmp_path)


def test_feature_diagnostics_on_the_real_es_file(tmp_path, shared_data):
    p = run_report('feature_diagnostics', {'data_path': str(shared_data / 'es_1min_2025-09_11.csv.gz'),
                                           'tz': 'America/New_York', 'ts_offset': '5h', 'max_bars': 30000,
                                           'feature_groups': 'returns, volatility, vwap, volume_profile'},
                   output_dir=tmp_path)
    html = p.html.read_text()
    assert '30,000 one-minute bars' in html and 'Traceback' not in html
