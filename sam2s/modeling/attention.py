"""Multi-head attention with optional 2-D axial rotary position encoding (RoPE).

:class:`Attention` is the plain projection + scaled-dot-product attention used by the mask
decoder's two-way transformer. :class:`RoPEAttention` adds rotary encoding of the query and
key positions on the image token grid and is used by memory attention.

Rotary layout (as in SAM 2.1): the head channels are taken as ``head_dim // 2`` consecutive
(even, odd) pairs. The first ``head_dim // 4`` pairs are rotated by the token's column index
times a frequency, the last ``head_dim // 4`` pairs by its row index. Tokens are ordered
row-major over the grid (column index varies fastest).

Memory keys are laid out as ``num_frames`` consecutive copies of the query grid, optionally
followed by object-pointer tokens that carry no spatial position. With ``rope_k_repeat`` every
frame is rotated with the same table, so the rotation of one frame's keys does not depend on
where it sits in the memory: projected and rotated keys can be computed per frame and cached
(see :meth:`Attention.project_keys`, :meth:`Attention.project_values`,
:meth:`RoPEAttention.rotate_keys` and :meth:`Attention.attend`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from sam2s.modeling.kernels import Linear, attention

__all__ = ["Attention", "RoPEAttention", "axial_rotary_angles"]


class Attention(nn.Module):
    """Multi-head attention whose inner width may be smaller than the token width.

    Args:
        embedding_dim: width of the query tokens and of the output.
        num_heads: number of attention heads; must divide ``embedding_dim // downsample_rate``.
        downsample_rate: the projections map to ``embedding_dim // downsample_rate`` channels.
        dropout: attention-probability dropout, applied only while training.
        kv_in_dim: width of the key and value tokens; defaults to ``embedding_dim``.

    Shapes:
        ``q (B, Nq, embedding_dim)``, ``k (B, Nk, kv_in_dim)``, ``v (B, Nk, kv_in_dim)``
        ``-> (B, Nq, embedding_dim)``.
    """

    def __init__(
        self,
        embedding_dim: int,
        num_heads: int,
        downsample_rate: int = 1,
        dropout: float = 0.0,
        kv_in_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.kv_in_dim = embedding_dim if kv_in_dim is None else kv_in_dim
        self.internal_dim = embedding_dim // downsample_rate
        self.num_heads = num_heads
        if self.internal_dim % num_heads != 0:
            raise ValueError(
                f"num_heads={num_heads} must divide the inner width "
                f"embedding_dim // downsample_rate = {self.internal_dim}"
            )
        self.head_dim = self.internal_dim // num_heads
        self.dropout_p = dropout

        self.q_proj = Linear(embedding_dim, self.internal_dim)
        self.k_proj = Linear(self.kv_in_dim, self.internal_dim)
        self.v_proj = Linear(self.kv_in_dim, self.internal_dim)
        self.out_proj = Linear(self.internal_dim, embedding_dim)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, N, internal_dim) -> (B, num_heads, N, head_dim)`` (a view)."""
        return x.unflatten(-1, (self.num_heads, self.head_dim)).transpose(-3, -2)

    def project_queries(self, q: torch.Tensor) -> torch.Tensor:
        """Project query tokens ``(B, Nq, embedding_dim)`` to heads ``(B, h, Nq, head_dim)``."""
        return self._split_heads(self.q_proj(q))

    def project_keys(self, k: torch.Tensor) -> torch.Tensor:
        """Project key tokens ``(B, Nk, kv_in_dim)`` to heads ``(B, h, Nk, head_dim)``."""
        return self._split_heads(self.k_proj(k))

    def project_values(self, v: torch.Tensor) -> torch.Tensor:
        """Project value tokens ``(B, Nk, kv_in_dim)`` to heads ``(B, h, Nk, head_dim)``."""
        return self._split_heads(self.v_proj(v))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Attention over already projected heads, then the output projection.

        Args:
            q: ``(B, h, Nq, head_dim)`` projected queries.
            k: ``(B, h, Nk, head_dim)`` projected keys.
            v: ``(B, h, Nk, head_dim)`` projected values.

        Returns:
            ``(B, Nq, embedding_dim)``.
        """
        if self.training and self.dropout_p > 0.0:
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout_p)
        else:
            out = attention(q, k, v)
        return self.out_proj(out.transpose(-3, -2).flatten(-2))

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.attend(self.project_queries(q), self.project_keys(k), self.project_values(v))


def axial_rotary_angles(head_dim: int, width: int, height: int, theta: float = 10000.0) -> torch.Tensor:
    """Rotation angle of every (token, channel pair) of a ``height x width`` grid.

    Args:
        head_dim: channels per head; must be a multiple of 4 (pairs split between x and y).
        width: grid columns.
        height: grid rows.
        theta: base of the geometric progression of frequencies.

    Returns:
        ``(height * width, head_dim // 2)`` float32 angles, tokens in row-major order; the
        first ``head_dim // 4`` columns follow the column index, the rest the row index.
    """
    if head_dim % 4 != 0:
        raise ValueError(f"axial rotary encoding needs head_dim divisible by 4, got {head_dim}")
    # Same float32 operations as the official tables so the angles agree bit for bit.
    exponents = torch.arange(0, head_dim, 4)[: head_dim // 4].float() / head_dim
    frequencies = 1.0 / (theta**exponents)
    token = torch.arange(width * height, dtype=torch.float32)
    column = token % width
    row = torch.div(token, width, rounding_mode="floor")
    return torch.cat((torch.outer(column, frequencies), torch.outer(row, frequencies)), dim=-1)


def _rotate_pairs(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the (even, odd) channel pairs of ``x`` by angles given as ``cos``/``sin``.

    Args:
        x: ``(..., N, head_dim)`` tensor.
        cos: ``(N, head_dim // 2)`` float32 cosines (broadcast over the leading axes).
        sin: ``(N, head_dim // 2)`` float32 sines.

    Returns:
        The rotated tensor, same shape and dtype as ``x``; computed in float32.
    """
    pairs = x.float().unflatten(-1, (-1, 2))
    even, odd = pairs[..., 0], pairs[..., 1]
    rotated = torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1)
    return rotated.flatten(-2).to(x.dtype)


