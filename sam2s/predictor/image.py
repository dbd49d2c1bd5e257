"""Single-image promptable segmentation (SAM 2.1's image predictor, same numbers)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from sam2s.modeling.kernels import fast_kernels
from sam2s.modeling.sam2 import FrameFeatures, PointPrompt, SAM2Model
from sam2s.transforms.model_input import ToModelInput, check_rgb_frame

__all__ = ["ImagePrediction", "ImagePredictor"]


@dataclass
class ImagePrediction:
    """Masks for one prompt set.

    Attributes:
        masks: ``(M, H, W)`` bool masks at image size (or float logits with ``return_logits``).
        iou_scores: ``(M,)`` float32 predicted IoU per mask.
        low_res_logits: ``(M, 4h, 4w)`` float32 logits, clamped to +/-32, reusable as ``mask_input``.
    """

    masks: np.ndarray
    iou_scores: np.ndarray
    low_res_logits: np.ndarray


class ImagePredictor:
    """Embed an image once, then predict masks for any number of prompt sets.

    Example:
        >>> predictor = ImagePredictor(build_model("sam2.1_hiera_t"))
        >>> predictor.set_image(rgb)                       # (H, W, 3) uint8
        >>> out = predictor.predict(points=[[120, 80]], labels=[1])
    """

    def __init__(self, model: SAM2Model) -> None:
        self.model = model.eval()
        self.to_model_input = ToModelInput(model.image_size, resample="bilinear")
        self._features: FrameFeatures | None = None
        self._embedding: torch.Tensor | None = None
        self._image_hw: tuple[int, int] | None = None

    @torch.inference_mode()
    def set_image(self, image: np.ndarray) -> None:
        """Compute the embedding of an ``(H, W, 3)`` uint8 RGB image (any size)."""
        image = check_rgb_frame(image)
        self._image_hw = (int(image.shape[0]), int(image.shape[1]))
        batch = self.to_model_input(image)[None].to(self.model.device)
        with fast_kernels():
            self._features = self.model.encode_image(batch)
            # A single image is a frame without memory: SAM 2 adds its "no memory" embedding.
            self._embedding = self.model.condition_on_memory(self._features, None)

    @torch.inference_mode()
    def predict(
        self,
        points=None,
        labels=None,
        box=None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> ImagePrediction:
        """Predict masks from clicks, a box and/or a low-res mask.

        Args:
            points: ``(N, 2)`` (x, y) pixels in the image.
            labels: ``(N,)`` 1 positive / 0 negative.
            box: ``(x0, y0, x1, y1)`` pixels.
            mask_input: ``(1, 4h, 4w)`` logits from an earlier :class:`ImagePrediction`.
            multimask_output: return three candidates (better for a single ambiguous click).
            return_logits: return logits instead of boolean masks.
        """
        if self._features is None or self._image_hw is None:
            raise RuntimeError("call set_image(...) before predict(...)")
        if (points is None) != (labels is None):
            raise ValueError("points and labels must be given together")
        device = self.model.device
        height, width = self._image_hw
        scale = torch.tensor([self.model.image_size / width, self.model.image_size / height], device=device)
        prompt = None
        if points is not None:
            label_values = np.asarray(labels, dtype=np.int32)
            if not np.isin(label_values, (0, 1)).all():
                raise ValueError(f"point labels must be 1 (positive) or 0 (negative), got {sorted(set(label_values.flat))}")
            coords = torch.as_tensor(np.asarray(points, dtype=np.float32), device=device).reshape(1, -1, 2)
            point_labels = torch.as_tensor(label_values, device=device).reshape(1, -1)
            if coords.shape[1] != point_labels.shape[1]:
                raise ValueError(f"{coords.shape[1]} points but {point_labels.shape[1]} labels")
            prompt = PointPrompt(coords * scale, point_labels)
        if box is not None:
            corners = torch.as_tensor(np.asarray(box, dtype=np.float32), device=device).reshape(1, 2, 2) * scale
            box_prompt = PointPrompt(corners, torch.tensor([[2, 3]], dtype=torch.int32, device=device))
            prompt = box_prompt if prompt is None else box_prompt.concat(prompt)
        mask_logits = None
        if mask_input is not None:
            mask_logits = torch.as_tensor(np.asarray(mask_input, dtype=np.float32), device=device)
            mask_logits = mask_logits.reshape(1, 1, *mask_logits.shape[-2:])
        with fast_kernels():
            out = self.model.run_mask_decoder(self._embedding, self._features, prompt, mask_logits, multimask_output)
        low_res = out.masks.float()
        masks = F.interpolate(low_res, size=(height, width), mode="bilinear", align_corners=False)[0]
        masks_np = masks.cpu().numpy() if return_logits else (masks > 0).cpu().numpy()
        return ImagePrediction(
            masks=masks_np,
            iou_scores=out.iou_pred[0].float().cpu().numpy(),
            low_res_logits=low_res[0].clamp(-32.0, 32.0).cpu().numpy(),
        )
