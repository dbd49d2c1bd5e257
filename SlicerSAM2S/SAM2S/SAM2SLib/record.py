"""Telling the user's drawing apart from earlier propagation output.

Prompts are "the segment's content on the frames where the user drew it". After one
propagation every frame has content, so each written frame is recorded in a segment tag with
a checksum of what was written. A frame whose content still matches its checksum is propagation
output (not a prompt); a frame the user repainted no longer matches and becomes a prompt again,
which is how corrections work: fix a frame, propagate again.

Volumes keep one tag per segment (``{"axis": a, "frames": {slice: crc}}``); a video keeps one
tag per segment in each segmentation of the sequence (``{"frames": {"0": crc}}``, the frame
being the whole item). The tags travel with undo and with the saved ``.seg.nrrd``.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field

import numpy as np
import vtk

__all__ = ["RECORD_TAG", "PropagationRecord", "maskChecksum"]

RECORD_TAG = "SAM2S.PropagatedFrames"


def maskChecksum(mask: np.ndarray) -> int:
    """CRC-32 of a boolean mask and its shape."""
    mask = np.asarray(mask, bool)
    return zlib.crc32(np.packbits(mask).tobytes(), zlib.crc32(repr(mask.shape).encode()))


@dataclass
class PropagationRecord:
    """Frames of one segment that hold propagation output.

    Attributes:
        axis: the IJK axis the frames are slices of (volumes), ``None`` for video frames.
        frames: ``{frameIndex: checksum of the mask written there}``.
    """

    axis: int | None = None
    frames: dict[int, int] = field(default_factory=dict)

    def isPropagated(self, frameIndex: int, mask: np.ndarray) -> bool:
        return self.frames.get(int(frameIndex)) == maskChecksum(mask)

    def remember(self, frameIndex: int, mask: np.ndarray) -> None:
        self.frames[int(frameIndex)] = maskChecksum(mask)

    def forget(self, frameIndex: int) -> None:
        self.frames.pop(int(frameIndex), None)

    @classmethod
    def read(cls, segment, axis: int | None = None) -> PropagationRecord:
        """The record stored on a ``vtkSegment``; empty when absent, unreadable or for another axis."""
        value = vtk.reference("")
        if segment is None or not segment.GetTag(RECORD_TAG, value):
            return cls(axis)
        try:
            data = json.loads(str(value))
            record = cls(data.get("axis"), {int(k): int(v) for k, v in data.get("frames", {}).items()})
        except (ValueError, TypeError, AttributeError):
            return cls(axis)
        return record if record.axis == axis else cls(axis)

    def write(self, segment) -> None:
        if not self.frames:
            segment.RemoveTag(RECORD_TAG)
            return
        frames = {str(k): v for k, v in sorted(self.frames.items())}
        segment.SetTag(RECORD_TAG, json.dumps({"axis": self.axis, "frames": frames}, separators=(",", ":")))
