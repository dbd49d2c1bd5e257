"""Frame sources: frame-accurate video decoding, frame folders, volumes along each axis, windows."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from sam2s.data.sources import (
    ArraySource,
    FrameFolderSource,
    FrameIndexError,
    IntensityWindow,
    LiveStreamSource,
    PercentileWindow,
    SourceGeometry,
    StreamEndedError,
    VideoFileSource,
    VolumeGeometry,
    VolumeSource,
    axis_from_plane,
    natural_sort_key,
    open_source,
    resolve_window,
)

HEIGHT, WIDTH, NUM_FRAMES = 64, 96, 40
CODE_BITS, CODE_BLOCK = 6, 16  # frame index burned in as 6 black/white 16x16 blocks on the top row


def synthetic_frame(index: int) -> np.ndarray:
    """A frame whose index can be read back after lossy compression, with a moving coloured square."""
    frame = np.full((HEIGHT, WIDTH, 3), 40, np.uint8)
    for bit in range(CODE_BITS):
        if (index >> bit) & 1:
            frame[:CODE_BLOCK, bit * CODE_BLOCK : (bit + 1) * CODE_BLOCK] = 255
    left = 2 + index
    frame[28:52, left : left + 24] = ((index * 37) % 200 + 55, 200 - (index * 3) % 150, 90)
    return frame


def frame_code(frame: np.ndarray) -> int:
    """Read back the index that :func:`synthetic_frame` burned into ``frame``."""
    blocks = [
        frame[4:12, bit * CODE_BLOCK + 4 : bit * CODE_BLOCK + 12].mean() > 150 for bit in range(CODE_BITS)
    ]
    return sum(1 << bit for bit, on in enumerate(blocks) if on)


def encode_video(
    path: Path, codec: str = "libx264", num_frames: int = NUM_FRAMES, pts_ms: list[int] | None = None
) -> Path:
    """Encode the synthetic frames; ``pts_ms`` gives a variable frame rate in milliseconds."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        if codec == "libx264":
            stream.options = {"g": "12", "bf": "2"}  # several GOPs and B-frames: seeks must handle both
        if pts_ms is not None:
            stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)
        for index in range(num_frames):
            frame = av.VideoFrame.from_ndarray(synthetic_frame(index), format="rgb24")
            if pts_ms is not None:
                frame.pts, frame.time_base = pts_ms[index], Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("videos")
    return {
        "mp4": encode_video(folder / "clip.mp4"),
        "mkv": encode_video(folder / "clip.mkv"),
        "mov": encode_video(folder / "clip.mov"),
        "avi": encode_video(folder / "clip.avi", codec="mpeg4"),
    }


# -- video -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["mp4", "mkv", "avi", "mov"])
def test_random_seeks_return_the_frames_of_a_sequential_pass(videos, kind):
    with open_source(videos[kind]) as source:
        assert isinstance(source, VideoFileSource)
        assert (source.num_frames, source.height, source.width) == (NUM_FRAMES, HEIGHT, WIDTH)
        sequential = [source.read(i) for i in range(NUM_FRAMES)]
    assert [frame_code(frame) for frame in sequential] == list(range(NUM_FRAMES))
    assert all(frame.dtype == np.uint8 and frame.shape == (HEIGHT, WIDTH, 3) for frame in sequential)

    order = np.random.default_rng(0).permutation(NUM_FRAMES).tolist() + [39, 0, 13, 12, 11, 25, 26, 5]
    with VideoFileSource(videos[kind]) as source:  # a fresh decoder: nothing cached from the pass above
        for index in order:
            np.testing.assert_array_equal(source.read(index), sequential[index], err_msg=f"frame {index}")


