"""Bring RGB frames to the model's input: a square ``image_size`` image, ImageNet-normalised.

SAM 2 resizes to a square regardless of aspect ratio. Its video path resizes ``uint8`` frames
with PIL's bicubic filter; its image path resizes ``float`` tensors bilinearly with
antialiasing. Both are offered (``resample="bicubic_pil"`` / ``"bilinear"``) so results match
the official predictors exactly.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "ToModelInput", "check_rgb_frame"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def check_rgb_frame(frame: np.ndarray) -> np.ndarray:
    """Validate an ``(H, W, 3)`` uint8 RGB frame; greyscale ``(H, W)`` is replicated to 3 channels."""
    frame = np.asarray(frame)
    if frame.ndim == 2:
        frame = np.repeat(frame[..., None], 3, axis=2)
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB frame, got an array of shape {frame.shape}")
    if frame.dtype != np.uint8:
        raise TypeError(f"expected a uint8 RGB frame, got dtype {frame.dtype}; scale it to 0..255 first")
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise ValueError(f"frame has no pixels (shape {frame.shape})")
    return frame


class ToModelInput:
    """``(H, W, 3)`` uint8 RGB -> ``(3, S, S)`` float32 normalised tensor.

    Args:
        image_size: model input side S.
        resample: ``"bicubic_pil"`` (SAM 2 video path) or ``"bilinear"`` (SAM 2 image path).
    """

    def __init__(self, image_size: int, resample: str = "bicubic_pil") -> None:
        if resample not in ("bicubic_pil", "bilinear"):
            raise ValueError(f"resample must be 'bicubic_pil' or 'bilinear', got {resample!r}")
        self.image_size = image_size
        self.resample = resample
        self.mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(3, 1, 1)

    def __call__(self, frame: np.ndarray) -> torch.Tensor:
        frame = check_rgb_frame(frame)
        size = self.image_size
        if not frame.flags.writeable:  # torch.from_numpy needs a writable buffer
            frame = frame.copy()
        if self.resample == "bicubic_pil":
            if frame.shape[:2] != (size, size):
                frame = np.array(Image.fromarray(frame).resize((size, size), Image.BICUBIC))
            image = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1).float() / 255.0
        else:
            image = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1).float() / 255.0
            if frame.shape[:2] != (size, size):
                image = F.interpolate(
                    image[None], size=(size, size), mode="bilinear", align_corners=False, antialias=True
                )[0]
        return (image - self.mean) / self.std
