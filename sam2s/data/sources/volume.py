"""3D volumes (NIfTI, NRRD, MHA/MHD, DICOM series) and 4D time series read slice by slice.

Files are read through SimpleITK, so the array axes are SimpleITK's numpy order ``(z, y, x)``
(``(t, z, y, x)`` for 4D) and the world geometry is ITK's LPS space. Frames are cut across one
array axis (see :class:`~sam2s.data.sources.base.VolumeGeometry` for the exact slicing and the
``(x, y) = (column, row)`` convention), turned to uint8 by an intensity window and replicated to
three channels.

Memory: a volume up to ``max_in_memory_bytes`` (1 GiB by default; a 512^3 int16 CT is 256 MiB)
is read once in its stored dtype, because slicing across the on-disk order of a compressed file
would otherwise decompress the whole file for every slice. A larger image (typically a 4D series)
is never loaded whole: each frame is read on its own through SimpleITK's streaming extraction.
A DICOM series is always read whole. Only the requested frame is ever converted to RGB.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from sam2s.data.sources.base import FrameSource, SourceError, SourceGeometry, VolumeGeometry
from sam2s.data.sources.windowing import IntensityWindow, WindowSpec, resolve_window, window_to_rgb

__all__ = ["PLANE_NAMES", "VOLUME_SUFFIXES", "VolumeSource", "axis_from_plane", "volume_suffix"]

VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm")

# The LPS world axis that each anatomical plane is normal to.
PLANE_NAMES = {"sagittal": 0, "coronal": 1, "axial": 2}

# Frames used to fit a percentile window when the volume is not in memory.
_WINDOW_SAMPLE_FRAMES = 16
# Voxels used to fit a percentile window on a volume in memory.
_WINDOW_SAMPLE_VOXELS = 1 << 21


def _import_sitk():
    try:
        import SimpleITK as sitk
    except ImportError as error:  # pragma: no cover - SimpleITK is in the "volume" extra
        raise ImportError("reading volumes needs SimpleITK: pip install 'sam2s[volume]'") from error
    return sitk


def volume_suffix(path: Path) -> str | None:
    """The volume suffix of ``path`` (``.nii.gz`` counts as one), or ``None`` if it is not a volume file."""
    name = path.name.lower()
    for suffix in sorted(VOLUME_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix
    return None


def axis_from_plane(plane: str, direction: tuple[float, ...]) -> int:
    """Array axis (0/1/2 of ``(z, y, x)``) whose slices are closest to an anatomical plane.

    Args:
        plane: ``"axial"``, ``"coronal"`` or ``"sagittal"``.
        direction: row-major 3x3 (or the spatial block of a 4x4) ITK direction matrix; column
            ``c`` is the LPS direction of ITK index axis ``c``.

    Each plane is normal to one LPS axis (sagittal: L, coronal: P, axial: S). Index axes are
    matched to world axes by the one-to-one assignment that best aligns them, so an oblique
    volume still maps every plane to a distinct array axis.
    """
    key = plane.strip().lower()
    if key not in PLANE_NAMES:
        raise ValueError(
            f"unknown plane {plane!r}; use one of {sorted(PLANE_NAMES)} or an array axis 0, 1, 2"
        )
    size = round(len(direction) ** 0.5)
    matrix = np.abs(np.asarray(direction, dtype=np.float64).reshape(size, size)[:3, :3])
    # assignment[w] = ITK index axis assigned to world axis w.
    assignment = max(
        itertools.permutations(range(3)), key=lambda perm: sum(matrix[w, perm[w]] for w in range(3))
    )
    itk_axis = assignment[PLANE_NAMES[key]]
    return 2 - itk_axis


@dataclass(frozen=True)
class _ImageHeader:
    """Header facts of an image, in ITK order."""

    size: tuple[int, ...]
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]
    dtype: np.dtype
    components: int

    @property
    def array_shape(self) -> tuple[int, ...]:
        return tuple(reversed(self.size))

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.size, dtype=np.int64)) * self.dtype.itemsize * self.components


class _VoxelsInMemory:
    """The whole image array, read once."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array
        self.array.flags.writeable = False  # frames are views of it; nothing may change the input

    def region(self, index: tuple[int | slice, ...]) -> np.ndarray:
        return self.array[index]

    def window_sample(self, frames: list[tuple[int | slice, ...]]) -> np.ndarray:
        flat = self.array.reshape(-1)
        return flat[:: max(1, flat.size // _WINDOW_SAMPLE_VOXELS)]


class _VoxelsStreamed:
    """Reads each requested region from the file with SimpleITK's extraction, nothing kept."""

    def __init__(self, reader, size: tuple[int, ...]) -> None:
        self._reader = reader
        self._size = size
        self._lock = threading.Lock()

    def region(self, index: tuple[int | slice, ...]) -> np.ndarray:
        sitk = _import_sitk()
        dimension = len(self._size)
        start, extent = [0] * dimension, list(self._size)
        for array_axis, item in enumerate(index):
            itk_axis = dimension - 1 - array_axis
            if isinstance(item, int):
                # Extract a one-voxel-thick block (size 1, not 0): collapsing a dimension of an
                # oblique image makes ITK reject the reduced direction matrix.
                start[itk_axis], extent[itk_axis] = item, 1
        with self._lock:
            self._reader.SetExtractIndex(start)
            self._reader.SetExtractSize(extent)
            block = sitk.GetArrayFromImage(self._reader.Execute())
        squeeze = tuple(axis for axis, item in enumerate(index) if isinstance(item, int))
        return np.squeeze(block, axis=squeeze)

    def window_sample(self, frames: list[tuple[int | slice, ...]]) -> np.ndarray:
        return np.concatenate([self.region(index).ravel() for index in frames])


class VolumeSource(FrameSource):
    """Slices of a 3D volume, or one slice of a 4D series over time, as RGB frames.

    Args:
        path: a .nii/.nii.gz/.nrrd/.nhdr/.mha/.mhd file, a folder holding a DICOM series, or
            one .dcm file of a series (the whole series is read).
        axis: array axis to walk, 0/1/2 of ``(z, y, x)``, or a plane name ``"axial"``,
            ``"coronal"``, ``"sagittal"`` resolved from the direction matrix. For a 4D series it
            is the axis of the fixed slice. Default 0.
        window: intensity window: a preset name (``"ct_soft_tissue"``, ``"ct_lung"``,
            ``"ct_bone"``, ``"ct_abdomen"``, ``"mr"``), ``(lower, upper)``, or ``None``
            (uint8 as is, otherwise ``"mr"``). See :mod:`~sam2s.data.sources.windowing`.
        fixed_slice: 4D only: the slice index along ``axis`` (default: the middle slice).
        series_id: DICOM only: which series to read when the folder holds several.
        max_in_memory_bytes: images up to this size are read once; larger ones per frame.

    Raises:
        FileNotFoundError: the path does not exist.
        SourceError: the file is not a readable 3D/4D scalar image, or the folder has no DICOM series.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        axis: int | str = 0,
        window: WindowSpec = None,
        fixed_slice: int | None = None,
        series_id: str | None = None,
        max_in_memory_bytes: int = 1 << 30,
    ) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"volume not found: {self.path}")
        if self.path.is_dir():
            header, self._voxels = _read_dicom_series(self.path, series_id)
        elif self.path.suffix.lower() == ".dcm":
            # One file of a series stands for the whole series it belongs to.
            header, self._voxels = _read_dicom_series(self.path.parent, series_id or _series_of(self.path))
        else:
            header, self._voxels = _open_image_file(self.path, max_in_memory_bytes)
        if fixed_slice is not None and len(header.size) != 4:
            raise ValueError(
                "fixed_slice applies to 4D time series only; for a 3D volume pick frames by index"
            )

        spatial_axis = self._resolve_axis(axis, header.direction)
        if len(header.size) == 4:
            depth = header.array_shape[1 + spatial_axis]
            if fixed_slice is None:
                fixed_slice = depth // 2
            if not 0 <= fixed_slice < depth:
                raise ValueError(
                    f"fixed_slice {fixed_slice} is outside 0..{depth - 1} along axis {spatial_axis}"
                )
        self.volume_geometry = VolumeGeometry(
            array_shape=header.array_shape,
            spacing=header.spacing,
            origin=header.origin,
            direction=header.direction,
            axis=spatial_axis,
            fixed_slice=fixed_slice,
        )
        self.num_frames = self.volume_geometry.num_frames
        self.height, self.width = self.volume_geometry.frame_shape
        self.geometry = SourceGeometry(
            kind="volume",
            height=self.height,
            width=self.width,
            num_frames=self.num_frames,
            path=str(self.path),
            volume=self.volume_geometry,
        )
        self.window: IntensityWindow = resolve_window(window, header.dtype, self._window_sample)

    @staticmethod
    def _resolve_axis(axis: int | str, direction: tuple[float, ...]) -> int:
        if isinstance(axis, str):
            return axis_from_plane(axis, direction)
        if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or int(axis) not in (0, 1, 2):
            raise ValueError(
                f"axis must be 0, 1 or 2 (array order z, y, x) or 'axial'/'coronal'/'sagittal', got {axis!r}"
            )
        return int(axis)

    def _window_sample(self) -> np.ndarray:
        count = min(self.num_frames, _WINDOW_SAMPLE_FRAMES)
        picks = np.linspace(0, self.num_frames - 1, count).round().astype(int)
        return self._voxels.window_sample([self.volume_geometry.frame_region(int(i)) for i in picks])

    def read_values(self, index: int) -> np.ndarray:
        """Frame ``index`` as raw intensities, ``(H, W)`` in the stored dtype (read-only for in-memory volumes)."""
        index = self._checked_index(index)
        return self._voxels.region(self.volume_geometry.frame_region(index))

    def read(self, index: int) -> np.ndarray:
        """Frame ``index`` windowed to uint8 grey, replicated to ``(H, W, 3)``."""
        return window_to_rgb(self.read_values(index), self.window)

    def close(self) -> None:
        self._voxels = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"VolumeSource({str(self.path)!r}, axis={self.volume_geometry.axis}, frames={self.num_frames}, "
            f"size={self.height}x{self.width})"
        )


_SITK_DTYPES = {
    "sitkUInt8": np.uint8,
    "sitkInt8": np.int8,
    "sitkUInt16": np.uint16,
    "sitkInt16": np.int16,
    "sitkUInt32": np.uint32,
    "sitkInt32": np.int32,
    "sitkUInt64": np.uint64,
    "sitkInt64": np.int64,
    "sitkFloat32": np.float32,
    "sitkFloat64": np.float64,
}


def _dtype_of(sitk, pixel_id: int) -> np.dtype:
    for name, dtype in _SITK_DTYPES.items():
        if getattr(sitk, name) == pixel_id:
            return np.dtype(dtype)
    return np.dtype(np.float64)  # an estimate for sizing only; the array keeps its own dtype


def _check_scalar(path: Path, dimension: int, components: int) -> None:
    if components != 1:
        raise SourceError(
            f"volume {path} has {components} values per voxel; only scalar (single-channel) images "
            "are supported: split the channels first"
        )
    if dimension not in (3, 4):
        hint = " (a single 2D image: put frames in a folder instead)" if dimension == 2 else ""
        raise SourceError(f"volume {path} is {dimension}D; expected a 3D volume or a 4D time series{hint}")


def _open_image_file(path: Path, max_in_memory_bytes: int):
    sitk = _import_sitk()
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as error:
        first_line = next((line for line in str(error).splitlines() if line.strip()), str(error))
        raise SourceError(
            f"cannot read volume {path}: not a readable image file ({first_line.strip()})"
        ) from error
    _check_scalar(path, reader.GetDimension(), reader.GetNumberOfComponents())
    header = _ImageHeader(
        size=tuple(int(v) for v in reader.GetSize()),
        spacing=tuple(float(v) for v in reader.GetSpacing()),
        origin=tuple(float(v) for v in reader.GetOrigin()),
        direction=tuple(float(v) for v in reader.GetDirection()),
        dtype=_dtype_of(sitk, reader.GetPixelID()),
        components=reader.GetNumberOfComponents(),
    )
    if header.nbytes > max_in_memory_bytes:
        return header, _VoxelsStreamed(reader, header.size)
    try:
        array = sitk.GetArrayFromImage(reader.Execute())
    except RuntimeError as error:
        raise SourceError(
            f"cannot read the voxels of volume {path}: the file is truncated or damaged"
        ) from error
    return replace(header, dtype=array.dtype), _VoxelsInMemory(array)


def _series_of(dicom_file: Path) -> str:
    sitk = _import_sitk()
    reader = sitk.ImageSeriesReader()
    folder, target = dicom_file.parent, dicom_file.resolve()
    for series_id in reader.GetGDCMSeriesIDs(str(folder)):
        if any(
            Path(name).resolve() == target for name in reader.GetGDCMSeriesFileNames(str(folder), series_id)
        ):
            return series_id
    raise SourceError(f"{dicom_file} is not part of a readable DICOM series")


def _read_dicom_series(folder: Path, series_id: str | None):
    sitk = _import_sitk()
    reader = sitk.ImageSeriesReader()
    series_ids = list(reader.GetGDCMSeriesIDs(str(folder)))
    if not series_ids:
        raise SourceError(f"folder {folder} contains no DICOM series (and no .jpg/.png frames)")
    if series_id is None:
        if len(series_ids) > 1:
            raise SourceError(
                f"folder {folder} holds {len(series_ids)} DICOM series; choose one with series_id= "
                f"({', '.join(series_ids)})"
            )
        series_id = series_ids[0]
    elif series_id not in series_ids:
        raise SourceError(f"DICOM series {series_id} is not in {folder}; found {', '.join(series_ids)}")
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder), series_id))
    try:
        image = reader.Execute()
    except RuntimeError as error:
        raise SourceError(f"cannot read DICOM series {series_id} in {folder}: {error}") from error
    _check_scalar(folder, image.GetDimension(), image.GetNumberOfComponentsPerPixel())
    array = sitk.GetArrayFromImage(image)
    header = _ImageHeader(
        size=tuple(int(v) for v in image.GetSize()),
        spacing=tuple(float(v) for v in image.GetSpacing()),
        origin=tuple(float(v) for v in image.GetOrigin()),
        direction=tuple(float(v) for v in image.GetDirection()),
        dtype=array.dtype,
        components=1,
    )
    return header, _VoxelsInMemory(array)
