"""The SAM2S training loss: 20*L_arl + L_iou + L_dice + L_occ + 0.1*L_tsl.

One call scores one prediction step of one frame (N objects, M candidate masks each). Sum the
returned :class:`LossBreakdown` objects over correction steps and frames (``a + b``), as SAM 2's
training code sums its per-frame losses, then call ``.total.backward()``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

import torch
from torch import nn

from sam2s.losses.arl import gaussian_soften, soft_sigmoid_focal_loss
from sam2s.losses.segmentation import (
    dice_loss,
    iou_prediction_loss,
    object_presence,
    object_score_loss,
    select_lowest_loss_mask,
)
from sam2s.losses.tsl import tsl_loss

__all__ = ["LossBreakdown", "SAM2SLoss", "SAM2SLossConfig"]


@dataclass
class SAM2SLossConfig:
    """Weights and switches of :class:`SAM2SLoss`; defaults are the paper's.

    Attributes:
        mask_weight: weight of the mask focal term (ARL or SAM 2's hard focal).
        dice_weight: weight of the dice term.
        iou_weight: weight of the IoU-prediction term.
        occlusion_weight: weight of the object-score (occlusion) term.
        tsl_weight: weight of the TSL term.
        use_arl: focal loss against Gaussian-softened labels (SAM2S) instead of hard labels (SAM 2).
        use_tsl: add the TSL term (needs class embeddings, category targets and a text bank).
        arl_kernel_size: side of the ARL Gaussian kernel.
        arl_sigma: standard deviation of the ARL Gaussian, in pixels.
        focal_alpha: focal loss positive-class weight.
        focal_gamma: focal loss focusing exponent.
        iou_loss_kind: ``"l1"`` (SAM 2.1) or ``"mse"``.
        supervise_all_iou: IoU loss on every candidate mask (SAM 2.1) or only the chosen one.
        tsl_logit_scale: multiplier of the cosine similarity in the TSL loss.
    """

    mask_weight: float = 20.0
    dice_weight: float = 1.0
    iou_weight: float = 1.0
    occlusion_weight: float = 1.0
    tsl_weight: float = 0.1
    use_arl: bool = True
    use_tsl: bool = True
    arl_kernel_size: int = 5
    arl_sigma: float = 1.0
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    iou_loss_kind: Literal["l1", "mse"] = "l1"
    supervise_all_iou: bool = True
    tsl_logit_scale: float = 100.0


@dataclass
class LossBreakdown:
    """The weighted total and each unweighted term, all scalar tensors.

    ``mask`` is the ARL term when ARL is on, else SAM 2's hard focal term; ``tsl`` is 0 when TSL
    is off. Add two breakdowns to accumulate over steps or frames.
    """

    total: torch.Tensor
    mask: torch.Tensor
    dice: torch.Tensor
    iou: torch.Tensor
    occlusion: torch.Tensor
    tsl: torch.Tensor

    def __add__(self, other: LossBreakdown) -> LossBreakdown:
        return LossBreakdown(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    def to_floats(self) -> dict[str, float]:
        """Detached Python floats keyed by term name, for loggers."""
        return {f.name: float(getattr(self, f.name).detach()) for f in fields(self)}


class SAM2SLoss(nn.Module):
    """Total SAM2S loss for one prediction step.

    Args:
        config: weights and switches; defaults reproduce the paper.
    """

    def __init__(self, config: SAM2SLossConfig | None = None) -> None:
        super().__init__()
        self.config = config or SAM2SLossConfig()

    def forward(
        self,
        mask_logits: torch.Tensor,
        iou_predictions: torch.Tensor,
        object_score_logits: torch.Tensor,
        target_masks: torch.Tensor,
        class_embeddings: torch.Tensor | None = None,
        class_targets: torch.Tensor | None = None,
        text_bank: torch.Tensor | None = None,
        num_objects: float | None = None,
    ) -> LossBreakdown:
        """Score one prediction step.

        Args:
            mask_logits: ``(N, M, H, W)`` candidate mask logits at the target resolution.
            iou_predictions: ``(N, M)`` IoU head outputs.
            object_score_logits: ``(N, 1)`` object-presence logits.
            target_masks: ``(N, H, W)`` or ``(N, 1, H, W)`` ground-truth masks (bool or 0/1).
            class_embeddings: ``(N, D)`` outputs of the TSL head (needed when ``use_tsl``).
            class_targets: ``(N,)`` long category indices into ``text_bank``, -1 for none.
            text_bank: ``(K, D)`` text embeddings of the category names.
            num_objects: normaliser of the per-object terms (SAM 2: objects per frame in the
                batch); defaults to N.

        Returns:
            A :class:`LossBreakdown`.
        """
        cfg = self.config
        targets = self._targets_as_4d(target_masks, mask_logits)

        if cfg.use_arl:
            focal_targets = gaussian_soften(targets, cfg.arl_kernel_size, cfg.arl_sigma)
        else:
            focal_targets = targets
        per_mask_focal = soft_sigmoid_focal_loss(
            mask_logits, focal_targets, cfg.focal_alpha, cfg.focal_gamma, num_objects
        )
        per_mask_dice = dice_loss(mask_logits, targets, num_objects)
        per_mask_iou = iou_prediction_loss(
            mask_logits, targets, iou_predictions, num_objects, cfg.iou_loss_kind
        )
        selected = select_lowest_loss_mask(
            per_mask_focal,
            per_mask_dice,
            per_mask_iou,
            cfg.mask_weight,
            cfg.dice_weight,
            cfg.supervise_all_iou,
        )

        # As in SAM 2, masks of absent objects teach nothing: only the object score does.
        present = object_presence(targets)
        mask_term = (selected.mask * present[:, 0]).sum()
        dice_term = (selected.dice * present[:, 0]).sum()
        iou_term = (selected.iou * present[:, 0]).sum()
        occlusion_term = object_score_loss(object_score_logits, present, num_objects)

        if cfg.use_tsl:
            if class_embeddings is None or class_targets is None or text_bank is None:
                raise ValueError(
                    "use_tsl is on but class_embeddings, class_targets or text_bank is missing; "
                    "pass all three or set SAM2SLossConfig(use_tsl=False)"
                )
            tsl_term = tsl_loss(class_embeddings, text_bank, class_targets, cfg.tsl_logit_scale)
        else:
            tsl_term = mask_logits.new_zeros(())

        total = (
            cfg.mask_weight * mask_term
            + cfg.dice_weight * dice_term
            + cfg.iou_weight * iou_term
            + cfg.occlusion_weight * occlusion_term
            + (cfg.tsl_weight * tsl_term if cfg.use_tsl else 0.0)
        )
        return LossBreakdown(
            total=total, mask=mask_term, dice=dice_term, iou=iou_term, occlusion=occlusion_term, tsl=tsl_term
        )

    @staticmethod
    def _targets_as_4d(target_masks: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
        """``(N, H, W)`` or ``(N, 1, H, W)`` targets -> float ``(N, 1, H, W)``, checked against the logits."""
        if mask_logits.ndim != 4:
            raise ValueError(f"mask_logits must have shape (N, M, H, W), got {tuple(mask_logits.shape)}")
        targets = target_masks[:, None] if target_masks.ndim == 3 else target_masks
        if targets.ndim != 4 or targets.shape[1] != 1:
            raise ValueError(
                f"target_masks must have shape (N, H, W) or (N, 1, H, W), got {tuple(target_masks.shape)}"
            )
        if targets.shape[0] != mask_logits.shape[0] or targets.shape[-2:] != mask_logits.shape[-2:]:
            raise ValueError(
                f"target_masks {tuple(target_masks.shape)} do not match mask_logits {tuple(mask_logits.shape)}: "
                "upsample the logits to the target resolution first"
            )
        return targets.to(mask_logits.dtype)
