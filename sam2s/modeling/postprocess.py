"""Mask post-processing that runs on any device without leaving it.

SAM 2 fills small background holes in its low-resolution mask logits. The official code does
this with a CUDA-only connected-components kernel and silently skips it elsewhere; here it is
written with tensor ops (max-pooling label propagation), so CPU, CUDA and MPS give the same
masks and the per-frame loop needs no host synchronisation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["fill_small_holes", "small_component_mask"]

HOLE_FILL_VALUE = 0.1


def small_component_mask(region: torch.Tensor, max_area: int) -> torch.Tensor:
    """Mark the pixels of 8-connected components of ``region`` whose area is at most ``max_area``.

    Every region pixel starts with its own label; labels spread to 8-neighbours by a min-pool for
    ``max_area`` rounds, enough for any component of ``max_area`` pixels to agree on one label.
    A label set is a whole component exactly when none of its pixels touches a region pixel with
    another label (labels never cross component borders), so large components that have not
    converged are never mistaken for small ones.

    Args:
        region: ``(N, 1, H, W)`` bool.
        max_area: largest component area (pixels) to mark.

    Returns:
        ``(N, 1, H, W)`` bool, True on pixels of small components.
    """
    n, _, h, w = region.shape
    if max_area <= 0 or region.numel() == 0:
        return torch.zeros_like(region)
    big = float(h * w + 1)
    index = torch.arange(1, h * w + 1, device=region.device, dtype=torch.float32).view(1, 1, h, w)
    labels = torch.where(region, index.expand(n, 1, h, w), torch.full_like(index, big))
    for _ in range(max_area):
        spread = -F.max_pool2d(-labels, kernel_size=3, stride=1, padding=1)
        labels = torch.where(region, spread, labels)
    neighbour_min = -F.max_pool2d(-labels, kernel_size=3, stride=1, padding=1)
    neighbour_max = F.max_pool2d(torch.where(region, labels, torch.zeros_like(labels)), 3, 1, 1)
    unsettled = region & ((neighbour_min != labels) | (neighbour_max != labels))

    flat_labels = torch.where(region, labels, torch.zeros_like(labels)).long().view(n, -1)
    counts = torch.zeros(n, h * w + 2, device=region.device, dtype=torch.float32)
    counts.scatter_add_(1, flat_labels, region.view(n, -1).float())
    open_labels = torch.zeros(n, h * w + 2, device=region.device, dtype=torch.float32)
    open_labels.scatter_add_(1, flat_labels, unsettled.view(n, -1).float())
    area = counts.gather(1, flat_labels).view_as(region)
    is_open = open_labels.gather(1, flat_labels).view_as(region) > 0
    return region & (area <= max_area) & ~is_open


def fill_small_holes(mask_logits: torch.Tensor, max_area: int) -> torch.Tensor:
    """Turn background holes of at most ``max_area`` pixels into foreground (logit 0.1).

    Args:
        mask_logits: ``(N, 1, H, W)`` float mask logits.
        max_area: hole size limit in pixels; 0 returns the input unchanged.

    Returns:
        ``(N, 1, H, W)`` logits with small holes filled.
    """
    if max_area <= 0:
        return mask_logits
    holes = small_component_mask(mask_logits <= 0, max_area)
    return torch.where(holes, torch.full_like(mask_logits, HOLE_FILL_VALUE), mask_logits)
