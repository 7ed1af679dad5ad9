"""scalp_lib.replicates: the interval over seeds x folds on cases with a known answer, walk-forward folds, the paired
block bootstrap of a classifier difference, the wording rule's branches, and the training configuration as replicates."""
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from scalp_lib.replicates import (ReplicateError, comparison_sentence, interval_verdict, paired_bootstrap_classifier,
                                  replicate_comparison, replicate_interval, run_replicates, sharpe_verdict, summarise_replicates,
                                  train_replicates, verdict_clause, walk_forward_splits)
from scalp_lib.splits import temporal_split
from scalp_lib.train import evaluate_classifier, fit_baselines


# ---------------------------------------------------------------- the interval

def test_interval_is_the_t_interval_over_fold_means():
    "3 folds x 4 seeds: seeds are averaged within each fold, then mean +- t(2) * s / sqrt(3) over the fold means."
    fold_means = np.array([0.50, 0.56, 0.53])
    seed_dev = np.array([[-0.01, 0.01, -0.02, 0.02], [0.03, -0.03, 0.0, 0.0], [0.005, -0.005, 0.01, -0.01]])   # each row sums to 0
    table = pd.DataFrame([{'fold': k, 'seed': s, 'score': fold_means[k] + seed_dev[k, s]} for k in range(3) for s in range(4)])
    iv = replicate_interval(table['score'], table['fold'])
    half = 4.3026527 * fold_means.std(ddof=1) / np.sqrt(3)                # t(0.975, 2 df) = 4.3026527..., by hand
    assert iv['basis'] == 'folds' and iv['n_units'] == 3
    assert iv['mean'] == pytest.approx(0.53, abs=1e-12)
    assert (iv["ci_low"], iv["ci_high"]) == pytest.approx((0.53 - half, 0.53 + half), abs=1e-8)
    # the seeds' spread inside a fold does not enter the interval; summarise_replicates reports it separately
    s = summarise_replicates(table)
    assert s.loc["score", "ci_low"] == pytest.approx(0.53 - half, abs=1e-8)
    assert s.loc['score', 'sd_between_folds'] == pytest.approx(fold_means.std(ddof=1), abs=1e-12)
    assert s.loc['score', 'sd_between_seeds'] == pytest.approx(np.sqrt(np.mean(seed_dev.var(axis=1, ddof=1))), abs=1e-12)
    assert "t interval over the 3 walk-forward fold means" in s.attrs['interval']


def test_interval_with_one_fold_or_one_run():
    one_fold = replicate_interval([0.40, 0.42, 0.44], [0, 0, 0])
    assert one_fold['basis'] == 'seeds'
    assert (one_fold['ci_low'], one_fold['ci_high']) == pytest.approx(stats.t.interval(0.95, 2, loc=0.42, scale=stats.sem([0.40, 0.42, 0.44])))
    single = replicate_interval([0.4])
    assert single['basis'] == 'one run' and np.isnan(single['ci_low']) and single['mean'] == 0.4
    with pytest.raises(ReplicateError, match="confidence"):
        replicate_interval([0.1, 0.2], confidence=95)


def test_interval_covers_the_true_mean_at_its_level():
    "Independent normal fold effects plus seed noise: the 95 % interval covers the true mean in ~95 % of repetitions."
    rng = np.random.default_rng(7)
    folds = np.repeat(np.arange(3), 2)
    hits = 0
    n_sims = 1500
    for _ in range(n_sims):
        v = 0.3 + rng.normal(0, 0.04, 3)[folds] + rng.normal(0, 0.01, 6)
        iv = replicate_interval(v, folds)
        hits += iv['ci_low'] <= 0.3 <= iv['ci_high']
    assert 0.93 < hits / n_sims < 0.97, hits / n_sims


def test_paired_comparison_removes_the_shared_period_effect():
    "A model 1 point better than its baseline on every run beats it, although both vary by 5 points from fold to fold."
    rng = np.random.default_rng(0)
    rows = []
    for k, period in enumerate([0.30, 0.40, 0.35, 0.45]):
        for s in range(2):
            b = period + rng.normal(0, 0.002)
            rows.append({'fold': k, 'seed': s, 'model_accuracy': b + 0.01 + rng.normal(0, 0.001), 'base_accuracy': b})
    t = pd.DataFrame(rows)
    c = replicate_comparison(t, 'model', 'base', {'accuracy': True})
    assert c.loc['accuracy', 'verdict'] == 'beats' and c.loc['accuracy', 'diff'] == pytest.approx(0.01, abs=0.002)
    unpaired = summarise_replicates(t)
    assert unpaired.loc['model_accuracy', 'ci_low'] < unpaired.loc['base_accuracy', 'ci_high']   # the unpaired intervals overlap
    with pytest.raises(ReplicateError, match="model_log_loss"):
        replicate_comparison(t, 'model', 'base', {'log_loss': False})


