"""Training: prompt simulation, DiveMem hybrid sampling, losses as configured, exact resume,
two gloo processes equal to one, and the shipped demo model tracking held-out synthetic data."""

from __future__ import annotations

import argparse
import itertools
import json
import os
import socket
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from sam2s.data.synthetic import write_synthetic_dataset
from sam2s.semantics.text_encoders import default_class_names
from sam2s.semantics.vocabulary_bank import VocabularyBank
from sam2s.training import TrainConfig, Trainer
from sam2s.training.clips import TrainingClip
from sam2s.training.demo import small_check, write_image_set
from sam2s.training.prompts import (
    PromptKind,
    PromptSimulationConfig,
    box_prompt,
    choose_prompt_kind,
    click_from_error,
    frames_to_correct,
)
from sam2s.training.sampling import (
    ClipSampler,
    DistributedClipSampler,
    ImageEntry,
    SamplingConfig,
    SequenceEntry,
    contiguous_clip,
    hybrid_clip,
)
from sam2s.training.tracking import ClipTrainingModule
from sam2s.training.trainer import build_optimizer, config_from_args, layer_decay_scale

TINY_SIZE = 64
TINY_OVERRIDES = {"image_size": TINY_SIZE, "memory_attention.feat_sizes": [TINY_SIZE // 16] * 2}


# ----------------------------------------------------------------------------------------------
# Fixtures
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("training_data")
    write_synthetic_dataset(
        root / "videos", num_videos=2, num_frames=12, height=64, width=64, seed=3, volumes=1, progress=False
    )
    write_image_set(root / "images", num_videos=1, frames_per_video=2, size=64, seed=3)
    return root


def random_bank(seed: int = 0) -> VocabularyBank:
    names = default_class_names()
    generator = torch.Generator().manual_seed(seed)
    return VocabularyBank(names, torch.randn(len(names), 384, generator=generator), "random-test")


def tiny_config(root: Path, out_dir: Path, **changes) -> TrainConfig:
    config = TrainConfig(
        model="sam2s_mini",
        model_overrides=dict(TINY_OVERRIDES),
        out_dir=str(out_dir),
        steps=4,
        batch_size=1,
        log_every=1,
        checkpoint_every=100,
        threads=1,
        device="cpu",
    )
    config = config.replace(
        **{
            "data.videos": [str(root / "videos")],
            "data.volumes": [str(root / "videos" / "volumes")],
            "data.images": [str(root / "images")],
            "prompts.correction_clicks": 1,
            "sampling.num_frames": 4,  # 1 conditioning + 2 long-term + 1 consecutive frame when hybrid
            "sampling.max_objects": 2,
            "optim.lr": 1e-3,
            "optim.image_encoder_lr": 1e-3,
        }
    )
    return config.replace(**changes) if changes else config


# ----------------------------------------------------------------------------------------------
# Prompt simulation
# ----------------------------------------------------------------------------------------------


def test_prompt_kinds_follow_sam2_proportions():
    config = PromptSimulationConfig()
    rng = np.random.default_rng(0)
    videos = Counter(choose_prompt_kind(rng, config, 8) for _ in range(4000))
    assert abs(videos[PromptKind.MASK] / 4000 - 0.5) < 0.03
    assert abs(videos[PromptKind.BOX] / 4000 - 0.25) < 0.03
    assert abs(videos[PromptKind.CLICKS] / 4000 - 0.25) < 0.03
    images = Counter(choose_prompt_kind(rng, config, 1) for _ in range(2000))
    assert images[PromptKind.MASK] == 0  # a mask prompt on a lone image would be its own answer
    assert abs(images[PromptKind.BOX] / 2000 - 0.5) < 0.04


def test_corrections_on_first_frame_and_at_most_one_more():
    config = PromptSimulationConfig()
    rng = np.random.default_rng(1)
    assert frames_to_correct(rng, config, 8, PromptKind.MASK) == []
    counts = Counter()
    for _ in range(600):
        frames = frames_to_correct(rng, config, 8, PromptKind.CLICKS)
        assert frames[0] == 0 and frames == sorted(set(frames)) and all(0 <= t < 8 for t in frames)
        counts[len(frames)] += 1
    assert set(counts) == {1, 2} and abs(counts[1] / 600 - 0.5) < 0.08


def test_clicks_come_from_the_error_region():
    generator = torch.Generator().manual_seed(0)
    target = torch.zeros(4, 16, 16, dtype=torch.bool)
    target[:, 4:12, 4:12] = True
    predicted = target.clone()
    predicted[0, 4:12, 4:8] = False  # object 0: missed left half -> positive click there
    predicted[1, 0:3, 0:3] = True  # object 1: false positive corner -> negative click there
    target[3] = False  # object 3: empty target, predicted perfectly -> negative background click
    predicted[3] = False
    for _ in range(20):
        click = click_from_error(predicted, target, generator)
        (x0, y0), (x1, y1), (x2, y2), (x3, y3) = click.coords[:, 0].long().tolist()
        assert click.labels[:, 0].tolist() == [1, 0, 1, 0]
        assert 4 <= x0 < 8 and 4 <= y0 < 12
        assert x1 < 3 and y1 < 3
        assert 4 <= x2 < 12 and 4 <= y2 < 12  # perfect prediction: a click inside the object
        assert not target[3, y3, x3]
    first = click_from_error(torch.zeros_like(target[:1]), target[:1], generator)  # SAM 2's first click
    x, y = first.coords[0, 0].long().tolist()
    assert first.labels.item() == 1 and target[0, y, x]


def test_box_prompt_is_tight_without_noise_and_bounded_with_it():
    target = torch.zeros(1, 32, 32, dtype=torch.bool)
    target[0, 5:20, 8:30] = True
    exact = box_prompt(target, PromptSimulationConfig(box_noise=0.0), torch.Generator().manual_seed(0))
    assert exact.coords[0].tolist() == [[8.0, 5.0], [29.0, 19.0]] and exact.labels[0].tolist() == [2, 3]
    noisy_config = PromptSimulationConfig(box_noise=0.5, box_noise_bound=3.0)
    for seed in range(10):
        noisy = box_prompt(target, noisy_config, torch.Generator().manual_seed(seed)).coords[0]
        assert torch.all((noisy - exact.coords[0]).abs() <= 3.0 + 1e-6)
        assert torch.all(noisy >= 0) and torch.all(noisy <= 31) and torch.all(noisy[0] <= noisy[1])


# ----------------------------------------------------------------------------------------------
# Sampling
# ----------------------------------------------------------------------------------------------


def _presence(num_frames: int = 48, num_objects: int = 3) -> np.ndarray:
    presence = np.ones((num_frames, num_objects), dtype=bool)
    presence[:10, 0] = False  # object 1 enters at frame 10
    presence[30:, 2] = False  # object 3 leaves at frame 30
    return presence


def test_hybrid_clip_is_conditioning_plus_long_term_plus_consecutive():
    presence = _presence()
    long_term_frames = []
    for seed in range(200):
        reverse = seed % 2 == 1
        positions, roles = hybrid_clip(np.random.default_rng(seed), presence, 8, 2, reverse)
        assert roles == ["conditioning", "long_term", "long_term"] + ["short_term"] * 5
        conditioning, long_term, window = positions[0], positions[1:3], positions[3:]
        step = -1 if reverse else 1
        assert all(b - a == step for a, b in itertools.pairwise(window))
        assert conditioning not in window and len(set(positions)) == 8
        assert presence[conditioning].any()
        long_term_frames += long_term
    # long-term frames are drawn from the whole video
    assert min(long_term_frames) < 4 and max(long_term_frames) > 43
    assert hybrid_clip(np.random.default_rng(0), presence[:7], 8, 2, False) is None  # too short


def test_contiguous_clip_starts_where_an_object_is_visible():
    presence = np.zeros((20, 1), dtype=bool)
    presence[12:, 0] = True
    for seed in range(50):
        forward, roles = contiguous_clip(np.random.default_rng(seed), presence, 8, reverse=False)
        assert roles == ["conditioning"] + ["short_term"] * 7
        assert forward == list(range(forward[0], forward[0] + 8)) and presence[forward[0]].any()
        backward, _ = contiguous_clip(np.random.default_rng(seed), presence, 8, reverse=True)
        assert backward == sorted(backward, reverse=True) and presence[backward[0]].any()


def _sampler(seed: int = 0, **changes) -> ClipSampler:
    videos = [
        SequenceEntry("video", 0, i, f"v{i}", tuple(range(48)), (1, 2, 3), _presence()) for i in range(4)
    ]
    volumes = [SequenceEntry("volume", 0, 0, "ct", tuple(range(32)), (1, 2), np.ones((32, 2), bool))]
    images = [ImageEntry(0, i, f"i{i}", (1, 2, 3, 4, 5)) for i in range(3)]
    return ClipSampler(videos + volumes, images, SamplingConfig(**changes), seed=seed)


def test_sampler_mixes_images_one_to_four_and_hybrid_one_to_one():
    sampler = _sampler(max_objects=2)
    requests = [sampler.sample(i) for i in range(3000)]
    images = [r for r in requests if r.kind == "image"]
    sequences = [r for r in requests if r.kind != "image"]
    assert abs(len(images) / 3000 - 0.2) < 0.025  # images : videos = 1 : 4
    assert abs(np.mean([r.hybrid for r in sequences]) - 0.5) < 0.04
    assert abs(np.mean([r.reverse for r in sequences]) - 0.5) < 0.04
    assert any(r.kind == "volume" for r in sequences)
    for request in requests[:300]:
        assert 1 <= len(request.obj_ids) <= 2 and len(request.frame_indices) == len(request.roles)
        if request.kind == "video":  # every tracked object is visible on the prompted frame
            row = _presence()[request.frame_indices[0]]
            assert all(row[obj - 1] for obj in request.obj_ids)
    assert sampler.sample(17) == _sampler(max_objects=2).sample(17)  # a pure function of (seed, index)
    assert [_sampler(seed=5, max_objects=2).sample(i) for i in range(5)] != requests[:5]
    plain = _sampler(hybrid=False, image_fraction=0.0)
    assert not any(plain.sample(i).hybrid for i in range(200))
    assert all(plain.sample(i).kind != "image" for i in range(200))


def test_distributed_sampler_splits_each_global_batch():
    sampler = _sampler()
    single = DistributedClipSampler(sampler, 4, 0, 1)
    shards = [DistributedClipSampler(sampler, 4, rank, 2) for rank in range(2)]
    for step in range(3):
        joined = [i for shard in shards for i in shard.sample_indices(step)]
        assert joined == list(single.sample_indices(step)) == list(range(4 * step, 4 * step + 4))
    with pytest.raises(ValueError, match="multiple of the number of processes"):
        DistributedClipSampler(sampler, 3, 0, 2)


# ----------------------------------------------------------------------------------------------
# Losses and gradients
# ----------------------------------------------------------------------------------------------


def _clip(seed: int = 0, num_frames: int = 8) -> TrainingClip:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(num_frames, 3, TINY_SIZE, TINY_SIZE, generator=generator)
    masks = torch.zeros(num_frames, 2, TINY_SIZE, TINY_SIZE, dtype=torch.bool)
    for t in range(num_frames):
        masks[t, 0, 10 + t : 30 + t, 12:40] = True
        masks[t, 1, 40:60, 5 + t : 25 + t] = True
    roles = ("conditioning", "long_term", "long_term") + ("short_term",) * (num_frames - 3)
    return TrainingClip(
        images,
        masks,
        roles,
        (20, 3, 45, 10, 11, 12, 13, 14)[:num_frames],
        (1, 2),
        ("grasper", None),
        False,
        48,
        seed,
        "test",
    )


def _module(arl: bool = True, seed: int = 0) -> ClipTrainingModule:
    import sam2s

    torch.manual_seed(seed)
    model = sam2s.build_model("sam2s_mini", **TINY_OVERRIDES, arl=arl).train()
    bank = random_bank()
    model.set_vocabulary(bank)
    return ClipTrainingModule(
        model, PromptSimulationConfig(correction_clicks=1), bank.embeddings, bank.class_names
    )


def _seed_with(kind: PromptKind, num_frames: int = 8) -> int:
    """A clip seed whose simulated first-frame prompt is ``kind``."""
    for seed in range(1000):
        if choose_prompt_kind(np.random.default_rng(seed), PromptSimulationConfig(), num_frames) is kind:
            return seed
    raise AssertionError(f"no seed gives {kind}")


def test_arl_switch_changes_only_the_mask_term():
    clip = _clip(_seed_with(PromptKind.CLICKS, 4), num_frames=4)
    with_arl, without_arl = _module(arl=True), _module(arl=False)
    assert with_arl.loss.config.use_arl and not without_arl.loss.config.use_arl
    a, b = with_arl([clip]), without_arl([clip])
    for name in ("dice", "iou", "occlusion", "tsl"):
        torch.testing.assert_close(a[name], b[name])
    assert not torch.allclose(a["mask"], b["mask"])  # soft (Gaussian) vs hard focal targets
    total = 20 * a["mask"] + a["dice"] + a["iou"] + a["occlusion"] + 0.1 * a["tsl"]
    torch.testing.assert_close(a["total"], total)


def test_gradients_reach_divemem_embeddings_and_the_semantic_head():
    module = _module()
    clip = _clip(_seed_with(PromptKind.MASK))
    losses = module([clip])
    assert losses["tsl"] > 0  # the grasper has a category; the second object has none
    losses["total"].backward()
    model = module.model
    table = model.divemem_tpos_enc.grad[:, 0, 0]
    # a hybrid clip's last frame sees 4 earlier consecutive frames: short-term slots 2..5
    rows_used = [model.conditioning_row, model.long_term_row] + [
        model.num_maskmem - 1 - back for back in range(1, 5)
    ]
    for row in rows_used:
        assert table[row].abs().sum() > 0, f"no gradient in DiveMem temporal embedding row {row}"
    for name, param in model.semantic_head.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert model.memory_encoder.out_proj.weight.grad.abs().sum() > 0  # memories carry gradients


@pytest.mark.parametrize("for_tracking", [True, False])
def test_training_and_inference_decode_tracked_frames_alike(for_tracking, monkeypatch):
    """``tracker.multimask_output_for_tracking`` decides the candidates of frames tracked from
    memory in the training forward and in the predictor alike; prompted frames keep SAM 2's rule."""
    import sam2s
    from sam2s.modeling.sam2 import SAM2Model

    calls: list[tuple[int, bool]] = []
    decode = SAM2Model.decode

    def spy(self, conditioned, features, points, mask_logits, multimask):
        calls.append((0 if points is None else points.num_points, multimask))
        return decode(self, conditioned, features, points, mask_logits, multimask)

    monkeypatch.setattr(SAM2Model, "decode", spy)
    overrides = {**TINY_OVERRIDES, "tracker.multimask_output_for_tracking": for_tracking}
    model = sam2s.build_model("sam2s_mini", **overrides).train()
    module = ClipTrainingModule(model, PromptSimulationConfig(correction_clicks=0))
    module([_clip(_seed_with(PromptKind.CLICKS, 4), num_frames=4)])
    assert calls[0] == (1, True) and calls[1:] == [(0, for_tracking)] * 3

    calls.clear()
    session = sam2s.VideoPredictor(model.eval()).start(np.zeros((4, 64, 64, 3), dtype=np.uint8))
    session.add_prompt(frame_index=0, obj_id=1, points=[[30, 30]], labels=[1])
    list(session.propagate())
    assert calls[0] == (1, True) and set(calls[1:]) == {(0, for_tracking)}


def test_clip_losses_do_not_depend_on_the_global_generator():
    module = _module()
    clip = _clip(_seed_with(PromptKind.BOX, 4), num_frames=4)
    torch.manual_seed(1)
    first = module([clip])["total"]
    torch.manual_seed(2)
    second = module([clip])["total"]
    assert torch.equal(first, second)  # dropout and prompt draws come from the clip's seed


def test_layer_decay_and_weight_decay_groups():
    import sam2s

    model = sam2s.build_model("sam2s_mini", **TINY_OVERRIDES)
    blocks = len(model.image_encoder.trunk.blocks)
    assert layer_decay_scale("image_encoder.neck.convs.0.conv.weight", blocks, 0.5) == 1.0
    assert (
        layer_decay_scale(f"image_encoder.trunk.blocks.{blocks - 1}.mlp.layers.0.weight", blocks, 0.5) == 0.5
    )
    assert layer_decay_scale("image_encoder.trunk.blocks.0.attn.qkv.weight", blocks, 0.5) == 0.5**blocks
    assert layer_decay_scale("image_encoder.trunk.patch_embed.proj.weight", blocks, 0.5) == 0.5 ** (
        blocks + 1
    )
    assert layer_decay_scale("sam_mask_decoder.iou_token.weight", blocks, 0.5) is None
    config = TrainConfig(model="sam2s_mini").replace(
        **{
            "optim.lr": 1e-3,
            "optim.image_encoder_lr": 1e-4,
            "optim.layer_decay": 0.5,
            "optim.weight_decay": 0.1,
        }
    )
    optimizer = build_optimizer(model, config)
    lookup = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert lookup[id(named["sam_mask_decoder.iou_token.weight"])]["lr"] == 1e-3
    assert lookup[id(named["image_encoder.trunk.blocks.0.attn.qkv.weight"])]["lr"] == pytest.approx(
        1e-4 * 0.5**blocks
    )
    assert lookup[id(named["sam_mask_decoder.iou_token.weight"])]["weight_decay"] == 0.1
    assert lookup[id(named["image_encoder.trunk.blocks.0.attn.qkv.bias"])]["weight_decay"] == 0.0
    assert lookup[id(named["divemem_tpos_enc"])]["weight_decay"] == 0.0
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(named)


# ----------------------------------------------------------------------------------------------
# Trainer: exact resume, logs, command line
# ----------------------------------------------------------------------------------------------


def test_resumed_run_continues_bit_exactly(tiny_data, tmp_path):
    bank = random_bank()
    straight = Trainer(tiny_config(tiny_data, tmp_path / "straight"), vocabulary=bank, progress=False)
    straight.train()

    interrupted = Trainer(tiny_config(tiny_data, tmp_path / "resumed"), vocabulary=bank, progress=False)
    for _ in range(2):
        interrupted.log_steps([interrupted.train_step()])
    checkpoint = interrupted.save_checkpoint()
    interrupted.log_steps([interrupted.train_step()])  # logged, then lost in a crash before any checkpoint
    del interrupted
    torch.manual_seed(1234)  # a fresh process would start from another generator state
    resumed = Trainer(tiny_config(tiny_data, tmp_path / "resumed"), vocabulary=bank, progress=False)
    resumed.train(resume="auto")

    assert resumed.step == straight.step == 4
    for (name, a), (_, b) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), f"{name} differs after resume"

    state = torch.load(checkpoint, map_location="cpu", weights_only=True)  # plain data only
    assert {"model", "optimizer", "scheduler", "rng", "step", "samples_seen"} <= set(state)
    assert state["step"] == 2 and state["samples_seen"] == 2
    log = (tmp_path / "resumed" / "train.log").read_text()
    assert "resumed from" in log and "at step 2" in log and "finished 4 steps" in log
    # each run logs into its own file only, also when several trainers live in one process
    assert "resumed from" not in (tmp_path / "straight" / "train.log").read_text()
    assert list((tmp_path / "resumed" / "tensorboard").glob("events.out.tfevents.*"))
    logged_steps = [
        json.loads(line)["step"] for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    ]
    assert logged_steps == [1, 2, 3, 4]  # step 3 of the interrupted run was dropped and redone
    assert not list((tmp_path / "resumed" / "checkpoints").glob("*.tmp"))

    longer = Trainer(tiny_config(tiny_data, tmp_path / "longer", steps=6), vocabulary=bank, progress=False)
    longer.load_checkpoint(checkpoint)  # resumed with another --steps: the cosine ends at step 6
    schedule = longer.scheduler.lr_lambdas[0]
    assert schedule.total_steps == 6
    assert longer.scheduler.get_last_lr()[0] == pytest.approx(1e-3 * schedule(2))

    import sam2s

    exported = sam2s.build_model(
        "sam2s_mini", checkpoint=tmp_path / "straight" / "model_final.pt", **TINY_OVERRIDES
    )
    assert exported.class_names == bank.class_names
    torch.testing.assert_close(
        exported.state_dict()["divemem_tpos_enc"], straight.model.state_dict()["divemem_tpos_enc"]
    )


def test_cli_options_override_the_config_file(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("model: sam2s_mini\nsteps: 10\nsampling: {hybrid: true}\n")
    parser = argparse.ArgumentParser()
    from sam2s.training.trainer import add_arguments

    add_arguments(parser)
    args = parser.parse_args(
        [
            "--config",
            str(path),
            "--steps",
            "7",
            "--videos",
            "a",
            "b",
            "--set",
            "sampling.hybrid=false",
            "optim.warmup_steps=3",
        ]
    )
    config = config_from_args(args)
    assert (config.model, config.steps, config.data.videos) == ("sam2s_mini", 7, ["a", "b"])
    assert config.sampling.hybrid is False and config.optim.warmup_steps == 3
    with pytest.raises(ValueError, match="unknown training config option"):
        config_from_args(parser.parse_args(["--set", "sampling.nonsense=1"]))


# ----------------------------------------------------------------------------------------------
# Two gloo processes equal one process on the same global batch
# ----------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _gradients(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {
        name: (p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p))
        for name, p in trainer.model.named_parameters()
    }


