"""Bad inputs get clear errors that name the problem (each test asserts on the message)."""

from __future__ import annotations

import re
from pathlib import Path

import av
import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from sam2s.checkpoint import CheckpointError
from sam2s.data.sources import (
    ArraySource,
    FrameFolderSource,
    FrameIndexError,
    SourceError,
    VideoFileSource,
    VolumeSource,
    open_source,
)
from sam2s.prompts import PromptsFileError
from sam2s.writers import LabelVolumeWriter, PngMaskWriter, check_masks


def encode_clip(path: Path, codec: str = "libx264", num_frames: int = 40) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        noise = np.random.default_rng(0)  # noise keeps the frames large, so cuts land in the frame data
        for _ in range(num_frames):
            rgb = noise.integers(0, 256, (48, 64, 3), dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode())
    return path


def truncate(path: Path, fraction: float) -> Path:
    data = path.read_bytes()
    cut = path.with_name(f"cut_{path.name}")
    cut.write_bytes(data[: int(len(data) * fraction)])
    return cut


# -- videos ----------------------------------------------------------------------------------


def test_unreadable_video(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(
        SourceError, match=r"cannot read video .*junk\.mp4: it is truncated, damaged or not a video"
    ):
        open_source(junk)


def test_truncated_mp4_without_its_index(tmp_path):
    cut = truncate(encode_clip(tmp_path / "clip.mp4"), 0.6)  # the mp4 index (moov) is at the end
    with pytest.raises(SourceError, match="cut_clip.mp4: it is truncated, damaged or not a video file"):
        VideoFileSource(cut)


def test_truncated_mkv_is_detected_from_its_stated_duration(tmp_path):
    cut = truncate(encode_clip(tmp_path / "clip.mkv"), 0.85)
    with pytest.raises(
        SourceError, match=r"cut_clip.mkv is truncated: its header states 1.60 s but the frames"
    ):
        VideoFileSource(cut)


def test_truncated_avi_is_detected_from_its_stated_frame_count(tmp_path):
    cut = truncate(encode_clip(tmp_path / "clip.avi", codec="mpeg4"), 0.9)
    with pytest.raises(
        SourceError, match=r"is truncated: its header states 40 frames but only \d+ are present"
    ):
        VideoFileSource(cut)


def test_damaged_mp4_index(tmp_path):
    clip = tmp_path / "clip.mp4"
    with av.open(str(clip), "w") as container:  # tiny frames: the index (moov) is most of the file
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for _ in range(40):
            container.mux(
                stream.encode(av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24"))
            )
        container.mux(stream.encode())
    with pytest.raises(
        SourceError, match=r"no video stream \(streams found: (data|none)\); the file is truncated"
    ):
        VideoFileSource(truncate(clip, 0.6))


def test_zero_length_video(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.touch()
    with pytest.raises(SourceError, match=r"empty\.mp4: the file is empty \(0 bytes\)"):
        open_source(empty)


def test_video_without_frames(tmp_path):
    path = tmp_path / "no_frames.mkv"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        container.start_encoding()
        container.mux(stream.encode())
    with pytest.raises(SourceError, match="no_frames.mkv"):
        VideoFileSource(path)


def test_audio_only_file_has_no_video_stream(tmp_path):
    path = tmp_path / "audio.mkv"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        container.mux(stream.encode(frame))
        container.mux(stream.encode())
    with pytest.raises(SourceError, match="contains no video stream"):
        open_source(path)


def test_unsupported_extension_and_missing_path(tmp_path):
    (tmp_path / "clip.gif").write_bytes(b"GIF89a")
    with pytest.raises(SourceError, match=r"unsupported file type '\.gif'.*supported: videos \(\.mp4"):
        open_source(tmp_path / "clip.gif")
    (tmp_path / "README").write_text("x")
    with pytest.raises(SourceError, match=r"unsupported file type '\(no suffix\)'"):
        open_source(tmp_path / "README")
    with pytest.raises(FileNotFoundError, match="no such file or folder: .*missing.mp4"):
        open_source(tmp_path / "missing.mp4")
    with pytest.raises(FileNotFoundError, match="video file not found"):
        VideoFileSource(tmp_path / "missing.mp4")
    with pytest.raises(TypeError, match="pass a path, a numpy array or a FrameSource"):
        open_source(42)


def test_options_that_do_not_apply(tmp_path):
    clip = encode_clip(tmp_path / "clip.mp4", num_frames=3)
    with pytest.raises(ValueError, match="axis apply to volumes only, not to the video"):
        open_source(clip, axis=1)
    with pytest.raises(ValueError, match="window apply to volumes only"):
        open_source(clip, window="ct_bone")
    source = open_source(clip)
    with pytest.raises(ValueError, match="cannot change a source that is already open"):
        open_source(source, axis=0)
    with pytest.raises(ValueError, match="window applies to grey"):
        ArraySource(np.zeros((2, 4, 4, 3), np.uint8), window="mr")
    with pytest.raises(SourceError, match=r"\(T, H, W, 3\) uint8 RGB"):
        ArraySource(np.zeros((2, 4, 4, 3), np.float32))
    with pytest.raises(SourceError, match="empty"):
        ArraySource(np.zeros((0, 4, 4), np.uint8))


# -- frame folders ---------------------------------------------------------------------------


def test_empty_folder(tmp_path):
    with pytest.raises(SourceError, match="is empty; expected .jpg/.png frames or a DICOM series"):
        open_source(tmp_path)
    (tmp_path / "notes.txt").write_text("no frames here")
    with pytest.raises(SourceError, match="contains no frames; expected image files"):
        FrameFolderSource(tmp_path)
    with pytest.raises(SourceError, match="contains no DICOM series"):
        open_source(tmp_path)


def test_mixed_frame_sizes_name_the_odd_file(tmp_path):
    for index in range(3):
        Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / f"frame{index}.png")
    Image.fromarray(np.zeros((21, 30, 3), np.uint8)).save(tmp_path / "frame10.png")
    with pytest.raises(
        SourceError, match=r"frame10\.png is 30x21 \(width x height\) but frame0\.png is 30x20"
    ):
        open_source(tmp_path)


def test_unreadable_frame_file(tmp_path):
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "0.png")
    (tmp_path / "1.png").write_text("not an image")
    with pytest.raises(SourceError, match=r"cannot read frame file .*1\.png: not a readable image"):
        FrameFolderSource(tmp_path)


# -- frame indices ---------------------------------------------------------------------------


def test_frame_index_out_of_range(tmp_path):
    clip = encode_clip(tmp_path / "clip.mp4", num_frames=5)
    for index in range(2):
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / f"{index}.png")
    volume = tmp_path / "ct.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((3, 4, 5), np.int16)), str(volume))
    sources = [
        (VideoFileSource(clip), 5),
        (FrameFolderSource(tmp_path), 2),
        (VolumeSource(volume, axis=2), 5),
        (ArraySource(np.zeros((7, 4, 4, 3), np.uint8)), 7),
    ]
    for source, count in sources:
        with pytest.raises(
            FrameIndexError,
            match=rf"frame index {count} is out of range .* {count} frames \(0\.\.{count - 1}\)",
        ):
            source.read(count)
        with pytest.raises(FrameIndexError, match="frame index -1 is out of range"):
            source.read(-1)
        with pytest.raises(TypeError, match="frame index must be an integer, got float"):
            source.read(1.0)
        source.read(count - 1)  # the last frame is fine
        source.close()


