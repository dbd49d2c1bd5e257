"""What the Slicer side hands to an inference backend, and what it gets back.

Nothing here knows about MRML, Qt or torch: prompts and predictions are plain numpy, in the
pixel coordinates of a *frame* (one slice of a volume along the walked axis, or one video
frame). A point ``(x, y)`` is ``(column, row)`` of the ``(H, W)`` frame array.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["DIRECTIONS", "Click", "FramePrediction", "FramePrompt", "SegmentPrompts"]

DIRECTIONS = ("forward", "backward", "both")


@dataclass(frozen=True)
class Click:
    """One click on a frame: ``(x, y)`` = (column, row) in frame pixels; ``positive`` or negative."""

    x: float
    y: float
    positive: bool = True


@dataclass
class FramePrompt:
    """Everything the user gave for one segment on one frame.

    Attributes:
        mask: ``(H, W)`` bool, the segment's content drawn on this frame, or ``None``.
        clicks: positive / negative clicks.
        box: ``(x0, y0, x1, y1)`` in frame pixels, or ``None``.

    A mask together with clicks means "refine the drawn mask with these clicks".
    """

    mask: np.ndarray | None = None
    clicks: list[Click] = field(default_factory=list)
    box: tuple[float, float, float, float] | None = None

    @property
    def isEmpty(self) -> bool:
        return self.mask is None and not self.clicks and self.box is None

    @property
    def hasClicksOrBox(self) -> bool:
        return bool(self.clicks) or self.box is not None

    def pointArrays(self) -> tuple[np.ndarray, np.ndarray]:
        """``(N, 2)`` float32 points and ``(N,)`` int32 labels (1 positive, 0 negative)."""
        points = np.array([[c.x, c.y] for c in self.clicks], dtype=np.float32).reshape(-1, 2)
        labels = np.array([1 if c.positive else 0 for c in self.clicks], dtype=np.int32)
        return points, labels


@dataclass
class SegmentPrompts:
    """The prompts of one segment (one tracked object), frame by frame."""

    segmentId: str
    frames: dict[int, FramePrompt] = field(default_factory=dict)

    def frame(self, frameIndex: int) -> FramePrompt:
        """This segment's prompt on a frame, created empty when missing."""
        return self.frames.setdefault(int(frameIndex), FramePrompt())

    def promptedFrames(self) -> list[int]:
        return sorted(index for index, prompt in self.frames.items() if not prompt.isEmpty)

    def maskFrames(self) -> set[int]:
        """Frames where the user's drawn content is the prompt (never overwritten by propagation)."""
        return {index for index, prompt in self.frames.items() if prompt.mask is not None}


@dataclass
class FramePrediction:
    """A backend's answer on one frame.

    Attributes:
        frameIndex: the frame.
        masks: ``{segmentId: (H, W) bool}`` for every segment that was propagated.
        classScores: ``{segmentId: {category: probability}}`` when the model predicts instrument
            categories (SAM2S with TSL), else ``None``.
    """

    frameIndex: int
    masks: dict[str, np.ndarray]
    classScores: dict[str, dict[str, float]] | None = None
