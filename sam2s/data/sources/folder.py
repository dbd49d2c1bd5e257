"""A folder of numbered image files (.jpg, .jpeg, .png) read as a video, one file per frame."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from sam2s.data.sources.base import FrameSource, SourceError, SourceGeometry

__all__ = ["FRAME_SUFFIXES", "FrameFolderSource", "list_frame_files", "natural_sort_key"]

FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")


def natural_sort_key(name: str) -> tuple:
    """Sort key that orders embedded numbers by value, so ``frame2`` comes before ``frame10``."""
    parts = re.split(r"(\d+)", name)
    # Text parts compare case-insensitively; numbers by value, then by written length so that
    # "01" and "1" keep a stable order.
    return tuple((0, int(part), len(part)) if part.isdigit() else (1, part.lower(), 0) for part in parts)


def list_frame_files(folder: Path) -> list[Path]:
    """The frame image files directly inside ``folder``, in natural order (hidden files skipped)."""
    files = [
        entry
        for entry in folder.iterdir()
        if entry.is_file() and entry.suffix.lower() in FRAME_SUFFIXES and not entry.name.startswith(".")
    ]
    return sorted(files, key=lambda entry: natural_sort_key(entry.name))


class FrameFolderSource(FrameSource):
    """Frames stored as image files in one folder, ordered by natural sort of their names.

    Every image is opened lazily when its frame is read. At construction only the headers are
    read, to check that all frames share one size.

    Args:
        folder: the folder of .jpg/.jpeg/.png files.

    Raises:
        FileNotFoundError: the folder does not exist.
        SourceError: the folder holds no frames, a file is not a readable image, or the frames
            differ in size (the message names the first odd file).
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise FileNotFoundError(f"frame folder not found: {self.folder}")
        self.files = list_frame_files(self.folder)
        if not self.files:
            raise SourceError(
                f"frame folder {self.folder} contains no frames; expected image files with "
                f"suffix {', '.join(FRAME_SUFFIXES)}"
            )
        self.width, self.height = self._common_size()
        self.num_frames = len(self.files)
        self.geometry = SourceGeometry(
            kind="frames",
            height=self.height,
            width=self.width,
            num_frames=self.num_frames,
            path=str(self.folder),
            frame_names=tuple(entry.name for entry in self.files),
        )

    def _common_size(self) -> tuple[int, int]:
        first_size = _image_size(self.files[0])
        for entry in self.files[1:]:
            size = _image_size(entry)
            if size != first_size:
                raise SourceError(
                    f"frames in {self.folder} differ in size: {entry.name} is {size[0]}x{size[1]} (width x height) "
                    f"but {self.files[0].name} is {first_size[0]}x{first_size[1]}; all frames must have one size"
                )
        return first_size

    def read(self, index: int) -> np.ndarray:
        """Return frame ``index`` as ``(H, W, 3)`` uint8 RGB (grey and RGBA images are converted)."""
        index = self._checked_index(index)
        entry = self.files[index]
        try:
            with Image.open(entry) as image:
                frame = np.asarray(image.convert("RGB"))
        except (OSError, UnidentifiedImageError) as error:
            raise SourceError(f"cannot read frame {index} ({entry}): {error}") from error
        if frame.shape[:2] != (self.height, self.width):
            raise SourceError(
                f"frame {index} ({entry.name}) changed size to {frame.shape[1]}x{frame.shape[0]} since the folder was opened"
            )
        return frame.copy() if not frame.flags.writeable else frame

    def __repr__(self) -> str:
        return f"FrameFolderSource({str(self.folder)!r}, frames={self.num_frames}, size={self.height}x{self.width})"


def _image_size(entry: Path) -> tuple[int, int]:
    try:
        with Image.open(entry) as image:
            return image.size
    except (OSError, UnidentifiedImageError) as error:
        raise SourceError(f"cannot read frame file {entry}: not a readable image ({error})") from error
