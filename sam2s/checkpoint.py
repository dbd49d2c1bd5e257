"""Build models and load official SAM 2.1 or SAM2S checkpoints, safely.

Checkpoints are read with ``torch.load(..., weights_only=True)``: a file that would run code
when unpickled is refused. An official SAM 2.1 checkpoint (``{"model": state_dict}``) loads
with no missing and no unexpected keys; parameters that only SAM2S has live under their own
prefixes (:data:`SAM2S_ONLY_PREFIXES`) and keep their initial values when a SAM 2.1 checkpoint
lacks them.
"""

from __future__ import annotations

import logging
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from sam2s.config import ModelConfig, load_config

__all__ = [
    "SAM2S_ONLY_PREFIXES",
    "CheckpointError",
    "build_model",
    "build_model_class",
    "demo_checkpoint_path",
    "describe_architecture",
    "load_checkpoint",
    "read_state_dict",
    "resolve_device",
    "save_checkpoint",
]

logger = logging.getLogger(__name__)

# Parameters that SAM 2.1 checkpoints do not have; initialised when absent.
SAM2S_ONLY_PREFIXES = ("divemem_", "semantic_head.")

# Trunk width and depth of the released SAM 2.1 sizes, to name a checkpoint's size in errors.
_KNOWN_TRUNKS = {(96, 12): "hiera_t", (96, 16): "hiera_s", (112, 24): "hiera_b+", (144, 48): "hiera_l"}


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used with the requested model, with the reason and a fix."""


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` picks CUDA, then MPS, then CPU; anything else is passed to ``torch.device``."""
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(device)


def demo_checkpoint_path() -> Path:
    """Where the shipped demo weights are: ``$SAM2S_DEMO_CHECKPOINT``, the installed copy, or the
    source checkout's ``bundle/models/model.pt``."""
    candidates = []
    env = os.environ.get("SAM2S_DEMO_CHECKPOINT")
    if env:
        candidates.append(Path(env))
    package_dir = Path(__file__).resolve().parent
    candidates.append(package_dir / "weights" / "sam2s_demo.pt")
    candidates.append(package_dir.parent / "bundle" / "models" / "model.pt")
    for path in candidates:
        if path.is_file():
            return path
    raise CheckpointError(
        "the demo checkpoint was not found (looked at: " + ", ".join(str(p) for p in candidates) + "); "
        "set SAM2S_DEMO_CHECKPOINT to its path, or train it with `python scripts/train_demo_model.py`"
    )


def read_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint file safely.

    Returns:
        The model state dict and the rest of the checkpoint (e.g. ``"config"``, ``"vocabulary"``).

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: truncated or corrupt file, not a checkpoint, or a file that would run code.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {str(path)!r} is empty (0 bytes); download it again")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        text = str(err)
        # Code-running pickles name a global the safe unpickler refuses; random bytes fail on
        # an unknown opcode ("Unsupported operand") instead.
        if "Unsupported global" in text or "GLOBAL" in text or "allowed global" in text:
            raise CheckpointError(
                f"refused to load {str(path)!r}: it contains Python objects that would run code when "
                "unpickled. Only plain tensors are accepted; re-save the state dict with "
                "torch.save({'model': model.state_dict()}, path) from a trusted source"
            ) from None
        raise CheckpointError(f"{str(path)!r} is not a PyTorch checkpoint ({text.splitlines()[0]})") from None
    except (RuntimeError, zipfile.BadZipFile, EOFError, OSError, ValueError, IndexError, KeyError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        if zipfile.is_zipfile(path) or "zip" in first.lower() or "central directory" in first.lower():
            raise CheckpointError(
                f"checkpoint {str(path)!r} is truncated or corrupt ({first}); download it again"
            ) from None
        raise CheckpointError(f"{str(path)!r} is not a PyTorch checkpoint ({first})") from None
    if isinstance(payload, dict) and "model" in payload and isinstance(payload["model"], dict):
        state = payload["model"]
        extras = {k: v for k, v in payload.items() if k != "model"}
    elif isinstance(payload, dict) and payload and all(isinstance(v, torch.Tensor) for v in payload.values()):
        state, extras = payload, {}
    else:
        kind = type(payload).__name__
        keys = sorted(payload)[:5] if isinstance(payload, dict) else []
        raise CheckpointError(
            f"{str(path)!r} holds a {kind}{' with keys ' + str(keys) if keys else ''}, not a model "
            "checkpoint; expected {'model': state_dict} as in the official SAM 2.1 files"
        )
    return state, extras


def describe_architecture(state: dict[str, torch.Tensor]) -> str:
    """Name the SAM 2.1 size of a state dict from its trunk width and depth."""
    patch = state.get("image_encoder.trunk.patch_embed.proj.weight")
    if patch is None:
        return "an unknown architecture (no image_encoder.trunk.patch_embed.proj.weight)"
    width = int(patch.shape[0])
    depth = len({k.split(".")[3] for k in state if k.startswith("image_encoder.trunk.blocks.")})
    name = _KNOWN_TRUNKS.get((width, depth), f"a Hiera with {depth} blocks")
    return f"{name} (trunk embed_dim {width}, {depth} blocks)"


def load_checkpoint(model: torch.nn.Module, path: str | Path) -> dict[str, Any]:
    """Load a checkpoint into ``model`` strictly (SAM2S-only parameters may be absent).

    Returns:
        The checkpoint's extra entries (config, vocabulary, training metadata).
    """
    state, extras = read_state_dict(path)
    expected = model.state_dict()
    config: ModelConfig = model.config
    arch_ckpt = describe_architecture(state)
    arch_model = describe_architecture(expected)
    if arch_ckpt != arch_model:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is {arch_ckpt} but the config {config.name!r} is {arch_model}; "
            "pick the config that matches the checkpoint (e.g. --model sam2.1_hiera_b+)"
        )
    mismatched = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in state.items()
        if k in expected and tuple(v.shape) != tuple(expected[k].shape)
    ]
    if mismatched:
        raise CheckpointError(
            f"checkpoint {str(path)!r} does not fit config {config.name!r}: shape mismatch in "
            + "; ".join(mismatched[:5]) + (" ..." if len(mismatched) > 5 else "")
        )
    missing = [k for k in expected if k not in state and not k.startswith(SAM2S_ONLY_PREFIXES)]
    unexpected = [k for k in state if k not in expected and not k.startswith(SAM2S_ONLY_PREFIXES)]
    unused = [k for k in state if k not in expected and k.startswith(SAM2S_ONLY_PREFIXES)]
    if unused:
        # a SAM2S checkpoint evaluated with some SAM2S parts switched off (or as plain SAM 2.1)
        logger.warning(
            "config %r does not use %d SAM2S parameter tensor(s) of %s (e.g. %s); ignored",
            config.name,
            len(unused),
            path,
            unused[0],
        )
        state = {k: v for k, v in state.items() if k not in unused}
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {str(path)!r} does not fit config {config.name!r}: "
            f"{len(missing)} missing key(s) {missing[:5]}, {len(unexpected)} unexpected key(s) {unexpected[:5]}"
        )
    model.load_state_dict(state, strict=False)
    absent = [k for k in expected if k not in state]
    if absent:
        # e.g. a SAM 2.1 checkpoint in a SAM2S model: derive what can be derived from SAM 2.1
        init_absent = getattr(model, "init_absent_parameters", None)
        derived = init_absent(absent) if init_absent is not None else []
        logger.info(
            "initialised %d SAM2S-only parameter tensor(s) absent from %s (%d from SAM 2.1 weights)",
            len(absent),
            path,
            len(derived),
        )
    apply_extras = getattr(model, "apply_checkpoint_extras", None)
    if apply_extras is not None:
        apply_extras(extras)
    return extras


