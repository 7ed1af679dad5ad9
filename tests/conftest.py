"""Shared pytest set-up: small thread pools (CI has 2 cores), a headless plot backend, and paths."""
import os
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
import atexit
import shutil
import tempfile
from pathlib import Path
import pytest


def _worker_temp_dir():
    """Under pytest-xdist (`make test` runs `-n 2`), each worker gets its own temp folder, inherited by the report kernels
    and subprocesses it starts: tests that look for leftovers in the temp folder (a report's scratch folder removed)
    then see only their own worker's files."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker:
        own = Path(tempfile.gettempdir()) / f"scalp-lib-tests-{os.getpid()}-{worker}"
        own.mkdir(exist_ok=True)
        os.environ["TMPDIR"] = str(own)
        tempfile.tempdir = str(own)
        atexit.register(shutil.rmtree, own, ignore_errors=True)


_worker_temp_dir()

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def _torch_threads():
    try:
        import torch
        torch.set_num_threads(1)
    except ImportError:  # torch is a dependency; this only keeps conftest importable
        pass


_torch_threads()


@pytest.fixture(scope="session")
def shared_data():
    "The real ES files beside the project; tests that use them skip with a reason on a fresh clone."
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real market data folder {SHARED_DATA} is absent (it lives beside the project, never in it)")
    return SHARED_DATA
