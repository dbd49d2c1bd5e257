"""Interactive video / volume segmentation that streams frames and keeps memory bounded.

``VideoPredictor(model).start(source)`` opens a :class:`Session`. Prompts (clicks, boxes, masks)
go to any object on any frame at any time; :meth:`Session.propagate` is a generator that tracks
every object frame by frame and yields a :class:`~sam2s.predictor.results.FrameResult` per frame,
so a progress bar or a cancel button is a plain ``for`` loop.

Frames are decoded on demand from the :class:`~sam2s.data.sources.FrameSource`; image features
are kept only for the frame in hand; per-object memories live in bounded stores chosen by the
model's memory policy (SAM 2's window or DiveMem). Memory use therefore does not grow with the
video length.

Tracking follows SAM 2.1's video predictor, object by object, and gives the same numbers on
the same frames, with these documented rules:

* Corrections. A prompt on a frame that was already tracked becomes a conditioning frame (SAM 2's
  ``add_all_frames_to_correct_as_cond=True``) and is conditioned on the memories that frame was
  tracked with. Those come from the bounded cache of recent memories (``cache_frames`` per object):
  while the cache still holds them (any clip shorter than the cache) the result equals SAM 2's;
  beyond it the correction is conditioned on the conditioning frames (and DiveMem's long-term
  bank) plus whatever recent memories remain. ``propagate()`` re-runs from the earliest prompted
  frame, like SAM 2; on a long video pass ``start_frame=<corrected frame>`` to restart from the
  correction instead.
* Object-pointer time. SAM 2 divides pointer distances by ``min(num_frames, 16) - 1``: a video of
  known length uses exactly that; a live stream (unknown length) uses 15, SAM 2's value for any
  video of 16 frames or more.

Speed without changing results: the image encoder runs once per frame for all objects; memory
attention reuses each memory frame's keys and values while the frame stays in memory
(:class:`~sam2s.modeling.memory_cache.MemoryAttentionCache`); during a pass the next frames are
read and resized on a worker thread (:class:`~sam2s.predictor.prefetch.FramePrefetcher`, pinned
for an asynchronous copy on CUDA); the per-frame loop never reads a value back to the host, so on
a GPU it queues work without waiting (DiveMem's candidate rule reads two scores per frame).
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Self

import numpy as np
import torch
import torch.nn.functional as F

from sam2s.data.sources.base import StreamEndedError
from sam2s.memory import build_memory_policy
from sam2s.memory.base import FrameMemory, MemoryPolicy, ObjectMemory, RecentFrameCache
from sam2s.modeling.kernels import fast_kernels
from sam2s.modeling.memory_cache import MemoryAttentionCache
from sam2s.modeling.sam2 import NO_OBJECT_LOGIT, FrameFeatures, PointPrompt, SAM2Model
from sam2s.predictor.prefetch import FramePrefetcher
from sam2s.predictor.results import FrameResult
from sam2s.transforms.model_input import ToModelInput

__all__ = ["PromptError", "PropagationPass", "Session", "VideoPredictor"]

logger = logging.getLogger(__name__)

DIRECTIONS = ("forward", "backward", "both")
SESSION_STATE_FORMAT = "sam2s-session/1"


class PromptError(ValueError):
    """A prompt that cannot be applied (outside the frame, unknown object, empty...)."""


@dataclass(frozen=True)
class PropagationPass:
    """One sweep of :meth:`Session.propagate`: from ``first`` towards the end, or towards 0."""

    first: int
    reverse: bool


@dataclass
class ObjectPrompts:
    """The prompts of one object: model-space clicks per frame, or a mask per frame."""

    points: dict[int, PointPrompt] = field(default_factory=dict)
    masks: dict[int, torch.Tensor] = field(default_factory=dict)

    def frames(self) -> set[int]:
        return set(self.points) | set(self.masks)


@dataclass
class TrackedObject:
    """One object of a session: its id, prompts, memories and memory policy."""

    obj_id: int
    prompts: ObjectPrompts
    memory: ObjectMemory
    policy: MemoryPolicy


class VideoPredictor:
    """Creates streaming interactive sessions for a model.

    Args:
        model: a :class:`~sam2s.modeling.sam2.SAM2Model` (or SAM2S model).
        cache_frames: recent-frame memories kept per object (>= 16 reproduces SAM 2 while tracking).
        autocast: run in bfloat16 autocast on CUDA (ignored elsewhere).
        cpu_autocast: run in bfloat16 autocast on CPU too (opt-in: faster on CPUs with bfloat16
            instructions, but logits move by ~1e-2 from the float32 result).
        policy_factory: builds one memory policy per object; defaults to the model's own
            (:func:`~sam2s.memory.build_memory_policy`).
        prefetch: frames read and resized ahead on a worker thread during propagation; 0 reads
            each frame when it is tracked. ``None`` (default): 2 on CUDA, where the host is
            otherwise idle while the GPU works, and 0 on CPU, where compute already fills the cores.
        compile: compile the image encoder with ``torch.compile`` in this mode (``"default"``,
            ``"reduce-overhead"``: CUDA graphs on a GPU, ``"max-autotune"``); ``None`` (default)
            runs it eagerly. Frames of one model share one input size, so it compiles once, on
            the first frame (slow); results move by float32 rounding only.
    """

    def __init__(
        self,
        model: SAM2Model,
        cache_frames: int = 64,
        autocast: bool = True,
        policy_factory=None,
        prefetch: int | None = None,
        cpu_autocast: bool = False,
        compile: str | None = None,
    ) -> None:
        if prefetch is not None and prefetch < 0:
            raise ValueError(f"prefetch must be >= 0 frames, got {prefetch}")
        self.model = model.eval()
        self.cache_frames = cache_frames
        self.autocast = autocast
        self.cpu_autocast = cpu_autocast
        self.compile = compile
        # the model's own method, or its compiled form (same arguments and FrameFeatures result)
        self.encode_image = (
            model.encode_image if compile is None else torch.compile(model.encode_image, mode=compile, dynamic=False)
        )
        self.policy_factory = policy_factory or (lambda: build_memory_policy(model.config))
        self._prefetch = prefetch

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def prefetch(self) -> int:
        """Frames read ahead during propagation (see the class docstring)."""
        if self._prefetch is not None:
            return self._prefetch
        return 2 if self.device.type == "cuda" else 0

    def start(self, source, **source_options) -> Session:
        """Open a session on a video file, frame folder, volume, array or :class:`FrameSource`."""
        from sam2s.data.sources import open_source

        return Session(self, open_source(source, **source_options))


class Session:
    """One interactive segmentation of one source (see the module docstring)."""

    def __init__(self, predictor: VideoPredictor, source) -> None:
        self.predictor = predictor
        self.model = predictor.model
        self.source = source
        self.num_frames: int | None = source.num_frames
        if self.num_frames is not None and self.num_frames <= 0:
            raise ValueError(f"{source!r} has no frames")
        self.height, self.width = int(source.height), int(source.width)
        self.to_model_input = ToModelInput(self.model.image_size, resample="bicubic_pil")
        self.objects: dict[int, TrackedObject] = {}
        self._features: tuple[int, FrameFeatures] | None = None
        self._attention_cache = MemoryAttentionCache()
        self._prefetcher: FramePrefetcher | None = None
        # Held while reading the source: the prefetch worker and a prompt added between two
        # yielded frames must not read it at the same time.
        self._read_lock = threading.Lock()

    # ------------------------------------------------------------------ public API
    @property
    def obj_ids(self) -> list[int]:
        return list(self.objects)

    @property
    def device(self) -> torch.device:
        return self.model.device

    def close(self) -> None:
        self._features = None
        self._attention_cache.clear()
        close = getattr(self.source, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @torch.inference_mode()
    def add_prompt(
        self,
        frame_index: int,
        obj_id: int,
        points: Sequence[Sequence[float]] | np.ndarray | None = None,
        labels: Sequence[int] | np.ndarray | None = None,
        box: Sequence[float] | np.ndarray | None = None,
        mask: np.ndarray | torch.Tensor | None = None,
        clear_old_points: bool = True,
    ) -> FrameResult:
        """Add clicks, a box and/or a mask for one object on one frame.

        Args:
            frame_index: the frame (slice) to prompt.
            obj_id: any integer naming the object; new ids create objects.
            points: ``(N, 2)`` (x, y) in source-frame pixels.
            labels: ``(N,)`` 1 = positive, 0 = negative.
            box: ``(x0, y0, x1, y1)`` in source-frame pixels.
            mask: ``(H, W)`` bool mask at source resolution (replaces clicks on this frame).
            clear_old_points: replace this frame's earlier clicks (else append to them).

        Returns:
            Every object's result on this frame.
        """
        self._check_frame_index(frame_index)
        if not isinstance(obj_id, (int, np.integer)) or isinstance(obj_id, bool):
            raise PromptError(f"obj_id must be an integer, got {obj_id!r}")
        obj_id = int(obj_id)
        has_points = points is not None or labels is not None
        if mask is not None and (has_points or box is not None):
            raise PromptError("give either a mask or clicks/box for one frame, not both")
        if mask is None and not has_points and box is None:
            raise PromptError("empty prompt: give points with labels, a box, or a mask")

        obj = self._object(obj_id, create=True)
        if mask is not None:
            model_mask = self._mask_to_model(mask)
            obj.prompts.masks[frame_index] = model_mask
            obj.prompts.points.pop(frame_index, None)
            prompt_points = None
        else:
            new_points = self._points_to_model(points, labels, box)
            old = None if clear_old_points else obj.prompts.points.get(frame_index)
            if box is not None and old is not None:
                raise PromptError("a box must come before clicks on a frame; use clear_old_points=True")
            prompt_points = new_points if old is None else old.concat(new_points)
            obj.prompts.points[frame_index] = prompt_points
            obj.prompts.masks.pop(frame_index, None)
            model_mask = None

        with self._model_context():
            self._run_prompt(obj, frame_index, prompt_points, model_mask)
        return self._frame_result(frame_index)

    def remove_object(self, obj_id: int) -> None:
        """Forget an object and all its prompts and memories."""
        self._object(obj_id)
        del self.objects[obj_id]

    def clear_prompts(self, frame_index: int, obj_id: int) -> None:
        """Remove an object's prompts on one frame; its result there becomes a tracked one."""
        obj = self._object(obj_id)
        obj.prompts.points.pop(frame_index, None)
        obj.prompts.masks.pop(frame_index, None)
        obj.memory.pending.pop(frame_index, None)
        demoted = obj.memory.conditioning.pop(frame_index, None)
        if demoted is not None:
            obj.memory.recent.put(demoted)
            obj.memory.tracked.forget(frame_index)

    def reset(self) -> None:
        """Remove every object, prompt and memory."""
        self.objects.clear()
        self._features = None
        self._attention_cache.clear()

    def held_bytes(self) -> int:
        """Bytes of tensor storage the session holds (memories, prompts, cached features).

        This is what must not grow with the video length; benchmarks and tests watch it.
        """
        seen: dict[int, int] = {}

        def add(tensor: torch.Tensor | None) -> None:
            if tensor is not None:
                storage = tensor.untyped_storage()
                seen[storage.data_ptr()] = storage.nbytes()

        for obj in self.objects.values():
            for memory in (*obj.memory.conditioning.values(), *obj.memory.pending.values(), *obj.memory.recent.values()):
                for tensor in memory.tensors():
                    add(tensor)
            for point in obj.prompts.points.values():
                add(point.coords)
                add(point.labels)
            for mask in obj.prompts.masks.values():
                add(mask)
            for tensor in obj.policy.held_tensors():
                add(tensor)
        for tensor in self._attention_cache.held_tensors():
            add(tensor)
        if self._features is not None:
            features = self._features[1]
            for tensor in (features.vision, features.vision_pos, *features.high_res):
                add(tensor)
        return sum(seen.values())

    # ------------------------------------------------------------------ saving and resuming
    def state_dict(self) -> dict:
        """Everything the session remembers, as tensors and plain values.

        The result loads with ``torch.load(..., weights_only=True)``; with
        :meth:`load_state_dict` a new session on the same source continues exactly where this
        one stopped (``sam2s segment --resume`` relies on it).
        """
        objects = []
        for obj in self.objects.values():
            memory = obj.memory
            objects.append({
                "obj_id": obj.obj_id,
                "points": {t: {"coords": p.coords, "labels": p.labels} for t, p in obj.prompts.points.items()},
                "masks": dict(obj.prompts.masks),
                "conditioning": [m.to_dict() for m in memory.conditioning.values()],
                "pending": [m.to_dict() for m in memory.pending.values()],
                "recent": [m.to_dict() for m in memory.recent.values()],
                "tracked": [list(run) for run in memory.tracked.runs],
                "policy": obj.policy.state_dict(),
            })
        return {
            "format": SESSION_STATE_FORMAT,
            "model": self.model.config.name,
            "frame_size": [self.height, self.width],
            "num_frames": -1 if self.num_frames is None else self.num_frames,
            "objects": objects,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict` saved from a session on the same source and model."""
        if not isinstance(state, dict) or state.get("format") != SESSION_STATE_FORMAT:
            raise ValueError(f"not a saved session state (expected format {SESSION_STATE_FORMAT!r})")
        if state["model"] != self.model.config.name:
            raise ValueError(f"session state was saved with model {state['model']!r}, not {self.model.config.name!r}")
        if list(state["frame_size"]) != [self.height, self.width]:
            raise ValueError(f"session state is for {state['frame_size']} frames, the source has "
                             f"{[self.height, self.width]}")
        device = self.device
        self.reset()
        for saved in state["objects"]:
            obj = self._object(int(saved["obj_id"]), create=True)
            for t, point in saved["points"].items():
                obj.prompts.points[int(t)] = PointPrompt(point["coords"].to(device), point["labels"].to(device))
            obj.prompts.masks.update({int(t): m.to(device) for t, m in saved["masks"].items()})
            memory = obj.memory
            for m in saved["conditioning"]:
                memory.conditioning[int(m["frame_index"])] = FrameMemory.from_dict(m, device)
            for m in saved["pending"]:
                memory.pending[int(m["frame_index"])] = FrameMemory.from_dict(m, device)
            for m in saved["recent"]:
                memory.recent.put(FrameMemory.from_dict(m, device))
            memory.tracked.restore(saved["tracked"])
            obj.policy.load_state_dict(saved["policy"], memory, device)

    @torch.inference_mode()
    def propagate(
        self, direction: str = "both", start_frame: int | None = None, max_frames: int | None = None
    ) -> Iterator[FrameResult]:
        """Track every object and yield one result per frame.

        Args:
            direction: ``"forward"`` (from the earliest prompted frame to the end), ``"backward"``
                (from the latest prompted frame down to 0) or ``"both"`` (every frame once:
                forward from the earliest prompted frame, then backward from it).
            start_frame: first frame of each pass instead of the prompted one.
            max_frames: at most this many frames per pass.
        """
        if max_frames is not None and max_frames < 1:
            raise ValueError(f"max_frames must be at least 1, got {max_frames}")
        for planned in self.plan(direction, start_frame):
            yield from self.run_pass(planned, max_frames=max_frames)

    def plan(self, direction: str = "both", start_frame: int | None = None) -> list[PropagationPass]:
        """The passes :meth:`propagate` makes (encodes newly prompted frames first).

        A caller that saves its progress (``sam2s segment --resume``) runs these passes itself
        with :meth:`run_pass` and can continue one from any frame.
        """
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        if start_frame is not None:
            self._check_frame_index(start_frame)
        with torch.inference_mode(), self._model_context():
            self._consolidate_prompts()
        prompted = sorted({t for obj in self.objects.values() for t in obj.memory.conditioning})
        earliest = prompted[0] if start_frame is None else start_frame
        latest = prompted[-1] if start_frame is None else start_frame
        if direction == "forward":
            return [PropagationPass(earliest, reverse=False)]
        if direction == "backward":
            return [PropagationPass(latest, reverse=True)]
        return [PropagationPass(earliest, reverse=False), PropagationPass(earliest - 1, reverse=True)]

    @torch.inference_mode()
    def run_pass(
        self, planned: PropagationPass, max_frames: int | None = None, resume_at: int | None = None
    ) -> Iterator[FrameResult]:
        """Track frame by frame from ``planned.first`` (or ``resume_at``) to the end of the source
        (or frame 0 when reversed), at most ``max_frames`` frames."""
        if max_frames is not None and max_frames < 1:
            raise ValueError(f"max_frames must be at least 1, got {max_frames}")
        first = planned.first if resume_at is None else resume_at
        self._start_prefetch(self._pass_frames(first, planned.reverse, max_frames))
        try:
            for frame_index in self._pass_frames(first, planned.reverse, max_frames):
                try:
                    with self._model_context():
                        self._track_frame(frame_index, planned.reverse)
                except StreamEndedError:  # a live stream has no more frames
                    return
                yield self._frame_result(frame_index)
        finally:
            self._stop_prefetch()

    def _track_frame(self, frame_index: int, reverse: bool) -> None:
        features = None
        for obj in self.objects.values():
            memory = obj.memory
            if frame_index not in memory.conditioning:
                features = features or self._frame_features(frame_index)
                tracked = self._track_object(obj, frame_index, features, reverse, None, None,
                                             is_initial=False, encode_memory=True)
                memory.recent.put(tracked)
                obj.policy.observe(memory, tracked, reverse)
            memory.tracked.mark(frame_index, reverse)
        self._attention_cache.end_frame()

    def _run_prompt(self, obj: TrackedObject, frame_index: int, points: PointPrompt | None,
                    mask: torch.Tensor | None) -> None:
        memory = obj.memory
        tracked_direction = memory.tracked.direction(frame_index)
        is_initial = tracked_direction is None
        reverse = bool(tracked_direction)
        previous_logits = None
        if points is not None:
            previous = memory.latest(frame_index)
            if previous is not None:
                previous_logits = previous.low_res_logits.clamp(-32.0, 32.0)
        features = self._frame_features(frame_index)
        result = self._track_object(obj, frame_index, features, reverse, points, mask,
                                    is_initial=is_initial, encode_memory=False,
                                    previous_logits=previous_logits)
        memory.pending[frame_index] = result

    def _track_object(
        self,
        obj: TrackedObject,
        frame_index: int,
        features: FrameFeatures,
        reverse: bool,
        points: PointPrompt | None,
        mask: torch.Tensor | None,
        is_initial: bool,
        encode_memory: bool,
        previous_logits: torch.Tensor | None = None,
    ) -> FrameMemory:
        model = self.model
        if mask is not None:
            decoded = model.mask_as_output(features, mask)
        else:
            selection = None if is_initial else obj.policy.select(obj.memory, frame_index, reverse, self.num_frames)
            conditioned = self._attention_cache.condition(model, features, selection)
            decoded = model.decode(conditioned, features, points, previous_logits, model.multimask_for(points))
        class_embedding = None
        if getattr(model, "semantic_head", None) is not None:
            if mask is not None:  # a mask prompt skips memory attention; the head sees the frame alone
                selection, conditioned = None, model.condition_on_memory(features, None)
            class_embedding = model.class_embedding(features, conditioned, selection)[0].float()
        memory_features = None
        if encode_memory:
            memory_features = model.encode_memory(
                features, decoded.high_res_logits, decoded.object_score_logits, from_prompt=points is not None
            ).to(torch.bfloat16)
        return FrameMemory(
            frame_index=frame_index,
            features=memory_features,
            obj_ptr=decoded.obj_ptr.float(),
            object_score=decoded.object_score_logits.float(),
            iou_score=decoded.iou_scores.float(),
            low_res_logits=model.postprocess_low_res(decoded.low_res_logits.float()),
            image_embedding=features.pooled() if obj.policy.needs_image_embedding else None,
            class_embedding=class_embedding,
        )

    def _consolidate_prompts(self) -> None:
        """Encode the memories of newly prompted frames (after the user finished clicking)."""
        if not self.objects:
            raise PromptError("no prompts yet: add points, a box or a mask for an object first")
        for obj in self.objects.values():
            memory = obj.memory
            for frame_index, pending in sorted(memory.pending.items()):
                features = self._frame_features(frame_index)
                high_res = self.model.upscale_to_input(pending.low_res_logits)
                pending.features = self.model.encode_memory(
                    features, high_res, pending.object_score, from_prompt=True
                ).to(torch.bfloat16)
                memory.conditioning[frame_index] = pending
                memory.recent.pop(frame_index)
            memory.pending.clear()
            if not memory.conditioning:
                raise PromptError(f"object {obj.obj_id} has no prompts; add one or remove the object")

    # ------------------------------------------------------------------ helpers
    def _object(self, obj_id: int, create: bool = False) -> TrackedObject:
        obj = self.objects.get(obj_id)
        if obj is None:
            if not create:
                raise KeyError(f"unknown object id {obj_id}; this session's objects are {self.obj_ids}")
            obj = TrackedObject(
                obj_id=obj_id,
                prompts=ObjectPrompts(),
                memory=ObjectMemory(recent=RecentFrameCache(self.predictor.cache_frames)),
                policy=self.predictor.policy_factory(),
            )
            self.objects[obj_id] = obj
        return obj

    def _check_frame_index(self, frame_index: int) -> None:
        if not isinstance(frame_index, (int, np.integer)) or isinstance(frame_index, bool):
            raise IndexError(f"frame index must be an integer, got {frame_index!r}")
        if frame_index < 0 or (self.num_frames is not None and frame_index >= self.num_frames):
            limit = "an unknown number of" if self.num_frames is None else f"{self.num_frames}"
            raise IndexError(f"frame index {frame_index} is out of range: the source has {limit} frames "
                             f"(valid: 0..{'' if self.num_frames is None else self.num_frames - 1})")

    def _frame_features(self, frame_index: int) -> FrameFeatures:
        if self._features is not None and self._features[0] == frame_index:
            return self._features[1]
        image = self._prefetcher.take(frame_index) if self._prefetcher is not None else None
        if image is None:
            image = self._model_input(frame_index)
        features = self.predictor.encode_image(image.to(self.device, non_blocking=True)[None])
        self._features = (frame_index, features)
        return features

    def _model_input(self, frame_index: int) -> torch.Tensor:
        """``(3, S, S)`` float32 CPU input of one frame (any thread)."""
        with self._read_lock:
            frame = self.source.read(frame_index)
        return self.to_model_input(frame)

    def _pass_frames(self, first: int, reverse: bool, max_frames: int | None) -> Iterator[int]:
        """The frames a pass tracks, in order (endless on a live stream until it ends)."""
        if reverse:
            indices: Iterator[int] = iter(range(first, -1, -1))
        elif self.num_frames is None:
            indices = itertools.count(first)
        else:
            indices = iter(range(first, self.num_frames))
        return indices if max_frames is None else itertools.islice(indices, max_frames)

    def _start_prefetch(self, order: Iterator[int]) -> None:
        """Read the frames of a pass ahead of the tracker."""
        self._stop_prefetch()
        if self.predictor.prefetch > 0:
            self._prefetcher = FramePrefetcher(
                self._model_input, order, depth=self.predictor.prefetch, pin_memory=self.device.type == "cuda"
            )

    def _stop_prefetch(self) -> None:
        if self._prefetcher is not None:
            self._prefetcher.close()
            self._prefetcher = None

    def _points_to_model(self, points, labels, box) -> PointPrompt:
        coords = np.zeros((0, 2), dtype=np.float32)
        point_labels = np.zeros((0,), dtype=np.int32)
        if (points is None) != (labels is None):
            raise PromptError("points and labels must be given together")
        if points is not None:
            coords = np.asarray(points, dtype=np.float32).reshape(-1, 2) if len(points) else coords
            point_labels = np.asarray(labels, dtype=np.int32).reshape(-1)
            if len(coords) != len(point_labels):
                raise PromptError(f"{len(coords)} points but {len(point_labels)} labels")
            if len(coords) == 0 and box is None:
                raise PromptError("empty prompt: points is empty and no box was given")
            bad = set(np.unique(point_labels).tolist()) - {0, 1}
            if bad:
                raise PromptError(f"point labels must be 1 (positive) or 0 (negative), got {sorted(bad)}")
        if box is not None:
            box_arr = np.asarray(box, dtype=np.float32).reshape(-1)
            if box_arr.shape != (4,):
                raise PromptError(f"box must be (x0, y0, x1, y1), got {box!r}")
            if box_arr[2] < box_arr[0] or box_arr[3] < box_arr[1]:
                raise PromptError(f"box {box_arr.tolist()} has x1 < x0 or y1 < y0")
            coords = np.concatenate([box_arr.reshape(2, 2), coords])
            point_labels = np.concatenate([np.array([2, 3], dtype=np.int32), point_labels])
        self._check_inside(coords)
        coords_t = torch.from_numpy(coords) / torch.tensor([self.width, self.height], dtype=torch.float32)
        coords_t = coords_t * self.model.image_size
        return PointPrompt(coords_t[None].to(self.device), torch.from_numpy(point_labels)[None].to(self.device))

    def _check_inside(self, coords: np.ndarray) -> None:
        if not np.all(np.isfinite(coords)):
            raise PromptError("prompt coordinates must be finite numbers")
        outside = (coords[:, 0] < 0) | (coords[:, 0] > self.width) | (coords[:, 1] < 0) | (coords[:, 1] > self.height)
        if outside.any():
            x, y = coords[np.argmax(outside)].tolist()
            raise PromptError(
                f"prompt point ({x:g}, {y:g}) is outside the {self.width}x{self.height} frame; "
                "points are (x, y) in source-frame pixels"
            )

    def _mask_to_model(self, mask) -> torch.Tensor:
        mask_t = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask)
        if mask_t.ndim != 2:
            raise PromptError(f"mask must be (H, W), got shape {tuple(mask_t.shape)}")
        if tuple(mask_t.shape) != (self.height, self.width):
            raise PromptError(f"mask shape {tuple(mask_t.shape)} does not match the frame size "
                              f"({self.height}, {self.width})")
        mask_t = mask_t.bool().float()[None, None].to(self.device)
        size = self.model.image_size
        if mask_t.shape[-2:] != (size, size):
            mask_t = F.interpolate(mask_t, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
            mask_t = (mask_t >= 0.5).float()
        return mask_t

    def _frame_result(self, frame_index: int) -> FrameResult:
        """Every object's latest output on a frame, resized to the source resolution."""
        low = self.model.low_res_size
        logits, scores, ious = [], [], []
        for obj in self.objects.values():
            found = obj.memory.latest(frame_index)
            if found is None:
                logits.append(torch.full((1, 1, low, low), NO_OBJECT_LOGIT, device=self.device))
                scores.append(torch.full((1, 1), NO_OBJECT_LOGIT, device=self.device))
                ious.append(torch.zeros((1, 1), device=self.device))
            else:
                logits.append(found.low_res_logits)
                scores.append(found.object_score)
                ious.append(found.iou_score)
        if not logits:
            empty = torch.zeros((0, self.height, self.width), device=self.device)
            return FrameResult(frame_index, [], empty, empty[:, 0, 0], empty[:, 0, 0])
        class_probabilities, class_names = None, ()
        if getattr(self.model, "has_class_bank", False):
            # objects with an output on this frame, kept on the device (read when asked for)
            class_probabilities, class_names = {}, self.model.class_names
            for obj in self.objects.values():
                found = obj.memory.latest(frame_index)
                if found is not None and found.class_embedding is not None:
                    category_logits = self.model.class_logits(found.class_embedding.reshape(1, -1))
                    class_probabilities[obj.obj_id] = category_logits.softmax(dim=-1)[0]
        stacked = torch.cat(logits, 0)
        if stacked.shape[-2:] != (self.height, self.width):
            stacked = F.interpolate(stacked, size=(self.height, self.width), mode="bilinear", align_corners=False)
        return FrameResult(
            frame_index=frame_index,
            obj_ids=self.obj_ids,
            logits=stacked[:, 0],
            object_scores=torch.cat(scores, 0)[:, 0],
            iou_scores=torch.cat(ious, 0)[:, 0],
            class_probabilities=class_probabilities,
            class_names=class_names,
        )

    def _model_context(self) -> ExitStack:
        """Around every model call: the fast CPU kernels, and bfloat16 autocast where enabled."""
        stack = ExitStack()
        stack.enter_context(fast_kernels())
        if self.predictor.autocast and self.device.type == "cuda":
            stack.enter_context(torch.autocast("cuda", dtype=torch.bfloat16))
        elif self.predictor.cpu_autocast and self.device.type == "cpu":
            stack.enter_context(torch.autocast("cpu", dtype=torch.bfloat16))
        return stack