def test_sequential_reads_never_seek(videos, monkeypatch):
    source = VideoFileSource(videos["mp4"])
    seeks: list[int] = []
    original = source._seek_before
    monkeypatch.setattr(source, "_seek_before", lambda index: (seeks.append(index), original(index)))
    for index in range(NUM_FRAMES):
        source.read(index)
    assert seeks == [0]  # only the first read positions the decoder
    keyframes = [int(np.searchsorted(source.geometry.timing.pts, pts)) for pts in source._keyframe_pts]
    assert len(keyframes) >= 3  # the file has several GOPs, so the reads below cross keyframes
    back = keyframes[-1] - 3
    source.read(39)  # the cached frame: no seek
    source.read(back)  # backwards: seek
    source.read(back + 2)  # forward with no keyframe in between: decode on
    source.read(keyframes[-1] + 1)  # forward past a keyframe a few frames ahead: decoding on is no slower
    assert seeks == [0, back]
    source.read(keyframes[1] + 1)
    source.read(39)  # far ahead, beyond later keyframes: seek
    assert seeks == [0, back, keyframes[1] + 1, 39]
    source.close()


def test_returned_frames_are_independent_copies(videos):
    with VideoFileSource(videos["mp4"]) as source:
        first = source.read(3)
        first[:] = 0
        assert frame_code(source.read(3)) == 3


def test_variable_frame_rate_video_keeps_every_frame_and_its_time(tmp_path):
    pts_ms = np.cumsum([0] + [20 + 30 * (i % 3) for i in range(NUM_FRAMES - 1)]).tolist()
    path = encode_video(tmp_path / "vfr.mp4", pts_ms=pts_ms)
    with open_source(path) as source:
        assert source.num_frames == NUM_FRAMES
        times = source.geometry.timing.times
        np.testing.assert_allclose(times - times[0], np.asarray(pts_ms) / 1000.0, atol=1e-6)
        for index in [37, 2, 20, 21, 0, 39]:
            assert frame_code(source.read(index)) == index
        assert source.geometry.fps is not None and source.geometry.fps > 0


def test_frame_count_comes_from_the_packets_when_the_container_has_none(videos):
    with av.open(str(videos["mkv"])) as container:
        assert container.streams.video[0].frames == 0  # mkv states no count
    with VideoFileSource(videos["mkv"]) as source:
        assert len(source) == NUM_FRAMES
        assert frame_code(source.read(NUM_FRAMES - 1)) == NUM_FRAMES - 1


def test_video_geometry(videos):
    with VideoFileSource(videos["mp4"]) as source:
        geometry = source.geometry
    assert isinstance(geometry, SourceGeometry)
    assert geometry.kind == "video" and geometry.volume is None
    assert (geometry.height, geometry.width, geometry.num_frames) == (HEIGHT, WIDTH, NUM_FRAMES)
    assert geometry.fps == pytest.approx(25.0)
    np.testing.assert_allclose(np.diff(geometry.timing.times), 0.04, atol=1e-6)


# -- frame folder ----------------------------------------------------------------------------


def test_natural_sort_key_orders_numbers_by_value():
    names = ["frame10.jpg", "frame2.jpg", "frame1.jpg", "Frame3.png", "frame100.jpg", "a.png"]
    assert sorted(names, key=natural_sort_key) == [
        "a.png",
        "frame1.jpg",
        "frame2.jpg",
        "Frame3.png",
        "frame10.jpg",
        "frame100.jpg",
    ]


def test_frame_folder_reads_in_natural_order(tmp_path):
    for index in [10, 2, 1, 0, 11, 3]:
        Image.fromarray(synthetic_frame(index)).save(tmp_path / f"frame{index}.png")
    Image.fromarray(synthetic_frame(20)).save(tmp_path / "frame20.jpg", quality=95)
    (tmp_path / "notes.txt").write_text("not a frame")
    with open_source(tmp_path) as source:
        assert isinstance(source, FrameFolderSource)
        assert source.geometry.frame_names == tuple(f"frame{i}.png" for i in [0, 1, 2, 3, 10, 11]) + (
            "frame20.jpg",
        )
        assert [frame_code(source.read(i)) for i in range(len(source))] == [0, 1, 2, 3, 10, 11, 20]
        np.testing.assert_array_equal(source.read(4), synthetic_frame(10))  # png: lossless


