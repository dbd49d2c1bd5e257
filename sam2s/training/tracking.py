"""The training forward pass of one clip: prompt, track frame by frame, correct, score.

This is SAM 2's training forward (``SAM2Train.forward_tracking``) on the project's model
interface, with SAM2S's memory roles and losses:

1. All frames of the clip go through the image encoder in one batch.
2. The first clip frame is prompted (:mod:`sam2s.training.prompts`): a mask prompt is taken as
   the frame's output (``mask_as_output``, as at inference), clicks and boxes are decoded on the
   frame's features with the "no memory" embedding.
3. Every later frame is decoded from memory-conditioned features without a prompt. Its memory
   is what DiveMem's bank would hold at that point: conditioning (prompted or corrected) frames
   as ``"conditioning"``, long-term frames of a hybrid clip as ``"long_term"``, and the most
   recent ``num_maskmem - 1`` consecutive frames as ``"short_term"`` at SAM 2's temporal slots.
   Object pointers come from the conditioning frames and long-term frames in the past of the
   tracking direction and from the consecutive frames up to ``max_obj_ptrs`` back, with true
   signed frame distances scaled as at inference.
4. Frames chosen for correction get extra clicks from the error region, each decoded with the
   previous logits as the mask prompt; a corrected frame becomes a conditioning frame.
5. Every decoding step of every frame is scored with :class:`~sam2s.losses.SAM2SLoss` (ARL on or
   off as the model config says) on its candidate masks at model input size, normalised by the
   number of objects; the TSL term (when the model has a semantic head and a class bank) is
   scored once per frame on the class token of the frame's final memory-conditioned features.
   Mask-prompted frames have no mask loss: their output is the prompt itself.

Memories are kept in float32 with gradients (inference stores them as bfloat16), so the loss of
a late frame trains the memory encoder and memory attention through the whole clip.

Randomness (prompt draws, dropout) is seeded from the clip's own seed, so a clip's loss does not
depend on which process computes it or when.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch
from torch import nn

from sam2s.losses import SAM2SLoss, SAM2SLossConfig, tsl_loss
from sam2s.losses.total import LossBreakdown
from sam2s.losses.tsl import NO_CATEGORY
from sam2s.memory.sam2_window import pointer_span
from sam2s.modeling.sam2 import (
    FrameDecoding,
    FrameFeatures,
    MemoryFrame,
    MemoryInputs,
    PointPrompt,
    SAM2Model,
)
from sam2s.training.clips import TrainingClip
from sam2s.training.prompts import (
    PromptKind,
    PromptSimulationConfig,
    box_prompt,
    choose_prompt_kind,
    click_from_error,
    frames_to_correct,
)
from sam2s.training.sampling import ROLE_CONDITIONING, ROLE_LONG_TERM

__all__ = ["LOSS_TERMS", "ClipTrainingModule", "RememberedFrame", "loss_config_for"]

LOSS_TERMS = ("total", "mask", "dice", "iou", "occlusion", "tsl")


def loss_config_for(model: SAM2Model, use_tsl: bool) -> SAM2SLossConfig:
    """The paper's loss with ARL as the model config says; TSL is scored separately (see module doc)."""
    return SAM2SLossConfig(use_arl=bool(model.config.arl), use_tsl=False, tsl_weight=0.1 if use_tsl else 0.0)


@dataclass
class RememberedFrame:
    """What one processed clip frame leaves for the frames after it.

    Attributes:
        position: clip position.
        frame_index: source frame index.
        role: ``"conditioning"``, ``"long_term"`` or ``"short_term"``.
        features: ``(O, mem_dim, h, w)`` memory features (float32, with gradients).
        obj_ptr: ``(O, C)`` object pointers.
    """

    position: int
    frame_index: int
    role: str
    features: torch.Tensor
    obj_ptr: torch.Tensor


