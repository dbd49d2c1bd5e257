"""The small interface between the Slicer extension and whatever runs the model.

:class:`InferenceBackend` is all the logic and the effect ever call. The in-process backend
(:class:`~SAM2SLib.localbackend.LocalBackend`, the ``sam2s`` package inside Slicer's Python) and
the remote one (:class:`~SAM2SLib.remotebackend.RemoteBackend`, a MONAI Label server running the
``sam2s`` infer task, chosen by :attr:`ModelSettings.serverUrl`) sit behind the same two methods,
because frames, prompts and predictions are plain numpy.

Threading: :meth:`InferenceBackend.propagate` is called from a worker thread; backends must not
touch MRML or Qt. Cancelling is closing the iterator (stop iterating).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from SAM2SLib.prompts import DIRECTIONS, FramePrediction, SegmentPrompts

__all__ = [
    "DEMO_CHECKPOINT",
    "DEMO_MODEL",
    "FrameStack",
    "InferenceBackend",
    "ModelSettings",
    "ProgressCallback",
    "checkDirection",
    "createBackend",
    "propagationLength",
]

DEMO_MODEL = "sam2s_demo"
DEMO_CHECKPOINT = "demo"

ProgressCallback = Callable[[int, int], None]
"""``progress(framesDone, framesTotal)``."""


@dataclass(frozen=True)
class ModelSettings:
    """Which model to run and where.

    Attributes:
        modelName: a ``sam2s`` config name (``"sam2s_demo"``, ``"sam2s_hiera_b+"``,
            ``"sam2.1_hiera_mini"``...) or a config file path.
        checkpoint: ``"demo"`` (the shipped demo weights), a local ``.pt`` path, or ``None`` for
            random weights (tests only). Downloads are resolved to a local path beforehand by
            :func:`SAM2SLib.weights.resolveCheckpoint`.
        device: ``"auto"`` (CUDA when available), ``"cuda"`` or ``"cpu"``.
        serverUrl: a MONAI Label server with the SAM2S app (``"http://host:8000"``): the model
            runs there, and the three settings above are the server's business; ``None``: here.
    """

    modelName: str = DEMO_MODEL
    checkpoint: str | None = DEMO_CHECKPOINT
    device: str = "auto"
    serverUrl: str | None = None


@dataclass
class FrameStack:
    """The frames to segment, detached from MRML so a worker thread can read them.

    Attributes:
        frames: a ``(T, H, W)`` grey array of any real dtype, a ``(T, H, W, 3)`` uint8 RGB array,
            or a list of ``(H, W)`` / ``(H, W, 3)`` arrays of one size (video frames kept where
            Slicer holds them, without a copy).
        window: for grey frames, the intensity window the model sees: a ``sam2s`` preset name,
            ``(lower, upper)``, or ``None`` for a percentile window fitted to the data. The
            backend applies it to copies of the frames; the source data is never changed.
    """

    frames: np.ndarray | Sequence[np.ndarray]
    window: object = None

    def __post_init__(self) -> None:
        if len(self.frames) == 0:
            raise ValueError("a frame stack needs at least one frame")
        shapes = {tuple(np.shape(frame)[:2]) for frame in self._sample()}
        if len(shapes) != 1:
            raise ValueError(f"all frames must have one size, got {sorted(shapes)}")
        first = np.asarray(self.frames[0])
        if first.ndim not in (2, 3) or (first.ndim == 3 and first.shape[2] != 3):
            raise ValueError(f"frames must be (H, W) grey or (H, W, 3) RGB, got {first.shape}")

    def _sample(self) -> list[np.ndarray]:
        if isinstance(self.frames, np.ndarray):
            return [self.frames[0]]
        return list(self.frames)

    @property
    def numFrames(self) -> int:
        return len(self.frames)

    @property
    def height(self) -> int:
        return int(np.shape(self.frames[0])[0])

    @property
    def width(self) -> int:
        return int(np.shape(self.frames[0])[1])


def checkDirection(direction: str) -> str:
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    return direction


def propagationLength(numFrames: int, promptedFrames: Sequence[int], direction: str) -> int:
    """How many frames a propagation yields (for progress bars)."""
    if not promptedFrames:
        return 0
    if direction == "forward":
        return numFrames - min(promptedFrames)
    if direction == "backward":
        return max(promptedFrames) + 1
    return numFrames


class InferenceBackend(ABC):
    """Runs the model on frames with prompts. See the module docstring for the threading rules."""

    @abstractmethod
    def propagate(
        self,
        frames: FrameStack,
        prompts: Sequence[SegmentPrompts],
        direction: str = "both",
        progress: ProgressCallback | None = None,
    ) -> Iterator[FramePrediction]:
        """Track every segment from its prompted frames and yield one prediction per frame.

        ``forward`` runs from the earliest prompted frame to the last frame, ``backward`` from
        the latest prompted frame down to frame 0, ``both`` covers every frame once.
        """

    @abstractmethod
    def predictFrame(
        self, frames: FrameStack, frameIndex: int, prompts: Sequence[SegmentPrompts]
    ) -> FramePrediction:
        """The masks of one frame from that frame's prompts only (the live preview of clicks)."""

    def close(self) -> None:
        """Release the model and any cached state."""


def createBackend(settings: ModelSettings | None = None) -> InferenceBackend:
    """The backend the extension uses: a SAM2S server when ``serverUrl`` is set, else in-process
    ``sam2s`` (imported on first use)."""
    settings = settings or ModelSettings()
    if settings.serverUrl:
        from SAM2SLib.remotebackend import RemoteBackend

        return RemoteBackend(settings.serverUrl)
    from SAM2SLib.localbackend import LocalBackend

    return LocalBackend(settings)
