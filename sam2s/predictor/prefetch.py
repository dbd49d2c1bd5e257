"""Read and prepare the next frames on a worker thread while the current frame is tracked.

Decoding a video frame and resizing it to the model's input take milliseconds that the model
would otherwise wait for. During a propagation pass the frames come in a known order, so
:class:`FramePrefetcher` reads them ahead on one background thread (decoders and PIL release the
GIL while they work) and hands each one over when the tracker reaches it. On CUDA the prepared
frame is put in pinned host memory, so its copy to the GPU runs asynchronously.

Frames are read one at a time in the pass's order by that single worker, so a source sees the
sequential reads it is fastest at; the session's read lock keeps a prompt added between two
yielded frames from reading the source at the same moment.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Self

import torch

__all__ = ["FramePrefetcher"]


class FramePrefetcher:
    """Prepares model inputs for the upcoming frames of a pass on a background thread.

    Args:
        prepare: frame index -> ``(3, S, S)`` float32 CPU tensor (read, resize, normalise).
        order: the frame indices of the pass, in tracking order (may be endless for a stream).
        depth: frames prepared ahead of the one being tracked.
        pin_memory: put prepared frames in pinned memory (for an asynchronous copy to a GPU).

    Use as a context manager (the worker is stopped on exit) and call :meth:`take` with the
    frames of ``order`` in turn.
    """

    def __init__(
        self,
        prepare: Callable[[int], torch.Tensor],
        order: Iterator[int],
        depth: int = 2,
        pin_memory: bool = False,
    ) -> None:
        if depth < 1:
            raise ValueError(f"prefetch depth must be at least 1, got {depth}")
        self._prepare = prepare
        self._order = iter(order)
        self._depth = depth
        self._pin = pin_memory
        self._pending: OrderedDict[int, Future] = OrderedDict()
        self._executor: ThreadPoolExecutor | None = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="sam2s-frames"
        )
        self._fill()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _job(self, frame_index: int) -> torch.Tensor:
        image = self._prepare(frame_index)
        return image.pin_memory() if self._pin else image

    def _fill(self) -> None:
        while self._executor is not None and len(self._pending) < self._depth:
            frame_index = next(self._order, None)
            if frame_index is None:
                return
            self._pending[frame_index] = self._executor.submit(self._job, frame_index)

    def take(self, frame_index: int) -> torch.Tensor | None:
        """The prepared input of ``frame_index``, waiting for it if needed.

        Returns ``None`` when the frame was not scheduled (the caller reads it itself). An error
        raised while reading the frame (e.g. the end of a live stream) is raised here.
        """
        if frame_index not in self._pending:
            return None
        # Frames scheduled before this one were not needed (e.g. every object was prompted there).
        while True:
            scheduled, future = self._pending.popitem(last=False)
            if scheduled == frame_index:
                break
            future.cancel()
        try:
            return future.result()
        finally:
            self._fill()

    def close(self) -> None:
        """Stop the worker after the read in progress; forget frames not taken."""
        if self._executor is None:
            return
        for future in self._pending.values():
            future.cancel()
        self._pending.clear()
        self._executor.shutdown(wait=True)
        self._executor = None
