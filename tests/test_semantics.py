"""Tests of the TSL side: the class-token head, the vocabulary bank and the text encoders."""

from __future__ import annotations

import argparse
import json
import os
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sam2s.losses import tsl_loss
from sam2s.modeling.semantic_head import TemporalSemanticHead, class_logits
from sam2s.semantics import (
    DEFAULT_PROMPT_TEMPLATE,
    CLIPTextEncoder,
    MiniLMTextEncoder,
    OpenCLIPTextEncoder,
    PrecomputedTextEncoder,
    VocabularyBank,
    add_arguments,
    build_vocabulary_bank,
    default_class_names,
    read_vocabulary_file,
    run,
)

TINY = {"d_model": 32, "mem_dim": 8, "text_dim": 16, "num_heads": 4, "mlp_dim": 64}


def head_inputs(batch: int = 3, memory_tokens: int = 5, pixels: int = 10, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return (
        torch.randn(batch, memory_tokens, TINY["mem_dim"], generator=generator),
        torch.randn(batch, memory_tokens, TINY["mem_dim"], generator=generator),
        torch.randn(batch, pixels, TINY["d_model"], generator=generator),
        torch.randn(batch, pixels, TINY["d_model"], generator=generator),
    )


# ------------------------------------------------------------------------ semantic head


def test_head_output_shape_and_memory_use():
    torch.manual_seed(0)
    head = TemporalSemanticHead(**TINY).eval()
    memory, memory_pos, current, current_pos = head_inputs()
    out = head(memory, memory_pos, current, current_pos)
    assert out.shape == (3, 16)
    # The memory matters when present ...
    other = head(torch.randn_like(memory), memory_pos, current, current_pos)
    assert not torch.allclose(out, other)
    # ... and an empty memory (first frame) skips that step, however it is given.
    no_memory = head(None, None, current, current_pos)
    empty = head(memory[:, :0], memory_pos[:, :0], current, current_pos)
    assert torch.equal(no_memory, empty)
    assert not torch.allclose(no_memory, out)


def test_head_rejects_mismatched_shapes():
    head = TemporalSemanticHead(**TINY)
    memory, memory_pos, current, current_pos = head_inputs()
    with pytest.raises(ValueError, match="memory_pos"):
        head(memory, None, current, current_pos)
    with pytest.raises(ValueError, match="memory"):
        head(torch.randn(3, 5, 7), torch.randn(3, 5, 7), current, current_pos)
    with pytest.raises(ValueError, match="current"):
        head(memory, memory_pos, torch.randn(3, 10, 16), torch.randn(3, 10, 16))
    with pytest.raises(ValueError, match="divide"):
        TemporalSemanticHead(d_model=30, num_heads=4)


def test_gradients_reach_every_head_parameter():
    torch.manual_seed(1)
    head = TemporalSemanticHead(**TINY)
    memory, memory_pos, current, current_pos = head_inputs()
    bank = torch.randn(4, 16)
    loss = tsl_loss(head(memory, memory_pos, current, current_pos), bank, torch.tensor([0, 2, 3]))
    loss.backward()
    for name, parameter in head.named_parameters():
        assert parameter.grad is not None, name
        assert parameter.grad.abs().sum() > 0, name


def test_tsl_loss_falls_when_the_head_learns_the_classes():
    torch.manual_seed(2)
    num_classes, batch = 4, 8
    head = TemporalSemanticHead(**TINY)
    bank = F.normalize(torch.randn(num_classes, TINY["text_dim"]), dim=-1)
    targets = torch.arange(batch) % num_classes
    # Each object's current-frame features carry a class-specific pattern plus noise.
    prototypes = torch.randn(num_classes, TINY["d_model"])
    current = prototypes[targets][:, None, :] + 0.3 * torch.randn(batch, 10, TINY["d_model"])
    current_pos = 0.1 * torch.randn(batch, 10, TINY["d_model"])
    memory, memory_pos = torch.randn(batch, 6, TINY["mem_dim"]), torch.randn(batch, 6, TINY["mem_dim"])
    optimiser = torch.optim.Adam(head.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss = tsl_loss(head(memory, memory_pos, current, current_pos), bank, targets)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0]
    with torch.no_grad():
        predicted = class_logits(head(memory, memory_pos, current, current_pos), bank).argmax(-1)
    assert torch.equal(predicted, targets)


def test_class_logits_are_scaled_cosines():
    embeddings, bank = torch.randn(5, 6), torch.randn(3, 6)
    logits = class_logits(embeddings, bank, logit_scale=100.0)
    assert logits.shape == (5, 3) and logits.abs().max() <= 100.0 + 1e-4
    assert torch.allclose(class_logits(bank, bank).diagonal(), torch.full((3,), 100.0))
    with pytest.raises(ValueError, match="share D"):
        class_logits(torch.randn(2, 5), bank)


# ---------------------------------------------------------------------- vocabulary bank


def make_bank(names=("grasper", "hook", "liver"), dim: int = 6) -> VocabularyBank:
    return VocabularyBank(tuple(names), torch.randn(len(names), dim) * 3, "test-encoder", "{name}")


def test_bank_normalises_and_validates():
    bank = make_bank()
    assert bank.num_classes == 3 and bank.dim == 6
    assert torch.allclose(bank.embeddings.norm(dim=-1), torch.ones(3))
    assert bank.index("hook") == 1
    with pytest.raises(KeyError, match="scalpel"):
        bank.index("scalpel")
    with pytest.raises(ValueError, match="unique"):
        make_bank(("hook", "hook"))
    with pytest.raises(ValueError, match=r"\(K, D\)"):
        VocabularyBank(("a", "b"), torch.randn(3, 4), "x")
    with pytest.raises(ValueError, match="NaN"):
        VocabularyBank(("a",), torch.tensor([[float("nan"), 1.0]]), "x")


def test_bank_round_trips_through_a_weights_only_checkpoint(tmp_path):
    bank = make_bank()
    checkpoint = {"model": {"layer.weight": torch.randn(2, 2)}, "vocabulary": bank.to_state_dict()}
    path = tmp_path / "model.pt"
    torch.save(checkpoint, path)
    loaded = torch.load(path, weights_only=True)
    restored = VocabularyBank.from_state_dict(loaded["vocabulary"])
    assert restored.class_names == bank.class_names
    assert torch.equal(restored.embeddings, bank.embeddings)
    assert (restored.encoder_name, restored.prompt_template) == ("test-encoder", "{name}")


def test_bank_save_and_load(tmp_path):
    bank = make_bank()
    path = bank.save(tmp_path / "sub" / "bank.pt")
    assert sorted(p.name for p in path.parent.iterdir()) == ["bank.pt"]  # no temporary left behind
    loaded = VocabularyBank.load(path)
    assert loaded.class_names == bank.class_names and torch.equal(loaded.embeddings, bank.embeddings)
    with pytest.raises(FileNotFoundError):
        VocabularyBank.load(tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="missing keys"):
        VocabularyBank.from_state_dict({"class_names": ["a"]})


def test_bank_from_npz_and_pt_embeddings(tmp_path):
    names = ["grasper", "hook"]
    embeddings = np.array([[3.0, 4.0], [0.0, 2.0]], dtype=np.float32)
    np.savez(tmp_path / "emb.npz", names=np.array(names), embeddings=embeddings)
    from_npz = VocabularyBank.from_embeddings_file(tmp_path / "emb.npz")
    assert from_npz.class_names == ("grasper", "hook")
    assert torch.allclose(from_npz.embeddings, torch.tensor([[0.6, 0.8], [0.0, 1.0]]))
    assert from_npz.encoder_name == "precomputed:emb.npz"
    torch.save(
        {"class_names": names, "embeddings": torch.from_numpy(embeddings), "encoder_name": "clip:x"},
        tmp_path / "emb.pt",
    )
    from_pt = VocabularyBank.from_embeddings_file(tmp_path / "emb.pt")
    assert from_pt.encoder_name == "clip:x" and torch.equal(from_pt.embeddings, from_npz.embeddings)
    np.savez(tmp_path / "bad.npz", labels=np.array(names), embeddings=embeddings)
    with pytest.raises(ValueError, match="names"):
        VocabularyBank.from_embeddings_file(tmp_path / "bad.npz")
    with pytest.raises(ValueError, match=".npz or .pt"):
        VocabularyBank.from_embeddings_file(_touch(tmp_path / "emb.txt"))


def _touch(path):
    path.write_text("x")
    return path


def test_precomputed_encoder_looks_names_up(tmp_path):
    bank = make_bank()
    bank.save(tmp_path / "bank.pt")
    encoder = PrecomputedTextEncoder(tmp_path / "bank.pt")
    encoded = encoder.encode(["liver", "grasper"])
    assert torch.equal(encoded, bank.embeddings[[2, 0]])
    rebuilt = build_vocabulary_bank(encoder, ["liver", "grasper"])
    assert rebuilt.encoder_name == "test-encoder" and rebuilt.class_names == ("liver", "grasper")
    with pytest.raises(KeyError, match="scalpel"):
        encoder.encode(["scalpel"])


def test_read_vocabulary_file(tmp_path):
    text = tmp_path / "names.txt"
    text.write_text("# instruments\ngrasper\n\n  hook  \n", encoding="utf-8")
    assert read_vocabulary_file(text) == ["grasper", "hook"]
    listing = tmp_path / "names.json"
    listing.write_text(json.dumps(["liver", "fat"]))
    assert read_vocabulary_file(listing) == ["liver", "fat"]
    listing.write_text(json.dumps({"names": ["liver"]}))
    with pytest.raises(ValueError, match="JSON list"):
        read_vocabulary_file(listing)
    text.write_text("hook\nhook\n")
    with pytest.raises(ValueError, match="repeats"):
        read_vocabulary_file(text)


def test_default_class_names_are_instruments_then_tissues():
    names = default_class_names()
    assert len(names) == 37 and len(set(names)) == 37
    assert (
        names[0] == "ligature"
        and names[20] == "clamp"
        and names[21] == "cystic duct"
        and names[-1] == "uterus"
    )


# ---------------------------------------------------------------------------- CLIP path


def _byte_characters() -> list[str]:
    """The 256 printable stand-ins that byte-level BPE (GPT-2, CLIP) uses for raw bytes."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    characters, shift = [], 0
    for byte in range(256):
        if byte in printable:
            characters.append(chr(byte))
        else:
            characters.append(chr(256 + shift))
            shift += 1
    return characters


@pytest.fixture(scope="module")
def tiny_clip_folder(tmp_path_factory):
    """A randomly initialised CLIP text tower and a byte-level tokenizer, saved for offline loading."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, CLIPTokenizer

    characters = _byte_characters()
    vocab = {token: index for index, token in enumerate(characters + [c + "</w>" for c in characters])}
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    folder = tmp_path_factory.mktemp("tiny_clip")
    CLIPTokenizer(vocab=vocab, merges=[]).save_pretrained(folder)
    torch.manual_seed(0)
    config = CLIPTextConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=77,
        projection_dim=24,
        bos_token_id=vocab["<|startoftext|>"],
        eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=vocab["<|endoftext|>"],
    )
    CLIPTextModelWithProjection(config).save_pretrained(folder)
    return folder


