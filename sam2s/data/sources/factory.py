"""``open_source``: pick the right frame source for a path, an array or an open source."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sam2s.data.sources.array import ArraySource
from sam2s.data.sources.base import FrameSource, SourceError
from sam2s.data.sources.folder import FRAME_SUFFIXES, FrameFolderSource, list_frame_files
from sam2s.data.sources.video import VIDEO_SUFFIXES, VideoFileSource
from sam2s.data.sources.volume import VOLUME_SUFFIXES, VolumeSource, volume_suffix
from sam2s.data.sources.windowing import WindowSpec

__all__ = ["open_source"]


def open_source(
    path_or_source: str | Path | np.ndarray | FrameSource,
    *,
    axis: int | str | None = None,
    window: WindowSpec = None,
    fixed_slice: int | None = None,
    series_id: str | None = None,
) -> FrameSource:
    """Open a video file, a frame folder, a volume, a DICOM folder or an array as a :class:`FrameSource`.

    Args:
        path_or_source: a file or folder path, a ``(T, H, W, 3)`` / ``(T, H, W)`` array, or an
            already open source (returned unchanged).
        axis: volumes only: array axis 0/1/2 of ``(z, y, x)`` or ``"axial"``/``"coronal"``/``"sagittal"``.
        window: volumes and grey arrays only: intensity window preset or ``(lower, upper)``.
        fixed_slice: 4D volumes only: the slice shown at every time point.
        series_id: DICOM folders only: the series to read when there are several.

    The type is chosen by suffix (``.mp4 .avi .mkv .mov ...`` video; ``.nii .nii.gz .nrrd .nhdr
    .mha .mhd`` volume); a folder of ``.jpg/.png`` files is a frame folder, and a folder without
    them is read as a DICOM series.

    Raises:
        FileNotFoundError: the path does not exist.
        SourceError: the type is not supported or the input is unreadable.
        ValueError: an option does not apply to this kind of input.
    """
    volume_options = {"axis": axis, "fixed_slice": fixed_slice, "series_id": series_id}
    if isinstance(path_or_source, FrameSource):
        given = [name for name, value in {**volume_options, "window": window}.items() if value is not None]
        if given:
            raise ValueError(
                f"{', '.join(given)} cannot change a source that is already open; pass the path instead"
            )
        return path_or_source
    if isinstance(path_or_source, np.ndarray):
        _reject(volume_options, "an in-memory array")
        return ArraySource(path_or_source, window=window)
    if not isinstance(path_or_source, (str, Path)):
        raise TypeError(
            f"cannot open {type(path_or_source).__name__} as frames; pass a path, a numpy array or a FrameSource"
        )

    path = Path(path_or_source)
    if not path.exists():
        raise FileNotFoundError(f"no such file or folder: {path}")
    if path.is_dir():
        if not any(entry.is_file() and not entry.name.startswith(".") for entry in path.iterdir()):
            raise SourceError(f"folder {path} is empty; expected .jpg/.png frames or a DICOM series")
        if list_frame_files(path):
            _reject({**volume_options, "window": window}, f"the frame folder {path}")
            return FrameFolderSource(path)
        return VolumeSource(path, axis=0 if axis is None else axis, window=window, series_id=series_id)
    if volume_suffix(path) is not None:
        if series_id is not None:
            raise ValueError("series_id applies to DICOM folders only")
        return VolumeSource(path, axis=0 if axis is None else axis, window=window, fixed_slice=fixed_slice)
    if path.suffix.lower() in VIDEO_SUFFIXES:
        _reject({**volume_options, "window": window}, f"the video {path}")
        return VideoFileSource(path)
    raise SourceError(
        f"unsupported file type {path.suffix or '(no suffix)'!r} for {path}; supported: videos "
        f"({' '.join(VIDEO_SUFFIXES)}), volumes ({' '.join(VOLUME_SUFFIXES)}), a folder of frames "
        f"({' '.join(FRAME_SUFFIXES)}) or a DICOM series folder"
    )


def _reject(options: dict[str, object], what: str) -> None:
    given = [name for name, value in options.items() if value is not None]
    if given:
        raise ValueError(f"{', '.join(given)} apply to volumes only, not to {what}")