def test_run_replicates_calls_every_fold_and_seed():
    seen = []
    reps = run_replicates(lambda k, s: seen.append((k, s)) or {'x': 10 * k + s}, [3, 5], 2)
    assert seen == [(0, 3), (0, 5), (1, 3), (1, 5)]
    assert reps.table['x'].tolist() == [3, 5, 13, 15] and (reps.n_folds, reps.n_seeds) == (2, 2)
    with pytest.raises(ReplicateError, match="dict of metrics"):
        run_replicates(lambda k, s: 1.0, 1, 1)


# ---------------------------------------------------------------- walk-forward folds

def test_walk_forward_splits_tile_the_end_and_end_with_the_main_split():
    n = 2000
    ends = np.minimum(np.arange(n) + 15, n - 1).astype(float)
    wf = walk_forward_splits(n, 3, t1=ends, embargo_bars=10)
    tests = [(int(s.test[0]), int(s.test[-1])) for s in wf]
    assert tests == [(800, 1199), (1200, 1599), (1600, 1999)]
    main = temporal_split(n, t1=ends, embargo_bars=10)
    for a, b in zip(wf[-1].parts().values(), main.parts().values()): np.testing.assert_array_equal(a, b)
    for s in wf:                                  # no training or validation label reaches the next segment plus the embargo
        assert ends[s.train].max() + 10 < s.val[0] and ends[s.val].max() + 10 < s.test[0]
        assert len(s.val) == len(main.val) or abs(len(s.val) - len(main.val)) <= 15
    with pytest.raises(ReplicateError, match="too many"):
        walk_forward_splits(n, 4, t1=ends)
    with pytest.raises(ReplicateError, match="n_folds"):
        walk_forward_splits(n, 0, t1=ends)


# ---------------------------------------------------------------- the paired block bootstrap

def _probas(rng, n, C=3):
    P = rng.dirichlet(np.ones(C), n)
    return P


def test_bootstrap_point_estimates_are_evaluate_classifiers():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 1500)
    Pa, Pb = _probas(rng, 1500), _probas(rng, 1500)
    Pb[:, 2] = 0.0; Pb /= Pb.sum(axis=1, keepdims=True)          # b never predicts class 2: its F1 and precision there are 0
    t = paired_bootstrap_classifier(y, Pa, Pb, block=30, n_samples=200, seed=0)
    for P, col in ((Pa, 'a'), (Pb, 'b')):
        ref = evaluate_classifier(y, P)
        for m in ('accuracy', 'balanced_accuracy', 'macro_f1', 'log_loss'):
            assert t.loc[m, col] == pytest.approx(ref[m], abs=1e-12), (col, m)


def test_bootstrap_interval_matches_the_normal_approximation_for_independent_windows():
    "With blocks of one window the interval of the accuracy difference is the usual mean +- 1.96 s.e. of the per-window differences."
    rng = np.random.default_rng(2)
    n = 4000
    y = rng.integers(0, 3, n)
    Pa, Pb = _probas(rng, n), _probas(rng, n)
    good = rng.random(n) < 0.2
    Pa[good] = np.eye(3)[y[good]] * 0.8 + 0.1 / 1.5
    t = paired_bootstrap_classifier(y, Pa, Pb, block=1, n_samples=4000, seed=3)
    d = (Pa.argmax(1) == y).astype(float) - (Pb.argmax(1) == y).astype(float)
    se = d.std(ddof=1) / np.sqrt(n)
    assert t.loc['accuracy', 'diff'] == pytest.approx(d.mean(), abs=1e-12)
    assert t.loc['accuracy', 'ci_low'] == pytest.approx(d.mean() - 1.96 * se, abs=0.15 * 1.96 * se)
    assert t.loc['accuracy', 'ci_high'] == pytest.approx(d.mean() + 1.96 * se, abs=0.15 * 1.96 * se)
    assert t.loc['accuracy', 'verdict'] == 'beats'