# -- volumes ---------------------------------------------------------------------------------


def test_unreadable_volume(tmp_path):
    path = tmp_path / "broken.nii.gz"
    path.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(SourceError, match=r"cannot read volume .*broken\.nii\.gz: not a readable image file"):
        open_source(path)


def test_volume_of_the_wrong_kind(tmp_path):
    flat = tmp_path / "flat.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 5), np.int16)), str(flat))
    with pytest.raises(SourceError, match="is 2D; expected a 3D volume or a 4D time series"):
        VolumeSource(flat)
    vector = tmp_path / "vector.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((3, 4, 5, 2), np.int16), isVector=True), str(vector))
    with pytest.raises(SourceError, match="has 2 values per voxel"):
        VolumeSource(vector)


def test_bad_volume_options(tmp_path):
    path = tmp_path / "ct.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((3, 4, 5), np.int16)), str(path))
    with pytest.raises(ValueError, match="axis must be 0, 1 or 2"):
        VolumeSource(path, axis=3)
    with pytest.raises(ValueError, match="unknown plane 'transverse'"):
        VolumeSource(path, axis="transverse")
    with pytest.raises(ValueError, match="unknown intensity window 'brain'"):
        VolumeSource(path, window="brain")
    with pytest.raises(ValueError, match="fixed_slice applies to 4D time series only"):
        VolumeSource(path, fixed_slice=1)


