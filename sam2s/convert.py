"""``sam2s convert``: turn a SAM 2.1 checkpoint into a SAM2S checkpoint.

The SAM 2.1 weights are loaded into a SAM2S model of the same architecture; the SAM2S-only
parameters are initialised (DiveMem temporal embeddings from SAM 2.1's ``maskmem_tpos_enc``, the
TSL head at random); the class bank of the TSL head is attached, either read from a vocabulary-bank
file (``sam2s build-vocabulary``) or built here with the offline MiniLM text encoder from the
default SAM2S vocabulary (21 instruments + 16 tissues) or a names file. The result is written
atomically (temporary file, then rename) and read back with ``weights_only=True`` before the
command reports success.

Example::

    sam2s convert --input sam2.1_hiera_base_plus.pt --output sam2s_hiera_b+_init.pt
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from sam2s.checkpoint import CheckpointError, build_model, read_state_dict, save_checkpoint
from sam2s.config import ModelConfig, available_configs, load_config

__all__ = ["add_arguments", "convert_checkpoint", "guess_sam2s_config", "run"]

logger = logging.getLogger(__name__)


def guess_sam2s_config(state: dict) -> str:
    """The shipped SAM2S config whose SAM 2.1 parameters have exactly the state dict's shapes."""
    from sam2s.checkpoint import SAM2S_ONLY_PREFIXES, build_model_class

    patch = state.get("image_encoder.trunk.patch_embed.proj.weight")
    if patch is None:
        raise CheckpointError(
            "the checkpoint has no image_encoder.trunk.patch_embed.proj.weight: not a SAM 2.1 model"
        )
    width = int(patch.shape[0])
    depth = len({k.split(".")[3] for k in state if k.startswith("image_encoder.trunk.blocks.")})
    # the released sizes first, then small ones (mini, demo)
    names = [name for name in available_configs() if name.startswith("sam2s_")]
    candidates = sorted(names, key=lambda name: not name.startswith("sam2s_hiera_"))
    for name in candidates:
        config = load_config(name)
        if (config.trunk.embed_dim, sum(config.trunk.stages)) != (width, depth):
            continue
        with torch.device("meta"):
            expected = build_model_class(config)(config).state_dict()
        shared = [k for k in expected if not k.startswith(SAM2S_ONLY_PREFIXES)]
        if all(k in state and tuple(state[k].shape) == tuple(expected[k].shape) for k in shared):
            return name
    raise CheckpointError(
        f"no SAM2S config has a trunk of width {width} and {depth} blocks with this checkpoint's shapes; "
        f"pass --model with a config name or YAML path (shipped SAM2S configs: {candidates})"
    )


def _class_bank(args: argparse.Namespace, config: ModelConfig):
    """The vocabulary bank the options ask for, or ``None``."""
    from sam2s.semantics import (
        VocabularyBank,
        build_vocabulary_bank,
        default_class_names,
        read_vocabulary_file,
    )

    given = [
        flag
        for flag, value in (("--vocabulary-bank", args.vocabulary_bank), ("--vocabulary", args.vocabulary))
        if value is not None
    ]
    if len(given) > 1 or (given and args.no_class_bank):
        raise ValueError(
            f"{' and '.join(given + (['--no-class-bank'] if args.no_class_bank else []))} "
            "exclude each other: give ready embeddings, names to encode, or no class bank"
        )
    if given and not config.semantic.enabled:
        raise ValueError(
            f"config {config.name!r} has no TSL head (semantic.enabled is off), so it takes no class bank"
        )
    if args.no_class_bank or not config.semantic.enabled:
        return None
    if args.vocabulary_bank is not None:
        path = Path(args.vocabulary_bank)
        if path.suffix.lower() == ".npz":
            return VocabularyBank.from_embeddings_file(path)
        return VocabularyBank.load(path)
    from sam2s.semantics import MiniLMTextEncoder

    names = (
        read_vocabulary_file(args.vocabulary) if args.vocabulary is not None else list(default_class_names())
    )
    logger.info("encoding %d category names with MiniLM", len(names))
    return build_vocabulary_bank(MiniLMTextEncoder(), names)


