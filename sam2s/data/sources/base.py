"""The frame-source interface shared by videos, frame folders, volumes and in-memory arrays.

A :class:`FrameSource` hands out one ``(H, W, 3)`` uint8 RGB frame at a time, decoded when it
is asked for, so a two-hour video or a large volume never sits in memory as a whole. Its
:class:`SourceGeometry` records what a writer needs to put a ``(H, W)`` mask back exactly where
it came from: per-frame timestamps for a video, file names for a frame folder, and spacing,
origin, direction and slicing axis for a volume.

Coordinates: a point ``(x, y)`` on a frame is ``(column, row)`` of the ``(H, W)`` frame array.
For a volume slice that is ``(column, row)`` of the 2D slice array described by
:meth:`VolumeGeometry.frame_region`; no flip or transpose is applied for display.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Literal

import numpy as np
from typing_extensions import Self

__all__ = [
    "FrameIndexError",
    "FrameSource",
    "FrameTiming",
    "SourceError",
    "SourceGeometry",
    "SourceKind",
    "StreamEndedError",
    "VolumeGeometry",
]

SourceKind = Literal["video", "frames", "volume", "array", "live"]


class SourceError(ValueError):
    """An input that cannot be used as a frame source (unreadable, truncated, unsupported, inconsistent)."""


class FrameIndexError(IndexError):
    """A frame index outside the frames a source holds."""


class StreamEndedError(FrameIndexError):
    """A live stream ended before the requested frame."""


@dataclass(frozen=True, eq=False)
class FrameTiming:
    """Presentation timestamps of a video's frames, in the order frames are indexed.

    Frame ``i`` is the ``i``-th frame the decoder presents (timestamps ascending), so a variable
    frame rate video is indexed without gaps or duplicates.

    Attributes:
        time_base: seconds per timestamp unit.
        pts: ``(T,)`` int64 presentation timestamps, strictly increasing.
        average_rate: the container's nominal frames per second, when it states one.
    """

    time_base: Fraction
    pts: np.ndarray
    average_rate: Fraction | None

    @property
    def times(self) -> np.ndarray:
        """``(T,)`` float64 presentation time of every frame in seconds."""
        return self.pts.astype(np.float64) * float(self.time_base)

    @property
    def fps(self) -> float | None:
        """Frames per second: the nominal rate, else the mean rate over the timestamps."""
        if self.average_rate is not None and self.average_rate > 0:
            return float(self.average_rate)
        if len(self.pts) >= 2:
            span = float(self.pts[-1] - self.pts[0]) * float(self.time_base)
            return (len(self.pts) - 1) / span if span > 0 else None
        return None


@dataclass(frozen=True)
class VolumeGeometry:
    """Where the frames of a volume source come from in the voxel array, and that array's world geometry.

    Array axes follow SimpleITK's numpy view: ``(z, y, x)`` for a 3D image and ``(t, z, y, x)``
    for a 4D time series. Spacing, origin and direction follow ITK's order ``(x, y, z[, t])`` and
    its LPS world space, exactly as SimpleITK reports them.

    A 3D volume is walked along ``axis``: frame ``i`` is the slice at index ``i`` of that array
    axis, and the 2D frame keeps the other two axes in array order (axis 0 -> ``(y, x)``,
    axis 1 -> ``(z, x)``, axis 2 -> ``(z, y)``). A 4D series is walked along time: frame ``i``
    is time point ``i`` cut at ``fixed_slice`` along ``axis``.

    Attributes:
        array_shape: numpy shape of the whole image, ``(z, y, x)`` or ``(t, z, y, x)``.
        spacing: voxel size per ITK axis ``(x, y, z[, t])``.
        origin: world position of voxel ``(0, 0, 0[, 0])``.
        direction: row-major ``D x D`` direction cosine matrix (``D`` = 3 or 4).
        axis: spatial array axis, 0/1/2 of ``(z, y, x)``, that frames are cut across.
        fixed_slice: for a 4D series the slice index along ``axis`` shown at every time point;
            ``None`` for a 3D volume.
    """

    array_shape: tuple[int, ...]
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]
    axis: int
    fixed_slice: int | None = None

    def __post_init__(self) -> None:
        if len(self.array_shape) not in (3, 4):
            raise ValueError(f"a volume has 3 or 4 array axes, got shape {self.array_shape}")
        if self.axis not in (0, 1, 2):
            raise ValueError(f"axis must be 0, 1 or 2 of the (z, y, x) array, got {self.axis}")
        if self.is_time_series and self.fixed_slice is None:
            raise ValueError("a 4D time series needs fixed_slice, the slice shown at every time point")

    @property
    def is_time_series(self) -> bool:
        return len(self.array_shape) == 4

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        """``(z, y, x)`` size of one 3D volume."""
        return tuple(self.array_shape[-3:])  # type: ignore[return-value]

    @property
    def num_frames(self) -> int:
        return self.array_shape[0] if self.is_time_series else self.array_shape[self.axis]

    @property
    def frame_shape(self) -> tuple[int, int]:
        """``(H, W)`` of one frame: the two spatial axes other than ``axis``, in array order."""
        kept = [size for index, size in enumerate(self.spatial_shape) if index != self.axis]
        return kept[0], kept[1]

    def frame_region(self, frame_index: int) -> tuple[int | slice, ...]:
        """Numpy index into the whole image array that selects frame ``frame_index``.

        ``array[geometry.frame_region(i)]`` is the ``(H, W)`` frame ``i``; writers assign a
        ``(H, W)`` label slice through the same index, so reading and writing agree voxel for voxel.
        """
        spatial: list[int | slice] = [slice(None)] * 3
        if self.is_time_series:
            spatial[self.axis] = int(self.fixed_slice)  # type: ignore[arg-type]
            return (int(frame_index), *spatial)
        spatial[self.axis] = int(frame_index)
        return tuple(spatial)


@dataclass(frozen=True, eq=False)
class SourceGeometry:
    """What a writer needs to map a frame's mask back onto the input.

    Attributes:
        kind: which kind of source produced the frames.
        height: frame height ``H`` in pixels.
        width: frame width ``W`` in pixels.
        num_frames: number of frames, ``None`` for a live stream.
        path: the file or folder read, when there is one.
        timing: per-frame timestamps (videos).
        frame_names: file name of every frame (frame folders).
        volume: voxel geometry and slicing (volumes).
    """

    kind: SourceKind
    height: int
    width: int
    num_frames: int | None
    path: str | None = None
    timing: FrameTiming | None = None
    frame_names: tuple[str, ...] | None = None
    volume: VolumeGeometry | None = field(default=None)

    @property
    def fps(self) -> float | None:
        """Frames per second of a video, ``None`` for sources without a time axis."""
        return None if self.timing is None else self.timing.fps


class FrameSource(ABC):
    """A sequence of RGB frames decoded on demand.

    Subclasses set ``num_frames``, ``height``, ``width`` and ``geometry`` in their constructor
    and implement :meth:`read`. Sequential reads must be cheap; random reads must return
    exactly the frame a sequential pass would return at that index.

    Use as a context manager (or call :meth:`close`) to release file handles.
    """

    num_frames: int | None
    height: int
    width: int
    geometry: SourceGeometry

    @abstractmethod
    def read(self, index: int) -> np.ndarray:
        """Return frame ``index`` as a new ``(H, W, 3)`` uint8 RGB array the caller may modify."""

    def close(self) -> None:
        """Release files and decoders; the source cannot be read afterwards."""

    @property
    def is_live(self) -> bool:
        """True for a stream whose length is unknown until it ends."""
        return self.num_frames is None

    def __len__(self) -> int:
        if self.num_frames is None:
            raise TypeError(
                f"{type(self).__name__} is a live stream of unknown length; read frames one by one "
                "(or iterate) until it raises StreamEndedError at its end"
            )
        return self.num_frames

    def __iter__(self) -> Iterator[np.ndarray]:
        index = 0
        while self.num_frames is None or index < self.num_frames:
            try:
                frame = self.read(index)
            except StreamEndedError:
                return
            yield frame
            index += 1

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _checked_index(self, index: int) -> int:
        """Validate a frame index (non-negative integer below ``num_frames``) and return it as ``int``."""
        if isinstance(index, (bool, np.bool_)) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"frame index must be an integer, got {type(index).__name__} {index!r}")
        index = int(index)
        if index < 0 or (self.num_frames is not None and index >= self.num_frames):
            size = (
                "unknown length"
                if self.num_frames is None
                else f"{self.num_frames} frames (0..{self.num_frames - 1})"
            )
            raise FrameIndexError(f"frame index {index} is out of range for {self._describe()} with {size}")
        return index

    def _describe(self) -> str:
        path = self.geometry.path if getattr(self, "geometry", None) is not None else None
        return f"{type(self).__name__}({path})" if path else type(self).__name__


def as_rgb_frame(frame: np.ndarray, what: str) -> np.ndarray:
    """Check that ``frame`` is ``(H, W, 3)`` uint8, or widen a ``(H, W)`` uint8 grey frame to RGB."""
    if frame.dtype != np.uint8:
        raise SourceError(f"{what} must be uint8, got {frame.dtype}; window or scale it first")
    if frame.ndim == 2:
        return np.repeat(frame[:, :, None], 3, axis=2)
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise SourceError(f"{what} must be (H, W, 3) RGB or (H, W) grey, got shape {frame.shape}")
    return frame
