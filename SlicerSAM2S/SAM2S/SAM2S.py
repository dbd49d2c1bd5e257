"""SAM2S for 3D Slicer: propagate a segment across the slices of a volume or the frames of a video.

The module holds :class:`SAM2SLogic`, which needs only the MRML layer (it runs headless on
``slicer-core``), a settings panel (:class:`SAM2SWidget`), and registers the *SAM2S* Segment
Editor effect (``SegmentEditorSAM2SLib/SegmentEditorEffect.py``) at startup, where the clicking,
box dragging, previewing and propagating happen.

Everything that only the Slicer application has (``qt``, ``ctk``, ``slicer.app``,
``ScriptedLoadableModule``) is imported under a guard, so ``import SAM2S`` works with
``slicer-core`` alone.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import slicer
from SAM2SLib.backend import (
    DEMO_CHECKPOINT,
    DEMO_MODEL,
    FrameStack,
    InferenceBackend,
    ModelSettings,
    checkDirection,
    createBackend,
    propagationLength,
)
from SAM2SLib.mrmlio import SegmentEditorAccess, ensureSegmentationConverterRules
from SAM2SLib.prompts import FramePrediction, FramePrompt, SegmentPrompts
from SAM2SLib.targets import PromptError, SequenceTarget, VolumeTarget

try:  # the Slicer application; absent with slicer-core
    import ctk
    import qt
    from slicer.ScriptedLoadableModule import (
        ScriptedLoadableModule,
        ScriptedLoadableModuleLogic,
        ScriptedLoadableModuleTest,
        ScriptedLoadableModuleWidget,
    )

    IN_SLICER_APPLICATION = hasattr(slicer, "app")
except ImportError:
    IN_SLICER_APPLICATION = False

    class ScriptedLoadableModuleLogic:  # headless stand-in: the logic needs nothing from the real one
        def __init__(self, parent=None) -> None:
            self.parent = parent

    ScriptedLoadableModule = ScriptedLoadableModuleWidget = ScriptedLoadableModuleTest = object

__all__ = [
    "SAM2S",
    "PromptError",
    "PropagationRequest",
    "PropagationResult",
    "SAM2SLogic",
    "SAM2STest",
    "SAM2SWidget",
    "sharedLogic",
]

logger = logging.getLogger(__name__)

CATEGORY_TERMINOLOGY_CONTEXT = "SAM2S surgical instruments"
SETTINGS_PREFIX = "SAM2S/"


# ==================================================================================== logic
@dataclass
class PropagationRequest:
    """Everything a propagation needs, read from MRML on the main thread.

    Attributes:
        target: the :class:`~SAM2SLib.targets.VolumeTarget` or
            :class:`~SAM2SLib.targets.SequenceTarget` that was read and will be written.
        direction: ``"forward"``, ``"backward"`` or ``"both"``.
    """

    target: VolumeTarget | SequenceTarget
    direction: str

    @property
    def frames(self) -> FrameStack:
        return self.target.frames

    @property
    def prompts(self) -> list[SegmentPrompts]:
        return self.target.prompts

    @property
    def segmentIds(self) -> list[str]:
        return [p.segmentId for p in self.prompts]

    @property
    def totalFrames(self) -> int:
        prompted = sorted({f for p in self.prompts for f in p.promptedFrames()})
        return propagationLength(self.frames.numFrames, prompted, self.direction)


@dataclass
class PropagationResult:
    """What a propagation produced.

    Attributes:
        predictions: ``{frameIndex: {segmentId: (H, W) bool}}``; empty when cancelled.
        categories: ``{segmentId: {category: mean probability}}`` over the frames where the
            segment is present, when the model predicts instrument categories; else ``{}``.
        cancelled: the user stopped it; nothing was (or will be) written.
        written: ``{segmentId: frames written}``, filled in by :meth:`SAM2SLogic.applyPropagation`.
    """

    predictions: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)
    categories: dict[str, dict[str, float]] = field(default_factory=dict)
    cancelled: bool = False
    written: dict[str, list[int]] = field(default_factory=dict)

    def bestCategory(self, segmentId: str) -> tuple[str, float] | None:
        """The most probable instrument category of a segment and its probability."""
        scores = self.categories.get(segmentId)
        if not scores:
            return None
        name = max(scores, key=scores.get)
        return name, scores[name]


class _CategoryAverage:
    """Running mean of per-frame category probabilities, per segment, over frames where it is present."""

    def __init__(self) -> None:
        self.sums: dict[str, dict[str, float]] = {}
        self.counts: dict[str, int] = {}

    def add(self, prediction: FramePrediction) -> None:
        for segmentId, scores in (prediction.classScores or {}).items():
            mask = prediction.masks.get(segmentId)
            if mask is None or not mask.any():
                continue
            total = self.sums.setdefault(segmentId, {})
            for name, probability in scores.items():
                total[name] = total.get(name, 0.0) + float(probability)
            self.counts[segmentId] = self.counts.get(segmentId, 0) + 1

    def means(self) -> dict[str, dict[str, float]]:
        return {sid: {k: v / self.counts[sid] for k, v in s.items()} for sid, s in self.sums.items()}


class SAM2SLogic(ScriptedLoadableModuleLogic):
    """Propagates segments with SAM2S; no Qt, so it runs headless on ``slicer-core``.

    Typical use::

        logic = SAM2SLogic()                      # the demo model; see __init__ for others
        result = logic.propagateSegment(volumeNode, segmentationNode, "Segment_1", direction="both")
        logic.undoLastPropagation()               # one step back

    The three steps of :meth:`propagateSegment` are public so the Segment Editor effect can run
    the middle one on a worker thread: :meth:`preparePropagation` (main thread, reads MRML),
    :meth:`runPropagation` (any thread, model only), :meth:`applyPropagation` (main thread,
    writes the changed frames with one undo state).

    Args:
        modelName: ``sam2s`` config name (default: the shipped demo model ``"sam2s_demo"``).
        checkpoint: ``"demo"``, a local checkpoint path, or ``None`` for random weights (tests).
        device: ``"auto"``, ``"cuda"`` or ``"cpu"``.
        backend: an :class:`~SAM2SLib.backend.InferenceBackend` to use instead of building one
            from the settings (a test double, or a configured remote backend).
        serverUrl: run the model on this MONAI Label server (SAM2S app) instead of in Slicer.
    """

    def __init__(
        self,
        modelName: str = DEMO_MODEL,
        checkpoint: str | None = DEMO_CHECKPOINT,
        device: str = "auto",
        backend: InferenceBackend | None = None,
        serverUrl: str | None = None,
    ) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        ensureSegmentationConverterRules()
        self.settings = ModelSettings(modelName, checkpoint, device, serverUrl)
        self._backend = backend
        self._editors: dict[int, SegmentEditorAccess] = {}
        self._undoLast: Callable[[], None] | None = None
        self._headlessSequences = None
        self.confirm: Callable[[str], bool] | None = None
        """Asks the user before installing packages or downloading weights (set by the UI)."""

    # -------------------------------------------------------------- model
    def setModel(
        self, modelName: str, checkpoint: str | None, device: str = "auto", serverUrl: str | None = None
    ) -> None:
        """Use another model (or server) from now on (the current one is released)."""
        settings = ModelSettings(modelName, checkpoint, device, serverUrl)
        if settings != self.settings:
            self.settings = settings
            if self._backend is not None:
                self._backend.close()
            self._backend = None

    @property
    def backend(self) -> InferenceBackend:
        if self._backend is None:
            from SAM2SLib.dependencies import ensureDependencies

            if not self.settings.serverUrl:  # a server needs nothing installed here
                ensureDependencies(self.confirm)
            self._backend = createBackend(self.settings)
        return self._backend

    # -------------------------------------------------------------- propagation
    def propagateSegment(
        self,
        sourceNode,
        segmentationNode,
        segmentId: str | Sequence[str],
        direction: str = "both",
        axis: int | None = None,
        positivePoints=None,
        negativePoints=None,
        window=None,
        onFrame: Callable[[FramePrediction, int, int], None] | None = None,
        cancelEvent: threading.Event | None = None,
        saveState: Callable[[], object] | None = None,
    ) -> PropagationResult:
        """Propagate a segment (or several, one object each) from the frames where it is drawn.

        Args:
            sourceNode: a scalar volume node (propagate across its slices), or a sequence
                browser / sequence node of video frames (propagate across frames; the masks go
                into a segmentation sequence in the same browser).
            segmentationNode: the segmentation holding the segment(s).
            segmentId: a segment id, or a list of them (several segments = several objects).
            direction: ``"forward"``, ``"backward"`` or ``"both"``.
            axis: volumes only: IJK axis to walk (0 = I, 1 = J, 2 = K); default: the axis normal
                to the slice(s) where the segment is drawn.
            positivePoints, negativePoints: optional clicks for the first segment: markups
                fiducial nodes or ``(N, 3)`` RAS lists (on a video: on the browser's current frame).
            window: volumes: the intensity window the model sees (``sam2s`` preset name or
                ``(lower, upper)``); default: the volume's display window/level.
            onFrame: ``onFrame(prediction, framesDone, framesTotal)`` after each frame.
            cancelEvent: set it to stop; a cancelled propagation changes nothing.
            saveState: saves the undo state (default: this logic's own, see :meth:`undoLastPropagation`).

        Returns:
            The :class:`PropagationResult`, with ``written`` telling which frames changed.
        """
        request = self.preparePropagation(
            sourceNode, segmentationNode, segmentId, direction, axis, positivePoints, negativePoints, window
        )
        result = self.runPropagation(request, onFrame, cancelEvent)
        if not result.cancelled:
            self.applyPropagation(request, result, saveState)
        return result

    def preparePropagation(
        self,
        sourceNode,
        segmentationNode,
        segmentId: str | Sequence[str],
        direction: str = "both",
        axis: int | None = None,
        positivePoints=None,
        negativePoints=None,
        window=None,
        framePrompts: dict[int, FramePrompt] | None = None,
        skipSegmentsWithoutPrompts: bool = False,
    ) -> PropagationRequest:
        """Read the frames and prompts (main thread); the arguments are those of
        :meth:`propagateSegment`, plus:

        Args:
            framePrompts: clicks / boxes for the first segment in frame pixels,
                ``{frameIndex: FramePrompt}`` (the Segment Editor effect's view prompts).
            skipSegmentsWithoutPrompts: with several segments, leave out those (other than the
                first) that have no prompt instead of raising.

        Raises:
            PromptError: there is nothing to propagate from, or a node is unsuitable.
        """
        checkDirection(direction)
        if segmentationNode is None or not segmentationNode.IsA("vtkMRMLSegmentationNode"):
            raise PromptError("segmentationNode must be a segmentation node")
        segmentIds = [segmentId] if isinstance(segmentId, str) else list(segmentId)
        if not segmentIds or len(set(segmentIds)) != len(segmentIds):
            raise PromptError(f"give one or more distinct segment ids, got {segmentIds!r}")
        sourceNode = self._videoBrowserFor(sourceNode) or sourceNode
        if sourceNode is not None and sourceNode.IsA("vtkMRMLScalarVolumeNode"):
            target = VolumeTarget(
                sourceNode, segmentationNode, segmentIds, axis, positivePoints, negativePoints, window,
                framePrompts, skipSegmentsWithoutPrompts,
            )  # fmt: skip
        else:
            if axis is not None:
                raise PromptError("axis applies to volumes; a video is walked frame by frame")
            target = SequenceTarget(
                sourceNode, segmentationNode, segmentIds, positivePoints, negativePoints, window,
                self._sequencesLogic(segmentationNode.GetScene()), framePrompts, skipSegmentsWithoutPrompts,
            )  # fmt: skip
        return PropagationRequest(target, direction)

    def runPropagation(
        self,
        request: PropagationRequest,
        onFrame: Callable[[FramePrediction, int, int], None] | None = None,
        cancelEvent: threading.Event | None = None,
    ) -> PropagationResult:
        """Run the model over the frames (any thread: touches no MRML and no Qt)."""
        predictions, categories = {}, _CategoryAverage()
        total = request.totalFrames
        iterator = self.backend.propagate(request.frames, request.prompts, request.direction)
        try:
            for done, prediction in enumerate(iterator, start=1):
                if cancelEvent is not None and cancelEvent.is_set():
                    return PropagationResult(cancelled=True)
                predictions[prediction.frameIndex] = {
                    sid: np.asarray(m, bool) for sid, m in prediction.masks.items()
                }
                categories.add(prediction)
                if onFrame is not None:
                    onFrame(prediction, done, total)
        finally:
            iterator.close()  # stops the model at once when cancelled
        if cancelEvent is not None and cancelEvent.is_set():
            return PropagationResult(cancelled=True)
        return PropagationResult(predictions, categories.means())

    def applyPropagation(
        self,
        request: PropagationRequest,
        result: PropagationResult,
        saveState: Callable[[], object] | None = None,
    ) -> dict[str, list[int]]:
        """Write the frames that changed (main thread); one undo state covers them all."""
        if result.cancelled:
            raise ValueError("a cancelled propagation cannot be applied")
        editor = self._editorFor(request.target.segmentationNode.GetScene())
        result.written = request.target.apply(result.predictions, editor, saveState)
        if result.written:
            self._undoLast = request.target.undoStep(editor)
        return result.written

    def previewFrame(self, request: PropagationRequest, frameIndex: int) -> FramePrediction:
        """The masks of one frame from that frame's prompts alone (the live preview of clicks)."""
        return self.backend.predictFrame(request.frames, frameIndex, request.prompts)

    def undoLastPropagation(self) -> None:
        """Return to the state before the last applied propagation.

        Volumes use the segment editor logic's undo (``vtkSlicerSegmentEditorLogic``); videos
        restore the segmentation sequence's items. In the Segment Editor the effect saves its
        undo state in the editor instead, so Ctrl+Z works there.
        """
        if self._undoLast is None:
            raise RuntimeError("nothing to undo: no propagation was applied")
        undo, self._undoLast = self._undoLast, None
        undo()

    # -------------------------------------------------------------- categories
    @staticmethod
    def writeCategory(segmentationNode, segmentId: str, category: str, where: str = "name") -> None:
        """Write a predicted instrument category to a segment's ``"name"`` or ``"terminology"``."""
        segment = segmentationNode.GetSegmentation().GetSegment(segmentId)
        if segment is None:
            raise PromptError(f"segment {segmentId!r} is not in {segmentationNode.GetName()!r}")
        if where == "name":
            segment.SetName(category)
        elif where == "terminology":
            code = category.lower().replace(" ", "-")
            entry = slicer.vtkSlicerTerminologiesModuleLogic.SerializeTerminologyEntry(
                CATEGORY_TERMINOLOGY_CONTEXT,
                "instrument", "SAM2S", "Surgical instrument",
                code, "SAM2S", category,
                "", "", "",
                "", "", "", "", "", "", "",
            )  # fmt: skip
            segment.SetTerminology(entry)
        else:
            raise ValueError(f"where must be 'name' or 'terminology', got {where!r}")

    # -------------------------------------------------------------- files
    @staticmethod
    def saveSegmentation(segmentationNode, path: str) -> str:
        """Write a ``.seg.nrrd`` (to a temporary name first, then renamed)."""
        path = os.path.abspath(path)
        if not path.endswith(".seg.nrrd"):
            raise ValueError(f"segmentation files end in .seg.nrrd, got {path}")
        partial = path[: -len(".seg.nrrd")] + ".partial.seg.nrrd"
        storage = slicer.vtkMRMLSegmentationStorageNode()
        storage.SetFileName(partial)
        try:
            if not storage.WriteData(segmentationNode):
                raise OSError(f"could not write {path}")
            os.replace(partial, path)
        finally:
            if os.path.exists(partial):
                os.unlink(partial)
        return path

    # -------------------------------------------------------------- helpers
    def _editorFor(self, scene) -> SegmentEditorAccess:
        key = id(scene)
        if key not in self._editors or self._editors[key].scene is not scene:
            self._editors[key] = SegmentEditorAccess(scene)
        return self._editors[key]

    def _sequencesLogic(self, scene):
        """The application's Sequences logic, or (headless) one of our own for this scene."""
        if IN_SLICER_APPLICATION and hasattr(slicer, "modules") and hasattr(slicer.modules, "sequences"):
            return slicer.modules.sequences.logic()
        if self._headlessSequences is None or self._headlessSequences.GetMRMLScene() is not scene:
            self._headlessSequences = slicer.vtkSlicerSequencesLogic()
            self._headlessSequences.SetMRMLScene(scene)
        return self._headlessSequences

    def _videoBrowserFor(self, sourceNode):
        """A single-slice volume that is the proxy of a video frame means "this video"."""
        if sourceNode is None or not sourceNode.IsA("vtkMRMLScalarVolumeNode"):
            return None
        image = sourceNode.GetImageData()
        if image is None or image.GetDimensions()[2] != 1 or sourceNode.GetScene() is None:
            return None
        scene = sourceNode.GetScene()
        if not scene.IsNodeClassRegistered("vtkMRMLSequenceBrowserNode"):
            return None
        for index in range(scene.GetNumberOfNodesByClass("vtkMRMLSequenceBrowserNode")):
            browser = scene.GetNthNodeByClass(index, "vtkMRMLSequenceBrowserNode")
            if browser.IsProxyNodeID(sourceNode.GetID()):
                return browser
        return None


_sharedLogic: SAM2SLogic | None = None


def sharedLogic() -> SAM2SLogic:
    """The one logic (and loaded model) that the module panel and the effect share, configured
    from the application settings."""
    global _sharedLogic
    if _sharedLogic is None:
        _sharedLogic = SAM2SLogic()
    if IN_SLICER_APPLICATION:
        settings = qt.QSettings()
        checkpoint = settings.value(SETTINGS_PREFIX + "Checkpoint", DEMO_CHECKPOINT) or DEMO_CHECKPOINT
        _sharedLogic.setModel(
            settings.value(SETTINGS_PREFIX + "ModelName", DEMO_MODEL) or DEMO_MODEL,
            checkpoint,
            settings.value(SETTINGS_PREFIX + "Device", "auto") or "auto",
            settings.value(SETTINGS_PREFIX + "ServerUrl", "") or None,  # a MONAI Label server, if set
        )
        _sharedLogic.confirm = lambda message: slicer.util.confirmOkCancelDisplay(
            message, windowTitle="SAM2S"
        )
    return _sharedLogic


# ==================================================================================== module
class SAM2S(ScriptedLoadableModule):
    """Module description, and registration of the Segment Editor effect at startup."""

    def __init__(self, parent) -> None:
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "SAM2S"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = ["Segmentations", "Sequences"]
        self.parent.contributors = ["SAM2S developers"]
        self.parent.helpText = (
            "Segment Anything 2 for surgical videos and medical volumes. Click or drag a box on a "
            "slice (or video frame) in the Segment Editor's <b>SAM2S</b> effect, check the preview, "
            "then propagate across the volume's slices or the video's frames."
        )
        self.parent.acknowledgementText = (
            "SAM2S (arXiv 2511.16618) builds on Segment Anything 2 (Meta AI). Runs with PyTorch "
            "through the PyTorch extension."
        )
        slicer.app.connect("startupCompleted()", registerSegmentEditorEffect)


def registerSegmentEditorEffect() -> None:
    """Add the SAM2S effect to the Segment Editor (called once Slicer has started)."""
    import qSlicerSegmentationsEditorEffectsPythonQt as effects

    instance = effects.qSlicerSegmentEditorScriptedEffect(None)
    path = os.path.join(os.path.dirname(__file__), "SegmentEditorSAM2SLib", "SegmentEditorEffect.py")
    instance.setPythonSource(path.replace("\\", "/"))
    instance.self().register()


class SAM2SWidget(ScriptedLoadableModuleWidget):
    """Model settings (model, weights, device), dependency installation, and a shortcut to the effect."""

    DEVICES = ("auto", "cuda", "cpu")

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        settings = qt.QSettings()

        modelBox = ctk.ctkCollapsibleButton()
        modelBox.text = "Model"
        self.layout.addWidget(modelBox)
        form = qt.QFormLayout(modelBox)

        self.modelNameEdit = qt.QLineEdit(settings.value(SETTINGS_PREFIX + "ModelName", DEMO_MODEL))
        self.modelNameEdit.toolTip = "A sam2s config name (sam2s_demo, sam2s_hiera_b+, sam2.1_hiera_t, ...)"
        form.addRow("Model:", self.modelNameEdit)

        self.weightsCombo = qt.QComboBox()
        self.weightsCombo.addItems(["Demo model", "Local file", "Download"])
        form.addRow("Weights:", self.weightsCombo)
        self.checkpointPathEdit = ctk.ctkPathLineEdit()
        self.checkpointPathEdit.filters = ctk.ctkPathLineEdit.Files
        self.checkpointPathEdit.nameFilters = ["Checkpoints (*.pt *.pth)"]
        form.addRow("Checkpoint file:", self.checkpointPathEdit)
        self.urlEdit = qt.QLineEdit(settings.value(SETTINGS_PREFIX + "DownloadUrl", ""))
        form.addRow("Download address:", self.urlEdit)
        self.sha256Edit = qt.QLineEdit(settings.value(SETTINGS_PREFIX + "DownloadSha256", ""))
        self.sha256Edit.toolTip = "The SHA-256 the downloaded file must have; it is checked before use."
        form.addRow("SHA-256:", self.sha256Edit)

        self.deviceCombo = qt.QComboBox()
        self.deviceCombo.addItems(list(self.DEVICES))
        self.deviceCombo.currentText = settings.value(SETTINGS_PREFIX + "Device", "auto")
        form.addRow("Device:", self.deviceCombo)

        self.serverUrlEdit = qt.QLineEdit(settings.value(SETTINGS_PREFIX + "ServerUrl", ""))
        self.serverUrlEdit.placeholderText = "empty: run here; or http://host:8000 (a SAM2S MONAI Label server)"
        self.serverUrlEdit.toolTip = (
            "Address of a MONAI Label server running the SAM2S app. When set, inference runs there "
            "and no PyTorch is needed in Slicer."
        )
        form.addRow("Server:", self.serverUrlEdit)

        checkpoint = settings.value(SETTINGS_PREFIX + "Checkpoint", DEMO_CHECKPOINT) or DEMO_CHECKPOINT
        if checkpoint != DEMO_CHECKPOINT:
            self.weightsCombo.currentIndex = 1
            self.checkpointPathEdit.currentPath = checkpoint

        self.applyButton = qt.QPushButton("Use this model")
        self.applyButton.toolTip = (
            "Install what is missing (after asking), fetch the weights and load the model."
        )
        form.addRow(self.applyButton)
        self.statusLabel = qt.QLabel("")
        self.statusLabel.wordWrap = True
        form.addRow(self.statusLabel)

        self.openEditorButton = qt.QPushButton("Open the Segment Editor (SAM2S effect)")
        self.layout.addWidget(self.openEditorButton)
        self.layout.addStretch(1)

        self.weightsCombo.connect("currentIndexChanged(int)", self.updateWeightsRows)
        self.applyButton.connect("clicked()", self.onUseModel)
        self.openEditorButton.connect("clicked()", self.onOpenEditor)
        self.updateWeightsRows()

    def updateWeightsRows(self, *_) -> None:
        choice = self.weightsCombo.currentIndex
        self.checkpointPathEdit.enabled = choice == 1
        self.urlEdit.enabled = self.sha256Edit.enabled = choice == 2

    def onUseModel(self) -> None:
        from SAM2SLib.dependencies import ensureDependencies
        from SAM2SLib.weights import RemoteWeights, resolveCheckpoint

        logic = sharedLogic()
        confirm = logic.confirm
        serverUrl = self.serverUrlEdit.text.strip()
        if serverUrl:
            qt.QSettings().setValue(SETTINGS_PREFIX + "ServerUrl", serverUrl)
            sharedLogic()  # re-reads the settings: the remote backend needs no local model
            self.statusLabel.text = f"Ready: inference on the MONAI Label server at {serverUrl}."
            return
        qt.QSettings().setValue(SETTINGS_PREFIX + "ServerUrl", "")
        with slicer.util.tryWithErrorDisplay("SAM2S could not load the model.", waitCursor=True):
            ensureDependencies(confirm)
            choice = self.weightsCombo.currentIndex
            if choice == 0:
                spec = DEMO_CHECKPOINT
            elif choice == 1:
                spec = self.checkpointPathEdit.currentPath
            else:
                spec = RemoteWeights(self.urlEdit.text.strip(), self.sha256Edit.text.strip())
            checkpoint = resolveCheckpoint(spec, confirm=confirm)
            settings = qt.QSettings()
            settings.setValue(SETTINGS_PREFIX + "ModelName", self.modelNameEdit.text.strip() or DEMO_MODEL)
            settings.setValue(SETTINGS_PREFIX + "Checkpoint", checkpoint)
            settings.setValue(SETTINGS_PREFIX + "Device", self.deviceCombo.currentText)
            settings.setValue(SETTINGS_PREFIX + "DownloadUrl", self.urlEdit.text.strip())
            settings.setValue(SETTINGS_PREFIX + "DownloadSha256", self.sha256Edit.text.strip())
            logic = sharedLogic()
            _ = logic.backend.predictor  # load now, so the first click is fast
            self.statusLabel.text = f"Ready: {logic.settings.modelName} on {logic.backend.predictor.device}."

    def onOpenEditor(self) -> None:
        slicer.util.selectModule("SegmentEditor")
        editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
        editor.setActiveEffectByName("SAM2S")


# ==================================================================================== self-test
class SAM2STest(ScriptedLoadableModuleTest):
    """Runs inside Slicer (Developer > Self Tests): a propagation on a small synthetic volume with
    a reduced model of random weights. It checks geometry and undo, not segmentation quality."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear(0)

    def runTest(self) -> None:
        self.setUp()
        self.test_propagateAcrossSlices()

    def test_propagateAcrossSlices(self) -> None:
        self.delayDisplay("Building a volume and a segment drawn on one slice")
        voxels = (np.random.default_rng(0).random((6, 24, 20)) * 500).astype(np.int16)
        volume = slicer.util.addVolumeFromArray(voxels, name="SAM2S test volume")
        volume.SetSpacing(0.8, 0.6, 2.5)
        segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
        segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
        segmentId = segmentation.GetSegmentation().AddEmptySegment("tool")
        drawn = np.zeros(voxels.shape, np.uint8)
        drawn[3, 8:16, 6:14] = 1
        slicer.util.updateSegmentBinaryLabelmapFromArray(drawn, segmentation, segmentId, volume)

        self.delayDisplay("Propagating with a reduced model (random weights)")
        logic = SAM2SLogic("sam2.1_hiera_mini", checkpoint=None, device="cpu")
        result = logic.propagateSegment(volume, segmentation, segmentId, direction="both")
        self.assertFalse(result.cancelled)
        self.assertEqual(sorted(result.predictions), list(range(voxels.shape[0])))
        after = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segmentId, volume)
        np.testing.assert_array_equal(after[3], drawn[3])  # the drawn slice is a prompt, never rewritten
        for k, masks in result.predictions.items():
            if k != 3:
                np.testing.assert_array_equal(after[k] > 0, masks[segmentId])

        self.delayDisplay("One undo step restores the drawn slice only")
        logic.undoLastPropagation()
        restored = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segmentId, volume)
        np.testing.assert_array_equal(restored > 0, drawn > 0)
        self.delayDisplay("SAM2S self-test passed")