def test_frame_folder_converts_grey_and_rgba(tmp_path):
    Image.fromarray(np.full((8, 6), 77, np.uint8)).save(tmp_path / "0.png")
    Image.fromarray(np.full((8, 6, 4), 200, np.uint8)).save(tmp_path / "1.png")
    with FrameFolderSource(tmp_path) as source:
        assert (source.height, source.width) == (8, 6)
        np.testing.assert_array_equal(source.read(0), np.full((8, 6, 3), 77, np.uint8))
        np.testing.assert_array_equal(source.read(1), np.full((8, 6, 3), 200, np.uint8))


# -- arrays and live streams -----------------------------------------------------------------


def test_array_source_rgb_and_grey():
    rgb = np.stack([synthetic_frame(i) for i in range(5)])
    source = open_source(rgb)
    assert isinstance(source, ArraySource) and len(source) == 5
    frame = source.read(2)
    frame[:] = 0
    np.testing.assert_array_equal(source.read(2), synthetic_frame(2))

    grey = np.linspace(-1000, 1000, 3 * 4 * 5).reshape(3, 4, 5)
    before = grey.copy()
    windowed = ArraySource(grey, window=(-1000, 1000)).read(2)
    np.testing.assert_array_equal(grey, before)
    assert windowed.shape == (4, 5, 3) and windowed[..., 0].max() == 255
    assert np.all(windowed[..., 0] == windowed[..., 2])


def test_live_stream_has_no_length_and_ends_cleanly():
    source = LiveStreamSource((synthetic_frame(i) for i in range(6)), history=3)
    assert source.num_frames is None and source.is_live
    with pytest.raises(TypeError, match="live stream of unknown length"):
        len(source)
    assert frame_code(source.read(4)) == 4
    assert frame_code(source.read(2)) == 2  # still within the history
    with pytest.raises(FrameIndexError, match="no longer held"):
        source.read(0)
    with pytest.raises(StreamEndedError, match="ended after 6 frames"):
        source.read(6)
    with pytest.raises(FrameIndexError, match="no longer held"):
        list(source)  # iteration restarts at frame 0, which is gone: an error, not a silent stop


def test_iterating_a_live_stream_stops_at_its_end():
    source = LiveStreamSource(iter([synthetic_frame(i) for i in range(4)]))
    assert [frame_code(frame) for frame in source] == [0, 1, 2, 3]


# -- volumes ---------------------------------------------------------------------------------

VOLUME_SHAPE = (7, 9, 11)  # (z, y, x)
SPACING = (0.7, 1.3, 2.9)  # (x, y, z): anisotropic
ORIGIN = (-12.5, 30.25, 7.0)


def oblique_direction() -> tuple[float, ...]:
    """A proper rotation with every index axis off the world axes but nearest to x, y, z in turn."""
    a, b, c = 0.35, -0.2, 0.15
    rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    ry = np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    rx = np.array([[1, 0, 0], [0, math.cos(c), -math.sin(c)], [0, math.sin(c), math.cos(c)]])
    return tuple((rz @ ry @ rx).ravel().tolist())


def ct_like_volume() -> np.ndarray:
    z, y, x = np.meshgrid(*[np.arange(n) for n in VOLUME_SHAPE], indexing="ij")
    return (z * 1000 + y * 30 + x - 900).astype(np.int16)  # every voxel distinct, spans CT range


