"""Every report template runs end to end through papermill + nbconvert on small CI-sized parameters."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

from scalp_lib.report import ReportExecutionError, ReportParameterError, list_templates, run_report

ROOT = Path(__file__).resolve().parents[1]
# CI-sized parameters for each template; a template missing here fails test_every_template_has_ci_parameters
SMALL = {
    "data_quality": {"demo_days": 3},
    "feature_diagnostics": {"demo_days": 4, "mi_max_rows": 2000, "adf_max_rows": 500, "outside_series": "demo_vix"},
    "stability_investigation": {"demo_days": 6, "max_rows": 5000, "epochs": 2},
    "training": {"demo_days": 6, "epochs": 2, "seq_length": 10, "hidden_size": 8},
    "backtest_report": {"demo_days": 10, "bootstrap_samples": 200, "model_type": "feedforward", "model_epochs": 1},
    "study": {"demo_days": 12, "demo_trials": 4, "demo_epochs": 1},
}


def test_every_template_has_ci_parameters():
    assert set(list_templates()) == set(SMALL), "add CI-sized parameters for new templates to SMALL"


@pytest.mark.parametrize("name", sorted(SMALL))
def test_report_renders_html_with_code_hidden(tmp_path, name):
    paths = run_report(name, SMALL[name], output_dir=tmp_path)
    html = paths.html.read_text()
    assert paths.notebook.exists() and len(html) > 10_000
    assert "data:image/png;base64" in html          # figures embedded: self-contained
    assert "jp-mod-noInput" in html and "from scalp_lib" not in html  # code hidden
    assert "Traceback" not in html


def test_data_quality_on_the_real_es_file(tmp_path, shared_data):
    p = run_report("data_quality", {"data_path": str(shared_data / "es_1min_2025-09_11.csv.gz"),
                                    "tz": "America/New_York", "ts_offset": "5h"}, output_dir=tmp_path)
    html = p.html.read_text()
    assert "75,791 one-minute bars" in html


def test_data_quality_on_the_real_es_trades(tmp_path, shared_data):
    p = run_report("data_quality", {"data_path": str(shared_data / "es_ticks_2013-09.csv.gz"), "data_kind": "trades",
                                    "tz": "America/Chicago"}, output_dir=tmp_path)
    html = p.html.read_text()
    assert "2,264 one-minute bars" in html and "500,000 rows in" in html


def test_bad_input_names_the_parameter(tmp_path):
    with pytest.raises(ReportParameterError, match="did you mean 'demo_days'"):
        run_report("data_quality", {"demo_dayz": 3}, output_dir=tmp_path)
    with pytest.raises(ReportExecutionError, match="bar file not found: /no/such.csv"):
        run_report("data_quality", {"data_path": "/no/such.csv"}, output_dir=tmp_path)


def test_backtest_report_on_the_rule_and_its_parameter_errors(tmp_path):
    p = run_report("backtest_report", {"demo_days": 10, "bootstrap_samples": 100, "signal_source": "rule"}, output_dir=tmp_path)
    html = p.html.read_text()
    assert "Built-in momentum rule" in html
    # 2 sessions: the headline says the sample is too small and prints no annualised figure as if it meant something
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))
    assert "Sample too small" in text and "too few sessions (2 &lt; 20) for annualised figures" in text
    head = text[text.index("Executive summary"):text.index("Methodology")]
    assert "withheld" in head and "cannot be judged on 2 session(s)" in head
    assert not re.search(r"(Sharpe ratio|Sharpe|PSR|DSR|probabilistic Sharpe ratio) [\u2212-]?\d", head), head
    with pytest.raises(ReportExecutionError, match="'predictions_path' is required"):
        run_report("backtest_report", {"signal_source": "predictions"}, output_dir=tmp_path, name="bad")


def test_cli(tmp_path):
    exe = Path(sys.executable).parent / "scalp-report"
    listing = subprocess.run([str(exe), "--list"], capture_output=True, text=True, timeout=120)
    assert listing.returncode == 0 and "data_quality" in listing.stdout and "demo_days: int" in listing.stdout
    bad = subprocess.run([str(exe), "data_quality", "-p", "polcy", "strict", "--output-dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "did you mean 'policy'" in bad.stderr
    ok = subprocess.run([str(exe), "data_quality", "-p", "demo_days", "2", "--output-dir", str(tmp_path)],
                        capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "data_quality.html").exists()
