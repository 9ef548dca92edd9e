"""Shared fixtures. Tests on real corpora are marked ``shared_data`` and use :func:`shared_datasets`."""

from __future__ import annotations

from pathlib import Path

import pytest

# The real corpora sit beside the project (../shared/datasets); a user's checkout lacks them.
SHARED_DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """``../shared/datasets``; skips the test with a reason when the folder is absent.

    Use it in tests marked ``@pytest.mark.shared_data``.
    """
    if not SHARED_DATASETS.is_dir():
        pytest.skip(f"real corpora not found at {SHARED_DATASETS} (only on development machines and CI)")
    return SHARED_DATASETS
