"""What a propagation reads from and writes to: the slices of a volume, or the frames of a video
held as a sequence.

Both targets do the same three things on the main thread:

* ``frames``/``prompts`` (built in the constructor): a :class:`~SAM2SLib.backend.FrameStack` the
  worker may read, and per-segment prompts: the segment's content on the frames where the user
  drew it (:mod:`SAM2SLib.record` tells drawn frames from earlier propagation output), plus
  optional RAS point lists;
* :meth:`apply`: write the predicted masks of the frames that changed, after saving one undo
  state, never touching other segments or frames that were not predicted;
* ``undoStep(editor)``: a callable that returns to the state saved by the last :meth:`apply`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import slicer
import vtk

from SAM2SLib.backend import FrameStack
from SAM2SLib.mrmlio import (
    SegmentEditorAccess,
    ensureReferenceGeometry,
    ensureSequenceNodeClasses,
    ijkToRasArray,
    orientedImageFromArray,
    referenceGeometry,
    segmentArray,
    voxelArray,
    worldToIjk,
)
from SAM2SLib.prompts import Click, FramePrompt, SegmentPrompts
from SAM2SLib.record import PropagationRecord

__all__ = [
    "PointInput",
    "Predictions",
    "PromptError",
    "SequenceTarget",
    "VolumeTarget",
    "frameAxes",
    "inferSliceAxis",
    "pointsFromInput",
]

Predictions = dict[int, dict[str, np.ndarray]]
"""``{frameIndex: {segmentId: (H, W) bool}}``."""

PointInput = object
"""A markups node (its defined control points, in world RAS) or an ``(N, 3)`` list of RAS points."""


class PromptError(ValueError):
    """Nothing (or something unusable) to propagate from."""


def pointsFromInput(points: PointInput | None) -> np.ndarray:
    """``(N, 3)`` world RAS points from a markups node or a plain list."""
    if points is None:
        return np.zeros((0, 3))
    if hasattr(points, "GetNumberOfControlPoints"):
        ras = []
        for index in range(points.GetNumberOfControlPoints()):
            if points.GetNthControlPointPositionStatus(index) == points.PositionDefined:
                position = [0.0, 0.0, 0.0]
                points.GetNthControlPointPositionWorld(index, position)
                ras.append(position)
        return np.array(ras, dtype=float).reshape(-1, 3)
    array = np.asarray(points, dtype=float)
    if array.size == 0:
        return np.zeros((0, 3))
    if array.ndim == 1:
        array = array.reshape(1, -1)
    if array.ndim != 2 or array.shape[1] != 3:
        raise PromptError(f"points must be a markups node or (N, 3) RAS coordinates, got shape {array.shape}")
    return array


def frameAxes(axis: int) -> tuple[int, int]:
    """The IJK axes that are the frame's columns (x) and rows (y) when walking along ``axis``."""
    remaining = [a for a in (0, 1, 2) if a != axis]
    return remaining[0], remaining[1]


def inferSliceAxis(drawn: np.ndarray) -> int:
    """The IJK axis normal to the slice(s) where a ``(K, J, I)`` mask is drawn.

    That is the axis along which the fewest slices hold content (one, for a drawing on a single
    slice); ties go to K, then J (the usual axial, then coronal, acquisition).
    """
    if not drawn.any():
        raise PromptError("the segment is empty: draw it on at least one slice (or give points and an axis)")
    counts = {}
    for axis in (2, 1, 0):
        others = tuple(a for a in range(3) if a != 2 - axis)
        counts[axis] = int(drawn.any(axis=others).sum())
    return min((2, 1, 0), key=lambda axis: counts[axis])


def _segment(segmentationNode, segmentId: str):
    segment = segmentationNode.GetSegmentation().GetSegment(segmentId)
    if segment is None:
        ids = list(segmentationNode.GetSegmentation().GetSegmentIDs())
        raise PromptError(
            f"segment {segmentId!r} is not in {segmentationNode.GetName()!r}; its segments are {ids}"
        )
    return segment