class RoPEAttention(Attention):
    """:class:`Attention` with 2-D axial rotary encoding of queries and keys.

    The queries are the tokens of a square-ish image grid. The rotary tables are built for
    ``feat_sizes`` and rebuilt (and cached per grid and device) when the number of query tokens
    differs: as in the official model, such a grid is taken to be square, which is the case for
    every SAM 2 input (a 512-px model configured with 64x64 sees a 32x32 grid).

    Args:
        embedding_dim, num_heads, downsample_rate, dropout, kv_in_dim: as :class:`Attention`.
        rope_theta: base of the rotary frequencies.
        rope_k_repeat: keys may be several frames of the query grid (memory); each frame is
            rotated with the query table. Required whenever keys and queries differ in length.
        feat_sizes: ``(width, height)`` of the grid the tables are first built for.

    Shapes:
        ``q (B, Nq, embedding_dim)``, ``k``/``v (B, Nk, kv_in_dim)`` ``-> (B, Nq, embedding_dim)``
        where, with ``num_k_exclude_rope = P``, ``Nk - P`` is ``Nq`` or (with ``rope_k_repeat``) a
        multiple of it, and the last ``P`` keys are not rotated.
    """

    def __init__(
        self,
        embedding_dim: int,
        num_heads: int,
        downsample_rate: int = 1,
        dropout: float = 0.0,
        kv_in_dim: int | None = None,
        rope_theta: float = 10000.0,
        rope_k_repeat: bool = False,
        feat_sizes: tuple[int, int] = (64, 64),
    ) -> None:
        super().__init__(embedding_dim, num_heads, downsample_rate, dropout, kv_in_dim)
        if self.head_dim % 4 != 0:
            raise ValueError(f"RoPEAttention needs a head width divisible by 4, got {self.head_dim}")
        self.rope_theta = rope_theta
        self.rope_k_repeat = rope_k_repeat
        self.feat_sizes = (int(feat_sizes[0]), int(feat_sizes[1]))
        # (width, height, device) -> (cos, sin), each (width * height, head_dim // 2) float32.
        # Not a buffer: it is derived from hyper-parameters, not learned, and must not appear
        # in checkpoints.
        self._tables: dict[tuple[int, int, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}

    def _grid_for(self, num_tokens: int) -> tuple[int, int]:
        """``(width, height)`` of the query grid holding ``num_tokens`` tokens."""
        width, height = self.feat_sizes
        if num_tokens == width * height:
            return width, height
        side = math.isqrt(num_tokens)
        if side * side != num_tokens:
            raise ValueError(
                f"RoPEAttention got {num_tokens} query tokens: that is neither the configured grid "
                f"{width}x{height} nor a square grid; set feat_sizes to the feature-map size"
            )
        return side, side

    def rotary_tables(self, num_tokens: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Cosine and sine tables for a query grid of ``num_tokens`` tokens.

        Returns:
            ``(cos, sin)``, each ``(num_tokens, head_dim // 2)`` float32 on ``device``; cached, so
            treat them as read-only.
        """
        width, height = self._grid_for(num_tokens)
        key = (width, height, torch.device(device))
        tables = self._tables.get(key)
        if tables is None:
            # Built outside inference mode so a table first made during inference stays usable
            # when the module is later trained.
            with torch.inference_mode(False):
                angles = axial_rotary_angles(self.head_dim, width, height, self.rope_theta)
                tables = (angles.cos().to(device), angles.sin().to(device))
            self._tables[key] = tables
        return tables

    def rotate_queries(self, q: torch.Tensor) -> torch.Tensor:
        """Rotate projected queries ``(B, h, Nq, head_dim)`` by their grid positions."""
        cos, sin = self.rotary_tables(q.shape[-2], q.device)
        return _rotate_pairs(q, cos, sin)

    def rotate_keys(
        self, k: torch.Tensor, num_query_tokens: int, num_k_exclude_rope: int = 0
    ) -> torch.Tensor:
        """Rotate projected keys by the query grid's positions.

        Args:
            k: ``(B, h, Nk, head_dim)`` projected keys: frames of ``num_query_tokens`` tokens,
                then ``num_k_exclude_rope`` tokens left unrotated (object pointers).
            num_query_tokens: tokens per frame, i.e. the query grid size.
            num_k_exclude_rope: number of trailing keys without a spatial position.

        Returns:
            Rotated keys, same shape and dtype (a new tensor; ``k`` is not modified).
        """
        num_rope = k.shape[-2] - num_k_exclude_rope
        if num_rope < 0:
            raise ValueError(f"num_k_exclude_rope={num_k_exclude_rope} exceeds the {k.shape[-2]} keys")
        if num_rope == 0:
            return k
        if num_rope != num_query_tokens and not self.rope_k_repeat:
            raise ValueError(
                f"{num_rope} rotary keys for {num_query_tokens} queries: keys longer than queries "
                "need rope_k_repeat=True (memory cross-attention)"
            )
        if num_rope % num_query_tokens != 0:
            raise ValueError(
                f"{num_rope} rotary keys are not whole frames of {num_query_tokens} tokens; "
                "check num_k_exclude_rope (the number of object-pointer tokens)"
            )
        cos, sin = self.rotary_tables(num_query_tokens, k.device)
        spatial = k[..., :num_rope, :]
        # Frames share one table: view keys as (..., frames, tokens, dim) and broadcast.
        frames = spatial.unflatten(-2, (num_rope // num_query_tokens, num_query_tokens))
        rotated = _rotate_pairs(frames, cos, sin).flatten(-3, -2)
        if num_k_exclude_rope == 0:
            return rotated
        return torch.cat((rotated, k[..., num_rope:, :]), dim=-2)

    def attend_rotated(self, q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """Attend from raw query tokens to keys and values that are already projected.

        Args:
            q: ``(B, Nq, embedding_dim)`` query tokens (projected and rotated here).
            keys: ``(B, h, Nk, head_dim)`` projected and rotated keys (see :meth:`rotate_keys`).
            values: ``(B, h, Nk, head_dim)`` projected values.

        Returns:
            ``(B, Nq, embedding_dim)``.
        """
        return self.attend(self.rotate_queries(self.project_queries(q)), keys, values)

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        num_k_exclude_rope: int = 0,
    ) -> torch.Tensor:
        keys = self.rotate_keys(self.project_keys(k), q.shape[-2], num_k_exclude_rope)
        return self.attend_rotated(q, keys, self.project_values(v))
