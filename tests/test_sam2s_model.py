"""SAM2S on top of SAM 2.1: parity with SAM 2, DiveMem in memory attention, TSL class scores,
checkpoints and ``sam2s convert``. Random weights on the mini architecture throughout."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from sam2s.checkpoint import CheckpointError, build_model, load_checkpoint, read_state_dict, save_checkpoint
from sam2s.config import CONFIG_DIR, load_config
from sam2s.convert import add_arguments, guess_sam2s_config, run
from sam2s.data.sources import ArraySource
from sam2s.memory import DiveMemPolicy, SAM2WindowPolicy
from sam2s.modeling.sam2 import SAM2Model
from sam2s.modeling.sam2s_model import SAM2SModel
from sam2s.predictor.video import Session, VideoPredictor
from sam2s.semantics import VocabularyBank

MANIFESTS = Path(__file__).parent / "data" / "reference" / "sam2.1_state_dicts"
# sam2.1_hiera_mini at the input size of sam2s_mini (the parity comparisons need the same size)
SAM21_AT_SAM2S_SIZE = {"image_size": 128, "memory_attention.feat_sizes": [8, 8]}
ALL_OFF = {"divemem.enabled": False, "semantic.enabled": False, "arl": False}
GRID_TOKENS = 8 * 8  # memory tokens per frame at input size 128
POINTER_TOKENS = 256 // 64  # an object pointer is split into C / mem_dim tokens


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These models are tiny: one thread is as fast alone and many times faster than two when
    other processes share the cores (two threads then spend their time waiting on each other)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def make_confident(model: SAM2Model) -> None:
    """Random weights put the object score near 0; scale and shift the score head so objects are
    present with a clear margin (otherwise every tracked mask would be -1024 and comparisons moot)."""
    head = model.sam_mask_decoder.pred_obj_score_head.layers[-1]
    with torch.no_grad():
        head.weight.mul_(40.0)
        head.bias.fill_(6.0)


@pytest.fixture(scope="module")
def sam21_checkpoint(tmp_path_factory) -> Path:
    """A SAM 2.1 checkpoint ({"model": state_dict}) saved from a random mini model."""
    torch.manual_seed(0)
    model = build_model("sam2.1_hiera_mini", **SAM21_AT_SAM2S_SIZE)
    make_confident(model)
    path = tmp_path_factory.mktemp("ckpt") / "sam2.1_mini.pt"
    torch.save({"model": model.state_dict()}, path)
    return path


def random_bank(names=("grasper", "hook", "clip applier", "liver"), dim=384, seed=0) -> VocabularyBank:
    embeddings = torch.randn(len(names), dim, generator=torch.Generator().manual_seed(seed))
    return VocabularyBank(tuple(names), embeddings, encoder_name="random-test")


def moving_shapes(num_frames: int, size: int = 64, present=lambda t: True, seed: int = 0) -> np.ndarray:
    """``(T, size, size, 3)`` uint8: a noisy background, a red disc (when ``present(t)``) and a
    green square that is always there."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    background = (rng.random((size, size, 3)) * 60 + 80).astype(np.uint8)
    frames = np.repeat(background[None], num_frames, axis=0)
    for t in range(num_frames):
        if present(t):
            cx = 20 + (t % 10)
            frames[t][(xx - cx) ** 2 + (yy - 24) ** 2 < 8**2] = (220, 40, 40)
        frames[t][(np.abs(xx - 46) < 6) & (np.abs(yy - 46) < 6)] = (40, 200, 60)
    return frames


def run_session(model, frames, policy_factory=None):
    session = Session(VideoPredictor(model, policy_factory=policy_factory), ArraySource(frames))
    prompted = [
        session.add_prompt(0, 1, points=[[24, 24]], labels=[1]),
        session.add_prompt(0, 2, box=[38, 38, 54, 54]),
        session.add_prompt(3, 1, points=[[26, 24], [46, 46]], labels=[1, 0]),
    ]
    return session, prompted + list(session.propagate("both"))


def assert_same_results(ours, reference) -> None:
    assert [r.frame_index for r in ours] == [r.frame_index for r in reference]
    for a, b in zip(ours, reference):
        assert torch.equal(a.logits, b.logits), f"frame {a.frame_index}: logits differ"
        assert torch.equal(a.object_scores, b.object_scores), f"frame {a.frame_index}: object scores differ"
        assert torch.equal(a.iou_scores, b.iou_scores), f"frame {a.frame_index}: IoU predictions differ"


