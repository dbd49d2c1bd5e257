"""Mask writers: per-frame PNGs, label volumes (NRRD/NIfTI, Slicer .seg.nrrd) and overlay videos.

Every writer follows :class:`MaskWriter`: ``write(frame_index, obj_ids, masks)`` as frames
arrive, ``close()`` to finish, resumable through :class:`WriterProgress`.
"""

from sam2s.writers.base import (
    CompositeMaskWriter,
    MaskWriter,
    atomic_output,
    check_masks,
    davis_palette,
    label_map,
)
from sam2s.writers.overlay import OverlayVideoWriter, render_overlay
from sam2s.writers.png import PngMaskWriter, read_png_mask
from sam2s.writers.progress import ProgressManifest, WriterProgress
from sam2s.writers.volume import LabelVolumeWriter, SegNrrdWriter, label_image

__all__ = [
    "CompositeMaskWriter",
    "LabelVolumeWriter",
    "MaskWriter",
    "OverlayVideoWriter",
    "PngMaskWriter",
    "ProgressManifest",
    "SegNrrdWriter",
    "WriterProgress",
    "atomic_output",
    "check_masks",
    "davis_palette",
    "label_image",
    "label_map",
    "read_png_mask",
    "render_overlay",
]
