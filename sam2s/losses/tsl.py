"""Temporal semantic learning (TSL) loss: contrast class embeddings with category text embeddings."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sam2s.modeling.semantic_head import class_logits

__all__ = ["NO_CATEGORY", "tsl_loss"]

#: Target value of an object with no category (e.g. tissue): it adds nothing to the TSL loss.
NO_CATEGORY = -1


def tsl_loss(
    class_embeddings: torch.Tensor,
    text_bank: torch.Tensor,
    targets: torch.Tensor,
    logit_scale: float = 100.0,
) -> torch.Tensor:
    """Cross-entropy over K categories of the scaled cosine similarity to the text embeddings.

    Args:
        class_embeddings: ``(B, D)`` class embeddings of B objects.
        text_bank: ``(K, D)`` text embeddings of the K category names.
        targets: ``(B,)`` long category index of each object, ``-1`` (:data:`NO_CATEGORY`) when
            the object has none.
        logit_scale: multiplier of the cosine similarity (the paper's "tau = 100").

    Returns:
        Scalar: the mean cross-entropy over objects that have a category; 0 (still attached to
        the graph of ``class_embeddings``, so a backward pass runs) when none has.
    """
    if targets.ndim != 1 or targets.shape[0] != class_embeddings.shape[0]:
        raise ValueError(
            f"targets must have shape (B,) = ({class_embeddings.shape[0]},), got {tuple(targets.shape)}"
        )
    if targets.is_floating_point():
        raise ValueError("targets must be integer category indices (use -1 for no category)")
    num_classes = text_bank.shape[0]
    if bool(((targets < NO_CATEGORY) | (targets >= num_classes)).any()):
        raise ValueError(
            f"targets must lie in [-1, {num_classes - 1}] for a bank of {num_classes} names, got {targets.tolist()}"
        )
    logits = class_logits(class_embeddings, text_bank, logit_scale)
    has_category = targets != NO_CATEGORY
    if not bool(has_category.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits[has_category], targets[has_category].long())
