"""Hiera: the hierarchical vision transformer trunk of the SAM 2.1 image encoder.

The image is cut into 4x4 patches by a strided convolution, a windowed absolute position
embedding is added, and a stack of transformer blocks runs in (typically) four stages. Each
stage after the first halves the spatial resolution by max-pooling the attention queries
("q-pooling") in its first block and widens the channels and heads by ``dim_mul`` and
``head_mul``. Most blocks attend within non-overlapping windows; the blocks listed in
``global_att_blocks`` attend over the whole feature map.

Tensors inside the trunk are channels-last, ``(B, H, W, C)``, because layer norms, linear
layers and attention all act on the last axis; the stage outputs are returned as
``(B, C, H, W)`` views for the convolutional neck.

Parameter names equal those of the official SAM 2.1 checkpoints under
``image_encoder.trunk.``, so those weights load with no missing or unexpected keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sam2s.modeling.common import MLP, DropPath
from sam2s.modeling.kernels import Linear, attention

__all__ = ["Hiera", "HieraBlockSpec", "plan_hiera_blocks"]


def _max_pool_channels_last(x: torch.Tensor, stride: tuple[int, int]) -> torch.Tensor:
    """Max-pool a channels-last map with a kernel equal to its stride (odd tails dropped).

    Args:
        x: ``(B, H, W, C)``.
        stride: ``(sH, sW)``.

    Returns:
        ``(B, H // sH, W // sW, C)``.
    """
    # The permutes are views: max_pool2d runs on the channels-last memory directly.
    return F.max_pool2d(x.permute(0, 3, 1, 2), kernel_size=stride, stride=stride).permute(0, 2, 3, 1)


def _partition_windows(x: torch.Tensor, window_size: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Cut a map into non-overlapping square windows, zero-padding bottom and right.

    Args:
        x: ``(B, H, W, C)``.
        window_size: side of a window.

    Returns:
        ``(B * nH * nW, window_size, window_size, C)`` windows (row-major over the window
        grid, batch outermost) and the padded size ``(Hp, Wp)``.
    """
    batch, height, width, channels = x.shape
    pad_h = (window_size - height % window_size) % window_size
    pad_w = (window_size - width % window_size) % window_size
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    padded_h, padded_w = height + pad_h, width + pad_w
    x = x.view(batch, padded_h // window_size, window_size, padded_w // window_size, window_size, channels)
    windows = x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size, window_size, channels)
    return windows, (padded_h, padded_w)


def _merge_windows(
    windows: torch.Tensor, window_size: int, padded_hw: tuple[int, int], hw: tuple[int, int]
) -> torch.Tensor:
    """Inverse of :func:`_partition_windows`: reassemble windows and crop the padding.

    Args:
        windows: ``(B * nH * nW, window_size, window_size, C)``.
        window_size: side of a window.
        padded_hw: ``(Hp, Wp)``, the padded map size (multiples of ``window_size``).
        hw: ``(H, W)``, the size to crop back to.

    Returns:
        ``(B, H, W, C)``.
    """
    padded_h, padded_w = padded_hw
    height, width = hw
    rows, cols = padded_h // window_size, padded_w // window_size
    batch = windows.shape[0] // (rows * cols)
    x = windows.view(batch, rows, cols, window_size, window_size, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(batch, padded_h, padded_w, -1)
    if padded_h > height or padded_w > width:
        x = x[:, :height, :width, :]
    return x


class PatchEmbed(nn.Module):
    """Embed 4x4 patches with a 7x7, stride-4 convolution.

    Shapes:
        ``(B, in_channels, H, W) -> (B, H', W', embed_dim)`` (channels-last view).
    """

    def __init__(
        self,
        embed_dim: int,
        in_channels: int = 3,
        kernel_size: int = 7,
        stride: int = 4,
        padding: int = 3,
    ) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, embed_dim, kernel_size=kernel_size, stride=stride, padding=padding)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.proj(images).permute(0, 2, 3, 1)


class MultiScaleAttention(nn.Module):
    """Multi-head self-attention whose queries may be max-pooled to a coarser grid.

    Pooling only the queries makes the output coarser while every output token still sees all
    input tokens of its window: this is how Hiera moves between stages.

    Args:
        dim: input channels.
        dim_out: channels of queries, keys, values and output.
        num_heads: attention heads (``dim_out`` must be divisible by it).
        q_stride: query pooling stride, or ``None`` for no pooling.

    Shapes:
        ``(B, H, W, dim) -> (B, H // sH, W // sW, dim_out)``.
    """

    def __init__(
        self, dim: int, dim_out: int, num_heads: int, q_stride: tuple[int, int] | None = None
    ) -> None:
        super().__init__()
        if dim_out % num_heads != 0:
            raise ValueError(f"attention width {dim_out} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.q_stride = q_stride
        self.qkv = Linear(dim, dim_out * 3)
        self.proj = Linear(dim_out, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, height, width, _ = x.shape
        qkv = self.qkv(x).view(batch, height * width, 3, self.num_heads, -1)
        q, k, v = qkv.unbind(2)  # each (B, H*W, heads, head_dim)
        if self.q_stride is not None:
            q = _max_pool_channels_last(q.reshape(batch, height, width, -1), self.q_stride)
            height, width = q.shape[1:3]
            q = q.reshape(batch, height * width, self.num_heads, -1)
        x = attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        x = x.transpose(1, 2).reshape(batch, height, width, -1)
        return self.proj(x)


@dataclass(frozen=True)
class HieraBlockSpec:
    """Geometry of one Hiera block.

    Attributes:
        dim: input channels.
        dim_out: output channels (differs from ``dim`` in the first block of a stage).
        num_heads: attention heads.
        window_size: attention window side; 0 means global attention.
        q_stride: query pooling stride in the first block of a pooled stage, else ``None``.
        drop_path: stochastic-depth probability.
    """

    dim: int
    dim_out: int
    num_heads: int
    window_size: int
    q_stride: tuple[int, int] | None
    drop_path: float


class MultiScaleBlock(nn.Module):
    """Pre-norm transformer block with windowed or global attention and optional q-pooling.

    When the block changes width, the residual branch is projected by ``proj`` (and pooled
    like the queries) so it can be added to the attention output.

    Shapes:
        ``(B, H, W, dim) -> (B, H', W', dim_out)`` with ``H' = H // sH`` when pooling.
    """

    def __init__(self, spec: HieraBlockSpec, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.window_size = spec.window_size
        self.q_stride = spec.q_stride
        self.norm1 = nn.LayerNorm(spec.dim, eps=1e-6)
        self.attn = MultiScaleAttention(spec.dim, spec.dim_out, spec.num_heads, q_stride=spec.q_stride)
        self.drop_path = DropPath(spec.drop_path)
        self.norm2 = nn.LayerNorm(spec.dim_out, eps=1e-6)
        self.mlp = MLP(
            spec.dim_out, int(spec.dim_out * mlp_ratio), spec.dim_out, num_layers=2, activation=nn.GELU
        )
        # Created only when the width changes, as in the official checkpoints.
        self.projects_shortcut = spec.dim != spec.dim_out
        if self.projects_shortcut:
            self.proj = Linear(spec.dim, spec.dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.norm1(x)
        if self.projects_shortcut:
            # The shortcut is taken after the norm here, unlike the plain residual path.
            shortcut = self.proj(x)
            if self.q_stride is not None:
                shortcut = _max_pool_channels_last(shortcut, self.q_stride)

        if self.window_size > 0:
            windows, padded_hw = _partition_windows(x, self.window_size)
            windows = self.attn(windows)
            window_size, out_hw = self.window_size, shortcut.shape[1:3]
            if self.q_stride is not None:
                # Queries were pooled inside each window: windows and the padded grid shrank.
                window_size //= self.q_stride[0]
                padded_hw = (padded_hw[0] // self.q_stride[0], padded_hw[1] // self.q_stride[1])
            x = _merge_windows(windows, window_size, padded_hw, out_hw)
        else:
            x = self.attn(x)

        x = shortcut + self.drop_path(x)
        return x + self.drop_path(self.mlp(self.norm2(x)))


def plan_hiera_blocks(
    embed_dim: int,
    num_heads: int,
    stages: Sequence[int],
    global_att_blocks: Sequence[int],
    window_spec: Sequence[int],
    q_pool: int,
    q_stride: tuple[int, int],
    dim_mul: float,
    head_mul: float,
    drop_path_rate: float,
) -> list[HieraBlockSpec]:
    """Lay out the blocks of a Hiera trunk.

    The first block of each stage after the first widens the channels and heads; the first
    blocks of the first ``q_pool`` later stages also pool their queries. That first block
    still uses the window size of the previous stage, because its input is at the previous
    stage's resolution.

    Returns:
        One :class:`HieraBlockSpec` per block, in order.
    """
    depth = sum(stages)
    stage_ends = [sum(stages[: i + 1]) - 1 for i in range(len(stages))]
    pooled_blocks = {end + 1 for end in stage_ends[:-1][:q_pool]}
    # On the CPU explicitly, so that building under a meta or GPU default device also works.
    drop_rates = torch.linspace(0, drop_path_rate, depth, device="cpu").tolist()
    specs: list[HieraBlockSpec] = []
    stage = 0
    dim = embed_dim
    for index in range(depth):
        window_size = 0 if index in global_att_blocks else window_spec[stage]
        dim_out = dim
        if index - 1 in stage_ends:
            dim_out = int(dim * dim_mul)
            num_heads = int(num_heads * head_mul)
            stage += 1
        specs.append(
            HieraBlockSpec(
                dim=dim,
                dim_out=dim_out,
                num_heads=num_heads,
                window_size=window_size,
                q_stride=tuple(q_stride) if index in pooled_blocks else None,
                drop_path=drop_rates[index],
            )
        )
        dim = dim_out
    return specs


class Hiera(nn.Module):
    """Hierarchical vision transformer trunk (Hiera, arXiv 2306.00989) as used by SAM 2.1.

    Args:
        embed_dim: channels of the first stage.
        num_heads: attention heads of the first stage.
        stages: number of blocks per stage.
        global_att_blocks: indices of the blocks that attend globally.
        window_pos_embed_bkg_spatial_size: ``(h, w)`` of the learned background position
            embedding, resized bicubically to the patch grid.
        window_spec: attention window side per stage; the first also sets the size of the
            window position embedding tiled over the patch grid.
        q_pool: number of stage transitions that halve the resolution.
        q_stride: pooling stride at those transitions.
        dim_mul: channel growth at each stage transition.
        head_mul: head-count growth at each stage transition.
        drop_path_rate: stochastic depth of the last block (linear from 0).

    Shapes:
        ``(B, 3, H, W) -> [(B, C_i, H_i, W_i) for each stage]``, highest resolution first,
        with ``C_0 = embed_dim`` and ``H_0 = H / 4``.
    """

    def __init__(
        self,
        embed_dim: int = 96,
        num_heads: int = 1,
        stages: Sequence[int] = (2, 3, 16, 3),
        global_att_blocks: Sequence[int] = (12, 16, 20),
        window_pos_embed_bkg_spatial_size: Sequence[int] = (14, 14),
        window_spec: Sequence[int] = (8, 4, 14, 7),
        q_pool: int = 3,
        q_stride: Sequence[int] = (2, 2),
        dim_mul: float = 2.0,
        head_mul: float = 2.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if len(stages) != len(window_spec):
            raise ValueError(
                f"window_spec needs one window size per stage: got {len(window_spec)} for {len(stages)} stages"
            )
        if not 0 <= q_pool <= len(stages) - 1:
            raise ValueError(
                f"q_pool must be between 0 and {len(stages) - 1} (the number of stage transitions), got {q_pool}"
            )
        self.stage_ends = [sum(stages[: i + 1]) - 1 for i in range(len(stages))]
        self.window_spec = tuple(window_spec)

        self.patch_embed = PatchEmbed(embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, embed_dim, *window_pos_embed_bkg_spatial_size))
        self.pos_embed_window = nn.Parameter(torch.zeros(1, embed_dim, window_spec[0], window_spec[0]))
        # Inference keeps the resized embedding per grid (a bicubic resize per frame otherwise);
        # the key holds the parameters' versions, so changed weights are noticed.
        self._position_cache: dict[tuple, torch.Tensor] = {}

        specs = plan_hiera_blocks(
            embed_dim,
            num_heads,
            stages,
            tuple(global_att_blocks),
            window_spec,
            q_pool,
            tuple(q_stride),
            dim_mul,
            head_mul,
            drop_path_rate,
        )
        self.blocks = nn.ModuleList(MultiScaleBlock(spec) for spec in specs)
        self.stage_channels = [specs[end].dim_out for end in self.stage_ends]

    @property
    def channel_list(self) -> list[int]:
        """Stage widths lowest resolution first, the order the FPN neck lists them in."""
        return self.stage_channels[::-1]

    def _position_embedding(self, height: int, width: int) -> torch.Tensor:
        """Background embedding resized to the patch grid plus the tiled window embedding.

        Returns:
            ``(1, H, W, embed_dim)`` channels-last view.
        """
        window = self.pos_embed_window.shape[-1]
        if height % window or width % window:
            raise ValueError(
                f"the patch grid {height}x{width} is not a multiple of the position-embedding window "
                f"{window}: use an image size that is a multiple of {4 * window}"
            )
        caching = not torch.is_grad_enabled()
        if caching:
            key = (height, width, *((p.data_ptr(), p._version, p.dtype) for p in (self.pos_embed, self.pos_embed_window)))
            cached = self._position_cache.get(key)
            if cached is not None:
                return cached
        background = F.interpolate(self.pos_embed, size=(height, width), mode="bicubic")
        embedding = (background + self.pos_embed_window.tile(1, 1, height // window, width // window)).permute(0, 2, 3, 1)
        if caching:
            self._position_cache = {key: embedding}  # one grid at a time: frames share a size
        return embedding

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Run the trunk.

        Args:
            images: ``(B, 3, H, W)`` normalised images.

        Returns:
            The output of the last block of each stage, ``(B, C_i, H_i, W_i)``, highest
            resolution first (channels-last memory, viewed as channels-first).
        """
        if images.ndim != 4 or images.shape[1] != self.patch_embed.proj.in_channels:
            raise ValueError(
                f"expected images of shape (B, {self.patch_embed.proj.in_channels}, H, W), got {tuple(images.shape)}"
            )
        x = self.patch_embed(images)
        x = x + self._position_embedding(x.shape[1], x.shape[2])
        outputs = []
        stage_ends = set(self.stage_ends)
        for index, block in enumerate(self.blocks):
            x = block(x)
            if index in stage_ends:
                outputs.append(x.permute(0, 3, 1, 2))
        return outputs