def _addClicks(prompts: SegmentPrompts, frameIndex: int, xy: Sequence[float], positive: bool) -> None:
    prompts.frame(frameIndex).clicks.append(Click(float(xy[0]), float(xy[1]), positive))


def _addFramePrompts(
    prompts: SegmentPrompts, framePrompts: dict[int, FramePrompt] | None, numFrames: int
) -> None:
    """Add clicks and boxes given in frame pixels (e.g. placed in a view by the Segment Editor effect)."""
    for frameIndex, given in (framePrompts or {}).items():
        if not 0 <= int(frameIndex) < numFrames:
            raise PromptError(f"frame prompt on frame {frameIndex}, but there are {numFrames} frames")
        prompt = prompts.frame(int(frameIndex))
        prompt.clicks.extend(given.clicks)
        if given.box is not None:
            prompt.box = tuple(float(v) for v in given.box)


def _promptedOnly(prompts: list[SegmentPrompts], skipSegmentsWithoutPrompts: bool) -> list[SegmentPrompts]:
    """Check that every segment has a prompt (or, when asked, drop those without one but the first)."""
    if skipSegmentsWithoutPrompts:
        prompts = [p for index, p in enumerate(prompts) if index == 0 or p.promptedFrames()]
    for segmentPrompts in prompts:
        if not segmentPrompts.promptedFrames():
            raise PromptError(
                f"segment {segmentPrompts.segmentId!r} has no prompt: draw it on a frame (slice), click, or add points"
            )
    return prompts


