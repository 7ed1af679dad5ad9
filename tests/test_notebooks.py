"""Every library notebook in nbs/ runs as one pytest item through nbdev's own runner.

`import nbdev.test` (not `from nbdev.test import ...`) so pytest does not collect nbdev's helpers.
Cells flagged with a `tst_flags` name from pyproject.toml (notest, slow, gpu) are skipped as nbdev-test does.
"""
import os
from pathlib import Path

import nbdev.test
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "nbs").glob("[0-9][0-9]*_*.ipynb"))  # 00_config ... 03a_feature_analysis ...
SKIP_FLAGS = ["notest", "slow", "gpu"]


def test_there_are_library_notebooks():
    assert len(NOTEBOOKS) >= 2, f"no library notebooks found under {ROOT / 'nbs'}"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook(nb):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    ok, secs = nbdev.test.test_nb(nb, skip_flags=SKIP_FLAGS, basepath=str(ROOT), showerr=True)
    assert ok, f"{nb.name} failed under nbdev's runner (traceback above, on stderr)"
