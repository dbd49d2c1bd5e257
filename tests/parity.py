"""Shared pieces of the parity tests: weights, clips and decoder recorders for both sides."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import sam2s

TOLERANCE = 1e-3
# No decision (object present, best of three masks, stable single mask) may be this close to
# flipping, or a platform's rounding could change the outcome and the comparison would be moot.
DECISION_MARGIN = 1e-2
STABILITY_THRESHOLD = 0.98


def parity_model(name: str, seed: int = 0) -> sam2s.modeling.sam2.SAM2Model:
    """A randomly initialised model whose objects are confidently present.

    Random weights put the object-presence logit near 0 on every frame, which would make every
    tracked mask "absent" (-1024) on both sides and the comparison trivial; scaling the score
    head's last layer and shifting its bias keeps objects present with a clear margin.
    """
    torch.manual_seed(seed)
    model = sam2s.build_model(name, **{"tracker.fill_hole_area": 0})
    head = model.sam_mask_decoder.pred_obj_score_head.layers[-1]
    with torch.no_grad():
        head.weight.mul_(40.0)
        head.bias.fill_(6.0)
    return model


def synthetic_clip(num_frames: int, height: int = 120, width: int = 160, seed: int = 0) -> list[np.ndarray]:
    """Two moving shapes on a noisy background, ``(H, W, 3)`` uint8 per frame."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    background = (rng.random((height, width, 3)) * 60 + 80).astype(np.uint8)
    frames = []
    for t in range(num_frames):
        frame = background.copy()
        frame[(xx - (40 + 2 * t)) ** 2 + (yy - height // 2) ** 2 < 15**2] = (220, 40, 40)
        frame[(np.abs(xx - (width - 50 + t)) < 12) & (np.abs(yy - height // 4) < 10)] = (40, 200, 60)
        frames.append(frame)
    return frames


def write_jpeg_folder(frames: list[np.ndarray], folder: Path) -> list[np.ndarray]:
    """Write frames as JPEGs (the official predictor reads folders only as .jpg) and return
    them decoded, so both sides see the very same RGB values."""
    folder.mkdir(parents=True, exist_ok=True)
    for index, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"{index:05d}.jpg", quality=95)
    return [np.asarray(Image.open(folder / f"{i:05d}.jpg").convert("RGB")) for i in range(len(frames))]


@dataclass
class DecoderCall:
    iou: torch.Tensor  # (B, M)
    object_score: torch.Tensor  # (B, 1)


@dataclass
class DecoderRecorder:
    """Records every mask-decoder call (IoU predictions, object scores) in call order."""

    calls: list[DecoderCall] = field(default_factory=list)
    stability: list[torch.Tensor] = field(default_factory=list)

    def attach_project(self, decoder: torch.nn.Module) -> None:
        forward = decoder.forward
        stability = decoder.stability_scores

        def recorded_forward(*args, **kwargs):
            out = forward(*args, **kwargs)
            self.calls.append(DecoderCall(out.iou_pred.detach().clone(), out.object_score_logits.detach().clone()))
            return out

        def recorded_stability(*args, **kwargs):
            scores = stability(*args, **kwargs)
            self.stability.append(scores.detach().clone())
            return scores

        decoder.forward = recorded_forward
        decoder.stability_scores = recorded_stability

    def attach_official(self, decoder: torch.nn.Module) -> None:
        forward = decoder.forward

        def recorded_forward(*args, **kwargs):
            masks, ious, tokens, scores = forward(*args, **kwargs)
            self.calls.append(DecoderCall(ious.detach().clone(), scores.detach().clone()))
            return masks, ious, tokens, scores

        decoder.forward = recorded_forward

    def assert_margins(self) -> None:
        """No decision in the recorded calls is within :data:`DECISION_MARGIN` of flipping."""
        assert self.calls, "no decoder call was recorded"
        for index, call in enumerate(self.calls):
            assert call.object_score.abs().min() > DECISION_MARGIN, f"call {index}: object score near 0"
            if call.iou.shape[1] > 1:
                top2 = call.iou.topk(2, dim=1).values
                gap = (top2[:, 0] - top2[:, 1]).min()
                assert gap > DECISION_MARGIN, f"call {index}: two candidate masks have IoU within {gap:.2e}"
        for index, scores in enumerate(self.stability):
            closest = (scores - STABILITY_THRESHOLD).abs().min()
            assert closest > DECISION_MARGIN, f"stability test {index} within {closest:.2e} of its threshold"


def assert_same_calls(ours: DecoderRecorder, official: DecoderRecorder) -> None:
    """Both sides made the same decoder calls with the same IoU predictions and object scores."""
    assert len(ours.calls) == len(official.calls), (len(ours.calls), len(official.calls))
    for index, (a, b) in enumerate(zip(ours.calls, official.calls)):
        assert a.iou.shape == b.iou.shape, f"call {index}: {a.iou.shape} vs {b.iou.shape}"
        assert (a.iou - b.iou).abs().max() <= TOLERANCE, f"call {index}: IoU predictions differ"
        assert (a.object_score - b.object_score).abs().max() <= TOLERANCE, f"call {index}: object scores differ"


class ListSource:
    """The smallest frame source: decoded frames held in a list."""

    def __init__(self, frames: list[np.ndarray]) -> None:
        self.frames = frames
        self.num_frames = len(frames)
        self.height, self.width = frames[0].shape[:2]

    def read(self, index: int) -> np.ndarray:
        if not 0 <= index < self.num_frames:
            raise IndexError(index)
        return self.frames[index]