def write_volume(path: Path, array: np.ndarray, direction: tuple[float, ...] | None = None) -> Path:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(SPACING)
    image.SetOrigin(ORIGIN)
    image.SetDirection(direction or oblique_direction())
    sitk.WriteImage(image, str(path))
    return path


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd"])
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_volume_slices_along_each_axis(tmp_path, suffix, axis):
    array = ct_like_volume()
    path = write_volume(tmp_path / f"ct{suffix}", array)
    window = IntensityWindow(-1000.0, 7000.0)
    with open_source(path, axis=axis, window=window) as source:
        assert isinstance(source, VolumeSource)
        assert source.num_frames == array.shape[axis]
        expected_shape = tuple(n for i, n in enumerate(array.shape) if i != axis)
        assert (source.height, source.width) == expected_shape
        for index in range(source.num_frames):
            values = np.take(array, index, axis=axis)
            np.testing.assert_array_equal(source.read_values(index), values)
            frame = source.read(index)
            assert frame.shape == (*expected_shape, 3) and frame.dtype == np.uint8
            np.testing.assert_array_equal(frame[..., 1], window.apply(values))
        geometry = source.geometry.volume
    assert geometry.array_shape == VOLUME_SHAPE and geometry.axis == axis
    np.testing.assert_allclose(geometry.spacing, SPACING, rtol=1e-6)
    np.testing.assert_allclose(geometry.origin, ORIGIN, atol=1e-4)
    np.testing.assert_allclose(geometry.direction, oblique_direction(), atol=1e-5)


def test_streamed_volume_reads_the_same_slices(tmp_path):
    array = ct_like_volume()
    path = write_volume(tmp_path / "ct.nrrd", array)
    for axis in range(3):
        with (
            VolumeSource(path, axis=axis, max_in_memory_bytes=0) as streamed,
            VolumeSource(path, axis=axis) as whole,
        ):
            assert type(streamed._voxels).__name__ == "_VoxelsStreamed"
            for index in range(streamed.num_frames):
                np.testing.assert_array_equal(streamed.read(index), whole.read(index))


def test_plane_names_follow_the_direction_matrix(tmp_path):
    # Index axes permuted: ITK i runs along world S, j along L, k along P.
    direction = (0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0)
    assert axis_from_plane("sagittal", direction) == 2 - 1
    assert axis_from_plane("coronal", direction) == 2 - 2
    assert axis_from_plane("axial", direction) == 2 - 0
    assert {axis_from_plane(p, oblique_direction()) for p in ("axial", "coronal", "sagittal")} == {0, 1, 2}
    assert axis_from_plane("Axial", oblique_direction()) == 0
    path = write_volume(tmp_path / "perm.nii.gz", ct_like_volume(), direction)
    with VolumeSource(path, axis="axial", window=(-1000, 7000)) as source:
        assert source.geometry.volume.axis == 2 and source.num_frames == VOLUME_SHAPE[2]


def test_time_series_walks_time_at_a_fixed_slice(tmp_path):
    series = np.stack([ct_like_volume() + 5 * t for t in range(4)])  # (t, z, y, x)
    image = sitk.GetImageFromArray(series, isVector=False)
    path = tmp_path / "cine.nii.gz"
    sitk.WriteImage(image, str(path))
    for max_bytes in (1 << 30, 0):
        with VolumeSource(
            path, axis=1, fixed_slice=4, window=(-1000, 7000), max_in_memory_bytes=max_bytes
        ) as source:
            assert source.num_frames == 4 and (source.height, source.width) == (7, 11)
            for t in range(4):
                np.testing.assert_array_equal(source.read_values(t), series[t, :, 4, :])
            assert source.geometry.volume.frame_region(2) == (2, slice(None), 4, slice(None))
    with VolumeSource(path) as source:  # default: axis 0, middle slice
        assert source.geometry.volume.fixed_slice == VOLUME_SHAPE[0] // 2


