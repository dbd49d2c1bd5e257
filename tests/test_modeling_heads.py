"""Parity of the prompt encoder, mask decoder and memory modules with the official SAM 2.1 code.

Each official module is built with the SAM 2.1 hiera_t settings (memory attention reduced to one
layer on a 16x16 grid), given seed-fixed random weights, and its state dict is loaded strictly
into the project's module; both then see identical random inputs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sam2.modeling.memory_attention as official_ma
import sam2.modeling.memory_encoder as official_me
import sam2.modeling.position_encoding as official_pos
import sam2.modeling.sam.mask_decoder as official_md
import sam2.modeling.sam.prompt_encoder as official_pe
import sam2.modeling.sam.transformer as official_tf
import torch
from torch import nn

from sam2s.modeling.attention import RoPEAttention
from sam2s.modeling.mask_decoder import MaskDecoder, MaskDecoderOutput
from sam2s.modeling.memory_attention import MemoryAttention
from sam2s.modeling.memory_encoder import MemoryEncoder
from sam2s.modeling.prompt_encoder import PromptEncoder
from sam2s.modeling.two_way_transformer import TwoWayTransformer

MANIFEST = Path(__file__).parent / "data" / "reference" / "sam2.1_state_dicts" / "sam2.1_hiera_t.json"
TOLERANCE = 1e-5


def randomize_(module: nn.Module, seed: int) -> nn.Module:
    """Give every parameter seed-fixed random values.

    Default inits leave norms at 1/0 and the ConvNeXt layer scale at 1e-6, which would hide
    mistakes in those paths; vectors get random offsets, matrices random draws at init scale.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            noise = torch.randn(parameter.shape, generator=generator)
            if parameter.ndim == 1:
                parameter.copy_(1.0 + 0.2 * noise if parameter.abs().max() > 0.5 else 0.2 * noise)
            else:
                fan_in = parameter[0].numel()
                parameter.copy_(noise / fan_in**0.5)
    return module.eval()


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item() if a.numel() else 0.0


def manifest_entries(prefix: str) -> dict[str, list[int]]:
    entries = json.loads(MANIFEST.read_text())
    return {key[len(prefix) :]: shape for key, shape, _ in entries if key.startswith(prefix)}


# ---------------------------------------------------------------------------------------------
# builders (SAM 2.1 hiera_t settings)


def official_prompt_encoder(grid: int, image_size: int) -> nn.Module:
    torch.manual_seed(0)
    return official_pe.PromptEncoder(
        embed_dim=256,
        image_embedding_size=(grid, grid),
        input_image_size=(image_size, image_size),
        mask_in_chans=16,
    )


def own_prompt_encoder(grid: int, image_size: int) -> PromptEncoder:
    return PromptEncoder(256, (grid, grid), (image_size, image_size), mask_in_chans=16)


def decoder_kwargs(**overrides) -> dict:
    kwargs = {
        "transformer_dim": 256,
        "num_multimask_outputs": 3,
        "iou_head_depth": 3,
        "iou_head_hidden_dim": 256,
        "use_high_res_features": True,
        "iou_prediction_use_sigmoid": True,
        "dynamic_multimask_via_stability": True,
        "dynamic_multimask_stability_delta": 0.05,
        "dynamic_multimask_stability_thresh": 0.98,
        "pred_obj_scores": True,
        "pred_obj_scores_mlp": True,
        "use_multimask_token_for_obj_ptr": True,
    }
    kwargs.update(overrides)
    return kwargs


def official_mask_decoder(**overrides) -> nn.Module:
    transformer = official_tf.TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8)
    return official_md.MaskDecoder(transformer=transformer, **decoder_kwargs(**overrides))


def own_mask_decoder(**overrides) -> MaskDecoder:
    transformer = TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8)
    return MaskDecoder(transformer=transformer, **decoder_kwargs(**overrides))


def official_memory_encoder() -> nn.Module:
    return official_me.MemoryEncoder(
        out_dim=64,
        mask_downsampler=official_me.MaskDownSampler(kernel_size=3, stride=2, padding=1),
        fuser=official_me.Fuser(
            official_me.CXBlock(
                dim=256, kernel_size=7, padding=3, layer_scale_init_value=1e-6, use_dwconv=True
            ),
            num_layers=2,
        ),
        position_encoding=official_pos.PositionEmbeddingSine(
            num_pos_feats=64, normalize=True, temperature=10000
        ),
    )


