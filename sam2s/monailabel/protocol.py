"""The request format of the ``sam2s`` MONAI Label task, parsed and checked.

Nothing here imports MONAI Label: a request is the dict MONAI Label builds from the ``params``
form field of ``POST /infer/{model}`` (plus ``image`` and ``client_id``), and the answer to a bad
one is a :class:`RequestError` that names the problem; the task turns it into a 4xx response.

Coordinates follow MONAI Label's conventions: a point is an image *index* ``[i, j, k]`` in the
order ITK / MONAI Label use, i.e. ``[x (column), y (row), slice]`` for a volume and
``[x (column), y (row), frame]`` for a video. ``roi`` is ``[i0, j0, i1, j1]`` on one frame, or
``[i0, j0, i1, j1, k0, k1]``. A volume is walked along ``axis`` (0, 1 or 2 of the numpy
``(z, y, x)`` array, or ``"axial"`` / ``"coronal"`` / ``"sagittal"``; default 0, the ``k``
slices): index ``[i, j, k]`` is then on frame ``k`` at ``(x, y) = (i, j)`` for axis 0, on frame
``j`` at ``(i, k)`` for axis 1, and on frame ``i`` at ``(j, k)`` for axis 2.
:class:`IndexLayout` does this mapping.

Mask prompts are ``{"frame": f, "shape": [H, W], "bits": base64}`` where ``bits`` is
``numpy.packbits`` of the ``(H, W)`` bool frame mask in C order (rows = the frame's ``y``).
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "DIRECTIONS",
    "LABEL_FRAMES",
    "RESULT_EXTENSIONS",
    "FramePrompt",
    "IndexLayout",
    "InferRequest",
    "MaskPrompt",
    "ObjectRequest",
    "RequestError",
    "decode_mask",
    "encode_mask",
]

DIRECTIONS = ("none", "forward", "backward", "both")
LABEL_FRAMES = ("all", "computed")
RESULT_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".png")
MAX_OBJECT_ID = 65535


class RequestError(ValueError):
    """A request the task cannot serve; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class MaskPrompt:
    """A drawn mask for one object on one frame: ``mask`` is ``(H, W)`` bool, frame rows x columns."""

    frame: int
    mask: np.ndarray


@dataclass
class ObjectRequest:
    """The prompts of one object, as sent (image index coordinates).

    Attributes:
        obj_id: the label value of this object in the returned label image.
        label: its name, when the request named it.
        foreground, background: ``[i, j, k]`` (or ``[i, j]`` with the request's ``frame``) clicks.
        roi: ``[i0, j0, i1, j1]`` or ``[i0, j0, i1, j1, k0, k1]``, or ``None``.
        masks: drawn masks, frame by frame.
    """

    obj_id: int
    label: str | None = None
    foreground: list[list[float]] = field(default_factory=list)
    background: list[list[float]] = field(default_factory=list)
    roi: list[float] | None = None
    masks: list[MaskPrompt] = field(default_factory=list)

    @property
    def is_empty(self) -> bool:
        return not (self.foreground or self.background or self.roi or self.masks)