# -- writer inputs ---------------------------------------------------------------------------


def test_writer_inputs_are_checked(tmp_path):
    with pytest.raises(TypeError, match="masks must be a bool array"):
        check_masks(0, [1], np.zeros((1, 4, 4), np.float32))
    with pytest.raises(ValueError, match="2 obj_ids for 1 masks"):
        check_masks(0, [1, 2], np.zeros((1, 4, 4), bool))
    with pytest.raises(ValueError, match="distinct positive integers"):
        check_masks(0, [0], np.zeros((1, 4, 4), bool))
    with pytest.raises(ValueError, match=r"masks must be \(O, H, W\)"):
        check_masks(0, [1], np.zeros((4, 4), bool))
    with pytest.raises(ValueError, match="frame_index must be >= 0"):
        check_masks(-1, [1], np.zeros((1, 4, 4), bool))
    writer = PngMaskWriter(tmp_path / "masks")
    with pytest.raises(ValueError, match="palette PNGs hold object ids 1..255"):
        writer.write(0, [300], np.zeros((1, 4, 4), bool))
    writer.close()
    with pytest.raises(RuntimeError, match="is closed"):
        writer.write(1, [1], np.zeros((1, 4, 4), bool))
    video = ArraySource(np.zeros((2, 4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="write video masks with PngMaskWriter"):
        LabelVolumeWriter(tmp_path / "labels.nrrd", video.geometry)


# -- the MONAI bundle's inference config -----------------------------------------------------


def _bundle_error(tmp_path: Path, **overrides) -> BaseException:
    """Run bundle/configs/inference.json in this process; return the error that stopped it.

    MONAI wraps what a config raises in "Failed to evaluate/instantiate" errors; the message
    that names the problem is the first cause in the chain, printed first in the traceback.
    """
    import torch
    from monai.bundle import ConfigWorkflow

    from tests.parity import parity_model

    configs = Path(__file__).resolve().parents[1] / "bundle" / "configs"
    if "checkpoint" not in overrides:
        overrides["checkpoint"] = str(tmp_path / "mini.pt")
        torch.save({"model": parity_model("sam2.1_hiera_mini").state_dict()}, overrides["checkpoint"])
    workflow = ConfigWorkflow(
        config_file=str(configs / "inference.json"), logging_file=False, workflow_type="infer",
        model="sam2.1_hiera_mini", device="cpu", output_dir=str(tmp_path / "out"), progress=False, **overrides,
    )
    with pytest.raises(Exception) as caught:
        workflow.initialize()
        workflow.run()
    error = caught.value
    while error.__cause__ is not None:
        error = error.__cause__
    return error


def _clip_and_prompts(tmp_path: Path, prompts_text: str) -> tuple[Path, Path]:
    clip = encode_clip(tmp_path / "clip.mp4", num_frames=4)
    prompts = tmp_path / "prompts.json"
    prompts.write_text(prompts_text)
    return clip, prompts


def test_bundle_missing_input(tmp_path):
    _, prompts = _clip_and_prompts(tmp_path, '{"objects": [{"id": 1, "prompts": [{"frame": 0, "box": [1, 1, 9, 9]}]}]}')
    error = _bundle_error(tmp_path, input=str(tmp_path / "missing.mp4"), prompts=str(prompts))
    assert isinstance(error, FileNotFoundError)
    assert re.search(r"input '.*missing\.mp4' does not exist; pass --input with a video file", str(error))


def test_bundle_prompts_with_bad_json(tmp_path):
    clip, prompts = _clip_and_prompts(tmp_path, '{"objects": [{"id": 1, "prompts": [{"frame": 0,}]}]}')
    error = _bundle_error(tmp_path, input=str(clip), prompts=str(prompts))
    assert isinstance(error, PromptsFileError)
    assert re.search(r"prompts file '.*prompts\.json' is not valid JSON: .*line 1 column", str(error))


def test_bundle_prompts_outside_the_frames(tmp_path):
    clip, prompts = _clip_and_prompts(
        tmp_path, '{"objects": [{"id": 7, "prompts": [{"frame": 1, "points": [[30, 20], [65, 10]], "labels": [1, 0]}]}]}'
    )
    error = _bundle_error(tmp_path, input=str(clip), prompts=str(prompts))
    assert isinstance(error, PromptsFileError)
    assert re.search(
        r"prompts\.json: objects\[0\] \(id 7\)\.prompts\[0\]: point \(65, 10\) is outside the 64x48 frames of "
        r".*clip\.mp4; points and boxes are \(x, y\) pixels with 0 <= x <= 64, 0 <= y <= 48",
        str(error),
    )
    prompts.write_text('{"objects": [{"id": 1, "prompts": [{"frame": 4, "box": [1, 1, 9, 9]}]}]}')
    error = _bundle_error(tmp_path, input=str(clip), prompts=str(prompts))
    assert re.search(r"frame 4 is out of range: .*clip\.mp4 has 4 frames \(0\.\.3\)", str(error))


def test_bundle_wrong_checkpoint(tmp_path):
    import torch

    clip, prompts = _clip_and_prompts(tmp_path, '{"objects": [{"id": 1, "prompts": [{"frame": 0, "box": [1, 1, 9, 9]}]}]}')
    error = _bundle_error(tmp_path, input=str(clip), prompts=str(prompts), checkpoint=str(tmp_path / "nope.pt"))
    assert isinstance(error, FileNotFoundError)
    assert "checkpoint" in str(error) and "nope.pt' does not exist; or pass --checkpoint PATH" in str(error)
    (tmp_path / "bundle_models" / "models").mkdir(parents=True)
    missing_demo = tmp_path / "bundle_models" / "models" / "model.pt"
    error = _bundle_error(tmp_path, input=str(clip), prompts=str(prompts), checkpoint=str(missing_demo))
    assert "this bundle does not hold its model yet (models/model.pt)" in str(error)
    torch.save({"model": torch.nn.Linear(300, 300).state_dict()}, tmp_path / "linear.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes((tmp_path / "linear.pt").read_bytes()[:100_000])
    error = _bundle_error(tmp_path, input=str(clip), prompts=str(prompts), checkpoint=str(truncated))
    assert isinstance(error, CheckpointError)
    assert re.search(r"truncated\.pt' is truncated or corrupt .*; download it again", str(error))
    other = tmp_path / "other_model.pt"
    torch.save({"model": {"backbone.conv1.weight": torch.zeros(8, 3, 3, 3)}}, other)
    error = _bundle_error(tmp_path, input=str(clip), prompts=str(prompts), checkpoint=str(other))
    assert isinstance(error, CheckpointError)
    assert re.search(r"other_model\.pt' is an unknown architecture .* but the config 'sam2.1_hiera_mini' is", str(error))


def test_segment_command_checks_prompts_before_touching_the_output(tmp_path, capsys):
    from sam2s.cli import main

    clip, prompts = _clip_and_prompts(tmp_path, '{"objects": [{"id": 1, "prompts": [{"frame": 0, "box": [1, 1, 99, 9]}]}]}')
    out = tmp_path / "out"
    assert main(["segment", str(clip), "--prompts", str(prompts), "--out", str(out), "--checkpoint", "none"]) == 2
    assert "point (99, 9) is outside the 64x48 frames" in capsys.readouterr().err
    assert not out.exists()