MEMORY_ATTENTION_T = {
    "d_model": 256,
    "dim_feedforward": 2048,
    "num_heads": 1,
    "dropout": 0.1,
    "activation": "relu",
    "rope_theta": 10000.0,
    "kv_in_dim": 64,
    "pos_enc_at_attn": False,
    "pos_enc_at_cross_attn_keys": True,
    "pos_enc_at_cross_attn_queries": False,
}
# Every switch flipped, to cover the paths hiera_t leaves unused.
MEMORY_ATTENTION_ALT = dict(
    MEMORY_ATTENTION_T,
    num_heads=2,
    activation="gelu",
    pos_enc_at_attn=True,
    pos_enc_at_cross_attn_keys=False,
    pos_enc_at_cross_attn_queries=True,
)


def official_memory_attention(options: dict, feat_sizes: tuple[int, int], num_layers: int) -> nn.Module:
    rope = {
        "rope_theta": options["rope_theta"],
        "feat_sizes": list(feat_sizes),
        "embedding_dim": options["d_model"],
        "num_heads": options["num_heads"],
        "downsample_rate": 1,
        "dropout": options["dropout"],
    }
    layer = official_ma.MemoryAttentionLayer(
        activation=options["activation"],
        cross_attention=official_tf.RoPEAttention(rope_k_repeat=True, kv_in_dim=options["kv_in_dim"], **rope),
        d_model=options["d_model"],
        dim_feedforward=options["dim_feedforward"],
        dropout=options["dropout"],
        pos_enc_at_attn=options["pos_enc_at_attn"],
        pos_enc_at_cross_attn_keys=options["pos_enc_at_cross_attn_keys"],
        pos_enc_at_cross_attn_queries=options["pos_enc_at_cross_attn_queries"],
        self_attention=official_tf.RoPEAttention(**rope),
    )
    return official_ma.MemoryAttention(
        d_model=options["d_model"], pos_enc_at_input=True, layer=layer, num_layers=num_layers
    )


def paired(official: nn.Module, own: nn.Module, seed: int = 0) -> tuple[nn.Module, nn.Module]:
    randomize_(official, seed)
    own.load_state_dict(official.state_dict(), strict=True)
    return official, own.eval()


# ---------------------------------------------------------------------------------------------
# checkpoint key names


def test_parameter_names_and_shapes_match_the_sam21_manifest():
    own_modules = {
        "sam_prompt_encoder.": own_prompt_encoder(64, 1024),
        "sam_mask_decoder.": own_mask_decoder(),
        "memory_encoder.": MemoryEncoder(out_dim=64, in_dim=256),
        "memory_attention.": MemoryAttention(num_layers=4, feat_sizes=(64, 64), **MEMORY_ATTENTION_T),
    }
    for prefix, module in own_modules.items():
        expected = manifest_entries(prefix)
        assert expected, prefix
        got = {key: list(value.shape) for key, value in module.state_dict().items()}
        assert got == expected, prefix


# ---------------------------------------------------------------------------------------------
# prompt encoder


@pytest.mark.parametrize("grid,image_size", [(64, 1024), (32, 512)])
def test_prompt_encoder_matches_official(grid, image_size):
    official, own = paired(official_prompt_encoder(grid, image_size), own_prompt_encoder(grid, image_size))
    generator = torch.Generator().manual_seed(1)
    coords = torch.rand(2, 3, 2, generator=generator) * image_size
    labels = torch.tensor([[1, 0, -1], [1, 1, 0]])
    boxes = torch.tensor([[10.0, 20.0, 300.0, 400.0], [0.0, 0.0, 100.5, 50.0]])
    masks = torch.randn(2, 1, 4 * grid, 4 * grid, generator=generator)

    cases = {
        "points": ((coords, labels), None, None),
        "box+points": ((coords, labels), boxes, None),
        "box": (None, boxes, None),
        "mask": (None, None, masks),
        "points+mask": ((coords, labels), None, masks),
        "nothing": (None, None, None),
    }
    with torch.no_grad():
        for name, prompts in cases.items():
            ref_sparse, ref_dense = official(*prompts)
            sparse, dense = own(*prompts)
            assert sparse.shape == ref_sparse.shape, name
            assert max_diff(sparse, ref_sparse) <= TOLERANCE, name
            assert max_diff(dense, ref_dense) <= TOLERANCE, name
        assert max_diff(own.get_dense_pe(), official.get_dense_pe()) <= TOLERANCE
    # points alone get one padding token; a box replaces it
    assert own((coords, labels), None, None)[0].shape[1] == 4
    assert own((coords, labels), boxes, None)[0].shape[1] == 5


