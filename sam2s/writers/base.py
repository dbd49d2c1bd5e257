"""The mask-writer interface, a fan-out composite, and helpers shared by the writers.

Every writer receives one frame's masks at a time, ``write(frame_index, obj_ids, masks)`` with
``masks`` a ``(O, H, W)`` bool array in the order of ``obj_ids``, writes it out as it goes, and
never leaves a half-written file: each file is written under a temporary name in the same folder
and renamed into place. Use a writer as a context manager: a normal exit calls :meth:`close`
(flush everything, mark the output complete); an exception calls :meth:`abort` (keep what was
written as resumable state, mark nothing complete).

Overlapping objects: where masks overlap, the object listed later in ``obj_ids`` wins.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import BinaryIO

import numpy as np
from typing_extensions import Self

__all__ = [
    "CompositeMaskWriter",
    "MaskWriter",
    "atomic_output",
    "check_masks",
    "davis_palette",
    "label_map",
    "save_atomically",
    "write_atomically",
    "write_json",
]


@contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only if the block succeeds.

    The temporary name keeps the full file name as its ending (``.tmp-<pid>-labels.nii.gz``), so
    libraries that pick a format by extension still recognise it, and it is hidden so frame
    listings skip it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()


def save_atomically(path: str | Path, save: Callable[[Path], object]) -> Path:
    """Call ``save(temporary_path)`` and rename the result to ``path`` (see :func:`atomic_output`)."""
    with atomic_output(path) as temporary:
        save(temporary)
    return Path(path)


def write_atomically(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(binary_handle)`` on a temporary file beside ``path``, then rename it into place."""
    with atomic_output(path) as temporary, open(temporary, "wb") as handle:
        write(handle)
    return Path(path)


def write_json(path: str | Path, data: object, sort_keys: bool = True) -> Path:
    """Write ``data`` as indented JSON, atomically (dataclasses become dicts, paths strings)."""

    def default(value):
        if hasattr(value, "__dataclass_fields__"):
            return asdict(value)
        if isinstance(value, Path):
            return str(value)
        raise TypeError(f"cannot write {type(value).__name__} as JSON")

    text = json.dumps(data, indent=2, sort_keys=sort_keys, default=default) + "\n"
    return write_atomically(path, lambda handle: handle.write(text.encode()))


def remove_stale_temporaries(folder: Path, name_pattern: str = "*") -> None:
    """Delete temporaries that a killed run left in ``folder`` (see :func:`atomic_output`)."""
    if folder.is_dir():
        for stale in folder.glob(f".tmp-*-{name_pattern}"):
            stale.unlink(missing_ok=True)


def davis_palette() -> np.ndarray:
    """The DAVIS / PASCAL VOC colour map, ``(256, 3)`` uint8: entry ``i`` is the colour of label ``i``.

    The bits of ``i`` are spread over the three channels from the most significant bit down,
    giving 0 black, 1 dark red, 2 dark green, 3 olive, 4 dark blue, ...
    """
    palette = np.zeros((256, 3), np.uint8)
    for label in range(256):
        value, red, green, blue = label, 0, 0, 0
        for shift in range(7, -1, -1):
            red |= (value & 1) << shift
            green |= ((value >> 1) & 1) << shift
            blue |= ((value >> 2) & 1) << shift
            value >>= 3
        palette[label] = (red, green, blue)
    return palette


def check_masks(
    frame_index: int,
    obj_ids: Sequence[int],
    masks: np.ndarray,
    frame_shape: tuple[int, int] | None = None,
) -> tuple[list[int], np.ndarray]:
    """Validate one frame's writer input and return ``(obj_ids as ints, masks)``.

    Raises:
        TypeError: masks are not a bool array.
        ValueError: the shapes, the ids or the frame index do not fit.
    """
    if isinstance(frame_index, (bool, np.bool_)) or not isinstance(frame_index, (int, np.integer)):
        raise TypeError(f"frame_index must be an integer, got {frame_index!r}")
    if frame_index < 0:
        raise ValueError(f"frame_index must be >= 0, got {frame_index}")
    masks = np.asarray(masks)
    if masks.dtype != np.bool_:
        raise TypeError(
            f"masks must be a bool array (threshold logits first, e.g. logits > 0), got {masks.dtype}"
        )
    if masks.ndim != 3:
        raise ValueError(f"masks must be (O, H, W), got shape {masks.shape}")
    ids = [int(obj_id) for obj_id in obj_ids]
    if len(ids) != masks.shape[0]:
        raise ValueError(f"{len(ids)} obj_ids for {masks.shape[0]} masks in frame {frame_index}")
    if len(set(ids)) != len(ids) or any(obj_id <= 0 for obj_id in ids):
        raise ValueError(f"obj_ids must be distinct positive integers (0 is background), got {ids}")
    if frame_shape is not None and masks.shape[1:] != tuple(frame_shape):
        raise ValueError(
            f"masks of frame {frame_index} are {masks.shape[1]}x{masks.shape[2]} (H x W) but the output "
            f"expects {frame_shape[0]}x{frame_shape[1]}"
        )
    return ids, masks


def label_map(obj_ids: Sequence[int], masks: np.ndarray, dtype: np.dtype | type = np.uint8) -> np.ndarray:
    """Merge ``(O, H, W)`` bool masks into one ``(H, W)`` label image; later objects win overlaps."""
    labels = np.zeros(masks.shape[1:], dtype=dtype)
    for obj_id, mask in zip(obj_ids, masks):
        labels[mask] = obj_id
    return labels


class MaskWriter(ABC):
    """Writes per-frame object masks as they arrive; see the module docstring for the contract."""

    @abstractmethod
    def write(self, frame_index: int, obj_ids: Sequence[int], masks: np.ndarray) -> None:
        """Write frame ``frame_index``: ``masks`` is ``(O, H, W)`` bool, one mask per id in ``obj_ids``.

        Writing a frame again replaces it.
        """

    @abstractmethod
    def close(self) -> None:
        """Flush everything and mark the output complete."""

    def abort(self) -> None:
        """Stop without marking the output complete, keeping what was written for a resumed run."""

    def completed_frames(self) -> set[int]:
        """Frames already finished in the output, including those of a resumed earlier run."""
        return set()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: object, exc: object, traceback: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class CompositeMaskWriter(MaskWriter):
    """Fans every call out to several writers (e.g. PNG masks, a label volume and an overlay video).

    ``completed_frames`` is what all of them have finished, so a resumed run redoes a frame that
    any one of them lacks.
    """

    def __init__(self, writers: Sequence[MaskWriter]) -> None:
        if not writers:
            raise ValueError("CompositeMaskWriter needs at least one writer")
        self.writers = list(writers)

    def write(self, frame_index: int, obj_ids: Sequence[int], masks: np.ndarray) -> None:
        for writer in self.writers:
            writer.write(frame_index, obj_ids, masks)

    def close(self) -> None:
        self._for_all(lambda writer: writer.close())

    def abort(self) -> None:
        self._for_all(lambda writer: writer.abort())

    def completed_frames(self) -> set[int]:
        return set.intersection(*(writer.completed_frames() for writer in self.writers))

    def _for_all(self, action) -> None:
        # Every writer gets its turn even if an earlier one fails; the first failure is re-raised.
        first_error: BaseException | None = None
        for writer in self.writers:
            try:
                action(writer)
            except BaseException as error:  # noqa: BLE001 - re-raised below after the others ran
                first_error = first_error or error
        if first_error is not None:
            raise first_error