@dataclass
class FramePrompt:
    """One object's prompt on one frame, in frame pixels (what :meth:`sam2s.Session.add_prompt` takes).

    Attributes:
        points: ``(x, y)`` clicks; ``labels`` 1 positive / 0 negative, in the same order.
        box: ``(x0, y0, x1, y1)`` or ``None``.
        mask: ``(H, W)`` bool or ``None``; applied before the clicks, which then refine it.
    """

    points: list[tuple[float, float]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    box: tuple[float, float, float, float] | None = None
    mask: np.ndarray | None = None

    @property
    def has_clicks_or_box(self) -> bool:
        return bool(self.points) or self.box is not None


@dataclass
class InferRequest:
    """Everything one ``/infer/sam2s*`` request asks for (see the app's README for the reference).

    Attributes:
        objects: the prompted objects, in the order their prompts are applied.
        frame: the frame for two-element points and rois.
        axis, window, frame_stack: how the image is read (volumes: walking axis and intensity
            window; ``frame_stack``: read the file into memory as ``(T, H, W[, 3])`` frames).
        propagate: ``"none"`` (only the prompted frames), ``"forward"``, ``"backward"``, ``"both"``.
        start_frame, max_frames: as in :meth:`sam2s.Session.propagate`.
        chunk_frames: answer after this many propagated frames; ``resume`` fetches the next chunk.
        reset: forget this client's objects on this image before anything else.
        label_frames: ``"all"`` (the label covers the whole image) or ``"computed"`` (only the
            frames from the first to the last computed one); ``None`` picks by image kind.
        result_extension: file type of the returned label.
        client_id: the annotator; requests without one keep no state between them.
    """

    objects: list[ObjectRequest] = field(default_factory=list)
    frame: int | None = None
    axis: int | str | None = None
    window: str | tuple[float, float] | None = None
    frame_stack: bool = False
    propagate: str = "none"
    start_frame: int | None = None
    max_frames: int | None = None
    chunk_frames: int | None = None
    resume: bool = False
    reset: bool = False
    label_frames: str | None = None
    result_extension: str | None = None
    client_id: str | None = None

    @property
    def reading(self) -> tuple:
        """How the image is read, as part of the session key."""
        window = list(self.window) if isinstance(self.window, tuple) else self.window
        return (repr(self.axis), repr(window), self.frame_stack)

    @classmethod
    def from_params(
        cls, params: Mapping[str, object], label_ids: Mapping[str, int], default_propagate: str = "none"
    ) -> InferRequest:
        """Parse and check a request.

        Args:
            params: the request dict (MONAI Label merges the ``params`` JSON into it).
            label_ids: the task's label names and their values, for objects given by name.
            default_propagate: the task's default for ``propagate``.

        Raises:
            RequestError: a field has the wrong type or value; the message names the field.
        """
        if not isinstance(params, Mapping):
            raise RequestError(f"params must be a JSON object, got {type(params).__name__}")
        request = cls(
            frame=_optional_int(params, "frame", minimum=0, alias="slice"),
            axis=_axis(params.get("axis")),
            window=_window(params.get("window")),
            frame_stack=_bool(params, "frame_stack", False),
            propagate=_choice(params, "propagate", DIRECTIONS, default_propagate),
            start_frame=_optional_int(params, "start_frame", minimum=0),
            max_frames=_optional_int(params, "max_frames", minimum=1),
            chunk_frames=_optional_int(params, "chunk_frames", minimum=1),
            resume=_bool(params, "resume", False),
            reset=_bool(params, "reset", False),
            label_frames=_choice(params, "label_frames", LABEL_FRAMES, None),
            result_extension=_choice(params, "result_extension", RESULT_EXTENSIONS, None),
            client_id=_optional_str(params, "client_id"),
        )
        request.objects = _objects(params, label_ids)
        if request.resume and request.objects:
            raise RequestError("resume continues a propagation; send no prompts with it")
        if request.resume and request.reset:
            raise RequestError("resume and reset cannot be combined")
        return request


# ---------------------------------------------------------------------------------- geometry
@dataclass(frozen=True)
class IndexLayout:
    """Maps image indices ``[i, j, k]`` to ``(frame, x, y)`` for a source walked along ``axis``.

    Attributes:
        axis: the numpy axis (0/1/2 of ``(z, y, x)``) frames are cut across; a video is 0.
        size: the image size in index order ``(I, J, K)`` (a video: ``(W, H, T)``).
    """

    axis: int
    size: tuple[int, int, int]

    @property
    def frame_index_axis(self) -> int:
        """The position in ``[i, j, k]`` that is the frame number."""
        return 2 - self.axis

    @property
    def plane_index_axes(self) -> tuple[int, int]:
        """The positions in ``[i, j, k]`` that are the frame's ``x`` and ``y``."""
        x, y = (c for c in range(3) if c != self.frame_index_axis)
        return x, y

    @property
    def num_frames(self) -> int:
        return self.size[self.frame_index_axis]

    @property
    def frame_size(self) -> tuple[int, int]:
        """``(H, W)`` of one frame."""
        x, y = self.plane_index_axes
        return self.size[y], self.size[x]

    def point_to_frame(
        self, point: Sequence[float], frame: int | None, what: str
    ) -> tuple[int, float, float]:
        """``[i, j, k]`` (or ``[i, j]`` on ``frame``) -> ``(frame, x, y)``, checked against the image."""
        if len(point) == 2:
            if self.axis != 0:
                raise RequestError(
                    f"{what} {list(point)} has two numbers; with axis {self.axis} give [i, j, k]"
                )
            if frame is None:
                if self.num_frames != 1:
                    raise RequestError(
                        f"{what} {list(point)} has two numbers but the request has no 'frame' (the slice or "
                        f"frame index, 0..{self.num_frames - 1}); give [x, y, frame] points or set 'frame'"
                    )
                frame = 0
            point = [point[0], point[1], frame]
        # Within a frame, coordinates are continuous (0..W, 0..H, as the predictor takes them);
        # the frame number is an index (0..frames - 1).
        limits = [float(size) for size in self.size]
        limits[self.frame_index_axis] -= 1
        for value, limit in zip(point, limits):
            if not 0 <= value <= limit:
                low = [f"0..{v:g}" for v in limits]
                raise RequestError(
                    f"{what} {_show(point)} is outside the image: [i, j, k] must lie within [{', '.join(low)}]"
                )
        frame_number = point[self.frame_index_axis]
        if frame_number != round(frame_number):
            raise RequestError(f"{what} {_show(point)}: the frame/slice index must be a whole number")
        x_axis, y_axis = self.plane_index_axes
        return round(frame_number), float(point[x_axis]), float(point[y_axis])

    def roi_to_frame(
        self, roi: Sequence[float], frame: int | None
    ) -> tuple[int, tuple[float, float, float, float]]:
        """``roi`` -> ``(frame, (x0, y0, x1, y1))``: the box goes on the middle frame of its range."""
        if len(roi) == 4:
            box_frame, x0, y0 = self.point_to_frame(roi[0:2], frame, "roi corner")
            _, x1, y1 = self.point_to_frame(roi[2:4], frame, "roi corner")
        else:
            low = [roi[0], roi[1], roi[4]]
            high = [roi[2], roi[3], roi[5]]
            if low[self.frame_index_axis] > high[self.frame_index_axis]:
                low[self.frame_index_axis], high[self.frame_index_axis] = (
                    high[self.frame_index_axis],
                    low[self.frame_index_axis],
                )
            f0, x0, y0 = self.point_to_frame(low, None, "roi corner")
            f1, x1, y1 = self.point_to_frame(high, None, "roi corner")
            box_frame = (f0 + f1) // 2
        if x1 < x0 or y1 < y0:
            raise RequestError(
                f"roi {_show(roi)} has its second corner before its first; give [i0, j0, i1, j1, ...]"
            )
        return box_frame, (x0, y0, x1, y1)

    def frame_prompts(self, obj: ObjectRequest, frame: int | None) -> dict[int, FramePrompt]:
        """One object's prompts grouped by frame, in frame pixels, frames ascending."""
        prompts: dict[int, FramePrompt] = {}
        for clicks, positive, name in ((obj.foreground, 1, "foreground"), (obj.background, 0, "background")):
            for point in clicks:
                index, x, y = self.point_to_frame(point, frame, f"{name} point")
                prompt = prompts.setdefault(index, FramePrompt())
                prompt.points.append((x, y))
                prompt.labels.append(positive)
        if obj.roi is not None:
            index, box = self.roi_to_frame(obj.roi, frame)
            prompts.setdefault(index, FramePrompt()).box = box
        height, width = self.frame_size
        for drawn in obj.masks:
            if not 0 <= drawn.frame < self.num_frames:
                raise RequestError(f"mask frame {drawn.frame} is outside 0..{self.num_frames - 1}")
            if drawn.mask.shape != (height, width):
                raise RequestError(
                    f"mask on frame {drawn.frame} has shape {list(drawn.mask.shape)}; frames here are "
                    f"[{height}, {width}] (rows, columns)"
                )
            prompts.setdefault(drawn.frame, FramePrompt()).mask = drawn.mask
        return dict(sorted(prompts.items()))


# ---------------------------------------------------------------------------------- masks
def encode_mask(mask: np.ndarray) -> dict[str, object]:
    """``(H, W)`` bool -> the JSON form of a mask prompt (without its ``frame``)."""
    mask = np.asarray(mask, dtype=bool)
    return {"shape": list(mask.shape), "bits": base64.b64encode(np.packbits(mask.ravel())).decode("ascii")}


def decode_mask(item: Mapping[str, object], what: str = "mask") -> np.ndarray:
    """The JSON form of a mask -> ``(H, W)`` bool."""
    shape = item.get("shape")
    if not (isinstance(shape, list) and len(shape) == 2 and all(_is_int(v) and v > 0 for v in shape)):
        raise RequestError(f"{what}: 'shape' must be [H, W] (positive integers), got {shape!r}")
    bits = item.get("bits")
    if not isinstance(bits, str):
        raise RequestError(f"{what}: 'bits' must be a base64 string of numpy.packbits(mask)")
    try:
        packed = np.frombuffer(base64.b64decode(bits, validate=True), dtype=np.uint8)
    except (binascii.Error, ValueError) as error:
        raise RequestError(f"{what}: 'bits' is not valid base64 ({error})") from None
    count = int(shape[0]) * int(shape[1])
    if len(packed) != (count + 7) // 8:
        raise RequestError(
            f"{what}: 'bits' holds {len(packed) * 8} bits, a {shape[0]}x{shape[1]} mask needs {count}"
        )
    return np.unpackbits(packed, count=count).astype(bool).reshape(int(shape[0]), int(shape[1]))


# ---------------------------------------------------------------------------------- field parsing
def _objects(params: Mapping[str, object], label_ids: Mapping[str, int]) -> list[ObjectRequest]:
    single_keys = [k for k in ("foreground", "background", "roi", "masks") if params.get(k)]
    listed = params.get("objects")
    if listed is not None:
        if single_keys:
            raise RequestError(
                f"give prompts either in 'objects' or at the top level, not both (found {single_keys})"
            )
        if not isinstance(listed, list):
            raise RequestError("'objects' must be a list of {id/label, foreground, background, roi, masks}")
        objects = [
            _object(item, f"objects[{n}]", label_ids, default_id=n + 1) for n, item in enumerate(listed)
        ]
    else:
        single = _object(params, "request", label_ids, default_id=1, ignore_extra=True)
        objects = [] if single.is_empty else [single]
    ids = [obj.obj_id for obj in objects]
    if len(set(ids)) != len(ids):
        raise RequestError(f"object ids must be distinct, got {ids}")
    for index, obj in enumerate(objects):
        if obj.is_empty:
            raise RequestError(
                f"objects[{index}] has no prompt: give foreground/background points, a roi or masks"
            )
    return objects


def _object(
    item: object, where: str, label_ids: Mapping[str, int], default_id: int, ignore_extra: bool = False
) -> ObjectRequest:
    if not isinstance(item, Mapping):
        raise RequestError(f"{where} must be a JSON object")
    if not ignore_extra:
        unknown = sorted(set(item) - {"id", "label", "foreground", "background", "roi", "masks"})
        if unknown:
            raise RequestError(
                f"{where} has unknown keys {unknown}; use id, label, foreground, background, roi, masks"
            )
    label = item.get("label")
    if label is not None and not isinstance(label, str):
        raise RequestError(f"{where}: 'label' must be a label name (string), got {label!r}")
    obj_id = item.get("id")
    if obj_id is not None:
        if not _is_int(obj_id) or not 1 <= obj_id <= MAX_OBJECT_ID:
            raise RequestError(
                f"{where}: 'id' must be an integer label value in 1..{MAX_OBJECT_ID}, got {obj_id!r}"
            )
    elif label:
        if label not in label_ids:
            known = ", ".join(sorted(label_ids)) or "(none)"
            raise RequestError(
                f"{where}: unknown label {label!r}; known labels: {known}; or give an explicit 'id'"
            )
        obj_id = label_ids[label]
    else:
        obj_id = default_id
    masks = item.get("masks") or []
    if not isinstance(masks, list):
        raise RequestError(f"{where}: 'masks' must be a list of {{frame, shape, bits}}")
    decoded = []
    for n, mask_item in enumerate(masks):
        what = f"{where}.masks[{n}]"
        if (
            not isinstance(mask_item, Mapping)
            or not _is_int(mask_item.get("frame"))
            or mask_item["frame"] < 0
        ):
            raise RequestError(f"{what} must be {{frame: int >= 0, shape: [H, W], bits: base64}}")
        decoded.append(MaskPrompt(int(mask_item["frame"]), decode_mask(mask_item, what)))
    return ObjectRequest(
        obj_id=int(obj_id),
        label=label,
        foreground=_points(item.get("foreground"), f"{where}: 'foreground'"),
        background=_points(item.get("background"), f"{where}: 'background'"),
        roi=_roi(item.get("roi"), f"{where}: 'roi'"),
        masks=decoded,
    )


def _points(value: object, what: str) -> list[list[float]]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(p, list) for p in value):
        raise RequestError(f"{what} must be a list of [i, j, k] points, got {value!r}")
    points = []
    for point in value:
        if len(point) not in (2, 3) or not all(_is_number(v) for v in point):
            raise RequestError(f"{what}: each point is [i, j, k] (or [i, j] with 'frame'), got {point!r}")
        points.append([float(v) for v in point])
    return points