def test_prompt_encoder_rejects_bad_prompts():
    encoder = own_prompt_encoder(16, 256)
    coords = torch.zeros(1, 2, 2)
    with pytest.raises(ValueError, match="labels must be"):
        encoder((coords, torch.tensor([[1, 4]])), None, None)
    with pytest.raises(ValueError, match="batch size"):
        encoder((coords, torch.tensor([[1, 0]])), torch.zeros(2, 4), None)
    with pytest.raises(ValueError, match="mask prompts"):
        encoder(None, None, torch.zeros(1, 1, 16, 16))


# ---------------------------------------------------------------------------------------------
# mask decoder


def decoder_inputs(batch: int, grid: int, seed: int = 2, dense_from_mask: bool = True):
    generator = torch.Generator().manual_seed(seed)
    image = torch.randn(1, 256, grid, grid, generator=generator)
    image_pe = torch.randn(1, 256, grid, grid, generator=generator)
    sparse = torch.randn(batch, 3, 256, generator=generator)
    dense = torch.randn(batch, 256, grid, grid, generator=generator)
    feat_s0 = torch.randn(1, 32, 4 * grid, 4 * grid, generator=generator)
    feat_s1 = torch.randn(1, 64, 2 * grid, 2 * grid, generator=generator)
    return image, image_pe, sparse, dense, [feat_s0, feat_s1]


def run_both(official, own, inputs, multimask_output, repeat_image=True, high_res=True):
    image, image_pe, sparse, dense, high_res_features = inputs
    if not repeat_image:
        image = image.expand(sparse.shape[0], -1, -1, -1).contiguous()
    kwargs = {
        "image_embeddings": image,
        "image_pe": image_pe,
        "sparse_prompt_embeddings": sparse,
        "dense_prompt_embeddings": dense,
        "multimask_output": multimask_output,
        "repeat_image": repeat_image,
        "high_res_features": high_res_features if high_res else None,
    }
    with torch.no_grad():
        reference = official(**kwargs)
        result = own(**kwargs)
    assert isinstance(result, MaskDecoderOutput)
    return reference, result


def assert_decoder_equal(reference, result):
    masks, iou, tokens, scores = reference
    assert max_diff(result.masks, masks) <= TOLERANCE
    assert max_diff(result.iou_pred, iou) <= TOLERANCE
    assert max_diff(result.sam_tokens, tokens) <= TOLERANCE
    assert max_diff(result.object_score_logits, scores) <= TOLERANCE


@pytest.mark.parametrize("multimask_output", [True, False])
def test_mask_decoder_matches_official_sam21_settings(multimask_output):
    official, own = paired(official_mask_decoder(), own_mask_decoder())
    reference, result = run_both(official, own, decoder_inputs(batch=2, grid=16), multimask_output)
    assert_decoder_equal(reference, result)
    expected_masks = 3 if multimask_output else 1
    assert result.masks.shape == (2, expected_masks, 64, 64)
    assert result.sam_tokens.shape == (2, expected_masks, 256)


@pytest.mark.parametrize("multimask_output", [True, False])
def test_mask_decoder_matches_official_plain_options(multimask_output):
    """No high-res features, no object-score token, linear IoU, no dynamic fallback."""
    overrides = {
        "use_high_res_features": False,
        "iou_prediction_use_sigmoid": False,
        "dynamic_multimask_via_stability": False,
        "pred_obj_scores": False,
        "pred_obj_scores_mlp": False,
        "use_multimask_token_for_obj_ptr": False,
    }
    official, own = paired(official_mask_decoder(**overrides), own_mask_decoder(**overrides), seed=3)
    reference, result = run_both(
        official, own, decoder_inputs(batch=2, grid=16), multimask_output, repeat_image=False, high_res=False
    )
    assert_decoder_equal(reference, result)
    assert result.sam_tokens.shape[1] == 1
    assert torch.all(result.object_score_logits == 10.0)


def test_mask_decoder_linear_object_score_head_matches_official():
    overrides = {"pred_obj_scores_mlp": False}
    official, own = paired(official_mask_decoder(**overrides), own_mask_decoder(**overrides), seed=4)
    assert isinstance(own.pred_obj_score_head, nn.Linear)
    reference, result = run_both(official, own, decoder_inputs(batch=1, grid=16), multimask_output=False)
    assert_decoder_equal(reference, result)


