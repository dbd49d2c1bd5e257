"""The in-process backend: the ``sam2s`` package running inside Slicer's Python.

Importing this module imports ``sam2s`` and ``torch``; the extension imports it only after
:mod:`SAM2SLib.dependencies` made sure both are installed.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

import numpy as np

import sam2s
from sam2s.data.sources import ArraySource, FrameSource, SourceGeometry, resolve_window, window_to_rgb
from sam2s.predictor.video import Session
from SAM2SLib.backend import (
    FrameStack,
    InferenceBackend,
    ModelSettings,
    ProgressCallback,
    checkDirection,
    propagationLength,
)
from SAM2SLib.prompts import FramePrediction, SegmentPrompts

__all__ = ["FrameListSource", "LocalBackend", "createPredictor", "framesToSource"]


def createPredictor(settings: ModelSettings) -> sam2s.VideoPredictor:
    """Build the model and its video predictor.

    This is the one place that decides how a model is made, so that the MONAI bundle's
    inference config can take over here later without touching the rest of the extension.
    """
    model = sam2s.build_model(settings.modelName, checkpoint=settings.checkpoint, device=settings.device)
    return sam2s.VideoPredictor(model)


class FrameListSource(FrameSource):
    """A ``sam2s`` frame source over a list of per-frame arrays (video frames held by Slicer).

    Grey frames go through the intensity window on a copy; RGB frames are copied as they are.
    """

    def __init__(self, frames: Sequence[np.ndarray], window=None) -> None:
        self.frames = frames
        first = np.asarray(frames[0])
        self.isGrey = first.ndim == 2
        self.window = None
        if self.isGrey:

            def sample() -> np.ndarray:  # a percentile window needs intensities from across the video
                every = max(1, len(frames) // 16)
                return np.concatenate([np.asarray(f).reshape(-1)[::97] for f in list(frames)[::every]])

            self.window = resolve_window(window, first.dtype, sample)
        elif first.dtype != np.uint8:
            raise ValueError(f"RGB frames must be uint8, got {first.dtype}")
        self.num_frames = len(frames)
        self.height, self.width = (int(v) for v in first.shape[:2])
        self.geometry = SourceGeometry(
            kind="array", height=self.height, width=self.width, num_frames=self.num_frames
        )

    def read(self, index: int) -> np.ndarray:
        frame = np.asarray(self.frames[self._checked_index(index)])
        if self.isGrey:
            return window_to_rgb(frame, self.window)
        return np.array(frame, dtype=np.uint8, copy=True)


def framesToSource(frames: FrameStack) -> FrameSource:
    """The ``sam2s`` source that reads a :class:`FrameStack` (windowing copies, never the data)."""
    if isinstance(frames.frames, np.ndarray):
        return ArraySource(frames.frames, window=frames.window if frames.frames.ndim == 3 else None)
    return FrameListSource(frames.frames, window=frames.window)


class LocalBackend(InferenceBackend):
    """Runs :class:`sam2s.VideoPredictor` in this process.

    Args:
        settings: model name, checkpoint and device; the predictor is built on first use.
        predictor: an already built predictor (tests, or to share one model).
    """

    def __init__(
        self, settings: ModelSettings | None = None, predictor: sam2s.VideoPredictor | None = None
    ) -> None:
        self.settings = settings or ModelSettings()
        self._predictor = predictor
        self._lock = threading.Lock()
        self._previewSession: tuple[FrameStack, Session] | None = None

    @property
    def predictor(self) -> sam2s.VideoPredictor:
        with self._lock:  # the first use may come from the worker thread and the UI at once
            if self._predictor is None:
                self._predictor = createPredictor(self.settings)
            return self._predictor

    @property
    def hasCategories(self) -> bool:
        return bool(getattr(self.predictor.model, "has_class_bank", False))

    def propagate(
        self,
        frames: FrameStack,
        prompts: Sequence[SegmentPrompts],
        direction: str = "both",
        progress: ProgressCallback | None = None,
    ) -> Iterator[FramePrediction]:
        checkDirection(direction)
        session = Session(self.predictor, framesToSource(frames))
        try:
            objectIds, _ = self._addPrompts(session, prompts)
            prompted = sorted({frame for p in prompts for frame in p.promptedFrames()})
            total = propagationLength(frames.numFrames, prompted, direction)
            for done, output in enumerate(session.propagate(direction=direction), start=1):
                prediction = self._prediction(output, objectIds)
                if progress is not None:
                    progress(done, total)
                yield prediction
        finally:
            session.close()

    def predictFrame(
        self, frames: FrameStack, frameIndex: int, prompts: Sequence[SegmentPrompts]
    ) -> FramePrediction:
        # One session per frame stack keeps the image features of the clicked frame between clicks
        # (the stack itself is the key and is kept alive, so a new stack never matches an old one).
        if self._previewSession is None or self._previewSession[0] is not frames:
            if self._previewSession is not None:
                self._previewSession[1].close()
            self._previewSession = (frames, Session(self.predictor, framesToSource(frames)))
        session = self._previewSession[1]
        for objectId in list(session.obj_ids):
            session.remove_object(objectId)
        framePrompts = [
            SegmentPrompts(p.segmentId, {frameIndex: p.frames[frameIndex]})
            for p in prompts
            if frameIndex in p.frames and not p.frames[frameIndex].isEmpty
        ]
        if not framePrompts:
            raise ValueError(f"no prompt on frame {frameIndex}: click, drag a box or draw there first")
        objectIds, lastResult = self._addPrompts(session, framePrompts)
        return self._prediction(lastResult, objectIds)  # every object's output on this frame

    def close(self) -> None:
        if self._previewSession is not None:
            self._previewSession[1].close()
        self._previewSession = None
        self._predictor = None

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _addPrompts(session: Session, prompts: Sequence[SegmentPrompts]):
        """Give every segment an object id (1, 2, ...) and add its prompts.

        Returns ``({objectId: segmentId}, the result of the last prompt added)``.
        """
        objectIds, lastResult = {}, None
        for objectId, segmentPrompts in enumerate(prompts, start=1):
            objectIds[objectId] = segmentPrompts.segmentId
            for frameIndex in segmentPrompts.promptedFrames():
                prompt = segmentPrompts.frames[frameIndex]
                if prompt.mask is not None:
                    lastResult = session.add_prompt(frame_index=frameIndex, obj_id=objectId, mask=prompt.mask)
                if prompt.hasClicksOrBox:
                    points, labels = prompt.pointArrays()
                    lastResult = session.add_prompt(
                        frame_index=frameIndex,
                        obj_id=objectId,
                        points=points if len(points) else None,
                        labels=labels if len(points) else None,
                        box=prompt.box,
                    )
        return objectIds, lastResult

    @staticmethod
    def _prediction(output, objectIds: dict[int, str]) -> FramePrediction:
        masks = output.masks.cpu().numpy()
        byId = {objectIds[objectId]: masks[row] for row, objectId in enumerate(output.obj_ids)}
        scores = None
        if output.class_scores is not None:
            scores = {objectIds[objectId]: dict(s) for objectId, s in output.class_scores.items()}
        return FramePrediction(int(output.frame_index), byId, scores)
