"""``sam2s segment`` end to end: MP4 in, PNG masks + overlay out; resume after SIGKILL; volumes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from sam2s.cli import main
from sam2s.writers import read_png_mask
from tests.parity import parity_model, synthetic_clip

ROOT = Path(__file__).resolve().parents[1]


def write_mp4(frames: list[np.ndarray], path: Path, fps: int = 10) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def clip_job(tmp_path_factory):
    """A 24-frame MP4, a prompts file for two objects, and mini weights in a checkpoint."""
    folder = tmp_path_factory.mktemp("clip")
    video = write_mp4(synthetic_clip(24, height=96, width=128), folder / "clip.mp4")
    prompts = folder / "prompts.json"
    prompts.write_text(json.dumps({"objects": [
        {"id": 1, "name": "disk", "prompts": [{"frame": 6, "points": [[52, 48]], "labels": [1]}]},
        {"id": 2, "prompts": [{"frame": 6, "box": [72, 14, 100, 34]}]},
    ]}))
    checkpoint = folder / "mini.pt"
    torch.save({"model": parity_model("sam2.1_hiera_mini", seed=1).state_dict()}, checkpoint)
    return video, prompts, checkpoint


def _args(video, prompts, checkpoint, out, *extra):
    return [str(video), "--prompts", str(prompts), "--out", str(out), "--model", "sam2.1_hiera_mini",
            "--checkpoint", str(checkpoint), "--device", "cpu", "--save-every", "3", "--no-progress", *extra]


def _masks(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: read_png_mask(p) for p in sorted((folder / "masks").glob("*.png"))}


def test_segment_mp4_writes_every_frame_and_an_overlay(clip_job, tmp_path):
    video, prompts, checkpoint = clip_job
    assert main(["segment", *_args(video, prompts, checkpoint, tmp_path / "out")]) == 0
    masks = _masks(tmp_path / "out")
    assert len(masks) == 24 and all(m.shape == (96, 128) for m in masks.values())
    assert set(np.unique(masks["00006.png"])) >= {1, 2}
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["frames_written"] == 24
    assert json.loads((tmp_path / "out" / "run.json").read_text())["complete"] is True
    with av.open(str(tmp_path / "out" / "overlay.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 24
    # The same output folder is not silently overwritten.
    assert main(["segment", *_args(video, prompts, checkpoint, tmp_path / "out")]) == 2


def test_resume_after_sigkill_gives_identical_masks(clip_job, tmp_path):
    video, prompts, checkpoint = clip_job
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    assert main(["segment", *_args(video, prompts, checkpoint, reference, "--no-overlay")]) == 0
    command = [sys.executable, "-m", "sam2s.cli", "segment", *_args(video, prompts, checkpoint, killed, "--no-overlay")]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list((killed / "masks").glob("*.png"))) < 10:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    manifest = json.loads((killed / "run.json").read_text())
    assert manifest["complete"] is False, "a killed run must not be marked complete"
    written_before = len(list((killed / "masks").glob("*.png")))
    assert 10 <= written_before < 24
    assert main(["segment", *_args(video, prompts, checkpoint, killed, "--no-overlay", "--resume")]) == 0
    expected, got = _masks(reference), _masks(killed)
    assert sorted(expected) == sorted(got)
    for name in expected:
        assert np.array_equal(expected[name], got[name]), name


def test_volume_round_trip_keeps_geometry(tmp_path):
    """Mask prompts on every slice of an oblique, anisotropic sphere come back voxel for voxel.

    With a mask on every slice the model's answer is the prompt itself (SAM 2.1 takes a mask
    prompt as the output), so this checks the whole geometry path: slicing, the model-size
    round trip, the label volume and its spacing/origin/direction.
    """
    sitk = pytest.importorskip("SimpleITK")
    shape = (20, 48, 40)  # (z, y, x)
    spacing = (0.8, 0.8, 2.5)  # (x, y, z) mm
    zz, yy, xx = np.mgrid[: shape[0], : shape[1], : shape[2]]
    centre = np.array([10, 26, 18])
    radius_mm = 16.0
    dist = np.sqrt(((zz - centre[0]) * spacing[2]) ** 2 + ((yy - centre[1]) * spacing[1]) ** 2 + ((xx - centre[2]) * spacing[0]) ** 2)
    sphere = dist <= radius_mm
    image = sitk.GetImageFromArray(np.where(sphere, 80, -200).astype(np.int16))
    image.SetSpacing(spacing)
    image.SetOrigin((12.0, -30.0, 5.0))
    angle = np.deg2rad(20)
    image.SetDirection((np.cos(angle), -np.sin(angle), 0, np.sin(angle), np.cos(angle), 0, 0, 0, 1))
    volume = tmp_path / "sphere.nii.gz"
    sitk.WriteImage(image, str(volume))
    prompts = {"objects": [{"id": 3, "name": "organ", "prompts": []}]}
    for z in range(shape[0]):
        np.save(tmp_path / f"slice_{z}.npy", sphere[z])
        prompts["objects"][0]["prompts"].append({"frame": z, "mask": f"slice_{z}.npy"})
    (tmp_path / "prompts.json").write_text(json.dumps(prompts))
    torch.save({"model": parity_model("sam2.1_hiera_mini", seed=1).state_dict()}, tmp_path / "mini.pt")
    out = tmp_path / "out"
    assert main(["segment", str(volume), "--prompts", str(tmp_path / "prompts.json"), "--out", str(out),
                 "--model", "sam2.1_hiera_mini", "--checkpoint", str(tmp_path / "mini.pt"), "--device", "cpu",
                 "--axis", "0", "--window=-300,200", "--no-progress"]) == 0
    labels = sitk.ReadImage(str(out / "labels.nii.gz"))
    assert labels.GetSpacing() == pytest.approx(image.GetSpacing())
    assert labels.GetOrigin() == pytest.approx(image.GetOrigin())
    assert labels.GetDirection() == pytest.approx(image.GetDirection())
    got = sitk.GetArrayFromImage(labels) == 3
    assert np.array_equal(got, sphere)
    seg = sitk.ReadImage(str(out / "labels.seg.nrrd"))
    assert np.array_equal(sitk.GetArrayFromImage(seg) == 3, sphere)