def test_mask_decoder_stability_fallback_triggers_like_official():
    """A single-mask token whose logits are all zero is unstable: the best multimask output wins."""
    official, own = paired(official_mask_decoder(), own_mask_decoder(), seed=5)
    with torch.no_grad():
        for decoder in (official, own):
            last = decoder.output_hypernetworks_mlps[0].layers[-1]
            last.weight.zero_()
            last.bias.zero_()
    inputs = decoder_inputs(batch=2, grid=16)
    reference, result = run_both(official, own, inputs, multimask_output=False)
    assert_decoder_equal(reference, result)

    # the fallback really happened: output = best-IoU multimask mask, not token 0's zeros
    with torch.no_grad():
        all_masks, all_iou, _, _ = own.predict_masks(
            *inputs[:4], repeat_image=True, high_res_features=inputs[4]
        )
    best = all_iou[:, 1:].argmax(dim=1)
    for item in range(2):
        assert torch.equal(result.masks[item, 0], all_masks[item, 1 + best[item]])
        assert result.iou_pred[item, 0] == all_iou[item, 1 + best[item]]
    assert result.masks.abs().amax() > 0

    # while training, no fallback: token 0 is returned
    own.train()
    with torch.no_grad():
        trained = own(*inputs[:4], multimask_output=False, repeat_image=True, high_res_features=inputs[4])
    assert torch.all(trained.masks == 0)


def test_stability_selection_mixed_batch_matches_official():
    """One stable and one unstable item in the same batch."""
    official, own = official_mask_decoder(), own_mask_decoder()
    generator = torch.Generator().manual_seed(6)
    masks = torch.randn(4, 4, 10, 10, generator=generator)
    masks[0, 0] = 5.0  # stable: every pixel above +delta
    masks[1, 0] = 0.04 * torch.rand(10, 10, generator=generator) - 0.02  # unstable: inside (-delta, delta)
    masks[2, 0] = -5.0  # empty union: stability 1
    masks[3, 0] = 5.0
    masks[3, 0, 0, :2] = 0.0  # stability 98/100, exactly the threshold: kept
    iou = torch.rand(4, 4, generator=generator)
    ref_masks, ref_iou = official._dynamic_multimask_via_stability(masks, iou)
    got_masks, got_iou = own._select_stable(masks, iou)
    assert torch.equal(got_masks, ref_masks) and torch.equal(got_iou, ref_iou)
    for stable in (0, 2, 3):
        assert torch.equal(got_masks[stable, 0], masks[stable, 0])
    assert not torch.equal(got_masks[1, 0], masks[1, 0])


def test_mask_decoder_requires_high_res_features_when_configured():
    own = own_mask_decoder().eval()
    image, image_pe, sparse, dense, _ = decoder_inputs(batch=1, grid=8)
    with pytest.raises(ValueError, match="high_res_features"):
        own(image, image_pe, sparse, dense, multimask_output=True, repeat_image=True, high_res_features=None)


# ---------------------------------------------------------------------------------------------
# memory encoder


@pytest.mark.parametrize("skip_mask_sigmoid", [False, True])
def test_memory_encoder_matches_official(skip_mask_sigmoid):
    official, own = paired(official_memory_encoder(), MemoryEncoder(out_dim=64, in_dim=256), seed=7)
    generator = torch.Generator().manual_seed(8)
    pix_feat = torch.randn(2, 256, 16, 16, generator=generator)
    masks = 10 * torch.randn(2, 1, 256, 256, generator=generator)
    if skip_mask_sigmoid:
        masks = masks.sigmoid()
    with torch.no_grad():
        reference = official(pix_feat, masks, skip_mask_sigmoid=skip_mask_sigmoid)
        features, pos = own(pix_feat, masks, skip_mask_sigmoid=skip_mask_sigmoid)
    assert features.shape == (2, 64, 16, 16)
    assert max_diff(features, reference["vision_features"]) <= TOLERANCE
    assert max_diff(pos, reference["vision_pos_enc"][0]) <= TOLERANCE


# ---------------------------------------------------------------------------------------------
# memory attention


