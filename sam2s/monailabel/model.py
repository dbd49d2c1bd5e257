"""Building the task's predictor from the MONAI bundle's inference config.

The bundle (``bundle/configs/inference.json``) is the one place that says how the model and its
:class:`sam2s.VideoPredictor` are made (memory policy, frame cache); the MONAI Label task
instantiates its ``inferer`` entry with MONAI's :class:`~monai.bundle.ConfigParser`, overriding
only the model name, checkpoint and device that the server config chose. Without a bundle
config the same objects are built directly with :func:`sam2s.build_model`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import sam2s
from sam2s.checkpoint import resolve_device

__all__ = ["ModelSettings", "find_inference_config", "load_predictor"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSettings:
    """Which model the server runs, and where.

    Attributes:
        model: a ``sam2s`` config name (``"sam2s_demo"``, ``"sam2.1_hiera_mini"``...) or YAML path;
            ``None`` keeps the bundle's.
        checkpoint: a checkpoint path, ``"demo"``, ``"none"`` (random weights, for tests), or
            ``None`` to keep the bundle's (``models/model.pt``).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        bundle: the bundle folder; ``None`` looks for the project's own.
        cache_frames: recent-frame memories kept per object; ``None`` keeps the bundle's.
    """

    model: str | None = None
    checkpoint: str | None = None
    device: str = "auto"
    bundle: str | None = None
    cache_frames: int | None = None


def find_inference_config(bundle: str | None) -> Path | None:
    """``<bundle>/configs/inference.json``; with no bundle given, the project's bundle if there is one."""
    if bundle is not None:
        config = Path(bundle) / "configs" / "inference.json"
        if not config.is_file():
            raise FileNotFoundError(
                f"{config} does not exist; the bundle folder holds configs/inference.json"
            )
        return config
    try:
        from sam2s.bundle import find_bundle_root

        config = Path(find_bundle_root()) / "configs" / "inference.json"
    except (ImportError, FileNotFoundError):
        return None
    return config if config.is_file() else None


def load_predictor(settings: ModelSettings) -> sam2s.VideoPredictor:
    """The predictor the task serves, built through the bundle config when there is one."""
    device = str(resolve_device(settings.device))
    config = find_inference_config(settings.bundle)
    if config is None:
        if settings.model is None:
            raise FileNotFoundError(
                "no bundle config (bundle/configs/inference.json) was found to say which model to run; "
                "pass --conf bundle DIR, or --conf model NAME --conf checkpoint PATH"
            )
        logger.warning("no bundle config found: building %s directly with sam2s.build_model", settings.model)
        checkpoint = None if str(settings.checkpoint).lower() in ("none", "") else settings.checkpoint
        model = sam2s.build_model(settings.model, checkpoint=checkpoint, device=device)
        options = {} if settings.cache_frames is None else {"cache_frames": settings.cache_frames}
        return sam2s.VideoPredictor(model, **options)

    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(config))
    parser["bundle_root"] = str(config.parent.parent)
    parser["device"] = device
    if settings.model is not None:
        parser["model"] = settings.model
    if settings.checkpoint is not None:
        parser["checkpoint"] = settings.checkpoint
    if settings.cache_frames is not None:
        parser["cache_frames"] = settings.cache_frames
    logger.info("building the predictor from %s (model %s, device %s)", config, parser["model"], device)
    predictor = parser.get_parsed_content("inferer", instantiate=True)
    if not isinstance(predictor, sam2s.VideoPredictor):
        raise TypeError(
            f"{config}: 'inferer' must build a sam2s.VideoPredictor, got {type(predictor).__name__}"
        )
    return predictor
