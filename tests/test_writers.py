"""Mask writers: PNG masks, label volumes mapped back voxel for voxel, .seg.nrrd, overlay MP4, resume."""

from __future__ import annotations

import json
import math
from pathlib import Path

import av
import numpy as np
import pytest
import SimpleITK as sitk
import slicerio
from PIL import Image

from sam2s.data.sources import ArraySource, VolumeSource
from sam2s.writers import (
    CompositeMaskWriter,
    LabelVolumeWriter,
    OverlayVideoWriter,
    PngMaskWriter,
    SegNrrdWriter,
    WriterProgress,
    davis_palette,
    read_png_mask,
    render_overlay,
)
from sam2s.writers.progress import frames_to_runs, runs_to_frames

# -- shared test data ------------------------------------------------------------------------

SHAPE = (6, 10, 13)  # (z, y, x)
SPACING = (0.6, 1.7, 3.1)  # (x, y, z)
ORIGIN = (11.0, -4.5, 80.25)


def oblique_direction() -> tuple[float, ...]:
    a, b = 0.4, 0.25
    rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    return tuple((rz @ rx).ravel().tolist())


def ground_truth_labels() -> np.ndarray:
    """Two overlapping blobs and a small one, built directly on the voxel array."""
    z, y, x = np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij")
    labels = np.zeros(SHAPE, np.uint8)
    labels[((z - 2) ** 2 + (y - 4) ** 2 / 4 + (x - 5) ** 2 / 6) <= 4] = 1
    labels[((z - 3) ** 2 + (y - 6) ** 2 / 3 + (x - 8) ** 2 / 5) <= 3] = 2  # overlaps 1: written later, wins
    labels[4:6, 1:3, 10:12] = 7
    return labels


def write_ct(path: Path, array: np.ndarray | None = None) -> Path:
    array = np.arange(np.prod(SHAPE), dtype=np.int16).reshape(SHAPE) if array is None else array
    image = sitk.GetImageFromArray(array, isVector=False)
    image.SetSpacing(SPACING if array.ndim == 3 else (*SPACING, 1.0))
    image.SetOrigin(ORIGIN if array.ndim == 3 else (*ORIGIN, 0.0))
    direction = np.eye(array.ndim)
    direction[:3, :3] = np.asarray(oblique_direction()).reshape(3, 3)
    image.SetDirection(tuple(direction.ravel()))
    sitk.WriteImage(image, str(path))
    return path


def slice_masks(labels: np.ndarray, source: VolumeSource, index: int, obj_ids: list[int]) -> np.ndarray:
    """What a predictor would emit for frame ``index``: one bool mask per object, drawn on the slice."""
    region = labels[source.geometry.volume.frame_region(index)]
    return np.stack([region == obj_id for obj_id in obj_ids])


def manifest(path: Path) -> dict:
    return json.loads(path.read_text())


# -- PNG masks -------------------------------------------------------------------------------


def test_png_writer_writes_palette_pngs_with_object_ids(tmp_path):
    masks = np.zeros((2, 5, 7), bool)
    masks[0, 1:4, 1:5] = True
    masks[1, 2:5, 3:7] = True  # overlaps object 3: listed later, so it wins
    with PngMaskWriter(tmp_path / "masks") as writer:
        writer.write(0, [3, 12], masks)
        writer.write(1, [3, 12], np.zeros((2, 5, 7), bool))
        writer.write(2, [], np.zeros((0, 5, 7), bool))
    names = sorted(p.name for p in (tmp_path / "masks").iterdir())
    assert names == ["00000.png", "00001.png", "00002.png", "progress.json"]
    with Image.open(tmp_path / "masks" / "00000.png") as image:
        assert image.mode == "P"
        palette = np.asarray(image.getpalette()[: 256 * 3], np.uint8).reshape(256, 3)
    np.testing.assert_array_equal(palette, davis_palette())
    expected = np.zeros((5, 7), np.uint8)
    expected[masks[0]] = 3
    expected[masks[1]] = 12
    np.testing.assert_array_equal(read_png_mask(tmp_path / "masks" / "00000.png"), expected)
    assert not read_png_mask(tmp_path / "masks" / "00001.png").any()
    state = manifest(tmp_path / "masks" / "progress.json")
    assert state["complete"] is True and state["frames"] == [[0, 3]] and state["obj_ids"] == [3, 12]


def test_davis_palette_first_colours():
    palette = davis_palette()
    assert palette[:5].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128]]
    assert len({tuple(c) for c in palette}) == 256


