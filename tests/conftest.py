"""Shared fixtures: golden-dump comparison (SNNC_UPDATE_GOLDEN=1 rewrites the dumps), seeds, small models."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
GOLDEN = Path(__file__).parent / "golden"
# The one skip SNNC_NO_SKIP=1 lets through: a GPU test on a machine without a GPU (CI has none). The reason is
# printed in pytest's skip summary (-rs), so the count of skipped tests shows it.
NO_GPU = "no CUDA GPU on this machine (torch.cuda.is_available() is False)"


@pytest.fixture(scope="module")
def nb():
    """The NumPy reference backend."""
    from snnc.backends import get_backend

    return get_backend("numpy")


@pytest.fixture(scope="module")
def tb():
    """The torch backend (tests that use it need torch installed)."""
    from snnc.backends import get_backend

    return get_backend("torch")


@pytest.fixture
def golden():
    """Compare a text dump with tests/golden/<name>.txt; regenerate with SNNC_UPDATE_GOLDEN=1 pytest tests."""

    def check(name: str, text: str) -> None:
        path = GOLDEN / f"{name}.txt"
        if os.environ.get("SNNC_UPDATE_GOLDEN") == "1":
            path.write_text(text)
        assert path.exists(), f"missing golden dump {path}; run SNNC_UPDATE_GOLDEN=1 pytest {path.parent.parent}"
        assert text == path.read_text(), f"graph differs from {path}; if intended, regenerate with SNNC_UPDATE_GOLDEN=1"

    return check


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """SNNC_NO_SKIP=1 (set by `make test`, so by CI) turns every skip into a failure: a test that cannot run
    there is a broken environment, not a pass."""
    outcome = yield
    rep = outcome.get_result()
    if (os.environ.get("SNNC_NO_SKIP") == "1" and rep.skipped and not hasattr(rep, "wasxfail")
            and not _allowed_skip(rep)):
        rep.outcome = "failed"
        rep.longrepr = f"skipped under SNNC_NO_SKIP=1 (every test must run in CI): {rep.longrepr}"


def _allowed_skip(rep) -> bool:
    """A skip whose reason is exactly NO_GPU (longrepr is (file, line, 'Skipped: reason') for a skip)."""
    longrepr = rep.longrepr
    return isinstance(longrepr, tuple) and len(longrepr) == 3 and str(longrepr[2]) == f"Skipped: {NO_GPU}"