def test_clip_encoder_embeds_prompts_offline(tiny_clip_folder):
    encoder = CLIPTextEncoder(tiny_clip_folder)
    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["TRANSFORMERS_OFFLINE"] == "1"
    names = ["grasper", "bipolar forceps", "liver"]
    embeddings = encoder.encode(names)
    assert embeddings.shape == (3, 24) and embeddings.dtype == torch.float32
    assert torch.allclose(embeddings.norm(dim=-1), torch.ones(3), atol=1e-6)
    # Same as running the tower by hand on the templated prompts, one at a time (no padding).
    with torch.no_grad():
        for row, name in enumerate(names):
            tokens = encoder.tokenizer([DEFAULT_PROMPT_TEMPLATE.format(name=name)], return_tensors="pt")
            expected = F.normalize(encoder.model(**tokens).text_embeds, dim=-1)[0]
            assert torch.allclose(embeddings[row], expected, atol=1e-5)
    plain = CLIPTextEncoder(tiny_clip_folder, prompt_template="{name}").encode(names)
    assert not torch.allclose(plain, embeddings)
    bank = build_vocabulary_bank(encoder, names)
    assert bank.encoder_name.startswith("clip:") and bank.prompt_template == DEFAULT_PROMPT_TEMPLATE


def test_clip_encoder_errors(tmp_path, tiny_clip_folder):
    with pytest.raises(FileNotFoundError, match="never downloads"):
        CLIPTextEncoder(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="{name}"):
        CLIPTextEncoder(tiny_clip_folder, prompt_template="a photo")
    with pytest.raises(ValueError, match="no category names"):
        CLIPTextEncoder(tiny_clip_folder).encode([])