def _gloo_worker(rank: int, world_size: int, port: int, root: str, out_dir: str) -> None:
    from sam2s.training import init_distributed

    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    context = init_distributed("cpu")
    try:
        config = tiny_config(Path(root), Path(out_dir) / "ddp", batch_size=2)
        trainer = Trainer(config, context, vocabulary=random_bank(), progress=False)
        losses = context.mean(trainer.forward_backward(0))
        if context.is_main:
            torch.save({"losses": losses, "grads": _gradients(trainer)}, Path(out_dir) / "ddp.pt")
        context.barrier()
    finally:
        context.shutdown()


def test_two_gloo_processes_match_one_process(tiny_data, tmp_path):
    mp.spawn(_gloo_worker, args=(2, _free_port(), str(tiny_data), str(tmp_path)), nprocs=2, join=True)
    distributed = torch.load(tmp_path / "ddp.pt", weights_only=True)

    single = Trainer(
        tiny_config(tiny_data, tmp_path / "single", batch_size=2), vocabulary=random_bank(), progress=False
    )
    losses = single.forward_backward(0)
    for name, value in losses.items():
        assert distributed["losses"][name] == pytest.approx(value, rel=1e-5, abs=1e-6), name
    grads = _gradients(single)
    assert any(g.abs().sum() > 0 for g in grads.values())
    for name, grad in grads.items():
        torch.testing.assert_close(distributed["grads"][name], grad, rtol=1e-4, atol=1e-6, msg=name)


