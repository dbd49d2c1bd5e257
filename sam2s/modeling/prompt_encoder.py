"""Encoding of clicks, boxes and mask prompts for the SAM mask decoder.

Sparse prompts (points and box corners) become one token each: the random-Fourier encoding of
the position plus a learned embedding of the point's role. Dense prompts (a low-resolution mask
logit map) are downscaled by a small conv net to the image-embedding grid; without one, a
learned "no mask" vector is broadcast over the grid.

Point labels:

=====  ==========================================================
label  meaning
=====  ==========================================================
-1     padding ("not a point"): the position is ignored
0      negative click (background)
1      positive click (object)
2      top-left box corner
3      bottom-right box corner
=====  ==========================================================

As in SAM 2.1, when points are given without a box one padding token is appended, so a
single click gives two sparse tokens.
"""

from __future__ import annotations

import torch
from torch import nn

from sam2s.modeling.common import LayerNorm2d
from sam2s.modeling.position_encoding import PositionEmbeddingRandom

__all__ = ["POINT_LABEL_NEGATIVE", "POINT_LABEL_PAD", "POINT_LABEL_POSITIVE", "PromptEncoder"]

POINT_LABEL_PAD = -1
POINT_LABEL_NEGATIVE = 0
POINT_LABEL_POSITIVE = 1
POINT_LABEL_BOX_TOP_LEFT = 2
POINT_LABEL_BOX_BOTTOM_RIGHT = 3


