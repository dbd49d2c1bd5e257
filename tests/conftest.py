"""Test configuration: CPU-friendly threads; GPU tests deselected where no GPU exists."""

import os

import torch

# Two xdist workers on a 2-core machine: one torch thread each; alone: both cores.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else max(1, min(2, os.cpu_count() or 1)))


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` are deselected (not skipped) without a CUDA device; .ci/run reports them."""
    if torch.cuda.is_available() or os.environ.get("SAM2S_COLLECT_GPU_TESTS"):
        return
    gpu = [item for item in items if "gpu" in item.keywords]
    if gpu:
        config.hook.pytest_deselected(items=gpu)
        items[:] = [item for item in items if "gpu" not in item.keywords]
