"""Synthetic surgical videos and volumes: determinism, masks that match pixels, occlusion, long mode."""

from __future__ import annotations

import argparse
import itertools

import numpy as np
import pytest
from scipy import ndimage

from sam2s.data.synthetic import (
    SyntheticVideo,
    SyntheticVideoConfig,
    add_arguments,
    davis_palette,
    make_synthetic_volume,
    run,
    write_synthetic_dataset,
)
from sam2s.data.vocabulary import INSTRUMENTS, category_kind

SMALL = SyntheticVideoConfig(num_frames=24, height=64, width=80)
CLEAN = SyntheticVideoConfig(
    num_frames=24,
    height=96,
    width=96,
    instrument_categories=("grasper", "clamp", "suction"),
    smoke=False,
    motion_blur=False,
)


def test_same_seed_same_video_in_any_order():
    a = SyntheticVideo(SMALL, seed=7)
    b = SyntheticVideo(SMALL, seed=7)
    assert a.objects == b.objects
    late_first = b.frame(23)
    for t in (0, 11, 23):
        fa, fb = a.frame(t), b.frame(t)
        np.testing.assert_array_equal(fa.image, fb.image)
        np.testing.assert_array_equal(fa.masks, fb.masks)
    np.testing.assert_array_equal(late_first.image, a.frame(23).image)
    other = SyntheticVideo(SMALL, seed=8)
    assert not np.array_equal(other.frame(0).image, a.frame(0).image)


def test_object_list_and_mask_invariants():
    video = SyntheticVideo(SMALL, seed=3)
    kinds = [o.kind for o in video.objects]
    assert kinds == ["instrument"] * 3 + ["tissue"] * 2
    assert video.obj_ids == (1, 2, 3, 4, 5)
    assert all(category_kind(o.category) == o.kind for o in video.objects)
    assert [o.category for o in video.objects[3:]] == ["gallbladder", "liver"]
    assert len({o.z for o in video.objects}) == 5
    assert max(o.z for o in video.objects if o.kind == "tissue") < min(
        o.z for o in video.objects if o.kind == "instrument"
    )
    for frame in (video.frame(0), video.frame(12)):
        assert frame.image.dtype == np.uint8 and frame.image.shape == (64, 80, 3)
        assert frame.masks.shape == (5, 64, 80) and frame.masks.dtype == bool
        assert not (frame.masks & ~frame.amodal_masks).any()  # visible part of the full shape
        assert frame.masks.sum(axis=0).max() <= 1  # visible masks never overlap
        labels = frame.label_map(video.obj_ids)
        for k, obj_id in enumerate(video.obj_ids):
            np.testing.assert_array_equal(labels == obj_id, frame.masks[k])


def test_masks_match_pixels():
    video = SyntheticVideo(CLEAN, seed=4)
    instrument_pixels, tissue_pixels, gallbladder_pixels = [], [], []
    for t in (0, 8, 16):
        frame = video.frame(t)
        rgb = frame.image.astype(np.float64)
        for k, obj in enumerate(video.objects):
            interior = ndimage.binary_erosion(frame.masks[k], iterations=2 if obj.kind == "instrument" else 5)
            if obj.kind == "instrument":
                instrument_pixels.append(rgb[interior])
            elif obj.category == "gallbladder":
                gallbladder_pixels.append(rgb[interior])
        background = ~ndimage.binary_dilation(frame.masks.any(axis=0), iterations=5)
        tissue_pixels.append(rgb[background])
    metal = np.concatenate(instrument_pixels)
    tissue = np.concatenate(tissue_pixels)
    gallbladder = np.concatenate(gallbladder_pixels)
    assert len(metal) > 200 and len(tissue) > 1000 and len(gallbladder) > 200
    # Metallic instruments are grey: red and green nearly equal. Tissue is red. Gallbladder greenish.
    assert np.abs(metal[:, 0] - metal[:, 1]).mean() < 20
    assert (tissue[:, 0] - tissue[:, 1]).mean() > 60
    assert gallbladder[:, 1].mean() > gallbladder[:, 0].mean()


