"""A synthetic long-term tracking benchmark and the scores the ablation reads off it.

The benchmark stresses what SAM2S adds to SAM 2:

* instruments leave the view for hundreds of frames and come back (DiveMem's long-term bank),
  stained differently after each return and with slow lighting changes;
* the first two instruments (of different categories) trade ports while both are out, so the
  one that comes back through a port is not the one that left through it (TSL's category cue);
* tissue boundaries are drawn by one of several annotators per frame, who disagree (ARL).

:func:`write_long_term_benchmark` writes a training split and a fixed test split (their own
seeds); :func:`long_term_scores` turns an :class:`~sam2s.evaluation.EvaluationResult` into the
three numbers of the ablation table: J&F overall, J&F on the frames after an object's return,
and J&F of tissue objects.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from sam2s.data.datasets import VideoDataset
from sam2s.data.synthetic import SyntheticVideo, SyntheticVideoConfig, write_davis_video
from sam2s.data.vocabulary import category_kind
from sam2s.evaluation.aggregate import ObjectScore
from sam2s.writers.base import write_json

__all__ = [
    "LongTermBenchmark",
    "LongTermScore",
    "long_term_scores",
    "return_frames",
    "write_long_term_benchmark",
]

#: Seeds of the two splits; the test split is fixed, so every model meets the same videos.
TRAIN_SEED = 31
TEST_SEED = 20251201


@dataclass(frozen=True)
class LongTermBenchmark:
    """Folders written by :func:`write_long_term_benchmark` (DAVIS layout with categories)."""

    train: Path
    test: Path


def _write_split(root: Path, num_videos: int, config: SyntheticVideoConfig, seed: int, progress: bool) -> None:
    categories: dict[str, dict[str, str]] = {}
    swaps: dict[str, int | None] = {}
    for i in tqdm(range(num_videos), desc=f"long videos ({root.name})", disable=not progress):
        name = f"long_{i:03d}"
        video_seed = int(np.random.SeedSequence([seed, i]).generate_state(1)[0])
        video = SyntheticVideo(config, seed=video_seed)
        if not (root / "Annotations" / name).is_dir():
            write_davis_video(video, root, name, progress=False)
        categories[name] = {str(k): v for k, v in video.categories.items()}
        swaps[name] = video.port_swap_frame
    write_json(root / "categories.json", categories)
    write_json(root / "port_swaps.json", swaps)


def write_long_term_benchmark(
    root: str | Path,
    train_videos: int = 24,
    test_videos: int = 4,
    num_frames: int = 1000,
    size: int = 128,
    num_instruments: int = 3,
    num_tissues: int = 2,
    progress: bool = True,
) -> LongTermBenchmark:
    """Write the long-term benchmark under ``root/train`` and ``root/test``.

    Videos already written are kept, so an interrupted run can be resumed.

    Args:
        root: output folder.
        train_videos, test_videos: videos per split.
        num_frames: frames per video (>= 400: long mode; with 1,000 most instruments leave and
            come back at least once).
        size: frame height and width in pixels.
        num_instruments, num_tissues: objects per video (at least 2 instruments: the port swap).
        progress: show progress bars.
    """
    if num_instruments < 2:
        raise ValueError(f"the benchmark needs at least 2 instruments per video (port swap), got {num_instruments}")
    config = SyntheticVideoConfig(
        num_frames=num_frames,
        height=size,
        width=size,
        num_instruments=num_instruments,
        num_tissues=num_tissues,
        long=True,
        port_swap=True,
    )
    root = Path(root)
    benchmark = LongTermBenchmark(root / "train", root / "test")
    _write_split(benchmark.train, train_videos, config, TRAIN_SEED, progress)
    _write_split(benchmark.test, test_videos, config, TEST_SEED, progress)
    return benchmark


def return_frames(present: Sequence[bool]) -> np.ndarray:
    """bool (T,): frames on which an object is present after having been seen and then lost.

    Args:
        present: per scored frame, whether the object is in the ground truth.
    """
    present = np.asarray(present, dtype=bool)
    seen = np.maximum.accumulate(present)
    lost_after_seen = np.maximum.accumulate(seen & ~present)
    return present & lost_after_seen


@dataclass(frozen=True)
class LongTermScore:
    """The ablation's three numbers for one model (``nan`` where nothing qualifies).

    Attributes:
        jf: J&F over the whole videos (the mean over videos of the mean over objects).
        jf_after_return: mean over objects that return of their J&F on the frames after a return.
        jf_tissue: mean J&F of the tissue objects.
        returning_objects: how many objects came back at least once.
        tissue_objects: how many tissue objects were scored.
    """

    jf: float
    jf_after_return: float
    jf_tissue: float
    returning_objects: int
    tissue_objects: int


def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return float(np.mean(values)) if values else math.nan


def _after_return_jf(obj: ObjectScore, present: dict[int, bool]) -> float | None:
    mask = return_frames([present.get(i, False) for i in obj.frame_indices])
    if not mask.any():
        return None
    j = np.asarray(obj.j_per_frame)[mask]
    f = np.asarray(obj.f_per_frame)[mask]
    return float((j.mean() + f.mean()) / 2)


def long_term_scores(result, dataset: VideoDataset) -> LongTermScore:
    """Score an evaluation of the benchmark's test split.

    Args:
        result: :class:`~sam2s.evaluation.EvaluationResult` of ``dataset``.
        dataset: the test split it was evaluated on (its annotations give the presence).
    """
    after_return: list[float] = []
    tissue: list[float] = []
    for subset in result.scores.subsets:
        for video in subset.videos:
            record = dataset.record(video.name)
            frames = sorted({i for obj in video.objects for i in obj.frame_indices})
            label_maps = {i: dataset.read_label_map(record, i) for i in frames}
            for obj in video.objects:
                present = {i: bool((label_maps[i] == obj.obj_id).any()) for i in obj.frame_indices}
                score = _after_return_jf(obj, present)
                if score is not None:
                    after_return.append(score)
                if obj.category is not None and category_kind(obj.category) == "tissue":
                    tissue.append(obj.jf)
    return LongTermScore(
        jf=float(result.jf),
        jf_after_return=_mean(after_return),
        jf_tissue=_mean(tissue),
        returning_objects=len(after_return),
        tissue_objects=len(tissue),
    )