def save_checkpoint(model: torch.nn.Module, path: str | Path, **extras: Any) -> Path:
    """Write ``{"model": state_dict, "config": ..., <model extras>, **extras}`` atomically.

    The model's own extras (a SAM2S model's class bank) are included; every entry is plain data,
    so the file loads back with ``torch.load(..., weights_only=True)``.

    Returns:
        The path written.
    """
    from sam2s.writers.base import write_atomically

    path = Path(path)
    payload: dict[str, Any] = {"model": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    config = getattr(model, "config", None)
    if isinstance(config, ModelConfig):
        payload["config"] = config.to_dict()
    model_extras = getattr(model, "checkpoint_extras", None)
    if model_extras is not None:
        payload.update(model_extras())
    payload.update(extras)
    write_atomically(path, lambda handle: torch.save(payload, handle))
    return path


def build_model_class(config: ModelConfig) -> type[torch.nn.Module]:
    """:class:`~sam2s.modeling.sam2s_model.SAM2SModel` when any SAM2S part is on, else SAM 2.1's."""
    from sam2s.modeling.sam2 import SAM2Model
    from sam2s.modeling.sam2s_model import SAM2SModel

    return SAM2SModel if config.is_sam2s else SAM2Model


def build_model(
    name: str | ModelConfig = "sam2.1_hiera_t",
    checkpoint: str | Path | None = None,
    device: str | torch.device = "cpu",
    **overrides: Any,
):
    """Build a model by config name and optionally load weights.

    Args:
        name: a shipped config name (``"sam2.1_hiera_t"``, ``"sam2s_hiera_b+"``, ...), a YAML
            path, or a :class:`~sam2s.config.ModelConfig`.
        checkpoint: ``None`` for random initialisation, ``"demo"`` for the shipped demo weights,
            or the path of an official SAM 2.1 / SAM2S checkpoint.
        device: ``"cpu"``, ``"cuda"``, ``"mps"`` or ``"auto"``.
        overrides: dotted config overrides, e.g. ``**{"tracker.fill_hole_area": 0}``.

    Returns:
        The model in eval mode on ``device``.
    """
    config = name if isinstance(name, ModelConfig) else load_config(name)
    if overrides:
        config = config.replace(**overrides)
    model = build_model_class(config)(config)
    if checkpoint is not None:
        path = demo_checkpoint_path() if str(checkpoint) == "demo" else Path(checkpoint)
        load_checkpoint(model, path)
    return model.to(resolve_device(device)).eval()
