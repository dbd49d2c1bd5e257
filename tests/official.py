"""Build the official SAM 2.1 implementation (``sam2==1.1.0``) for parity tests only.

The package under test never imports ``sam2``; tests build both models with the same random
weights through these helpers.
"""

from __future__ import annotations

import pytest
import torch

sam2 = pytest.importorskip("sam2", reason="the official sam2 package is part of the test environment")

# Overrides that make the official package build this project's configs. "mini" is the reduced
# architecture of sam2s/configs/sam2.1_hiera_mini.yaml.
OFFICIAL_CONFIG = {
    "sam2.1_hiera_t": ("configs/sam2.1/sam2.1_hiera_t.yaml", []),
    "sam2.1_hiera_mini": (
        "configs/sam2.1/sam2.1_hiera_t.yaml",
        [
            "++model.image_size=256",
            "++model.image_encoder.trunk.embed_dim=32",
            "++model.image_encoder.trunk.stages=[1,1,2,1]",
            "++model.image_encoder.trunk.global_att_blocks=[3]",
            "++model.image_encoder.neck.backbone_channel_list=[256,128,64,32]",
            "++model.memory_attention.num_layers=1",
            "++model.memory_attention.layer.dim_feedforward=256",
            "++model.memory_attention.layer.self_attention.feat_sizes=[16,16]",
            "++model.memory_attention.layer.cross_attention.feat_sizes=[16,16]",
        ],
    ),
}

# The video predictor's post-processing settings, with hole filling off (the official code
# skips it on CPU) and corrections kept as conditioning frames (this project's rule).
VIDEO_OVERRIDES = [
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_via_stability=true",
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_delta=0.05",
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_thresh=0.98",
    "++model.binarize_mask_from_pts_for_mem_enc=true",
    "++model.fill_hole_area=0",
    "++model.add_all_frames_to_correct_as_cond=true",
]


def build_official_video_predictor(name: str, state_dict: dict[str, torch.Tensor]):
    """The official ``SAM2VideoPredictor`` for config ``name`` with the given weights."""
    from sam2.build_sam import build_sam2_video_predictor

    config_file, overrides = OFFICIAL_CONFIG[name]
    model = build_sam2_video_predictor(
        config_file, ckpt_path=None, device="cpu", apply_postprocessing=False,
        hydra_overrides_extra=overrides + VIDEO_OVERRIDES,
    )
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


def build_official_image_predictor(name: str, state_dict: dict[str, torch.Tensor]):
    """The official ``SAM2ImagePredictor`` for config ``name`` with the given weights."""
    from sam2.build_sam import build_sam2
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    config_file, overrides = OFFICIAL_CONFIG[name]
    model = build_sam2(config_file, ckpt_path=None, device="cpu", hydra_overrides_extra=overrides)
    model.load_state_dict(state_dict, strict=True)
    predictor = SAM2ImagePredictor(model.eval())
    # The official predictor hard-codes the 1024-px feature sizes; derive them from the model.
    grid = model.image_size // 16
    predictor._bb_feat_sizes = [(grid * 4, grid * 4), (grid * 2, grid * 2), (grid, grid)]
    return predictor
