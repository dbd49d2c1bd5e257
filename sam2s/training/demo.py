"""The demo model: its synthetic data, its evaluation against a no-motion baseline, its packaging.

``scripts/train_demo_model.py`` drives these steps; the tests re-check a small version of the
evaluation with the shipped weights.

* :func:`write_demo_data` writes the training set (synthetic videos, CT/MR volumes and single
  frames as an image set) with one seed and the held-out test set with another.
* :class:`FirstMaskBaseline` is the no-motion baseline: it copies each object's prompt mask to
  every later frame.
* :func:`evaluate_videos` scores a predictor with the paper's click protocols (J&F);
  :func:`evaluate_volume` draws one organ's mask on one slice, propagates both ways and scores
  the 3D Dice against the label map.
* :func:`score_sample_clip` segments the MONAI bundle's sample clip from its prompts file, the
  way ``make demo`` does, and scores it against the clip's ground truth.
* :func:`package_demo_model` writes the weights in float16 (the loader casts them back to the
  model's float32) with the config beside them.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from sam2s.data.datasets import VideoDataset, VolumeDataset
from sam2s.data.synthetic import (
    SyntheticVideo,
    SyntheticVideoConfig,
    davis_palette,
    write_synthetic_dataset,
)
from sam2s.evaluation.metrics import dice
from sam2s.writers.base import write_atomically

__all__ = [
    "DemoData",
    "FirstMaskBaseline",
    "SampleClipScore",
    "VolumeScore",
    "evaluate_videos",
    "evaluate_volume",
    "package_demo_model",
    "score_sample_clip",
    "score_sample_masks",
    "small_check",
    "write_demo_data",
    "write_image_set",
]


@dataclass(frozen=True)
class DemoData:
    """Folders written by :func:`write_demo_data`."""

    train_videos: Path
    train_volumes: Path
    train_images: Path
    test_videos: Path
    test_volumes: Path


def write_image_set(root: str | Path, num_videos: int, frames_per_video: int, size: int, seed: int) -> Path:
    """Write single synthetic frames as an image dataset (``images/*.jpg`` + ``masks/*.png``).

    Frames are spread over ``num_videos`` fresh synthetic videos (seeds derived from ``seed``).
    """
    root = Path(root)
    palette = davis_palette().reshape(-1).tolist()
    categories: dict[str, dict[str, str]] = {}
    for video_number in tqdm(range(num_videos), desc="images", leave=False):
        video_seed = int(np.random.SeedSequence([seed, 50_000 + video_number]).generate_state(1)[0])
        video = SyntheticVideo(SyntheticVideoConfig(num_frames=48, height=size, width=size), seed=video_seed)
        for frame_index in np.linspace(0, 47, frames_per_video).round().astype(int):
            frame = video.frame(int(frame_index))
            name = f"img_{video_number:04d}_{frame_index:02d}"
            categories[name] = {str(k): v for k, v in video.categories.items()}
            mask = Image.fromarray(frame.label_map(video.obj_ids), mode="P")
            mask.putpalette(palette)
            write_atomically(
                root / "images" / f"{name}.jpg",
                lambda handle, frame=frame: Image.fromarray(frame.image).save(
                    handle, format="JPEG", quality=95, subsampling=0
                ),
            )
            write_atomically(
                root / "masks" / f"{name}.png", lambda handle, mask=mask: mask.save(handle, format="PNG")
            )
    text = json.dumps(categories, indent=2, sort_keys=True) + "\n"
    write_atomically(root / "categories.json", lambda handle: handle.write(text.encode()))
    return root


def write_demo_data(
    root: str | Path,
    train_videos: int = 120,
    train_volumes: int = 60,
    image_videos: int = 600,
    test_videos: int = 8,
    test_volumes: int = 4,
    size: int = 128,
    num_frames: int = 48,
    train_seed: int = 0,
    test_seed: int = 20251116,
) -> DemoData:
    """Write the demo's training and held-out test data under ``root`` (skipping parts that exist).

    The test set uses its own seed, so none of its videos or volumes is seen in training.
    """
    root = Path(root)
    train, test, images = root / "train", root / "test", root / "train_images"
    if not (train / "JPEGImages").is_dir():
        write_synthetic_dataset(
            train, train_videos, num_frames, size, size, seed=train_seed, volumes=train_volumes
        )
    if not (images / "images").is_dir():
        write_image_set(images, image_videos, 4, size, seed=train_seed)
    if not (test / "JPEGImages").is_dir():
        write_synthetic_dataset(
            test, test_videos, num_frames, size, size, seed=test_seed, volumes=test_volumes
        )
    return DemoData(train, train / "volumes", images, test, test / "volumes")


# ----------------------------------------------------------------------------------------------
# Baseline
# ----------------------------------------------------------------------------------------------


class _BaselineSession:
    def __init__(self, num_frames: int) -> None:
        self.num_frames = num_frames
        self.prompts: dict[int, tuple[int, np.ndarray]] = {}

    def add_prompt(self, frame_index: int, obj_id: int, mask: np.ndarray | None = None, **_: object) -> None:
        if mask is None:
            raise ValueError("the first-mask baseline takes mask prompts only (use the 'mask' protocol)")
        self.prompts[int(obj_id)] = (int(frame_index), np.asarray(mask, dtype=bool))

    def propagate(
        self, direction: str = "forward", start_frame: int | None = None, max_frames: int | None = None
    ) -> Iterator[SimpleNamespace]:
        obj_ids = sorted(self.prompts)
        first = min(frame for frame, _ in self.prompts.values()) if start_frame is None else start_frame
        last = self.num_frames if max_frames is None else min(self.num_frames, first + max_frames)
        for t in range(first, last):
            masks = [
                mask if t >= frame else np.zeros_like(mask)
                for frame, mask in (self.prompts[o] for o in obj_ids)
            ]
            yield SimpleNamespace(frame_index=t, obj_ids=obj_ids, masks=np.stack(masks))


class FirstMaskBaseline:
    """Predictor that copies each object's prompt mask to every later frame (no motion at all)."""

    def start(self, source: str | Path) -> _BaselineSession:
        from sam2s.data.sources import open_source

        opened = open_source(source)
        try:
            return _BaselineSession(int(opened.num_frames))
        finally:
            close = getattr(opened, "close", None)
            if close is not None:
                close()


# ----------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------


def evaluate_videos(
    predictor_factory, dataset_root: str | Path, protocols: Sequence[str], videos: Sequence[str] | None = None
) -> dict[str, float]:
    """J&F of a predictor under each protocol on a video dataset (DAVIS rules)."""
    from sam2s.evaluation import evaluate

    dataset = VideoDataset(dataset_root)
    results = {}
    for protocol in protocols:
        result = evaluate(predictor_factory, dataset, protocol, videos=videos, progress=False)
        results[protocol] = float(result.jf)
    return results


@dataclass(frozen=True)
class VolumeScore:
    """3D Dice of one organ propagated from a mask drawn on one slice."""

    case: str
    label: int
    category: str | None
    prompt_slice: int
    dice: float


def evaluate_volume(predictor, dataset_root: str | Path, case: int = 0) -> list[VolumeScore]:
    """Draw each organ's ground truth on its largest slice, propagate both ways, score 3D Dice.

    Each organ is prompted and tracked in its own session (one segment at a time, as a user
    would draw it); slices are taken along array axis 0.
    """
    dataset = VolumeDataset(dataset_root)
    record = dataset.records[case]
    labels = dataset.load_volume(record).labels
    scores = []
    for label in (int(v) for v in np.unique(labels) if v != 0):
        truth = labels == label
        prompt_slice = int(np.argmax(truth.reshape(len(truth), -1).sum(axis=1)))
        session = predictor.start(str(record.image_path))
        session.add_prompt(frame_index=prompt_slice, obj_id=1, mask=truth[prompt_slice])
        predicted = np.zeros_like(truth)
        for output in session.propagate(direction="both"):
            predicted[output.frame_index] = np.asarray(
                output.masks[0].cpu() if torch.is_tensor(output.masks) else output.masks[0]
            )
        close = getattr(session, "close", None)
        if close is not None:
            close()
        overlap = dice(predicted, truth)
        scores.append(VolumeScore(record.name, label, record.categories.get(label), prompt_slice, overlap))
    return scores


def small_check(model, root: str | Path, seed: int = 777) -> dict[str, float]:
    """The quick version of the demo evaluation that the tests repeat with the shipped weights.

    Writes 2 synthetic videos of 20 frames (128 x 128) and one CT volume with ``seed`` under
    ``root`` (a seed no training or test set of the demo uses), then scores 1-click J&F, the
    first-mask baseline and the volume's mean 3D Dice.
    """
    import sam2s

    root = Path(root)
    if not (root / "JPEGImages").is_dir():
        write_synthetic_dataset(
            root, num_videos=2, num_frames=20, height=128, width=128, seed=seed, volumes=1, progress=False
        )
    jf = evaluate_videos(lambda: sam2s.VideoPredictor(model), root, ["1click"])["1click"]
    baseline = evaluate_videos(FirstMaskBaseline, root, ["mask"])["mask"]
    organ_dice = [score.dice for score in evaluate_volume(sam2s.VideoPredictor(model), root / "volumes", case=0)]
    return {"jf_1click": jf, "baseline_first_mask_jf": baseline, "ct_mean_dice": float(np.mean(organ_dice))}


@dataclass(frozen=True)
class SampleClipScore:
    """J&F of a model on the bundle's sample clip, overall and per object (by category name)."""

    jf: float
    objects: dict[str, float]


def score_sample_clip(predictor, sample_dir: str | Path, out_dir: str | Path) -> SampleClipScore:
    """Segment ``sample_dir/surgery_clip.mp4`` from its prompts file and score it against its
    DAVIS annotations (``python -m sam2s.bundle.sample`` writes that folder).

    Args:
        predictor: the :class:`~sam2s.predictor.video.VideoPredictor` to run.
        sample_dir: the bundle's ``sample`` folder.
        out_dir: where the masks are written (no overlay video).
    """
    from sam2s.segment import SegmentJob, SegmentOptions

    sample_dir, out_dir = Path(sample_dir), Path(out_dir)
    options = SegmentOptions(
        input=str(sample_dir / "surgery_clip.mp4"),
        prompts=str(sample_dir / "surgery_clip_prompts.json"),
        out=str(out_dir),
        overlay=False,
        overwrite=True,
        progress=False,
    )
    SegmentJob(options, predictor=predictor).run()
    return score_sample_masks(out_dir / "masks", sample_dir)


def score_sample_masks(masks_dir: str | Path, sample_dir: str | Path) -> SampleClipScore:
    """Score the id-map PNGs in ``masks_dir`` (one per frame, in name order) against the sample
    clip's ground truth in ``sample_dir/surgery_clip``."""
    from sam2s.evaluation.aggregate import score_video
    from sam2s.writers import read_png_mask

    clip = Path(sample_dir) / "surgery_clip"
    truth = [read_png_mask(path) for path in sorted((clip / "Annotations" / "surgery_clip").glob("*.png"))]
    masks = [read_png_mask(path) for path in sorted(Path(masks_dir).glob("*.png"))]
    if len(masks) != len(truth):
        raise ValueError(f"{len(masks)} masks in {masks_dir} for the {len(truth)} annotated frames of {clip}")
    names = json.loads((clip / "categories.json").read_text())["surgery_clip"]
    categories = {int(obj_id): name for obj_id, name in names.items()}
    score = score_video("surgery_clip", list(zip(range(len(truth)), masks, truth)), categories)
    return SampleClipScore(score.jf, {obj.category: obj.jf for obj in score.objects})


# ----------------------------------------------------------------------------------------------
# Packaging
# ----------------------------------------------------------------------------------------------


def package_demo_model(
    checkpoint: str | Path, out_path: str | Path, config_yaml: str | Path | None = None
) -> Path:
    """Store an exported model in float16 (other entries unchanged) and copy its config beside it.

    ``sam2s.checkpoint.load_checkpoint`` copies the weights into the float32 model, so float16
    storage only rounds them.
    """
    payload = torch.load(checkpoint, map_location="cpu", weights_only=True)
    payload["model"] = {k: v.half() if v.is_floating_point() else v for k, v in payload["model"].items()}
    payload["storage_dtype"] = "float16"
    out_path = Path(out_path)
    write_atomically(out_path, lambda handle: torch.save(payload, handle))
    if config_yaml is not None:
        shutil.copyfile(config_yaml, out_path.parent / Path(config_yaml).name)
    return out_path
