"""Small building blocks shared by the image encoder, the mask decoder and the memory modules.

Parameter names (``layers.N``, ``weight``, ``bias``) follow the official SAM 2.1 checkpoints so
that those checkpoints load with no missing or unexpected keys.
"""

from __future__ import annotations

import torch
from torch import nn

from sam2s.modeling.kernels import Linear, linear

__all__ = ["MLP", "DropPath", "LayerNorm2d", "activation_layer"]


def activation_layer(name: str) -> type[nn.Module]:
    """Map a config name (``"relu"``, ``"gelu"``) to its activation class."""
    table = {"relu": nn.ReLU, "gelu": nn.GELU}
    if name not in table:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(table)}")
    return table[name]


class MLP(nn.Module):
    """A stack of ``num_layers`` linear layers with an activation between them.

    Args:
        input_dim: size of the last axis of the input.
        hidden_dim: width of every hidden layer.
        output_dim: size of the last axis of the output.
        num_layers: number of linear layers (the activation is not applied after the last one).
        activation: activation class placed between layers.
        sigmoid_output: squash the output with a sigmoid (used by the IoU head).

    Shapes:
        ``(..., input_dim) -> (..., output_dim)``.
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int,
        output_dim: int,
        num_layers: int,
        activation: type[nn.Module] = nn.ReLU,
        sigmoid_output: bool = False,
    ) -> None:
        super().__init__()
        widths_in = [input_dim] + [hidden_dim] * (num_layers - 1)
        widths_out = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(Linear(i, o) for i, o in zip(widths_in, widths_out))
        self.act = activation()
        self.sigmoid_output = sigmoid_output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.layers) - 1
        fused = _fusable_activation(self.act)
        for index, layer in enumerate(self.layers):
            if index < last and fused is not None:
                x = linear(x, layer.weight, layer.bias, activation=fused)
            else:
                x = layer(x)
                if index < last:
                    x = self.act(x)
        return torch.sigmoid(x) if self.sigmoid_output else x


def _fusable_activation(act: nn.Module) -> str | None:
    """The :func:`~sam2s.modeling.kernels.linear` name of an activation it can fuse, else ``None``."""
    if type(act) is nn.ReLU:
        return "relu"
    if type(act) is nn.GELU and act.approximate == "none":
        return "gelu"
    return None


class LayerNorm2d(nn.Module):
    """Layer norm over the channel axis of a ``(B, C, H, W)`` tensor."""

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class DropPath(nn.Module):
    """Stochastic depth: drop a whole residual branch per sample while training."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep
