"""Evaluation: DAVIS J&F, the paper's first-frame prompt protocols, reports.

``frame_jf`` and the score types import light; the runner and the reports (which need the
datasets, MONAI and matplotlib) load on first use.

Example:
    >>> import numpy as np
    >>> from sam2s.evaluation import frame_jf
    >>> mask = np.zeros((8, 8), bool); mask[2:6, 2:6] = True
    >>> frame_jf(mask, mask)
    (1.0, 1.0)
"""

from __future__ import annotations

import importlib
from typing import Any

from sam2s.evaluation.aggregate import (
    BenchmarkScore,
    ObjectScore,
    SubsetScore,
    VideoScore,
    VideoScorer,
    score_video,
)
from sam2s.evaluation.clicks import (
    PROTOCOLS,
    Click,
    Protocol,
    box_from_mask,
    first_click,
    mask_centre,
    next_click,
)
from sam2s.evaluation.metrics import boundary_f_measure, frame_jf, region_similarity

__all__ = [
    "PROTOCOLS",
    "BenchmarkScore",
    "Click",
    "EvaluationResult",
    "ObjectPrompt",
    "ObjectScore",
    "Protocol",
    "SubsetScore",
    "VideoScore",
    "VideoScorer",
    "boundary_f_measure",
    "box_from_mask",
    "evaluate",
    "evaluate_video",
    "first_click",
    "frame_jf",
    "mask_centre",
    "next_click",
    "region_similarity",
    "score_video",
    "write_report",
]

_LAZY = {
    "EvaluationResult": "sam2s.evaluation.runner",
    "ObjectPrompt": "sam2s.evaluation.runner",
    "evaluate": "sam2s.evaluation.runner",
    "evaluate_video": "sam2s.evaluation.runner",
    "write_report": "sam2s.evaluation.report",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sam2s.evaluation' has no attribute {name!r}")
