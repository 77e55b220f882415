"""Shared fixtures. Datasets are written by the tests in the published formats; nothing is
downloaded and nothing is mocked."""

import os

import pytest
import torch

os.environ.setdefault("TQDM_DISABLE", "1")
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def listops_dir(tmp_path_factory):
    """A small ListOps set in the release layout, from the suite's own generator."""
    import tasks

    root = tmp_path_factory.mktemp("listops-data")
    tasks.get("listops").generate(root, seed=3, train=320, val=64, test=64, min_length=10, max_length=120, workers=2)
    return root
