"""A small JSON manifest that records which frames a writer has finished, for resuming a run.

The manifest lives next to the output (``progress.json`` in a mask folder,
``<name>.progress.json`` beside a single output file) and is always replaced atomically, so it
is either the previous or the new version, never a torn one. Opening a writer marks its manifest
incomplete at once; only :meth:`WriterProgress.mark_complete`, called after every byte of the
output is in place, sets ``complete``. A run that stops midway therefore never looks finished.

Frames are stored as half-open ``[start, stop)`` runs, so a two-hour video written in order
keeps a manifest of a few bytes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sam2s.writers.base import atomic_output

__all__ = ["ProgressManifest", "WriterProgress", "frames_to_runs", "runs_to_frames"]

MANIFEST_FORMAT = "sam2s-writer-progress"
MANIFEST_VERSION = 1


def frames_to_runs(frames: Iterable[int]) -> list[list[int]]:
    """``{0, 1, 2, 5}`` -> ``[[0, 3], [5, 6]]`` (half-open runs, ascending)."""
    runs: list[list[int]] = []
    for frame in sorted(set(frames)):
        if runs and runs[-1][1] == frame:
            runs[-1][1] = frame + 1
        else:
            runs.append([frame, frame + 1])
    return runs


def runs_to_frames(runs: Iterable[Iterable[int]]) -> set[int]:
    """Inverse of :func:`frames_to_runs`."""
    frames: set[int] = set()
    for start, stop in runs:
        frames.update(range(int(start), int(stop)))
    return frames


@dataclass
class ProgressManifest:
    """What the manifest file holds.

    Attributes:
        writer: the kind of writer that owns the output (``"png_masks"``, ``"label_volume"``, ...).
        settings: the writer settings the output depends on; resuming with other settings is refused.
        frames: indices of finished frames.
        obj_ids: object ids seen so far.
        complete: True once the whole output was written and flushed.
    """

    writer: str
    settings: dict[str, Any] = field(default_factory=dict)
    frames: set[int] = field(default_factory=set)
    obj_ids: set[int] = field(default_factory=set)
    complete: bool = False

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": MANIFEST_FORMAT,
                "version": MANIFEST_VERSION,
                "writer": self.writer,
                "settings": self.settings,
                "complete": self.complete,
                "frame_count": len(self.frames),
                "frames": frames_to_runs(self.frames),
                "obj_ids": sorted(self.obj_ids),
                "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str, origin: Path) -> ProgressManifest:
        try:
            data = json.loads(text)
            if data.get("format") != MANIFEST_FORMAT or data.get("version") != MANIFEST_VERSION:
                raise ValueError(f"format {data.get('format')!r} version {data.get('version')!r}")
            return cls(
                writer=str(data["writer"]),
                settings=dict(data["settings"]),
                frames=runs_to_frames(data["frames"]),
                obj_ids={int(v) for v in data["obj_ids"]},
                complete=bool(data["complete"]),
            )
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(
                f"progress manifest {origin} is not a {MANIFEST_FORMAT} v{MANIFEST_VERSION} file ({error}); "
                "delete it or write without resume"
            ) from error


def _normalised(settings: Mapping[str, Any]) -> dict[str, Any]:
    # Compare settings as JSON sees them (tuples become lists) so a reloaded manifest matches.
    return json.loads(json.dumps(dict(settings)))


class WriterProgress:
    """Tracks finished frames of one output and persists them in an atomic JSON manifest.

    Args:
        path: the manifest file.
        writer: kind of writer; a resumed manifest must name the same kind.
        settings: JSON-serialisable settings the output depends on; a resumed manifest must match.
        resume: keep the frames recorded by an earlier run; otherwise start from none.
        flush_every: write the manifest after this many new frames; ``None`` writes only on
            :meth:`flush` (for writers whose data must reach disk before the manifest claims it).

    Raises:
        ValueError: resuming an output made by another writer or with other settings.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        writer: str,
        settings: Mapping[str, Any] | None = None,
        resume: bool = False,
        flush_every: int | None = 25,
    ) -> None:
        self.path = Path(path)
        self.flush_every = flush_every
        settings = _normalised(settings or {})
        previous = self.read(self.path) if resume else None
        if previous is not None:
            if previous.writer != writer:
                raise ValueError(
                    f"cannot resume {self.path}: it was written by a {previous.writer!r} writer, not {writer!r}"
                )
            if previous.settings != settings:
                raise ValueError(
                    f"cannot resume {self.path}: it was started with settings {previous.settings}, "
                    f"now {settings}; write without resume to start over"
                )
            self.was_complete = previous.complete
            self.manifest = ProgressManifest(
                writer, settings, previous.frames, previous.obj_ids, complete=False
            )
        else:
            self.was_complete = False
            self.manifest = ProgressManifest(writer, settings)
        self._unflushed = 0
        self.flush()  # from now on the output is marked incomplete until mark_complete()

    @staticmethod
    def read(path: str | Path) -> ProgressManifest | None:
        """The manifest at ``path``, or ``None`` if there is none."""
        path = Path(path)
        if not path.is_file():
            return None
        return ProgressManifest.from_json(path.read_text(encoding="utf-8"), path)

    @property
    def complete(self) -> bool:
        return self.manifest.complete

    def completed_frames(self) -> set[int]:
        """Frames recorded as finished (by this run or, when resuming, an earlier one)."""
        return set(self.manifest.frames)

    def add(self, frame_index: int, obj_ids: Iterable[int] = ()) -> None:
        """Record a finished frame (and the objects it holds); flush every ``flush_every`` frames."""
        self.add_many([frame_index], obj_ids)

    def add_many(self, frame_indices: Iterable[int], obj_ids: Iterable[int] = ()) -> None:
        frame_indices = [int(i) for i in frame_indices]
        self.manifest.frames.update(frame_indices)
        self.manifest.obj_ids.update(int(i) for i in obj_ids)
        self._unflushed += len(frame_indices)
        if self.flush_every is not None and self._unflushed >= self.flush_every:
            self.flush()

    def reset_frames(self, frames: Iterable[int]) -> None:
        """Replace the finished-frame set (a writer that found fewer usable frames on disk than recorded)."""
        self.manifest.frames = {int(i) for i in frames}
        self.flush()

    def flush(self) -> None:
        """Write the manifest now (atomically)."""
        with atomic_output(self.path) as temporary:
            temporary.write_text(self.manifest.to_json(), encoding="utf-8")
        self._unflushed = 0

    def mark_complete(self) -> None:
        """Mark the output complete; call only after everything it describes is on disk."""
        self.manifest.complete = True
        self.flush()
