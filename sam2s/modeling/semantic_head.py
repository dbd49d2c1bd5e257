"""Temporal semantic learning (TSL) head: a class token that reads memory, then the current frame.

SAM2S adds a learnable class token ``x_c`` to SAM 2. It first attends to the memory bank (what
the tracked object looked like in earlier frames), then cross-attends to the current frame's
memory-conditioned features; its output ``x'_c`` is projected into the text-embedding space and
contrasted with the embeddings of the category names (see :func:`class_logits` and
``sam2s.losses.tsl_loss``). At inference the same head gives per-category probabilities against
the text-embedding bank stored in the checkpoint, so no text encoder is needed.

Choices where the paper is silent:

* One token per object, shared initial value ``x_c`` of shape ``(1, d_model)``.
* Memory step: keys are the memory tokens plus their position encodings, values the memory
  tokens; both are projected from ``mem_dim`` to ``d_model`` by the attention's own key/value
  projections. The token itself carries no position encoding. When the memory is empty (the
  first, prompted frame) the step is skipped and the token goes straight to the current frame.
* Current-frame step: keys are the memory-conditioned image features plus their position
  encodings, values the features, both already ``d_model`` wide.
* Each step is a residual update followed by a LayerNorm (post-norm, like SAM 2's mask decoder),
  then a 2-layer MLP block, then a linear projection to ``text_dim``.
* 8 attention heads (as in SAM 2's decoder), configurable.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sam2s.modeling.common import MLP

__all__ = ["TemporalSemanticHead", "class_logits"]


class TemporalSemanticHead(nn.Module):
    """Class token ``x_c`` → memory attention → current-frame attention → MLP → text space.

    Args:
        d_model: width of the current-frame features and of the token.
        mem_dim: width of the memory tokens.
        text_dim: width of the text embeddings the output is compared with (384 for MiniLM,
            512 for CLIP ViT-B).
        num_heads: attention heads of both cross-attention steps; must divide ``d_model``.
        mlp_dim: hidden width of the MLP block.
        dropout: dropout inside the attention layers.
    """

    def __init__(
        self,
        d_model: int = 256,
        mem_dim: int = 64,
        text_dim: int = 384,
        num_heads: int = 8,
        mlp_dim: int = 1024,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if d_model % num_heads != 0:
            raise ValueError(f"num_heads ({num_heads}) must divide d_model ({d_model})")
        self.d_model = d_model
        self.mem_dim = mem_dim
        self.text_dim = text_dim
        self.class_token = nn.Parameter(torch.empty(1, d_model))
        nn.init.normal_(self.class_token, std=0.02)
        self.memory_attention = nn.MultiheadAttention(
            d_model, num_heads, dropout=dropout, kdim=mem_dim, vdim=mem_dim, batch_first=True
        )
        self.memory_norm = nn.LayerNorm(d_model)
        self.current_attention = nn.MultiheadAttention(d_model, num_heads, dropout=dropout, batch_first=True)
        self.current_norm = nn.LayerNorm(d_model)
        self.mlp = MLP(d_model, mlp_dim, d_model, num_layers=2)
        self.mlp_norm = nn.LayerNorm(d_model)
        self.text_projection = nn.Linear(d_model, text_dim)

    def forward(
        self,
        memory: torch.Tensor | None,
        memory_pos: torch.Tensor | None,
        current: torch.Tensor,
        current_pos: torch.Tensor,
    ) -> torch.Tensor:
        """Compute each object's class embedding.

        Args:
            memory: ``(B, M, mem_dim)`` memory tokens (spatial memories and object pointers),
                or None / ``M == 0`` when there is no memory yet.
            memory_pos: ``(B, M, mem_dim)`` position (and temporal) encodings of the memory.
            current: ``(B, HW, d_model)`` memory-conditioned features of the current frame.
            current_pos: ``(B, HW, d_model)`` their position encodings.

        Returns:
            ``(B, text_dim)`` class embeddings (not normalised).
        """
        if current.ndim != 3 or current.shape[-1] != self.d_model:
            raise ValueError(f"current must have shape (B, HW, {self.d_model}), got {tuple(current.shape)}")
        if current_pos.shape != current.shape:
            raise ValueError(
                f"current_pos {tuple(current_pos.shape)} must match current {tuple(current.shape)}"
            )
        batch = current.shape[0]
        token = self.class_token.to(current.dtype).expand(batch, 1, self.d_model)

        if memory is not None and memory.shape[1] > 0:
            if memory.ndim != 3 or memory.shape[0] != batch or memory.shape[-1] != self.mem_dim:
                raise ValueError(
                    f"memory must have shape ({batch}, M, {self.mem_dim}), got {tuple(memory.shape)}"
                )
            if memory_pos is None or memory_pos.shape != memory.shape:
                got = None if memory_pos is None else tuple(memory_pos.shape)
                raise ValueError(f"memory_pos must match memory's shape {tuple(memory.shape)}, got {got}")
            attended, _ = self.memory_attention(token, memory + memory_pos, memory, need_weights=False)
            token = self.memory_norm(token + attended)

        attended, _ = self.current_attention(token, current + current_pos, current, need_weights=False)
        token = self.current_norm(token + attended)
        token = self.mlp_norm(token + self.mlp(token))
        return self.text_projection(token[:, 0])


def class_logits(
    class_embeddings: torch.Tensor, text_bank: torch.Tensor, logit_scale: float = 100.0
) -> torch.Tensor:
    """Scaled cosine similarity between class embeddings and category text embeddings.

    Args:
        class_embeddings: ``(B, D)`` outputs of :class:`TemporalSemanticHead`.
        text_bank: ``(K, D)`` text embeddings of the K category names.
        logit_scale: multiplier of the cosine similarity (the paper's 100).

    Returns:
        ``(B, K)`` logits; their softmax over K gives per-category probabilities.
    """
    if class_embeddings.ndim != 2 or text_bank.ndim != 2 or class_embeddings.shape[1] != text_bank.shape[1]:
        raise ValueError(
            f"class_embeddings (B, D) and text_bank (K, D) must share D, got {tuple(class_embeddings.shape)} "
            f"and {tuple(text_bank.shape)}"
        )
    embeddings = F.normalize(class_embeddings, dim=-1)
    bank = F.normalize(text_bank.to(embeddings), dim=-1)
    return logit_scale * embeddings @ bank.t()
