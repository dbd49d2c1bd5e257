"""Datasets on disk: videos (DAVIS / YouTube-VOS and SA-V layouts), images and 3D volumes.

Layouts read here:

* **DAVIS / YouTube-VOS** (``layout="davis"``)::

      root/JPEGImages/<video>/<frame>.jpg
      root/Annotations/<video>/<frame>.png     # palette (or 8-bit grey) PNG, pixel = object id, 0 = background

  Annotations may be sparse (YouTube-VOS annotates every 5th frame): a frame is matched to
  the annotation with the same file stem, and frames without one are simply unannotated.
* **SA-V** (``layout="sav"``)::

      root/JPEGImages/<video>/<frame>.jpg
      root/Annotations/<video>/<obj_id>/<frame>.png   # one binary PNG per object per frame

* **Images** (:class:`ImageDataset`, the image half of the 1:4 image:video training mix)::

      root/images/<name>.jpg|.png
      root/masks/<name>.png                    # instance ids, 0 = background

* **Volumes** (:class:`VolumeDataset`)::

      root/images/<case>.nii.gz|.nii|.nrrd
      root/labels/<case>.nii.gz|.nii|.nrrd     # label map, 0 = background

Each layout may carry ``root/categories.json``: ``{video_or_case: {"<obj_id>": "<vocabulary name>"}}``,
which names objects with the SAM2S vocabulary (:mod:`sam2s.data.vocabulary`). Objects without
an entry have category ``None`` (TSL skips them).

Loading a clip returns a dictionary (the MONAI convention, so :func:`clip_transforms` and any
MONAI dictionary transform compose with it) whose keys are the constants of :class:`ClipKeys`:

* ``image``: ``uint8`` tensor (T, 3, H, W)
* ``masks``: ``bool`` tensor (T, O, H, W), one channel per object of ``obj_ids``
* ``obj_ids``: tuple of O ints; ``categories``: tuple of O names or ``None``
* ``frame_indices``: tuple of T ints; ``name``: the video, image or case name

Example:
    >>> ds = VideoDataset("data/davis")                        # doctest: +SKIP
    >>> clip = ds.load_clip("bear", [0, 1, 2])                 # doctest: +SKIP
    >>> clip = clip_transforms(image_size=512)(clip)           # image: float (3, 3, 512, 512), normalised
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.transforms import Compose, EnsureTyped, MapTransform, Transform
from monai.utils import optional_import
from PIL import Image

from sam2s.data.vocabulary import check_category

sitk, _HAS_SITK = optional_import("SimpleITK")

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ClipKeys",
    "DatasetError",
    "FrameAnnotation",
    "ImageDataset",
    "ImageRecord",
    "NormalizeImageNet",
    "NormalizeImageNetd",
    "ResizeClip",
    "ResizeClipd",
    "VideoDataset",
    "VideoRecord",
    "VolumeDataset",
    "VolumeRecord",
    "clip_transforms",
    "label_map_from_masks",
    "read_categories",
    "read_label_png",
]

FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png")
VOLUME_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CATEGORIES_FILE = "categories.json"


class DatasetError(ValueError):
    """A dataset folder or file is missing or malformed; the message says what and where."""


class ClipKeys:
    """Keys of the clip dictionaries returned by ``load_clip`` (MONAI dictionary convention)."""

    IMAGE = "image"
    MASKS = "masks"
    OBJ_IDS = "obj_ids"
    CATEGORIES = "categories"
    FRAME_INDICES = "frame_indices"
    NAME = "name"
    ORIGINAL_SIZE = "original_size"


# ----------------------------------------------------------------------------------------------
# Records
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FrameAnnotation:
    """Where one frame's ground truth is stored.

    Exactly one of the two fields is used: ``label_map`` (DAVIS layout, one PNG whose pixels
    are object ids) or ``object_masks`` (SA-V layout, ``(obj_id, path)`` pairs of binary PNGs).
    """

    label_map: Path | None = None
    object_masks: tuple[tuple[int, Path], ...] = ()


@dataclass(frozen=True)
class VideoRecord:
    """One video of a :class:`VideoDataset`.

    Attributes:
        name: folder name of the video.
        frame_dir: ``JPEGImages/<name>``; a frame-folder source for the predictor.
        frame_paths: every frame, sorted by name.
        annotations: one entry per frame; ``None`` where the frame is not annotated.
        object_ids: ids of the objects annotated anywhere in the video, ascending.
        categories: ``obj_id -> vocabulary name`` for the objects the categories file names.
        layout: ``"davis"`` or ``"sav"``.
    """

    name: str
    frame_dir: Path
    frame_paths: tuple[Path, ...]
    annotations: tuple[FrameAnnotation | None, ...]
    object_ids: tuple[int, ...]
    categories: Mapping[int, str] = field(default_factory=dict)
    layout: Literal["davis", "sav"] = "davis"

    @property
    def num_frames(self) -> int:
        return len(self.frame_paths)

    @property
    def annotated_frames(self) -> tuple[int, ...]:
        """Indices of the frames that have an annotation, ascending."""
        return tuple(i for i, a in enumerate(self.annotations) if a is not None)

    def category(self, obj_id: int) -> str | None:
        return self.categories.get(obj_id)


@dataclass(frozen=True)
class ImageRecord:
    """One image of an :class:`ImageDataset` with its instance-id mask."""

    name: str
    image_path: Path
    mask_path: Path
    object_ids: tuple[int, ...]
    categories: Mapping[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class VolumeRecord:
    """One case of a :class:`VolumeDataset`: an image volume and its label map."""

    name: str
    image_path: Path
    label_path: Path
    categories: Mapping[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class LoadedVolume:
    """A volume read into memory.

    Attributes:
        image: float32 (D, H, W) in the file's intensity units (HU for CT), index order (k, j, i).
        labels: int64 (D, H, W) label map.
        spacing: voxel size along (i, j, k) in mm, SimpleITK order.
        origin: physical position of voxel (0, 0, 0), (x, y, z).
        direction: 3x3 matrix whose columns are the physical directions of i, j, k.
    """

    image: np.ndarray
    labels: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: np.ndarray


# ----------------------------------------------------------------------------------------------
# Small readers
# ----------------------------------------------------------------------------------------------


def read_categories(path: str | Path) -> dict[str, dict[int, str]]:
    """Read a categories file: ``{name: {"<obj_id>": "<vocabulary name>"}}``.

    Raises:
        DatasetError: the file is not such a mapping, an id is not an integer, or a name is not
            in the SAM2S vocabulary.
    """
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DatasetError(f"categories file {path} is not valid JSON: {err}") from err
    if not isinstance(raw, dict):
        raise DatasetError(f"categories file {path} must hold a JSON object {{name: {{obj_id: category}}}}")
    result: dict[str, dict[int, str]] = {}
    for name, objects in raw.items():
        if not isinstance(objects, dict):
            raise DatasetError(f"categories file {path}: entry {name!r} must map object ids to names")
        per_object: dict[int, str] = {}
        for obj_id, category in objects.items():
            try:
                key = int(obj_id)
            except ValueError as err:
                raise DatasetError(
                    f"categories file {path}: object id {obj_id!r} of {name!r} is not an integer"
                ) from err
            try:
                per_object[key] = check_category(category)
            except ValueError as err:
                raise DatasetError(f"categories file {path}, {name!r} object {key}: {err}") from err
        result[str(name)] = per_object
    return result


def read_label_png(path: str | Path) -> np.ndarray:
    """Read an annotation PNG as an int64 (H, W) array of object ids.

    Palette ('P') and 8/16-bit grey PNGs hold ids directly. RGB annotations are refused: their
    colours would need a palette to become ids.
    """
    with Image.open(path) as img:
        if img.mode in ("RGB", "RGBA"):
            raise DatasetError(
                f"annotation {path} is an {img.mode} image; save annotations as palette (mode 'P') or grey "
                "PNGs whose pixel values are object ids"
            )
        return np.asarray(img).astype(np.int64)


def _read_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def _ids_in_png(path: Path) -> set[int]:
    with Image.open(path) as img:
        if img.mode == "P":
            # getcolors runs in C and avoids decoding the whole image into numpy twice.
            colors = img.getcolors(maxcolors=256) or []
            return {int(index) for _, index in colors if index != 0}
    return {int(v) for v in np.unique(read_label_png(path)) if v != 0}


def label_map_from_masks(masks: np.ndarray, obj_ids: Sequence[int]) -> np.ndarray:
    """Merge per-object masks into one id map; where objects overlap the lowest id wins.

    This is how SAM 2's VOS evaluation writes its palette PNGs, so scores on the merged map
    equal vos-benchmark's scores on those files.

    Args:
        masks: bool (O, H, W).
        obj_ids: O object ids, in the order of ``masks``.

    Returns:
        int64 (H, W), 0 = background.
    """
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 3 or masks.shape[0] != len(obj_ids):
        raise ValueError(f"masks must be (O, H, W) with O = len(obj_ids) = {len(obj_ids)}; got {masks.shape}")
    labels = np.zeros(masks.shape[1:], dtype=np.int64)
    for index in np.argsort(np.asarray(obj_ids))[::-1]:
        labels[masks[index]] = obj_ids[index]
    return labels


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DatasetError(f"{what} folder {path} does not exist")
    return path


def _files_with(folder: Path, extensions: Sequence[str]) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(tuple(extensions)))


def _stem(path: Path, extensions: Sequence[str]) -> str:
    lower = path.name.lower()
    for ext in sorted(extensions, key=len, reverse=True):
        if lower.endswith(ext):
            return path.name[: -len(ext)]
    return path.stem


def _load_categories(root: Path, categories: str | Path | None) -> dict[str, dict[int, str]]:
    if categories is None:
        default = root / CATEGORIES_FILE
        return read_categories(default) if default.is_file() else {}
    path = Path(categories)
    if not path.is_file():
        raise DatasetError(f"categories file {path} does not exist")
    return read_categories(path)


# ----------------------------------------------------------------------------------------------
# Videos
# ----------------------------------------------------------------------------------------------


class VideoDataset:
    """Videos in the DAVIS / YouTube-VOS or SA-V layout (see the module docstring).

    Args:
        root: dataset folder holding ``JPEGImages/`` and ``Annotations/``.
        layout: ``"davis"``, ``"sav"`` or ``"auto"`` (per video: object sub-folders mean SA-V).
        categories: path of a categories JSON; ``None`` reads ``root/categories.json`` if present.
        videos: restrict to these video names (in this order); ``None`` takes every video.
        images_dir: name of the frames folder.
        annotations_dir: name of the annotations folder.

    Raises:
        DatasetError: a folder is missing, a video has frames but no annotations (or the
            reverse), an annotation has no frame, or a video has no annotated frame.
    """

    def __init__(
        self,
        root: str | Path,
        layout: Literal["davis", "sav", "auto"] = "auto",
        categories: str | Path | None = None,
        videos: Sequence[str] | None = None,
        images_dir: str = "JPEGImages",
        annotations_dir: str = "Annotations",
    ) -> None:
        if layout not in ("davis", "sav", "auto"):
            raise ValueError(f"layout must be 'davis', 'sav' or 'auto', got {layout!r}")
        self.root = _require_dir(Path(root), "dataset")
        frames_root = _require_dir(self.root / images_dir, "frames (JPEGImages)")
        annotations_root = _require_dir(self.root / annotations_dir, "annotations")
        category_table = _load_categories(self.root, categories)

        frame_videos = sorted(p.name for p in frames_root.iterdir() if p.is_dir())
        annotated_videos = sorted(p.name for p in annotations_root.iterdir() if p.is_dir())
        if videos is None:
            missing_annotations = sorted(set(frame_videos) - set(annotated_videos))
            missing_frames = sorted(set(annotated_videos) - set(frame_videos))
            if missing_annotations:
                raise DatasetError(
                    f"videos {missing_annotations} have frames in {frames_root} but no folder in {annotations_root}"
                )
            if missing_frames:
                raise DatasetError(
                    f"videos {missing_frames} have annotations in {annotations_root} but no frames"
                )
            names = frame_videos
        else:
            names = list(videos)
        if not names:
            raise DatasetError(f"no video folders found in {frames_root}")

        self.records: tuple[VideoRecord, ...] = tuple(
            self._index_video(
                name,
                _require_dir(frames_root / name, f"frames of video {name!r}"),
                _require_dir(annotations_root / name, f"annotations of video {name!r}"),
                layout,
                category_table.get(name, {}),
            )
            for name in names
        )
        self._by_name = {r.name: r for r in self.records}

    @staticmethod
    def _index_video(
        name: str, frame_dir: Path, annotation_dir: Path, layout: str, categories: Mapping[int, str]
    ) -> VideoRecord:
        frame_paths = _files_with(frame_dir, FRAME_EXTENSIONS)
        if not frame_paths:
            raise DatasetError(f"video {name!r}: no .jpg/.png frames in {frame_dir}")
        stem_to_index = {p.stem: i for i, p in enumerate(frame_paths)}
        object_dirs = sorted(p for p in annotation_dir.iterdir() if p.is_dir())
        if layout == "auto":
            layout = "sav" if object_dirs else "davis"

        annotations: list[FrameAnnotation | None] = [None] * len(frame_paths)
        object_ids: set[int] = set()
        if layout == "davis":
            pngs = _files_with(annotation_dir, (".png",))
            for png in pngs:
                _check_frame_exists(name, png, stem_to_index)
                annotations[stem_to_index[png.stem]] = FrameAnnotation(label_map=png)
                object_ids |= _ids_in_png(png)
        else:
            per_frame: dict[int, list[tuple[int, Path]]] = {}
            for obj_dir in object_dirs:
                try:
                    obj_id = int(obj_dir.name)
                except ValueError as err:
                    raise DatasetError(
                        f"video {name!r}: SA-V object folder {obj_dir} must be named by its integer object id"
                    ) from err
                for png in _files_with(obj_dir, (".png",)):
                    _check_frame_exists(name, png, stem_to_index)
                    per_frame.setdefault(stem_to_index[png.stem], []).append((obj_id, png))
                    object_ids.add(obj_id)
            for index, pairs in per_frame.items():
                annotations[index] = FrameAnnotation(object_masks=tuple(sorted(pairs)))

        if all(a is None for a in annotations):
            raise DatasetError(f"video {name!r}: no annotation PNG matches any frame in {annotation_dir}")
        unknown = sorted(set(categories) - object_ids)
        if unknown and object_ids:
            raise DatasetError(
                f"video {name!r}: the categories file names objects {unknown} that no annotation holds"
            )
        return VideoRecord(
            name=name,
            frame_dir=frame_dir,
            frame_paths=tuple(frame_paths),
            annotations=tuple(annotations),
            object_ids=tuple(sorted(object_ids)),
            categories=dict(categories),
            layout=layout,  # type: ignore[arg-type]
        )

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> VideoRecord:
        return self.records[index]

    def __iter__(self):
        return iter(self.records)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.records)

    def record(self, video: int | str | VideoRecord) -> VideoRecord:
        """The record of a video given by index, name or record."""
        if isinstance(video, VideoRecord):
            return video
        if isinstance(video, str):
            if video not in self._by_name:
                raise DatasetError(
                    f"no video named {video!r} in {self.root}; known: {list(self._by_name)[:10]}..."
                )
            return self._by_name[video]
        return self.records[video]

    def read_frame(self, video: int | str | VideoRecord, frame_index: int) -> np.ndarray:
        """One frame as uint8 (H, W, 3) RGB."""
        record = self.record(video)
        _check_frame_index(record, frame_index)
        return _read_rgb(record.frame_paths[frame_index])

    def read_label_map(self, video: int | str | VideoRecord, frame_index: int) -> np.ndarray:
        """One frame's ground truth as an int64 (H, W) id map (SA-V overlaps: lowest id wins).

        Raises:
            DatasetError: the frame has no annotation.
        """
        record = self.record(video)
        annotation = _annotation_of(record, frame_index)
        if annotation.label_map is not None:
            return read_label_png(annotation.label_map)
        ids = [obj_id for obj_id, _ in annotation.object_masks]
        return label_map_from_masks(
            np.stack([read_label_png(p) != 0 for _, p in annotation.object_masks]), ids
        )

    def read_object_masks(
        self, video: int | str | VideoRecord, frame_index: int, obj_ids: Sequence[int] | None = None
    ) -> np.ndarray:
        """One frame's ground truth as bool (O, H, W), one channel per id of ``obj_ids`` (default: all).

        An object not annotated on this frame gets an empty channel. In the SA-V layout
        overlapping objects keep their own full masks.
        """
        record = self.record(video)
        obj_ids = record.object_ids if obj_ids is None else tuple(obj_ids)
        annotation = _annotation_of(record, frame_index)
        if annotation.label_map is not None:
            labels = read_label_png(annotation.label_map)
            return np.stack([labels == i for i in obj_ids]) if obj_ids else np.zeros((0, *labels.shape), bool)
        paths = dict(annotation.object_masks)
        with Image.open(record.frame_paths[frame_index]) as frame:  # reads the header only
            width, height = frame.size
        masks = np.zeros((len(obj_ids), height, width), dtype=bool)
        for channel, obj_id in enumerate(obj_ids):
            if obj_id in paths:
                masks[channel] = _checked_shape(
                    read_label_png(paths[obj_id]) != 0, (height, width), paths[obj_id]
                )
        return masks

    def load_clip(
        self,
        video: int | str | VideoRecord,
        frame_indices: Sequence[int],
        obj_ids: Sequence[int] | None = None,
    ) -> dict[str, Any]:
        """Load frames and masks of a clip as tensors (keys: :class:`ClipKeys`).

        Args:
            video: index, name or record.
            frame_indices: frames to load, in the order wanted; every one must be annotated.
            obj_ids: objects to return; ``None`` means every object of the video.

        Returns:
            ``image`` uint8 (T, 3, H, W), ``masks`` bool (T, O, H, W) and the metadata keys.

        Raises:
            DatasetError: a frame index is out of range or a frame is not annotated.
        """
        record = self.record(video)
        obj_ids = record.object_ids if obj_ids is None else tuple(obj_ids)
        if len(frame_indices) == 0:
            raise DatasetError("a clip needs at least one frame index")
        for index in frame_indices:
            _check_frame_index(record, index)
        unannotated = [i for i in frame_indices if record.annotations[i] is None]
        if unannotated:
            raise DatasetError(
                f"video {record.name!r}: frames {unannotated} have no annotation; sample clips from "
                f"record.annotated_frames ({len(record.annotated_frames)} of {record.num_frames} frames)"
            )
        frames = [self.read_frame(record, i) for i in frame_indices]
        shape = frames[0].shape
        for i, frame in zip(frame_indices, frames):
            _checked_shape(frame, shape, record.frame_paths[i])
        masks = [
            _checked_shape(
                self.read_object_masks(record, i, obj_ids), (len(obj_ids), *shape[:2]), record.frame_dir
            )
            for i in frame_indices
        ]
        return _clip_dict(
            record.name,
            np.stack(frames),
            np.stack(masks),
            obj_ids,
            tuple(record.category(i) for i in obj_ids),
            tuple(frame_indices),
        )


def _check_frame_exists(video: str, png: Path, stem_to_index: Mapping[str, int]) -> None:
    if png.stem not in stem_to_index:
        raise DatasetError(f"video {video!r}: annotation {png} has no frame named {png.stem}.jpg/.png")


def _check_frame_index(record: VideoRecord, index: int) -> None:
    if not 0 <= index < record.num_frames:
        raise DatasetError(
            f"video {record.name!r} has {record.num_frames} frames; frame index {index} is out of range"
        )


def _annotation_of(record: VideoRecord, frame_index: int) -> FrameAnnotation:
    _check_frame_index(record, frame_index)
    annotation = record.annotations[frame_index]
    if annotation is None:
        raise DatasetError(
            f"video {record.name!r}: frame {frame_index} ({record.frame_paths[frame_index].name}) has no annotation"
        )
    return annotation


def _checked_shape(array: np.ndarray, shape: tuple[int, ...], where: Path) -> np.ndarray:
    if tuple(array.shape[: len(shape)]) != tuple(shape):
        raise DatasetError(f"{where}: shape {array.shape} does not match the expected {shape}")
    return array


def _clip_dict(
    name: str,
    frames: np.ndarray,
    masks: np.ndarray,
    obj_ids: Sequence[int],
    categories: Sequence[str | None],
    frame_indices: Sequence[int],
) -> dict[str, Any]:
    """Pack (T, H, W, 3) uint8 frames and (T, O, H, W) masks into a clip dictionary of tensors."""
    return {
        ClipKeys.IMAGE: torch.from_numpy(np.ascontiguousarray(frames.transpose(0, 3, 1, 2))),
        ClipKeys.MASKS: torch.from_numpy(np.ascontiguousarray(masks.astype(bool))),
        ClipKeys.OBJ_IDS: tuple(int(i) for i in obj_ids),
        ClipKeys.CATEGORIES: tuple(categories),
        ClipKeys.FRAME_INDICES: tuple(int(i) for i in frame_indices),
        ClipKeys.NAME: name,
        ClipKeys.ORIGINAL_SIZE: (int(frames.shape[1]), int(frames.shape[2])),
    }


# ----------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------


class ImageDataset:
    """Images with instance-id masks (``images/`` + ``masks/``), served as one-frame clips.

    Training mixes these with video clips (images:videos = 1:4 in the paper); a one-frame clip
    has the same keys and shapes (T = 1) so one loop handles both.

    Args:
        root: folder holding ``images/`` and ``masks/``.
        categories: categories JSON keyed by image name; ``None`` reads ``root/categories.json``.

    Raises:
        DatasetError: a folder is missing or an image has no mask.
    """

    def __init__(self, root: str | Path, categories: str | Path | None = None) -> None:
        self.root = _require_dir(Path(root), "image dataset")
        images = _files_with(_require_dir(self.root / "images", "images"), FRAME_EXTENSIONS)
        masks_dir = _require_dir(self.root / "masks", "masks")
        if not images:
            raise DatasetError(f"no .jpg/.png images in {self.root / 'images'}")
        table = _load_categories(self.root, categories)
        records = []
        for image_path in images:
            mask_path = masks_dir / f"{image_path.stem}.png"
            if not mask_path.is_file():
                raise DatasetError(f"image {image_path.name} has no mask {mask_path}")
            records.append(
                ImageRecord(
                    name=image_path.stem,
                    image_path=image_path,
                    mask_path=mask_path,
                    object_ids=tuple(sorted(_ids_in_png(mask_path))),
                    categories=table.get(image_path.stem, {}),
                )
            )
        self.records: tuple[ImageRecord, ...] = tuple(records)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> ImageRecord:
        return self.records[index]

    def load_clip(self, image: int | ImageRecord, obj_ids: Sequence[int] | None = None) -> dict[str, Any]:
        """Load one image as a one-frame clip: ``image`` uint8 (1, 3, H, W), ``masks`` bool (1, O, H, W)."""
        record = image if isinstance(image, ImageRecord) else self.records[image]
        obj_ids = record.object_ids if obj_ids is None else tuple(obj_ids)
        rgb = _read_rgb(record.image_path)
        labels = _checked_shape(read_label_png(record.mask_path), rgb.shape[:2], record.mask_path)
        masks = np.stack([labels == i for i in obj_ids]) if obj_ids else np.zeros((0, *labels.shape), bool)
        return _clip_dict(
            record.name,
            rgb[None],
            masks[None],
            obj_ids,
            tuple(record.categories.get(i) for i in obj_ids),
            (0,),
        )


# ----------------------------------------------------------------------------------------------
# Volumes
# ----------------------------------------------------------------------------------------------


def _require_sitk() -> None:
    if not _HAS_SITK:
        raise ImportError("reading volumes needs SimpleITK: pip install 'sam2s[volume]'")


def read_volume(path: str | Path) -> tuple[np.ndarray, tuple[float, ...], tuple[float, ...], np.ndarray]:
    """Read a NIfTI / NRRD / MetaImage file: (array (D, H, W), spacing, origin, direction 3x3)."""
    _require_sitk()
    image = sitk.ReadImage(str(path))
    if image.GetDimension() != 3:
        raise DatasetError(f"{path} is a {image.GetDimension()}D image; a volume must be 3D")
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    return sitk.GetArrayFromImage(image), image.GetSpacing(), image.GetOrigin(), direction


class VolumeDataset:
    """3D volumes with label maps, read as slice sequences (``images/`` + ``labels/``).

    Slices are taken along an array axis of the (k, j, i) voxel grid, so an oblique direction
    matrix does not resample anything: slice ``s`` along axis 0 is voxel plane ``k = s``.

    Args:
        root: folder holding ``images/`` and ``labels/``, files matched by name.
        categories: categories JSON keyed by case name (label value -> vocabulary name).

    Raises:
        DatasetError: a folder is missing or an image has no label file.
    """

    def __init__(self, root: str | Path, categories: str | Path | None = None) -> None:
        self.root = _require_dir(Path(root), "volume dataset")
        images = _files_with(_require_dir(self.root / "images", "images"), VOLUME_EXTENSIONS)
        labels_dir = _require_dir(self.root / "labels", "labels")
        if not images:
            raise DatasetError(f"no volumes ({', '.join(VOLUME_EXTENSIONS)}) in {self.root / 'images'}")
        labels_by_stem = {_stem(p, VOLUME_EXTENSIONS): p for p in _files_with(labels_dir, VOLUME_EXTENSIONS)}
        table = _load_categories(self.root, categories)
        records = []
        for image_path in images:
            name = _stem(image_path, VOLUME_EXTENSIONS)
            if name not in labels_by_stem:
                raise DatasetError(
                    f"volume {image_path.name} has no label map named {name}.* in {labels_dir}"
                )
            records.append(VolumeRecord(name, image_path, labels_by_stem[name], table.get(name, {})))
        self.records: tuple[VolumeRecord, ...] = tuple(records)
        self._cache: tuple[str, LoadedVolume] | None = None

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> VolumeRecord:
        return self.records[index]

    def load_volume(self, volume: int | VolumeRecord) -> LoadedVolume:
        """Read a case (the last one read is cached, so clips of one case do not re-read it)."""
        record = volume if isinstance(volume, VolumeRecord) else self.records[volume]
        if self._cache is not None and self._cache[0] == record.name:
            return self._cache[1]
        image, spacing, origin, direction = read_volume(record.image_path)
        labels = read_volume(record.label_path)[0]
        if labels.shape != image.shape:
            raise DatasetError(
                f"case {record.name!r}: label map shape {labels.shape} differs from image {image.shape}"
            )
        loaded = LoadedVolume(
            image=image.astype(np.float32),
            labels=labels.astype(np.int64),
            spacing=tuple(float(s) for s in spacing),  # type: ignore[arg-type]
            origin=tuple(float(o) for o in origin),  # type: ignore[arg-type]
            direction=direction,
        )
        self._cache = (record.name, loaded)
        return loaded

    def load_clip(
        self,
        volume: int | VolumeRecord,
        slice_indices: Sequence[int],
        axis: int = 0,
        window: tuple[float, float] | None = None,
        obj_ids: Sequence[int] | None = None,
    ) -> dict[str, Any]:
        """Load slices of a case as a clip of grey frames repeated to 3 channels.

        Args:
            volume: index or record.
            slice_indices: slice positions along ``axis``.
            axis: array axis of the (D, H, W) volume to slice across.
            window: intensity range mapped to 0..255 (e.g. (-160, 240) HU for abdomen CT);
                ``None`` uses the 0.5 and 99.5 percentiles of the whole volume.
            obj_ids: label values to return; ``None`` means every label present in the volume.

        Returns:
            ``image`` uint8 (T, 3, H', W'), ``masks`` bool (T, O, H', W') where (H', W') is the
            slice shape, plus the metadata keys.
        """
        record = volume if isinstance(volume, VolumeRecord) else self.records[volume]
        loaded = self.load_volume(record)
        if axis not in (0, 1, 2):
            raise ValueError(f"axis must be 0, 1 or 2, got {axis}")
        depth = loaded.image.shape[axis]
        bad = [s for s in slice_indices if not 0 <= s < depth]
        if bad or len(slice_indices) == 0:
            raise DatasetError(
                f"case {record.name!r} has {depth} slices along axis {axis}; bad slice indices {bad}"
            )
        if obj_ids is None:
            obj_ids = tuple(int(v) for v in np.unique(loaded.labels) if v != 0)
        low, high = window if window is not None else tuple(np.percentile(loaded.image, [0.5, 99.5]))
        scale = 255.0 / max(float(high) - float(low), 1e-6)
        slices = np.take(loaded.image, list(slice_indices), axis=axis)
        labels = np.take(loaded.labels, list(slice_indices), axis=axis)
        if axis != 0:
            slices = np.moveaxis(slices, axis, 0)
            labels = np.moveaxis(labels, axis, 0)
        grey = np.clip((slices - low) * scale, 0, 255).astype(np.uint8)
        frames = np.repeat(grey[..., None], 3, axis=-1)
        masks = (
            np.stack([labels == i for i in obj_ids], axis=1)
            if obj_ids
            else np.zeros((len(grey), 0, *grey.shape[1:]), bool)
        )
        return _clip_dict(
            record.name,
            frames,
            masks,
            obj_ids,
            tuple(record.categories.get(i) for i in obj_ids),
            tuple(slice_indices),
        )


# ----------------------------------------------------------------------------------------------
# Clip transforms
# ----------------------------------------------------------------------------------------------


class ResizeClip(Transform):
    """Resize a clip to a square ``size`` x ``size``, ignoring the aspect ratio as SAM 2 does.

    Images (T, C, H, W) are resized bilinearly with antialiasing and become float32 in the
    input's value range; masks (T, O, H, W) use nearest-neighbour and stay bool.

    Args:
        size: side of the model input (1024 for SAM 2.1, 512 for SAM2S).
    """

    def __init__(self, size: int) -> None:
        if size <= 0:
            raise ValueError(f"size must be positive, got {size}")
        self.size = size

    def __call__(self, clip: torch.Tensor, is_mask: bool = False) -> torch.Tensor:
        if clip.ndim != 4:
            raise ValueError(f"a clip tensor must be (T, C, H, W), got shape {tuple(clip.shape)}")
        target = (self.size, self.size)
        if is_mask:
            if clip.shape[1] == 0:
                return torch.zeros((clip.shape[0], 0, *target), dtype=torch.bool)
            return F.interpolate(clip.float(), size=target, mode="nearest").bool()
        return F.interpolate(clip.float(), size=target, mode="bilinear", align_corners=False, antialias=True)


class ResizeClipd(MapTransform):
    """Dictionary wrapper of :class:`ResizeClip`; keeps the source size under ``original_size``.

    Args:
        keys: image keys (bilinear).
        size: output side.
        mask_keys: mask keys (nearest).
    """

    def __init__(
        self,
        keys: KeysCollection = ClipKeys.IMAGE,
        size: int = 512,
        mask_keys: KeysCollection = ClipKeys.MASKS,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.mask_keys = (mask_keys,) if isinstance(mask_keys, str) else tuple(mask_keys)
        self.resizer = ResizeClip(size)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d.setdefault(ClipKeys.ORIGINAL_SIZE, tuple(d[key].shape[-2:]))
            d[key] = self.resizer(d[key])
        for key in self.mask_keys:
            if key in d:
                d[key] = self.resizer(d[key], is_mask=True)
            elif not self.allow_missing_keys:
                raise KeyError(f"mask key {key!r} not in the clip; keys: {list(d)}")
        return d


class NormalizeImageNet(Transform):
    """Map 0..255 RGB (T, 3, H, W) to float32 normalised with the ImageNet mean and std."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if image.ndim != 4 or image.shape[1] != self.mean.shape[1]:
            raise ValueError(f"expected (T, {self.mean.shape[1]}, H, W) RGB, got shape {tuple(image.shape)}")
        return (image.float() / 255.0 - self.mean) / self.std


class NormalizeImageNetd(MapTransform):
    """Dictionary wrapper of :class:`NormalizeImageNet`."""

    def __init__(self, keys: KeysCollection = ClipKeys.IMAGE, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.normalizer = NormalizeImageNet()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.normalizer(d[key])
        return d


def clip_transforms(image_size: int) -> Compose:
    """The model-input pipeline for clip dictionaries: to tensor, resize, ImageNet normalisation.

    Compose it with augmentation transforms before (on uint8 frames) as a training loop needs.

    Args:
        image_size: the model's square input side.

    Returns:
        A MONAI ``Compose`` mapping a clip to ``image`` float32 (T, 3, S, S) and ``masks`` bool (T, O, S, S).
    """
    return Compose(
        [
            EnsureTyped(keys=(ClipKeys.IMAGE, ClipKeys.MASKS), data_type="tensor", track_meta=False),
            ResizeClipd(keys=ClipKeys.IMAGE, size=image_size, mask_keys=ClipKeys.MASKS),
            NormalizeImageNetd(keys=ClipKeys.IMAGE),
        ]
    )