def test_png_writer_resumes_after_a_killed_run(tmp_path):
    out = tmp_path / "masks"
    masks = np.ones((1, 4, 4), bool)
    first = PngMaskWriter(out, flush_every=2)
    for index in range(5):
        first.write(index, [1], masks)
    del first  # killed: never closed
    state = manifest(out / "progress.json")
    assert state["complete"] is False and state["frames"] == [[0, 4]]  # frame 4 not yet flushed

    resumed = PngMaskWriter(out, resume=True)
    assert resumed.completed_frames() == {0, 1, 2, 3}
    for index in range(4, 8):
        resumed.write(index, [1], masks)
    resumed.close()
    state = manifest(out / "progress.json")
    assert state["complete"] is True and state["frames"] == [[0, 8]]

    (out / "00006.png").unlink()  # lost since: a resumed run must write it again
    (out / "cover.png").write_bytes(b"not ours")
    assert PngMaskWriter(out, resume=True).completed_frames() == {0, 1, 2, 3, 4, 5, 7}

    fresh = PngMaskWriter(out)  # not resuming: the old run no longer counts, and nothing is complete
    assert fresh.completed_frames() == set() and manifest(out / "progress.json")["complete"] is False
    assert sorted(p.name for p in out.glob("*.png")) == ["cover.png"]  # the old run's frames are gone


def test_an_exception_leaves_the_output_incomplete(tmp_path):
    with pytest.raises(RuntimeError, match="stopped"), PngMaskWriter(tmp_path) as writer:
        writer.write(0, [1], np.ones((1, 3, 3), bool))
        raise RuntimeError("stopped")
    state = manifest(tmp_path / "progress.json")
    assert state["complete"] is False and state["frames"] == [[0, 1]]
    assert not list(tmp_path.glob(".tmp-*"))


# -- label volumes ---------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd"])
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_label_volume_from_slices_equals_the_label_built_on_the_array(tmp_path, suffix, axis):
    source = VolumeSource(write_ct(tmp_path / f"ct{suffix}"), axis=axis, window=(0, 1000))
    truth = ground_truth_labels()
    obj_ids = [1, 2, 7]
    out = tmp_path / f"labels{suffix}"
    with LabelVolumeWriter(out, source.geometry) as writer:
        for index in reversed(range(source.num_frames)):  # any order
            writer.write(index, obj_ids, slice_masks(truth, source, index, obj_ids))
    written = sitk.ReadImage(str(out))
    reference = sitk.ReadImage(str(tmp_path / f"ct{suffix}"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(written), truth)
    assert written.GetSize() == reference.GetSize()
    np.testing.assert_allclose(written.GetSpacing(), reference.GetSpacing(), rtol=1e-7)
    np.testing.assert_allclose(written.GetOrigin(), reference.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(written.GetDirection(), reference.GetDirection(), atol=1e-6)
    # Same physical place: a labelled voxel maps to the same world point in both images.
    k, j, i = (int(v[0]) for v in np.nonzero(truth == 7))
    np.testing.assert_allclose(
        written.TransformIndexToPhysicalPoint((i, j, k)),
        reference.TransformIndexToPhysicalPoint((i, j, k)),
        atol=1e-6,
    )
    state = manifest(tmp_path / f"labels{suffix}.progress.json")
    assert state["complete"] is True and state["frames"] == [[0, source.num_frames]]
    assert not (tmp_path / f"labels{suffix}.partial.nrrd").exists()


def test_time_series_labels_land_on_the_fixed_slice(tmp_path):
    series = np.stack([np.arange(np.prod(SHAPE), dtype=np.int16).reshape(SHAPE)] * 3)
    source = VolumeSource(write_ct(tmp_path / "cine.nrrd", series), axis=2, fixed_slice=5, window=(0, 1000))
    masks = np.zeros((1, SHAPE[0], SHAPE[1]), bool)
    masks[0, 1:3, 2:6] = True
    with LabelVolumeWriter(tmp_path / "cine_labels.nii.gz", source.geometry) as writer:
        for t in range(3):
            writer.write(t, [4], masks)
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "cine_labels.nii.gz")))
    expected = np.zeros(series.shape, np.uint8)
    expected[:, 1:3, 2:6, 5] = 4
    np.testing.assert_array_equal(labels, expected)