def build_args(*argv: str) -> argparse.Namespace:
    return add_arguments(argparse.ArgumentParser()).parse_args(list(argv))


def test_build_vocabulary_command(tmp_path, tiny_clip_folder):
    names_file = tmp_path / "names.txt"
    names_file.write_text("grasper\nhook\n")
    output = tmp_path / "bank.pt"
    args = build_args(
        "--encoder",
        "clip",
        "--model-path",
        str(tiny_clip_folder),
        "--vocabulary",
        str(names_file),
        "-o",
        str(output),
    )
    assert run(args) == 0
    bank = VocabularyBank.load(output)
    assert bank.class_names == ("grasper", "hook") and bank.dim == 24
    # Without --vocabulary: the 37 default names.
    args = build_args("--encoder", "clip", "--model-path", str(tiny_clip_folder), "-o", str(output))
    assert run(args) == 0
    assert VocabularyBank.load(output).class_names == default_class_names()
    # Re-encode from the bank file as precomputed embeddings.
    again = tmp_path / "again.pt"
    assert run(build_args("--encoder", "precomputed", "--model-path", str(output), "-o", str(again))) == 0
    assert torch.equal(VocabularyBank.load(again).embeddings, VocabularyBank.load(output).embeddings)


def test_build_vocabulary_command_errors(tmp_path, tiny_clip_folder):
    with pytest.raises(ValueError, match="needs --model-path"):
        run(build_args("--encoder", "clip", "-o", str(tmp_path / "bank.pt")))
    with pytest.raises(ValueError, match=".pt"):
        run(
            build_args(
                "--encoder", "clip", "--model-path", str(tiny_clip_folder), "-o", str(tmp_path / "bank.npz")
            )
        )
    with pytest.raises(ValueError, match="does not apply"):
        run(
            build_args(
                "--encoder",
                "precomputed",
                "--model-path",
                "x.pt",
                "--prompt-template",
                "{name}",
                "-o",
                str(tmp_path / "b.pt"),
            )
        )
    with pytest.raises(SystemExit):
        build_args("--encoder", "bert", "-o", "b.pt")