# ---------------------------------------------------------------------------------- parity
def test_sam2s_with_every_part_off_equals_sam21(sam21_checkpoint):
    frames = moving_shapes(8)
    sam21 = build_model("sam2.1_hiera_mini", checkpoint=sam21_checkpoint, **SAM21_AT_SAM2S_SIZE)
    sam2s = SAM2SModel(load_config("sam2s_mini").replace(**ALL_OFF))
    load_checkpoint(sam2s, sam21_checkpoint)
    _, expected = run_session(sam21, frames)
    _, got = run_session(sam2s.eval(), frames)
    assert all(r.class_scores is None for r in got)
    assert any(bool((r.object_scores > 0).any()) for r in expected[3:])  # real masks, not all absent
    assert_same_results(got, expected)


def test_full_sam2s_from_sam21_equals_sam21_while_the_long_term_bank_is_empty(sam21_checkpoint):
    frames = moving_shapes(8)
    sam21 = build_model("sam2.1_hiera_mini", checkpoint=sam21_checkpoint, **SAM21_AT_SAM2S_SIZE)
    sam2s = build_model("sam2s_mini", checkpoint=sam21_checkpoint)
    assert isinstance(sam2s, SAM2SModel) and sam2s.divemem_tpos_enc is not None
    _, expected = run_session(sam21, frames)
    session, got = run_session(sam2s, frames)
    for obj in session.objects.values():
        assert isinstance(obj.policy, DiveMemPolicy) and len(obj.policy.long_term) == 0
    assert_same_results(got, expected)


# ---------------------------------------------------------------------------------- DiveMem
class FrameReader(ArraySource):
    """An array source that remembers which frame was read last (the frame being tracked)."""

    current = -1

    def read(self, index):
        self.current = index
        return super().read(index)


