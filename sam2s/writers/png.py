"""One indexed-palette PNG per frame, in the DAVIS layout: pixel value = object id."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from sam2s.writers.base import (
    MaskWriter,
    atomic_output,
    check_masks,
    davis_palette,
    label_map,
    remove_stale_temporaries,
)
from sam2s.writers.progress import WriterProgress

__all__ = ["PNG_MANIFEST_NAME", "PngMaskWriter", "read_png_mask"]

PNG_MANIFEST_NAME = "progress.json"
_FRAME_NAME = re.compile(r"^\d{5,}\.png$")


class PngMaskWriter(MaskWriter):
    """Writes ``out_dir/00000.png, 00001.png, ...``: palette PNGs whose pixel value is the object id.

    Object ids must be 1..255 (0 is background). Where objects overlap, the one listed later in
    ``obj_ids`` wins. The palette is the DAVIS one, so the files open in DAVIS tools and
    viewers as coloured masks. Frame ``i`` is always ``f"{i:05d}.png"`` (more digits past 99999).

    Args:
        out_dir: folder for the PNGs and the ``progress.json`` manifest (created if missing).
            Starting afresh (no ``resume``) in a folder an earlier run of this writer used removes
            that run's frame PNGs, so the two runs never mix.
        resume: keep the frames an earlier, unfinished run recorded (:meth:`completed_frames`)
            whose files are still there.
        flush_every: update the manifest every this many frames; frames written since the last
            update are simply written again by a resumed run.
    """

    def __init__(self, out_dir: str | Path, *, resume: bool = False, flush_every: int = 25) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.out_dir, "*.png")
        manifest_path = self.out_dir / PNG_MANIFEST_NAME
        if not resume and WriterProgress.read(manifest_path) is not None:
            # The folder holds an earlier run of this writer: its frames must not mix with the new run's.
            for stale in self.out_dir.glob("*.png"):
                if _FRAME_NAME.match(stale.name):
                    stale.unlink()
        self.progress = WriterProgress(
            manifest_path, writer="png_masks", resume=resume, flush_every=flush_every
        )
        if resume:
            recorded = self.progress.completed_frames()
            on_disk = {index for index in recorded if self.frame_path(index).is_file()}
            if on_disk != recorded:
                self.progress.reset_frames(on_disk)
        self._palette = davis_palette().ravel().tolist()
        self._closed = False

    def frame_path(self, frame_index: int) -> Path:
        return self.out_dir / f"{frame_index:05d}.png"

    def write(self, frame_index: int, obj_ids: Sequence[int], masks: np.ndarray) -> None:
        if self._closed:
            raise RuntimeError(f"PngMaskWriter({self.out_dir}) is closed")
        ids, masks = check_masks(frame_index, obj_ids, masks)
        if any(obj_id > 255 for obj_id in ids):
            raise ValueError(f"palette PNGs hold object ids 1..255, got {ids}; use a label volume for more")
        labels = label_map(ids, masks, np.uint8)
        height, width = labels.shape
        image = Image.frombytes("P", (width, height), np.ascontiguousarray(labels).tobytes())
        image.putpalette(self._palette)
        with atomic_output(self.frame_path(int(frame_index))) as temporary:
            image.save(temporary, format="PNG")
        self.progress.add(int(frame_index), ids)

    def completed_frames(self) -> set[int]:
        return self.progress.completed_frames()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.progress.mark_complete()

    def abort(self) -> None:
        if not self._closed:
            self._closed = True
            self.progress.flush()


def read_png_mask(path: str | Path) -> np.ndarray:
    """Read a mask PNG back as its ``(H, W)`` uint8 label values (object ids)."""
    with Image.open(path) as image:
        if image.mode not in ("P", "L"):
            raise ValueError(f"{path} is a {image.mode} image, not an indexed label PNG")
        return np.asarray(image).copy()
