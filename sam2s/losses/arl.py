"""Ambiguity-resilient learning (ARL): Gaussian-softened mask labels and a focal loss for them.

Surgical ground truth is ambiguous along object boundaries (smoke, blur, specular highlights,
thin instrument tips), so SAM2S blurs every ground-truth mask with a normalised 5x5 Gaussian
(sigma = 1.0) and trains the mask logits with a focal loss against those soft labels. This term
takes the place of SAM 2's (hard) focal term, with the same weight of 20.

Choices where the paper is silent:

* Padding: ``replicate`` (edge) padding. A normalised kernel conserves a mask's mass away from
  the border whatever the padding; at the border, replicate padding keeps an object that is cut
  by the frame edge at full confidence instead of fading it towards 0 as zero padding would
  (the frame edge is not an object boundary), and keeps an all-ones or all-zeros mask unchanged.
* Focal loss with soft targets: SAM 2's sigmoid focal loss with the soft label ``t`` put in place
  of the hard one everywhere it appears (binary cross-entropy with a soft target,
  ``p_t = p*t + (1-p)*(1-t)``, ``alpha_t = alpha*t + (1-alpha)*(1-t)``). For 0/1 targets it is
  exactly SAM 2's loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["gaussian_kernel2d", "gaussian_soften", "soft_sigmoid_focal_loss"]


def gaussian_kernel2d(
    kernel_size: int = 5, sigma: float = 1.0, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """A normalised 2D Gaussian kernel.

    Args:
        kernel_size: odd side length of the kernel.
        sigma: standard deviation in pixels; must be positive (a tiny sigma gives a delta kernel).
        dtype: floating-point type of the result.

    Returns:
        ``(kernel_size, kernel_size)`` tensor whose entries sum to 1.
    """
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}")
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma}; use a tiny value such as 1e-3 for no blur")
    offsets = torch.arange(kernel_size, dtype=torch.float64) - (kernel_size - 1) / 2
    profile = torch.exp(-(offsets**2) / (2.0 * sigma**2))
    profile = profile / profile.sum()
    # The 2D Gaussian is separable: the outer product of two normalised 1D profiles sums to 1.
    return torch.outer(profile, profile).to(dtype)


def gaussian_soften(masks: torch.Tensor, kernel_size: int = 5, sigma: float = 1.0) -> torch.Tensor:
    """Turn hard masks into soft labels by convolving them with a normalised Gaussian.

    Args:
        masks: ``(B, 1, H, W)`` float (or bool) masks with values in [0, 1].
        kernel_size: odd side length of the Gaussian kernel (paper: 5).
        sigma: standard deviation of the Gaussian in pixels (paper: 1.0).

    Returns:
        ``(B, 1, H, W)`` soft labels in [0, 1], in the floating type of ``masks`` (float32 for
        bool input). Away from the border the labels of any mask sum to the mask's mass; at the
        border the mask is extended by replicate padding (see the module docstring).
    """
    if masks.ndim != 4 or masks.shape[1] != 1:
        raise ValueError(f"masks must have shape (B, 1, H, W), got {tuple(masks.shape)}")
    if not masks.is_floating_point():
        masks = masks.float()
    kernel = gaussian_kernel2d(kernel_size, sigma, dtype=masks.dtype).to(masks.device)
    pad = kernel_size // 2
    padded = F.pad(masks, (pad, pad, pad, pad), mode="replicate")
    soft = F.conv2d(padded, kernel[None, None])
    # Rounding can push values a hair outside [0, 1]; BCE with soft targets wants them inside.
    return soft.clamp_(0.0, 1.0)


def soft_sigmoid_focal_loss(
    logits: torch.Tensor,
    soft_targets: torch.Tensor,
    alpha: float = 0.25,
    gamma: float = 2.0,
    num_objects: float | None = None,
) -> torch.Tensor:
    """Sigmoid focal loss against soft targets, one value per predicted mask.

    Args:
        logits: ``(N, M, H, W)`` mask logits: N objects, M candidate masks per object.
        soft_targets: ``(N, M, H, W)`` or ``(N, 1, H, W)`` targets in [0, 1] (broadcast over M).
        alpha: weight of the positive class in [0, 1]; a negative value turns the weighting off.
        gamma: exponent of the modulating factor ``(1 - p_t)``.
        num_objects: normaliser (SAM 2 divides by the number of objects in the batch);
            defaults to N.

    Returns:
        ``(N, M)`` losses: each mask's mean over pixels divided by ``num_objects``, so summing
        over N gives the per-object average as in SAM 2's training code. Equals SAM 2's hard
        sigmoid focal loss when the targets are 0/1.
    """
    if logits.ndim != 4:
        raise ValueError(f"logits must have shape (N, M, H, W), got {tuple(logits.shape)}")
    targets = soft_targets.to(logits.dtype).expand_as(logits)
    prob = torch.sigmoid(logits)
    cross_entropy = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = cross_entropy * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss.flatten(2).mean(-1) / _normaliser(num_objects, logits.shape[0])


def _normaliser(num_objects: float | None, batch_size: int) -> float:
    """The divisor of per-object losses: ``num_objects`` when given, else the batch size (at least 1)."""
    value = float(batch_size if num_objects is None else num_objects)
    return max(value, 1.0)