def test_bootstrap_blocks_widen_the_interval_of_dependent_windows():
    "Windows whose hits come in runs (overlapping labels): blocks give a wider, honest interval than single windows."
    rng = np.random.default_rng(4)
    n = 6000
    y = rng.integers(0, 3, n)
    runs = np.repeat(rng.random(n // 100) < 0.5, 100)                  # the model is right in whole stretches of 100 windows
    Pa = np.full((n, 3), 0.2); Pa[np.arange(n), np.where(runs, y, (y + 1) % 3)] = 0.6
    Pb = np.tile([0.3, 0.4, 0.3], (n, 1))
    narrow = paired_bootstrap_classifier(y, Pa, Pb, block=1, n_samples=1000, seed=0).loc['accuracy']
    wide = paired_bootstrap_classifier(y, Pa, Pb, block=100, n_samples=1000, seed=0).loc['accuracy']
    assert (wide['ci_high'] - wide['ci_low']) > 3 * (narrow['ci_high'] - narrow['ci_low'])


def test_bootstrap_refuses_mismatched_inputs():
    with pytest.raises(ReplicateError, match="two"):
        paired_bootstrap_classifier(np.zeros(5), np.ones((5, 3)) / 3, np.ones((4, 3)) / 3)


# ---------------------------------------------------------------- the wording rule

@pytest.mark.parametrize("lo, hi, higher, word", [
    (0.01, 0.05, True, 'beats'), (-0.05, -0.01, True, 'worse than'), (-0.01, 0.05, True, 'indistinguishable from'),
    (0.0, 0.05, True, 'indistinguishable from'), (np.nan, np.nan, True, 'indistinguishable from'),
    (-0.05, -0.01, False, 'beats'), (0.01, 0.05, False, 'worse than'), (-0.01, 0.01, False, 'indistinguishable from')])
def test_interval_verdict_branches(lo, hi, higher, word):
    assert interval_verdict(lo, hi, higher_is_better=higher) == word


def test_the_training_report_headline_of_old_would_now_say_indistinguishable():
    "A 0.8-point gap whose interval spans zero is not a win."
    s = comparison_sentence('balanced accuracy', 0.008, -0.012, 0.028, reference='the best baseline')
    assert s.startswith('the model is indistinguishable from the best baseline on balanced accuracy (+0.8 points')
    assert 'beats' not in s
    assert comparison_sentence('accuracy', 0.01, np.nan, np.nan).endswith('one run gives no interval)')


def test_sharpe_verdict_branches():
    assert sharpe_verdict(psr=0.96) == 'profitable'
    assert sharpe_verdict(psr=0.90) == 'indistinguishable from zero'
    assert sharpe_verdict(psr=0.99, dsr=0.80) == 'indistinguishable from zero'    # several trials: the deflated ratio decides
    assert sharpe_verdict(dsr=0.95) == 'profitable'
    assert sharpe_verdict() == 'indistinguishable from zero' and sharpe_verdict(psr=float('nan')) == 'indistinguishable from zero'


def test_verdict_clause_groups_references():
    mk = lambda v: pd.DataFrame({'verdict': [v]}, index=pd.Index(['log_loss'], name='metric'))
    c = {'the majority class': mk('worse than'), 'logistic regression': mk('beats'), 'gradient boosting': mk('beats')}
    assert verdict_clause(c, 'log_loss') == 'beats logistic regression and gradient boosting; is worse than the majority class'


# ---------------------------------------------------------------- the training configuration as replicates

def test_train_replicates_scores_every_run_like_the_library(tmp_path):
    from scalp_lib.data import demo_bars
    from scalp_lib.features import ScalpingFeatureEngineer
    from scalp_lib.labels import LabelSpec, make_labels
    bars = demo_bars(n_days=5, seed=2)
    X = ScalpingFeatureEngineer(bars, groups=['returns', 'volatility']).generate_all_features()
    lab = make_labels(bars, LabelSpec(kind='direction', horizon_bars=10, dead_band_ticks=2.0))
    folds = walk_forward_splits(len(bars), 2, t1=lab['t1_pos'].where(lab['t1_pos'] >= 0).to_numpy(np.float64))
    cfg = dict(type='feedforward', input_dim=X.shape[1], hidden_dims=[8], dropout_rate=0.0, num_classes=3)
    reps = train_replicates(X, lab['label'], folds, cfg, seeds=[0, 1], timestamps=bars.index,
                            train_kwargs=dict(epochs=1, batch_size=512, lr=2e-3, device='cpu'),
                            main=(1, 0), main_kwargs=dict(checkpoint_dir=tmp_path / 'ck', checkpoint_fields={'instrument': 'ES'}))
    t = reps.table.set_index(['fold', 'seed'])
    assert list(t.index) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    for key, run in reps.runs.items():
        y = run.data.targets['test']
        assert t.loc[key, 'model_balanced_accuracy'] == pytest.approx(evaluate_classifier(y, run.proba_test)['balanced_accuracy'], abs=1e-12)
        assert t.loc[key, 'n_test'] == len(y) == len(run.proba_test)
        # the baselines are the library's, fitted on this fold's label-bar features
        fd = run.data
        bl = fit_baselines(fd.X[fd.rows['train']], fd.targets['train'], fd.X[fd.rows['test']], y, num_classes=3, seed=0)
        assert t.loc[key, 'logistic_regression_log_loss'] == pytest.approx(bl.loc['logistic_regression', 'log_loss'], abs=1e-12)
        # the scaler of a fold saw its training rows only
        assert fd.scaler.n_rows_fit_ == len(np.arange(len(bars))[folds[key[0]].train])
    assert reps.runs[(1, 0)].result.best_checkpoint is not None and all(r.result.best_checkpoint is None for k, r in reps.runs.items() if k != (1, 0))
    assert reps.runs[(0, 0)].data.rows['test'].max() < reps.runs[(1, 0)].data.rows['test'].min()   # later fold, later test block
