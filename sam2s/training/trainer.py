"""The SAM2S trainer and the ``sam2s train`` command.

One :class:`Trainer` runs in every process (``torchrun`` starts several; see
:mod:`sam2s.training.distributed`). Each step it

1. takes its share of the step's global batch from the sample stream
   (:class:`~sam2s.training.sampling.DistributedClipSampler`) and loads the clips;
2. computes the clips' losses (:class:`~sam2s.training.tracking.ClipTrainingModule`) under
   bfloat16 autocast on CUDA, and back-propagates (DDP averages gradients across processes);
3. clips the global gradient norm and steps AdamW (layer-wise learning-rate decay in the image
   encoder) and the warm-up + cosine schedule.

Rank 0 writes ``train.log`` (what happened, in words), ``metrics.jsonl`` (one JSON line per
logged step), TensorBoard events under ``tensorboard/`` and checkpoints under ``checkpoints/``:
``last.pt`` plus numbered ones, each written to a temporary file and renamed. A checkpoint holds
the model, optimizer, scheduler, every random-generator state and the sampler position (the
step), so ``--resume`` continues bit-exactly: the sample stream is a pure function of
``(seed, sample index)`` and each clip seeds its own prompt draws and dropout. At the end the
weights are exported for inference as ``model_final.pt`` (loadable by
:func:`sam2s.build_model`).

Example::

    sam2s train --model sam2s_demo --videos data/train --volumes data/train/volumes \\
        --steps 2000 --batch-size 2 --lr 3e-4 --out-dir runs/demo
    torchrun --nproc_per_node 2 -m sam2s.cli train --config train.yaml   # two processes
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from monai.utils import optional_import
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from sam2s.checkpoint import build_model, save_checkpoint
from sam2s.data.datasets import ImageDataset, VideoDataset, VolumeDataset
from sam2s.semantics.vocabulary_bank import VocabularyBank
from sam2s.training.clips import ClipLoader
from sam2s.training.config import TrainConfig, load_train_config
from sam2s.training.distributed import DistributedContext, init_distributed
from sam2s.training.sampling import (
    ClipSampler,
    DistributedClipSampler,
    index_images,
    index_videos,
    index_volumes,
)
from sam2s.training.tracking import LOSS_TERMS, ClipTrainingModule
from sam2s.writers.base import write_atomically

SummaryWriter, _HAS_TENSORBOARD = optional_import("torch.utils.tensorboard", name="SummaryWriter")

__all__ = [
    "CHECKPOINT_FORMAT",
    "StepResult",
    "Trainer",
    "WarmupCosine",
    "add_arguments",
    "build_optimizer",
    "layer_decay_scale",
    "run",
]

logger = logging.getLogger("sam2s.training")

CHECKPOINT_FORMAT = "sam2s-train/1"
# Parameters that are embeddings or offsets rather than weights: no weight decay (as SAM 2).
_NO_DECAY_NAMES = ("pos_embed", "tpos_enc", "no_mem_", "no_obj_", "class_token")


# ----------------------------------------------------------------------------------------------
# Optimiser and schedule
# ----------------------------------------------------------------------------------------------


def layer_decay_scale(name: str, num_blocks: int, layer_decay: float) -> float | None:
    """Learning-rate multiplier of an image-encoder parameter; ``None`` outside the image encoder.

    The patch embedding and position embeddings count as layer 0, trunk block ``i`` as layer
    ``i + 1`` and the neck as layer ``num_blocks + 1``; layer ``k`` gets
    ``layer_decay ** (num_blocks + 1 - k)`` (SAM 2's rule), so the neck trains at the full image-
    encoder rate and each block below it at ``layer_decay`` times the rate of the block above.
    """
    if not name.startswith("image_encoder."):
        return None
    if ".patch_embed" in name or ".pos_embed" in name:
        layer = 0
    elif ".trunk.blocks." in name:
        layer = int(name.split(".trunk.blocks.")[1].split(".")[0]) + 1
    else:
        layer = num_blocks + 1
    return layer_decay ** (num_blocks + 1 - layer)


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with one parameter group per (learning rate, weight decay) pair.

    Group learning rates are the peak rates; :class:`WarmupCosine` scales all of them.
    """
    optim = config.optim
    trunk = getattr(getattr(model, "image_encoder", None), "trunk", None)
    num_blocks = len(trunk.blocks) if trunk is not None and hasattr(trunk, "blocks") else 0
    groups: dict[tuple[float, float], dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        scale = layer_decay_scale(name, num_blocks, optim.layer_decay)
        lr = optim.lr if scale is None else optim.image_encoder_lr * scale
        no_decay = param.ndim <= 1 or any(key in name for key in _NO_DECAY_NAMES)
        decay = 0.0 if no_decay else optim.weight_decay
        group = groups.setdefault((lr, decay), {"params": [], "lr": lr, "weight_decay": decay, "names": []})
        group["params"].append(param)
        group["names"].append(name)
    param_groups = [
        {
            "params": g["params"],
            "lr": g["lr"],
            "weight_decay": g["weight_decay"],
            "num_params": len(g["names"]),
        }
        for _, g in sorted(groups.items(), key=lambda item: (-item[0][0], item[0][1]))
    ]
    return torch.optim.AdamW(param_groups, betas=tuple(optim.betas))


class WarmupCosine:
    """Learning-rate factor: linear warm-up to 1, then cosine decay to ``min_ratio`` at ``total_steps``.

    A callable object rather than a closure, so ``LambdaLR.state_dict()`` saves its settings.
    """

    def __init__(self, total_steps: int, warmup_steps: int = 0, min_ratio: float = 0.1) -> None:
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.min_ratio = float(min_ratio)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        span = max(self.total_steps - self.warmup_steps, 1)
        progress = min(max(step - self.warmup_steps, 0) / span, 1.0)
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


# ----------------------------------------------------------------------------------------------
# Random-generator state (plain data, so checkpoints load with weights_only=True)
# ----------------------------------------------------------------------------------------------


def _rng_state(device: torch.device) -> dict[str, Any]:
    kind, keys, position, has_gauss, cached = np.random.get_state()
    version, python_state, gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "python": {"version": version, "state": list(python_state), "gauss": gauss},
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["kind"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["position"],
            numpy_state["has_gauss"],
            numpy_state["cached"],
        )
    )
    python = state["python"]
    random.setstate((python["version"], tuple(python["state"]), python["gauss"]))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


# ----------------------------------------------------------------------------------------------
# Trainer
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepResult:
    """What one optimisation step did (losses averaged over the global batch)."""

    step: int
    losses: dict[str, float]
    grad_norm: float
    lr: float
    seconds: float


class Trainer:
    """Trains a SAM2S (or SAM 2.1) model; see the module docstring.

    Args:
        config: the run.
        context: this process's place in a distributed run (default: a single process).
        vocabulary: class bank for TSL; overrides ``config.vocabulary``.
        progress: show a tqdm progress bar (rank 0 only).
    """

    def __init__(
        self,
        config: TrainConfig,
        context: DistributedContext | None = None,
        vocabulary: VocabularyBank | None = None,
        progress: bool = True,
    ) -> None:
        self.config = config
        self.context = context or DistributedContext()
        self.progress = progress
        self.device = self.context.device
        self.out_dir = Path(config.out_dir)
        self.checkpoint_dir = self.out_dir / "checkpoints"
        if config.threads:
            torch.set_num_threads(int(config.threads))
        if self.context.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self._attach_log_file()

        torch.manual_seed(config.seed)  # the same initial weights on every rank
        self.model = build_model(
            config.model, checkpoint=config.init_checkpoint, device=self.device, **config.model_overrides
        ).train()
        bank = vocabulary if vocabulary is not None else self._load_vocabulary()
        if bank is not None and getattr(self.model, "semantic_head", None) is not None:
            self.model.set_vocabulary(bank)
        self.vocabulary = getattr(self.model, "vocabulary", None)
        self.module = ClipTrainingModule(
            self.model,
            config.prompts,
            None if self.vocabulary is None else self.vocabulary.embeddings.to(self.device),
            () if self.vocabulary is None else self.vocabulary.class_names,
        )
        if self.context.is_distributed:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            # Some parameters sit out some steps (mask_downsample without mask prompts; SAM 2's
            # maskmem_tpos_enc under DiveMem embeddings), so DDP must look for unused ones.
            self.engine: nn.Module = DistributedDataParallel(
                self.module, device_ids=device_ids, find_unused_parameters=True, broadcast_buffers=False
            )
        else:
            self.engine = self.module
        self.optimizer = build_optimizer(self.model, config)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, WarmupCosine(config.steps, config.optim.warmup_steps, config.optim.min_lr_ratio)
        )
        self.step = 0
        self._build_data()
        self._writer = None

    # ------------------------------------------------------------------ set-up
    def _attach_log_file(self) -> None:
        handler = logging.FileHandler(self.out_dir / "train.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
        handler.set_name(f"sam2s-train:{self.out_dir}")
        # One run's file only: a trainer made after another in the same process (the demo
        # script's phases) must not keep writing into the earlier run's log.
        for existing in list(logger.handlers):
            if (existing.get_name() or "").startswith("sam2s-train:"):
                logger.removeHandler(existing)
                existing.close()
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        self._log_handler = handler

    def _load_vocabulary(self) -> VocabularyBank | None:
        source = self.config.vocabulary
        if source is None:
            return None
        if source == "minilm":
            from sam2s.semantics.text_encoders import (
                MiniLMTextEncoder,
                build_vocabulary_bank,
                default_class_names,
            )

            return build_vocabulary_bank(MiniLMTextEncoder(), default_class_names())
        return VocabularyBank.load(source)

    def _build_data(self) -> None:
        data, sampling = self.config.data, self.config.sampling
        videos = [VideoDataset(root) for root in data.videos]
        volumes = [VolumeDataset(root) for root in data.volumes]
        images = [ImageDataset(root) for root in data.images]
        show = self.progress and self.context.is_main
        sequences = index_videos(videos, progress=show) + index_volumes(
            volumes, sampling.volume_axis, progress=show
        )
        image_entries = index_images(images)
        self.sampler = ClipSampler(sequences, image_entries, sampling, seed=self.config.seed)
        self.batches = DistributedClipSampler(
            self.sampler, self.config.batch_size, self.context.rank, self.context.world_size
        )
        window = tuple(data.volume_window) if data.volume_window is not None else None
        self.loader = ClipLoader(videos, volumes, images, self.model.image_size, sampling.volume_axis, window)
        self.data_summary = {
            "videos": len(self.sampler.videos),
            "volumes": len(self.sampler.volumes),
            "images": len(self.sampler.images),
        }

    # ------------------------------------------------------------------ one step
    def forward_backward(self, step: int) -> dict[str, float]:
        """Loss and gradients of this process's share of ``step``'s batch.

        Leaves the gradients (averaged over processes by DDP) in the parameters' ``.grad``.

        Returns:
            This process's mean loss terms.
        """
        clips = [self.loader.load(request).to(self.device) for request in self.batches.batch(step)]
        with self._autocast():
            losses = self.engine(clips)
        losses["total"].backward()
        return {name: float(losses[name].detach()) for name in LOSS_TERMS}

    def optimizer_step(self) -> float:
        """Clip gradients, step the optimiser and the schedule; returns the gradient norm before clipping."""
        params = [p for p in self.model.parameters() if p.grad is not None]
        clip = self.config.optim.grad_clip
        if clip > 0:
            norm = float(torch.nn.utils.clip_grad_norm_(params, clip))
        else:
            norm = (
                float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params])))
                if params
                else 0.0
            )
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norm

    def train_step(self) -> StepResult:
        """Run step ``self.step`` and advance to the next."""
        start = time.perf_counter()
        lr = self.scheduler.get_last_lr()[0]
        losses = self.forward_backward(self.step)
        norm = self.optimizer_step()
        result = StepResult(self.step, self.context.mean(losses), norm, lr, time.perf_counter() - start)
        self.step += 1
        return result

    # ------------------------------------------------------------------ the loop
    def train(self, resume: str | Path | None = None) -> Path | None:
        """Train to ``config.steps``; returns the exported model path (rank 0) or ``None``.

        Args:
            resume: a training checkpoint, or ``"auto"`` for ``out_dir/checkpoints/last.pt`` when
                it exists.
        """
        cfg = self.config
        if resume is not None:
            path = self.checkpoint_dir / "last.pt" if str(resume) == "auto" else Path(resume)
            if path.is_file():
                self.load_checkpoint(path)
            elif str(resume) != "auto":
                raise FileNotFoundError(f"checkpoint to resume from {str(path)!r} does not exist")
        self._log_start()
        main = self.context.is_main
        bar = tqdm(
            total=cfg.steps,
            initial=self.step,
            desc="train",
            disable=not (main and self.progress),
            dynamic_ncols=True,
        )
        window: list[StepResult] = []
        run_start = time.perf_counter()
        while self.step < cfg.steps:
            result = self.train_step()
            window.append(result)
            bar.update(1)
            bar.set_postfix(loss=f"{result.losses['total']:.3f}", lr=f"{result.lr:.2e}")
            if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                self.log_steps(window)
                window = []
            if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                self.save_checkpoint()
        bar.close()
        exported = None
        if main:
            exported = self.export_model(self.out_dir / "model_final.pt")
            logger.info(
                "finished %d steps in %.1f min; inference weights: %s",
                cfg.steps,
                (time.perf_counter() - run_start) / 60,
                exported,
            )
            if self._writer is not None:
                self._writer.close()
        self.context.barrier()
        return exported

    # ------------------------------------------------------------------ logging
    def _log_start(self) -> None:
        if not self.context.is_main:
            return
        cfg = self.config
        params = sum(p.numel() for p in self.model.parameters())
        logger.info(
            "training %s (%.2fM parameters, ARL %s, TSL %s, DiveMem %s) on %s, %d process(es), %s backend",
            self.model.config.name,
            params / 1e6,
            "on" if self.model.config.arl else "off",
            "on" if self.module.use_tsl else "off",
            "on" if self.model.config.divemem.enabled else "off",
            self.device,
            self.context.world_size,
            self.context.backend or "no",
        )
        logger.info("data: %(videos)d videos, %(volumes)d volumes, %(images)d images", self.data_summary)
        logger.info(
            "steps %d, global batch %d clips, seed %d; %s",
            cfg.steps,
            cfg.batch_size,
            cfg.seed,
            "starting from scratch" if self.step == 0 else f"continuing at step {self.step}",
        )
        logger.info("config: %s", json.dumps(cfg.to_dict(), sort_keys=True))
        if _HAS_TENSORBOARD:
            # purge_step drops events a crashed run wrote after its last checkpoint
            self._writer = SummaryWriter(str(self.out_dir / "tensorboard"), purge_step=self.step or None)
        else:
            logger.info("tensorboard is not installed: no TensorBoard events (pip install tensorboard)")

    def log_steps(self, window: list[StepResult]) -> None:
        """Log the mean of ``window``'s steps: a train.log line, a metrics.jsonl line, TensorBoard points."""
        if not window or not self.context.is_main:
            return
        last = window[-1]
        means = {name: float(np.mean([r.losses[name] for r in window])) for name in LOSS_TERMS}
        seconds = float(np.mean([r.seconds for r in window]))
        grad = float(np.mean([r.grad_norm for r in window]))
        logger.info(
            "step %d/%d loss %.4f (mask %.4f dice %.4f iou %.4f occlusion %.4f tsl %.4f) lr %.2e grad-norm %.3f %.2f s/step",
            self.step,
            self.config.steps,
            means["total"],
            means["mask"],
            means["dice"],
            means["iou"],
            means["occlusion"],
            means["tsl"],
            last.lr,
            grad,
            seconds,
        )
        record = {"step": self.step, "lr": last.lr, "grad_norm": grad, "seconds_per_step": seconds, **means}
        with open(self.out_dir / "metrics.jsonl", "a") as handle:
            handle.write(json.dumps(record) + "\n")
        if self._writer is not None:
            for name, value in means.items():
                self._writer.add_scalar(f"loss/{name}", value, self.step)
            self._writer.add_scalar("train/lr", last.lr, self.step)
            self._writer.add_scalar("train/grad_norm", grad, self.step)
            self._writer.add_scalar("train/seconds_per_step", seconds, self.step)
            self._writer.flush()

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly (plain data, ``weights_only``-loadable)."""
        state = {
            "format": CHECKPOINT_FORMAT,
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": self.step,
            "samples_seen": self.step * self.config.batch_size,
            "rng": _rng_state(self.device),
            "train_config": self.config.to_dict(),
            "model_config": self.model.config.to_dict(),
        }
        if self.vocabulary is not None:
            state["vocabulary"] = self.vocabulary.to_state_dict()
        return state

    def save_checkpoint(self) -> Path | None:
        """Write ``checkpoints/last.pt`` and ``checkpoints/step_XXXXXXX.pt`` (rank 0; atomically)."""
        path = None
        if self.context.is_main:
            state = self.state_dict()
            numbered = self.checkpoint_dir / f"step_{self.step:07d}.pt"
            for target in (numbered, self.checkpoint_dir / "last.pt"):
                write_atomically(target, lambda handle: torch.save(state, handle))
            kept = sorted(self.checkpoint_dir.glob("step_*.pt"))
            for old in kept[: max(len(kept) - self.config.keep_checkpoints, 0)]:
                old.unlink(missing_ok=True)
            logger.info("step %d: checkpoint written to %s", self.step, numbered)
            path = numbered
        self.context.barrier()
        return path

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore a :meth:`state_dict` written by a run with the same model."""
        path = Path(path)
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path} is not a training checkpoint (format {CHECKPOINT_FORMAT!r})")
        if state["model_config"] != self.model.config.to_dict():
            raise ValueError(
                f"{path} was written for model config {state['model_config'].get('name')!r} with other "
                f"settings than this run's {self.model.config.name!r}; resume with the same model and overrides"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        schedule = self.scheduler.lr_lambdas[0]
        if isinstance(schedule, WarmupCosine) and schedule.total_steps != self.config.steps:
            # a run resumed with another --steps: the cosine now ends at the new last step
            if self.context.is_main:
                logger.info(
                    "schedule length changed from %d to %d steps", schedule.total_steps, self.config.steps
                )
            schedule.total_steps = self.config.steps
            self.scheduler.base_lrs = [group["initial_lr"] for group in self.optimizer.param_groups]
            for group, lr in zip(self.optimizer.param_groups, self.scheduler.base_lrs):
                group["lr"] = lr * schedule(self.scheduler.last_epoch)
            self.scheduler._last_lr = [group["lr"] for group in self.optimizer.param_groups]
        self.step = int(state["step"])
        _set_rng_state(state["rng"], self.device)
        if self.context.is_main:
            logger.info(
                "resumed from %s at step %d (%d samples seen)", path, self.step, state["samples_seen"]
            )
            self._drop_metrics_after(self.step)

    def _drop_metrics_after(self, step: int) -> None:
        """Forget ``metrics.jsonl`` lines of steps an interrupted run made after its last checkpoint."""
        path = self.out_dir / "metrics.jsonl"
        if not path.is_file():
            return
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        text = "".join(line + "\n" for line in lines if json.loads(line)["step"] <= step)
        write_atomically(path, lambda handle: handle.write(text.encode()))

    def export_model(self, path: str | Path) -> Path:
        """Write the weights for inference (``{"model", "config", "vocabulary", "training"}``)."""
        training = {"steps": self.step, "seed": self.config.seed, "batch_size": self.config.batch_size}
        return save_checkpoint(self.model, path, training=training)

    def _autocast(self):
        if self.config.amp and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()


# ----------------------------------------------------------------------------------------------
# Command line: `sam2s train`
# ----------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``sam2s train`` to ``parser`` (options override the ``--config`` file)."""
    parser.add_argument("--config", type=Path, help="training YAML (see sam2s.training.config)")
    parser.add_argument("--model", help="model config name or YAML (default sam2s_hiera_t)")
    parser.add_argument("--init-checkpoint", help="weights to start from (e.g. from `sam2s convert`)")
    parser.add_argument(
        "--vocabulary", help="class bank .pt for TSL, or 'minilm' to encode the SAM2S vocabulary"
    )
    parser.add_argument("--videos", nargs="+", help="video dataset roots (DAVIS / SA-V layout)")
    parser.add_argument("--volumes", nargs="+", help="volume dataset roots (images/ + labels/)")
    parser.add_argument("--images", nargs="+", help="image dataset roots (images/ + masks/)")
    parser.add_argument("--out-dir", help="run folder (checkpoints, logs, TensorBoard)")
    parser.add_argument("--steps", type=int, help="optimisation steps")
    parser.add_argument("--batch-size", type=int, help="clips per step over all processes")
    parser.add_argument("--lr", type=float, help="learning rate (outside the image encoder)")
    parser.add_argument("--image-encoder-lr", type=float, help="peak learning rate of the image encoder")
    parser.add_argument("--seed", type=int, help="seed of the weights and the sample stream")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], help="training device (default auto)")
    parser.add_argument("--no-amp", action="store_true", help="no bfloat16 autocast on CUDA")
    parser.add_argument("--threads", type=int, help="CPU threads per process")
    parser.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        help="continue from a checkpoint (no value: OUT_DIR/checkpoints/last.pt)",
    )
    parser.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="dotted overrides, e.g. sampling.hybrid=false optim.warmup_steps=100",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The run's configuration: ``--config`` file, then the explicit options, then ``--set``."""
    config = load_train_config(args.config) if args.config else TrainConfig()
    changes: dict[str, Any] = {}
    simple = {
        "model": "model",
        "init_checkpoint": "init_checkpoint",
        "vocabulary": "vocabulary",
        "out_dir": "out_dir",
        "steps": "steps",
        "batch_size": "batch_size",
        "seed": "seed",
        "device": "device",
        "threads": "threads",
        "lr": "optim.lr",
        "image_encoder_lr": "optim.image_encoder_lr",
        "videos": "data.videos",
        "volumes": "data.volumes",
        "images": "data.images",
    }
    for attribute, key in simple.items():
        value = getattr(args, attribute, None)
        if value is not None:
            changes[key] = [str(v) for v in value] if isinstance(value, list) else value
    if args.no_amp:
        changes["amp"] = False
    for item in args.set:
        if "=" not in item:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        key, text = item.split("=", 1)
        changes[key.strip()] = yaml.safe_load(text)
    try:
        return config.replace(**changes) if changes else config
    except KeyError as err:
        raise ValueError(str(err.args[0])) from None


def run(args: argparse.Namespace) -> int:
    """Run ``sam2s train`` with parsed ``args``; returns the exit status."""
    config = config_from_args(args)
    context = init_distributed(config.device)
    try:
        trainer = Trainer(config, context, progress=not args.no_progress)
        exported = trainer.train(resume=args.resume)
        if exported is not None:
            print(f"trained {config.steps} steps; weights: {exported}")
    finally:
        context.shutdown()
    return 0
