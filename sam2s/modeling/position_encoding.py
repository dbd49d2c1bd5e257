"""Absolute position encodings of image grids and points.

Two encodings are used by SAM 2.1 and therefore here:

* :class:`PositionEmbeddingSine` gives every cell of a feature map a fixed sine/cosine code
  of its normalised (y, x) position. The FPN neck attaches one to every output level.
* :class:`PositionEmbeddingRandom` projects normalised (x, y) positions onto random Gaussian
  frequencies (Fourier features). The prompt encoder uses it for clicks, boxes and the dense
  image grid; its frequency matrix is a checkpoint buffer.

Both reproduce the official SAM 2.1 numbers to float32 rounding.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["PositionEmbeddingRandom", "PositionEmbeddingSine"]


class PositionEmbeddingSine(nn.Module):
    """Fixed sine/cosine encoding of the (y, x) grid position of each feature-map cell.

    The first ``num_pos_feats // 2`` channels encode the row, the last ``num_pos_feats // 2``
    the column. Within each half, even channels are ``sin(p / t_k)`` and odd channels
    ``cos(p / t_k)`` with ``t_k = temperature ** (2 * (k // 2) / (num_pos_feats // 2))``, where
    ``p`` is the 1-based cell index, optionally normalised to ``(0, scale]``.

    The encoding depends only on the grid size, so it is computed once per
    ``(H, W, device, dtype)`` and cached; :meth:`forward` returns a broadcast view of the
    cached tensor over the batch. Treat the result as read-only.

    Args:
        num_pos_feats: number of output channels (must be even).
        temperature: base of the geometric progression of wavelengths.
        normalize: divide positions by the grid size (then multiply by ``scale``).
        scale: range of the normalised positions; defaults to ``2 * pi``. Only valid with
            ``normalize=True``.

    Shapes:
        ``(B, C, H, W) -> (B, num_pos_feats, H, W)`` (only ``B``, ``H``, ``W``, device and dtype
        of the input are read).
    """

    def __init__(
        self,
        num_pos_feats: int,
        temperature: int = 10000,
        normalize: bool = True,
        scale: float | None = None,
    ) -> None:
        super().__init__()
        if num_pos_feats % 2 != 0:
            raise ValueError(f"num_pos_feats must be even (half for y, half for x), got {num_pos_feats}")
        if scale is not None and not normalize:
            raise ValueError("scale only applies to normalised positions: pass normalize=True or scale=None")
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = 2 * math.pi if scale is None else scale
        self._cache: dict[tuple[int, int, torch.device, torch.dtype], torch.Tensor] = {}

    def _encode_axis(self, length: int, device: torch.device) -> torch.Tensor:
        """Encode positions ``1..length`` of one axis.

        Returns:
            ``(length, num_pos_feats // 2)`` float32 codes.
        """
        half = self.num_pos_feats // 2
        positions = torch.arange(1, length + 1, dtype=torch.float32, device=device)
        if self.normalize:
            # Same operation order as the official code, so float32 rounding matches.
            positions = positions / (positions[-1:] + 1e-6) * self.scale
        channel = torch.arange(half, dtype=torch.float32, device=device)
        wavelengths = self.temperature ** (2 * (channel // 2) / half)
        phases = positions[:, None] / wavelengths
        codes = torch.empty_like(phases)
        codes[:, 0::2] = phases[:, 0::2].sin()
        codes[:, 1::2] = phases[:, 1::2].cos()
        return codes

    def _grid_encoding(
        self, height: int, width: int, device: torch.device, dtype: torch.dtype
    ) -> torch.Tensor:
        """Build the ``(num_pos_feats, H, W)`` encoding of an ``H x W`` grid."""
        half = self.num_pos_feats // 2
        rows = self._encode_axis(height, device).t()  # (half, H)
        cols = self._encode_axis(width, device).t()  # (half, W)
        grid = torch.cat(
            (rows[:, :, None].expand(half, height, width), cols[:, None, :].expand(half, height, width)),
            dim=0,
        )
        return grid.to(dtype).contiguous()

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encode the grid of ``x``.

        Args:
            x: ``(B, C, H, W)`` feature map.

        Returns:
            ``(B, num_pos_feats, H, W)`` encoding in ``x``'s dtype and device (a read-only
            broadcast view of a cached tensor).
        """
        batch, height, width = x.shape[0], x.shape[-2], x.shape[-1]
        key = (height, width, x.device, x.dtype)
        encoding = self._cache.get(key)
        if encoding is None:
            # Built outside inference mode so the cached tensor stays usable when the model
            # is later run with autograd (e.g. training after an inference-mode session).
            with torch.inference_mode(False):
                encoding = self._grid_encoding(height, width, x.device, x.dtype)
            self._cache[key] = encoding
        return encoding.unsqueeze(0).expand(batch, -1, -1, -1)


class PositionEmbeddingRandom(nn.Module):
    """Fourier-feature encoding of 2-D positions with random Gaussian frequencies.

    A position ``(x, y)`` normalised to ``[0, 1]^2`` is mapped to ``[-1, 1]^2``, projected
    by the ``(2, num_pos_feats)`` matrix ``positional_encoding_gaussian_matrix`` and encoded as
    ``[sin(2 pi p), cos(2 pi p)]``.

    Args:
        num_pos_feats: number of random frequencies; the encoding has twice as many channels.
        scale: standard deviation of the frequencies; ``None`` or a non-positive value means 1.
    """

    def __init__(self, num_pos_feats: int = 64, scale: float | None = None) -> None:
        super().__init__()
        if scale is None or scale <= 0.0:
            scale = 1.0
        self.register_buffer("positional_encoding_gaussian_matrix", scale * torch.randn((2, num_pos_feats)))

    def _encode(self, coords: torch.Tensor) -> torch.Tensor:
        """Encode positions normalised to ``[0, 1]``.

        Args:
            coords: ``(..., 2)`` float32 ``(x, y)`` positions in ``[0, 1]``.

        Returns:
            ``(..., 2 * num_pos_feats)`` encoding.
        """
        projected = (2 * coords - 1) @ self.positional_encoding_gaussian_matrix
        projected = (2 * math.pi) * projected
        return torch.cat([projected.sin(), projected.cos()], dim=-1)

    def forward(self, size: tuple[int, int]) -> torch.Tensor:
        """Encode the centres of the cells of an ``H x W`` grid.

        Args:
            size: ``(H, W)`` of the grid.

        Returns:
            ``(2 * num_pos_feats, H, W)`` encoding.
        """
        height, width = size
        device = self.positional_encoding_gaussian_matrix.device
        rows = (torch.arange(height, dtype=torch.float32, device=device) + 0.5) / height
        cols = (torch.arange(width, dtype=torch.float32, device=device) + 0.5) / width
        coords = torch.stack(
            (cols[None, :].expand(height, width), rows[:, None].expand(height, width)),
            dim=-1,
        )
        return self._encode(coords).permute(2, 0, 1)

    def forward_with_coords(self, coords: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """Encode pixel coordinates of points.

        Args:
            coords: ``(B, N, 2)`` ``(x, y)`` pixel coordinates.
            image_size: ``(H, W)`` of the image the coordinates refer to.

        Returns:
            ``(B, N, 2 * num_pos_feats)`` float32 encoding.
        """
        if coords.shape[-1] != 2:
            raise ValueError(
                f"coords must end with an (x, y) axis of size 2, got shape {tuple(coords.shape)}"
            )
        height, width = image_size
        normalised = coords / coords.new_tensor([width, height])
        return self._encode(normalised.float())
