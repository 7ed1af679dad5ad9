"""Checks every rendered report must pass, and the CI-sized parameters of each template.

Shared so that a test which renders a template with these parameters for its own assertions also makes the generic
checks, and the template is rendered once (tests/test_reports.py lists which test renders which template)."""

# CI-sized parameters for each template; a template missing here fails test_every_template_has_ci_parameters
SMALL = {
    "data_quality": {"demo_days": 12},   # 2-17 Jan 2024, MLK day inside: also test_data_quality_demo_report_shows_holiday_and_none_found
    "feature_diagnostics": {"demo_days": 4, "mi_max_rows": 2000, "adf_max_rows": 500, "outside_series": "demo_vix"},
    "stability_investigation": {"demo_days": 6, "max_rows": 5000, "epochs": 2},
    "training": {"demo_days": 6, "epochs": 2, "seq_length": 10, "hidden_size": 8, "n_seeds": 2, "n_folds": 2, "bootstrap_samples": 200},
    "backtest_report": {"demo_days": 10, "bootstrap_samples": 200, "model_type": "feedforward", "model_epochs": 1},
    "study": {"demo_days": 12, "demo_trials": 4, "demo_epochs": 1},
    "retraining": {"demo_days": 6, "n_splits": 3, "epochs": 1, "max_train_windows": 5000, "bootstrap_samples": 200},
}


def assert_self_contained_html(paths):
    "The report rendered: notebook kept, HTML with figures embedded, code hidden, no traceback."
    html = paths.html.read_text()
    assert paths.notebook.exists() and len(html) > 10_000
    assert "data:image/png;base64" in html          # figures embedded: self-contained
    assert "jp-mod-noInput" in html and "from scalp_lib" not in html  # code hidden
    assert "Traceback" not in html
    return html