# ---------------------------------------------------------------------------------- volumes
class VolumeTarget:
    """Propagation across the slices of a scalar volume along one IJK axis.

    Args:
        volumeNode: the scalar volume (one component of any type, or 3-component uint8 RGB).
        segmentationNode: where the segments live.
        segmentIds: the segments to propagate, one tracked object each.
        axis: IJK axis to walk (0 = I, 1 = J, 2 = K); default: normal to the drawn slice(s).
        positivePoints, negativePoints: extra clicks for the first segment (:data:`PointInput`).
        window: intensity window for the model (``sam2s`` preset name or ``(lower, upper)``);
            default: the volume's display window/level, else a percentile window.
        framePrompts: clicks / boxes for the first segment in frame pixels, ``{slice: FramePrompt}``
            (needs ``axis`` when nothing is drawn yet).
        skipSegmentsWithoutPrompts: drop segments (other than the first) that have no prompt
            instead of raising :class:`PromptError`.
    """

    kind = "volume"

    def __init__(
        self,
        volumeNode,
        segmentationNode,
        segmentIds: Sequence[str],
        axis: int | None = None,
        positivePoints: PointInput | None = None,
        negativePoints: PointInput | None = None,
        window=None,
        framePrompts: dict[int, FramePrompt] | None = None,
        skipSegmentsWithoutPrompts: bool = False,
    ) -> None:
        if volumeNode is None or not volumeNode.IsA("vtkMRMLScalarVolumeNode"):
            raise PromptError("the source must be a scalar volume node (or a sequence browser for a video)")
        self.volumeNode = volumeNode
        self.segmentationNode = segmentationNode
        self.segmentIds = list(segmentIds)
        for segmentId in self.segmentIds:
            _segment(segmentationNode, segmentId)
        self.reference = referenceGeometry(volumeNode, segmentationNode)
        drawn = {sid: segmentArray(segmentationNode, sid, self.reference) for sid in self.segmentIds}
        positive, negative = pointsFromInput(positivePoints), pointsFromInput(negativePoints)
        if axis is None:
            union = np.logical_or.reduce(list(drawn.values()))
            if not union.any() and framePrompts:
                raise PromptError("frame prompts on an empty segment need the axis they were placed along")
            axis = 2 if not union.any() and (len(positive) or len(negative)) else inferSliceAxis(union)
        if axis not in (0, 1, 2):
            raise PromptError(f"axis must be 0 (I), 1 (J) or 2 (K), got {axis!r}")
        self.axis = int(axis)
        self.frames = FrameStack(self._voxelFrames(), window=self._window(window))
        prompts = [self._maskPrompts(sid, drawn[sid]) for sid in self.segmentIds]
        self._addPoints(prompts[0], positive, True)
        self._addPoints(prompts[0], negative, False)
        _addFramePrompts(prompts[0], framePrompts, self.frames.numFrames)
        self.prompts = _promptedOnly(prompts, skipSegmentsWithoutPrompts)
        self.segmentIds = [p.segmentId for p in self.prompts]

    # -------------------------------------------------------------- reading
    def toFrames(self, arrayKji: np.ndarray) -> np.ndarray:
        """``(K, J, I[, C])`` -> ``(T, H, W[, C])`` along :attr:`axis` (a view)."""
        return np.moveaxis(arrayKji, 2 - self.axis, 0)

    def _voxelFrames(self) -> np.ndarray:
        voxels = voxelArray(self.volumeNode)
        if voxels.ndim == 4 and not (voxels.shape[3] == 3 and voxels.dtype == np.uint8):
            raise PromptError(f"volume {self.volumeNode.GetName()!r} must have one component or be RGB uint8")
        # A copy: the model's windowing reads it while the user may keep editing the volume.
        return np.array(self.toFrames(voxels), copy=True)

    def _window(self, window):
        if window is not None:
            return window
        display = self.volumeNode.GetDisplayNode()
        if display is not None and hasattr(display, "GetWindow") and display.GetWindow() > 0:
            return (display.GetWindowLevelMin(), display.GetWindowLevelMax())
        return None

    def _maskPrompts(self, segmentId: str, drawnKji: np.ndarray) -> SegmentPrompts:
        record = PropagationRecord.read(_segment(self.segmentationNode, segmentId), self.axis)
        prompts = SegmentPrompts(segmentId)
        frames = self.toFrames(drawnKji)
        for index in np.flatnonzero(frames.any(axis=(1, 2))):
            mask = np.array(frames[index], copy=True)
            if not record.isPropagated(int(index), mask):
                prompts.frame(int(index)).mask = mask
        return prompts

    def _addPoints(self, prompts: SegmentPrompts, rasPoints: np.ndarray, positive: bool) -> None:
        if len(rasPoints) == 0:
            return
        columnAxis, rowAxis = frameAxes(self.axis)
        shape = self.frames.frames.shape
        for ras, ijk in zip(rasPoints, worldToIjk(self.volumeNode, rasPoints)):
            frameIndex = int(np.rint(ijk[self.axis]))
            x, y = ijk[columnAxis], ijk[rowAxis]
            if not (
                0 <= frameIndex < shape[0] and -0.5 <= x <= shape[2] - 0.5 and -0.5 <= y <= shape[1] - 0.5
            ):
                raise PromptError(
                    f"point {np.round(ras, 2).tolist()} (RAS) is outside volume {self.volumeNode.GetName()!r}"
                )
            _addClicks(
                prompts, frameIndex, (min(max(x, 0.0), shape[2]), min(max(y, 0.0), shape[1])), positive
            )

    # -------------------------------------------------------------- writing
    def apply(
        self,
        predictions: Predictions,
        editor: SegmentEditorAccess,
        saveState: Callable[[], object] | None = None,
    ) -> dict[str, list[int]]:
        """Write the frames whose prediction differs from the segment now; one undo state.

        Args:
            predictions: ``{frame: {segmentId: mask}}`` from the backend.
            editor: does the edits (and, by default, keeps the undo state).
            saveState: saves the undo state instead of ``editor`` (the Segment Editor's own, in
                the application, so Ctrl+Z undoes the propagation).

        Returns:
            ``{segmentId: frames written}``; empty when nothing changed (no undo state is saved).
        """
        changes, records = {}, {}
        for prompts in self.prompts:
            segmentId = prompts.segmentId
            current = self.toFrames(segmentArray(self.segmentationNode, segmentId, self.reference))
            record = PropagationRecord.read(_segment(self.segmentationNode, segmentId), self.axis)
            drawnFrames = prompts.maskFrames()
            changed = {}
            for frameIndex, masks in predictions.items():
                if frameIndex in drawnFrames or segmentId not in masks:
                    continue
                mask = np.asarray(masks[segmentId], bool)
                if not np.array_equal(mask, current[frameIndex]):
                    changed[frameIndex] = mask
                if mask.any():
                    record.remember(frameIndex, mask)
                else:
                    record.forget(frameIndex)
            for frameIndex in drawnFrames:
                record.forget(frameIndex)
            changes[segmentId], records[segmentId] = changed, record
        if not any(changes.values()):
            return {}
        editor.bind(self.segmentationNode)
        (saveState or editor.saveStateForUndo)()
        ensureReferenceGeometry(self.segmentationNode, self.volumeNode)
        for segmentId, changed in changes.items():
            editor.replaceFrames(segmentId, self.reference, self.axis, changed)
            records[segmentId].write(_segment(self.segmentationNode, segmentId))
        return {segmentId: sorted(changed) for segmentId, changed in changes.items() if changed}

    def undoStep(self, editor: SegmentEditorAccess) -> Callable[[], None]:
        """What undoes the last :meth:`apply`; it keeps neither the frames nor the prompts."""
        segmentationNode = self.segmentationNode

        def undo() -> None:
            editor.bind(segmentationNode)
            editor.undo()

        return undo


