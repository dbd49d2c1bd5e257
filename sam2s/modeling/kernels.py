"""Float32 inference kernels for CPUs that run faster than PyTorch's default path.

PyTorch multiplies float32 matrices on x86 CPUs with MKL's sgemm. On AMD processors MKL takes a
generic code path: measured on an AMD EPYC (Zen 5, AVX-512) it reaches about 55 GMAC/s per core,
while oneDNN, which every PyTorch CPU build also ships, runs the same products with AVX-512 at
about 120 GMAC/s. PyTorch's fused CPU attention (``scaled_dot_product_attention``) calls the
same sgemm. This module routes the model's heavy products through oneDNN instead:

* :func:`linear` and :class:`Linear` — ``x @ W.T + b`` (optionally with a fused ReLU or GELU);
  :class:`Conv2d` runs its 1x1 form as such a product over the channels;
* :func:`attention` — ``softmax(q k^T * scale) v``, queries taken in chunks so the score matrix of a
  chunk stays in cache.

The arithmetic is the same float32 arithmetic; only the order of the additions inside a dot
product differs, which moves results by ~1e-6 relative (the parity tests with the official
implementation hold at 1e-3 on logits with room to spare).

The fast path is taken only inside a :func:`fast_kernels` block (the predictors enter one around
their model calls), and there only for float32 CPU tensors with autograd and CPU autocast off.
Modules called directly, training, GPUs and reduced-precision runs use PyTorch's own operators
unchanged. ``SAM2S_CPU_KERNELS=aten`` in the environment, or :func:`set_cpu_kernels` with
``"aten"``, turns the fast path off everywhere (for example to compare, or under ``torch.compile``).
"""

from __future__ import annotations

import math
import os
from contextlib import contextmanager
from contextvars import ContextVar

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "CPU_KERNELS",
    "Conv2d",
    "Linear",
    "attention",
    "cpu_kernels",
    "fast_kernels",
    "get_cpu_kernels",
    "linear",
    "onednn_available",
    "set_cpu_kernels",
    "use_fast_path",
]

#: The two CPU back ends: oneDNN products, or PyTorch's default operators.
CPU_KERNELS = ("onednn", "aten")

# Score-matrix elements computed per query chunk (2 MiB of float32, about a core's L2 cache):
# the softmax then reads and writes cached memory. Measured on an AMD EPYC, 64-row chunks of a
# 1024 x 7232 problem run 25% faster than 256-row ones.
_SCORE_CHUNK_ELEMENTS = 1 << 19
# Below this many score elements per (batch, head), PyTorch's fused kernel is faster than a
# Python loop of products (many tiny windows in the image encoder's first stages).
_SMALL_ATTENTION_ELEMENTS = 64 * 1024


def onednn_available() -> bool:
    """Whether this PyTorch build has oneDNN's fused linear operator."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def _initial_kernels() -> str:
    requested = os.environ.get("SAM2S_CPU_KERNELS", "onednn").strip().lower()
    if requested not in CPU_KERNELS:
        raise ValueError(f"SAM2S_CPU_KERNELS must be one of {CPU_KERNELS}, got {requested!r}")
    return requested if requested == "aten" or onednn_available() else "aten"


_kernels = _initial_kernels()
# Whether the code running now asked for the fast path (per thread and task, see fast_kernels).
_fast_block: ContextVar[bool] = ContextVar("sam2s_fast_kernels", default=False)


def get_cpu_kernels() -> str:
    """The CPU back end in use: ``"onednn"`` or ``"aten"``."""
    return _kernels


def set_cpu_kernels(name: str) -> str:
    """Choose the CPU back end for float32 inference; returns the previous one.

    ``"onednn"`` falls back to ``"aten"`` when this PyTorch build lacks oneDNN.
    """
    global _kernels
    if name not in CPU_KERNELS:
        raise ValueError(f"CPU kernels must be one of {CPU_KERNELS}, got {name!r}")
    previous = _kernels
    _kernels = name if name == "aten" or onednn_available() else "aten"
    return previous


@contextmanager
def cpu_kernels(name: str):
    """Use ``name`` (``"onednn"`` or ``"aten"``) inside a ``with`` block."""
    previous = set_cpu_kernels(name)
    try:
        yield
    finally:
        set_cpu_kernels(previous)


@contextmanager
def fast_kernels(enabled: bool = True):
    """Let the model calls inside the block use the oneDNN kernels (unless turned off globally)."""
    token = _fast_block.set(enabled)
    try:
        yield
    finally:
        _fast_block.reset(token)


def use_fast_path(x: torch.Tensor) -> bool:
    """Whether ``x`` goes through the oneDNN kernels: inside :func:`fast_kernels`, back end
    ``"onednn"``, a float32 CPU tensor, autograd and CPU autocast off."""
    if torch.compiler.is_compiling():  # torch.compile brings its own CPU kernels
        return False
    return (
        _fast_block.get()
        and _kernels == "onednn"
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and not torch.is_grad_enabled()
        and not torch.is_autocast_enabled("cpu")
    )


_ACTIVATIONS = {"none": None, "relu": F.relu, "gelu": F.gelu}


def linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, activation: str = "none"
) -> torch.Tensor:
    """``activation(x @ weight.T + bias)``.

    Args:
        x: ``(..., in_features)``.
        weight: ``(out_features, in_features)``.
        bias: ``(out_features,)`` or ``None``.
        activation: ``"none"``, ``"relu"`` or ``"gelu"`` (exact erf form), fused into the product
            on the fast path.

    Returns:
        ``(..., out_features)``.
    """
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
    if use_fast_path(x) and weight.dtype == torch.float32:
        return torch.ops.mkldnn._linear_pointwise(
            x, weight, bias, activation, [], "none" if activation == "gelu" else ""
        )
    out = F.linear(x, weight, bias)
    act = _ACTIVATIONS[activation]
    return out if act is None else act(out)


class Linear(nn.Linear):
    """:class:`torch.nn.Linear` computed by :func:`linear` (same parameters and state dict)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)