class ClipTrainingModule(nn.Module):
    """Wraps the model so one ``forward(clips)`` computes the batch loss (what DDP wraps).

    Args:
        model: a SAM 2.1 or SAM2S model in training mode.
        prompts: prompt simulation settings.
        class_bank: ``(K, D)`` text embeddings for TSL, with ``class_names``; TSL is scored only
            when the model has a semantic head and a bank is given.
        class_names: the bank's category names (an object's TSL target is its index here).
    """

    def __init__(
        self,
        model: SAM2Model,
        prompts: PromptSimulationConfig,
        class_bank: torch.Tensor | None = None,
        class_names: tuple[str, ...] = (),
    ) -> None:
        super().__init__()
        self.model = model
        self.prompts = prompts
        self.use_tsl = getattr(model, "semantic_head", None) is not None and class_bank is not None
        if class_bank is not None and len(class_names) != class_bank.shape[0]:
            raise ValueError(f"{len(class_names)} class names for a bank of {class_bank.shape[0]} embeddings")
        self.register_buffer(
            "class_bank", class_bank if class_bank is not None else torch.zeros(0, 1), persistent=False
        )
        self.class_index = {name: k for k, name in enumerate(class_names)}
        self.loss = SAM2SLoss(loss_config_for(model, self.use_tsl))

    def forward(self, clips: list[TrainingClip]) -> dict[str, torch.Tensor]:
        """Mean loss terms over ``clips`` (``"total"`` carries the gradient)."""
        if not clips:
            raise ValueError("a training batch needs at least one clip")
        summed = None
        for clip in clips:
            losses = self.clip_losses(clip)
            summed = losses if summed is None else summed + losses
        return {name: value / len(clips) for name, value in _breakdown_tensors(summed).items()}

    # ------------------------------------------------------------------ one clip
    def clip_losses(self, clip: TrainingClip) -> LossBreakdown:
        """Summed losses of every frame and decoding step of one clip (see the module docstring)."""
        model = self.model
        device = model.device
        rng = np.random.default_rng(clip.seed)
        generator = torch.Generator().manual_seed(clip.seed % (2**63))
        kind = choose_prompt_kind(rng, self.prompts, clip.num_frames)
        correct = set(frames_to_correct(rng, self.prompts, clip.num_frames, kind))
        targets = self._class_targets(clip, device)
        num_objects = clip.num_objects

        images, masks = clip.images.to(device), clip.masks.to(device)
        # Dropout draws from the global generator: seed it from the clip, and leave the
        # caller's generator state as it was.
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(clip.seed % (2**63))
            all_features = model.encode_image(images)
            remembered: list[RememberedFrame] = []
            total: LossBreakdown | None = None
            for position in range(clip.num_frames):
                features = _frame_features(all_features, position).expand(num_objects)
                target = masks[position]
                frame_loss, remembered_frame = self._process_frame(
                    clip,
                    position,
                    features,
                    target,
                    kind,
                    position in correct,
                    remembered,
                    generator,
                    targets,
                )
                remembered.append(remembered_frame)
                if frame_loss is not None:
                    total = frame_loss if total is None else total + frame_loss
        if total is None:  # a mask-prompted image only: nothing to learn (images never get one)
            zero = images.sum() * 0.0
            total = LossBreakdown(zero, zero, zero, zero, zero, zero)
        return total

    def _process_frame(
        self,
        clip: TrainingClip,
        position: int,
        features: FrameFeatures,
        target: torch.Tensor,
        kind: PromptKind,
        corrected: bool,
        remembered: list[RememberedFrame],
        generator: torch.Generator,
        class_targets: torch.Tensor | None,
    ) -> tuple[LossBreakdown | None, RememberedFrame]:
        model = self.model
        steps: list[FrameDecoding] = []
        points: PointPrompt | None = None
        if position == 0:
            memory = None
            conditioned = model.condition_on_memory(features, None)
            if kind is PromptKind.MASK:
                decoded = model.mask_as_output(features, target[:, None].float())
            else:
                if kind is PromptKind.BOX:
                    points = box_prompt(target, self.prompts, generator)
                else:
                    points = click_from_error(torch.zeros_like(target), target, generator)
                decoded = model.decode(conditioned, features, points, None, model.multimask_for(points))
                steps.append(decoded)
        else:
            memory = self._memory_inputs(clip, position, remembered)
            conditioned = model.condition_on_memory(features, memory)
            decoded = model.decode(conditioned, features, None, None, model.multimask_for(None))
            steps.append(decoded)

        if corrected and kind is not PromptKind.MASK:
            for _ in range(self.prompts.correction_clicks):
                predicted = decoded.high_res_logits[:, 0] > 0
                click = click_from_error(predicted, target, generator)
                points = click if points is None else points.concat(click)
                # The previous logits become the mask prompt, clamped as the predictor clamps them
                # (an absent object's -1024 would swamp the prompt encoder).
                previous = decoded.low_res_logits.clamp(-32.0, 32.0)
                decoded = model.decode(conditioned, features, points, previous, model.multimask_for(points))
                steps.append(decoded)

        loss = None
        for step in steps:
            step_loss = self.loss(
                model.upscale_to_input(step.all_low_res_logits),
                step.all_iou_scores,
                step.object_score_logits,
                target,
                num_objects=target.shape[0],
            )
            loss = step_loss if loss is None else loss + step_loss
        if self.use_tsl and class_targets is not None:
            embedding = model.class_embedding(features, conditioned, memory)
            term = tsl_loss(embedding, self.class_bank, class_targets, model.config.semantic.logit_scale)
            weighted = self.loss.config.tsl_weight * term
            zero = term * 0.0
            tsl = LossBreakdown(weighted, zero, zero, zero, zero, term)
            loss = tsl if loss is None else loss + tsl

        memory_features = model.encode_memory(
            features, decoded.high_res_logits, decoded.object_score_logits, from_prompt=points is not None
        )
        is_conditioning = position == 0 or (corrected and kind is not PromptKind.MASK)
        role = ROLE_CONDITIONING if is_conditioning else clip.roles[position]
        frame = RememberedFrame(
            position, clip.frame_indices[position], role, memory_features, decoded.obj_ptr
        )
        return loss, frame

    def _memory_inputs(
        self, clip: TrainingClip, position: int, remembered: list[RememberedFrame]
    ) -> MemoryInputs:
        """The memories DiveMem's bank would give the frame at ``position`` (see the module doc)."""
        tracker = self.model.config.tracker
        num_maskmem = tracker.num_maskmem
        current = clip.frame_indices[position]
        sign = -1 if clip.reverse else 1
        span = pointer_span(clip.num_source_frames, tracker.max_obj_ptrs)
        frames: list[MemoryFrame] = []
        pointers: list[tuple[int, torch.Tensor]] = []
        recent = [m for m in remembered if m.role not in (ROLE_CONDITIONING, ROLE_LONG_TERM)]
        for memory in remembered:
            distance = (current - memory.frame_index) * sign
            if memory.role == ROLE_CONDITIONING:
                frames.append(MemoryFrame(memory.features, num_maskmem - 1, "conditioning"))
                if distance > 0:
                    pointers.append((distance, memory.obj_ptr))
            elif memory.role == ROLE_LONG_TERM:
                frames.append(MemoryFrame(memory.features, num_maskmem - 1, "long_term"))
                if distance > 0:
                    pointers.append((distance, memory.obj_ptr))
        for back, memory in enumerate(reversed(recent), start=1):
            distance = (current - memory.frame_index) * sign
            if back < num_maskmem:
                frames.append(MemoryFrame(memory.features, num_maskmem - 1 - back, "short_term"))
            if 0 < distance < span:
                pointers.append((distance, memory.obj_ptr))
        return MemoryInputs(frames=frames, pointers=pointers, pointer_time_span=span - 1)

    def _class_targets(self, clip: TrainingClip, device: torch.device) -> torch.Tensor | None:
        if not self.use_tsl:
            return None
        indices = [
            self.class_index.get(name, NO_CATEGORY) if name else NO_CATEGORY for name in clip.categories
        ]
        return torch.tensor(indices, dtype=torch.long, device=device)


def _frame_features(features: FrameFeatures, position: int) -> FrameFeatures:
    """The features of one frame of a batch encoded together (batch 1)."""
    pick = slice(position, position + 1)
    return FrameFeatures(
        features.vision[pick], features.vision_pos[pick], [level[pick] for level in features.high_res]
    )


def _breakdown_tensors(breakdown: LossBreakdown) -> dict[str, torch.Tensor]:
    return {f.name: getattr(breakdown, f.name) for f in fields(breakdown)}
