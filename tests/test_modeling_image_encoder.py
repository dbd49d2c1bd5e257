"""The image encoder and position encodings against the official SAM 2.1 implementation.

The official modules are built directly from the official package's classes with the
hyper-parameters of its own config files, their weights are loaded strictly into the
project's modules, and both are run on the same input.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sam2
import torch
import yaml
from sam2.modeling import position_encoding as official_pe
from sam2.modeling.backbones import hieradet as official_hiera
from sam2.modeling.backbones import image_encoder as official_encoder

from sam2s.modeling.hiera import Hiera
from sam2s.modeling.image_encoder import FpnNeck, ImageEncoder, ImageFeatures, build_image_encoder
from sam2s.modeling.position_encoding import PositionEmbeddingRandom, PositionEmbeddingSine

MANIFESTS = Path(__file__).parent / "data" / "reference" / "sam2.1_state_dicts"
OFFICIAL_CONFIGS = Path(sam2.__file__).parent / "configs" / "sam2.1"
SIZES = ["t", "s", "b+", "l"]
TOLERANCE = 1e-5

MINI_TRUNK = {"embed_dim": 32, "stages": [1, 1, 2, 1], "global_att_blocks": [3]}
MINI_NECK = {"backbone_channel_list": [256, 128, 64, 32]}

# The official neck's conv options carry other names than the project's.
NECK_KEY_RENAMES = {"kernel_size": "fpn_kernel_size", "stride": "fpn_stride", "padding": "fpn_padding"}


def official_encoder_config(size: str) -> tuple[dict, dict, int]:
    """Read trunk kwargs, neck kwargs (project names) and scalp from an official config."""
    config = yaml.safe_load((OFFICIAL_CONFIGS / f"sam2.1_hiera_{size}.yaml").read_text())
    encoder = config["model"]["image_encoder"]
    trunk = {k: v for k, v in encoder["trunk"].items() if k != "_target_"}
    neck = {
        NECK_KEY_RENAMES.get(k, k): v
        for k, v in encoder["neck"].items()
        if k not in ("_target_", "position_encoding")
    }
    position = encoder["neck"]["position_encoding"]
    assert (
        position["num_pos_feats"] == neck["d_model"] and position["normalize"] and position["scale"] is None
    )
    return trunk, neck, encoder["scalp"]


def build_official(trunk_cfg: dict, neck_cfg: dict, scalp: int) -> torch.nn.Module:
    neck_kwargs = {({v: k for k, v in NECK_KEY_RENAMES.items()}).get(k, k): v for k, v in neck_cfg.items()}
    position = official_pe.PositionEmbeddingSine(neck_cfg["d_model"], warmup_cache=False)
    neck = official_encoder.FpnNeck(position_encoding=position, **neck_kwargs)
    return official_encoder.ImageEncoder(official_hiera.Hiera(**trunk_cfg), neck, scalp=scalp)


def randomise_(module: torch.nn.Module, seed: int) -> None:
    """Make every parameter non-trivial (position embeddings start at zero, norms at one)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))


def assert_close(ours: torch.Tensor, theirs: torch.Tensor, what: str) -> None:
    assert ours.shape == theirs.shape, f"{what}: shape {tuple(ours.shape)} != {tuple(theirs.shape)}"
    assert ours.dtype == theirs.dtype, f"{what}: dtype {ours.dtype} != {theirs.dtype}"
    diff = (ours - theirs).abs().max().item()
    assert diff <= TOLERANCE, f"{what}: max |diff| {diff:.3g} > {TOLERANCE}"