def test_label_volume_resumes_from_its_partial_state(tmp_path):
    source = VolumeSource(write_ct(tmp_path / "ct.nrrd"), axis=0, window=(0, 1000))
    truth = ground_truth_labels()
    out = tmp_path / "labels.nrrd"
    first = LabelVolumeWriter(out, source.geometry, flush_interval_s=0)
    for index in range(3):
        first.write(index, [1, 2, 7], slice_masks(truth, source, index, [1, 2, 7]))
    del first  # killed
    assert not out.exists() and (tmp_path / "labels.nrrd.partial.nrrd").exists()
    assert manifest(tmp_path / "labels.nrrd.progress.json")["complete"] is False

    resumed = LabelVolumeWriter(out, source.geometry, resume=True)
    assert resumed.completed_frames() == {0, 1, 2}
    for index in sorted(set(range(source.num_frames)) - resumed.completed_frames()):
        resumed.write(index, [1, 2, 7], slice_masks(truth, source, index, [1, 2, 7]))
    resumed.close()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(out))), truth)
    assert manifest(tmp_path / "labels.nrrd.progress.json")["complete"] is True

    with pytest.raises(ValueError, match="started with settings"):
        LabelVolumeWriter(out, VolumeSource(tmp_path / "ct.nrrd", axis=1).geometry, resume=True)


def test_seg_nrrd_reads_back_with_slicerio(tmp_path):
    source = VolumeSource(write_ct(tmp_path / "ct.nii.gz"), axis=1, window=(0, 1000))
    truth = ground_truth_labels()
    out = tmp_path / "objects.seg.nrrd"
    names = {1: "grasper", 2: "liver"}
    with SegNrrdWriter(
        out, source.geometry, segment_names=names, segment_colors={2: (0.9, 0.5, 0.1)}
    ) as writer:
        for index in range(source.num_frames):
            writer.write(index, [1, 2, 7, 9], slice_masks(truth, source, index, [1, 2, 7, 9]))
    segmentation = slicerio.read_segmentation(str(out))
    segments = {segment["labelValue"]: segment for segment in segmentation["segments"]}
    assert sorted(segments) == [1, 2, 7, 9]
    assert [segments[v]["name"] for v in (1, 2, 7, 9)] == ["grasper", "liver", "Segment_7", "Segment_9"]
    assert segments[1]["id"] == "Segment_1" and segments[1]["layer"] == 0
    assert segments[2]["color"] == pytest.approx([0.9, 0.5, 0.1])
    assert segments[1]["color"] == pytest.approx((davis_palette()[1] / 255.0).tolist(), abs=1e-5)
    assert segments[7]["extent"] == [10, 11, 1, 2, 4, 5]  # i (x), j (y), k (z), inclusive
    assert segments[9]["extent"] == [0, -1, 0, -1, 0, -1]  # never present: empty
    np.testing.assert_array_equal(segmentation["voxels"].transpose(2, 1, 0), truth)  # slicerio: (i, j, k)
    direction = np.asarray(oblique_direction()).reshape(3, 3)
    np.testing.assert_allclose(segmentation["ijkToLPS"][:3, :3], direction * np.asarray(SPACING), atol=1e-5)
    np.testing.assert_allclose(segmentation["ijkToLPS"][:3, 3], ORIGIN, atol=1e-4)
    assert segmentation["masterRepresentation"] == "Binary labelmap"
    # It is a plain NRRD too: SimpleITK reads the same voxels in the same place.
    image = sitk.ReadImage(str(out))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), truth)
    np.testing.assert_allclose(
        image.GetOrigin(), sitk.ReadImage(str(tmp_path / "ct.nii.gz")).GetOrigin(), atol=1e-4
    )


