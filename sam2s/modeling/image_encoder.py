"""The SAM 2.1 image encoder: a Hiera trunk followed by a feature-pyramid neck.

The trunk returns one feature map per stage; the neck projects every stage to ``d_model``
channels with a 1x1 convolution and, on the levels listed in ``fpn_top_down_levels``, adds
the upsampled coarser level (top-down fusion). Each level gets a sine position encoding.
``scalp`` drops the coarsest levels from the output (SAM 2.1 drops one: the mask decoder
uses the two finest levels as high-resolution skips and the third as the image embedding).

Parameter names equal those of the official SAM 2.1 checkpoints under ``image_encoder.``.
"""

from __future__ import annotations

import inspect
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sam2s.modeling.hiera import Hiera
from sam2s.modeling.kernels import Conv2d
from sam2s.modeling.position_encoding import PositionEmbeddingSine

__all__ = ["FpnNeck", "ImageEncoder", "ImageFeatures", "build_image_encoder"]


@dataclass
class ImageFeatures:
    """Multi-scale features of a batch of images.

    Attributes:
        backbone_fpn: neck outputs, highest resolution first, each ``(B, d_model, H_i, W_i)``
            (``H_0 = H / 4`` for an ``H``-pixel image).
        vision_pos_enc: sine position encodings of the same levels, same shapes. They are
            read-only broadcast views of cached tensors.
    """

    backbone_fpn: list[torch.Tensor]
    vision_pos_enc: list[torch.Tensor]

    @property
    def vision_features(self) -> torch.Tensor:
        """The coarsest kept level, ``(B, d_model, H_n, W_n)``: the image embedding."""
        return self.backbone_fpn[-1]


