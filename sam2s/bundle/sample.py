"""The bundle's sample inputs: a short synthetic surgical clip and a small synthetic CT volume.

``python -m sam2s.bundle.sample bundle/sample`` writes (deterministically, from fixed seeds that
no training run of this project uses)::

    surgery_clip.mp4                       32 RGB frames, 256x192 (width x height), 10 fps
    surgery_clip_prompts.json              a box and a centre click per object, on its first clear frame
    surgery_clip/JPEGImages/surgery_clip/  the same frames as JPEG (DAVIS layout, for evaluate.json)
    surgery_clip/Annotations/surgery_clip/ ground-truth palette PNGs, pixel value = object id
    surgery_clip/categories.json           object id -> vocabulary name
    ct_volume.nii.gz                       int16 HU, 20 slices of 64x56, anisotropic, oblique
    ct_volume_labels.nii.gz                its ground-truth label map (same geometry)
    ct_volume_prompts.json                 a box and a centre click per organ on its largest slice

The prompts follow :mod:`sam2s.prompts`; clicks are placed the way the evaluation protocol
places its first click (:func:`sam2s.evaluation.clicks.first_click`).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sam2s.writers.base import write_json

__all__ = ["SampleFiles", "write_bundle_sample"]

CLIP_NAME = "surgery_clip"
VOLUME_NAME = "ct_volume"
CLIP_SEED = 90_210
VOLUME_SEED = 90_211
CLIP_FRAMES, CLIP_HEIGHT, CLIP_WIDTH, CLIP_FPS = 32, 192, 256, 10
VOLUME_SHAPE = (20, 56, 64)  # (slices, rows, columns)
# An object is prompted on the first frame where it covers at least this many pixels, so the
# click and the box describe a visible object rather than a sliver entering at the frame edge.
MIN_PROMPT_AREA = 64


@dataclass(frozen=True)
class SampleFiles:
    """Paths written by :func:`write_bundle_sample`."""

    video: Path
    video_prompts: Path
    davis_root: Path
    volume: Path
    volume_labels: Path
    volume_prompts: Path


def _prompt_for(mask: np.ndarray, frame: int) -> dict:
    from sam2s.evaluation.clicks import box_from_mask, first_click

    click = first_click(mask)
    return {"frame": frame, "box": list(box_from_mask(mask)), "points": [[click.x, click.y]], "labels": [1]}


def _write_prompts(path: Path, objects: list[dict]) -> None:
    """A prompts file laid out for reading: one line per object header and per prompt."""
    from sam2s.writers import atomic_output

    blocks = []
    for obj in objects:
        prompts = ",\n".join(f"        {json.dumps(prompt)}" for prompt in obj["prompts"])
        header = json.dumps({k: v for k, v in obj.items() if k != "prompts"})[:-1]
        blocks.append(f"    {header}, \"prompts\": [\n{prompts}\n    ]}}")
    with atomic_output(path) as temporary:
        temporary.write_text('{"objects": [\n' + ",\n".join(blocks) + "\n]}\n")


def _write_mp4(frames: list[np.ndarray], path: Path, fps: int) -> None:
    import av

    from sam2s.writers import atomic_output

    with atomic_output(path) as temporary, av.open(str(temporary), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "20"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def _write_clip(folder: Path) -> tuple[Path, Path, Path]:
    from sam2s.data.synthetic import SyntheticVideo, SyntheticVideoConfig, write_davis_video

    config = SyntheticVideoConfig(num_frames=CLIP_FRAMES, height=CLIP_HEIGHT, width=CLIP_WIDTH)
    video = SyntheticVideo(config, seed=CLIP_SEED)
    frames = [video.frame(index) for index in range(len(video))]
    davis_root = folder / CLIP_NAME
    write_davis_video(video, davis_root, CLIP_NAME, progress=False)
    write_json(davis_root / "categories.json", {CLIP_NAME: {str(k): v for k, v in video.categories.items()}}, sort_keys=False)

    objects = []
    for channel, obj_id in enumerate(video.obj_ids):
        areas = [int(frame.masks[channel].sum()) for frame in frames]
        first = next((index for index, area in enumerate(areas) if area >= MIN_PROMPT_AREA), None)
        if first is None:
            continue  # never clearly visible in this short clip
        objects.append({
            "id": int(obj_id),
            "name": video.categories[obj_id],
            "prompts": [_prompt_for(frames[first].masks[channel], first)],
        })
    prompts = folder / f"{CLIP_NAME}_prompts.json"
    _write_prompts(prompts, objects)
    video_path = folder / f"{CLIP_NAME}.mp4"
    _write_mp4([frame.image for frame in frames], video_path, CLIP_FPS)
    return video_path, prompts, davis_root


def _write_volume(folder: Path) -> tuple[Path, Path, Path]:
    import SimpleITK as sitk

    from sam2s.data.synthetic import make_synthetic_volume
    from sam2s.writers import atomic_output

    volume = make_synthetic_volume(shape=VOLUME_SHAPE, modality="ct", num_organs=3, seed=VOLUME_SEED)
    paths = (folder / f"{VOLUME_NAME}.nii.gz", folder / f"{VOLUME_NAME}_labels.nii.gz")
    arrays = (np.round(volume.image).astype(np.int16), volume.labels.astype(np.uint8))
    for path, array in zip(paths, arrays):
        image = sitk.GetImageFromArray(array)
        image.SetSpacing(volume.spacing)
        image.SetOrigin(volume.origin)
        image.SetDirection(tuple(float(v) for v in volume.direction.reshape(-1)))
        with atomic_output(path) as temporary:
            sitk.WriteImage(image, str(temporary), useCompression=True)

    objects = []
    for label, name in sorted(volume.categories.items()):
        organ = volume.labels == label
        areas = organ.reshape(organ.shape[0], -1).sum(1)
        if areas.max() == 0:
            continue
        largest = int(np.argmax(areas))  # slice index along axis 0, the walked axis
        objects.append({"id": int(label), "name": name, "prompts": [_prompt_for(organ[largest], largest)]})
    prompts = folder / f"{VOLUME_NAME}_prompts.json"
    _write_prompts(prompts, objects)
    return paths[0], paths[1], prompts


def write_bundle_sample(folder: str | Path) -> SampleFiles:
    """Write the bundle's sample inputs into ``folder`` (see the module docstring).

    Raises:
        FileExistsError: the clip's DAVIS folders already exist (remove the old sample first).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    video, video_prompts, davis_root = _write_clip(folder)
    volume, volume_labels, volume_prompts = _write_volume(folder)
    return SampleFiles(video, video_prompts, davis_root, volume, volume_labels, volume_prompts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sam2s.bundle.sample", description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="where to write the sample (e.g. bundle/sample)")
    files = write_bundle_sample(parser.parse_args(argv).folder)
    for name, path in vars(files).items():
        print(f"{name:>15}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
