"""Checkpoints: official key layout for every size, safe loading, and clear errors."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import sam2s
from sam2s.checkpoint import CheckpointError, load_checkpoint, read_state_dict
from sam2s.config import load_config
from sam2s.modeling.sam2 import SAM2Model

MANIFESTS = Path(__file__).parent / "data" / "reference" / "sam2.1_state_dicts"


@pytest.mark.parametrize("size", ["t", "s", "b+", "l"])
def test_state_dict_keys_and_shapes_equal_the_official_manifest(size):
    expected = {key: tuple(shape) for key, shape, _ in json.loads((MANIFESTS / f"sam2.1_hiera_{size}.json").read_text())}
    with torch.device("meta"):
        model = SAM2Model(load_config(f"sam2.1_hiera_{size}"))
    ours = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    assert sorted(ours) == sorted(expected)
    assert ours == expected
    summary = json.loads((MANIFESTS / "_summary.json").read_text())[f"sam2.1_hiera_{size}"]
    assert sum(v.numel() for v in model.state_dict().values()) == summary["n_state_dict_elements"]


@pytest.fixture(scope="module")
def mini_checkpoint(tmp_path_factory) -> Path:
    """An official-format checkpoint (``{"model": state_dict}``) of the mini architecture."""
    torch.manual_seed(0)
    model = sam2s.build_model("sam2.1_hiera_mini")
    path = tmp_path_factory.mktemp("ckpt") / "mini.pt"
    torch.save({"model": model.state_dict()}, path)
    return path


def test_official_format_loads_with_nothing_missing_or_unexpected(mini_checkpoint):
    model = sam2s.build_model("sam2.1_hiera_mini", checkpoint=mini_checkpoint)
    saved = torch.load(mini_checkpoint, weights_only=True)["model"]
    for key, value in model.state_dict().items():
        assert torch.equal(value, saved[key]), key


def test_checkpoint_of_another_size_names_both_sizes(tmp_path):
    with torch.device("meta"):
        small = SAM2Model(load_config("sam2.1_hiera_s"))
    state = {k: torch.zeros(v.shape) for k, v in small.state_dict().items() if k.startswith("image_encoder.trunk.")}
    path = tmp_path / "small.pt"
    torch.save({"model": state}, path)
    with pytest.raises(CheckpointError, match=r"hiera_s \(trunk embed_dim 96, 16 blocks\).*hiera_t"):
        sam2s.build_model("sam2.1_hiera_t", checkpoint=path)


def test_truncated_checkpoint(mini_checkpoint, tmp_path):
    data = mini_checkpoint.read_bytes()
    path = tmp_path / "truncated.pt"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        read_state_dict(path)


def test_file_that_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("these are not weights\n" * 10)
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        read_state_dict(path)
    noise = tmp_path / "noise.pt"
    noise.write_bytes(bytes(range(256)) * 16)
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        read_state_dict(noise)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        read_state_dict(empty)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_state_dict(tmp_path / "missing.pt")


class _RunsCode:
    def __reduce__(self):
        return (print, ("this would run when unpickled",))


def test_pickle_that_would_run_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "payload": _RunsCode()}, path)
    with pytest.raises(CheckpointError, match="would run code"):
        read_state_dict(path)
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(pickle.dumps(_RunsCode()))
    with pytest.raises(CheckpointError):
        read_state_dict(raw)


def test_a_dict_that_is_not_a_state_dict(tmp_path):
    path = tmp_path / "meta.pt"
    torch.save({"epoch": 3, "lr": 0.1}, path)
    with pytest.raises(CheckpointError, match="not a model checkpoint"):
        read_state_dict(path)


def test_missing_and_unexpected_keys_are_listed(mini_checkpoint, tmp_path):
    state = torch.load(mini_checkpoint, weights_only=True)["model"]
    state.pop("no_obj_ptr")
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "edited.pt"
    torch.save({"model": state}, path)
    model = SAM2Model(load_config("sam2.1_hiera_mini"))
    with pytest.raises(CheckpointError, match=r"1 missing key\(s\) \['no_obj_ptr'\], 1 unexpected key\(s\) \['extra.weight'\]"):
        load_checkpoint(model, path)


def test_unknown_config_name_lists_the_shipped_ones():
    with pytest.raises(FileNotFoundError, match="sam2.1_hiera_t"):
        sam2s.build_model("sam2.1_hiera_xxl")


@pytest.mark.demo_model
@pytest.mark.slow
def test_an_installed_wheel_carries_the_demo_weights_and_finds_them(tmp_path):
    """``pip install sam2s`` (what the Slicer extension does by default) must bring the demo model:
    the wheel packages bundle/models/model.pt as sam2s/weights/sam2s_demo.pt."""
    repo = Path(__file__).resolve().parent.parent
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", str(repo), "-w", str(tmp_path / "dist")],
                   check=True, cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("sam2s-*.whl")
    site = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)], check=True)

    env = {key: value for key, value in os.environ.items() if key != "SAM2S_DEMO_CHECKPOINT"}
    env["PYTHONPATH"] = str(site)  # ahead of the editable install of this checkout
    script = "import sam2s.checkpoint as c; print(c.__file__); print(c.demo_checkpoint_path())"
    found = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path, check=True,
                           capture_output=True, text=True).stdout.split()
    assert [Path(path).is_relative_to(site) for path in found] == [True, True], found
    assert Path(found[1]).read_bytes() == (repo / "bundle" / "models" / "model.pt").read_bytes()
