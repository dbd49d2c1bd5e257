"""SAM 2's memory: every prompted frame plus the most recent tracked frames.

For frame t tracked forwards (mirror for reverse), memory attention sees

* the conditioning frames (all, or the ``max_cond_frames_in_attn`` closest ones), temporal slot
  ``num_maskmem - 1``;
* the frames t-1, t-2, ... t-(num_maskmem-1) (with ``memory_temporal_stride`` beyond t-1), each
  at its own temporal slot, skipped where no memory exists;
* object pointers of the conditioning frames up to t and of the frames t-1 ... t-(P-1), with
  P = min(num_frames, max_obj_ptrs) and distances divided by P - 1.

For a live stream of unknown length P = ``max_obj_ptrs``; a known video shorter than
``max_obj_ptrs`` frames gets SAM 2's own (length-dependent) scaling.
"""

from __future__ import annotations

from sam2s.config import TrackerConfig
from sam2s.memory.base import FrameMemory, MemoryPolicy, ObjectMemory
from sam2s.modeling.sam2 import MemoryFrame, MemoryInputs

__all__ = ["SAM2WindowPolicy", "closest_conditioning_frames", "pointer_span"]


def closest_conditioning_frames(
    frame_index: int, conditioning: dict[int, FrameMemory], limit: int
) -> tuple[dict[int, FrameMemory], dict[int, FrameMemory]]:
    """Split conditioning frames into those attended (at most ``limit``; -1 = all) and the rest.

    The closest frame before and the closest at-or-after ``frame_index`` always come first, then
    the temporally closest others.
    """
    if limit == -1 or len(conditioning) <= limit:
        return dict(conditioning), {}
    if limit < 2:
        raise ValueError("max_cond_frames_in_attn must be -1 or at least 2")
    chosen: dict[int, FrameMemory] = {}
    before = max((t for t in conditioning if t < frame_index), default=None)
    after = min((t for t in conditioning if t >= frame_index), default=None)
    for t in (before, after):
        if t is not None:
            chosen[t] = conditioning[t]
    others = sorted((t for t in conditioning if t not in chosen), key=lambda t: abs(t - frame_index))
    for t in others[: limit - len(chosen)]:
        chosen[t] = conditioning[t]
    rest = {t: m for t, m in conditioning.items() if t not in chosen}
    return chosen, rest


def pointer_span(num_frames: int | None, max_obj_ptrs: int) -> int:
    """How many frames back object pointers reach (SAM 2: ``min(num_frames, max_obj_ptrs)``)."""
    return max_obj_ptrs if num_frames is None else min(num_frames, max_obj_ptrs)


class SAM2WindowPolicy(MemoryPolicy):
    """SAM 2.1's recent-frame window (see the module docstring)."""

    def __init__(self, tracker: TrackerConfig) -> None:
        self.tracker = tracker

    def recent_frame_offsets(self, frame_index: int, reverse: bool) -> list[tuple[int, int]]:
        """``(temporal position, frame)`` of the recent frames, nearest first (position 1 = t-1)."""
        num_maskmem, stride = self.tracker.num_maskmem, self.tracker.memory_temporal_stride
        offsets = []
        for t_pos in range(1, num_maskmem):
            frames_back = num_maskmem - t_pos
            if frames_back == 1:
                prev = frame_index + 1 if reverse else frame_index - 1
            elif not reverse:
                prev = ((frame_index - 2) // stride) * stride - (frames_back - 2) * stride
            else:
                prev = -(-(frame_index + 2) // stride) * stride + (frames_back - 2) * stride
            offsets.append((t_pos, prev))
        return offsets

    def select(self, memory: ObjectMemory, frame_index: int, reverse: bool, num_frames: int | None) -> MemoryInputs:
        num_maskmem = self.tracker.num_maskmem
        chosen, unchosen = closest_conditioning_frames(
            frame_index, memory.conditioning, self.tracker.max_cond_frames_in_attn
        )

        def lookup(t: int) -> FrameMemory | None:
            return memory.recent.get(t) or unchosen.get(t)

        frames = [MemoryFrame(m.features, num_maskmem - 1, "conditioning") for m in chosen.values()]
        for t_pos, prev in self.recent_frame_offsets(frame_index, reverse):
            found = lookup(prev)
            if found is not None and found.features is not None:
                frames.append(MemoryFrame(found.features, num_maskmem - t_pos - 1, "short_term"))

        span = pointer_span(num_frames, self.tracker.max_obj_ptrs)
        sign = -1 if reverse else 1
        pointers = [
            ((frame_index - t) * sign, m.obj_ptr)
            for t, m in chosen.items()
            if (t >= frame_index if reverse else t <= frame_index)
        ]
        for distance in range(1, span):
            t = frame_index - distance * sign
            if t < 0 or (num_frames is not None and t >= num_frames):
                break
            found = lookup(t)
            if found is not None:
                pointers.append((distance, found.obj_ptr))
        return MemoryInputs(frames=frames, pointers=pointers, pointer_time_span=span - 1)