def check_parity(trunk_cfg: dict, neck_cfg: dict, scalp: int, image_size: int, batch: int) -> ImageFeatures:
    torch.manual_seed(0)
    official = build_official(trunk_cfg, neck_cfg, scalp).eval()
    randomise_(official, seed=1)
    ours = build_image_encoder(trunk_cfg, neck_cfg, scalp).eval()
    ours.load_state_dict(official.state_dict(), strict=True)

    images = torch.randn(batch, 3, image_size, image_size, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        expected = official(images)
        got = ours(images)
    assert isinstance(got, ImageFeatures)
    assert len(got.backbone_fpn) == len(expected["backbone_fpn"]) == 4 - scalp
    assert len(got.vision_pos_enc) == len(expected["vision_pos_enc"])
    for level, (a, b) in enumerate(zip(got.backbone_fpn, expected["backbone_fpn"])):
        assert_close(a, b, f"backbone_fpn[{level}]")
    for level, (a, b) in enumerate(zip(got.vision_pos_enc, expected["vision_pos_enc"])):
        assert_close(a, b, f"vision_pos_enc[{level}]")
    assert_close(got.vision_features, expected["vision_features"], "vision_features")
    return got


def mini_config() -> tuple[dict, dict, int]:
    trunk, neck, scalp = official_encoder_config("t")
    return {**trunk, **MINI_TRUNK}, {**neck, **MINI_NECK}, scalp


def test_mini_encoder_matches_official():
    trunk, neck, scalp = mini_config()
    features = check_parity(trunk, neck, scalp, image_size=256, batch=2)
    assert [tuple(f.shape) for f in features.backbone_fpn] == [
        (2, 256, 64, 64),
        (2, 256, 32, 32),
        (2, 256, 16, 16),
    ]


def test_mini_encoder_other_neck_options_match_official():
    """Top-down fusion on every level, bilinear upsampling, averaging, no scalp."""
    trunk, neck, _ = mini_config()
    neck = {**neck, "fpn_top_down_levels": None, "fpn_interp_model": "bilinear", "fuse_type": "avg"}
    check_parity(trunk, neck, scalp=0, image_size=256, batch=1)


def test_hiera_t_encoder_matches_official_at_1024():
    trunk, neck, scalp = official_encoder_config("t")
    features = check_parity(trunk, neck, scalp, image_size=1024, batch=1)
    assert tuple(features.vision_features.shape) == (1, 256, 64, 64)


@pytest.mark.parametrize("size", SIZES)
def test_state_dict_matches_checkpoint_manifest(size):
    manifest = json.loads((MANIFESTS / f"sam2.1_hiera_{size}.json").read_text())
    expected = {
        key: (tuple(shape), dtype) for key, shape, dtype in manifest if key.startswith("image_encoder.")
    }
    assert expected, "the manifest lists no image encoder keys"
    trunk, neck, scalp = official_encoder_config(size)
    with torch.device("meta"):  # shapes only: skip the cost of initialising the weights
        encoder = build_image_encoder(trunk, neck, scalp)
    got = {
        f"image_encoder.{key}": (tuple(value.shape), str(value.dtype).removeprefix("torch."))
        for key, value in encoder.state_dict().items()
    }
    assert sorted(set(expected) - set(got)) == [], "keys missing from the project's encoder"
    assert sorted(set(got) - set(expected)) == [], "keys the checkpoint does not have"
    assert got == expected


def test_hiera_stage_shapes_and_channel_order():
    trunk = Hiera(**mini_config()[0])
    outputs = trunk(torch.zeros(1, 3, 256, 256))
    assert [tuple(o.shape) for o in outputs] == [
        (1, 32, 64, 64),
        (1, 64, 32, 32),
        (1, 128, 16, 16),
        (1, 256, 8, 8),
    ]
    assert trunk.stage_channels == [32, 64, 128, 256]
    assert trunk.channel_list == [256, 128, 64, 32]


def test_bad_inputs_raise_clear_errors():
    trunk_cfg, neck_cfg, _ = mini_config()
    trunk = Hiera(**trunk_cfg)
    with pytest.raises(ValueError, match="multiple of 32"):
        trunk(torch.zeros(1, 3, 240, 240))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        trunk(torch.zeros(1, 1, 256, 256))
    with pytest.raises(ValueError, match="disagree on channels"):
        ImageEncoder(trunk, FpnNeck(256, [768, 384, 192, 96]))
    with pytest.raises(ValueError, match="unknown neck option"):
        build_image_encoder(trunk_cfg, {**neck_cfg, "position_encoding": {}}, 1)
    with pytest.raises(ValueError, match="scalp"):
        ImageEncoder(trunk, FpnNeck(**neck_cfg), scalp=4)


@pytest.mark.parametrize("height,width", [(64, 64), (16, 16), (7, 13)])
def test_sine_position_encoding_matches_official(height, width):
    official = official_pe.PositionEmbeddingSine(128, warmup_cache=False)
    ours = PositionEmbeddingSine(128)
    x = torch.randn(3, 5, height, width)
    assert_close(ours(x), official(x), "sine encoding")
    # Cached per dtype: a bfloat16 map gets a bfloat16 encoding of the same values.
    encoded_bf16 = ours(x.to(torch.bfloat16))
    assert encoded_bf16.dtype == torch.bfloat16
    assert torch.equal(encoded_bf16, official(x).to(torch.bfloat16))


def test_sine_position_encoding_cached_inside_inference_mode_works_with_autograd():
    encoding = PositionEmbeddingSine(16)
    with torch.inference_mode():
        encoding(torch.zeros(1, 1, 8, 8))
    features = torch.randn(1, 16, 8, 8, requires_grad=True)
    (features * encoding(features)).sum().backward()
    assert torch.equal(features.grad, encoding(features)[0:1])


def test_random_position_encoding_matches_official():
    torch.manual_seed(3)
    official = official_pe.PositionEmbeddingRandom(64, scale=2.0)
    ours = PositionEmbeddingRandom(64)
    ours.load_state_dict(official.state_dict(), strict=True)
    assert list(ours.state_dict()) == ["positional_encoding_gaussian_matrix"]
    assert_close(ours((64, 48)), official((64, 48)), "grid encoding")
    coords = torch.rand(2, 5, 2, generator=torch.Generator().manual_seed(4)) * torch.tensor([640.0, 480.0])
    assert_close(
        ours.forward_with_coords(coords, (480, 640)),
        official.forward_with_coords(coords, (480, 640)),
        "point encoding",
    )
    # The buffer is drawn from N(0, scale^2) like the official one.
    torch.manual_seed(5)
    scaled = PositionEmbeddingRandom(64, scale=2.0).positional_encoding_gaussian_matrix
    torch.manual_seed(5)
    assert torch.equal(scaled, 2.0 * torch.randn(2, 64))
