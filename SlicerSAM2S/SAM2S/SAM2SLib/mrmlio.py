"""MRML plumbing that needs only slicer-core: voxels as numpy, segments in a volume's voxel grid,
slice-exact segment edits with undo.

Array conventions: a volume's voxels are ``(K, J, I)`` numpy arrays (Slicer's
``arrayFromVolume`` order); an IJK axis ``a`` (0 = I, 1 = J, 2 = K) is array axis ``2 - a``.
Walking a volume along IJK axis ``a`` gives frames whose rows and columns are the two remaining
array axes in array order: along K a frame is ``(J, I)``, along J ``(K, I)``, along I ``(K, J)``.
"""

from __future__ import annotations

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

__all__ = [
    "SegmentEditorAccess",
    "arrayFromOrientedImage",
    "ensureReferenceGeometry",
    "ensureSegmentationConverterRules",
    "ensureSequenceNodeClasses",
    "ijkAxisFromRasNormal",
    "ijkToRasArray",
    "matrixToArray",
    "orientedImageFromArray",
    "referenceGeometry",
    "segmentArray",
    "voxelArray",
    "worldToIjk",
]

_CONVERTER_RULES = (
    "vtkBinaryLabelmapToClosedSurfaceConversionRule",
    "vtkClosedSurfaceToBinaryLabelmapConversionRule",
    "vtkClosedSurfaceToFractionalLabelmapConversionRule",
    "vtkFractionalLabelmapToClosedSurfaceConversionRule",
)
_SEQUENCE_CLASSES = ("vtkMRMLSequenceNode", "vtkMRMLSequenceBrowserNode", "vtkMRMLSequenceStorageNode")


def ensureSegmentationConverterRules() -> None:
    """Register the representation converters the Slicer application registers at startup.

    Without them a headless segmentation cannot even hold an empty binary labelmap. Rules that
    are already registered (always the case inside the application) are left alone.
    """
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    registered = {rule.GetClassName() for rule in factory.GetConverterRules()}
    for className in _CONVERTER_RULES:
        if className not in registered and hasattr(slicer, className):
            factory.RegisterConverterRule(getattr(slicer, className)())


def ensureSequenceNodeClasses(scene) -> None:
    """Register the Sequences node classes on a scene (the application's Sequences module does it)."""
    for className in _SEQUENCE_CLASSES:
        if not scene.IsNodeClassRegistered(className):
            scene.RegisterNodeClass(getattr(slicer, className)())


def matrixToArray(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def _arrayToMatrix(array: np.ndarray) -> vtk.vtkMatrix4x4:
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(array[r, c]))
    return matrix


def ijkToRasArray(volumeNode) -> np.ndarray:
    """``(4, 4)`` IJK-to-RAS matrix of a volume node (its own frame, before parent transforms)."""
    matrix = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(matrix)
    return matrixToArray(matrix)


def worldToIjk(volumeNode, rasPoints) -> np.ndarray:
    """``(N, 3)`` world RAS points -> ``(N, 3)`` continuous IJK of the volume (parent transforms applied)."""
    points = np.asarray(rasPoints, dtype=float).reshape(-1, 3)
    parent = volumeNode.GetParentTransformNode()
    if parent is not None:
        fromWorld = vtk.vtkGeneralTransform()
        parent.GetTransformFromWorld(fromWorld)
        points = np.array([fromWorld.TransformPoint(*p) for p in points]).reshape(-1, 3)
    rasToIjk = np.linalg.inv(ijkToRasArray(volumeNode))
    return (rasToIjk[:3, :3] @ points.T).T + rasToIjk[:3, 3]


def ijkAxisFromRasNormal(volumeNode, normalRas) -> int:
    """The IJK axis (0 = I, 1 = J, 2 = K) closest to a slice view's normal, e.g. to walk the
    volume across the slices the user is looking at."""
    rasToIjk = np.linalg.inv(ijkToRasArray(volumeNode)[:3, :3])
    direction = rasToIjk @ np.asarray(normalRas, dtype=float)
    return int(np.argmax(np.abs(direction) / np.linalg.norm(rasToIjk, axis=1)))


def voxelArray(volumeNode) -> np.ndarray:
    """A *view* of a volume's voxels, ``(K, J, I)`` or ``(K, J, I, C)``; copy before changing it."""
    image = volumeNode.GetImageData()
    if image is None or image.GetPointData().GetScalars() is None:
        raise ValueError(f"volume {volumeNode.GetName()!r} has no voxels")
    dims = image.GetDimensions()
    scalars = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    components = image.GetNumberOfScalarComponents()
    shape = (dims[2], dims[1], dims[0]) + ((components,) if components > 1 else ())
    return scalars.reshape(shape)


def orientedImageFromArray(arrayKji: np.ndarray, imageToWorld: np.ndarray, startIjk=(0, 0, 0)):
    """A uint8 ``vtkOrientedImageData`` holding ``arrayKji`` whose first voxel sits at index ``startIjk``."""
    k, j, i = arrayKji.shape
    i0, j0, k0 = (int(v) for v in startIjk)
    image = slicer.vtkOrientedImageData()
    image.SetExtent(i0, i0 + i - 1, j0, j0 + j - 1, k0, k0 + k - 1)
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())[:] = np.ascontiguousarray(
        arrayKji, np.uint8
    ).ravel()
    image.SetImageToWorldMatrix(_arrayToMatrix(imageToWorld))
    return image