class PromptEncoder(nn.Module):
    """Embed points, boxes and masks into sparse tokens and a dense map.

    Args:
        embed_dim: token width ``C`` (the mask decoder's width).
        image_embedding_size: ``(h, w)`` of the image-embedding grid.
        input_image_size: ``(H, W)`` in pixels of the model input, the frame of the point and
            box coordinates.
        mask_in_chans: hidden channels of the mask downscaling net.
        activation: activation class of the mask downscaling net.
    """

    num_point_embeddings = 4  # negative, positive, box top-left, box bottom-right

    def __init__(
        self,
        embed_dim: int,
        image_embedding_size: tuple[int, int],
        input_image_size: tuple[int, int],
        mask_in_chans: int,
        activation: type[nn.Module] = nn.GELU,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.image_embedding_size = (int(image_embedding_size[0]), int(image_embedding_size[1]))
        self.input_image_size = (int(input_image_size[0]), int(input_image_size[1]))
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)
        self.point_embeddings = nn.ModuleList(
            nn.Embedding(1, embed_dim) for _ in range(self.num_point_embeddings)
        )
        self.not_a_point_embed = nn.Embedding(1, embed_dim)

        self.mask_input_size = (4 * self.image_embedding_size[0], 4 * self.image_embedding_size[1])
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            activation(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            activation(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def get_dense_pe(self) -> torch.Tensor:
        """Positional encoding of the image-embedding grid, in the frame of the point encoding.

        Returns:
            ``(1, C, h, w)``.
        """
        return self.pe_layer(self.image_embedding_size).unsqueeze(0)

    def _embed_points(self, coords: torch.Tensor, labels: torch.Tensor, pad: bool) -> torch.Tensor:
        """Embed clicks.

        Args:
            coords: ``(B, N, 2)`` ``(x, y)`` pixel coordinates in the model-input frame.
            labels: ``(B, N)`` labels in ``{-1, 0, 1, 2, 3}``.
            pad: append one padding token.

        Returns:
            ``(B, N + pad, C)`` tokens.
        """
        coords = coords + 0.5  # pixel centres
        if pad:
            batch = coords.shape[0]
            coords = torch.cat((coords, coords.new_zeros(batch, 1, 2)), dim=1)
            labels = torch.cat((labels, labels.new_full((batch, 1), POINT_LABEL_PAD)), dim=1)
        position = self.pe_layer.forward_with_coords(coords, self.input_image_size)

        # One learned vector per role, added to the position; padding replaces the position.
        role_table = torch.cat([embedding.weight for embedding in self.point_embeddings], dim=0)
        labels = labels.long()
        role = role_table[labels.clamp(min=0)]
        is_pad = (labels == POINT_LABEL_PAD).unsqueeze(-1)
        return torch.where(is_pad, self.not_a_point_embed.weight.expand_as(position), position + role)

    def _embed_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        """Embed boxes ``(B, 4)`` ``(x0, y0, x1, y1)`` as two corner tokens ``(B, 2, C)``."""
        corners = (boxes + 0.5).reshape(-1, 2, 2)  # pixel centres
        position = self.pe_layer.forward_with_coords(corners, self.input_image_size)
        corner_roles = torch.cat(
            (
                self.point_embeddings[POINT_LABEL_BOX_TOP_LEFT].weight,
                self.point_embeddings[POINT_LABEL_BOX_BOTTOM_RIGHT].weight,
            ),
            dim=0,
        )
        return position + corner_roles

    def _check_prompts(
        self,
        points: tuple[torch.Tensor, torch.Tensor] | None,
        boxes: torch.Tensor | None,
        masks: torch.Tensor | None,
    ) -> int:
        """Validate prompt shapes and return their common batch size (1 when none is given)."""
        sizes: dict[str, int] = {}
        if points is not None:
            coords, labels = points
            if coords.ndim != 3 or coords.shape[-1] != 2:
                raise ValueError(f"point coords must be (B, N, 2), got {tuple(coords.shape)}")
            if labels.shape != coords.shape[:2]:
                raise ValueError(
                    f"point labels must be (B, N) = {tuple(coords.shape[:2])}, got {tuple(labels.shape)}"
                )
            # Checked on CPU only: reading values back from a GPU would stall its queue on every
            # tracked frame (the predictors check user labels before they reach the device).
            if labels.numel() and labels.device.type == "cpu" and bool(
                ((labels < POINT_LABEL_PAD) | (labels > POINT_LABEL_BOX_BOTTOM_RIGHT)).any()
            ):
                raise ValueError(
                    "point labels must be -1 (padding), 0 (negative), 1 (positive), 2 or 3 (box corners); "
                    f"got {sorted(set(labels.flatten().tolist()))}"
                )
            sizes["points"] = coords.shape[0]
        if boxes is not None:
            if boxes.ndim != 2 or boxes.shape[-1] != 4:
                raise ValueError(f"boxes must be (B, 4) as (x0, y0, x1, y1), got {tuple(boxes.shape)}")
            sizes["boxes"] = boxes.shape[0]
        if masks is not None:
            expected = (1, *self.mask_input_size)
            if masks.ndim != 4 or tuple(masks.shape[1:]) != expected:
                raise ValueError(
                    f"mask prompts must be (B, {expected[0]}, {expected[1]}, {expected[2]}) logits "
                    f"(4x the image-embedding grid), got {tuple(masks.shape)}"
                )
            sizes["masks"] = masks.shape[0]
        if len(set(sizes.values())) > 1:
            raise ValueError(f"prompts disagree on the batch size: {sizes}")
        return next(iter(sizes.values()), 1)

    def forward(
        self,
        points: tuple[torch.Tensor, torch.Tensor] | None,
        boxes: torch.Tensor | None,
        masks: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Embed the prompts.

        Args:
            points: ``(coords (B, N, 2), labels (B, N))``, pixel ``(x, y)`` in the model-input
                frame, or ``None``.
            boxes: ``(B, 4)`` boxes ``(x0, y0, x1, y1)`` in pixels, or ``None``.
            masks: ``(B, 1, 4h, 4w)`` mask logits, or ``None``.

        Returns:
            ``(sparse (B, N', C), dense (B, C, h, w))`` with ``N' = N + 1`` for points alone,
            ``N + 2`` for points and a box, ``2`` for a box alone, ``0`` for neither. Without a
            mask, ``dense`` is a broadcast view of the "no mask" vector.
        """
        batch = self._check_prompts(points, boxes, masks)
        tokens: list[torch.Tensor] = []
        if points is not None:
            tokens.append(self._embed_points(points[0], points[1], pad=boxes is None))
        if boxes is not None:
            tokens.append(self._embed_boxes(boxes))
        if tokens:
            sparse = torch.cat(tokens, dim=1) if len(tokens) > 1 else tokens[0]
        else:
            sparse = self.no_mask_embed.weight.new_empty((batch, 0, self.embed_dim))

        if masks is not None:
            dense = self.mask_downscaling(masks)
        else:
            height, width = self.image_embedding_size
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(batch, -1, height, width)
        return sparse, dense
