"""Run a propagation on a background thread so that Slicer's UI stays usable.

The worker thread only runs the model (no MRML, no Qt). The UI thread polls :meth:`poll` from
a timer, gets progress events in order, updates its progress bar and preview, and applies the
result when the ``finished`` event arrives. :meth:`cancel` asks the propagation to stop after
the frame in hand; a cancelled propagation writes nothing.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from SAM2SLib.prompts import FramePrediction

__all__ = ["PropagationWorker", "WorkerEvent"]


@dataclass
class WorkerEvent:
    """One thing the worker reports.

    Attributes:
        kind: ``"frame"`` (one more frame predicted), ``"finished"`` (``result`` is set; check
            ``result.cancelled``) or ``"failed"`` (``error`` is set).
        done, total: frames predicted so far and in all (``"frame"`` events).
        prediction: the frame's prediction (``"frame"`` events), for a live preview.
    """

    kind: Literal["frame", "finished", "failed"]
    done: int = 0
    total: int = 0
    prediction: FramePrediction | None = None
    result: object = None
    error: BaseException | None = None


class PropagationWorker:
    """Runs ``run(onFrame, cancelEvent)`` (e.g. ``SAM2SLogic.runPropagation``) on a thread."""

    def __init__(self, run: Callable[[Callable, threading.Event], object]) -> None:
        self._run = run
        self._events: queue.Queue[WorkerEvent] = queue.Queue()
        self.cancelEvent = threading.Event()
        self._thread = threading.Thread(target=self._main, name="SAM2S propagation", daemon=True)

    def start(self) -> PropagationWorker:
        self._thread.start()
        return self

    def cancel(self) -> None:
        self.cancelEvent.set()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the thread ends (tests, closing the application); True when it has."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def poll(self) -> list[WorkerEvent]:
        """Every event since the last call, oldest first (call from the UI thread)."""
        events = []
        while True:
            try:
                events.append(self._events.get_nowait())
            except queue.Empty:
                return events

    def _main(self) -> None:
        def onFrame(prediction: FramePrediction, done: int, total: int) -> None:
            self._events.put(WorkerEvent("frame", done, total, prediction))

        try:
            result = self._run(onFrame, self.cancelEvent)
        except Exception as error:  # noqa: BLE001 (any failure is reported to the UI thread, which shows it)
            self._events.put(WorkerEvent("failed", error=error))
        else:
            self._events.put(WorkerEvent("finished", result=result))
