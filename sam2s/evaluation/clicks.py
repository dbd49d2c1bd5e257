"""Simulated first-frame prompts: the paper's click protocol, boxes and masks.

Clicks (the SAM2S protocol, as in SAM 2's interactive evaluation):

1. The first click is positive, at the "centre" of the ground-truth mask.
2. Each next click goes to the centre of the largest error region between the current
   prediction and the ground truth: positive if the region is missed object (false
   negative), negative if it is wrongly included background (false positive).

Choices where the paper is silent, made once here:

* **Centre** = the pixel of the region farthest from its boundary (maximum of the Euclidean
  distance transform). The image border counts as boundary (the mask is padded with
  background), so an instrument entering from the edge is clicked well inside the view, not on
  the edge. When several pixels share the maximum (the middle line of a rectangle), the one
  nearest to their mean position is taken, then the first in row-major order.
* **Error regions** are the 8-connected components of the false-negative and false-positive
  masks; "largest" is by pixel count, ties broken in favour of false negatives, then the
  component whose first pixel comes first in row-major order.
* When the prediction already equals the ground truth there is no error region and no further
  click (:func:`next_click` returns ``None``).

Boxes are the tight box of the ground truth, ``(x0, y0, x1, y1)`` with inclusive pixel
indices (the convention of SAM's mask-to-box). Points are ``(x, y)`` = (column, row).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import ndimage

__all__ = [
    "PROTOCOLS",
    "Click",
    "Protocol",
    "box_from_mask",
    "first_click",
    "mask_centre",
    "next_click",
    "parse_protocol",
]

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class Click:
    """One simulated click: pixel ``(x, y)`` = (column, row), positive or negative."""

    x: int
    y: int
    positive: bool

    @property
    def label(self) -> int:
        """SAM's point label: 1 positive, 0 negative."""
        return 1 if self.positive else 0


@dataclass(frozen=True)
class Protocol:
    """A first-frame prompting protocol.

    Attributes:
        name: ``"1click"``, ``"3click"``, ``"5click"``, ``"box"`` or ``"mask"``.
        kind: ``"clicks"``, ``"box"`` or ``"mask"``.
        num_clicks: clicks per object (0 for box and mask).
    """

    name: str
    kind: Literal["clicks", "box", "mask"]
    num_clicks: int = 0


PROTOCOLS: dict[str, Protocol] = {
    "1click": Protocol("1click", "clicks", 1),
    "3click": Protocol("3click", "clicks", 3),
    "5click": Protocol("5click", "clicks", 5),
    "box": Protocol("box", "box"),
    "mask": Protocol("mask", "mask"),
}


def parse_protocol(name: str | Protocol) -> Protocol:
    """The :class:`Protocol` of a name; raises ``ValueError`` naming the known ones."""
    if isinstance(name, Protocol):
        return name
    if name not in PROTOCOLS:
        raise ValueError(f"unknown prompt protocol {name!r}; choose one of {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


def _as_mask(mask: np.ndarray, what: str) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"{what} must be a 2D (H, W) mask, got shape {mask.shape}")
    return mask.astype(bool, copy=False)


def mask_centre(mask: np.ndarray) -> tuple[int, int]:
    """The pixel of ``mask`` farthest from its boundary (image border included), as ``(x, y)``.

    Args:
        mask: bool (H, W), not empty.

    Raises:
        ValueError: the mask is empty.
    """
    mask = _as_mask(mask, "mask")
    if not mask.any():
        raise ValueError("cannot place a click on an empty mask")
    rows, cols = np.nonzero(mask)
    top, left = rows.min(), cols.min()
    crop = mask[top : rows.max() + 1, left : cols.max() + 1]
    # Padding with background makes the image border (and the crop border) count as boundary.
    distance = ndimage.distance_transform_edt(np.pad(crop, 1))[1:-1, 1:-1]
    # The maximum is often a plateau or ridge (a rectangle's middle line): take its middle.
    ys, xs = np.nonzero(distance == distance.max())
    spread = (ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2
    best = int(np.argmin(spread))
    return int(left + xs[best]), int(top + ys[best])


def first_click(gt: np.ndarray) -> Click:
    """The first, positive click at the centre of the ground-truth mask."""
    x, y = mask_centre(gt)
    return Click(x, y, True)


def next_click(pred: np.ndarray, gt: np.ndarray) -> Click | None:
    """The click at the centre of the largest error region, or ``None`` if there is no error.

    Args:
        pred: bool (H, W) current prediction.
        gt: bool (H, W) ground truth.

    Returns:
        A positive click in a missed region or a negative one in a false-positive region.
    """
    pred = _as_mask(pred, "prediction")
    gt = _as_mask(gt, "ground truth")
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in size")
    best: tuple[tuple[int, int], np.ndarray, bool] | None = None
    for error, positive in ((gt & ~pred, True), (pred & ~gt, False)):
        labels, count = ndimage.label(error, structure=_EIGHT_CONNECTED)
        if count == 0:
            continue
        sizes = np.bincount(labels.ravel())[1:]
        largest = int(np.argmax(sizes)) + 1  # argmax keeps the first in row-major label order
        # Larger area wins; on equal area a false negative (positive) wins.
        key = (int(sizes[largest - 1]), int(positive))
        if best is None or key > best[0]:
            best = (key, labels == largest, positive)
    if best is None:
        return None
    x, y = mask_centre(best[1])
    return Click(x, y, best[2])


def box_from_mask(gt: np.ndarray) -> tuple[int, int, int, int]:
    """Tight box ``(x0, y0, x1, y1)`` of a non-empty mask, inclusive pixel indices."""
    gt = _as_mask(gt, "ground truth")
    if not gt.any():
        raise ValueError("cannot take the box of an empty mask")
    rows, cols = np.nonzero(gt)
    return int(cols.min()), int(rows.min()), int(cols.max()), int(rows.max())