# ---------------------------------------------------------------------------------- videos
@dataclass
class _SequenceUndo:
    """What :meth:`SequenceTarget.apply` changed: enough to put it back."""

    createdSequence: bool = False
    items: list[tuple[str, object]] = field(default_factory=list)  # (index value, previous item copy or None)
    proxyCopy: object = None


def _copySegmentation(node):
    copy = slicer.vtkMRMLSegmentationNode()
    copy.Copy(node)
    return copy


class SequenceTarget:
    """Propagation across the frames of a video held as a sequence of 2D volumes.

    The masks are recorded into a segmentation sequence in the same browser: the one whose
    proxy is ``segmentationNode`` if there is one, else a new one (created by :meth:`apply`)
    with ``segmentationNode`` as its proxy.

    Args:
        sourceNode: a sequence browser (its first sequence of volumes is the video) or the
            video's sequence node.
        segmentationNode: the segmentation shown on the video (the proxy node).
        segmentIds: segments to propagate.
        positivePoints, negativePoints: clicks for the first segment, on the browser's current frame.
        window: for grey videos, the intensity window (default: a percentile window).
        sequencesLogic: the application's Sequences logic (a headless one is made otherwise).
        framePrompts: clicks / boxes for the first segment in frame pixels, ``{frame: FramePrompt}``.
        skipSegmentsWithoutPrompts: drop segments (other than the first) without a prompt.
    """

    kind = "sequence"

    def __init__(
        self,
        sourceNode,
        segmentationNode,
        segmentIds: Sequence[str],
        positivePoints: PointInput | None = None,
        negativePoints: PointInput | None = None,
        window=None,
        sequencesLogic=None,
        framePrompts: dict[int, FramePrompt] | None = None,
        skipSegmentsWithoutPrompts: bool = False,
    ) -> None:
        scene = segmentationNode.GetScene()
        ensureSequenceNodeClasses(scene)
        self.scene = scene
        self.sequencesLogic = sequencesLogic or self._headlessSequencesLogic(scene)
        self.browser, self.videoSequence = self._resolveVideo(sourceNode)
        self.segmentationNode = segmentationNode
        self.segmentIds = list(segmentIds)
        for segmentId in self.segmentIds:
            _segment(segmentationNode, segmentId)
        count = self.videoSequence.GetNumberOfDataNodes()
        self.frameNodes = [self.videoSequence.GetNthDataNode(i) for i in range(count)]
        self.indexValues = [self.videoSequence.GetNthIndexValue(i) for i in range(count)]
        self.references = [
            slicer.vtkSlicerSegmentationsModuleLogic.CreateOrientedImageDataFromVolumeNode(n)
            for n in self.frameNodes
        ]
        self.frames = FrameStack(self._frameViews(), window=window)
        self.segmentationSequence = self.browser.GetSequenceNode(segmentationNode)
        self.currentFrame = self._currentFrame()
        prompts = [self._maskPrompts(sid) for sid in self.segmentIds]
        positive, negative = pointsFromInput(positivePoints), pointsFromInput(negativePoints)
        self._addPoints(prompts[0], positive, True)
        self._addPoints(prompts[0], negative, False)
        _addFramePrompts(prompts[0], framePrompts, self.frames.numFrames)
        self.prompts = _promptedOnly(prompts, skipSegmentsWithoutPrompts)
        self.segmentIds = [p.segmentId for p in self.prompts]
        self._undo: _SequenceUndo | None = None

    # -------------------------------------------------------------- reading
    @staticmethod
    def _headlessSequencesLogic(scene):
        logic = slicer.vtkSlicerSequencesLogic()
        logic.SetMRMLScene(scene)
        return logic

    def _resolveVideo(self, sourceNode):
        if sourceNode is not None and sourceNode.IsA("vtkMRMLSequenceBrowserNode"):
            browser = sourceNode
            synchronized = vtk.vtkCollection()
            browser.GetSynchronizedSequenceNodes(synchronized, True)
            candidates = [browser.GetMasterSequenceNode()] + [
                synchronized.GetItemAsObject(i) for i in range(synchronized.GetNumberOfItems())
            ]
            video = next((s for s in candidates if s is not None and self._holdsVolumes(s)), None)
            if video is None:
                raise PromptError(
                    f"browser {browser.GetName()!r} has no sequence of image volumes (the video)"
                )
            return browser, video
        if sourceNode is not None and sourceNode.IsA("vtkMRMLSequenceNode"):
            if not self._holdsVolumes(sourceNode):
                raise PromptError(f"sequence {sourceNode.GetName()!r} does not hold image volumes")
            browser = self.sequencesLogic.GetFirstBrowserNodeForSequenceNode(sourceNode)
            if browser is None:
                raise PromptError(
                    f"sequence {sourceNode.GetName()!r} is not in a sequence browser; add it to one "
                    "(Sequences module) so the masks can be recorded beside it"
                )
            return browser, sourceNode
        raise PromptError(
            "the source must be a scalar volume, a sequence browser or a sequence of video frames"
        )

    @staticmethod
    def _holdsVolumes(sequence) -> bool:
        return sequence.GetNumberOfDataNodes() > 0 and sequence.GetNthDataNode(0).IsA(
            "vtkMRMLScalarVolumeNode"
        )

    def _frameViews(self) -> list[np.ndarray]:
        views = []
        for index, node in enumerate(self.frameNodes):
            voxels = voxelArray(node)
            if voxels.shape[0] != 1:
                raise PromptError(
                    f"video frame {index} is a volume with {voxels.shape[0]} slices, not a 2D image"
                )
            frame = voxels[0]
            if frame.ndim == 3:
                if frame.shape[2] == 4:
                    frame = frame[:, :, :3]  # RGBA: the model sees RGB
                if frame.shape[2] != 3 or frame.dtype != np.uint8:
                    raise PromptError(
                        f"video frame {index} must be grey or RGB uint8, got {frame.shape} {frame.dtype}"
                    )
            views.append(frame)  # a view of Slicer's frame: the backend windows or copies per read
        return views

    def _currentFrame(self) -> int:
        return self.frameShownBy(self.browser, self.videoSequence)

    @staticmethod
    def frameShownBy(browser, videoSequence) -> int:
        """The video frame (item of ``videoSequence``) that ``browser`` shows now."""
        master = browser.GetMasterSequenceNode()
        value = master.GetNthIndexValue(browser.GetSelectedItemNumber())
        return max(0, videoSequence.GetItemNumberFromIndexValue(value, False))

    def _itemAt(self, frameIndex: int):
        if self.segmentationSequence is None:
            return None
        return self.segmentationSequence.GetDataNodeAtValue(self.indexValues[frameIndex], True)

    def frameMask(self, node, segmentId: str, frameIndex: int) -> np.ndarray | None:
        """A segment of a segmentation node on one video frame, ``(H, W)`` bool (``None`` if absent)."""
        if node is None or node.GetSegmentation().GetSegment(segmentId) is None:
            return None
        return segmentArray(node, segmentId, self.references[frameIndex])[0]

    def _maskPrompts(self, segmentId: str) -> SegmentPrompts:
        prompts = SegmentPrompts(segmentId)
        for frameIndex in range(len(self.frameNodes)):
            # the proxy shows the current frame and may hold drawing not yet recorded in the sequence
            node = self.segmentationNode if frameIndex == self.currentFrame else self._itemAt(frameIndex)
            mask = self.frameMask(node, segmentId, frameIndex)
            if mask is None or not mask.any():
                continue
            record = PropagationRecord.read(node.GetSegmentation().GetSegment(segmentId))
            if not record.isPropagated(0, mask):
                prompts.frame(frameIndex).mask = mask
        return prompts

    def _addPoints(self, prompts: SegmentPrompts, rasPoints: np.ndarray, positive: bool) -> None:
        if len(rasPoints) == 0:
            return
        proxy = self.browser.GetProxyNode(self.videoSequence) or self.frameNodes[self.currentFrame]
        height, width = self.frames.height, self.frames.width
        for ras, ijk in zip(rasPoints, worldToIjk(proxy, rasPoints)):
            x, y = ijk[0], ijk[1]
            if not (-0.5 <= x <= width - 0.5 and -0.5 <= y <= height - 0.5 and abs(ijk[2]) <= 0.5):
                raise PromptError(
                    f"point {np.round(ras, 2).tolist()} (RAS) is outside the current video frame"
                )
            _addClicks(
                prompts, self.currentFrame, (min(max(x, 0.0), width), min(max(y, 0.0), height)), positive
            )

    # -------------------------------------------------------------- writing
    def apply(self, predictions: Predictions, editor=None, saveState=None) -> dict[str, list[int]]:
        """Record the changed frames into the segmentation sequence (created when missing).

        ``editor`` and ``saveState`` are accepted for symmetry with :class:`VolumeTarget`; the
        undo state of a sequence is kept here (:meth:`undo`).
        """
        drawnFrames = {p.segmentId: p.maskFrames() for p in self.prompts}
        plan: dict[int, dict[str, np.ndarray]] = {}
        for frameIndex, masks in sorted(predictions.items()):
            item = self.segmentationNode if frameIndex == self.currentFrame else self._itemAt(frameIndex)
            for segmentId in self.segmentIds:
                if segmentId not in masks or frameIndex in drawnFrames[segmentId]:
                    continue
                mask = np.asarray(masks[segmentId], bool)
                existing = self.frameMask(item, segmentId, frameIndex)
                if existing is None or not np.array_equal(existing, mask):
                    plan.setdefault(frameIndex, {})[segmentId] = mask
        if not plan:
            return {}
        # The proxy holds what the user sees (and may have drawn) on the current frame: it becomes
        # that frame's item, or the browser would replace the drawing with a stale item.
        plan.setdefault(self.currentFrame, {})
        undo = _SequenceUndo(proxyCopy=_copySegmentation(self.segmentationNode))
        if self.segmentationSequence is None:
            self.segmentationSequence = self._createSegmentationSequence()
            undo.createdSequence = True
        for frameIndex, masks in plan.items():
            value = self.indexValues[frameIndex]
            item = self._itemAt(frameIndex)
            undo.items.append((value, None if item is None else _copySegmentation(item)))
            if frameIndex == self.currentFrame:
                item = _copySegmentation(self.segmentationNode)
            elif item is None:
                item = self._emptyItem()
            for segmentId, mask in masks.items():
                self._writeMask(item, segmentId, frameIndex, mask)
            self.segmentationSequence.SetDataNodeAtValue(item, value)
        self.segmentationSequence.Modified()
        self._undo = undo
        self.sequencesLogic.UpdateProxyNodesFromSequences(self.browser)
        written: dict[str, list[int]] = {}
        for frameIndex, masks in plan.items():
            for segmentId in masks:
                written.setdefault(segmentId, []).append(frameIndex)
        return {segmentId: sorted(frames) for segmentId, frames in written.items()}

    def _createSegmentationSequence(self):
        name = self.scene.GenerateUniqueName(f"{self.segmentationNode.GetName()} sequence")
        sequence = self.scene.AddNewNodeByClass("vtkMRMLSequenceNode", name)
        sequence.SetIndexName(self.videoSequence.GetIndexName())
        sequence.SetIndexUnit(self.videoSequence.GetIndexUnit())
        sequence.SetIndexType(self.videoSequence.GetIndexType())
        self.sequencesLogic.AddSynchronizedNode(sequence, self.segmentationNode, self.browser)
        self.browser.SetSaveChanges(sequence, True)
        return sequence

    def _emptyItem(self):
        """A segmentation for a frame that has none: every segment of the proxy, without content."""
        item = slicer.vtkMRMLSegmentationNode()
        source = self.segmentationNode.GetSegmentation()
        for segmentId in source.GetSegmentIDs():
            self._addEmptySegmentLike(item, segmentId)
        return item

    def _addEmptySegmentLike(self, item, segmentId: str) -> None:
        """Add a segment with the proxy segment's id, name, colour and terminology, and no content."""
        segment = self.segmentationNode.GetSegmentation().GetSegment(segmentId)
        item.GetSegmentation().AddEmptySegment(segmentId, segment.GetName(), segment.GetColor())
        if segment.HasTag(slicer.vtkSegment.GetTerminologyEntryTagName()):
            item.GetSegmentation().GetSegment(segmentId).SetTerminology(segment.GetTerminology())

    def _writeMask(self, item, segmentId: str, frameIndex: int, mask: np.ndarray) -> None:
        segmentation = item.GetSegmentation()
        if segmentation.GetSegment(segmentId) is None:
            self._addEmptySegmentLike(item, segmentId)
        image = orientedImageFromArray(
            mask[None].astype(np.uint8), ijkToRasArray(self.frameNodes[frameIndex])
        )
        slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
            image, item, segmentId, slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE
        )
        record = PropagationRecord()
        if mask.any():
            record.remember(0, mask)
        record.write(segmentation.GetSegment(segmentId))

    def undoStep(self, editor=None) -> Callable[[], None]:
        """What undoes the last :meth:`apply` (the frames it keeps are Slicer's, not copies)."""
        return self.undo

    def undo(self) -> None:
        """Put back the sequence items (and the proxy) as they were before the last :meth:`apply`."""
        undo, self._undo = self._undo, None
        if undo is None:
            raise RuntimeError("nothing to undo: no propagation was applied to this video")
        for value, previous in reversed(undo.items):
            if previous is None:
                self.segmentationSequence.RemoveDataNodeAtValue(value)
            else:
                self.segmentationSequence.SetDataNodeAtValue(previous, value)
        if undo.createdSequence:
            self.browser.RemoveSynchronizedSequenceNode(self.segmentationSequence.GetID())
            self.scene.RemoveNode(self.segmentationSequence)
            self.segmentationSequence = None
        else:
            self.segmentationSequence.Modified()
            self.sequencesLogic.UpdateProxyNodesFromSequences(self.browser)
        self.segmentationNode.CopyContent(undo.proxyCopy, True)
