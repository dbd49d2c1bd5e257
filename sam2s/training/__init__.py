"""Training SAM2S: DiveMem hybrid clip sampling, SAM 2's prompt simulation, the SAM2S losses,
AdamW with layer-wise decay, single- and multi-process (torchrun / DDP) runs, exact resume.

Entry points: :class:`~sam2s.training.trainer.Trainer` with a
:class:`~sam2s.training.config.TrainConfig`, or the ``sam2s train`` command
(:mod:`sam2s.training.trainer`).
"""

from sam2s.training.config import DataConfig, OptimConfig, TrainConfig, load_train_config
from sam2s.training.distributed import DistributedContext, init_distributed
from sam2s.training.prompts import PromptKind, PromptSimulationConfig
from sam2s.training.sampling import ClipRequest, ClipSampler, DistributedClipSampler, SamplingConfig
from sam2s.training.trainer import Trainer

__all__ = [
    "ClipRequest",
    "ClipSampler",
    "DataConfig",
    "DistributedClipSampler",
    "DistributedContext",
    "OptimConfig",
    "PromptKind",
    "PromptSimulationConfig",
    "SamplingConfig",
    "TrainConfig",
    "Trainer",
    "init_distributed",
    "load_train_config",
]