def arrayFromOrientedImage(image) -> np.ndarray:
    """A copy of an oriented image's scalars as ``(K, J, I)``."""
    i0, i1, j0, j1, k0, k1 = image.GetExtent()
    if i1 < i0 or j1 < j0 or k1 < k0:
        return np.zeros((0, 0, 0), np.uint8)
    scalars = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    return scalars.reshape(k1 - k0 + 1, j1 - j0 + 1, i1 - i0 + 1).copy()


def referenceGeometry(volumeNode, segmentationNode):
    """The volume's voxel grid expressed in the segmentation's coordinate frame."""
    return slicer.vtkSlicerSegmentationsModuleLogic.CreateOrientedImageDataFromVolumeNode(
        volumeNode, segmentationNode.GetParentTransformNode()
    )


def segmentArray(segmentationNode, segmentId: str, reference) -> np.ndarray:
    """A segment resampled (nearest neighbour) onto a reference grid: ``(K, J, I)`` bool."""
    i0, i1, j0, j1, k0, k1 = reference.GetExtent()
    shape = (k1 - k0 + 1, j1 - j0 + 1, i1 - i0 + 1)
    labelmap = slicer.vtkOrientedImageData()
    segmentationNode.GetBinaryLabelmapRepresentation(segmentId, labelmap)
    e = labelmap.GetExtent()
    if e[1] < e[0] or e[3] < e[2] or e[5] < e[4]:
        return np.zeros(shape, bool)
    resampled = slicer.vtkOrientedImageData()
    slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(
        labelmap, reference, resampled, False
    )
    return arrayFromOrientedImage(resampled).reshape(shape) > 0


def ensureReferenceGeometry(segmentationNode, volumeNode) -> None:
    """Give a segmentation the volume's geometry when it has none yet (as the Segment Editor does)."""
    name = slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()
    if not segmentationNode.GetSegmentation().GetConversionParameter(name):
        segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)


class SegmentEditorAccess:
    """A ``vtkSlicerSegmentEditorLogic`` for edits and undo, usable without the Slicer application.

    It uses a hidden, unsaved segment editor node of its own (so the user's editor settings, such
    as masking and overwrite modes, never change what propagation writes).
    """

    SINGLETON_TAG = "SAM2S"

    def __init__(self, scene) -> None:
        self.scene = scene
        node = scene.GetSingletonNode(self.SINGLETON_TAG, "vtkMRMLSegmentEditorNode")
        if node is None:
            node = slicer.vtkMRMLSegmentEditorNode()
            node.SetSingletonTag(self.SINGLETON_TAG)
            node.SetName("SAM2S editor")
            node.SetHideFromEditors(True)
            node.SetSaveWithScene(False)
            node = scene.AddNode(node)
        node.SetOverwriteMode(node.OverwriteNone)  # other segments are never touched
        self.editorNode = node
        self.logic = slicer.vtkSlicerSegmentEditorLogic()
        self.logic.SetMRMLScene(scene)
        self.logic.SetSegmentEditorNode(node)
        self.segmentationNode = None

    def bind(self, segmentationNode) -> None:
        if self.segmentationNode is not segmentationNode:
            self.logic.SetSegmentationNode(segmentationNode)
            self.segmentationNode = segmentationNode

    def saveStateForUndo(self) -> None:
        self.logic.SaveStateForUndo()

    def canUndo(self) -> bool:
        return bool(self.logic.CanUndo())

    def undo(self) -> None:
        self.logic.Undo()

    def replaceFrames(self, segmentId: str, reference, axis: int, frames: dict[int, np.ndarray]) -> None:
        """Set the segment's content on whole slices along IJK ``axis``; every other slice is kept.

        Args:
            segmentId: the segment to change (other segments are never modified).
            reference: the volume grid (:func:`referenceGeometry`).
            axis: IJK axis the frames are slices of.
            frames: ``{sliceIndex: (H, W) bool}``.
        """
        if not frames:
            return
        first, last = min(frames), max(frames)
        height, width = next(iter(frames.values())).shape
        add = np.zeros((last - first + 1, height, width), np.uint8)
        remove = np.zeros_like(add)
        for index, mask in frames.items():
            add[index - first] = mask
            remove[index - first] = ~np.asarray(mask, bool)
        extent = reference.GetExtent()
        start = [extent[0], extent[2], extent[4]]
        start[axis] += first
        imageToWorld = vtk.vtkMatrix4x4()
        reference.GetImageToWorldMatrix(imageToWorld)
        toWorld = matrixToArray(imageToWorld)
        arrayAxis = 2 - axis
        # Set = remove the complement, then add: a plain "set" would clear every other slice too.
        for slab, mode in (
            (remove, self.logic.ModificationModeRemove),
            (add, self.logic.ModificationModeAdd),
        ):
            if slab.any():
                image = orientedImageFromArray(np.moveaxis(slab, 0, arrayAxis), toWorld, start)
                self.logic.ModifySegmentByLabelmap(self.segmentationNode, segmentId, image, mode, False, True)
