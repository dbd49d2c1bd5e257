"""Per-frame DAVIS metrics: region similarity J and boundary F-measure.

The rules are those of ``vos-benchmark`` 0.1.0 (itself the DAVIS 2017 evaluation code), and
the results match it to floating-point precision:

* **J** is the intersection over union of the two masks, and 1 when both are empty.
* **F** compares one-pixel-wide boundaries. A mask's boundary (the ``seg2bmap`` rule) is every
  pixel that differs from its right, lower or lower-right neighbour (pixels beyond the image
  count as background), except that on the last row only the right neighbour is compared, on
  the last column only the lower one, and the bottom-right pixel is never a boundary pixel.
  A boundary pixel matches when a boundary pixel of the other mask lies within a disk of
  radius ``ceil(0.008 * image diagonal)``; precision and recall are the matched fractions and
  F their harmonic mean. Both boundaries empty gives F = 1; exactly one empty gives F = 0.

The disk dilation is computed as "Euclidean distance to the other boundary <= radius", which
is the same set of pixels as dilating with the disk ``x^2 + y^2 <= r^2`` and needs no OpenCV.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

__all__ = ["boundary_f_measure", "boundary_map", "boundary_tolerance", "dice", "frame_jf", "region_similarity"]

BOUNDARY_FRACTION = 0.008


def _check_pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.ndim != 2 or gt.ndim != 2:
        raise ValueError(f"masks must be 2D (H, W); got pred {pred.shape} and gt {gt.shape}")
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in size")
    return pred.astype(bool, copy=False), gt.astype(bool, copy=False)


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """One-pixel-wide boundary of a mask by the ``seg2bmap`` rule (see the module docstring).

    Args:
        mask: bool (H, W).

    Returns:
        bool (H, W).
    """
    seg = np.asarray(mask, dtype=bool)
    right = np.zeros_like(seg)
    below = np.zeros_like(seg)
    below_right = np.zeros_like(seg)
    right[:, :-1] = seg[:, 1:]
    below[:-1, :] = seg[1:, :]
    below_right[:-1, :-1] = seg[1:, 1:]
    boundary = (seg ^ right) | (seg ^ below) | (seg ^ below_right)
    boundary[-1, :] = seg[-1, :] ^ right[-1, :]
    boundary[:, -1] = seg[:, -1] ^ below[:, -1]
    boundary[-1, -1] = False
    return boundary


def boundary_tolerance(shape: tuple[int, ...]) -> float:
    """Match radius in pixels for an (H, W) image: ``ceil(0.008 * sqrt(H^2 + W^2))``."""
    return float(math.ceil(BOUNDARY_FRACTION * math.hypot(shape[0], shape[1])))


def region_similarity(pred: np.ndarray, gt: np.ndarray) -> float:
    """J: intersection over union of two bool (H, W) masks; 1.0 when both are empty."""
    pred, gt = _check_pair(pred, gt)
    intersection = int(np.count_nonzero(pred & gt))
    total = int(np.count_nonzero(pred)) + int(np.count_nonzero(gt))
    if total == 0:
        return 1.0
    return intersection / (total - intersection)


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Dice overlap of two bool masks of one shape (any number of dimensions, e.g. a (D, H, W)
    volume); 1.0 when both are empty."""
    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in size")
    total = int(np.count_nonzero(pred)) + int(np.count_nonzero(gt))
    return 2 * int(np.count_nonzero(pred & gt)) / total if total else 1.0


def _matched_count(boundary: np.ndarray, other: np.ndarray, radius: float) -> int:
    """How many pixels of ``boundary`` lie within ``radius`` of a pixel of ``other`` (non-empty)."""
    # Only the box holding both boundaries (plus the radius) matters: distances between their
    # pixels are the same inside the crop, and cropping keeps large frames cheap.
    rows, cols = np.nonzero(boundary | other)
    pad = int(radius) + 1
    top, left = max(rows.min() - pad, 0), max(cols.min() - pad, 0)
    bottom, right = rows.max() + pad + 1, cols.max() + pad + 1
    crop = (slice(top, bottom), slice(left, right))
    distance = ndimage.distance_transform_edt(~other[crop])
    return int(np.count_nonzero(boundary[crop] & (distance <= radius)))


def boundary_f_measure(pred: np.ndarray, gt: np.ndarray, tolerance: float | None = None) -> float:
    """F: boundary F-measure of two bool (H, W) masks.

    Args:
        pred: predicted mask.
        gt: ground-truth mask.
        tolerance: match radius in pixels; ``None`` uses :func:`boundary_tolerance`.
    """
    pred, gt = _check_pair(pred, gt)
    radius = boundary_tolerance(pred.shape) if tolerance is None else float(tolerance)
    pred_boundary = boundary_map(pred)
    gt_boundary = boundary_map(gt)
    n_pred = int(np.count_nonzero(pred_boundary))
    n_gt = int(np.count_nonzero(gt_boundary))
    if n_pred == 0 and n_gt == 0:
        return 1.0
    if n_pred == 0 or n_gt == 0:
        return 0.0  # precision or recall is 0 and the other 1
    precision = _matched_count(pred_boundary, gt_boundary, radius) / n_pred
    recall = _matched_count(gt_boundary, pred_boundary, radius) / n_gt
    if precision + recall == 0:
        return 0.0
    return 2.0 * precision * recall / (precision + recall)


def frame_jf(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    """J and F of one object on one frame, each in [0, 1], as vos-benchmark computes them.

    Args:
        pred: bool (H, W) predicted mask.
        gt: bool (H, W) ground-truth mask.

    Returns:
        ``(J, F)``.
    """
    return region_similarity(pred, gt), boundary_f_measure(pred, gt)
