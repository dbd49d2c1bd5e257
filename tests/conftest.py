"""Test configuration: keep the suite on this project's own ``tests`` package and CPU-friendly."""

import os

import pytest
import torch

# MONAI Label's wheel installs a top-level ``tests`` package; the rootdir-relative import of
# this folder (tests/__init__.py) keeps ours first.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
