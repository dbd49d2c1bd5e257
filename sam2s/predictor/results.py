"""What the predictors return."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["FrameResult"]


@dataclass
class FrameResult:
    """Every object's answer on one frame, at source resolution.

    Tensors stay on the model's device so the per-frame loop never waits for the host; call
    ``.cpu().numpy()`` where numpy is needed.

    Attributes:
        frame_index: the frame (for a volume: the slice index along the walked axis).
        obj_ids: the session's objects, in the order of the first axis below.
        logits: ``(O, H, W)`` float32 mask logits before thresholding.
        object_scores: ``(O,)`` float32 object-presence logits (> 0: present).
        iou_scores: ``(O,)`` float32 predicted IoU of each chosen mask.
        class_probabilities: ``{obj_id: (K,) tensor}`` category probabilities (on the device) of
            the objects with an output on this frame, when the model has a semantic head and a
            class bank; else ``None``.
        class_names: the K category names, in the order of ``class_probabilities``.
    """

    frame_index: int
    obj_ids: list[int]
    logits: torch.Tensor
    object_scores: torch.Tensor
    iou_scores: torch.Tensor
    class_probabilities: dict[int, torch.Tensor] | None = None
    class_names: tuple[str, ...] = ()

    @property
    def class_scores(self) -> dict[int, dict[str, float]] | None:
        """``{obj_id: {category: probability}}`` (read from the device on access), or ``None``."""
        if self.class_probabilities is None:
            return None
        return {
            obj_id: dict(zip(self.class_names, probabilities.tolist()))
            for obj_id, probabilities in self.class_probabilities.items()
        }

    @property
    def masks(self) -> torch.Tensor:
        """``(O, H, W)`` bool masks (logits > 0)."""
        return self.logits > 0

    def mask_of(self, obj_id: int) -> torch.Tensor:
        """``(H, W)`` bool mask of one object."""
        if obj_id not in self.obj_ids:
            raise KeyError(f"object id {obj_id} is not in this result; objects are {self.obj_ids}")
        return self.masks[self.obj_ids.index(obj_id)]