class RecordingDiveMem(DiveMemPolicy):
    """DiveMem that logs, per tracked frame, which frames it attends and as which kind."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.log: dict[int, list[tuple[int, str]]] = {}
        self.num_pointers: dict[int, int] = {}

    def select(self, memory, frame_index, reverse, num_frames):
        inputs = super().select(memory, frame_index, reverse, num_frames)
        stored = [*memory.conditioning.values(), *memory.recent.values(), *self.long_term]
        frame_of = {id(m.features): m.frame_index for m in stored if m.features is not None}
        self.log[frame_index] = [(frame_of[id(f.features)], f.kind) for f in inputs.frames]
        self.num_pointers[frame_index] = len(inputs.pointers)
        return inputs


def test_divemem_long_term_memory_reaches_memory_attention_after_a_long_absence():
    """A target present on frames 0-19, absent on 20-219, back on 220-229.

    With random weights neither the object score nor the IoU prediction means anything, so:
    the IoU head's last layer is shifted to predict > 0.95 (sigmoid of ~6), and the object score
    is an oracle (+10 where the red disc is in the frame, -10 elsewhere) written over the
    decoder's output. Then DiveMem's candidate rule fires while the target is present and
    never during the absence, as it would with a trained model.
    """
    absent = range(20, 220)
    frames = moving_shapes(230, present=lambda t: t not in absent)
    torch.manual_seed(3)
    model = build_model("sam2s_mini")
    iou_head = model.sam_mask_decoder.iou_prediction_head.layers[-1]
    with torch.no_grad():
        iou_head.weight.mul_(0.05)
        iou_head.bias.fill_(6.0)
    source = FrameReader(frames)
    decoder_forward = model.sam_mask_decoder.forward

    def oracle_presence(*args, **kwargs):
        out = decoder_forward(*args, **kwargs)
        score = -10.0 if source.current in absent else 10.0
        return dataclasses.replace(out, object_score_logits=torch.full_like(out.object_score_logits, score))

    model.sam_mask_decoder.forward = oracle_presence
    memory_tokens: dict[int, int] = {}

    def count_tokens(module, args, kwargs):
        memory_tokens[source.current] = int(kwargs["memory"].shape[0])

    hook = model.memory_attention.register_forward_pre_hook(count_tokens, with_kwargs=True)
    policies: list[RecordingDiveMem] = []

    def divemem_factory():
        policies.append(RecordingDiveMem(model.config.tracker, model.config.divemem))
        return policies[-1]

    def track(policy_factory):
        session = Session(VideoPredictor(model, policy_factory=policy_factory), source)
        session.add_prompt(0, 1, points=[[24, 24]], labels=[1])
        return {r.frame_index: r for r in session.propagate("forward")}

    with_divemem = track(divemem_factory)
    hook.remove()
    window = track(lambda: SAM2WindowPolicy(model.config.tracker))
    (policy,) = policies

    # long-term memories were made while the target was present, one from each full candidate
    # buffer (frames 5-9, 10-14, 15-19), and none during its absence
    long_term = [t for t, kind in policy.log[220] if kind == "long_term"]
    assert len(long_term) == 3 and [t // 5 for t in long_term] == [1, 2, 3]
    assert [t for t, kind in policy.log[220] if kind == "conditioning"] == [0]
    assert [t for t, kind in policy.log[220] if kind == "short_term"] == list(range(214, 220))
    for t in (150, 219, 225):
        assert [m for m, kind in policy.log[t] if kind == "long_term"] == long_term
    # and memory attention received them: 10 spatial memories + pointers (frame 0, 15 recent, 3 long-term)
    assert policy.num_pointers[220] == 1 + 15 + 3
    assert memory_tokens[220] == 10 * GRID_TOKENS + 19 * POINTER_TOKENS
    assert len(policy.long_term) <= 4 and len(policy.candidates) <= 5

    # SAM 2's window until the first long-term memory leaves the 6-frame short-term window and is
    # attended as long-term memory; different after the return
    first_use = min(t for t, entries in policy.log.items() if any(kind == "long_term" for _, kind in entries))
    assert first_use == long_term[0] + 7
    for t in range(first_use):
        assert torch.equal(with_divemem[t].logits, window[t].logits), f"frame {t}"
    after_return = [t for t in range(220, 230) if not torch.equal(with_divemem[t].logits, window[t].logits)]
    assert after_return == list(range(220, 230))


def test_a_resumed_divemem_session_tracks_on_exactly(sam21_checkpoint, tmp_path):
    model = build_model("sam2s_mini", checkpoint=sam21_checkpoint)
    iou_head = model.sam_mask_decoder.iou_prediction_head.layers[-1]
    with torch.no_grad():  # predicted IoU > 0.95 so that the candidate rule fires (random weights)
        iou_head.weight.mul_(0.05)
        iou_head.bias.fill_(6.0)
    model.set_vocabulary(random_bank())
    frames = moving_shapes(36)

    def start():
        return Session(VideoPredictor(model), ArraySource(frames))

    whole = start()
    whole.add_prompt(0, 1, points=[[24, 24]], labels=[1])
    expected = {r.frame_index: r for r in whole.propagate("forward")}

    first = start()
    first.add_prompt(0, 1, points=[[24, 24]], labels=[1])
    list(first.propagate("forward", max_frames=26))
    assert len(first.objects[1].policy.long_term) == 4
    torch.save(first.state_dict(), tmp_path / "session.pt")
    resumed = start()
    resumed.load_state_dict(torch.load(tmp_path / "session.pt", weights_only=True))
    rest = list(resumed.propagate("forward", start_frame=26))
    assert [r.frame_index for r in rest] == list(range(26, 36))
    for result in rest:
        assert torch.equal(result.logits, expected[result.frame_index].logits), result.frame_index
        assert result.class_scores == expected[result.frame_index].class_scores
    policy = resumed.objects[1].policy
    assert [m.frame_index for m in policy.long_term] == [
        m.frame_index for m in whole.objects[1].policy.long_term
    ]


# ---------------------------------------------------------------------------------- TSL
def test_class_scores_are_per_object_probabilities_over_the_class_bank(sam21_checkpoint):
    model = build_model("sam2s_mini", checkpoint=sam21_checkpoint)
    frames = moving_shapes(4)
    session = Session(VideoPredictor(model), ArraySource(frames))
    assert session.add_prompt(0, 1, points=[[24, 24]], labels=[1]).class_scores is None  # no bank yet
    bank = random_bank()
    model.set_vocabulary(bank)
    session.add_prompt(0, 7, mask=np.pad(np.ones((10, 10), bool), ((40, 14), (40, 14))))
    results = list(session.propagate("forward"))
    for result in results:
        assert sorted(result.class_scores) == [1, 7]
        for scores in result.class_scores.values():
            assert list(scores) == list(bank.class_names)
            assert sum(scores.values()) == pytest.approx(1.0, abs=1e-5)
    # the probabilities are the softmax of 100 x cosine similarity to the bank
    embedding = session.objects[1].memory.latest(3).class_embedding
    cosine = torch.nn.functional.cosine_similarity(embedding[None], bank.embeddings, dim=-1)
    expected = torch.softmax(100.0 * cosine, dim=0)
    got = torch.tensor(list(results[-1].class_scores[1].values()))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def test_class_embedding_is_differentiable_for_the_tsl_loss():
    from sam2s.losses import tsl_loss

    torch.manual_seed(0)
    model = build_model("sam2s_mini").train()
    model.set_vocabulary(random_bank())
    features = model.encode_image(torch.randn(2, 3, 128, 128))
    conditioned = model.condition_on_memory(features, None)
    embeddings = model.class_embedding(features, conditioned, None)
    assert embeddings.shape == (2, 384)
    loss = tsl_loss(embeddings, model.class_bank, torch.tensor([1, -1]), logit_scale=model.logit_scale)
    loss.backward()
    assert model.semantic_head.class_token.grad is not None
    assert model.semantic_head.class_token.grad.abs().sum() > 0


def test_set_vocabulary_checks_the_embedding_width():
    model = build_model("sam2s_mini")
    with pytest.raises(ValueError, match="text_dim"):
        model.set_vocabulary(random_bank(dim=512))
    with pytest.raises(RuntimeError, match="no class bank"):
        model.class_probabilities(torch.zeros(384))


# ---------------------------------------------------------------------------------- checkpoints
VARIANTS = {
    "all": {},
    "divemem_only": {"semantic.enabled": False, "arl": False},
    "divemem_without_embeddings": {"divemem.temporal_embeddings": False, "semantic.enabled": False},
    "tsl_only": {"divemem.enabled": False, "arl": False},
    "arl_only": {"divemem.enabled": False, "semantic.enabled": False},
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_a_sam21_checkpoint_loads_into_every_sam2s_variant(sam21_checkpoint, variant):
    sam21_state = torch.load(sam21_checkpoint, weights_only=True)["model"]
    model = build_model("sam2s_mini", checkpoint=sam21_checkpoint, **VARIANTS[variant])
    assert isinstance(model, SAM2SModel)
    state = model.state_dict()
    assert set(state) - set(sam21_state) == {k for k in state if k.startswith(("divemem_", "semantic_head."))}
    for key, value in sam21_state.items():
        assert torch.equal(state[key], value), key
    config = model.config
    assert (model.divemem_tpos_enc is not None) == (
        config.divemem.enabled and config.divemem.temporal_embeddings
    )
    assert (model.semantic_head is not None) == config.semantic.enabled
    if model.divemem_tpos_enc is not None:  # initialised from SAM 2.1's temporal encodings
        table = sam21_state["maskmem_tpos_enc"]
        assert torch.equal(model.divemem_tpos_enc[:7], table)
        assert torch.equal(model.divemem_tpos_enc[7], table[6])


def test_sam2s_checkpoints_round_trip(tmp_path, sam21_checkpoint, caplog):
    model = build_model("sam2s_mini", checkpoint=sam21_checkpoint)
    with torch.no_grad():  # make the SAM2S parameters distinguishable from a fresh initialisation
        model.divemem_tpos_enc.add_(1.0)
        model.semantic_head.class_token.mul_(3.0)
    model.set_vocabulary(random_bank())
    path = save_checkpoint(model, tmp_path / "sam2s.pt")
    assert [p.name for p in tmp_path.iterdir()] == ["sam2s.pt"]  # no temporary file left behind
    payload = torch.load(path, map_location="cpu", weights_only=True)
    assert payload["config"]["name"] == "sam2s_mini"
    assert payload["vocabulary"]["class_names"] == list(random_bank().class_names)

    loaded = build_model("sam2s_mini", checkpoint=path)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert loaded.class_names == model.class_names
    assert torch.equal(loaded.class_bank, model.class_bank)

    # the same checkpoint evaluated with TSL switched off: its semantic head is ignored, with a warning
    with caplog.at_level(logging.WARNING, logger="sam2s.checkpoint"):
        ablated = build_model("sam2s_mini", checkpoint=path, **{"semantic.enabled": False})
    assert "semantic_head" in caplog.text and ablated.semantic_head is None
    assert torch.equal(ablated.divemem_tpos_enc, model.divemem_tpos_enc)


@pytest.mark.parametrize("size", ["t", "s", "b+", "l"])
def test_sam2s_configs_have_sam21_weights_plus_their_own(size):
    config = load_config(f"sam2s_hiera_{size}")
    assert config.image_size == 512 and config.memory_attention.feat_sizes == [32, 32]
    assert config.divemem.enabled and config.semantic.enabled and config.arl
    assert guess_sam2s_config_from_manifest(size) == f"sam2s_hiera_{size}"
    with torch.device("meta"):
        model = SAM2SModel(config)
    manifest = {
        key: shape for key, shape, _ in json.loads((MANIFESTS / f"sam2.1_hiera_{size}.json").read_text())
    }
    ours = {key: list(value.shape) for key, value in model.state_dict().items()}
    sam2s_only = {k for k in ours if k.startswith(("divemem_", "semantic_head."))}
    assert {k: v for k, v in ours.items() if k not in sam2s_only} == manifest
    assert ours["divemem_tpos_enc"] == [8, 1, 1, 64]


def guess_sam2s_config_from_manifest(size: str) -> str:
    entries = json.loads((MANIFESTS / f"sam2.1_hiera_{size}.json").read_text())
    fake = {key: torch.empty(shape, device="meta") for key, shape, _ in entries}
    return guess_sam2s_config(fake)


# ---------------------------------------------------------------------------------- convert
def convert_args(*argv: str) -> argparse.Namespace:
    return add_arguments(argparse.ArgumentParser()).parse_args(list(argv))


def test_convert_with_a_vocabulary_bank_file(tmp_path, sam21_checkpoint, capsys):
    bank_path = random_bank().save(tmp_path / "bank.pt")
    output = tmp_path / "out" / "sam2s_mini.pt"
    args = convert_args(
        "--input",
        str(sam21_checkpoint),
        "--output",
        str(output),
        "--model",
        "sam2s_mini",
        "--vocabulary-bank",
        str(bank_path),
    )
    assert run(args) == 0
    assert "sam2s_mini" in capsys.readouterr().out
    state, _extras = read_state_dict(output)
    assert "divemem_tpos_enc" in state and any(k.startswith("semantic_head.") for k in state)
    model = build_model("sam2s_mini", checkpoint=output)
    assert model.class_names == random_bank().class_names
    sam21 = torch.load(sam21_checkpoint, weights_only=True)["model"]
    assert torch.equal(model.divemem_tpos_enc[7], sam21["maskmem_tpos_enc"][6])
    with pytest.raises(FileExistsError, match="--force"):
        run(args)
    assert (
        run(
            convert_args(
                "--input",
                str(sam21_checkpoint),
                "--output",
                str(output),
                "--model",
                "sam2s_mini",
                "--no-class-bank",
                "--force",
            )
        )
        == 0
    )
    assert "vocabulary" not in read_state_dict(output)[1]


def test_convert_builds_the_default_class_bank_with_minilm(tmp_path, sam21_checkpoint):
    pytest.importorskip("sentence_transformers", reason="MiniLM is part of the test environment")
    output = tmp_path / "sam2s_mini.pt"
    assert run(convert_args("-i", str(sam21_checkpoint), "-o", str(output), "--model", "sam2s_mini")) == 0
    model = build_model("sam2s_mini", checkpoint=output)
    assert len(model.class_names) == 37 and model.class_names[0] == "ligature"
    assert model.class_bank.shape == (37, 384)
    assert model.vocabulary.encoder_name.startswith("minilm")


def test_convert_rejects_bad_requests(tmp_path, sam21_checkpoint):
    output = tmp_path / "x.pt"
    with pytest.raises(ValueError, match="exclude each other"):
        run(
            convert_args(
                "-i",
                str(sam21_checkpoint),
                "-o",
                str(output),
                "--model",
                "sam2s_mini",
                "--vocabulary-bank",
                "a.pt",
                "--no-class-bank",
            )
        )
    no_tsl = tmp_path / "no_tsl.yaml"
    no_tsl.write_text(
        (CONFIG_DIR / "sam2s_mini.yaml")
        .read_text()
        .replace("semantic: {enabled: true", "semantic: {enabled: false")
    )
    with pytest.raises(ValueError, match="no TSL head"):
        run(
            convert_args(
                "-i",
                str(sam21_checkpoint),
                "-o",
                str(output),
                "--model",
                str(no_tsl),
                "--vocabulary-bank",
                "a.pt",
            )
        )
    with pytest.raises(ValueError, match="differ from --input"):
        run(
            convert_args(
                "-i",
                str(sam21_checkpoint),
                "-o",
                str(sam21_checkpoint),
                "--model",
                "sam2s_mini",
                "--no-class-bank",
                "--force",
            )
        )
    assert not output.exists()
    # without --model the SAM2S config is the one whose trunk matches the checkpoint's
    assert run(convert_args("-i", str(sam21_checkpoint), "-o", str(output), "--no-class-bank")) == 0
    assert read_state_dict(output)[1]["config"]["name"] == "sam2s_mini"
    unknown = {"image_encoder.trunk.patch_embed.proj.weight": torch.zeros(48, 3, 7, 7)}
    with pytest.raises(CheckpointError, match="no SAM2S config has a trunk of width 48"):
        guess_sam2s_config(unknown)
