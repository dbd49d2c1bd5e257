"""SAM 2's prompt simulation for training.

A training clip is prompted on its first frame the way SAM 2 is trained:

* with probability ``prob_mask`` (0.5) the ground-truth mask itself (the model takes it as the
  frame's output, as at inference);
* else with probability ``prob_box`` (0.25 of all clips) a noisy box around the object;
* else (the remaining 0.25) one click drawn uniformly from the object.

When the first frame got clicks or a box, 1 to ``max_frames_to_correct`` (2) frames receive
corrective clicks: the first frame and, when two are drawn, one random later frame. Each
correction round draws one click per object uniformly from the current error region (a missed
pixel gives a positive click, a false-positive pixel a negative one) and decodes again with the
previous low-resolution logits as the mask prompt, ``correction_clicks`` (SAM 2: 7) rounds per
corrected frame. Corrected frames become conditioning frames for the rest of the clip (SAM 2's
``add_all_frames_to_correct_as_cond``).

A single image (a one-frame clip) never gets a mask prompt: the mask would be the answer and
leave nothing to learn, so images draw a box or clicks in the same 1:1 proportion.

Randomness comes from generators the caller seeds per clip, so a clip's prompts are a function
of its sample index (exact resume and identical multi-process runs depend on it).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np
import torch

from sam2s.modeling.sam2 import PointPrompt

__all__ = [
    "PromptKind",
    "PromptSimulationConfig",
    "box_prompt",
    "choose_prompt_kind",
    "click_from_error",
    "frames_to_correct",
]

POSITIVE, NEGATIVE, BOX_TOP_LEFT, BOX_BOTTOM_RIGHT = 1, 0, 2, 3


class PromptKind(str, enum.Enum):
    """How the first frame of a training clip is prompted."""

    MASK = "mask"
    BOX = "box"
    CLICKS = "clicks"


@dataclass
class PromptSimulationConfig:
    """SAM 2's first-frame prompt mix and its correction clicks.

    Attributes:
        prob_mask: probability of a mask prompt (SAM 2.1: 0.5).
        prob_box: probability of a box prompt (SAM 2.1: 0.25; clicks take the rest).
        max_frames_to_correct: frames that get corrective clicks, drawn from 1 to this (SAM 2.1: 2).
        correction_clicks: correction rounds on each of those frames (SAM 2.1: 7).
        box_noise: standard deviation of the box-corner noise, as a fraction of the box side.
        box_noise_bound: largest corner shift in model-input pixels.
    """

    prob_mask: float = 0.5
    prob_box: float = 0.25
    max_frames_to_correct: int = 2
    correction_clicks: int = 7
    box_noise: float = 0.1
    box_noise_bound: float = 20.0

    def __post_init__(self) -> None:
        if not (0.0 <= self.prob_mask <= 1.0 and 0.0 <= self.prob_box <= 1.0):
            raise ValueError(
                f"prob_mask and prob_box must lie in [0, 1], got {self.prob_mask}, {self.prob_box}"
            )
        if self.prob_mask + self.prob_box > 1.0 + 1e-9:
            raise ValueError(
                f"prob_mask + prob_box must be at most 1 (clicks take the rest), got {self.prob_mask + self.prob_box}"
            )
        if self.max_frames_to_correct < 0 or self.correction_clicks < 0:
            raise ValueError("max_frames_to_correct and correction_clicks must be >= 0")


def choose_prompt_kind(
    rng: np.random.Generator, config: PromptSimulationConfig, num_frames: int
) -> PromptKind:
    """Draw the first-frame prompt kind of a clip of ``num_frames`` frames (see the module docstring)."""
    draw = rng.random()
    if num_frames == 1:
        point_share = 1.0 - config.prob_mask
        prob_box = config.prob_box / point_share if point_share > 0 else 0.5
        return PromptKind.BOX if draw < prob_box else PromptKind.CLICKS
    if draw < config.prob_mask:
        return PromptKind.MASK
    if draw < config.prob_mask + config.prob_box:
        return PromptKind.BOX
    return PromptKind.CLICKS


def frames_to_correct(
    rng: np.random.Generator, config: PromptSimulationConfig, num_frames: int, kind: PromptKind
) -> list[int]:
    """Clip positions that receive corrective clicks, ascending.

    Mask-prompted clips get none (as in SAM 2). Otherwise 1 to ``max_frames_to_correct`` frames:
    always the first, plus random distinct later ones.
    """
    if kind is PromptKind.MASK or config.max_frames_to_correct < 1 or config.correction_clicks < 1:
        return []
    count = min(int(rng.integers(1, config.max_frames_to_correct + 1)), num_frames)
    later = rng.choice(np.arange(1, num_frames), size=count - 1, replace=False) if count > 1 else []
    return [0] + sorted(int(t) for t in later)


def click_from_error(
    predicted: torch.Tensor, target: torch.Tensor, generator: torch.Generator
) -> PointPrompt:
    """One click per object, drawn uniformly from its error region.

    A missed pixel (target but not predicted) gives a positive click, a false-positive pixel a
    negative one. An object predicted perfectly gets a click drawn from its target (positive),
    or from the background (negative) when its target is empty. With an all-false prediction
    this is SAM 2's first click: a uniform positive click inside the object.

    Args:
        predicted: ``(B, H, W)`` bool current masks.
        target: ``(B, H, W)`` bool ground truth.
        generator: CPU generator that draws the pixels.

    Returns:
        ``(B, 1, 2)`` (x, y) coordinates in pixels of the masks' grid and ``(B, 1)`` labels.
    """
    if predicted.shape != target.shape or predicted.ndim != 3:
        raise ValueError(
            f"predicted and target must both be (B, H, W), got {tuple(predicted.shape)} and {tuple(target.shape)}"
        )
    predicted, target = predicted.bool(), target.bool()
    error = (predicted ^ target).flatten(1)
    fallback = torch.where(target.flatten(1).any(-1, keepdim=True), target.flatten(1), ~target.flatten(1))
    candidates = torch.where(error.any(-1, keepdim=True), error, fallback).float().cpu()
    # One uniform draw per row among its candidate pixels.
    flat_index = torch.multinomial(candidates, 1, generator=generator).to(target.device)[:, 0]
    width = target.shape[-1]
    ys, xs = flat_index // width, flat_index % width
    labels = target.flatten(1).gather(1, flat_index[:, None]).to(torch.int32)  # 1 = in the object
    coords = torch.stack([xs, ys], -1).float()[:, None, :]
    return PointPrompt(coords, labels)


def box_prompt(
    target: torch.Tensor, config: PromptSimulationConfig, generator: torch.Generator
) -> PointPrompt:
    """A noisy bounding box per object, as SAM 2's box simulation.

    Each corner moves by Gaussian noise of ``box_noise`` × the box side (at most
    ``box_noise_bound`` pixels) and is clamped to the image; an empty target gets the whole image.

    Args:
        target: ``(B, H, W)`` bool ground truth.
        config: noise settings.
        generator: CPU generator for the noise.

    Returns:
        ``(B, 2, 2)`` corners (x0, y0), (x1, y1) with labels 2 and 3.
    """
    if target.ndim != 3:
        raise ValueError(f"target must be (B, H, W), got {tuple(target.shape)}")
    batch, height, width = target.shape
    boxes = torch.zeros(batch, 4)
    for row, mask in enumerate(target.bool().cpu()):
        ys, xs = torch.nonzero(mask, as_tuple=True)
        if len(xs) == 0:
            boxes[row] = torch.tensor([0.0, 0.0, width - 1.0, height - 1.0])
        else:
            boxes[row] = torch.stack([xs.min(), ys.min(), xs.max(), ys.max()]).float()
    sides = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)
    noise = torch.randn(batch, 4, generator=generator) * config.box_noise * sides
    noise = noise.clamp(-config.box_noise_bound, config.box_noise_bound)
    noisy = boxes + noise
    limits = torch.tensor([width - 1.0, height - 1.0, width - 1.0, height - 1.0])
    noisy = torch.minimum(noisy.clamp(min=0.0), limits)
    # Noise may swap corners; keep (x0, y0) the top-left one.
    top_left = torch.minimum(noisy[:, :2], noisy[:, 2:])
    bottom_right = torch.maximum(noisy[:, :2], noisy[:, 2:])
    coords = torch.stack([top_left, bottom_right], 1).to(target.device)
    labels = (
        torch.tensor([BOX_TOP_LEFT, BOX_BOTTOM_RIGHT], dtype=torch.int32).expand(batch, 2).to(target.device)
    )
    return PointPrompt(coords, labels.contiguous())
