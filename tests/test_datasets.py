"""Datasets on disk: DAVIS / SA-V videos, images, volumes, categories, clip transforms."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from PIL import Image

from sam2s.data.datasets import (
    IMAGENET_MEAN,
    ClipKeys,
    DatasetError,
    ImageDataset,
    NormalizeImageNetd,
    ResizeClipd,
    VideoDataset,
    VolumeDataset,
    clip_transforms,
    label_map_from_masks,
)
from sam2s.data.synthetic import (
    SyntheticVideo,
    SyntheticVideoConfig,
    davis_palette,
    make_synthetic_volume,
    write_synthetic_dataset,
)


def save_frame(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path)


def save_labels(path: Path, labels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(labels.astype(np.uint8), mode="P")
    image.putpalette(davis_palette().reshape(-1).tolist())
    image.save(path)


def rgb(value: int, shape=(12, 16)) -> np.ndarray:
    return np.full((*shape, 3), value, np.uint8)


def make_davis(root: Path, annotated=(0, 2, 4), num_frames=6) -> None:
    """One video 'cat' with sparse annotations: object 1 always, object 2 from frame 2."""
    for t in range(num_frames):
        save_frame(root / "JPEGImages" / "cat" / f"{t:05d}.jpg", rgb(10 * t))
    for t in annotated:
        labels = np.zeros((12, 16), np.uint8)
        labels[2:6, 2:6] = 1
        if t >= 2:
            labels[7:10, 9:14] = 2
        save_labels(root / "Annotations" / "cat" / f"{t:05d}.png", labels)


# ----------------------------------------------------------------------------------------------
# DAVIS layout
# ----------------------------------------------------------------------------------------------


def test_davis_layout_round_trip_from_synthetic_writer(tmp_path):
    write_synthetic_dataset(
        tmp_path, num_videos=2, num_frames=6, height=40, width=48, seed=11, progress=False
    )
    dataset = VideoDataset(tmp_path)
    assert dataset.names == ("synth_000", "synth_001") and len(dataset) == 2
    video_seed = int(np.random.SeedSequence([11, 1]).generate_state(1)[0])
    video = SyntheticVideo(SyntheticVideoConfig(num_frames=6, height=40, width=48), seed=video_seed)
    record = dataset.record("synth_001")
    assert record.layout == "davis" and record.num_frames == 6 and record.annotated_frames == tuple(range(6))
    assert record.frame_dir == tmp_path / "JPEGImages" / "synth_001"
    present = {
        i for t in range(6) for i in video.obj_ids if video.frame(t).masks[video.obj_ids.index(i)].any()
    }
    assert record.object_ids == tuple(sorted(present))
    assert dict(record.categories) == video.categories

    clip = dataset.load_clip("synth_001", [4, 1])
    assert clip[ClipKeys.IMAGE].shape == (2, 3, 40, 48) and clip[ClipKeys.IMAGE].dtype == torch.uint8
    assert (
        clip[ClipKeys.MASKS].shape == (2, len(record.object_ids), 40, 48)
        and clip[ClipKeys.MASKS].dtype == torch.bool
    )
    assert clip[ClipKeys.FRAME_INDICES] == (4, 1) and clip[ClipKeys.NAME] == "synth_001"
    assert clip[ClipKeys.CATEGORIES] == tuple(video.categories[i] for i in record.object_ids)
    for position, t in enumerate((4, 1)):
        frame = video.frame(t)
        np.testing.assert_array_equal(dataset.read_label_map(record, t), frame.label_map(video.obj_ids))
        for channel, obj_id in enumerate(record.object_ids):
            expected = frame.masks[video.obj_ids.index(obj_id)]
            np.testing.assert_array_equal(clip[ClipKeys.MASKS][position, channel].numpy(), expected)
        # JPEG is lossy but close.
        decoded = clip[ClipKeys.IMAGE][position].permute(1, 2, 0).numpy().astype(int)
        assert np.abs(decoded - frame.image.astype(int)).mean() < 4


def test_sparse_annotations_and_clear_errors(tmp_path):
    make_davis(tmp_path)
    dataset = VideoDataset(tmp_path)
    record = dataset.record("cat")
    assert record.annotated_frames == (0, 2, 4) and record.object_ids == (1, 2)
    assert record.annotations[1] is None
    with pytest.raises(DatasetError, match=r"frames \[1, 3\] have no annotation"):
        dataset.load_clip("cat", [0, 1, 2, 3])
    with pytest.raises(DatasetError, match="out of range"):
        dataset.load_clip("cat", [0, 9])
    with pytest.raises(DatasetError, match="frame 5 .* has no annotation"):
        dataset.read_label_map("cat", 5)
    with pytest.raises(DatasetError, match="no video named 'dog'"):
        dataset.record("dog")
    masks = dataset.read_object_masks("cat", 0)
    assert masks.shape == (2, 12, 16) and masks[0].sum() == 16 and not masks[1].any()


def test_missing_folders_and_orphans(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        VideoDataset(tmp_path / "nowhere")
    make_davis(tmp_path / "a")
    (tmp_path / "a" / "Annotations").rename(tmp_path / "a" / "Labels")
    with pytest.raises(DatasetError, match="annotations folder"):
        VideoDataset(tmp_path / "a")
    assert VideoDataset(tmp_path / "a", annotations_dir="Labels").names == ("cat",)

    make_davis(tmp_path / "b")
    save_frame(tmp_path / "b" / "JPEGImages" / "dog" / "00000.jpg", rgb(0))
    with pytest.raises(DatasetError, match=r"\['dog'\] have frames .* but no folder"):
        VideoDataset(tmp_path / "b")

    make_davis(tmp_path / "c")
    save_labels(tmp_path / "c" / "Annotations" / "cat" / "00042.png", np.zeros((12, 16)))
    with pytest.raises(DatasetError, match="00042.png has no frame"):
        VideoDataset(tmp_path / "c")

    make_davis(tmp_path / "d", annotated=())
    (tmp_path / "d" / "Annotations" / "cat").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no annotation PNG matches any frame"):
        VideoDataset(tmp_path / "d")

    make_davis(tmp_path / "e")
    Image.fromarray(rgb(1)).save(tmp_path / "e" / "Annotations" / "cat" / "00001.png")
    with pytest.raises(DatasetError, match="RGB image"):
        VideoDataset(tmp_path / "e").read_label_map("cat", 1)


def test_categories_file(tmp_path):
    make_davis(tmp_path)
    (tmp_path / "categories.json").write_text(json.dumps({"cat": {"1": "grasper", "2": "liver"}}))
    record = VideoDataset(tmp_path).record("cat")
    assert dict(record.categories) == {1: "grasper", 2: "liver"}
    clip = VideoDataset(tmp_path).load_clip("cat", [2])
    assert clip[ClipKeys.CATEGORIES] == ("grasper", "liver")

    other = tmp_path / "other.json"
    other.write_text(json.dumps({"cat": {"1": "hook"}}))
    assert VideoDataset(tmp_path, categories=other).record("cat").category(2) is None

    for content, message in [
        ({"cat": {"1": "spoon"}}, "not a SAM2S category"),
        ({"cat": {"one": "hook"}}, "is not an integer"),
        ({"cat": {"7": "hook"}}, r"names objects \[7\]"),
        (["cat"], "must hold a JSON object"),
    ]:
        other.write_text(json.dumps(content))
        with pytest.raises(DatasetError, match=message):
            VideoDataset(tmp_path, categories=other)
    with pytest.raises(DatasetError, match="does not exist"):
        VideoDataset(tmp_path, categories=tmp_path / "missing.json")


# ----------------------------------------------------------------------------------------------
# SA-V layout
# ----------------------------------------------------------------------------------------------


def test_sav_layout_keeps_overlapping_objects(tmp_path):
    for t in range(3):
        save_frame(tmp_path / "JPEGImages" / "v" / f"{t:05d}.jpg", rgb(50))
    first = np.zeros((12, 16), np.uint8)
    first[0:6, 0:8] = 255
    second = np.zeros((12, 16), np.uint8)
    second[4:10, 4:12] = 1
    for t in (0, 2):
        (tmp_path / "Annotations" / "v" / "001").mkdir(parents=True, exist_ok=True)
        (tmp_path / "Annotations" / "v" / "003").mkdir(parents=True, exist_ok=True)
        Image.fromarray(first).save(tmp_path / "Annotations" / "v" / "001" / f"{t:05d}.png")
        if t == 2:
            Image.fromarray(second).save(tmp_path / "Annotations" / "v" / "003" / f"{t:05d}.png")
    dataset = VideoDataset(tmp_path)
    record = dataset.record("v")
    assert record.layout == "sav" and record.object_ids == (1, 3) and record.annotated_frames == (0, 2)
    masks = dataset.read_object_masks("v", 2)
    assert masks[0].sum() == 48 and masks[1].sum() == 48 and (masks[0] & masks[1]).sum() == 8
    labels = dataset.read_label_map("v", 2)
    assert (labels[4:6, 4:8] == 1).all()  # overlap: lowest id wins
    assert not dataset.read_object_masks("v", 0)[1].any()  # object 3 not annotated on frame 0
    clip = dataset.load_clip("v", [0, 2])
    assert clip[ClipKeys.MASKS].shape == (2, 2, 12, 16)
    with pytest.raises(DatasetError, match="named by its integer object id"):
        (tmp_path / "Annotations" / "v" / "ball").mkdir()
        VideoDataset(tmp_path)


def test_label_map_from_masks_lowest_id_wins():
    masks = np.zeros((2, 4, 4), bool)
    masks[0, :2] = True
    masks[1, 1:3] = True
    labels = label_map_from_masks(masks, [5, 2])
    assert labels[0].tolist() == [5] * 4 and labels[1].tolist() == [2] * 4 and labels[2].tolist() == [2] * 4
    assert labels[3].tolist() == [0] * 4
    with pytest.raises(ValueError, match="O = len"):
        label_map_from_masks(masks, [1])


# ----------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------


def test_image_dataset_gives_one_frame_clips(tmp_path):
    for name in ("a", "b"):
        save_frame(tmp_path / "images" / f"{name}.jpg", rgb(100, (10, 14)))
        labels = np.zeros((10, 14), np.uint8)
        labels[1:4, 1:4] = 3
        labels[5:9, 6:12] = 7
        save_labels(tmp_path / "masks" / f"{name}.png", labels)
    (tmp_path / "categories.json").write_text(json.dumps({"a": {"7": "hook"}}))
    dataset = ImageDataset(tmp_path)
    assert len(dataset) == 2 and dataset[0].object_ids == (3, 7)
    clip = dataset.load_clip(0)
    assert clip[ClipKeys.IMAGE].shape == (1, 3, 10, 14) and clip[ClipKeys.MASKS].shape == (1, 2, 10, 14)
    assert clip[ClipKeys.MASKS][0, 1].sum() == 24 and clip[ClipKeys.CATEGORIES] == (None, "hook")
    (tmp_path / "masks" / "b.png").unlink()
    with pytest.raises(DatasetError, match="b.jpg has no mask"):
        ImageDataset(tmp_path)


# ----------------------------------------------------------------------------------------------
# Volumes
# ----------------------------------------------------------------------------------------------


def test_volume_round_trip_nifti(tmp_path):
    summary = write_synthetic_dataset(tmp_path, num_videos=0, volumes=2, seed=3, progress=False)
    dataset = VolumeDataset(summary.volume_root)
    assert [r.name for r in dataset.records] == ["vol_000", "vol_001"]
    seed = int(np.random.SeedSequence([3, 10_000]).generate_state(1)[0])
    expected = make_synthetic_volume(modality="ct", seed=seed)
    loaded = dataset.load_volume(0)
    np.testing.assert_array_equal(loaded.labels, expected.labels)
    np.testing.assert_array_equal(loaded.image, np.round(expected.image))  # CT stored as int16 HU
    np.testing.assert_allclose(loaded.spacing, expected.spacing, rtol=1e-6)
    np.testing.assert_allclose(loaded.origin, expected.origin, atol=1e-4)
    np.testing.assert_allclose(loaded.direction, expected.direction, atol=1e-6)
    assert dict(dataset[0].categories) == expected.categories

    clip = dataset.load_clip(0, [10, 11, 12], window=(-160, 240))
    d, h, w = expected.labels.shape
    assert clip[ClipKeys.IMAGE].shape == (3, 3, h, w) and clip[ClipKeys.MASKS].shape == (3, 3, h, w)
    np.testing.assert_array_equal(clip[ClipKeys.MASKS][1, 0].numpy(), expected.labels[11] == 1)
    grey = clip[ClipKeys.IMAGE][0, 0].numpy().astype(float)
    np.testing.assert_allclose(
        grey, np.clip((np.round(expected.image[10]) + 160) * 255 / 400, 0, 255), atol=1.0
    )
    sagittal = dataset.load_clip(0, [20], axis=2)
    assert sagittal[ClipKeys.IMAGE].shape == (1, 3, d, h)
    np.testing.assert_array_equal(sagittal[ClipKeys.MASKS][0, 2].numpy(), expected.labels[:, :, 20] == 3)
    with pytest.raises(DatasetError, match="bad slice indices"):
        dataset.load_clip(0, [d])


def test_volume_dataset_reads_nrrd_and_reports_problems(tmp_path):
    image = sitk.GetImageFromArray(np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6))
    labels = sitk.GetImageFromArray((np.arange(4 * 5 * 6).reshape(4, 5, 6) % 3).astype(np.uint8))
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    sitk.WriteImage(image, str(tmp_path / "images" / "case.nrrd"))
    sitk.WriteImage(labels, str(tmp_path / "labels" / "case.nrrd"))
    dataset = VolumeDataset(tmp_path)
    clip = dataset.load_clip(0, [0, 3])
    assert clip[ClipKeys.OBJ_IDS] == (1, 2) and clip[ClipKeys.MASKS].shape == (2, 2, 5, 6)
    sitk.WriteImage(image, str(tmp_path / "images" / "other.nii.gz"))
    with pytest.raises(DatasetError, match="other.nii.gz has no label map"):
        VolumeDataset(tmp_path)
    with pytest.raises(DatasetError, match="does not exist"):
        VolumeDataset(tmp_path / "missing")


# ----------------------------------------------------------------------------------------------
# Transforms
# ----------------------------------------------------------------------------------------------


def test_clip_transforms_resize_and_normalise(tmp_path):
    make_davis(tmp_path)
    clip = VideoDataset(tmp_path).load_clip("cat", [0, 2, 4])
    out = clip_transforms(image_size=32)(clip)
    assert out[ClipKeys.IMAGE].shape == (3, 3, 32, 32) and out[ClipKeys.IMAGE].dtype == torch.float32
    assert out[ClipKeys.MASKS].shape == (3, 2, 32, 32) and out[ClipKeys.MASKS].dtype == torch.bool
    assert out[ClipKeys.ORIGINAL_SIZE] == (12, 16) and out[ClipKeys.OBJ_IDS] == (1, 2)
    # Object 1 covers a quarter of the rows and columns: after the resize about the same fraction.
    assert out[ClipKeys.MASKS][0, 0].float().mean().item() == pytest.approx(16 / 192, rel=0.2)

    mean_grey = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255 * torch.ones(1, 3, 4, 4)
    normalised = NormalizeImageNetd()({ClipKeys.IMAGE: mean_grey})[ClipKeys.IMAGE]
    assert normalised.abs().max().item() < 1e-5
    with pytest.raises(KeyError, match="mask key"):
        ResizeClipd(size=8)({ClipKeys.IMAGE: torch.zeros(1, 3, 4, 4, dtype=torch.uint8)})
    with pytest.raises(ValueError, match=r"\(T, C, H, W\)"):
        ResizeClipd(size=8, allow_missing_keys=True)({ClipKeys.IMAGE: torch.zeros(3, 4, 4)})
