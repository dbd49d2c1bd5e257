"""The SAM 2.1 memory encoder: a frame's features fused with its predicted mask.

The mask (logits at the model input resolution) is squashed with a sigmoid, downsampled by
strided convs to the image-embedding grid, added to a 1x1 projection of the frame's image
features, mixed by a few ConvNeXt blocks and projected to the narrow memory width (64). A sine
position encoding of the grid comes with it.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from sam2s.modeling.common import DropPath, LayerNorm2d
from sam2s.modeling.kernels import Conv2d, Linear
from sam2s.modeling.position_encoding import PositionEmbeddingSine

__all__ = ["CXBlock", "Fuser", "MaskDownSampler", "MemoryEncoder", "MemoryEncoderOutput"]


class MaskDownSampler(nn.Module):
    """Downsample a mask by ``total_stride`` in steps of ``stride``.

    Each step is conv -> LayerNorm2d -> GELU and multiplies the channels by ``stride ** 2`` (the
    pixels it folds); a final 1x1 conv maps to ``embed_dim``.

    Args:
        embed_dim: output channels.
        kernel_size: kernel of each strided conv.
        stride: stride of each step.
        padding: padding of each strided conv.
        total_stride: overall downsampling; must be a power of ``stride``.

    Shapes:
        ``(B, 1, H, W) -> (B, embed_dim, H / total_stride, W / total_stride)``.
    """

    def __init__(
        self,
        embed_dim: int = 256,
        kernel_size: int = 3,
        stride: int = 2,
        padding: int = 1,
        total_stride: int = 16,
    ) -> None:
        super().__init__()
        num_steps = round(math.log(total_stride, stride))
        if stride**num_steps != total_stride:
            raise ValueError(f"total_stride={total_stride} is not a power of stride={stride}")
        layers: list[nn.Module] = []
        channels = 1
        for _ in range(num_steps):
            out_channels = channels * stride**2
            layers += [
                nn.Conv2d(channels, out_channels, kernel_size=kernel_size, stride=stride, padding=padding),
                LayerNorm2d(out_channels),
                nn.GELU(),
            ]
            channels = out_channels
        layers.append(Conv2d(channels, embed_dim, kernel_size=1))
        self.encoder = nn.Sequential(*layers)

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        return self.encoder(mask)


class CXBlock(nn.Module):
    """ConvNeXt block: depthwise conv, LayerNorm, pointwise MLP, layer scale, residual.

    The pointwise convs are linear layers on channels-last tensors (faster in PyTorch than 1x1
    convs, and the checkpoint stores them that way).

    Args:
        dim: channels.
        kernel_size: depthwise kernel.
        padding: depthwise padding (``kernel_size // 2`` keeps the size).
        drop_path: stochastic-depth rate of the residual branch.
        layer_scale_init_value: initial per-channel scale ``gamma`` of the branch; 0 disables it.
        use_dwconv: depthwise (grouped) conv; ``False`` gives a dense conv.

    Shapes:
        ``(B, dim, H, W) -> (B, dim, H, W)``.
    """

    def __init__(
        self,
        dim: int,
        kernel_size: int = 7,
        padding: int = 3,
        drop_path: float = 0.0,
        layer_scale_init_value: float = 1e-6,
        use_dwconv: bool = True,
    ) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(
            dim, dim, kernel_size=kernel_size, padding=padding, groups=dim if use_dwconv else 1
        )
        self.norm = LayerNorm2d(dim, eps=1e-6)
        self.pwconv1 = Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = Linear(4 * dim, dim)
        self.gamma = (
            nn.Parameter(layer_scale_init_value * torch.ones(dim)) if layer_scale_init_value > 0 else None
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch = self.norm(self.dwconv(x)).permute(0, 2, 3, 1)  # channels last
        branch = self.pwconv2(self.act(self.pwconv1(branch)))
        if self.gamma is not None:
            branch = self.gamma * branch
        return x + self.drop_path(branch.permute(0, 3, 1, 2))


class Fuser(nn.Module):
    """A stack of :class:`CXBlock` that mixes image features with the downsampled mask.

    Args:
        num_layers: number of blocks.
        dim: channels.
        kernel_size, padding, layer_scale_init_value, drop_path, use_dwconv: per block, see
            :class:`CXBlock`.
        input_projection: start with a 1x1 conv.

    Shapes:
        ``(B, dim, H, W) -> (B, dim, H, W)``.
    """

    def __init__(
        self,
        num_layers: int,
        dim: int,
        kernel_size: int = 7,
        padding: int = 3,
        layer_scale_init_value: float = 1e-6,
        drop_path: float = 0.0,
        use_dwconv: bool = True,
        input_projection: bool = False,
    ) -> None:
        super().__init__()
        self.proj = Conv2d(dim, dim, kernel_size=1) if input_projection else nn.Identity()
        self.layers = nn.ModuleList(
            CXBlock(dim, kernel_size, padding, drop_path, layer_scale_init_value, use_dwconv)
            for _ in range(num_layers)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        for layer in self.layers:
            x = layer(x)
        return x


class MemoryEncoderOutput(NamedTuple):
    """A frame's memory.

    Attributes:
        features: ``(B, out_dim, h, w)`` memory features.
        pos: ``(B, out_dim, h, w)`` sine position encoding of the grid (a read-only broadcast
            view of a cached tensor).
    """

    features: torch.Tensor
    pos: torch.Tensor


class MemoryEncoder(nn.Module):
    """Encode a frame's image features and predicted mask into a memory.

    Args:
        out_dim: memory width.
        in_dim: width of the image features.
        mask_kernel_size, mask_stride, mask_padding, mask_total_stride: the
            :class:`MaskDownSampler` (its output width is ``in_dim``).
        fuser_num_layers, fuser_kernel_size, fuser_padding, fuser_layer_scale_init_value,
        fuser_use_dwconv: the :class:`Fuser`.
    """

    def __init__(
        self,
        out_dim: int = 64,
        in_dim: int = 256,
        mask_kernel_size: int = 3,
        mask_stride: int = 2,
        mask_padding: int = 1,
        mask_total_stride: int = 16,
        fuser_num_layers: int = 2,
        fuser_kernel_size: int = 7,
        fuser_padding: int = 3,
        fuser_layer_scale_init_value: float = 1e-6,
        fuser_use_dwconv: bool = True,
    ) -> None:
        super().__init__()
        self.mask_downsampler = MaskDownSampler(
            embed_dim=in_dim,
            kernel_size=mask_kernel_size,
            stride=mask_stride,
            padding=mask_padding,
            total_stride=mask_total_stride,
        )
        self.pix_feat_proj = Conv2d(in_dim, in_dim, kernel_size=1)
        self.fuser = Fuser(
            num_layers=fuser_num_layers,
            dim=in_dim,
            kernel_size=fuser_kernel_size,
            padding=fuser_padding,
            layer_scale_init_value=fuser_layer_scale_init_value,
            use_dwconv=fuser_use_dwconv,
        )
        self.out_proj = Conv2d(in_dim, out_dim, kernel_size=1) if out_dim != in_dim else nn.Identity()
        self.position_encoding = PositionEmbeddingSine(out_dim)

    def forward(
        self,
        pix_feat: torch.Tensor,
        masks: torch.Tensor,
        skip_mask_sigmoid: bool = False,
    ) -> MemoryEncoderOutput:
        """Encode one memory per batch item.

        Args:
            pix_feat: ``(B, in_dim, h, w)`` image features of the frame.
            masks: ``(B, 1, H, W)`` mask logits (or probabilities with ``skip_mask_sigmoid``),
                ``H = mask_total_stride * h``.
            skip_mask_sigmoid: the masks are already probabilities.

        Returns:
            :class:`MemoryEncoderOutput` ``(features, pos)``, each ``(B, out_dim, h, w)``.
        """
        if not skip_mask_sigmoid:
            # Probabilities, so predicted masks look like the binary ground truth seen in training.
            masks = torch.sigmoid(masks)
        fused = self.pix_feat_proj(pix_feat) + self.mask_downsampler(masks)
        features = self.out_proj(self.fuser(fused))
        return MemoryEncoderOutput(features, self.position_encoding(features))
