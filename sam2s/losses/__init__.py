"""Training losses: SAM 2's segmentation terms, ARL soft-label focal loss, TSL and their total."""

from sam2s.losses.arl import gaussian_kernel2d, gaussian_soften, soft_sigmoid_focal_loss
from sam2s.losses.segmentation import (
    SelectedMaskLosses,
    dice_loss,
    iou_prediction_loss,
    object_presence,
    object_score_loss,
    select_lowest_loss_mask,
    sigmoid_focal_loss,
)
from sam2s.losses.total import LossBreakdown, SAM2SLoss, SAM2SLossConfig
from sam2s.losses.tsl import NO_CATEGORY, tsl_loss

__all__ = [
    "NO_CATEGORY",
    "LossBreakdown",
    "SAM2SLoss",
    "SAM2SLossConfig",
    "SelectedMaskLosses",
    "dice_loss",
    "gaussian_kernel2d",
    "gaussian_soften",
    "iou_prediction_loss",
    "object_presence",
    "object_score_loss",
    "select_lowest_loss_mask",
    "sigmoid_focal_loss",
    "soft_sigmoid_focal_loss",
    "tsl_loss",
]
