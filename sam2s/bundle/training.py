"""The trainer that ``bundle/configs/train.json`` (and ``multi_gpu_train.json``) instantiate.

The bundle's training runs :class:`sam2s.training.Trainer`, the engine behind ``sam2s train``,
so the two give the same run for the same settings. The config builds the typed sections of a
:class:`~sam2s.training.TrainConfig` and maps them onto MONAI's training properties:

=========================  ========================================================================
config id                  object
=========================  ========================================================================
``train#dataset``          :class:`~sam2s.training.DataConfig`: the dataset folders clips are drawn from
``train#sampling``         :class:`~sam2s.training.SamplingConfig`: DiveMem hybrid clips, image mix
``train#inferer``          :class:`~sam2s.training.PromptSimulationConfig`: how the model is run on
                           each clip (first-frame prompt mix, correction clicks)
``train#optimizer``        :class:`~sam2s.training.OptimConfig`: AdamW, layer decay, schedule
``train#config``           the whole :class:`~sam2s.training.TrainConfig`
``train#trainer``          :class:`TrainingWorkflow`
=========================  ========================================================================

Training draws clips from an endless seeded stream, so there are no natural epochs: an epoch
here is ``steps_per_epoch`` optimisation steps, and the run lasts ``max_epochs`` of them.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["TrainingWorkflow"]


class TrainingWorkflow:
    """Runs :class:`sam2s.training.Trainer` in this process (under ``torchrun``: in each process).

    Args:
        config: the run (:class:`~sam2s.training.TrainConfig`); its ``steps`` are replaced by
            ``max_epochs * steps_per_epoch``.
        max_epochs: epochs to train.
        steps_per_epoch: optimisation steps per epoch.
        resume: continue from a training checkpoint, or ``"auto"`` for the run folder's
            ``checkpoints/last.pt`` when it exists; ``None`` starts afresh.
        require_torchrun: refuse to run outside ``torchrun`` (multi_gpu_train.json sets it, so a
            multi-GPU config never trains on one device by mistake).
        progress: show a progress bar (rank 0 only).
    """

    def __init__(
        self,
        config,
        max_epochs: int = 1,
        steps_per_epoch: int = 100,
        resume: str | Path | None = None,
        require_torchrun: bool = False,
        progress: bool = True,
    ) -> None:
        if int(max_epochs) < 1 or int(steps_per_epoch) < 1:
            raise ValueError(f"max_epochs and steps_per_epoch must be >= 1, got {max_epochs} and {steps_per_epoch}")
        self.max_epochs = int(max_epochs)
        self.steps_per_epoch = int(steps_per_epoch)
        self.config = config.replace(steps=self.max_epochs * self.steps_per_epoch)
        self.resume = resume
        self.require_torchrun = require_torchrun
        self.progress = progress

    def run(self) -> Path | None:
        """Train; returns the exported inference weights (``out_dir/model_final.pt``) on rank 0."""
        from sam2s.training import Trainer, init_distributed

        if self.require_torchrun and "WORLD_SIZE" not in os.environ:
            raise RuntimeError(
                "multi_gpu_train.json runs one process per GPU: launch it with torchrun, e.g. "
                "torchrun --nproc_per_node 2 -m monai.bundle run --config_file "
                "\"['bundle/configs/train.json','bundle/configs/multi_gpu_train.json']\""
            )
        context = init_distributed(str(self.config.device))
        try:
            trainer = Trainer(self.config, context, progress=self.progress)
            exported = trainer.train(resume=self.resume)
            if exported is not None:
                print(f"trained {self.config.steps} steps ({self.max_epochs} x {self.steps_per_epoch}); "
                      f"weights: {exported}")
            return exported
        finally:
            context.shutdown()