def test_open_clip_encoder_wiring(tmp_path, monkeypatch):
    """open_clip is optional and not installed here: a stand-in module checks how it is called."""
    calls = {}

    class FakeModel(torch.nn.Module):
        def eval(self):
            return self

        def encode_text(self, tokens):
            return tokens.float() * 2.0

    def create_model(name, pretrained, device):
        calls["create"] = (name, pretrained, str(device))
        return FakeModel()

    def get_tokenizer(name):
        return lambda texts: torch.tensor([[len(text), 1.0] for text in texts])

    monkeypatch.setitem(
        sys.modules,
        "open_clip",
        types.SimpleNamespace(create_model=create_model, get_tokenizer=get_tokenizer),
    )
    checkpoint = _touch(tmp_path / "weights.bin")
    encoder = OpenCLIPTextEncoder("ViT-B-16", checkpoint, prompt_template="{name}!")
    embeddings = encoder.encode(["ab", "abcd"])
    assert calls["create"] == ("ViT-B-16", str(checkpoint), "cpu")
    assert torch.allclose(embeddings, F.normalize(torch.tensor([[3.0, 1.0], [5.0, 1.0]]), dim=-1))
    with pytest.raises(FileNotFoundError):
        OpenCLIPTextEncoder("ViT-B-16", tmp_path / "missing.bin")


# -------------------------------------------------------------------------- MiniLM path


@pytest.fixture(scope="module")
def minilm():
    return MiniLMTextEncoder()


def test_minilm_embeddings_are_384d_normalised_and_meaningful(minilm):
    names = ["bipolar forceps", "prograsp forceps", "needle holder", "needle driver", "liver", "spleen"]
    embeddings = minilm.encode(names)
    assert embeddings.shape == (6, 384) and embeddings.dtype == torch.float32
    assert torch.allclose(embeddings.norm(dim=-1), torch.ones(6), atol=1e-5)
    similarity = embeddings @ embeddings.t()
    assert similarity[0, 1] > similarity[0, 4]  # forceps ~ forceps, not liver
    assert similarity[2, 3] > similarity[2, 5]  # needle holder ~ needle driver, not spleen
    assert similarity[4, 5] > similarity[4, 0]  # liver ~ spleen, not forceps


def test_minilm_default_bank(minilm):
    bank = build_vocabulary_bank(minilm, default_class_names())
    assert bank.embeddings.shape == (37, 384)
    assert bank.encoder_name == "minilm:all-MiniLM-L6-v2" and bank.prompt_template == "{name}"