def test_dicom_series_folder(tmp_path):
    array = ct_like_volume()
    direction = oblique_direction()
    matrix = np.asarray(direction).reshape(3, 3)
    for k in range(array.shape[0]):
        slice_image = sitk.GetImageFromArray(array[k : k + 1])
        position = np.asarray(ORIGIN) + matrix[:, 2] * SPACING[2] * k
        slice_image.SetSpacing(SPACING)
        slice_image.SetOrigin(tuple(position))
        slice_image.SetDirection(direction)
        for tag, value in {
            "0020|000d": "1.2.826.0.1.3680043.2.1125.1",
            "0020|000e": "1.2.826.0.1.3680043.2.1125.1.2",
            "0008|0060": "CT",
            "0020|0037": "\\".join(f"{v:.10f}" for v in (*matrix[:, 0], *matrix[:, 1])),
            "0020|0032": "\\".join(f"{v:.10f}" for v in position),
            "0020|0013": str(k + 1),
        }.items():
            slice_image.SetMetaData(tag, value)
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        writer.SetFileName(str(tmp_path / f"slice{k:03d}.dcm"))
        writer.Execute(slice_image)
    for path in (tmp_path, tmp_path / "slice003.dcm"):  # the folder, or any one file of the series
        with open_source(path, axis=0, window=(-1000, 7000)) as source:
            assert isinstance(source, VolumeSource) and source.num_frames == array.shape[0]
            for index in range(source.num_frames):
                np.testing.assert_array_equal(source.read_values(index), array[index])
            np.testing.assert_allclose(source.geometry.volume.spacing, SPACING, rtol=1e-4)
            np.testing.assert_allclose(source.geometry.volume.direction, direction, atol=1e-6)


# -- windows ---------------------------------------------------------------------------------


def test_window_presets_and_explicit_windows():
    values = np.array([-2000, -160, 40, 240, 3000], np.int16)
    soft_tissue = resolve_window("ct_soft_tissue", values.dtype, lambda: values)
    assert soft_tissue.apply(values).tolist() == [0, 0, 128, 255, 255]
    assert resolve_window("soft tissue", values.dtype, lambda: values) == IntensityWindow(-160, 240)
    assert resolve_window("CT-lung", values.dtype, lambda: values) == IntensityWindow(-1350, 150)
    assert resolve_window("ct_bone", values.dtype, lambda: values) == IntensityWindow(-500, 1300)
    assert resolve_window((0, 100), values.dtype, lambda: values) == IntensityWindow(0, 100)
    assert resolve_window(None, np.uint8, lambda: values) == IntensityWindow(0, 255)
    with pytest.raises(ValueError, match="unknown intensity window 'brain'"):
        resolve_window("brain", values.dtype, lambda: values)
    with pytest.raises(ValueError, match="finite lower < upper"):
        resolve_window((10, 10), values.dtype, lambda: values)


def test_percentile_window_fits_the_data():
    values = np.arange(100_000, dtype=np.float32)
    window = resolve_window("mr", values.dtype, lambda: values)
    assert window.lower == pytest.approx(np.percentile(values, 0.5))
    assert window.upper == pytest.approx(np.percentile(values, 99.5))
    assert PercentileWindow().fit(np.full(10, 3.0)) == IntensityWindow(3.0, 4.0)  # constant data stays valid


def test_windowing_never_changes_the_input(tmp_path):
    array = ct_like_volume()
    before = array.copy()
    for window in ["ct_soft_tissue", "mr", (-100, 100), None]:
        IntensityWindow(-100, 100).apply(array)
        with VolumeSource(write_volume(tmp_path / "ct.nrrd", array), window=window) as source:
            frame = source.read(3)
            frame[:] = 0
            assert not source.read_values(3).flags.writeable
            assert np.any(source.read(3) != 0) or window == (-100, 100)
    np.testing.assert_array_equal(array, before)
    grey = array.astype(np.float32)
    source = ArraySource(grey, window="ct_soft_tissue")
    source.read(1)
    np.testing.assert_array_equal(grey, before.astype(np.float32))


def test_volume_geometry_frame_regions():
    geometry = VolumeGeometry(
        array_shape=(4, 5, 6), spacing=(1, 1, 1), origin=(0, 0, 0), direction=tuple(np.eye(3).ravel()), axis=1
    )
    assert geometry.num_frames == 5 and geometry.frame_shape == (4, 6)
    assert geometry.frame_region(3) == (slice(None), 3, slice(None))
    with pytest.raises(ValueError, match="needs fixed_slice"):
        VolumeGeometry(
            array_shape=(2, 4, 5, 6),
            spacing=(1,) * 4,
            origin=(0,) * 4,
            direction=tuple(np.eye(4).ravel()),
            axis=0,
        )
