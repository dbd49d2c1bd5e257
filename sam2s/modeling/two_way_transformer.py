"""The two-way transformer of the SAM mask decoder.

Prompt tokens (output tokens + point/box embeddings) and image tokens update each other:
every block runs token self-attention, token-to-image cross-attention, a token MLP and
image-to-token cross-attention, each followed by a residual add and a LayerNorm (post-norm).
A final token-to-image attention closes the stack. Positional encodings are re-added to the
queries and keys of every attention (the prompt tokens' initial values serve as their
positional encoding), except for the first block's self-attention, which replaces the tokens
outright.
"""

from __future__ import annotations

import torch
from torch import nn

from sam2s.modeling.attention import Attention
from sam2s.modeling.common import MLP

__all__ = ["TwoWayAttentionBlock", "TwoWayTransformer"]


class TwoWayAttentionBlock(nn.Module):
    """One block of :class:`TwoWayTransformer`.

    Args:
        embedding_dim: token width.
        num_heads: attention heads.
        mlp_dim: hidden width of the token MLP.
        activation: activation class of the token MLP.
        attention_downsample_rate: inner-width reduction of the two cross-attentions.
        skip_first_layer_pe: the self-attention output replaces the tokens (no residual, no
            positional encoding); used by the first block.
    """

    def __init__(
        self,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int = 2048,
        activation: type[nn.Module] = nn.ReLU,
        attention_downsample_rate: int = 2,
        skip_first_layer_pe: bool = False,
    ) -> None:
        super().__init__()
        self.self_attn = Attention(embedding_dim, num_heads)
        self.norm1 = nn.LayerNorm(embedding_dim)
        self.cross_attn_token_to_image = Attention(
            embedding_dim, num_heads, downsample_rate=attention_downsample_rate
        )
        self.norm2 = nn.LayerNorm(embedding_dim)
        self.mlp = MLP(embedding_dim, mlp_dim, embedding_dim, num_layers=2, activation=activation)
        self.norm3 = nn.LayerNorm(embedding_dim)
        self.norm4 = nn.LayerNorm(embedding_dim)
        self.cross_attn_image_to_token = Attention(
            embedding_dim, num_heads, downsample_rate=attention_downsample_rate
        )
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        query_pe: torch.Tensor,
        key_pe: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Update prompt tokens and image tokens.

        Args:
            queries: ``(B, Nt, C)`` prompt tokens.
            keys: ``(B, HW, C)`` image tokens.
            query_pe: ``(B, Nt, C)`` positional encoding of the prompt tokens.
            key_pe: ``(B or 1, HW, C)`` positional encoding of the image tokens.

        Returns:
            Updated ``(queries, keys)``, same shapes.
        """
        if self.skip_first_layer_pe:
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)

        keys_with_pe = keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(queries + query_pe, keys_with_pe, keys))
        queries = self.norm3(queries + self.mlp(queries))

        # The image tokens attend to the updated prompt tokens; the image keys' positional
        # encoding is unchanged since the token-to-image step above, so it is reused.
        keys = self.norm4(keys + self.cross_attn_image_to_token(keys_with_pe, queries + query_pe, queries))
        return queries, keys


class TwoWayTransformer(nn.Module):
    """Stack of :class:`TwoWayAttentionBlock` plus a final token-to-image attention.

    Args:
        depth: number of blocks.
        embedding_dim: token width ``C``.
        num_heads: attention heads.
        mlp_dim: hidden width of the token MLPs.
        activation: activation class of the token MLPs.
        attention_downsample_rate: inner-width reduction of the cross-attentions.
    """

    def __init__(
        self,
        depth: int,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int,
        activation: type[nn.Module] = nn.ReLU,
        attention_downsample_rate: int = 2,
    ) -> None:
        super().__init__()
        self.depth = depth
        self.embedding_dim = embedding_dim
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(
                embedding_dim=embedding_dim,
                num_heads=num_heads,
                mlp_dim=mlp_dim,
                activation=activation,
                attention_downsample_rate=attention_downsample_rate,
                skip_first_layer_pe=(index == 0),
            )
            for index in range(depth)
        )
        self.final_attn_token_to_image = Attention(
            embedding_dim, num_heads, downsample_rate=attention_downsample_rate
        )
        self.norm_final_attn = nn.LayerNorm(embedding_dim)

    def prefer_nearby_prompts(self, scale: float = 1.0) -> None:
        """Start every prompt/image attention with one shared query and key projection.

        The queries and keys of these attentions carry positional encodings (the prompt's and the
        image token's random Fourier features). With the same projection ``P`` (orthonormal rows
        times ``scale``, zero bias) on both sides, the starting score of a click and an image
        token includes ``P pe(click) . P pe(token)``, which is largest where they are close: the
        image tokens under a click hear from it first. From the default random projections a
        model trained from scratch answers clicks with empty masks; this is the decoder's
        counterpart of :meth:`~sam2s.modeling.memory_attention.MemoryAttention.prefer_same_position`.
        """
        attentions = [self.final_attn_token_to_image]
        for layer in self.layers:
            attentions += [layer.cross_attn_token_to_image, layer.cross_attn_image_to_token]
        with torch.no_grad():
            for attention in attentions:
                inner, width = attention.q_proj.weight.shape
                orthonormal_rows = torch.linalg.qr(torch.randn(width, inner))[0].T
                for projection in (attention.q_proj, attention.k_proj):
                    projection.weight.copy_(scale * orthonormal_rows)
                    projection.bias.zero_()

    def forward(
        self,
        image_embedding: torch.Tensor,
        image_pe: torch.Tensor,
        point_embedding: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the transformer.

        Args:
            image_embedding: ``(B, C, H, W)`` image features.
            image_pe: ``(B or 1, C, H, W)`` positional encoding of the image features (a batch
                of 1 is broadcast, saving a copy per prompt).
            point_embedding: ``(B, Nt, C)`` prompt tokens, also used as their own positional
                encoding.

        Returns:
            ``(tokens (B, Nt, C), image_tokens (B, H*W, C))``.
        """
        keys = image_embedding.flatten(2).transpose(1, 2)
        key_pe = image_pe.flatten(2).transpose(1, 2)
        queries = point_embedding
        for layer in self.layers:
            queries, keys = layer(queries, keys, query_pe=point_embedding, key_pe=key_pe)
        attended = self.final_attn_token_to_image(queries + point_embedding, keys + key_pe, keys)
        queries = self.norm_final_attn(queries + attended)
        return queries, keys