class Conv2d(nn.Conv2d):
    """:class:`torch.nn.Conv2d` whose 1x1 form (stride 1, no padding, one group) is computed by
    :func:`linear` over the channels on the fast path; same parameters and state dict.

    The output then has channels-last memory (viewed as ``(B, C, H, W)`` as usual).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pointwise = (
            self.kernel_size == (1, 1)
            and self.stride == (1, 1)
            and self.dilation == (1, 1)
            and self.groups == 1
            and self.padding in ((0, 0), "valid")
        )
        if pointwise and x.ndim == 4 and use_fast_path(x):
            weight = self.weight.view(self.out_channels, self.in_channels)
            return linear(x.permute(0, 2, 3, 1), weight, self.bias).permute(0, 3, 1, 2)
        return super().forward(x)


def _query_chunk(num_keys: int) -> int:
    # at least 64 rows, below which the products lose more than the cache gains
    return max(64, min(512, _SCORE_CHUNK_ELEMENTS // max(num_keys, 1)))


def _has_weight_reorder() -> bool:
    try:
        return hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
    except (AttributeError, RuntimeError):
        return False


# Looked up once: the answer depends only on the torch build, and attention calls this per head.
_CAN_PACK = _has_weight_reorder()


def _attend_2d(q: torch.Tensor, k: torch.Tensor, v_t: torch.Tensor, scale: float, out: torch.Tensor) -> None:
    """One (batch, head): ``q (Lq, d)``, ``k (Lk, d)``, ``v_t (dv, Lk)`` into ``out (Lq, dv)``."""
    step = _query_chunk(k.shape[0])
    if q.shape[0] > step and _CAN_PACK:
        # Reordered once into oneDNN's blocked layout; otherwise every chunk's product reorders
        # the keys and values again (8% of a frame at 1024 px).
        k = torch.ops.mkldnn._reorder_linear_weight(k, step)
        v_t = torch.ops.mkldnn._reorder_linear_weight(v_t, step)
    for start in range(0, q.shape[0], step):
        rows = slice(start, start + step)
        scores = torch.ops.mkldnn._linear_pointwise(q[rows] * scale, k, None, "none", [], "")
        probabilities = torch.softmax(scores, dim=-1)
        out[rows] = torch.ops.mkldnn._linear_pointwise(probabilities, v_t, None, "none", [], "")


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """Scaled dot-product attention without masking or dropout.

    Args:
        q: ``(..., Lq, d)`` queries.
        k: ``(..., Lk, d)`` keys (same leading dimensions as ``q``).
        v: ``(..., Lk, dv)`` values; ``dv`` may differ from ``d``.
        scale: score scale; ``1 / sqrt(d)`` by default.

    Returns:
        ``(..., Lq, dv)``.
    """
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    lead = q.shape[:-2]
    small = q.shape[-2] * k.shape[-2] < _SMALL_ATTENTION_ELEMENTS
    if not use_fast_path(q) or small or k.shape[:-2] != lead or v.shape[:-2] != lead:
        return F.scaled_dot_product_attention(q, k, v, scale=scale)
    batch = math.prod(lead)
    q3 = q.reshape(batch, *q.shape[-2:])
    k3 = k.reshape(batch, *k.shape[-2:])
    v3 = v.reshape(batch, *v.shape[-2:])
    out = q.new_empty(batch, q.shape[-2], v.shape[-1])
    for index in range(batch):
        # oneDNN takes the second operand as a dense (out_features, in_features) matrix: strided
        # keys (one head of a packed projection) are far slower, so both are made dense here.
        _attend_2d(q3[index], k3[index].contiguous(), v3[index].t().contiguous(), scale, out[index])
    return out.view(*lead, q.shape[-2], v.shape[-1])
