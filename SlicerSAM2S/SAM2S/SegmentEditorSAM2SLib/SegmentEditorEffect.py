"""The SAM2S Segment Editor effect: click, drag a box, preview, propagate, apply.

In any slice view, on the selected segment:

* left click: positive point; Shift + left click: negative point;
* left drag: a box around the object;
* each prompt shows a live preview of that frame's mask (the segment's content drawn on the
  frame, if any, is refined by the clicks);
* *Propagate* (forward / backward / both) runs on a worker thread with a progress bar and a
  *Cancel* button; the preview fills frame by frame while the UI stays usable;
* *Apply* writes the frames that changed with one undo state (Ctrl+Z undoes the whole
  propagation), *Discard* drops the preview.

Volumes are walked across the slices of the view that was clicked (the axis of the volume
closest to the view's normal); a video loaded as a sequence (the source volume is the proxy of a
sequence browser) is walked across its frames, and the masks are recorded into a segmentation
sequence in the same browser. Several segments can be propagated together, one object each.

Qt and the Segment Editor base class exist only inside Slicer; without them this file still
imports (``SegmentEditorEffect`` then derives from ``object``) so that it can be checked headless.
"""

# ruff: noqa: N999  (Slicer loads effects from SegmentEditorEffect.py)
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import numpy as np

try:
    import qt
    import slicer
    import vtk
    from SegmentEditorEffects import AbstractScriptedSegmentEditorEffect

    IN_SLICER_APPLICATION = True
except ImportError:  # headless: the class below is only compiled, never used
    AbstractScriptedSegmentEditorEffect = object
    IN_SLICER_APPLICATION = False

__all__ = ["SegmentEditorEffect", "ViewPrompt"]

logger = logging.getLogger(__name__)

POLL_MILLISECONDS = 100
PREVIEW_REFRESH_FRAMES = 8
CLICK_TOLERANCE_PIXELS = 4


@dataclass
class ViewPrompt:
    """Prompts placed with the mouse since the last apply/discard, for the selected segment."""

    frameIndex: int | None = None
    axis: int | None = None  # IJK axis of the clicked view (volumes); None for a video
    clicks: list = field(default_factory=list)  # SAM2SLib.prompts.Click
    box: tuple | None = None

    def clear(self) -> None:
        self.frameIndex, self.axis, self.clicks, self.box = None, None, [], None


