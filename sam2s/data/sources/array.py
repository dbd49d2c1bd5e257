"""Sources that wrap frames already in memory or arriving live (tests, Slicer, MONAI Label)."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator

import numpy as np

from sam2s.data.sources.base import (
    FrameIndexError,
    FrameSource,
    SourceError,
    SourceGeometry,
    StreamEndedError,
    as_rgb_frame,
)
from sam2s.data.sources.windowing import IntensityWindow, WindowSpec, resolve_window, window_to_rgb

__all__ = ["ArraySource", "LiveStreamSource"]


class ArraySource(FrameSource):
    """Frames held in a numpy array, without copying it.

    Args:
        frames: ``(T, H, W, 3)`` uint8 RGB, or ``(T, H, W)`` grey of any real dtype.
        window: for grey frames, the intensity window (see
            :func:`~sam2s.data.sources.windowing.resolve_window`; default: uint8 as is,
            otherwise a percentile window fitted on the whole array).

    :meth:`read` returns a new array each time, so callers cannot change the wrapped frames.
    """

    def __init__(self, frames: np.ndarray, *, window: WindowSpec = None) -> None:
        frames = np.asarray(frames)
        if frames.ndim == 4:
            if frames.shape[3] != 3 or frames.dtype != np.uint8:
                raise SourceError(
                    f"a 4D frame array must be (T, H, W, 3) uint8 RGB, got shape {frames.shape} dtype {frames.dtype}"
                )
            if window is not None:
                raise ValueError(
                    "window applies to grey (T, H, W) arrays only; RGB frames are used as they are"
                )
            self.window: IntensityWindow | None = None
        elif frames.ndim == 3:
            if not (np.issubdtype(frames.dtype, np.number) or frames.dtype == np.bool_):
                raise SourceError(f"grey frames must be numeric, got dtype {frames.dtype}")
            self.window = resolve_window(
                window, frames.dtype, lambda: frames.reshape(-1)[:: max(1, frames.size >> 21)]
            )
        else:
            raise SourceError(f"frames must be (T, H, W, 3) RGB or (T, H, W) grey, got shape {frames.shape}")
        if frames.shape[0] == 0:
            raise SourceError("the frame array is empty (T = 0)")
        self.frames = frames
        self.num_frames, self.height, self.width = (int(v) for v in frames.shape[:3])
        self.geometry = SourceGeometry(
            kind="array", height=self.height, width=self.width, num_frames=self.num_frames
        )

    def read(self, index: int) -> np.ndarray:
        frame = self.frames[self._checked_index(index)]
        if self.window is None:
            return frame.copy()
        return window_to_rgb(frame, self.window)

    def __repr__(self) -> str:
        return f"ArraySource(frames={self.num_frames}, size={self.height}x{self.width})"


class LiveStreamSource(FrameSource):
    """Frames from an iterator of unknown length (a camera, a network stream), read in order.

    ``num_frames`` is ``None`` and ``len()`` raises. Frames are pulled from the iterator as they
    are asked for; the most recent ``history`` frames stay readable so a predictor can look back
    a little, older ones are gone (reading one raises :class:`FrameIndexError`). Reading past the
    end raises :class:`StreamEndedError`.

    Args:
        frames: iterable of ``(H, W, 3)`` uint8 RGB (or ``(H, W)`` uint8 grey) frames, one size.
        history: how many recent frames remain readable.
    """

    def __init__(self, frames: Iterable[np.ndarray], *, history: int = 16) -> None:
        if history < 1:
            raise ValueError(f"history must be at least 1, got {history}")
        self._frames: Iterator[np.ndarray] = iter(frames)
        self._recent: deque[tuple[int, np.ndarray]] = deque(maxlen=history)
        self._next_index = 0
        self._ended = False
        first = self._pull()
        if first is None:
            raise SourceError("the live stream ended before its first frame")
        self.num_frames = None
        self.height, self.width = first.shape[:2]
        self.geometry = SourceGeometry(kind="live", height=self.height, width=self.width, num_frames=None)

    def _pull(self) -> np.ndarray | None:
        if self._ended:
            return None
        try:
            frame = next(self._frames)
        except StopIteration:
            self._ended = True
            return None
        frame = as_rgb_frame(np.asarray(frame), f"live frame {self._next_index}")
        if self._recent and frame.shape != self._recent[-1][1].shape:
            raise SourceError(
                f"live frame {self._next_index} has shape {frame.shape}, earlier frames {self._recent[-1][1].shape}"
            )
        self._recent.append((self._next_index, frame))
        self._next_index += 1
        return frame

    def read(self, index: int) -> np.ndarray:
        index = self._checked_index(index)
        while index >= self._next_index:
            if self._pull() is None:
                raise StreamEndedError(
                    f"the live stream ended after {self._next_index} frames; frame {index} does not exist"
                )
        oldest = self._recent[0][0]
        if index < oldest:
            raise FrameIndexError(
                f"frame {index} of the live stream is no longer held (only the last {self._recent.maxlen} "
                f"frames, {oldest}..{self._next_index - 1}, are kept)"
            )
        return self._recent[index - oldest][1].copy()

    def __repr__(self) -> str:
        return f"LiveStreamSource(read={self._next_index}, size={self.height}x{self.width})"
