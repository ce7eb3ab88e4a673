"""Shared fixtures and marker handling for the whole suite."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
REAL_VIDEOS = Path(os.environ.get("VFM_REAL_VIDEOS", REPO_ROOT.parent / "shared" / "data" / "videos"))


def pytest_collection_modifyitems(config, items):
    have_videos = (REAL_VIDEOS / "ground_truth.json").is_file()
    try:
        import torch

        have_cuda = torch.cuda.is_available()
    except Exception:  # pragma: no cover
        have_cuda = False
    skip_videos = pytest.mark.skip(reason=f"real videos not found at {REAL_VIDEOS}")
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "real_videos" in item.keywords and not have_videos:
            item.add_marker(skip_videos)
        if "gpu" in item.keywords and not have_cuda:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def real_videos_dir() -> Path:
    if not (REAL_VIDEOS / "ground_truth.json").is_file():
        pytest.skip(f"real videos not found at {REAL_VIDEOS}")
    return REAL_VIDEOS


@pytest.fixture(scope="session")
def ground_truth(real_videos_dir) -> dict:
    return json.loads((real_videos_dir / "ground_truth.json").read_text())