# ----------------------------------------------------------------------------------------------
# The shipped demo model
# ----------------------------------------------------------------------------------------------


@pytest.mark.demo_model
def test_shipped_demo_model_meets_its_targets_and_reproduces_its_recorded_evaluation(tmp_path):
    """The float16-stored weights load into the float32 model; metrics.json beside them records the
    targets met on the held-out set, and ``small_check`` on a fresh held-out synthetic set gives the
    numbers it recorded."""
    import sam2s
    from sam2s.checkpoint import demo_checkpoint_path

    weights = demo_checkpoint_path()
    metrics = json.loads((weights.parent / "metrics.json").read_text())
    assert weights.stat().st_size <= 25 * 2**20
    assert metrics["jf"]["1click"] >= 0.80 and metrics["jf"]["3click"] >= 0.80
    assert min(metrics["jf"]["1click"], metrics["jf"]["3click"]) - metrics["baseline_first_mask_jf"] >= 0.20
    assert metrics["ct_mean_dice"] >= 0.6 and metrics["sample_clip"]["jf"] >= 0.75

    model = sam2s.build_model("sam2s_demo", checkpoint=weights)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as when the numbers were recorded
    try:
        measured = small_check(model, tmp_path / "held_out")
    finally:
        torch.set_num_threads(threads)
    for name, value in metrics["ci_check"].items():
        assert measured[name] == pytest.approx(value, abs=0.02), (name, measured, metrics["ci_check"])