def memory_attention_inputs(grid: int, num_frames: int, num_ptr: int, batch: int = 2, seed: int = 9):
    generator = torch.Generator().manual_seed(seed)
    tokens = grid * grid
    memory_len = num_frames * tokens + num_ptr
    curr = torch.randn(tokens, batch, 256, generator=generator)
    curr_pos = torch.randn(tokens, batch, 256, generator=generator)
    memory = torch.randn(memory_len, batch, 64, generator=generator)
    memory_pos = torch.randn(memory_len, batch, 64, generator=generator)
    return curr, memory, curr_pos, memory_pos


@pytest.mark.parametrize(
    "options", [MEMORY_ATTENTION_T, MEMORY_ATTENTION_ALT], ids=["hiera_t", "all_switches"]
)
def test_memory_attention_matches_official(options):
    official, own = paired(
        official_memory_attention(options, feat_sizes=(16, 16), num_layers=1),
        MemoryAttention(num_layers=1, feat_sizes=(16, 16), **options),
        seed=10,
    )
    # config grid, then the smaller grid of a half-size input (tables rebuilt), then back again
    for grid, num_ptr in [(16, 0), (16, 4), (8, 0), (8, 4), (16, 4)]:
        curr, memory, curr_pos, memory_pos = memory_attention_inputs(grid, num_frames=2, num_ptr=num_ptr)
        with torch.no_grad():
            reference = official(curr, memory, curr_pos, memory_pos, num_obj_ptr_tokens=num_ptr)
            result = own(curr, memory, curr_pos, memory_pos, num_obj_ptr_tokens=num_ptr)
        assert result.shape == curr.shape
        assert max_diff(result, reference) <= TOLERANCE, (grid, num_ptr)


def test_memory_attention_precomputed_memory_matches_direct():
    own = randomize_(MemoryAttention(num_layers=2, feat_sizes=(8, 8), **MEMORY_ATTENTION_T), seed=11)
    curr, memory, curr_pos, memory_pos = memory_attention_inputs(8, num_frames=3, num_ptr=4)
    with torch.no_grad():
        direct = own(curr, memory, curr_pos, memory_pos, num_obj_ptr_tokens=4)
        # keys/values computed frame by frame and concatenated equal those of the whole memory
        tokens = 64
        memory_b, pos_b = memory.transpose(0, 1), memory_pos.transpose(0, 1)
        cached = []
        for layer in own.layers:
            pieces = [
                layer.memory_keys_values(
                    memory_b[:, f * tokens : (f + 1) * tokens],
                    pos_b[:, f * tokens : (f + 1) * tokens],
                    tokens,
                )
                for f in range(3)
            ]
            pieces.append(
                layer.memory_keys_values(
                    memory_b[:, 3 * tokens :], pos_b[:, 3 * tokens :], tokens, num_k_exclude_rope=4
                )
            )
            cached.append(tuple(torch.cat(parts, dim=2) for parts in zip(*pieces)))
        from_cache = own(curr, None, curr_pos, None, num_obj_ptr_tokens=4, memory_kv=cached)
    assert max_diff(from_cache, direct) <= TOLERANCE


# ---------------------------------------------------------------------------------------------
# rotary attention details


def test_rope_tables_are_cached_per_grid():
    attention = RoPEAttention(64, 1, feat_sizes=(8, 8))
    cos_a, _ = attention.rotary_tables(64, torch.device("cpu"))
    cos_b, _ = attention.rotary_tables(64, torch.device("cpu"))
    assert cos_a is cos_b
    cos_small, _ = attention.rotary_tables(16, torch.device("cpu"))
    assert cos_small.shape == (16, 32)
    assert len(attention._tables) == 2
    with pytest.raises(ValueError, match="square grid"):
        attention.rotary_tables(12, torch.device("cpu"))


def test_rope_attention_matches_official_with_grad_and_errors():
    official = official_tf.RoPEAttention(64, 2, rope_k_repeat=True, feat_sizes=(4, 4))
    own = RoPEAttention(64, 2, rope_k_repeat=True, feat_sizes=(4, 4))
    official, own = paired(official, own, seed=12)
    generator = torch.Generator().manual_seed(13)
    q = torch.randn(3, 16, 64, generator=generator, requires_grad=True)
    k = torch.randn(3, 16 * 2 + 5, 64, generator=generator)
    with torch.inference_mode():
        own(q.detach(), k, k, num_k_exclude_rope=5)  # builds the tables in inference mode
    out = own(q, k, k, num_k_exclude_rope=5)
    assert max_diff(out, official(q, k, k, num_k_exclude_rope=5)) <= TOLERANCE
    out.sum().backward()  # tables built in inference mode must still allow gradients
    assert q.grad is not None and torch.isfinite(q.grad).all()
    with pytest.raises(ValueError, match="whole frames"):
        own(q, k, k, num_k_exclude_rope=4)
    plain = RoPEAttention(64, 2, feat_sizes=(4, 4))
    with pytest.raises(ValueError, match="rope_k_repeat"):
        plain(q, k, k, num_k_exclude_rope=5)


