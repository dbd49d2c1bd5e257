"""The prompts file: which objects to segment and where the user pointed at them.

Format (JSON)::

    {
      "objects": [
        {"id": 1, "name": "grasper",
         "prompts": [
            {"frame": 0,  "points": [[120, 80], [140, 95]], "labels": [1, 0]},
            {"frame": 40, "box": [100, 60, 180, 130]},
            {"frame": 90, "mask": "masks/grasper_090.png"}
         ]},
        {"id": 2, "prompts": [{"frame": 0, "box": [10, 10, 60, 50], "points": [[30, 30]], "labels": [1]}]}
      ]
    }

* ``id``: integer 1..255 (the value written in PNG masks); ``name`` is optional.
* ``frame``: frame index (for a volume: slice index along the walked axis), from 0.
* ``points``: ``[x, y]`` pixels of that frame (x = column, y = row); ``labels``: 1 positive,
  0 negative. ``box``: ``[x0, y0, x1, y1]`` pixels. ``mask``: a PNG/NPY path (relative to the
  prompts file), non-zero = object, at the frame's size; a mask cannot be combined with clicks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["FramePrompt", "ObjectPrompts", "PromptsFile", "PromptsFileError", "load_prompts", "parse_prompts"]


class PromptsFileError(ValueError):
    """A prompts file that cannot be used; the message names the file, the place and the fix."""


@dataclass
class FramePrompt:
    """Clicks, a box and/or a mask for one object on one frame."""

    frame: int
    points: list[list[float]] | None = None
    labels: list[int] | None = None
    box: list[float] | None = None
    mask: np.ndarray | None = None


@dataclass
class ObjectPrompts:
    obj_id: int
    name: str | None = None
    prompts: list[FramePrompt] = field(default_factory=list)


@dataclass
class PromptsFile:
    objects: list[ObjectPrompts]

    def apply(self, session) -> None:
        """Add every prompt to a :class:`~sam2s.predictor.video.Session`, in file order."""
        for obj in self.objects:
            for prompt in obj.prompts:
                session.add_prompt(
                    prompt.frame, obj.obj_id, points=prompt.points, labels=prompt.labels,
                    box=prompt.box, mask=prompt.mask,
                )

    @property
    def names(self) -> dict[int, str]:
        return {o.obj_id: o.name for o in self.objects if o.name}


def _number_list(value: Any, length: int | None, where: str) -> list[float]:
    if not isinstance(value, list) or (length is not None and len(value) != length):
        raise PromptsFileError(f"{where}: expected a list of {length or 'some'} numbers, got {value!r}")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        raise PromptsFileError(f"{where}: expected numbers, got {value!r}")
    return [float(v) for v in value]


def _read_mask(value: Any, base: Path, where: str) -> np.ndarray:
    if not isinstance(value, str):
        raise PromptsFileError(f"{where}: 'mask' must be the path of a PNG or NPY file, got {value!r}")
    path = (base / value) if not Path(value).is_absolute() else Path(value)
    if not path.is_file():
        raise PromptsFileError(f"{where}: mask file {str(path)!r} does not exist")
    if path.suffix.lower() == ".npy":
        mask = np.load(path, allow_pickle=False)
    else:
        from PIL import Image

        with Image.open(path) as image:
            mask = np.asarray(image)
    if mask.ndim == 3:
        mask = mask[..., 0]
    if mask.ndim != 2:
        raise PromptsFileError(f"{where}: mask {str(path)!r} must be a 2D image, got shape {mask.shape}")
    return mask != 0


def parse_prompts(data: Any, base: Path = Path("."), origin: str = "prompts") -> PromptsFile:
    """Validate the JSON structure of a prompts file (see the module docstring)."""
    if not isinstance(data, dict) or not isinstance(data.get("objects"), list):
        raise PromptsFileError(f"{origin}: expected an object with an 'objects' list (see the README's prompts format)")
    if not data["objects"]:
        raise PromptsFileError(f"{origin}: 'objects' is empty: add at least one object with prompts")
    objects: list[ObjectPrompts] = []
    seen: set[int] = set()
    for i, entry in enumerate(data["objects"]):
        where = f"{origin}: objects[{i}]"
        if not isinstance(entry, dict):
            raise PromptsFileError(f"{where}: expected an object, got {entry!r}")
        unknown = set(entry) - {"id", "name", "prompts"}
        if unknown:
            raise PromptsFileError(f"{where}: unknown field(s) {sorted(unknown)}; allowed: id, name, prompts")
        obj_id = entry.get("id")
        if not isinstance(obj_id, int) or isinstance(obj_id, bool) or not 1 <= obj_id <= 255:
            raise PromptsFileError(f"{where}: 'id' must be an integer from 1 to 255, got {obj_id!r}")
        if obj_id in seen:
            raise PromptsFileError(f"{where}: object id {obj_id} appears twice")
        seen.add(obj_id)
        name = entry.get("name")
        if name is not None and not isinstance(name, str):
            raise PromptsFileError(f"{where}: 'name' must be a string")
        raw_prompts = entry.get("prompts")
        if not isinstance(raw_prompts, list) or not raw_prompts:
            raise PromptsFileError(f"{where}: 'prompts' must be a non-empty list")
        prompts = []
        for j, raw in enumerate(raw_prompts):
            pwhere = f"{where}.prompts[{j}]"
            if not isinstance(raw, dict):
                raise PromptsFileError(f"{pwhere}: expected an object, got {raw!r}")
            unknown = set(raw) - {"frame", "points", "labels", "box", "mask"}
            if unknown:
                raise PromptsFileError(f"{pwhere}: unknown field(s) {sorted(unknown)}; "
                                       "allowed: frame, points, labels, box, mask")
            frame = raw.get("frame")
            if not isinstance(frame, int) or isinstance(frame, bool) or frame < 0:
                raise PromptsFileError(f"{pwhere}: 'frame' must be a non-negative integer, got {frame!r}")
            prompt = FramePrompt(frame=frame)
            if ("points" in raw) != ("labels" in raw):
                raise PromptsFileError(f"{pwhere}: 'points' and 'labels' go together")
            if "points" in raw:
                if not isinstance(raw["points"], list) or not raw["points"]:
                    raise PromptsFileError(f"{pwhere}: 'points' must be a non-empty list of [x, y]")
                prompt.points = [_number_list(p, 2, f"{pwhere}.points[{k}]") for k, p in enumerate(raw["points"])]
                labels = raw["labels"]
                if not isinstance(labels, list) or len(labels) != len(prompt.points) or any(
                    lab not in (0, 1) or isinstance(lab, bool) for lab in labels
                ):
                    raise PromptsFileError(f"{pwhere}: 'labels' must list one 1 (positive) or 0 (negative) per point")
                prompt.labels = [int(v) for v in labels]
            if "box" in raw:
                prompt.box = _number_list(raw["box"], 4, f"{pwhere}.box")
            if "mask" in raw:
                if prompt.points or prompt.box:
                    raise PromptsFileError(f"{pwhere}: a mask cannot be combined with points or a box")
                prompt.mask = _read_mask(raw["mask"], base, pwhere)
            if prompt.points is None and prompt.box is None and prompt.mask is None:
                raise PromptsFileError(f"{pwhere}: empty prompt: give points+labels, a box or a mask")
            prompts.append(prompt)
        objects.append(ObjectPrompts(obj_id, name, prompts))
    return PromptsFile(objects)


def load_prompts(path: str | Path) -> PromptsFile:
    """Read and validate a prompts JSON file."""
    path = Path(path)
    if not path.is_file():
        raise PromptsFileError(f"prompts file {str(path)!r} does not exist")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise PromptsFileError(f"prompts file {str(path)!r} is not valid JSON: {err}") from None
    except UnicodeDecodeError:
        raise PromptsFileError(f"prompts file {str(path)!r} is not a text (JSON) file") from None
    return parse_prompts(data, base=path.parent, origin=str(path))
