"""torch.distributed set-up for training: one process per GPU (or several CPU processes).

Launch with ``torchrun`` (which sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT``)::

    torchrun --nproc_per_node 4 -m sam2s.cli train --config train.yaml            # one node
    torchrun --nnodes 2 --node_rank 0 --nproc_per_node 8 \\
        --master_addr HOST --master_port 29500 -m sam2s.cli train --config train.yaml  # node 0 of 2

Without those variables the run is a single process. The backend is NCCL when the process
drives a CUDA device and gloo on CPU. Only rank 0 logs, writes TensorBoard events and
checkpoints; every rank computes its share of each global batch
(:class:`~sam2s.training.sampling.DistributedClipSampler`) and DDP averages the gradients.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

__all__ = ["DistributedContext", "init_distributed"]


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands in the run.

    Attributes:
        rank: global rank.
        world_size: number of processes.
        local_rank: rank on this node (selects the GPU).
        device: this process's device.
        backend: ``"nccl"``, ``"gloo"`` or ``None`` for a single process.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that logs and writes checkpoints."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.is_distributed:
            dist.barrier()

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """Average scalars over processes (for logging)."""
        if not self.is_distributed or not values:
            return dict(values)
        keys = sorted(values)
        tensor = torch.tensor(
            [float(values[k]) for k in keys], dtype=torch.float64, device=self._reduce_device()
        )
        dist.all_reduce(tensor)
        tensor /= self.world_size
        return dict(zip(keys, tensor.tolist()))

    def broadcast_flag(self, flag: bool) -> bool:
        """Rank 0's value of ``flag`` on every process."""
        if not self.is_distributed:
            return flag
        tensor = torch.tensor([int(flag)], device=self._reduce_device())
        dist.broadcast(tensor, src=0)
        return bool(tensor.item())

    def shutdown(self) -> None:
        if self.is_distributed and dist.is_initialized():
            dist.destroy_process_group()

    def _reduce_device(self) -> torch.device:
        return self.device if self.backend == "nccl" else torch.device("cpu")


def init_distributed(device: str = "auto", timeout_minutes: float = 30.0) -> DistributedContext:
    """Join the process group that ``torchrun`` (or the caller) described in the environment.

    Args:
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"`` or ``"cuda"``; under
            several processes each takes ``cuda:LOCAL_RANK``.
        timeout_minutes: collective-operation timeout.

    Returns:
        The process's :class:`DistributedContext` (single-process when ``WORLD_SIZE`` is unset or 1).

    Raises:
        RuntimeError: CUDA was requested but is unavailable, or the environment is incomplete.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was requested but no CUDA device is available; use --device cpu")
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda' for training, got {device!r}")
    if use_cuda:
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
        chosen = torch.device("cuda", torch.cuda.current_device())
    else:
        chosen = torch.device("cpu")
    if world_size == 1:
        return DistributedContext(device=chosen)
    missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
    if missing:
        raise RuntimeError(
            f"WORLD_SIZE={world_size} but {', '.join(missing)} is not set; launch with torchrun, "
            "which sets the rendezvous variables"
        )
    backend = "nccl" if use_cuda else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(
            backend=backend,
            rank=rank,
            world_size=world_size,
            timeout=datetime.timedelta(minutes=timeout_minutes),
        )
    return DistributedContext(rank, world_size, local_rank, chosen, backend)
