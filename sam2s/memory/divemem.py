"""DiveMem: SAM 2's recent-frame window plus a small, diverse long-term bank (SAM2S).

For the frame being tracked, memory attention sees (in this order)

1. what :class:`~sam2s.memory.sam2_window.SAM2WindowPolicy` gives: the conditioning (prompted)
   frames, kind ``"conditioning"``, and the 6 most recent frames, kind ``"short_term"``;
2. the long-term bank, kind ``"long_term"``, at SAM 2's conditioning temporal slot (used only when
   the DiveMem temporal embeddings are off: like a prompted frame, a long-term memory may be any
   distance away, and SAM 2 gives such memories that slot).

The long-term bank is ``l0`` + a FIFO of ``num_long_term`` (N_l = 4) memories:

* ``l0`` is the object's first prompted memory, kept for good. It is one of the session's
  conditioning frames, which the window already attends as ``"conditioning"``, so it is not
  repeated; only when ``max_cond_frames_in_attn`` leaves it out is it added as ``"long_term"``.
  If the user removes that frame's prompts, the next prompted frame becomes ``l0``.
* The FIFO is filled by the candidate rule. A tracked frame is *confident* when its object score
  is > 0 (target present) and its predicted IoU is > γ (``iou_threshold``, 0.95). A frame is
  collected as a candidate only when it and the Δ - 1 frames tracked just before it
  (``stable_frames``, Δ = 5) were all confident: a run of 4 confident frames adds nothing, the
  5th frame of a run is the first candidate. Any frame that is not confident, or a gap in the
  tracking (a new pass, a jump), resets the run and empties the buffer. Once the buffer holds
  ``buffer_size`` (5) candidates, the one whose image embedding is least cosine-similar to the
  newest long-term memory (the newest FIFO entry, else ``l0``) joins the FIFO and the buffer
  is cleared.
* Image embedding used for that test: ``FrameMemory.image_embedding``, the spatial mean of the
  image encoder's lowest-resolution (stride-16) FPN feature map, 256 values
  (:meth:`~sam2s.modeling.sam2.FrameFeatures.pooled`), before any memory conditioning, so it
  describes the frame's appearance rather than the tracker's state.

Object pointers: with ``long_term_pointers`` on (default), the pointer of each long-term frame
that lies in the past of the tracking direction is attended too, at its true signed frame
distance, exactly as SAM 2 treats the pointers of prompted frames; a pointer the window already
includes is not repeated.

User corrections need no special handling here: a corrected frame becomes a conditioning frame
of the session and is attended as such for good; a long-term memory of that same frame is then
skipped in favour of the corrected one.

Passes: when tracking does not continue from the last frame this policy saw (a new propagation
pass or a correction), the long-term memories of the frames that the new pass is about to track
again (that frame and those beyond it in the tracking direction) are dropped, since they came
from a pass that is being redone. Memories on the other side stay: e.g. in ``direction="both"``
the backward pass keeps the forward pass's long-term memories (as spatial memory; their pointers
lie in its future and are not used).

State is bounded for any video length: the policy holds references to at most ``num_long_term``
bank frames and ``buffer_size`` candidates, plus a few integers. A saved session carries that
state (:meth:`DiveMemPolicy.state_dict`), so a resumed session tracks on exactly as before.
"""

from __future__ import annotations

from collections import deque

import torch
import torch.nn.functional as F

from sam2s.config import DiveMemConfig, TrackerConfig
from sam2s.memory.base import FrameMemory, ObjectMemory
from sam2s.memory.sam2_window import SAM2WindowPolicy
from sam2s.modeling.sam2 import MemoryFrame, MemoryInputs

__all__ = ["DiveMemPolicy", "least_similar"]


