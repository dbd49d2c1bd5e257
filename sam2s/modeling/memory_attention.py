"""SAM 2.1 memory attention: condition the current frame's features on the memory bank.

Each layer is pre-norm: RoPE self-attention over the frame's tokens, RoPE cross-attention from
the frame's tokens to the memory tokens, then a feed-forward network, each with a residual.
The memory is the concatenation of per-frame spatial memories (``num_frames * h * w`` tokens
of width 64, each frame rotated with the frame grid's table) followed by object-pointer tokens,
which have no spatial position and so are excluded from the rotation.

For speed, the memory's key/value projections of a layer can be computed once per memory frame
and reused (:meth:`MemoryAttentionLayer.memory_keys_values` and
:meth:`MemoryAttentionLayer.forward` with ``memory_kv``). Inference goes further
(:mod:`sam2s.modeling.memory_cache`): keys are split into a per-frame part and a per-temporal-slot
part (:meth:`MemoryAttentionLayer.frame_keys`, :meth:`MemoryAttentionLayer.slot_keys`,
:meth:`MemoryAttentionLayer.pointer_keys`), and values are never projected: attention runs on the
raw memory tokens and the value and output projections are applied after it as one folded matrix
(:meth:`MemoryAttentionLayer.folded_value_output`), which is exact because attention weights sum to
one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sam2s.modeling.attention import RoPEAttention
from sam2s.modeling.kernels import Linear, attention, linear

__all__ = ["MemoryAttention", "MemoryAttentionLayer"]

_ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu}


class MemoryAttentionLayer(nn.Module):
    """One pre-norm layer of :class:`MemoryAttention`.

    Args:
        d_model: width of the frame tokens.
        dim_feedforward: hidden width of the feed-forward network.
        num_heads: heads of both attentions.
        dropout: dropout of the residual branches, the feed-forward hidden layer and the
            attention probabilities.
        activation: ``"relu"`` or ``"gelu"``.
        rope_theta: base of the rotary frequencies.
        feat_sizes: ``(width, height)`` of the frame grid the rotary tables are first built for.
        kv_in_dim: width of the memory tokens.
        pos_enc_at_attn: add the frame position encoding to the self-attention queries/keys.
        pos_enc_at_cross_attn_keys: add the memory position encoding to the cross-attention keys.
        pos_enc_at_cross_attn_queries: add the frame position encoding to the cross-attention queries.

    Shapes:
        ``tgt (B, L, d_model)``, ``memory (B, M, kv_in_dim)`` ``-> (B, L, d_model)``.
    """

    def __init__(
        self,
        d_model: int = 256,
        dim_feedforward: int = 2048,
        num_heads: int = 1,
        dropout: float = 0.1,
        activation: str = "relu",
        rope_theta: float = 10000.0,
        feat_sizes: tuple[int, int] = (64, 64),
        kv_in_dim: int = 64,
        pos_enc_at_attn: bool = False,
        pos_enc_at_cross_attn_keys: bool = True,
        pos_enc_at_cross_attn_queries: bool = False,
    ) -> None:
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; expected one of {sorted(_ACTIVATIONS)}")
        self.d_model = d_model
        self.dim_feedforward = dim_feedforward
        self.self_attn = RoPEAttention(
            d_model, num_heads, dropout=dropout, rope_theta=rope_theta, feat_sizes=feat_sizes
        )
        self.cross_attn_image = RoPEAttention(
            d_model,
            num_heads,
            dropout=dropout,
            kv_in_dim=kv_in_dim,
            rope_theta=rope_theta,
            rope_k_repeat=True,
            feat_sizes=feat_sizes,
        )
        self.linear1 = Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)
        self.activation = _ACTIVATIONS[activation]
        self._fused_activation = activation
        self.pos_enc_at_attn = pos_enc_at_attn
        self.pos_enc_at_cross_attn_keys = pos_enc_at_cross_attn_keys
        self.pos_enc_at_cross_attn_queries = pos_enc_at_cross_attn_queries

    def memory_keys_values(
        self,
        memory: torch.Tensor,
        memory_pos: torch.Tensor | None,
        num_query_tokens: int,
        num_k_exclude_rope: int = 0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Project and rotate the memory for this layer's cross-attention.

        The result depends on the memory alone (and the query grid size), so it can be cached
        per memory frame: frames are rotated independently, and object pointers not at all.

        Args:
            memory: ``(B, M, kv_in_dim)`` memory tokens.
            memory_pos: ``(B, M, kv_in_dim)`` their position encoding (needed when
                ``pos_enc_at_cross_attn_keys``).
            num_query_tokens: tokens of the current frame's grid (``h * w``).
            num_k_exclude_rope: trailing object-pointer tokens, not rotated.

        Returns:
            ``(keys, values)``, each ``(B, heads, M, head_dim)``.
        """
        if self.pos_enc_at_cross_attn_keys and memory_pos is None:
            raise ValueError("this layer adds the memory position encoding to its keys: pass memory_pos")
        key_input = memory + memory_pos if self.pos_enc_at_cross_attn_keys else memory
        attention = self.cross_attn_image
        keys = attention.rotate_keys(attention.project_keys(key_input), num_query_tokens, num_k_exclude_rope)
        return keys, attention.project_values(memory)

    def frame_keys(self, memory: torch.Tensor, memory_pos: torch.Tensor | None, num_query_tokens: int) -> torch.Tensor:
        """The part of one memory frame's keys that depends on the frame alone.

        Keys are ``R(W_k (m + p_spatial + p_temporal) + b_k)``; since the rotation ``R`` and ``W_k``
        are linear this is ``R(W_k (m + p_spatial))`` (here) plus :meth:`slot_keys`.

        Args:
            memory: ``(B, h*w, kv_in_dim)`` one frame's memory tokens.
            memory_pos: ``(B, h*w, kv_in_dim)`` their spatial position encoding (no temporal part),
                or ``None`` when this layer adds no position to its keys.
            num_query_tokens: tokens of the query grid (``h * w``).

        Returns:
            ``(B, heads, h*w, head_dim)`` rotated keys without bias.
        """
        attention_module = self.cross_attn_image
        key_input = memory + memory_pos if self.pos_enc_at_cross_attn_keys and memory_pos is not None else memory
        projected = attention_module._split_heads(linear(key_input, attention_module.k_proj.weight))
        return attention_module.rotate_keys(projected, num_query_tokens)

    def slot_keys(self, temporal: torch.Tensor | None, num_query_tokens: int) -> torch.Tensor:
        """The part of a memory frame's keys that depends on its temporal slot: ``R(W_k t + b_k)``.

        Args:
            temporal: ``(kv_in_dim,)`` temporal position encoding of the slot (ignored when this
                layer adds no position to its keys).
            num_query_tokens: tokens of the query grid (``h * w``).

        Returns:
            ``(1, heads, h*w, head_dim)``.
        """
        attention_module = self.cross_attn_image
        weight, bias = attention_module.k_proj.weight, attention_module.k_proj.bias
        constant = bias if temporal is None or not self.pos_enc_at_cross_attn_keys else linear(temporal, weight, bias)
        grid = constant.reshape(1, 1, -1).expand(1, num_query_tokens, -1)
        return attention_module.rotate_keys(attention_module._split_heads(grid), num_query_tokens)

    def pointer_keys(self, pointers: torch.Tensor, pointer_pos: torch.Tensor | None) -> torch.Tensor:
        """Keys of object-pointer tokens (not rotated).

        Args:
            pointers: ``(B, P, kv_in_dim)`` pointer tokens.
            pointer_pos: ``(B, P, kv_in_dim)`` their temporal encoding.

        Returns:
            ``(B, heads, P, head_dim)``.
        """
        key_input = pointers + pointer_pos if self.pos_enc_at_cross_attn_keys and pointer_pos is not None else pointers
        return self.cross_attn_image.project_keys(key_input)

    def folded_value_output(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Value projection and output projection of the cross-attention as one map.

        ``out = W_o concat_h(P_h (m W_vh^T + b_vh)) + b_o`` and every row of the attention weights
        ``P_h`` sums to one, so ``out = concat_h(P_h m) F^T + (W_o b_v + b_o)`` with
        ``F[:, h] = W_o[:, h] W_vh``: attention can run on the raw memory tokens ``m``.

        Returns:
            ``(weight (d_model, heads * kv_in_dim), bias (d_model,))``.
        """
        attention_module = self.cross_attn_image
        heads, head_dim = attention_module.num_heads, attention_module.head_dim
        value_weight = attention_module.v_proj.weight.view(heads, head_dim, -1)  # (h, hd, kv)
        output_weight = attention_module.out_proj.weight.view(-1, heads, head_dim)  # (d, h, hd)
        weight = torch.einsum("dhe,hek->dhk", output_weight, value_weight).flatten(1)
        bias = linear(attention_module.v_proj.bias, attention_module.out_proj.weight, attention_module.out_proj.bias)
        return weight, bias

    def forward_with_keys(
        self,
        tgt: torch.Tensor,
        query_pos: torch.Tensor | None,
        keys: torch.Tensor,
        raw_values: torch.Tensor,
        self_attended: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Inference form of :meth:`forward`: precomputed keys, unprojected values.

        Args:
            tgt: ``(B, L, d_model)`` frame tokens.
            query_pos: ``(B, L, d_model)`` frame position encoding.
            keys: ``(B, heads, M, head_dim)`` projected and rotated memory keys.
            raw_values: ``(B, M, kv_in_dim)`` the memory tokens themselves.
            self_attended: this layer's self-attention step already applied to ``tgt`` (it does
                not depend on the memory, so objects on one frame can share it); ``tgt`` is then
                not read.

        Returns:
            ``(B, L, d_model)``.
        """
        if self.training:
            raise RuntimeError("forward_with_keys is for inference; train with forward()")
        tgt = self._self_attention(tgt, query_pos) if self_attended is None else self_attended
        normed = self.norm2(tgt)
        q = normed + query_pos if self.pos_enc_at_cross_attn_queries else normed
        cross = self.cross_attn_image
        queries = cross.rotate_queries(cross.project_queries(q))  # (B, h, L, hd)
        values = raw_values.unsqueeze(1).expand(-1, cross.num_heads, -1, -1)
        mixed = attention(queries, keys, values)  # (B, h, L, kv_in_dim)
        weight, bias = self.folded_value_output()
        tgt = tgt + linear(mixed.transpose(1, 2).flatten(2), weight, bias)
        hidden = linear(self.norm3(tgt), self.linear1.weight, self.linear1.bias, activation=self._fused_activation)
        return tgt + self.linear2(hidden)

    def _self_attention(self, tgt: torch.Tensor, query_pos: torch.Tensor | None) -> torch.Tensor:
        normed = self.norm1(tgt)
        q = normed + query_pos if self.pos_enc_at_attn else normed
        return tgt + self.dropout1(self.self_attn(q, q, normed))

    def _cross_attention(
        self, tgt: torch.Tensor, query_pos: torch.Tensor | None, keys: torch.Tensor, values: torch.Tensor
    ) -> torch.Tensor:
        normed = self.norm2(tgt)
        q = normed + query_pos if self.pos_enc_at_cross_attn_queries else normed
        return tgt + self.dropout2(self.cross_attn_image.attend_rotated(q, keys, values))

    def forward(
        self,
        tgt: torch.Tensor,
        memory: torch.Tensor | None,
        pos: torch.Tensor | None = None,
        query_pos: torch.Tensor | None = None,
        num_k_exclude_rope: int = 0,
        memory_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Update the frame tokens.

        Args:
            tgt: ``(B, L, d_model)`` frame tokens.
            memory: ``(B, M, kv_in_dim)`` memory tokens (unused when ``memory_kv`` is given).
            pos: ``(B, M, kv_in_dim)`` memory position encoding.
            query_pos: ``(B, L, d_model)`` frame position encoding.
            num_k_exclude_rope: trailing object-pointer tokens of the memory.
            memory_kv: precomputed :meth:`memory_keys_values` of this layer.

        Returns:
            ``(B, L, d_model)``.
        """
        tgt = self._self_attention(tgt, query_pos)
        if memory_kv is None:
            if memory is None:
                raise ValueError("pass either memory or its precomputed memory_kv")
            memory_kv = self.memory_keys_values(memory, pos, tgt.shape[1], num_k_exclude_rope)
        tgt = self._cross_attention(tgt, query_pos, *memory_kv)
        if self.training:
            hidden = self.dropout(self.activation(self.linear1(self.norm3(tgt))))
        else:  # the activation fused into the product (dropout is off in eval)
            hidden = linear(self.norm3(tgt), self.linear1.weight, self.linear1.bias, activation=self._fused_activation)
        return tgt + self.dropout3(self.linear2(hidden))


class MemoryAttention(nn.Module):
    """A stack of :class:`MemoryAttentionLayer` with a final LayerNorm.

    Args:
        d_model: width of the frame tokens.
        num_layers: number of layers.
        pos_enc_at_input: add ``0.1 * curr_pos`` to the frame tokens first.
        batch_first: ``True`` (SAM 2.1): inputs and output are sequence-first ``(N, B, C)`` and
            transposed (as views) for the layers, which work batch-first. ``False``: inputs are
            already batch-first ``(B, N, C)`` and so is the output.
        dim_feedforward, num_heads, dropout, activation, rope_theta, feat_sizes, kv_in_dim,
        pos_enc_at_attn, pos_enc_at_cross_attn_keys, pos_enc_at_cross_attn_queries: per
            layer, see :class:`MemoryAttentionLayer`.
    """

    def __init__(
        self,
        d_model: int = 256,
        num_layers: int = 4,
        pos_enc_at_input: bool = True,
        batch_first: bool = True,
        dim_feedforward: int = 2048,
        num_heads: int = 1,
        dropout: float = 0.1,
        activation: str = "relu",
        rope_theta: float = 10000.0,
        feat_sizes: tuple[int, int] = (64, 64),
        kv_in_dim: int = 64,
        pos_enc_at_attn: bool = False,
        pos_enc_at_cross_attn_keys: bool = True,
        pos_enc_at_cross_attn_queries: bool = False,
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.num_layers = num_layers
        self.pos_enc_at_input = pos_enc_at_input
        self.batch_first = batch_first
        self.layers = nn.ModuleList(
            MemoryAttentionLayer(
                d_model=d_model,
                dim_feedforward=dim_feedforward,
                num_heads=num_heads,
                dropout=dropout,
                activation=activation,
                rope_theta=rope_theta,
                feat_sizes=feat_sizes,
                kv_in_dim=kv_in_dim,
                pos_enc_at_attn=pos_enc_at_attn,
                pos_enc_at_cross_attn_keys=pos_enc_at_cross_attn_keys,
                pos_enc_at_cross_attn_queries=pos_enc_at_cross_attn_queries,
            )
            for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(d_model)

    def prefer_same_position(self, bias: float) -> None:
        """Start every cross-attention with a preference for the same place in each memory.

        Query and key biases set to one constant ``b`` add ``sum_j 2 b^2 cos(theta_j * d)`` to the
        score of a memory token at offset ``d`` from the query (rotary encoding, frequencies
        ``theta_j``), which peaks at ``d = 0``. Randomly initialised attention is nearly uniform,
        so a memory's mask reaches each frame token only as an average over the whole frame; a
        model trained from scratch then settles on ignoring its memory. Starting local lets it
        carry a mask forward in place first and learn to follow motion from there.
        """
        with torch.no_grad():
            for layer in self.layers:
                layer.cross_attn_image.q_proj.bias.fill_(bias)
                layer.cross_attn_image.k_proj.bias.fill_(bias)

    def first_self_attention(self, curr: torch.Tensor, curr_pos: torch.Tensor | None) -> torch.Tensor:
        """The first layer's self-attention step on a frame, which does not depend on the memory.

        Args:
            curr: ``(L, B, d_model)`` frame tokens, sequence first.
            curr_pos: ``(L, B, d_model)`` their position encoding.

        Returns:
            Batch-first ``(B, L, d_model)`` tokens (for ``frame_self_attention`` of :meth:`forward`).
        """
        output = curr + 0.1 * curr_pos if self.pos_enc_at_input and curr_pos is not None else curr
        return self.layers[0]._self_attention(self._layout(output), self._layout(curr_pos))

    def _layout(self, x: torch.Tensor | None) -> torch.Tensor | None:
        """Sequence-first ``(N, B, C)`` to the layers' batch-first layout and back (a view)."""
        return x.transpose(0, 1) if x is not None and self.batch_first else x

    def forward(
        self,
        curr: torch.Tensor,
        memory: torch.Tensor | None,
        curr_pos: torch.Tensor | None = None,
        memory_pos: torch.Tensor | None = None,
        num_obj_ptr_tokens: int = 0,
        memory_kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
        memory_keys: list[torch.Tensor] | None = None,
        frame_self_attention: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Condition the current frame on the memory.

        Args:
            curr: ``(L, B, d_model)`` frame tokens, sequence first (``L = h * w``).
            memory: ``(M, B, kv_in_dim)`` memory tokens, sequence first: spatial memories, then
                ``num_obj_ptr_tokens`` object-pointer tokens.
            curr_pos: ``(L, B, d_model)`` frame position encoding.
            memory_pos: ``(M, B, kv_in_dim)`` memory position encoding.
            num_obj_ptr_tokens: object-pointer tokens at the end of the memory (not rotated).
            memory_kv: optional per-layer precomputed keys/values
                (:meth:`MemoryAttentionLayer.memory_keys_values`, batch-first); when given,
                ``memory`` and ``memory_pos`` are not read.
            memory_keys: optional per-layer precomputed keys ``(B, heads, M, head_dim)`` for
                inference (:mod:`sam2s.modeling.memory_cache`); attention then takes ``memory``
                itself as values (:meth:`MemoryAttentionLayer.forward_with_keys`) and
                ``memory_pos`` is not read.
            frame_self_attention: with ``memory_keys``, :meth:`first_self_attention` of this
                frame, computed once for all objects on it.

        Returns:
            ``(L, B, d_model)``.
        """
        batch_axis = 1 if self.batch_first else 0
        if memory is not None and curr.shape[batch_axis] != memory.shape[batch_axis]:
            raise ValueError(f"batch sizes differ: curr {tuple(curr.shape)} vs memory {tuple(memory.shape)}")
        for name, given in (("memory_kv", memory_kv), ("memory_keys", memory_keys)):
            if given is not None and len(given) != self.num_layers:
                raise ValueError(f"{name} has {len(given)} entries for {self.num_layers} layers")
        if memory_keys is not None and memory is None:
            raise ValueError("memory_keys needs the memory tokens, which serve as values")

        output = curr
        if self.pos_enc_at_input and curr_pos is not None:
            output = output + 0.1 * curr_pos
        output = self._layout(output)
        curr_pos = self._layout(curr_pos)
        memory = self._layout(memory)
        memory_pos = self._layout(memory_pos)

        for index, layer in enumerate(self.layers):
            if memory_keys is not None:
                shared = frame_self_attention if index == 0 else None
                output = layer.forward_with_keys(output, curr_pos, memory_keys[index], memory, self_attended=shared)
                continue
            output = layer(
                output,
                memory,
                pos=memory_pos,
                query_pos=curr_pos,
                num_k_exclude_rope=num_obj_ptr_tokens,
                memory_kv=None if memory_kv is None else memory_kv[index],
            )
        return self._layout(self.norm(output))
