"""SAM 2's segmentation loss terms: focal, dice, IoU prediction, object score; the multi-mask rule.

Every per-mask function takes N objects with M candidate masks each and returns an ``(N, M)``
tensor already divided by ``num_objects`` (SAM 2's training code normalises every term by the
number of objects in the batch), so summing over objects gives a per-object average.

The multi-mask rule: when the decoder outputs several candidate masks for one prompt, only the
candidate with the lowest weighted focal + dice loss receives the focal and dice gradients,
while the IoU head is supervised on every candidate (SAM 2.1's ``supervise_all_iou``). The mask
terms and the IoU term count only for objects present in the frame; the object-score term
teaches the model whether the object is present.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from sam2s.losses.arl import _normaliser, soft_sigmoid_focal_loss

__all__ = [
    "SelectedMaskLosses",
    "dice_loss",
    "iou_prediction_loss",
    "object_presence",
    "object_score_loss",
    "select_lowest_loss_mask",
    "sigmoid_focal_loss",
]


def sigmoid_focal_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    alpha: float = 0.25,
    gamma: float = 2.0,
    num_objects: float | None = None,
) -> torch.Tensor:
    """SAM 2's sigmoid focal loss with hard (0/1) targets.

    Args:
        logits: ``(N, M, H, W)`` mask logits.
        targets: ``(N, M, H, W)`` or ``(N, 1, H, W)`` binary targets (bool or 0/1 float).
        alpha: weight of the positive class; negative to turn the weighting off.
        gamma: focusing exponent.
        num_objects: normaliser; defaults to N.

    Returns:
        ``(N, M)`` per-mask losses (pixel mean / ``num_objects``).
    """
    return soft_sigmoid_focal_loss(logits, targets.to(logits.dtype), alpha, gamma, num_objects)


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, num_objects: float | None = None) -> torch.Tensor:
    """Dice loss ``1 - (2*sum(p*t) + 1) / (sum(p) + sum(t) + 1)`` with ``p = sigmoid(logits)``.

    Args:
        logits: ``(N, M, H, W)`` mask logits.
        targets: ``(N, M, H, W)`` or ``(N, 1, H, W)`` targets in [0, 1].
        num_objects: normaliser; defaults to N.

    Returns:
        ``(N, M)`` per-mask losses divided by ``num_objects``.
    """
    _check_masks(logits)
    prob = torch.sigmoid(logits).flatten(2)
    target = targets.to(logits.dtype).expand_as(logits).flatten(2)
    numerator = 2 * (prob * target).sum(-1)
    denominator = prob.sum(-1) + target.sum(-1)
    # The +1 smoothing keeps the loss defined (and 0) when both masks are empty.
    loss = 1 - (numerator + 1) / (denominator + 1)
    return loss / _normaliser(num_objects, logits.shape[0])


def iou_prediction_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    predicted_iou: torch.Tensor,
    num_objects: float | None = None,
    kind: Literal["l1", "mse"] = "l1",
) -> torch.Tensor:
    """Distance between the IoU head's prediction and the actual IoU of each thresholded mask.

    Args:
        logits: ``(N, M, H, W)`` mask logits; a pixel is foreground where its logit is > 0.
        targets: ``(N, M, H, W)`` or ``(N, 1, H, W)`` targets; foreground where > 0.
        predicted_iou: ``(N, M)`` output of the IoU head.
        num_objects: normaliser; defaults to N.
        kind: ``"l1"`` (SAM 2.1 training configs) or ``"mse"``.

    Returns:
        ``(N, M)`` per-mask losses divided by ``num_objects``. The actual IoU carries no gradient.
    """
    _check_masks(logits)
    if predicted_iou.shape != logits.shape[:2]:
        raise ValueError(
            f"predicted_iou must have shape (N, M) = {tuple(logits.shape[:2])}, got {tuple(predicted_iou.shape)}"
        )
    predicted_mask = logits.flatten(2) > 0
    target_mask = (targets > 0).expand_as(logits).flatten(2)
    intersection = (predicted_mask & target_mask).sum(-1).to(predicted_iou.dtype)
    union = (predicted_mask | target_mask).sum(-1).to(predicted_iou.dtype)
    actual_iou = intersection / union.clamp(min=1.0)
    if kind == "l1":
        loss = F.l1_loss(predicted_iou, actual_iou, reduction="none")
    elif kind == "mse":
        loss = F.mse_loss(predicted_iou, actual_iou, reduction="none")
    else:
        raise ValueError(f"unknown IoU loss kind {kind!r}; expected 'l1' or 'mse'")
    return loss / _normaliser(num_objects, logits.shape[0])


def object_presence(targets: torch.Tensor) -> torch.Tensor:
    """Whether each object is visible in its target mask.

    Args:
        targets: ``(N, 1, H, W)`` (or ``(N, H, W)``) target masks.

    Returns:
        ``(N, 1)`` float tensor: 1 where the mask has any foreground pixel, else 0.
    """
    return (targets > 0).flatten(1).any(dim=-1, keepdim=True).float()


def object_score_loss(
    object_score_logits: torch.Tensor, present: torch.Tensor, num_objects: float | None = None
) -> torch.Tensor:
    """Binary cross-entropy of the object-score (occlusion) head.

    SAM 2.1 trains this head with its focal loss at gamma 0 and no alpha weighting, which is
    plain binary cross-entropy.

    Args:
        object_score_logits: ``(N, 1)`` object-presence logits.
        present: ``(N, 1)`` 0/1 targets, see :func:`object_presence`.
        num_objects: normaliser; defaults to N.

    Returns:
        Scalar: summed cross-entropy divided by ``num_objects``.
    """
    if object_score_logits.shape != present.shape:
        raise ValueError(
            f"object_score_logits {tuple(object_score_logits.shape)} and present {tuple(present.shape)} "
            "must have the same (N, 1) shape"
        )
    loss = F.binary_cross_entropy_with_logits(
        object_score_logits, present.to(object_score_logits.dtype), reduction="none"
    )
    return loss.sum() / _normaliser(num_objects, object_score_logits.shape[0])


@dataclass
class SelectedMaskLosses:
    """Per-object loss terms after the multi-mask rule; each is an ``(N,)`` tensor."""

    mask: torch.Tensor
    dice: torch.Tensor
    iou: torch.Tensor
    best_index: torch.Tensor  # (N,) long: which candidate mask received the mask gradients


def select_lowest_loss_mask(
    mask_loss: torch.Tensor,
    dice: torch.Tensor,
    iou: torch.Tensor,
    mask_weight: float = 20.0,
    dice_weight: float = 1.0,
    supervise_all_iou: bool = True,
) -> SelectedMaskLosses:
    """Apply SAM 2's multi-mask rule to per-candidate losses.

    Args:
        mask_loss: ``(N, M)`` focal (or ARL) loss of every candidate mask.
        dice: ``(N, M)`` dice loss of every candidate mask.
        iou: ``(N, M)`` IoU prediction loss of every candidate mask.
        mask_weight: weight of the focal term when ranking candidates.
        dice_weight: weight of the dice term when ranking candidates.
        supervise_all_iou: average the IoU loss over all candidates (SAM 2.1); otherwise take
            the chosen candidate's.

    Returns:
        The chosen candidate's focal and dice losses and the IoU loss, each ``(N,)``. With a
        single candidate (M = 1) the losses pass through unchanged.
    """
    if not (mask_loss.shape == dice.shape == iou.shape) or mask_loss.ndim != 2:
        raise ValueError(
            "mask_loss, dice and iou must all have the same (N, M) shape, got "
            f"{tuple(mask_loss.shape)}, {tuple(dice.shape)}, {tuple(iou.shape)}"
        )
    combined = mask_weight * mask_loss + dice_weight * dice
    best = combined.detach().argmin(dim=-1)
    rows = torch.arange(mask_loss.shape[0], device=mask_loss.device)
    iou_term = iou.mean(dim=-1) if supervise_all_iou else iou[rows, best]
    return SelectedMaskLosses(
        mask=mask_loss[rows, best], dice=dice[rows, best], iou=iou_term, best_index=best
    )


def _check_masks(logits: torch.Tensor) -> None:
    if logits.ndim != 4:
        raise ValueError(f"mask logits must have shape (N, M, H, W), got {tuple(logits.shape)}")