def convert_checkpoint(
    input_path: str | Path,
    output_path: str | Path,
    model: str | ModelConfig | None = None,
    vocabulary_bank=None,
) -> Path:
    """Load a SAM 2.1 checkpoint into a SAM2S model and save it as a SAM2S checkpoint.

    Args:
        input_path: official SAM 2.1 (or SAM2S) checkpoint.
        output_path: where to write the SAM2S checkpoint (``.pt``).
        model: SAM2S config name / path / config; ``None`` picks it from the checkpoint's trunk.
        vocabulary_bank: a :class:`~sam2s.semantics.VocabularyBank` to attach, or ``None``.

    Returns:
        The written path.
    """
    input_path, output_path = Path(input_path), Path(output_path)
    if input_path.resolve() == output_path.resolve():
        raise ValueError("--output must differ from --input; the SAM 2.1 checkpoint is left untouched")
    if model is None:
        state, _ = read_state_dict(input_path)
        model = guess_sam2s_config(state)
        del state
    config = model if isinstance(model, ModelConfig) else load_config(model)
    if not config.is_sam2s:
        raise ValueError(f"config {config.name!r} has every SAM2S part switched off; pick a sam2s_* config")
    network = build_model(config, checkpoint=input_path, device="cpu")
    if vocabulary_bank is not None:
        if network.semantic_head is None:
            raise ValueError(
                f"config {config.name!r} has no TSL head (semantic.enabled is off); drop the class bank"
            )
        network.set_vocabulary(vocabulary_bank)
    save_checkpoint(network, output_path, converted_from=input_path.name)
    # read back exactly as users will (weights_only=True) before reporting success
    state, extras = read_state_dict(output_path)
    expected = network.state_dict()
    if set(state) != set(expected):
        raise CheckpointError(f"{output_path} did not read back with the model's keys; the disk may be full")
    if vocabulary_bank is not None and "vocabulary" not in extras:
        raise CheckpointError(f"{output_path} read back without its class bank")
    return output_path


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the options of ``sam2s convert`` to ``parser``."""
    parser.add_argument("--input", "-i", type=Path, required=True, help="SAM 2.1 checkpoint (.pt)")
    parser.add_argument("--output", "-o", type=Path, required=True, help="SAM2S checkpoint to write (.pt)")
    parser.add_argument(
        "--model",
        default=None,
        help="SAM2S config name or YAML path (default: the sam2s_hiera_* matching the checkpoint's trunk)",
    )
    bank = parser.add_argument_group("class bank of the TSL head (default: MiniLM on the SAM2S vocabulary)")
    bank.add_argument(
        "--vocabulary-bank",
        type=Path,
        default=None,
        help="ready bank: a .pt from `sam2s build-vocabulary`, or a .npz with names and embeddings",
    )
    bank.add_argument(
        "--vocabulary",
        type=Path,
        default=None,
        help="category names to encode with MiniLM (text file, one per line, or JSON list)",
    )
    bank.add_argument("--no-class-bank", action="store_true", help="attach no class bank")
    parser.add_argument("--force", action="store_true", help="overwrite --output if it exists")
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``sam2s convert`` with parsed ``args``; returns the exit status (0)."""
    if args.output.suffix.lower() not in (".pt", ".pth"):
        raise ValueError(f"--output must be a .pt file, got {args.output}")
    if args.output.exists() and not args.force:
        raise FileExistsError(f"{args.output} exists; pass --force to overwrite it")
    config = load_config(args.model) if args.model is not None else None
    if config is None:
        state, _ = read_state_dict(args.input)
        config = load_config(guess_sam2s_config(state))
        del state
    bank = _class_bank(args, config)
    path = convert_checkpoint(args.input, args.output, config, bank)
    classes = f"{bank.num_classes} classes ({bank.encoder_name})" if bank is not None else "no class bank"
    print(f"wrote {path} (config {config.name}, {classes})")
    return 0