def _find_overlap(video: SyntheticVideo) -> tuple[int, int, int, np.ndarray]:
    """A frame and two instruments (top, bottom) whose shapes overlap on a solid patch."""
    instruments = [k for k, o in enumerate(video.objects) if o.kind == "instrument"]
    for t in range(len(video)):
        frame = video.frame(t)
        for a in instruments:
            for b in instruments:
                if video.objects[a].z > video.objects[b].z:
                    overlap = frame.amodal_masks[a] & frame.amodal_masks[b]
                    solid = ndimage.binary_erosion(overlap) & ndimage.binary_erosion(frame.amodal_masks[a])
                    if solid.sum() >= 15:
                        return t, a, b, solid
    raise AssertionError("no overlapping instruments found")


def test_occlusion_order_in_masks_and_pixels():
    video = SyntheticVideo(CLEAN, seed=4)
    t, top, bottom, solid = _find_overlap(video)
    frame = video.frame(t)
    assert frame.masks[top][solid].all()
    assert not frame.masks[bottom][solid].any()  # the occluded mask excludes its occluder
    assert frame.amodal_masks[bottom][solid].all()

    top_id, bottom_id = video.objects[top].obj_id, video.objects[bottom].obj_id
    without_bottom = video.frame(t, hidden=[bottom_id])
    without_top = video.frame(t, hidden=[top_id])
    # Inside the occluder only the occluder is seen: removing what lies beneath changes nothing,
    # removing the occluder reveals a different surface.
    np.testing.assert_array_equal(frame.image[solid], without_bottom.image[solid])
    revealed = np.abs(frame.image[solid].astype(int) - without_top.image[solid].astype(int)).mean()
    assert revealed > 5
    assert without_top.masks[bottom][solid].all() and not without_top.masks[top].any()


def test_short_mode_instruments_enter_leave_and_return():
    video = SyntheticVideo(SyntheticVideoConfig(num_frames=48, height=64, width=64), seed=0)
    present = np.array([[m.any() for m in video.frame(t).masks] for t in range(48)])
    first, second = present[:, 0], present[:, 1]
    assert first[0] and not first.all() and first[-1]  # leaves and comes back
    gone = np.flatnonzero(~first)
    assert gone.min() > 0 and first[gone.max() + 1 :].all()
    assert not second[0] and second[-1]  # enters after the start
    assert present[:, 3:].all()  # tissue regions stay in view


def test_long_mode_has_long_absences_and_returns():
    config = SyntheticVideoConfig(
        num_frames=2000, height=32, width=32, long=True, num_instruments=2, num_tissues=1
    )
    video = SyntheticVideo(config, seed=0)
    present = np.array([video.frame(t).masks[0].any() for t in range(len(video))])
    assert present[0]
    # Runs of absence followed by a return.
    changes = np.flatnonzero(np.diff(present.astype(int))) + 1
    bounds = np.concatenate([[0], changes, [len(present)]])
    absences = [(s, e) for s, e in itertools.pairwise(bounds) if not present[s] and e < len(present)]
    assert absences, "the first instrument never leaves and returns"
    assert max(e - s for s, e in absences) >= 150
    assert all(e - s >= 100 for s, e in absences)
    with pytest.raises(ValueError, match="long mode needs"):
        SyntheticVideoConfig(num_frames=100, long=True)


def test_every_instrument_category_has_its_own_shape():
    masks = {}
    for category in INSTRUMENTS:
        config = SyntheticVideoConfig(
            num_frames=48,
            height=96,
            width=96,
            num_instruments=1,
            num_tissues=0,
            instrument_categories=(category,),
        )
        frame = SyntheticVideo(config, seed=2).frame(0)
        assert frame.masks[0].sum() > 20, category
        masks[category] = frame.masks[0]
    shapes = {m.tobytes() for m in masks.values()}
    assert len(shapes) == len(INSTRUMENTS)  # same pose, different category: different shape


def test_config_validation():
    with pytest.raises(ValueError, match="instrument names"):
        SyntheticVideoConfig(instrument_categories=("liver", "grasper", "hook"))
    with pytest.raises(ValueError, match="names for"):
        SyntheticVideoConfig(instrument_categories=("grasper",))
    with pytest.raises(ValueError):
        SyntheticVideoConfig(tissue_categories=("gallbladder", "not an organ"))


