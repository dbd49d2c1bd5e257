"""Training configuration: typed sections read from a YAML file and/or ``sam2s train`` options.

A YAML file mirrors :class:`TrainConfig`::

    model: sam2s_hiera_t              # config name or .yaml path
    init_checkpoint: sam2s_hiera_t.pt # e.g. from `sam2s convert`; null trains from scratch
    out_dir: runs/sam2s_t
    steps: 30000
    batch_size: 8                     # global batch (clips per step over all processes)
    data: {videos: [data/train], volumes: [], images: [data/images]}
    sampling: {num_frames: 8, hybrid: true, image_fraction: 0.2}
    prompts: {prob_mask: 0.5, prob_box: 0.25, correction_clicks: 7}
    optim: {lr: 1.0e-5, image_encoder_lr: 1.0e-5, layer_decay: 0.9, weight_decay: 0.1}

Paper values: Hiera-B+ at 512 px, 30 epochs, lr 1e-5, 4 GPUs; loss 20 ARL + IoU + dice + occlusion
+ 0.1 TSL (ARL and TSL follow the model config's ``arl`` and ``semantic.enabled``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sam2s.training.prompts import PromptSimulationConfig
from sam2s.training.sampling import SamplingConfig

__all__ = ["DataConfig", "OptimConfig", "TrainConfig", "load_train_config"]


@dataclass
class DataConfig:
    """Dataset folders (see :mod:`sam2s.data.datasets` for the layouts).

    Attributes:
        videos: DAVIS / SA-V layout roots.
        volumes: volume roots (``images/`` + ``labels/``).
        images: image roots (``images/`` + ``masks/``).
        volume_window: intensity window of the volumes; ``None`` uses the 0.5-99.5 percentiles.
    """

    videos: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    volume_window: list[float] | None = None


@dataclass
class OptimConfig:
    """AdamW with layer-wise learning-rate decay in the image encoder, warm-up and cosine decay.

    Attributes:
        lr: learning rate of everything but the image encoder.
        image_encoder_lr: peak learning rate of the image encoder's last trunk block and neck;
            block ``i`` of ``L`` gets ``image_encoder_lr * layer_decay ** (L - i)``.
        layer_decay: per-block decay towards the input (1.0 = no decay).
        weight_decay: AdamW weight decay (not applied to biases, norms and embeddings).
        betas: AdamW betas.
        warmup_steps: linear warm-up from 0.
        min_lr_ratio: the cosine schedule ends at ``min_lr_ratio`` × the peak.
        grad_clip: maximum global gradient norm (0 = no clipping).
    """

    lr: float = 1e-5
    image_encoder_lr: float = 1e-5
    layer_decay: float = 0.9
    weight_decay: float = 0.1
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup_steps: int = 0
    min_lr_ratio: float = 0.1
    grad_clip: float = 0.1


@dataclass
class TrainConfig:
    """A whole training run.

    Attributes:
        model: model config name or YAML path.
        model_overrides: dotted model-config overrides (``{"memory_attention.dropout": 0.0}``).
        init_checkpoint: weights to start from (SAM 2.1 / SAM2S checkpoint); ``None`` = random.
        vocabulary: class bank for TSL: a saved :class:`~sam2s.semantics.VocabularyBank` path, or
            ``"minilm"`` to encode the SAM2S vocabulary with MiniLM; ``None`` keeps the bank of the
            initial checkpoint (TSL is off when the model has no bank).
        out_dir: run folder: ``checkpoints/``, ``tensorboard/``, ``train.log``, ``model_final.pt``.
        steps: optimisation steps.
        batch_size: clips per step over all processes.
        seed: seeds the initial weights and the sample stream.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        amp: bfloat16 autocast on CUDA (ignored on CPU).
        log_every: steps between log lines and TensorBoard points.
        checkpoint_every: steps between checkpoints (the last step always writes one).
        keep_checkpoints: numbered checkpoints kept besides ``last.pt``.
        threads: CPU threads per process (``None``: PyTorch's default).
    """

    model: str = "sam2s_hiera_t"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    init_checkpoint: str | None = None
    vocabulary: str | None = None
    out_dir: str = "runs/sam2s"
    steps: int = 1000
    batch_size: int = 1
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    log_every: int = 10
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    threads: int | None = None
    data: DataConfig = field(default_factory=DataConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    prompts: PromptSimulationConfig = field(default_factory=PromptSimulationConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps and batch_size must be >= 1, got {self.steps} and {self.batch_size}")
        if self.log_every < 1 or self.checkpoint_every < 1:
            raise ValueError("log_every and checkpoint_every must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        return _build(cls, data, "training config")

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with dotted changes, e.g. ``replace(**{"optim.lr": 1e-4})``."""
        data = self.to_dict()
        for dotted, value in changes.items():
            target = data
            *parents, leaf = dotted.split(".")
            for key in parents:
                if not isinstance(target.get(key), dict):
                    raise KeyError(f"unknown training config section {key!r} in {dotted!r}")
                target = target[key]
            if leaf not in target:
                raise KeyError(f"unknown training config option {dotted!r}")
            target[leaf] = value
        return TrainConfig.from_dict(data)


_SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "sampling": SamplingConfig,
    "prompts": PromptSimulationConfig,
    "optim": OptimConfig,
}


def _build(cls: type, data: dict[str, Any], context: str) -> Any:
    if not isinstance(data, dict):
        raise TypeError(f"{context}: expected a mapping, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{context}: unknown option(s) {unknown}; known options are {sorted(known)}")
    kwargs = {}
    for name, value in data.items():
        section = _SECTIONS.get(name) if cls is TrainConfig else None
        kwargs[name] = _build(section, value, f"{context}.{name}") if section is not None else value
    return cls(**kwargs)


def load_train_config(path: str | Path) -> TrainConfig:
    """Read a training YAML file (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training config {str(path)!r} does not exist")
    with open(path) as handle:
        data = yaml.safe_load(handle) or {}
    if not isinstance(data, dict):  # a bad file is a user error (ValueError), as every other config error
        raise ValueError(  # noqa: TRY004
            f"training config {str(path)!r} must hold a mapping of options, not a {type(data).__name__}"
        )
    return TrainConfig.from_dict(data)
