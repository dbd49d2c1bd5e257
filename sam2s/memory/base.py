"""What a tracked object remembers, and the interface of the policies that choose from it.

Each object keeps three stores of :class:`FrameMemory`:

* ``conditioning`` — frames the user prompted (kept for the whole session);
* ``pending`` — prompted frames whose memory is not encoded yet (encoded when propagation starts,
  after the user has finished clicking);
* ``recent`` — a bounded cache of tracked frames (:class:`RecentFrameCache`).

A :class:`MemoryPolicy` picks, for the frame being tracked, which stored frames memory attention
sees and which object pointers it gets; policies may keep their own bounded state (DiveMem's
long-term bank). Nothing here grows with the length of the video.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import OrderedDict
from dataclasses import dataclass, field, fields

import torch

from sam2s.modeling.sam2 import MemoryInputs

__all__ = ["FrameMemory", "MemoryPolicy", "ObjectMemory", "RecentFrameCache", "TrackedFrames"]


@dataclass
class FrameMemory:
    """What one frame leaves behind for one object.

    Attributes:
        frame_index: the frame.
        features: ``(1, mem_dim, h, w)`` bfloat16 memory features, ``None`` until encoded.
        obj_ptr: ``(1, C)`` object pointer.
        object_score: ``(1, 1)`` object-presence logit.
        iou_score: ``(1, 1)`` predicted IoU of the chosen mask.
        low_res_logits: ``(1, 1, 4h, 4w)`` mask logits (after hole filling).
        image_embedding: ``(D,)`` pooled image-encoder embedding (used by DiveMem), or ``None``.
        class_embedding: ``(D_text,)`` semantic-head output (SAM2S TSL), or ``None``.
    """

    frame_index: int
    features: torch.Tensor | None
    obj_ptr: torch.Tensor
    object_score: torch.Tensor
    iou_score: torch.Tensor
    low_res_logits: torch.Tensor
    image_embedding: torch.Tensor | None = None
    class_embedding: torch.Tensor | None = None

    def to_dict(self) -> dict:
        """Plain tensors and ints, loadable with ``torch.load(weights_only=True)``."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict, device: torch.device | str = "cpu") -> FrameMemory:
        moved = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in data.items()}
        return cls(**moved)

    def tensors(self) -> list[torch.Tensor]:
        return [t for t in (self.features, self.obj_ptr, self.object_score, self.iou_score,
                            self.low_res_logits, self.image_embedding, self.class_embedding) if t is not None]


class RecentFrameCache:
    """Tracked frames' memories, the oldest-written evicted once ``capacity`` is reached.

    Args:
        capacity: frames kept. SAM 2 reads at most ``max_obj_ptrs`` (16) frames back, so any
            capacity of 16 or more reproduces SAM 2 while tracking; a larger one also keeps the
            memories a correction on a recently tracked frame needs.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"cache capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._frames: OrderedDict[int, FrameMemory] = OrderedDict()

    def put(self, memory: FrameMemory) -> None:
        self._frames.pop(memory.frame_index, None)
        self._frames[memory.frame_index] = memory
        while len(self._frames) > self.capacity:
            self._frames.popitem(last=False)

    def get(self, frame_index: int) -> FrameMemory | None:
        return self._frames.get(frame_index)

    def pop(self, frame_index: int) -> FrameMemory | None:
        return self._frames.pop(frame_index, None)

    def clear(self) -> None:
        self._frames.clear()

    def __contains__(self, frame_index: int) -> bool:
        return frame_index in self._frames

    def __len__(self) -> int:
        return len(self._frames)

    def values(self) -> list[FrameMemory]:
        """Memories in the order they were written (oldest first)."""
        return list(self._frames.values())


class TrackedFrames:
    """Which frames an object has been tracked on, and in which direction, as merged intervals.

    A two-hour video has ~200k frames; intervals keep this O(number of propagation runs).
    """

    def __init__(self) -> None:
        self._runs: list[tuple[int, int, bool]] = []  # (first, last, reverse), disjoint

    def _without(self, frame_index: int) -> list[tuple[int, int, bool]]:
        runs = []
        for first, last, reverse in self._runs:
            if first <= frame_index <= last:
                if first < frame_index:
                    runs.append((first, frame_index - 1, reverse))
                if frame_index < last:
                    runs.append((frame_index + 1, last, reverse))
            else:
                runs.append((first, last, reverse))
        return runs

    def mark(self, frame_index: int, reverse: bool) -> None:
        runs = sorted(self._without(frame_index) + [(frame_index, frame_index, reverse)])
        merged: list[tuple[int, int, bool]] = []
        for run in runs:
            if merged and merged[-1][2] == run[2] and merged[-1][1] + 1 >= run[0]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], run[1]), run[2])
            else:
                merged.append(run)
        self._runs = merged

    def direction(self, frame_index: int) -> bool | None:
        """``reverse`` flag of the run that tracked ``frame_index``; ``None`` if never tracked."""
        for first, last, reverse in self._runs:
            if first <= frame_index <= last:
                return reverse
        return None

    def forget(self, frame_index: int) -> None:
        """Mark a frame as never tracked (its prompts were cleared)."""
        self._runs = self._without(frame_index)

    def clear(self) -> None:
        self._runs.clear()

    @property
    def runs(self) -> list[tuple[int, int, bool]]:
        return list(self._runs)

    def restore(self, runs: list[tuple[int, int, bool]]) -> None:
        self._runs = [(int(a), int(b), bool(r)) for a, b, r in runs]


@dataclass
class ObjectMemory:
    """Everything the session remembers about one object."""

    conditioning: dict[int, FrameMemory] = field(default_factory=dict)
    pending: dict[int, FrameMemory] = field(default_factory=dict)
    recent: RecentFrameCache = field(default_factory=lambda: RecentFrameCache(64))
    tracked: TrackedFrames = field(default_factory=TrackedFrames)

    def latest(self, frame_index: int) -> FrameMemory | None:
        """The newest output on a frame: pending, then conditioning, then recent."""
        return (
            self.pending.get(frame_index)
            or self.conditioning.get(frame_index)
            or self.recent.get(frame_index)
        )

    def clear(self) -> None:
        self.conditioning.clear()
        self.pending.clear()
        self.recent.clear()
        self.tracked.clear()


class MemoryPolicy(ABC):
    """Chooses what memory attention sees for one object on one frame.

    A policy instance belongs to one object (objects are tracked independently, as in SAM 2.1).
    """

    #: whether tracked frames must carry a pooled image embedding (DiveMem's diversity test).
    needs_image_embedding: bool = False

    @abstractmethod
    def select(self, memory: ObjectMemory, frame_index: int, reverse: bool, num_frames: int | None) -> MemoryInputs:
        """The memories and object pointers for ``frame_index``.

        Args:
            memory: the object's stores.
            frame_index: the frame being tracked.
            reverse: tracking towards frame 0.
            num_frames: video length, ``None`` for a live stream of unknown length.
        """

    def observe(self, memory: ObjectMemory, frame: FrameMemory, reverse: bool) -> None:
        """Called once a tracked (non-prompted) frame's memory is encoded. Default: nothing."""

    def reset(self) -> None:
        """Forget policy state (the session was reset)."""

    def held_tensors(self) -> list[torch.Tensor]:
        """Tensors the policy keeps beyond the object's stores (for memory accounting)."""
        return []

    def state_dict(self) -> dict:
        """Policy state to save with a session (tensors, ints, lists, dicts only)."""
        return {}

    def load_state_dict(self, state: dict, memory: ObjectMemory, device: torch.device | str = "cpu") -> None:
        """Restore what :meth:`state_dict` saved; ``memory`` is the object's restored stores."""