def least_similar(candidates: list[FrameMemory], reference: FrameMemory | None) -> FrameMemory:
    """The candidate whose image embedding has the lowest cosine similarity to ``reference``'s.

    Args:
        candidates: at least one frame, each with a ``(D,)`` ``image_embedding``.
        reference: the newest long-term memory; ``None`` (or no embedding) picks the newest candidate.

    Returns:
        The chosen candidate (the earliest one on ties).
    """
    if not candidates:
        raise ValueError("no candidates to choose from")
    missing = [c.frame_index for c in candidates if c.image_embedding is None]
    if missing:
        raise ValueError(
            f"DiveMem needs the image embedding of every candidate; frames {missing} have none. "
            "Set FrameMemory.image_embedding (the predictor does so when policy.needs_image_embedding)"
        )
    if reference is None or reference.image_embedding is None:
        return candidates[-1]
    embeddings = torch.stack([c.image_embedding.float().flatten() for c in candidates])
    target = reference.image_embedding.float().flatten().to(embeddings.device)
    similarity = F.cosine_similarity(embeddings, target[None], dim=-1)
    return candidates[int(torch.argmin(similarity))]


class DiveMemPolicy(SAM2WindowPolicy):
    """SAM 2's window plus DiveMem's long-term bank (see the module docstring).

    Args:
        tracker: SAM 2 settings (``num_maskmem`` gives the 6 short-term frames).
        divemem: DiveMem settings (N_l, Δ, γ, buffer size).
    """

    needs_image_embedding = True

    def __init__(self, tracker: TrackerConfig, divemem: DiveMemConfig) -> None:
        super().__init__(tracker)
        if divemem.num_long_term < 0:
            raise ValueError(f"divemem.num_long_term must be >= 0, got {divemem.num_long_term}")
        if divemem.stable_frames < 1 or divemem.buffer_size < 1:
            raise ValueError(
                f"divemem.stable_frames and divemem.buffer_size must be >= 1, got "
                f"{divemem.stable_frames} and {divemem.buffer_size}"
            )
        if not 0.0 <= divemem.iou_threshold <= 1.0:
            raise ValueError(
                f"divemem.iou_threshold is a predicted IoU in [0, 1], got {divemem.iou_threshold}"
            )
        self.divemem = divemem
        self.first_prompted: int | None = None  # frame index of l0 (a conditioning frame)
        self.long_term: deque[FrameMemory] = deque(maxlen=divemem.num_long_term)
        self.candidates: list[FrameMemory] = []
        self.run_length = 0  # consecutive confident frames up to the last observed one
        self._last_seen: tuple[int, bool] | None = None  # (frame, reverse) tracking has reached

    # ------------------------------------------------------------------ bank
    def first_prompted_memory(self, memory: ObjectMemory) -> FrameMemory | None:
        """``l0``: the object's first prompted memory (adopting the next one if it was removed)."""
        if self.first_prompted not in memory.conditioning:
            # dict order is the order frames became conditioning frames
            self.first_prompted = next(iter(memory.conditioning), None)
        return None if self.first_prompted is None else memory.conditioning[self.first_prompted]

    def long_term_bank(self, memory: ObjectMemory) -> list[FrameMemory]:
        """``[l0] + FIFO``: at most ``num_long_term + 1`` memories, oldest first."""
        first = self.first_prompted_memory(memory)
        return ([first] if first is not None else []) + list(self.long_term)

    def newest_long_term(self, memory: ObjectMemory) -> FrameMemory | None:
        """What a new candidate must differ from: the newest FIFO entry, else ``l0``."""
        return self.long_term[-1] if self.long_term else self.first_prompted_memory(memory)

    def is_confident(self, frame: FrameMemory) -> bool:
        """Target present (object score > 0) with predicted IoU above γ."""
        return bool(frame.object_score.max() > 0) and bool(frame.iou_score.max() > self.divemem.iou_threshold)

    # ------------------------------------------------------------------ policy interface
    def observe(self, memory: ObjectMemory, frame: FrameMemory, reverse: bool) -> None:
        if not self._continues(frame.frame_index, reverse):
            self._break_run()
        self._last_seen = (frame.frame_index, reverse)
        if not self.is_confident(frame):
            self._break_run()
            return
        self.run_length += 1
        if self.run_length >= self.divemem.stable_frames:
            self.candidates.append(frame)
        if len(self.candidates) >= self.divemem.buffer_size:
            chosen = least_similar(self.candidates, self.newest_long_term(memory))
            if self.divemem.num_long_term > 0:
                self.long_term.append(chosen)  # the deque drops the oldest beyond N_l
            self.candidates.clear()

    def select(
        self, memory: ObjectMemory, frame_index: int, reverse: bool, num_frames: int | None
    ) -> MemoryInputs:
        if not self._continues(frame_index, reverse):
            self._start_pass(frame_index, reverse)
        inputs = super().select(memory, frame_index, reverse, num_frames)
        slot = self.tracker.num_maskmem - 1
        sign = -1 if reverse else 1
        for frame in self.long_term_bank(memory):
            corrected = (
                frame.frame_index in memory.conditioning
                and frame is not memory.conditioning[frame.frame_index]
            )
            already = any(frame.features is f.features for f in inputs.frames)
            if frame.features is None or corrected or already:
                continue
            inputs.frames.append(MemoryFrame(frame.features, slot, "long_term"))
            distance = (frame_index - frame.frame_index) * sign
            pointed = any(frame.obj_ptr is ptr for _, ptr in inputs.pointers)
            if self.divemem.long_term_pointers and distance > 0 and not pointed:
                inputs.pointers.append((distance, frame.obj_ptr))
        return inputs

    def reset(self) -> None:
        self.first_prompted = None
        self.long_term.clear()
        self._break_run()
        self._last_seen = None

    def held_tensors(self) -> list[torch.Tensor]:
        return [t for frame in (*self.long_term, *self.candidates) for t in frame.tensors()]

    def state_dict(self) -> dict:
        return {
            "first_prompted": -1 if self.first_prompted is None else self.first_prompted,
            "long_term": [frame.to_dict() for frame in self.long_term],
            "candidates": [frame.to_dict() for frame in self.candidates],
            "run_length": self.run_length,
            "last_seen": [] if self._last_seen is None else [self._last_seen[0], int(self._last_seen[1])],
        }

    def load_state_dict(self, state: dict, memory: ObjectMemory, device: torch.device | str = "cpu") -> None:
        self.reset()
        if not state:  # saved by a session without DiveMem
            return

        def restore(data: dict) -> FrameMemory:
            # Share the restored store's object for the same frame, as before saving: select()
            # recognises a memory the window already attends by identity.
            saved = FrameMemory.from_dict(data, device)
            cached = memory.recent.get(saved.frame_index)
            same = (
                cached is not None
                and cached.features is not None
                and saved.features is not None
                and torch.equal(cached.features, saved.features)
            )
            return cached if same else saved

        first = int(state["first_prompted"])
        self.first_prompted = None if first < 0 else first
        self.long_term.extend(restore(data) for data in state["long_term"])
        self.candidates = [restore(data) for data in state["candidates"]]
        self.run_length = int(state["run_length"])
        last = state["last_seen"]
        self._last_seen = (int(last[0]), bool(last[1])) if last else None

    # ------------------------------------------------------------------ runs and passes
    def _continues(self, frame_index: int, reverse: bool) -> bool:
        """Whether ``frame_index`` is the next frame after the last one seen, same direction."""
        if self._last_seen is None:
            return False
        last, last_reverse = self._last_seen
        step = -1 if reverse else 1
        return last_reverse == reverse and frame_index == last + step

    def _break_run(self) -> None:
        self.run_length = 0
        self.candidates.clear()

    def _start_pass(self, frame_index: int, reverse: bool) -> None:
        """Tracking restarts at ``frame_index``: drop long-term memories it will track again."""
        self._break_run()
        ahead = (lambda t: t <= frame_index) if reverse else (lambda t: t >= frame_index)
        kept = [m for m in self.long_term if not ahead(m.frame_index)]
        self.long_term.clear()
        self.long_term.extend(kept)
        # the frame before this one (in the tracking direction) counts as seen, so the first
        # observe() of the pass continues the (empty) run instead of restarting it
        self._last_seen = (frame_index + (1 if reverse else -1), reverse)
