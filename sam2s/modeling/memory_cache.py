"""Memory attention for inference that reuses each memory frame's work while the frame stays in memory.

SAM 2 attends to the same memory frames on many consecutive frames: a tracked frame stays in the
recent window for six frames, prompted frames and DiveMem's long-term frames far longer. Yet
memory attention projects and rotates every memory frame's keys, and projects its values, again
for every new frame. :class:`MemoryAttentionCache` computes them once:

* Keys. In layer ``l`` the keys of a memory frame are ``R(W_k (m + s + t) + b_k)``: ``m`` the
  frame's memory features, ``s`` the spatial position encoding, ``t`` the temporal encoding of the
  slot the frame occupies *now*, ``R`` the rotary rotation. ``R`` and ``W_k`` are linear, so this is
  ``R(W_k (m + s))``, which depends on the frame alone and is cached per frame and layer, plus
  ``R(W_k t + b_k)``, which depends on the slot alone and is cached per slot and layer. Each new
  frame only adds the two (:meth:`~sam2s.modeling.memory_attention.MemoryAttentionLayer.frame_keys`,
  :meth:`~sam2s.modeling.memory_attention.MemoryAttentionLayer.slot_keys`).
* The first layer's self-attention. It depends on the current frame alone, so it runs once per
  frame, not once per object.
* Values. Not projected at all: attention weights sum to one, so attention runs on the 64-wide
  memory tokens and the value and output projections follow as one folded matrix
  (:meth:`~sam2s.modeling.memory_attention.MemoryAttentionLayer.folded_value_output`); the second
  product of attention shrinks from 256 to 64 columns.

Object pointers change every frame (their temporal encoding is a distance) and are projected fresh.
Results equal :meth:`~sam2s.modeling.sam2.SAM2Model.condition_on_memory` up to float32 rounding
(~1e-6 relative). One cache serves every object of a session (one object per call, batch 1; slot
tables are shared by all objects). It is bounded: :meth:`MemoryAttentionCache.end_frame` keeps only
the entries of the memories attended since the previous call, so a session that calls it once per
frame holds at most one entry per attended memory and object (7 for SAM 2, up to 12 with DiveMem).
It notices changed weights and starts afresh.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sam2s.modeling.sam2 import FrameFeatures, MemoryFrame, MemoryInputs, SAM2Model

__all__ = ["MemoryAttentionCache"]


@dataclass
class _FrameEntry:
    """What one memory frame contributes to memory attention, in every layer.

    Attributes:
        source: the stored memory features the entry was made from (kept so its identity holds).
        values: ``(1, h*w, mem_dim)`` float32 memory tokens (the attention values).
        keys: per layer ``(1, heads, h*w, head_dim)`` rotated keys without the slot part.
    """

    source: torch.Tensor
    values: torch.Tensor
    keys: list[torch.Tensor]


class MemoryAttentionCache:
    """Cache of memory-frame keys and values for :meth:`condition` (see the module docstring)."""

    def __init__(self) -> None:
        self._frames: dict[int, _FrameEntry] = {}
        self._used: set[int] = set()
        # (temporal slot, kind, grid tokens, device) -> per-layer (1, heads, h*w, head_dim)
        self._slots: dict[tuple, list[torch.Tensor]] = {}
        self._weights: tuple | None = None
        # (frame features, their first-layer self-attention): shared by the objects of a frame
        self._frame_self_attention: tuple[torch.Tensor, torch.Tensor] | None = None

    def __len__(self) -> int:
        """Number of memory frames cached."""
        return len(self._frames)

    def clear(self) -> None:
        self._frames.clear()
        self._used.clear()
        self._slots.clear()
        self._weights = None
        self._frame_self_attention = None

    def end_frame(self) -> None:
        """Drop the entries of memories not attended since the last call (they left the window)."""
        self._frames = {key: entry for key, entry in self._frames.items() if key in self._used}
        self._used = set()
        self._frame_self_attention = None

    def held_tensors(self) -> list[torch.Tensor]:
        """The cache's own tensors (for memory accounting)."""
        tensors = [t for entry in self._frames.values() for t in (entry.values, *entry.keys)]
        if self._frame_self_attention is not None:
            tensors.append(self._frame_self_attention[1])
        return tensors + [t for keys in self._slots.values() for t in keys]

    @torch.inference_mode()
    def condition(
        self, model: SAM2Model, features: FrameFeatures, memory: MemoryInputs | None
    ) -> torch.Tensor:
        """:meth:`SAM2Model.condition_on_memory` for one object, reusing cached memory work.

        Args:
            model: the model (in eval mode).
            features: the current frame, batch 1.
            memory: what one object's memory policy chose.

        Returns:
            ``(1, C, h, w)`` memory-conditioned features.
        """
        vision = features.vision
        if memory is None or memory.is_empty or vision.shape[0] != 1 or model.training:
            return model.condition_on_memory(features, memory)
        self._check_weights(model)
        _, channels, h, w = vision.shape
        num_tokens, device = h * w, vision.device
        layers = model.memory_attention.layers

        entries = [self._frame_entry(model, frame, (h, w)) for frame in memory.frames]
        slots = [self._slot_keys(model, frame, num_tokens, device) for frame in memory.frames]
        values = [entry.values for entry in entries]
        pointer_tokens = pointer_pos = None
        num_pointer_tokens = 0
        if memory.pointers:
            pointer_tokens, pointer_pos = model.pointer_tokens(memory, 1, device)  # (P, 1, mem_dim)
            pointer_tokens, pointer_pos = pointer_tokens.transpose(0, 1), pointer_pos.transpose(0, 1)
            num_pointer_tokens = pointer_tokens.shape[1]
            values.append(pointer_tokens)
        raw_values = torch.cat(values, dim=1)  # (1, M, mem_dim)

        layer_keys = []
        for index, layer in enumerate(layers):
            heads, head_dim = layer.cross_attn_image.num_heads, layer.cross_attn_image.head_dim
            keys = vision.new_empty(1, heads, raw_values.shape[1], head_dim, dtype=torch.float32)
            for position, (entry, slot) in enumerate(zip(entries, slots)):
                span = slice(position * num_tokens, (position + 1) * num_tokens)
                torch.add(entry.keys[index], slot[index], out=keys[:, :, span])
            if num_pointer_tokens:
                keys[:, :, keys.shape[2] - num_pointer_tokens :] = layer.pointer_keys(
                    pointer_tokens, pointer_pos
                )
            layer_keys.append(keys)

        current = vision.flatten(2).permute(2, 0, 1)
        current_pos = features.vision_pos.flatten(2).permute(2, 0, 1)
        shared = self._frame_self_attention
        if shared is None or shared[0] is not vision:
            shared = (vision, model.memory_attention.first_self_attention(current, current_pos))
            self._frame_self_attention = shared
        fused = model.memory_attention(
            curr=current,
            memory=raw_values.transpose(0, 1),
            curr_pos=current_pos,
            memory_pos=None,
            num_obj_ptr_tokens=num_pointer_tokens,
            memory_keys=layer_keys,
            frame_self_attention=shared[1],
        )
        self._used.update(id(frame.features) for frame in memory.frames)
        return fused.permute(1, 2, 0).reshape(1, channels, h, w)

    # ------------------------------------------------------------------ entries
    def _frame_entry(self, model: SAM2Model, frame: MemoryFrame, grid: tuple[int, int]) -> _FrameEntry:
        entry = self._frames.get(id(frame.features))
        if entry is not None and entry.source is frame.features:
            return entry
        device = model.no_mem_embed.device
        tokens = (
            frame.features.to(device).flatten(2).transpose(1, 2).float().contiguous()
        )  # (1, h*w, mem_dim)
        spatial = model.memory_position(grid, device).transpose(0, 1)  # (1, h*w, mem_dim)
        num_tokens = grid[0] * grid[1]
        keys = [layer.frame_keys(tokens, spatial, num_tokens) for layer in model.memory_attention.layers]
        entry = _FrameEntry(frame.features, tokens, keys)
        self._frames[id(frame.features)] = entry
        return entry

    def _slot_keys(
        self, model: SAM2Model, frame: MemoryFrame, num_tokens: int, device: torch.device
    ) -> list[torch.Tensor]:
        # A model's temporal encoding is a function of the memory's slot and kind alone.
        key = (frame.temporal_slot, frame.kind, num_tokens, str(device))
        keys = self._slots.get(key)
        if keys is None:
            temporal = model.temporal_encoding(frame).reshape(-1).float()
            keys = [layer.slot_keys(temporal, num_tokens) for layer in model.memory_attention.layers]
            self._slots[key] = keys
        return keys

    def _check_weights(self, model: SAM2Model) -> None:
        """Start afresh when the weights the cached tensors came from have changed."""
        params = [*model.memory_attention.parameters(), *model.parameters(recurse=False)]
        version = tuple((id(p), p.data_ptr(), p._version) for p in params)
        if version != self._weights:
            self.clear()
            self._weights = version
