"""Opening a datastore image for the task, and writing the label image it returns.

Every image is described by a :class:`~sam2s.data.sources.VolumeGeometry`, videos and 2D images
included (unit spacing, identity direction, frames along numpy axis 0), so one code path places
frame masks into the returned label for all of them.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sam2s.data.sources import ArraySource, FrameSource, SourceError, VolumeGeometry, open_source
from sam2s.monailabel.protocol import IndexLayout, InferRequest, RequestError

__all__ = ["IMAGE_SUFFIXES", "OpenedImage", "label_block", "open_image", "write_label"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


@dataclass(frozen=True)
class OpenedImage:
    """A datastore image opened as frames.

    Attributes:
        source: decodes one ``(H, W, 3)`` uint8 frame at a time.
        geometry: where frame ``f`` lies in the image's ``(z, y, x)`` array, and its world geometry.
        kind: ``"volume"``, ``"video"``, ``"frames"`` (a frame folder or frame stack) or ``"image"`` (2D).
    """

    source: FrameSource
    geometry: VolumeGeometry
    kind: str

    @property
    def layout(self) -> IndexLayout:
        shape = self.geometry.spatial_shape
        return IndexLayout(axis=self.geometry.axis, size=(shape[2], shape[1], shape[0]))


def open_image(path: str | Path, request: InferRequest) -> OpenedImage:
    """Open ``path`` the way ``request`` asks (axis, window, frame stack).

    Raises:
        RequestError: 404 when the file is gone, 400 when it cannot be read as asked.
    """
    path = Path(path)
    if not path.exists():
        raise RequestError(f"image file {str(path)!r} does not exist (any more)", status=404)
    try:
        if request.frame_stack:
            return _open_frame_stack(path, request)
        if path.suffix.lower() in IMAGE_SUFFIXES:
            if request.axis not in (None, 0) or request.window is not None:
                raise RequestError("axis and window apply to volumes; this is a 2D image")
            return _open_2d_image(path)
        source = open_source(path, axis=request.axis, window=request.window)
    except (SourceError, ValueError, OSError, RuntimeError) as error:
        if isinstance(error, RequestError):
            raise
        raise RequestError(f"cannot read image {path.name!r} as asked: {error}") from None
    volume = getattr(source.geometry, "volume", None)
    if volume is not None:
        if volume.is_time_series:
            source.close()
            raise RequestError("4D time series are not supported by this task; give a 3D volume or a video")
        return OpenedImage(source, volume, "volume")
    if source.num_frames is None:
        raise RequestError(
            f"{path.name!r} has no known frame count; give a video file, frame folder or volume"
        )
    return OpenedImage(
        source, _unit_geometry(source.num_frames, source.height, source.width), source.geometry.kind
    )


def _unit_geometry(num_frames: int, height: int, width: int) -> VolumeGeometry:
    return VolumeGeometry(
        array_shape=(num_frames, height, width), spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0),
        direction=_IDENTITY, axis=0,
    )  # fmt: skip


def _open_2d_image(path: Path) -> OpenedImage:
    from PIL import Image

    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"))
    source = ArraySource(pixels[None])
    return OpenedImage(source, _unit_geometry(1, source.height, source.width), "image")


def _open_frame_stack(path: Path, request: InferRequest) -> OpenedImage:
    """A ``(T, H, W)`` grey or ``(T, H, W)`` x 3-component uint8 image read whole into memory,
    frames along its slowest axis: what a client uploads to get exactly its own frames back."""
    import SimpleITK as sitk

    if request.axis not in (None, 0):
        raise RequestError("a frame stack is walked along its first numpy axis; leave 'axis' unset")
    image = sitk.ReadImage(str(path))
    if image.GetDimension() != 3:
        raise RequestError(
            f"a frame stack must be a 3D image (frames, rows, columns), got {image.GetDimension()}D"
        )
    frames = sitk.GetArrayFromImage(image)
    if image.GetNumberOfComponentsPerPixel() not in (1, 3):
        raise RequestError("a frame stack has 1 (grey) or 3 (RGB) components per pixel")
    source = ArraySource(frames, window=request.window)
    geometry = VolumeGeometry(
        array_shape=tuple(int(v) for v in frames.shape[:3]),
        spacing=tuple(float(v) for v in image.GetSpacing()),
        origin=tuple(float(v) for v in image.GetOrigin()),
        direction=tuple(float(v) for v in image.GetDirection()),
        axis=0,
    )
    return OpenedImage(source, geometry, "frames")


# ---------------------------------------------------------------------------------- output
def label_block(
    frame_labels: dict[int, np.ndarray], geometry: VolumeGeometry, whole: bool
) -> tuple[np.ndarray, VolumeGeometry, int]:
    """Place ``{frame: (H, W) labels}`` into a ``(z, y, x)`` label array.

    Args:
        frame_labels: label images of the computed frames.
        geometry: the image's geometry.
        whole: cover the whole image; else only the frames from the first to the last computed one.

    Returns:
        ``(labels, geometry of labels, index of its first frame)``; the geometry's origin is moved
        so the block lies exactly where those frames are in the image.
    """
    dtype = np.uint8 if all(int(v.max(initial=0)) <= 255 for v in frame_labels.values()) else np.uint16
    axis = geometry.axis
    if whole:
        first, last = 0, geometry.num_frames - 1
    else:  # nothing computed: one empty frame, not the whole (maybe very long) video
        first, last = (min(frame_labels), max(frame_labels)) if frame_labels else (0, 0)
    shape = list(geometry.spatial_shape)
    shape[axis] = last - first + 1
    block = np.zeros(shape, dtype=dtype)
    along_frames = np.moveaxis(block, axis, 0)  # a view: writing it fills ``block``
    for frame, labels in frame_labels.items():
        along_frames[frame - first] = labels
    offset = np.zeros(3)
    offset[2 - axis] = first  # ITK index order (i, j, k)
    direction = np.asarray(geometry.direction, dtype=float).reshape(3, 3)
    origin = np.asarray(geometry.origin, dtype=float) + direction @ (
        np.asarray(geometry.spacing, dtype=float) * offset
    )
    block_geometry = VolumeGeometry(
        array_shape=tuple(shape), spacing=geometry.spacing, origin=tuple(float(v) for v in origin),
        direction=geometry.direction, axis=axis,
    )  # fmt: skip
    return block, block_geometry, first


def write_label(
    labels: np.ndarray, geometry: VolumeGeometry, extension: str, folder: str | None = None
) -> str:
    """Write a ``(z, y, x)`` label array (a ``.png`` when it is one 2D frame) and return its path.

    The file is written under a temporary name and renamed, so a reader never sees half a file.
    """
    import SimpleITK as sitk

    from sam2s.writers import label_image

    folder = folder or tempfile.gettempdir()
    stem = os.path.join(folder, f"sam2s-label-{uuid.uuid4().hex}")
    partial, final = f"{stem}.partial{extension}", f"{stem}{extension}"
    if extension == ".png":
        if geometry.num_frames != 1:
            raise RequestError("a .png result holds one frame; ask for .nii.gz or .nrrd for several")
        from PIL import Image

        frame = np.moveaxis(labels, geometry.axis, 0)[0]
        Image.fromarray(frame).save(partial, format="PNG")
    else:
        sitk.WriteImage(label_image(labels, geometry), partial, useCompression=True)
    os.replace(partial, final)
    return final