def _roi(value: object, what: str) -> list[float] | None:
    if value is None or value == []:
        return None
    if not isinstance(value, list) or len(value) not in (4, 6) or not all(_is_number(v) for v in value):
        raise RequestError(f"{what} must be [i0, j0, i1, j1] or [i0, j0, i1, j1, k0, k1], got {value!r}")
    return [float(v) for v in value]


def _axis(value: object) -> int | str | None:
    if value is None or (_is_int(value) and value in (0, 1, 2)):
        return value  # type: ignore[return-value]
    if isinstance(value, str) and value.lower() in ("axial", "coronal", "sagittal"):
        return value.lower()
    raise RequestError(
        f"'axis' must be 0, 1, 2 (numpy z, y, x) or 'axial'/'coronal'/'sagittal', got {value!r}"
    )


def _window(value: object) -> str | tuple[float, float] | None:
    if value is None or isinstance(value, str):
        return value
    if (
        isinstance(value, list)
        and len(value) == 2
        and all(_is_number(v) for v in value)
        and value[0] < value[1]
    ):
        return float(value[0]), float(value[1])
    raise RequestError(f"'window' must be a preset name or [lower, upper] with lower < upper, got {value!r}")


def _choice(
    params: Mapping[str, object], key: str, choices: Sequence[str], default: str | None
) -> str | None:
    value = params.get(key, default)
    if value is None or value == "":
        return default
    if value not in choices:
        raise RequestError(f"'{key}' must be one of {list(choices)}, got {value!r}")
    return value  # type: ignore[return-value]


def _bool(params: Mapping[str, object], key: str, default: bool) -> bool:
    value = params.get(key, default)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise RequestError(f"'{key}' must be true or false, got {value!r}")


def _optional_int(
    params: Mapping[str, object], key: str, minimum: int, alias: str | None = None
) -> int | None:
    value = params.get(key)
    if value is None and alias is not None:
        key, value = alias, params.get(alias)
    if value is None:
        return None
    if alias is not None and _is_int(value) and value < 0:  # MONAI Label clients send slice=-1 for "no slice"
        return None
    if not _is_int(value) or value < minimum:
        raise RequestError(f"'{key}' must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _optional_str(params: Mapping[str, object], key: str) -> str | None:
    value = params.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise RequestError(f"'{key}' must be a string, got {value!r}")
    return value


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _show(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:g}" for v in values) + "]"
