"""Label volumes assembled from slice masks: NRRD/NIfTI/MHA through SimpleITK, and Slicer's .seg.nrrd.

Each frame's ``(H, W)`` label slice is written into a label array of the source's full shape
through :meth:`~sam2s.data.sources.base.VolumeGeometry.frame_region`, the very index the source
read the frame with, so labels land on the voxels they were drawn on. The saved image carries
the source's spacing, origin and direction unchanged.

Resuming: every ``flush_interval_s`` seconds the label array so far is saved to
``<name>.partial.nrrd`` and only then recorded in ``<name>.progress.json``. A run that is killed
leaves that partial state; a writer opened with ``resume=True`` loads it and reports the frames
it holds through :meth:`completed_frames`. The final file appears (atomically) only on
:meth:`close`, after which the manifest is marked complete and the partial file removed.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from sam2s.data.sources.base import SourceGeometry, VolumeGeometry
from sam2s.writers.base import MaskWriter, atomic_output, check_masks, davis_palette, label_map
from sam2s.writers.progress import WriterProgress

__all__ = ["LabelVolumeWriter", "SegNrrdWriter", "label_image"]

_WRITABLE_SUFFIXES = (".nrrd", ".nii", ".nii.gz", ".mha")


def _import_sitk():
    try:
        import SimpleITK as sitk
    except ImportError as error:  # pragma: no cover - SimpleITK is in the "volume" extra
        raise ImportError("writing label volumes needs SimpleITK: pip install 'sam2s[volume]'") from error
    return sitk


def _volume_geometry(geometry: SourceGeometry | VolumeGeometry) -> VolumeGeometry:
    if isinstance(geometry, VolumeGeometry):
        return geometry
    if isinstance(geometry, SourceGeometry) and geometry.volume is not None:
        return geometry.volume
    kind = geometry.kind if isinstance(geometry, SourceGeometry) else type(geometry).__name__
    raise ValueError(
        f"a label volume needs the geometry of a volume source, got a {kind} source; "
        "write video masks with PngMaskWriter"
    )


def label_image(labels: np.ndarray, geometry: VolumeGeometry):
    """A SimpleITK image of ``labels`` (numpy ``(z, y, x)`` or ``(t, z, y, x)``) with the source geometry."""
    sitk = _import_sitk()
    image = sitk.GetImageFromArray(labels, isVector=False)
    image.SetSpacing(geometry.spacing)
    image.SetOrigin(geometry.origin)
    image.SetDirection(geometry.direction)
    return image


class LabelVolumeWriter(MaskWriter):
    """Collects slice masks into a label volume with the source's geometry.

    The label array (uint8, widened to uint16 when an id exceeds 255) has the source image's
    full shape; voxel value = object id, 0 = background; the object listed later in ``obj_ids``
    wins overlaps. Slices never written stay 0. For a 4D series the labels fill the fixed slice
    of every time point in a label image of the series' full 4D shape.

    Args:
        path: output file, ``.nrrd``, ``.nii``, ``.nii.gz`` or ``.mha``.
        geometry: the source's :class:`SourceGeometry` (or its :class:`VolumeGeometry`).
        resume: continue an unfinished run from its partial state.
        flush_interval_s: how often (seconds) the partial state is saved; 0 saves after every frame.
    """

    writer_kind = "label_volume"

    def __init__(
        self,
        path: str | Path,
        geometry: SourceGeometry | VolumeGeometry,
        *,
        resume: bool = False,
        flush_interval_s: float = 60.0,
    ) -> None:
        self.path = Path(path)
        self._check_suffix()
        self.geometry = _volume_geometry(geometry)
        self.flush_interval_s = float(flush_interval_s)
        self.partial_path = self.path.with_name(f"{self.path.name}.partial.nrrd")
        self.progress = WriterProgress(
            self.path.with_name(f"{self.path.name}.progress.json"),
            writer=self.writer_kind,
            settings={
                "array_shape": list(self.geometry.array_shape),
                "axis": self.geometry.axis,
                "fixed_slice": self.geometry.fixed_slice,
            },
            resume=resume,
            flush_every=None,  # the manifest is written only after the partial volume it describes
        )
        self.labels = np.zeros(self.geometry.array_shape, np.uint8)
        if resume:
            self._load_previous_state()
        else:
            self.partial_path.unlink(missing_ok=True)
        self._dirty = False
        self._last_flush = time.monotonic()
        self._closed = False

    def _check_suffix(self) -> None:
        name = self.path.name.lower()
        if not name.endswith(_WRITABLE_SUFFIXES):
            raise ValueError(
                f"cannot write a label volume to {self.path}; use one of {', '.join(_WRITABLE_SUFFIXES)}"
            )

    def _load_previous_state(self) -> None:
        recorded = self.progress.completed_frames()
        state = self.partial_path if self.partial_path.is_file() else self.path
        if not recorded or not state.is_file():
            self.progress.reset_frames(())
            return
        sitk = _import_sitk()
        labels = sitk.GetArrayFromImage(sitk.ReadImage(str(state)))
        if labels.shape != self.geometry.array_shape:
            raise ValueError(
                f"cannot resume {self.path}: its saved labels have shape {labels.shape}, "
                f"the source {self.geometry.array_shape}"
            )
        self.labels = labels.astype(np.uint16 if labels.max(initial=0) > 255 else np.uint8)

    # -- writing ------------------------------------------------------------------------------

    def write(self, frame_index: int, obj_ids: Sequence[int], masks: np.ndarray) -> None:
        if self._closed:
            raise RuntimeError(f"{type(self).__name__}({self.path}) is closed")
        ids, masks = check_masks(frame_index, obj_ids, masks, self.geometry.frame_shape)
        if frame_index >= self.geometry.num_frames:
            raise ValueError(
                f"frame {frame_index} is outside the volume's {self.geometry.num_frames} frames along axis "
                f"{self.geometry.axis}"
            )
        largest = max(ids, default=0)
        if largest > np.iinfo(np.uint16).max:
            raise ValueError(f"object id {largest} does not fit a uint16 label volume")
        if largest > np.iinfo(self.labels.dtype).max:
            self.labels = self.labels.astype(np.uint16)
        self.labels[self.geometry.frame_region(int(frame_index))] = label_map(ids, masks, self.labels.dtype)
        self.progress.add(int(frame_index), ids)
        self._dirty = True
        if time.monotonic() - self._last_flush >= self.flush_interval_s:
            self.flush_partial()

    def flush_partial(self) -> None:
        """Save the labels so far to the partial file, then record its frames in the manifest."""
        if self._dirty:
            sitk = _import_sitk()
            with atomic_output(self.partial_path) as temporary:
                # Uncompressed: the partial state is rewritten often and must be quick to save.
                sitk.WriteImage(label_image(self.labels, self.geometry), str(temporary), False)
            self.progress.flush()
            self._dirty = False
        self._last_flush = time.monotonic()

    def completed_frames(self) -> set[int]:
        return self.progress.completed_frames()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with atomic_output(self.path) as temporary:
            self._write_final(temporary)
        self.progress.mark_complete()
        self.partial_path.unlink(missing_ok=True)

    def abort(self) -> None:
        if not self._closed:
            self._closed = True
            self.flush_partial()

    def _write_final(self, target: Path) -> None:
        sitk = _import_sitk()
        sitk.WriteImage(label_image(self.labels, self.geometry), str(target), True)


class SegNrrdWriter(LabelVolumeWriter):
    """Writes a 3D Slicer segmentation (``.seg.nrrd``): one label layer plus per-segment metadata.

    Each object becomes a segment ``Segment_<id>`` with label value ``<id>`` on layer 0, a name
    (``segment_names`` or ``Segment_<id>``), a colour (``segment_colors``, RGB in 0..1, or the
    DAVIS colour of its id) and its voxel extent. Every object passed to :meth:`write` gets a
    segment, even one whose mask stayed empty. The file reads back with ``slicerio`` and loads
    in Slicer as a segmentation aligned with the source volume.

    Args:
        path: output file ending in ``.seg.nrrd``.
        geometry: geometry of a 3D volume source (Slicer segmentations are 3D).
        segment_names: display name per object id.
        segment_colors: RGB colour in 0..1 per object id.
        resume: see :class:`LabelVolumeWriter`.
        flush_interval_s: see :class:`LabelVolumeWriter`.
    """

    writer_kind = "seg_nrrd"

    def __init__(
        self,
        path: str | Path,
        geometry: SourceGeometry | VolumeGeometry,
        *,
        segment_names: Mapping[int, str] | None = None,
        segment_colors: Mapping[int, Sequence[float]] | None = None,
        resume: bool = False,
        flush_interval_s: float = 60.0,
    ) -> None:
        if _volume_geometry(geometry).is_time_series:
            raise ValueError("a .seg.nrrd holds a 3D segmentation; write a 4D series with LabelVolumeWriter")
        self.segment_names = {int(k): str(v) for k, v in (segment_names or {}).items()}
        self.segment_colors = {int(k): tuple(float(c) for c in v) for k, v in (segment_colors or {}).items()}
        super().__init__(path, geometry, resume=resume, flush_interval_s=flush_interval_s)

    def _check_suffix(self) -> None:
        if not self.path.name.lower().endswith(".seg.nrrd"):
            raise ValueError(f"a Slicer segmentation file name ends in .seg.nrrd, got {self.path.name}")

    def _write_final(self, target: Path) -> None:
        try:
            import nrrd
        except ImportError as error:  # pragma: no cover - pynrrd is in the "volume" extra
            raise ImportError("writing .seg.nrrd needs pynrrd: pip install 'sam2s[volume]'") from error
        nrrd.write(str(target), self.labels, self.header(), index_order="C", compression_level=6)

    def header(self) -> dict[str, object]:
        """The NRRD header: LPS geometry of the source and Slicer's segmentation fields."""
        direction = np.asarray(self.geometry.direction, dtype=np.float64).reshape(3, 3)
        # NRRD lists one world vector per file axis (x, y, z): ITK direction column times spacing.
        space_directions = (direction * np.asarray(self.geometry.spacing)[None, :]).T
        header: dict[str, object] = {
            "type": "unsigned char" if self.labels.dtype == np.uint8 else "unsigned short",
            "dimension": 3,
            "space": "left-posterior-superior",
            "space directions": space_directions,
            "space origin": np.asarray(self.geometry.origin, dtype=np.float64),
            "kinds": ["domain", "domain", "domain"],
            "encoding": "gzip",
            "Segmentation_MasterRepresentation": "Binary labelmap",
            "Segmentation_ContainedRepresentationNames": "Binary labelmap|",
            "Segmentation_ReferenceImageExtentOffset": "0 0 0",
        }
        palette = davis_palette()
        for number, obj_id in enumerate(sorted(self.progress.manifest.obj_ids)):
            color = self.segment_colors.get(obj_id, tuple(palette[obj_id % 256] / 255.0))
            prefix = f"Segment{number}_"
            header[prefix + "ID"] = f"Segment_{obj_id}"
            header[prefix + "Name"] = self.segment_names.get(obj_id, f"Segment_{obj_id}")
            header[prefix + "NameAutoGenerated"] = "0" if obj_id in self.segment_names else "1"
            header[prefix + "Color"] = " ".join(f"{c:.6g}" for c in color)
            header[prefix + "ColorAutoGenerated"] = "0" if obj_id in self.segment_colors else "1"
            header[prefix + "LabelValue"] = str(obj_id)
            header[prefix + "Layer"] = "0"
            header[prefix + "Extent"] = " ".join(str(v) for v in self._extent(obj_id))
            header[prefix + "Tags"] = "Segmentation.Status:inprogress|"
        return header

    def _extent(self, obj_id: int) -> tuple[int, ...]:
        """Inclusive IJK bounds ``(i0, i1, j0, j1, k0, k1)``; Slicer's ``0 -1 ...`` for an empty segment."""
        k, j, i = np.nonzero(self.labels == obj_id)
        if k.size == 0:
            return (0, -1, 0, -1, 0, -1)
        return (int(i.min()), int(i.max()), int(j.min()), int(j.max()), int(k.min()), int(k.max()))
