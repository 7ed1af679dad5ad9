"""Shared pytest set-up: small thread pools (CI has 2 cores), a headless plot backend, and paths."""
import os
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
from pathlib import Path
import pytest

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