class FpnNeck(nn.Module):
    """Feature pyramid neck without output convolutions.

    Args:
        d_model: output channels of every level.
        backbone_channel_list: trunk stage widths, lowest resolution first (the order of
            the official configs, and of ``convs``).
        fpn_top_down_levels: levels (0 = highest resolution) that receive the upsampled
            coarser level; ``None`` means all.
        fpn_interp_model: ``F.interpolate`` mode of the top-down upsampling.
        fpn_kernel_size: kernel of the lateral convolutions.
        fpn_stride: stride of the lateral convolutions.
        fpn_padding: padding of the lateral convolutions.
        fuse_type: ``"sum"`` or ``"avg"`` of lateral and top-down features.

    Shapes:
        ``[(B, C_i, H_i, W_i)]`` highest resolution first ->
        (``[(B, d_model, H_i, W_i)]``, ``[(B, d_model, H_i, W_i)]``): features and position
        encodings, same order.
    """

    def __init__(
        self,
        d_model: int,
        backbone_channel_list: Sequence[int],
        fpn_top_down_levels: Sequence[int] | None = None,
        fpn_interp_model: str = "nearest",
        fpn_kernel_size: int = 1,
        fpn_stride: int = 1,
        fpn_padding: int = 0,
        fuse_type: str = "sum",
    ) -> None:
        super().__init__()
        if fuse_type not in ("sum", "avg"):
            raise ValueError(f"fuse_type must be 'sum' or 'avg', got {fuse_type!r}")
        self.d_model = d_model
        self.backbone_channel_list = list(backbone_channel_list)
        self.position_encoding = PositionEmbeddingSine(d_model)
        # Each conv sits in a Sequential under the name "conv" to match checkpoint keys
        # ("convs.N.conv.weight"); convs[0] serves the coarsest level.
        self.convs = nn.ModuleList(
            nn.Sequential(
                OrderedDict(
                    conv=Conv2d(
                        channels, d_model, kernel_size=fpn_kernel_size, stride=fpn_stride, padding=fpn_padding
                    )
                )
            )
            for channels in self.backbone_channel_list
        )
        num_levels = len(self.backbone_channel_list)
        self.fpn_top_down_levels = set(
            range(num_levels) if fpn_top_down_levels is None else fpn_top_down_levels
        )
        self.fpn_interp_model = fpn_interp_model
        self.fuse_type = fuse_type

    def forward(
        self, stage_features: Sequence[torch.Tensor]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Fuse the trunk's stages.

        Args:
            stage_features: ``(B, C_i, H_i, W_i)`` per stage, highest resolution first.

        Returns:
            Features and position encodings per level, highest resolution first.
        """
        num_levels = len(self.convs)
        if len(stage_features) != num_levels:
            raise ValueError(f"the neck expects {num_levels} feature levels, got {len(stage_features)}")
        features: list[torch.Tensor] = [None] * num_levels  # type: ignore[list-item]
        coarser = None
        # Coarsest level first, so each level can take the already fused coarser one.
        for level in range(num_levels - 1, -1, -1):
            fused = self.convs[num_levels - 1 - level](stage_features[level])
            if coarser is not None and level in self.fpn_top_down_levels:
                # Upsampled in float32 as the official model does, which keeps mixed-precision
                # runs equal to it (and nearest upsampling of bfloat16 is not on every backend).
                upsampled = F.interpolate(
                    coarser.to(torch.float32),
                    scale_factor=2.0,
                    mode=self.fpn_interp_model,
                    align_corners=None if self.fpn_interp_model == "nearest" else False,
                    antialias=False,
                )
                fused = fused + upsampled
                if self.fuse_type == "avg":
                    fused = fused / 2
            features[level] = fused
            coarser = fused
        positions = [self.position_encoding(level_features) for level_features in features]
        return features, positions


class ImageEncoder(nn.Module):
    """Trunk + neck, keeping all but the ``scalp`` coarsest levels.

    Args:
        trunk: a :class:`~sam2s.modeling.hiera.Hiera` (or any module with ``channel_list``).
        neck: an :class:`FpnNeck` whose ``backbone_channel_list`` equals the trunk's.
        scalp: number of coarsest levels to drop from the output.

    Shapes:
        ``(B, 3, H, W)`` -> :class:`ImageFeatures`.
    """

    def __init__(self, trunk: Hiera, neck: FpnNeck, scalp: int = 1) -> None:
        super().__init__()
        if list(trunk.channel_list) != list(neck.backbone_channel_list):
            raise ValueError(
                f"trunk and neck disagree on channels: trunk stages give {list(trunk.channel_list)} "
                f"(lowest resolution first) but neck.backbone_channel_list is {list(neck.backbone_channel_list)}"
            )
        if not 0 <= scalp < len(neck.backbone_channel_list):
            raise ValueError(
                f"scalp must keep at least one level: got {scalp} for {len(neck.backbone_channel_list)} levels"
            )
        self.trunk = trunk
        self.neck = neck
        self.scalp = scalp

    def forward(self, images: torch.Tensor) -> ImageFeatures:
        """Encode images.

        Args:
            images: ``(B, 3, H, W)`` normalised images.

        Returns:
            The kept levels, highest resolution first.
        """
        features, positions = self.neck(self.trunk(images))
        kept = len(features) - self.scalp
        return ImageFeatures(backbone_fpn=features[:kept], vision_pos_enc=positions[:kept])


def _checked_kwargs(cls: type, cfg: dict[str, Any], what: str) -> dict[str, Any]:
    """Reject config keys that ``cls`` does not accept, naming them and the accepted ones."""
    accepted = [name for name in inspect.signature(cls.__init__).parameters if name != "self"]
    unknown = sorted(set(cfg) - set(accepted))
    if unknown:
        raise ValueError(f"unknown {what} option(s) {unknown}; accepted: {accepted}")
    return dict(cfg)


def build_image_encoder(trunk_cfg: dict[str, Any], neck_cfg: dict[str, Any], scalp: int = 1) -> ImageEncoder:
    """Build an :class:`ImageEncoder` from the keyword arguments of its parts.

    Args:
        trunk_cfg: keyword arguments of :class:`~sam2s.modeling.hiera.Hiera`.
        neck_cfg: keyword arguments of :class:`FpnNeck`.
        scalp: number of coarsest levels to drop.

    Example:
        >>> encoder = build_image_encoder(
        ...     {"embed_dim": 96, "num_heads": 1, "stages": [1, 2, 7, 2], "global_att_blocks": [5, 7, 9],
        ...      "window_pos_embed_bkg_spatial_size": [7, 7]},
        ...     {"d_model": 256, "backbone_channel_list": [768, 384, 192, 96],
        ...      "fpn_top_down_levels": [2, 3], "fpn_interp_model": "nearest"},
        ...     scalp=1,
        ... )
    """
    trunk = Hiera(**_checked_kwargs(Hiera, trunk_cfg, "trunk"))
    neck = FpnNeck(**_checked_kwargs(FpnNeck, neck_cfg, "neck"))
    return ImageEncoder(trunk, neck, scalp=scalp)