# ---------------------------------------------------------------------------------------------
# same-position start of the memory cross-attention (training from scratch)


def _response_to_one_memory_token(attention: MemoryAttention, grid: int, marked: int) -> torch.Tensor:
    """How much each frame token's output moves when one memory token (at ``marked``) changes."""
    torch.manual_seed(0)
    tokens = grid * grid
    curr = torch.randn(tokens, 1, attention.d_model)
    memory = torch.randn(tokens, 1, 64)
    changed = memory.clone()
    changed[marked] += 0.05 * torch.randn(64)  # small: it moves the values, hardly the weights
    zeros = torch.zeros_like(memory)  # no position encodings: only the rotary one remains
    with torch.no_grad():
        before = attention(curr, memory, torch.zeros_like(curr), zeros)
        after = attention(curr, changed, torch.zeros_like(curr), zeros)
    return (after - before).norm(dim=-1)[:, 0]


def test_same_position_init_makes_each_frame_token_read_its_own_place_in_memory():
    grid, marked = 8, 27
    kwargs = {"d_model": 128, "num_layers": 1, "dim_feedforward": 256, "dropout": 0.0, "feat_sizes": (grid, grid)}
    torch.manual_seed(1)
    default = MemoryAttention(**kwargs).eval()
    torch.manual_seed(1)
    local = MemoryAttention(**kwargs).eval()
    local.prefer_same_position(3.0)

    spread = _response_to_one_memory_token(default, grid, marked)
    focused = _response_to_one_memory_token(local, grid, marked)
    assert int(focused.argmax()) == marked
    # Random init attends almost uniformly: the change reaches every token about equally.
    assert spread.max() < 3 * spread.median()
    assert focused[marked] > 10 * focused.median()

    import sam2s

    model = sam2s.build_model("sam2s_demo")
    bias = model.memory_attention.layers[0].cross_attn_image.q_proj.bias
    assert torch.all(bias == model.config.memory_attention.same_position_init)
    assert sam2s.build_model("sam2.1_hiera_mini").config.memory_attention.same_position_init == 0.0


def test_nearby_prompt_init_scores_a_click_highest_at_the_image_tokens_under_it():
    """With ``mask_decoder.prompt_position_init`` every prompt/image attention starts with one
    shared orthonormal query/key projection, so a click's positional encoding scores highest
    against the image token it falls on (default init: no such preference)."""
    import sam2s

    model = sam2s.build_model("sam2s_demo")
    assert model.config.mask_decoder.prompt_position_init > 0
    transformer = model.sam_mask_decoder.transformer
    attentions = [transformer.final_attn_token_to_image] + [
        a for layer in transformer.layers for a in (layer.cross_attn_token_to_image, layer.cross_attn_image_to_token)
    ]
    encoder = model.sam_prompt_encoder
    grid = model.embedding_grid
    token_pe = encoder.get_dense_pe()[0].flatten(1).T  # (grid*grid, C)
    hits = 0
    for row, col in [(1, 1), (2, 6), (5, 3), (6, 6)]:
        click = torch.tensor([[[(col + 0.5) * model.image_size / grid - 0.5, (row + 0.5) * model.image_size / grid - 0.5]]])
        click_pe = encoder.pe_layer.forward_with_coords(click + 0.5, (model.image_size, model.image_size))[0, 0]
        for attention in attentions:
            assert torch.equal(attention.q_proj.weight, attention.k_proj.weight)
            assert not attention.q_proj.bias.any() and not attention.k_proj.bias.any()
            scores = attention.k_proj(token_pe) @ attention.q_proj(click_pe)
            hits += int(scores.argmax()) == row * grid + col
    assert hits == 4 * len(attentions)
    default = sam2s.build_model("sam2.1_hiera_mini").sam_mask_decoder.transformer.layers[0]
    assert not torch.equal(default.cross_attn_token_to_image.q_proj.weight, default.cross_attn_token_to_image.k_proj.weight)
