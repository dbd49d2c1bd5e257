"""Python side of the MONAI bundle in ``bundle/``: what its configs instantiate, the download
helper for ``large_files.yml`` and the writer of the sample inputs.

The configs name these objects by their dotted path (``sam2s.bundle.SegmentationWorkflow``); see
:mod:`sam2s.bundle.workflows` for how inference.json maps MONAI's bundle properties onto the
project's predictor, frame sources and writers.
"""

from sam2s.bundle.download import (
    DownloadError,
    HashMismatchError,
    LargeFile,
    fetch_large_files,
    read_large_files,
)
from sam2s.bundle.training import TrainingWorkflow
from sam2s.bundle.workflows import (
    CheckInputs,
    EvaluationWorkflow,
    MaskWriterSet,
    SegmentationInput,
    SegmentationWorkflow,
    check_dataset,
    find_bundle_root,
    resolve_checkpoint,
)

__all__ = [
    "CheckInputs",
    "DownloadError",
    "EvaluationWorkflow",
    "HashMismatchError",
    "LargeFile",
    "MaskWriterSet",
    "SegmentationInput",
    "SegmentationWorkflow",
    "TrainingWorkflow",
    "check_dataset",
    "fetch_large_files",
    "find_bundle_root",
    "read_large_files",
    "resolve_checkpoint",
]
