"""Causality, group by group and deterministically: for every registered feature group, the future after bar t is
replaced (and, separately, cut off) at fixed t chosen around session starts, warm-ups and the data's end, and every
feature value at or before t must be bit-for-bit what it was.

The property test in test_features.py draws a few random t for all groups at once; a one-bar look-ahead that leaves
no NaN in one feature is caught there only when a drawn t happens to expose it. Here every group meets every t.
"""
import numpy as np
import pandas as pd
import pytest

from scalp_lib.data import demo_bars
from scalp_lib.features import ScalpingFeatureEngineer, feature_groups, perturb_after

BARS = demo_bars(n_days=3, seed=4)        # 3 sessions of 1,380 bars: a daily break at 1380 and 2760
N = len(BARS)
# the first bars, inside typical warm-ups, just before / at / after session starts, mid-session, the data's end
TS = [0, 1, 2, 13, 59, 1378, 1379, 1380, 1381, 2100, 2759, 2760, N - 3, N - 2]
GROUPS = list(feature_groups().index)


@pytest.mark.parametrize('group', GROUPS)
def test_every_feature_of_the_group_ignores_an_altered_and_an_absent_future(group):
    base = ScalpingFeatureEngineer(BARS, groups=[group]).generate_all_features()
    assert len(base.columns) and len(base) == N
    for k, t in enumerate(TS):
        for seed in (k, 1000 + k):                      # two different futures per t
            altered = perturb_after(BARS, t, seed=seed)
            assert not altered.iloc[t + 1:].equals(BARS.iloc[t + 1:])
            y = ScalpingFeatureEngineer(altered, groups=[group]).generate_all_features()
            pd.testing.assert_frame_equal(base.iloc[:t + 1], y.iloc[:t + 1], check_exact=True,
                                          obj=f"{group} features up to bar {t} with the future after it replaced (seed {seed})")
        cut = ScalpingFeatureEngineer(BARS.iloc[:t + 1], groups=[group]).generate_all_features()
        pd.testing.assert_frame_equal(base.iloc[:t + 1], cut, check_exact=True, obj=f"{group} features up to bar {t} without any future")


def test_the_groups_under_test_are_every_registered_group():
    assert set(GROUPS) == set(feature_groups().index) and len(GROUPS) >= 15
    every = ScalpingFeatureEngineer(BARS.iloc[:200], groups='all').generate_all_features()
    per_group = sum(len(ScalpingFeatureEngineer(BARS.iloc[:200], groups=[g]).generate_all_features().columns) for g in GROUPS)
    assert per_group == len(every.columns)             # the groups together are every feature