class SegmentEditorEffect(AbstractScriptedSegmentEditorEffect):
    """SAM2S interactive segmentation and propagation (see the module docstring)."""

    def __init__(self, scriptedEffect) -> None:
        scriptedEffect.name = "SAM2S"
        scriptedEffect.perSegment = True
        scriptedEffect.requireSegments = True
        AbstractScriptedSegmentEditorEffect.__init__(self, scriptedEffect)
        self.prompt = ViewPrompt()
        self.request = None  # SAM2S.PropagationRequest of the preview / propagation in hand
        self.requestKey = None  # what the request was read for: segments, frame, axis, source
        self.result = None  # SAM2S.PropagationResult waiting for Apply
        self.categories = None  # the last finished propagation, for its predicted categories
        self.worker = None
        self.previewNode = None
        self.dragStart = None
        self.dragView = None
        self.boxActors = {}
        self.timer = None
        self.framesSincePreview = 0

    # -------------------------------------------------------------- effect boilerplate
    def clone(self):
        import qSlicerSegmentationsEditorEffectsPythonQt as effects

        clonedEffect = effects.qSlicerSegmentEditorScriptedEffect(None)
        clonedEffect.setPythonSource(__file__.replace("\\", "/"))
        return clonedEffect

    def icon(self):
        iconPath = os.path.join(os.path.dirname(__file__), "SegmentEditorEffect.png")
        return qt.QIcon(iconPath) if os.path.exists(iconPath) else qt.QIcon()

    def helpText(self) -> str:
        return (
            "<html>Segment with SAM2S, then propagate across slices or video frames.<p>"
            "<b>Left click</b>: positive point. <b>Shift + left click</b>: negative point. "
            "<b>Left drag</b>: box. Existing segment content on a frame is used as a mask prompt.<p>"
            "<b>Propagate</b> fills the preview; <b>Apply</b> writes it (one Ctrl+Z undoes it).</html>"
        )

    @staticmethod
    def logic():
        import SAM2S

        return SAM2S.sharedLogic()

    # -------------------------------------------------------------- options panel
    def setupOptionsFrame(self) -> None:
        self.directionCombo = qt.QComboBox()
        self.directionCombo.addItems(["both", "forward", "backward"])
        self.directionCombo.toolTip = "forward: to the last frame; backward: to the first; both: every frame"
        self.scriptedEffect.addLabeledOptionsWidget("Direction:", self.directionCombo)

        self.allSegmentsCheck = qt.QCheckBox("Propagate every segment drawn on some frame")
        self.allSegmentsCheck.toolTip = "Several segments are tracked together, one object each."
        self.scriptedEffect.addOptionsWidget(self.allSegmentsCheck)

        self.windowCombo = qt.QComboBox()
        self.windowCombo.addItems(
            ["display window", "ct_soft_tissue", "ct_abdomen", "ct_lung", "ct_bone", "auto"]
        )
        self.windowCombo.toolTip = "Intensity window the model sees (on a copy; the volume is never changed)."
        self.scriptedEffect.addLabeledOptionsWidget("Intensities:", self.windowCombo)

        self.deviceCombo = qt.QComboBox()
        self.deviceCombo.addItems(["auto", "cuda", "cpu"])
        self.deviceCombo.currentText = qt.QSettings().value("SAM2S/Device", "auto") or "auto"
        self.deviceCombo.toolTip = (
            "Where the model runs (auto: CUDA when available). Model and weights: SAM2S module."
        )
        self.scriptedEffect.addLabeledOptionsWidget("Device:", self.deviceCombo)

        row = qt.QHBoxLayout()
        self.propagateButton = qt.QPushButton("Propagate")
        self.cancelButton = qt.QPushButton("Cancel")
        self.cancelButton.enabled = False
        row.addWidget(self.propagateButton)
        row.addWidget(self.cancelButton)
        self.scriptedEffect.addOptionsWidget(row)
        self.progressBar = qt.QProgressBar()
        self.progressBar.visible = False
        self.scriptedEffect.addOptionsWidget(self.progressBar)

        row = qt.QHBoxLayout()
        self.applyButton = qt.QPushButton("Apply")
        self.discardButton = qt.QPushButton("Discard")
        self.undoVideoButton = qt.QPushButton("Undo video propagation")
        self.undoVideoButton.toolTip = "Video masks live in a sequence, which Ctrl+Z does not cover."
        for button in (self.applyButton, self.discardButton, self.undoVideoButton):
            row.addWidget(button)
        self.scriptedEffect.addOptionsWidget(row)

        self.categoryLabel = qt.QLabel("")
        self.categoryLabel.wordWrap = True
        self.scriptedEffect.addOptionsWidget(self.categoryLabel)
        row = qt.QHBoxLayout()
        self.categoryToNameButton = qt.QPushButton("Use category as name")
        self.categoryToTerminologyButton = qt.QPushButton("Use category as terminology")
        row.addWidget(self.categoryToNameButton)
        row.addWidget(self.categoryToTerminologyButton)
        self.scriptedEffect.addOptionsWidget(row)

        self.deviceCombo.connect("currentIndexChanged(int)", self.onDeviceChanged)
        self.propagateButton.connect("clicked()", self.onPropagate)
        self.cancelButton.connect("clicked()", self.onCancel)
        self.applyButton.connect("clicked()", self.onApply)
        self.discardButton.connect("clicked()", self.onDiscard)
        self.undoVideoButton.connect("clicked()", self.onUndoVideo)
        self.categoryToNameButton.connect("clicked()", lambda: self.onWriteCategory("name"))
        self.categoryToTerminologyButton.connect("clicked()", lambda: self.onWriteCategory("terminology"))
        self.updateButtons()

    def onDeviceChanged(self, *_) -> None:
        qt.QSettings().setValue("SAM2S/Device", self.deviceCombo.currentText)  # read by SAM2S.sharedLogic()
        self.request, self.requestKey = None, None

    def updateButtons(self) -> None:
        busy = self.worker is not None
        self.propagateButton.enabled = not busy
        self.cancelButton.enabled = busy
        self.applyButton.enabled = not busy and self.result is not None
        self.discardButton.enabled = not busy and (
            self.result is not None or self.prompt.frameIndex is not None
        )
        self.undoVideoButton.visible = self.isVideo()
        best = self.bestCategory()
        self.categoryLabel.text = "" if best is None else f"Predicted instrument: {best[0]} ({best[1]:.0%})"
        self.categoryToNameButton.visible = self.categoryToTerminologyButton.visible = best is not None

    def deactivate(self) -> None:
        self.onCancel()
        self.removeBoxActors()
        self.removePreview()
        self.prompt.clear()

    # -------------------------------------------------------------- source and geometry
    def parameterNode(self):
        return self.scriptedEffect.parameterSetNode()

    def sourceVolume(self):
        node = self.parameterNode()
        if node is None:
            return None
        getter = getattr(node, "GetSourceVolumeNode", None) or node.GetMasterVolumeNode  # Slicer < 5.4
        return getter()

    def videoBrowser(self):
        volume = self.sourceVolume()
        if volume is None:
            return None
        return slicer.modules.sequences.logic().GetFirstBrowserNodeForProxyNode(volume)

    def isVideo(self) -> bool:
        return self.videoBrowser() is not None

    def viewAxis(self, viewWidget) -> int:
        from SAM2SLib.mrmlio import ijkAxisFromRasNormal

        sliceToRas = viewWidget.sliceLogic().GetSliceNode().GetSliceToRAS()
        normal = [sliceToRas.GetElement(row, 2) for row in range(3)]
        return ijkAxisFromRasNormal(self.sourceVolume(), normal)

    def segmentIds(self) -> list[str]:
        segmentId = self.parameterNode().GetSelectedSegmentID()
        if not self.allSegmentsCheck.checked:
            return [segmentId]
        segmentation = self.parameterNode().GetSegmentationNode().GetSegmentation()
        ids = [segmentId] + [sid for sid in segmentation.GetSegmentIDs() if sid != segmentId]
        return ids

    def windowChoice(self):
        text = self.windowCombo.currentText
        return None if text == "display window" else text

    def prepareRequest(self):
        """Read frames and prompts for the segment(s), with the view's clicks/box (main thread)."""
        from SAM2SLib.prompts import FramePrompt

        framePrompts = None
        if self.prompt.frameIndex is not None:
            framePrompts = {
                self.prompt.frameIndex: FramePrompt(clicks=list(self.prompt.clicks), box=self.prompt.box)
            }
        video = self.isVideo()
        return self.logic().preparePropagation(
            self.videoBrowser() or self.sourceVolume(),
            self.parameterNode().GetSegmentationNode(),
            self.segmentIds(),
            self.directionCombo.currentText,
            axis=None if video or self.prompt.frameIndex is None else self.prompt.axis,
            window=self.windowChoice(),
            framePrompts=framePrompts,
            skipSegmentsWithoutPrompts=True,
        )

    # -------------------------------------------------------------- mouse
    def processInteractionEvents(self, callerInteractor, eventId, viewWidget) -> bool:
        if viewWidget.className() != "qMRMLSliceWidget" or self.worker is not None:
            return False
        if eventId == vtk.vtkCommand.LeftButtonPressEvent:
            self.dragStart, self.dragView = callerInteractor.GetEventPosition(), viewWidget
            return True
        if (
            eventId == vtk.vtkCommand.MouseMoveEvent
            and self.dragStart is not None
            and viewWidget is self.dragView
        ):
            self.showBox(viewWidget, self.dragStart, callerInteractor.GetEventPosition())
            return True
        if eventId == vtk.vtkCommand.LeftButtonReleaseEvent and self.dragStart is not None:
            start, end = self.dragStart, callerInteractor.GetEventPosition()
            self.dragStart = None
            self.removeBoxActors()
            dragged = max(abs(end[0] - start[0]), abs(end[1] - start[1])) > CLICK_TOLERANCE_PIXELS
            with slicer.util.tryWithErrorDisplay("SAM2S could not use this prompt.", waitCursor=True):
                if dragged:
                    self.addBox(viewWidget, start, end)
                else:
                    self.addClick(viewWidget, end, positive=not callerInteractor.GetShiftKey())
            return True
        return False

    def framePoint(self, viewWidget, xy):
        """Slice-view pixel -> ``(frameIndex, x, y, axis)`` in the frames the model sees
        (``axis`` is ``None`` for a video, whose frame is the one the browser shows)."""
        from SAM2SLib.mrmlio import worldToIjk
        from SAM2SLib.targets import SequenceTarget, frameAxes

        ras = self.scriptedEffect.xyToRas(xy, viewWidget)
        ijk = worldToIjk(self.sourceVolume(), [ras])[0]
        browser = self.videoBrowser()
        if browser is not None:
            video = browser.GetSequenceNode(self.sourceVolume())
            return SequenceTarget.frameShownBy(browser, video), float(ijk[0]), float(ijk[1]), None
        axis = self.viewAxis(viewWidget)
        columnAxis, rowAxis = frameAxes(axis)
        return int(np.rint(ijk[axis])), float(ijk[columnAxis]), float(ijk[rowAxis]), axis

    def addClick(self, viewWidget, xy, positive: bool) -> None:
        from SAM2SLib.prompts import Click

        frameIndex, x, y, axis = self.framePoint(viewWidget, xy)
        self.startViewPrompt(frameIndex, axis)
        self.prompt.clicks.append(Click(x, y, positive))
        self.preview()

    def addBox(self, viewWidget, start, end) -> None:
        frameIndex, x0, y0, axis = self.framePoint(viewWidget, start)
        _, x1, y1, _ = self.framePoint(viewWidget, end)
        self.startViewPrompt(frameIndex, axis)
        self.prompt.box = (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
        self.preview()

    def startViewPrompt(self, frameIndex: int, axis) -> None:
        """A prompt on another frame (or along another axis) starts a new preview."""
        if self.prompt.frameIndex != frameIndex or self.prompt.axis != axis:
            self.prompt.clear()
            self.prompt.frameIndex, self.prompt.axis = frameIndex, axis
            self.result = None

    def preview(self) -> None:
        """Predict the prompted frame alone and show it.

        Further clicks on the same frame reuse the request (and so the model's features of
        that frame); only the frame's clicks and box change.
        """
        from SAM2S import PropagationResult

        key = (
            tuple(self.segmentIds()),
            self.prompt.frameIndex,
            self.prompt.axis,
            self.sourceVolume().GetID(),
        )
        if self.request is None or self.requestKey != key:
            self.request, self.requestKey = self.prepareRequest(), key
        else:
            framePrompt = self.request.prompts[0].frame(self.prompt.frameIndex)
            framePrompt.clicks, framePrompt.box = list(self.prompt.clicks), self.prompt.box
        prediction = self.logic().previewFrame(self.request, self.prompt.frameIndex)
        self.result = PropagationResult(predictions={self.prompt.frameIndex: prediction.masks})
        self.showPreview()
        self.updateButtons()

    # -------------------------------------------------------------- propagation on a worker thread
    def onPropagate(self) -> None:
        from SAM2SLib.worker import PropagationWorker

        with slicer.util.tryWithErrorDisplay("SAM2S could not start the propagation.", waitCursor=True):
            logic = self.logic()
            _ = logic.backend  # installs / asks on the main thread, before the worker starts
            self.request = request = self.prepareRequest()
            self.requestKey = None  # the next click reads the segment again
            self.worker = PropagationWorker(
                lambda onFrame, cancel: logic.runPropagation(request, onFrame, cancel)
            )
            from SAM2S import PropagationResult

            self.result = PropagationResult()
            self.progressBar.maximum = max(1, request.totalFrames)
            self.progressBar.value = 0
            self.progressBar.visible = True
            self.framesSincePreview = 0
            self.worker.start()
            self.timer = qt.QTimer()
            self.timer.setInterval(POLL_MILLISECONDS)
            self.timer.connect("timeout()", self.onPoll)
            self.timer.start()
        self.updateButtons()

    def onPoll(self) -> None:
        if self.worker is None:
            return
        for event in self.worker.poll():
            if event.kind == "frame":
                self.progressBar.value = event.done
                self.result.predictions[event.prediction.frameIndex] = event.prediction.masks
                self.framesSincePreview += 1
            elif event.kind == "finished":
                self.finishWorker()
                if event.result.cancelled:
                    self.result = None
                    self.removePreview()
                else:
                    self.result = self.categories = event.result
                    self.showPreview()
            elif event.kind == "failed":
                self.finishWorker()
                self.result = None
                slicer.util.errorDisplay(f"SAM2S propagation failed: {event.error}")
        if self.worker is not None and self.framesSincePreview >= PREVIEW_REFRESH_FRAMES:
            self.framesSincePreview = 0
            self.showPreview()
        self.updateButtons()

    def finishWorker(self) -> None:
        if self.timer is not None:
            self.timer.stop()
        self.timer, self.worker = None, None
        self.progressBar.visible = False

    def onCancel(self) -> None:
        if self.worker is not None:
            self.worker.cancel()  # the worker reports "finished" (cancelled) at the next frame

    # -------------------------------------------------------------- apply / discard / undo
    def onApply(self) -> None:
        if self.result is None or self.request is None:
            return
        with slicer.util.tryWithErrorDisplay("SAM2S could not write the result.", waitCursor=True):
            saveState = None if self.isVideo() else self.scriptedEffect.saveStateForUndo
            written = self.logic().applyPropagation(self.request, self.result, saveState)
            logger.info("SAM2S wrote %s", {k: len(v) for k, v in written.items()})
        self.result, self.request, self.requestKey = None, None, None
        self.removePreview()
        self.prompt.clear()
        self.updateButtons()

    def onDiscard(self) -> None:
        self.result, self.request, self.requestKey, self.categories = None, None, None, None
        self.removePreview()
        self.prompt.clear()
        self.updateButtons()

    def onUndoVideo(self) -> None:
        with slicer.util.tryWithErrorDisplay("Nothing to undo.", waitCursor=True):
            self.logic().undoLastPropagation()

    # -------------------------------------------------------------- categories (TSL)
    def bestCategory(self):
        if self.categories is None or not self.categories.categories or self.parameterNode() is None:
            return None
        return self.categories.bestCategory(self.parameterNode().GetSelectedSegmentID())

    def onWriteCategory(self, where: str) -> None:
        best = self.bestCategory()
        if best is None:
            return
        self.scriptedEffect.saveStateForUndo()
        segmentation = self.parameterNode().GetSegmentationNode()
        self.logic().writeCategory(segmentation, self.parameterNode().GetSelectedSegmentID(), best[0], where)

    # -------------------------------------------------------------- preview display
    def showPreview(self) -> None:
        """Show the predicted masks in a separate, half-transparent segmentation node."""
        from SAM2SLib.mrmlio import ijkToRasArray, matrixToArray, orientedImageFromArray

        if self.result is None or self.request is None or not self.result.predictions:
            return
        target = self.request.target
        segmentationNode = self.parameterNode().GetSegmentationNode()
        if self.previewNode is None or self.previewNode.GetScene() is None:
            self.previewNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "SAM2S preview")
            self.previewNode.CreateDefaultDisplayNodes()
            self.previewNode.GetDisplayNode().SetOpacity(0.5)
            self.previewNode.SetHideFromEditors(True)
            self.previewNode.SetSaveWithScene(False)
        self.previewNode.SetAndObserveTransformNodeID(segmentationNode.GetTransformNodeID())
        source = segmentationNode.GetSegmentation()
        segmentation = self.previewNode.GetSegmentation()
        for segmentId in self.request.segmentIds:
            if segmentation.GetSegment(segmentId) is None:
                segment = source.GetSegment(segmentId)
                segmentation.AddEmptySegment(segmentId, segment.GetName(), segment.GetColor())
            if target.kind == "volume":
                frames = np.zeros(target.frames.frames.shape[:3], np.uint8)
                for frameIndex, masks in self.result.predictions.items():
                    if segmentId in masks:
                        frames[frameIndex] = masks[segmentId]
                voxels = np.moveaxis(frames, 0, 2 - target.axis)
                imageToWorld = vtk.vtkMatrix4x4()
                target.reference.GetImageToWorldMatrix(imageToWorld)  # the volume grid, segmentation frame
                image = orientedImageFromArray(voxels, matrixToArray(imageToWorld))
            else:
                masks = self.result.predictions.get(target.currentFrame, {})
                mask = masks.get(segmentId, np.zeros((target.frames.height, target.frames.width), bool))
                image = orientedImageFromArray(
                    mask[None].astype(np.uint8), ijkToRasArray(self.sourceVolume())
                )
            slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
                image, self.previewNode, segmentId, slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE
            )

    def removePreview(self) -> None:
        if self.previewNode is not None and self.previewNode.GetScene() is not None:
            slicer.mrmlScene.RemoveNode(self.previewNode)
        self.previewNode = None

    # -------------------------------------------------------------- box outline while dragging
    def showBox(self, viewWidget, start, end) -> None:
        actor = self.boxActors.get(viewWidget)
        if actor is None:
            points, lines = vtk.vtkPoints(), vtk.vtkCellArray()
            points.SetNumberOfPoints(4)
            lines.InsertNextCell(5)
            for index in (0, 1, 2, 3, 0):
                lines.InsertCellPoint(index)
            polyData = vtk.vtkPolyData()
            polyData.SetPoints(points)
            polyData.SetLines(lines)
            mapper = vtk.vtkPolyDataMapper2D()
            mapper.SetInputData(polyData)
            actor = vtk.vtkActor2D()
            actor.SetMapper(mapper)
            actor.GetProperty().SetColor(1.0, 0.85, 0.0)
            self.scriptedEffect.addActor2D(viewWidget, actor)
            self.boxActors[viewWidget] = actor
        points = actor.GetMapper().GetInput().GetPoints()
        (x0, y0), (x1, y1) = start, end
        for index, (x, y) in enumerate(((x0, y0), (x1, y0), (x1, y1), (x0, y1))):
            points.SetPoint(index, x, y, 0.0)
        points.Modified()
        self.scriptedEffect.forceRender(viewWidget)

    def removeBoxActors(self) -> None:
        for viewWidget, actor in self.boxActors.items():
            self.scriptedEffect.removeActor2D(viewWidget, actor)
        self.boxActors = {}
