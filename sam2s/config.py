"""Model configurations: typed dataclasses read from the YAML files in ``sam2s/configs/``.

A config names the architecture (trunk, neck, memory sizes) and the tracking behaviour. The
SAM 2.1 options that are the same in every released size are written here as defaults, so a
YAML file only says what differs between sizes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

CONFIG_DIR = Path(__file__).resolve().parent / "configs"

__all__ = [
    "CONFIG_DIR",
    "DiveMemConfig",
    "MaskDecoderConfig",
    "MemoryAttentionConfig",
    "MemoryEncoderConfig",
    "ModelConfig",
    "NeckConfig",
    "SemanticConfig",
    "TrackerConfig",
    "TrunkConfig",
    "available_configs",
    "load_config",
]


@dataclass
class TrunkConfig:
    """Hiera trunk hyper-parameters (names as in the official configs)."""

    embed_dim: int = 96
    num_heads: int = 1
    stages: list[int] = field(default_factory=lambda: [2, 3, 16, 3])
    global_att_blocks: list[int] = field(default_factory=lambda: [12, 16, 20])
    window_pos_embed_bkg_spatial_size: list[int] = field(default_factory=lambda: [14, 14])
    window_spec: list[int] = field(default_factory=lambda: [8, 4, 14, 7])
    drop_path_rate: float = 0.0


@dataclass
class NeckConfig:
    """FPN neck: ``backbone_channel_list`` lists trunk widths from the lowest resolution up."""

    d_model: int = 256
    backbone_channel_list: list[int] = field(default_factory=lambda: [768, 384, 192, 96])
    fpn_top_down_levels: list[int] = field(default_factory=lambda: [2, 3])
    scalp: int = 1


@dataclass
class MemoryAttentionConfig:
    """Memory attention (SAM 2.1 defaults).

    Attributes:
        same_position_init: initial value of every cross-attention query and key bias (0: the
            default initialisation, as SAM 2). Only matters for training from scratch, see
            :meth:`sam2s.modeling.memory_attention.MemoryAttention.prefer_same_position`.
    """

    num_layers: int = 4
    dim_feedforward: int = 2048
    feat_sizes: list[int] = field(default_factory=lambda: [64, 64])
    num_heads: int = 1
    dropout: float = 0.1
    rope_theta: float = 10000.0
    same_position_init: float = 0.0


@dataclass
class MaskDecoderConfig:
    """Mask decoder (the architecture is SAM 2.1's; only its initialisation is configurable).

    Attributes:
        prompt_position_init: scale of the shared start of the decoder's prompt/image
            attentions (0: the default initialisation, as SAM 2). Only matters for training from
            scratch, see :meth:`sam2s.modeling.two_way_transformer.TwoWayTransformer.prefer_nearby_prompts`.
    """

    prompt_position_init: float = 0.0


@dataclass
class MemoryEncoderConfig:
    out_dim: int = 64


@dataclass
class TrackerConfig:
    """How frames are tracked: SAM 2.1 video-predictor settings.

    Attributes:
        num_maskmem: memories attended per frame: 1 conditioning slot + ``num_maskmem - 1`` recent frames.
        max_obj_ptrs: object pointers taken from up to this many frames.
        fill_hole_area: fill background holes up to this many pixels in the low-res mask (0 = off).
        binarize_mask_from_pts_for_mem_enc: encode prompted frames' masks as hard 0/1 masks.
        max_cond_frames_in_attn: cap on conditioning frames in attention (-1 = all).
        memory_temporal_stride: stride between the recent frames used as memory.
        multimask_output_for_tracking: decode three candidates on frames tracked from memory
            alone (SAM 2.1 does). A model trained from scratch on few objects per scene learns to
            ignore memory under it: the best-of-three loss is met by three fixed guesses.
        multimask_min_pt_num, multimask_max_pt_num: point counts (inclusive) that get three
            candidates.
        dynamic_multimask_via_stability: with a single-mask output, fall back to the best of
            the three candidates when the single mask is unstable (inference only).
    """

    num_maskmem: int = 7
    max_obj_ptrs: int = 16
    sigmoid_scale_for_mem_enc: float = 20.0
    sigmoid_bias_for_mem_enc: float = -10.0
    binarize_mask_from_pts_for_mem_enc: bool = True
    max_cond_frames_in_attn: int = -1
    memory_temporal_stride: int = 1
    multimask_output_for_tracking: bool = True
    multimask_min_pt_num: int = 0
    multimask_max_pt_num: int = 1
    dynamic_multimask_via_stability: bool = True
    dynamic_multimask_stability_delta: float = 0.05
    dynamic_multimask_stability_thresh: float = 0.98
    fill_hole_area: int = 8

    def use_multimask(self, num_points: int | None) -> bool:
        """Whether a decoding with ``num_points`` clicks predicts three candidates.

        ``None`` is a frame decoded from memory with no prompt of its own (a tracked frame).
        """
        if num_points is None:  # SAM 2 counts the frame as one with zero clicks
            return self.multimask_output_for_tracking and self.use_multimask(0)
        return self.multimask_min_pt_num <= num_points <= self.multimask_max_pt_num


@dataclass
class DiveMemConfig:
    """DiveMem (SAM2S): diverse long-term memory. Off means SAM 2's recent-frame window.

    Attributes:
        enabled: keep a long-term bank (:class:`sam2s.memory.divemem.DiveMemPolicy`).
        temporal_embeddings: learnable conditioning / short-term / long-term temporal embeddings
            (``divemem_tpos_enc``) instead of SAM 2's ``maskmem_tpos_enc``.
        num_long_term: N_l, size of the long-term FIFO (the first prompted memory comes on top).
        stable_frames: Δ, consecutive confident frames before a frame becomes a candidate.
        iou_threshold: γ, predicted IoU a frame must exceed to count as confident.
        buffer_size: candidates collected before the least similar one joins the bank.
        long_term_pointers: also attend to the object pointers of long-term frames.
    """

    enabled: bool = False
    temporal_embeddings: bool = True
    num_long_term: int = 4
    stable_frames: int = 5
    iou_threshold: float = 0.95
    buffer_size: int = 5
    long_term_pointers: bool = True


@dataclass
class SemanticConfig:
    """Temporal semantic learning (SAM2S): a class token and a text-embedding class bank.

    Attributes:
        enabled: build :class:`~sam2s.modeling.semantic_head.TemporalSemanticHead`.
        text_dim: width of the class-bank text embeddings (384 for MiniLM, 512 for CLIP ViT-B).
        num_heads: attention heads of the head's two cross-attention steps.
        mlp_dim: hidden width of the head's MLP block.
        logit_scale: cosine-similarity multiplier before the softmax over categories (paper: 100).
    """

    enabled: bool = False
    text_dim: int = 384
    num_heads: int = 8
    mlp_dim: int = 1024
    logit_scale: float = 100.0


@dataclass
class ModelConfig:
    """A whole model: architecture, tracking behaviour and the SAM2S switches."""

    name: str
    image_size: int = 1024
    trunk: TrunkConfig = field(default_factory=TrunkConfig)
    neck: NeckConfig = field(default_factory=NeckConfig)
    memory_attention: MemoryAttentionConfig = field(default_factory=MemoryAttentionConfig)
    memory_encoder: MemoryEncoderConfig = field(default_factory=MemoryEncoderConfig)
    mask_decoder: MaskDecoderConfig = field(default_factory=MaskDecoderConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    divemem: DiveMemConfig = field(default_factory=DiveMemConfig)
    semantic: SemanticConfig = field(default_factory=SemanticConfig)
    arl: bool = False

    @property
    def backbone_stride(self) -> int:
        return 16

    @property
    def is_sam2s(self) -> bool:
        return self.divemem.enabled or self.semantic.enabled or self.arl

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        return _build_dataclass(cls, data, context="model config")

    def replace(self, **overrides: Any) -> ModelConfig:
        """A copy with dotted overrides, e.g. ``replace(**{"divemem.enabled": False})``."""
        data = self.to_dict()
        for dotted, value in overrides.items():
            target = data
            *parents, leaf = dotted.split(".")
            for key in parents:
                if key not in target or not isinstance(target[key], dict):
                    raise KeyError(f"unknown config section {key!r} in override {dotted!r}")
                target = target[key]
            if leaf not in target:
                raise KeyError(f"unknown config option {dotted!r}")
            target[leaf] = value
        return ModelConfig.from_dict(data)


def _build_dataclass(cls: type, data: dict[str, Any], context: str) -> Any:
    if not isinstance(data, dict):
        raise TypeError(f"{context}: expected a mapping, got {type(data).__name__}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f"{context}: unknown option(s) {unknown}; known options are {sorted(known)}")
    kwargs = {}
    for name, value in data.items():
        field_type = known[name].type
        nested = _NESTED.get(field_type) if isinstance(field_type, str) else None
        kwargs[name] = _build_dataclass(nested, value, f"{context}.{name}") if nested else value
    return cls(**kwargs)


_NESTED: dict[str, type] = {
    "TrunkConfig": TrunkConfig,
    "NeckConfig": NeckConfig,
    "MemoryAttentionConfig": MemoryAttentionConfig,
    "MemoryEncoderConfig": MemoryEncoderConfig,
    "MaskDecoderConfig": MaskDecoderConfig,
    "TrackerConfig": TrackerConfig,
    "DiveMemConfig": DiveMemConfig,
    "SemanticConfig": SemanticConfig,
}


def available_configs() -> list[str]:
    """Names of the shipped configs (file names without ``.yaml``)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def load_config(name_or_path: str | Path) -> ModelConfig:
    """Load a shipped config by name (``"sam2.1_hiera_t"``) or a YAML file by path."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = CONFIG_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise FileNotFoundError(
            f"no model config {str(name_or_path)!r}; shipped configs are {available_configs()}, "
            "or pass the path of a .yaml file"
        )
    with open(path) as handle:
        data = yaml.safe_load(handle)
    return ModelConfig.from_dict(data)