def test_label_writers_refuse_video_geometry_and_bad_names(tmp_path):
    video_like = ArraySource(np.zeros((2, 4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="needs the geometry of a volume source, got a array source"):
        LabelVolumeWriter(tmp_path / "x.nrrd", video_like.geometry)
    volume = VolumeSource(write_ct(tmp_path / "ct.nrrd"), window=(0, 1000))
    with pytest.raises(ValueError, match="ends in .seg.nrrd"):
        SegNrrdWriter(tmp_path / "x.nrrd", volume.geometry)
    with pytest.raises(ValueError, match="cannot write a label volume to .*x.png"):
        LabelVolumeWriter(tmp_path / "x.png", volume.geometry)
    with LabelVolumeWriter(tmp_path / "y.nrrd", volume.geometry) as writer:
        with pytest.raises(ValueError, match="expects 10x13"):
            writer.write(0, [1], np.zeros((1, 13, 10), bool))
        with pytest.raises(ValueError, match="outside the volume's 6 frames"):
            writer.write(6, [1], np.zeros((1, 10, 13), bool))


# -- overlay video ---------------------------------------------------------------------------


def decode_all(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def square_masks(index: int, height: int, width: int) -> np.ndarray:
    masks = np.zeros((2, height, width), bool)
    masks[0, 4:16, 4:20] = True
    masks[1, 8 + index % 5 : 20 + index % 5, 24:40] = True
    return masks


def test_overlay_video_has_every_frame_at_an_even_size(tmp_path):
    frames = np.full((12, 27, 45, 3), 60, np.uint8)  # odd height and width
    source = ArraySource(frames)
    out = tmp_path / "overlay.mp4"
    with OverlayVideoWriter(out, 10.0, source=source, part_frames=5, crf=10) as writer:
        order = list(range(6, 12)) + list(range(5, -1, -1))  # forward half first, like direction="both"
        for index in order:
            writer.write(index, [1, 2], square_masks(index, 27, 45))
    decoded = decode_all(out)
    assert len(decoded) == 12 and decoded[0].shape == (28, 46, 3)
    with av.open(str(out)) as container:
        assert container.streams.video[0].average_rate == 10
    red = davis_palette()[1].astype(float)
    inside = decoded[3][8, 10].astype(float)  # object 1's interior: half frame grey, half dark red
    np.testing.assert_allclose(inside, 0.5 * 60 + 0.5 * red, atol=12)
    np.testing.assert_allclose(decoded[3][24, 2].astype(float), [60, 60, 60], atol=8)  # untouched background
    assert not list(tmp_path.glob("overlay.mp4.parts")) and not list(tmp_path.glob(".tmp-*"))
    assert manifest(tmp_path / "overlay.mp4.progress.json")["complete"] is True


def test_render_overlay_fills_and_outlines():
    frame = np.zeros((9, 9, 3), np.uint8)
    mask = np.zeros((1, 9, 9), bool)
    mask[0, 2:7, 2:7] = True
    out = render_overlay(frame, [2], mask, alpha=0.5)
    green = davis_palette()[2]
    np.testing.assert_array_equal(out[2, 4], green)  # contour: opaque
    np.testing.assert_array_equal(out[4, 4], np.rint(green * 0.5).astype(np.uint8))  # interior: blended
    np.testing.assert_array_equal(out[0, 0], [0, 0, 0])


def test_overlay_video_resumes_from_finished_parts(tmp_path):
    frames = np.full((14, 32, 48, 3), 90, np.uint8)
    source = ArraySource(frames)
    out = tmp_path / "overlay.mp4"
    first = OverlayVideoWriter(out, 25.0, source=source, part_frames=4)
    for index in range(10):
        first.write(index, [1, 2], square_masks(index, 32, 48))
    del first  # killed after 10 frames: parts 0-3 and 4-7 are finished, 8-9 are lost
    assert not out.exists()
    assert manifest(tmp_path / "overlay.mp4.progress.json")["frames"] == [[0, 8]]

    resumed = OverlayVideoWriter(out, 25.0, source=source, part_frames=4, resume=True)
    assert resumed.completed_frames() == set(range(8))
    with resumed:
        for index in range(14):  # a resumed run replays every frame; finished ones are skipped
            resumed.write(index, [1, 2], square_masks(index, 32, 48))
    assert len(decode_all(out)) == 14
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert stream.average_rate == 25 and (stream.width, stream.height) == (48, 32)
    with pytest.raises(ValueError, match="started with settings"):
        OverlayVideoWriter(out, 30.0, source=source, resume=True)


def test_overlay_refuses_frames_already_encoded_and_needs_a_rate(tmp_path):
    source = ArraySource(np.zeros((4, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="frame rate"):
        OverlayVideoWriter(tmp_path / "o.mp4", source=source)
    writer = OverlayVideoWriter(tmp_path / "o.mp4", 5, source=source)
    writer.write(0, [1], np.zeros((1, 8, 8), bool))
    with pytest.raises(ValueError, match="already encoded"):
        writer.write(0, [1], np.zeros((1, 8, 8), bool))
    writer.close()
    late = OverlayVideoWriter(tmp_path / "late.mp4", 5, source=source, start_frame=2)
    with pytest.raises(ValueError, match="before the overlay video's start_frame 2"):
        late.write(1, [1], np.zeros((1, 8, 8), bool))
    late.write(3, [1], np.ones((1, 8, 8), bool))  # frame 2 never comes: encoded plainly on close
    late.close()
    assert len(decode_all(tmp_path / "late.mp4")) == 2


# -- composite and progress ------------------------------------------------------------------


def test_composite_writer_fans_out(tmp_path):
    source = ArraySource(np.zeros((3, 8, 10, 3), np.uint8))
    pngs = PngMaskWriter(tmp_path / "a")
    overlay = OverlayVideoWriter(tmp_path / "o.mp4", 5, source=source)
    with CompositeMaskWriter([pngs, overlay]) as writer:
        for index in range(3):
            writer.write(index, [1], np.ones((1, 8, 10), bool))
        assert writer.completed_frames() == set()  # the overlay's single part is not finished yet
    assert len(decode_all(tmp_path / "o.mp4")) == 3
    assert len(list((tmp_path / "a").glob("*.png"))) == 3


def test_progress_manifest_is_atomic_compact_and_checked(tmp_path):
    path = tmp_path / "progress.json"
    progress = WriterProgress(path, writer="png_masks", settings={"size": (4, 5)}, flush_every=None)
    progress.add_many(range(1000))
    progress.add(1500, [3])
    progress.flush()
    data = manifest(path)
    assert data["frames"] == [[0, 1000], [1500, 1501]] and data["frame_count"] == 1001
    assert data["complete"] is False and data["obj_ids"] == [3]
    assert not list(tmp_path.glob(".tmp-*"))
    progress.mark_complete()
    assert WriterProgress.read(path).complete is True

    resumed = WriterProgress(path, writer="png_masks", settings={"size": [4, 5]}, resume=True)
    assert resumed.was_complete and not resumed.complete  # reopened: incomplete until finished again
    assert manifest(path)["complete"] is False
    assert resumed.completed_frames() == set(range(1000)) | {1500}
    with pytest.raises(ValueError, match="written by a 'png_masks' writer, not 'label_volume'"):
        WriterProgress(path, writer="label_volume", settings={"size": [4, 5]}, resume=True)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="is not a sam2s-writer-progress"):
        WriterProgress(path, writer="png_masks", resume=True)
    assert runs_to_frames(frames_to_runs({5, 1, 2, 3, 9})) == {1, 2, 3, 5, 9}


def test_seg_nrrd_loads_in_slicer_mrml(tmp_path):
    slicer = pytest.importorskip("slicer", reason="slicer-core is part of the project environment")
    from vtk import vtkMatrix4x4
    from vtk.util.numpy_support import vtk_to_numpy

    source = VolumeSource(write_ct(tmp_path / "ct.nrrd"), axis=2, window=(0, 1000))
    truth = ground_truth_labels()
    out = tmp_path / "objects.seg.nrrd"
    with SegNrrdWriter(out, source.geometry, segment_names={2: "liver"}) as writer:
        for index in range(source.num_frames):
            writer.write(index, [1, 2, 7], slice_masks(truth, source, index, [1, 2, 7]))

    scene = slicer.vtkMRMLScene()
    node = slicer.vtkMRMLSegmentationNode()
    scene.AddNode(node)
    storage = slicer.vtkMRMLSegmentationStorageNode()
    scene.AddNode(storage)
    storage.SetFileName(str(out))
    assert storage.ReadData(node) == 1
    segmentation = node.GetSegmentation()
    assert [segmentation.GetNthSegment(i).GetName() for i in range(3)] == ["Segment_1", "liver", "Segment_7"]
    assert segmentation.GetSegment("Segment_2").GetLabelValue() == 2
    layer = segmentation.GetSegment("Segment_7").GetRepresentation("Binary labelmap")
    i0, i1, j0, j1, k0, k1 = layer.GetExtent()  # Slicer crops the shared layer to its content
    voxels = vtk_to_numpy(layer.GetPointData().GetScalars()).reshape(layer.GetDimensions()[::-1])
    np.testing.assert_array_equal(voxels, truth[k0 : k1 + 1, j0 : j1 + 1, i0 : i1 + 1])
    assert not truth[:k0].any() and not truth[k1 + 1 :].any()
    matrix = vtkMatrix4x4()
    layer.GetImageToWorldMatrix(matrix)
    ijk_to_ras = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
    ijk_to_lps = np.eye(4)
    ijk_to_lps[:3, :3] = np.asarray(oblique_direction()).reshape(3, 3) * np.asarray(SPACING)
    ijk_to_lps[:3, 3] = ORIGIN
    np.testing.assert_allclose(ijk_to_ras, np.diag([-1.0, -1.0, 1.0, 1.0]) @ ijk_to_lps, atol=1e-5)
