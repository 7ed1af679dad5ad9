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