@pytest.mark.parametrize("modality", ["ct", "mr"])
def test_synthetic_volume(modality):
    volume = make_synthetic_volume(shape=(24, 48, 40), modality=modality, num_organs=3, seed=1)
    again = make_synthetic_volume(shape=(24, 48, 40), modality=modality, num_organs=3, seed=1)
    np.testing.assert_array_equal(volume.image, again.image)
    assert volume.image.shape == volume.labels.shape == (24, 48, 40)
    assert volume.spacing[2] > volume.spacing[0]  # anisotropic: thick slices
    direction = volume.direction
    np.testing.assert_allclose(direction @ direction.T, np.eye(3), atol=1e-9)
    assert np.linalg.det(direction) == pytest.approx(1.0) and not np.allclose(direction, np.eye(3))
    counts = np.bincount(volume.labels.ravel(), minlength=4)
    assert (counts[1:4] > 50).all()
    assert set(volume.categories.values()) <= {"liver", "spleen", "kidney parenchyma", "gallbladder", "colon"}
    inside = volume.image[volume.labels == 1].mean()
    if modality == "ct":
        assert volume.image.min() < -900 and 20 < inside < 100  # air and liver in HU
    else:
        assert volume.image.min() >= 0
    # Smooth organs: each label is essentially one connected blob.
    for label in (1, 2, 3):
        components, _ = ndimage.label(volume.labels == label)
        sizes = np.bincount(components.ravel())[1:]
        assert sizes.max() >= 0.8 * sizes.sum()


def test_palette_matches_davis_colours():
    palette = davis_palette()
    assert palette[0].tolist() == [0, 0, 0]
    assert (
        palette[1].tolist() == [128, 0, 0]
        and palette[2].tolist() == [0, 128, 0]
        and palette[3].tolist() == [128, 128, 0]
    )
    assert len({tuple(c) for c in palette}) == 256


def test_writer_and_command_line(tmp_path):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    out = tmp_path / "synthetic"
    args = parser.parse_args(
        [
            "--out",
            str(out),
            "--videos",
            "2",
            "--frames",
            "5",
            "--height",
            "32",
            "--width",
            "40",
            "--volumes",
            "1",
        ]
    )
    assert run(args) == 0
    frames = sorted((out / "JPEGImages" / "synth_001").iterdir())
    assert [p.name for p in frames] == [f"{i:05d}.jpg" for i in range(5)]
    assert len(list((out / "Annotations" / "synth_001").glob("*.png"))) == 5
    assert (out / "categories.json").is_file() and (out / "volumes" / "labels" / "vol_000.nii.gz").is_file()
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]

    # Same seed, same bytes.
    again = write_synthetic_dataset(
        tmp_path / "again", num_videos=2, num_frames=5, height=32, width=40, progress=False
    )
    assert again.videos == ("synth_000", "synth_001")
    for name in ("JPEGImages/synth_001/00003.jpg", "Annotations/synth_000/00004.png"):
        assert (out / name).read_bytes() == (tmp_path / "again" / name).read_bytes()

    with pytest.raises(FileExistsError, match="fresh folder"):
        run(args)


def test_tissue_annotations_disagree_only_near_the_boundary():
    config = SyntheticVideoConfig(
        num_frames=24,
        height=96,
        width=96,
        num_instruments=0,
        smoke=False,
        motion_blur=False,
        camera_motion=False,
    )
    video = SyntheticVideo(config, seed=6)
    frames = [video.frame(t) for t in range(24)]
    by_annotator = {}
    for frame in frames:
        by_annotator.setdefault(frame.annotator, frame)
    assert len(by_annotator) >= 2, "every frame was drawn by the same simulated annotator"
    (a, first), (_, second) = sorted(by_annotator.items())[:2]
    for k in range(len(video.objects)):
        # Compare each annotator's full shape (the visible masks also lose what lies above).
        shape_a, shape_b = first.amodal_masks[k], second.amodal_masks[k]
        disagreement = shape_a ^ shape_b
        assert disagreement.any()  # the boundary moves from one annotator to the next
        assert disagreement.sum() < 0.35 * shape_a.sum()
        boundary = shape_a ^ ndimage.binary_erosion(shape_a)
        assert (ndimage.distance_transform_edt(~boundary)[disagreement] <= 6).all()  # a thin band only
    # The same annotator on a static view draws the same masks.
    same = [f for f in frames if f.annotator == a]
    assert len(same) >= 2
    np.testing.assert_array_equal(same[0].masks, same[-1].masks)
