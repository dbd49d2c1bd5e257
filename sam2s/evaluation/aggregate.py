"""From per-frame J and F to per-object, per-video, per-subset and overall J&F.

The per-object rules are vos-benchmark's (DAVIS semi-supervised protocol):

* Only annotated frames are scored, and the first and last of them are dropped
  (``skip_first_and_last=True``, the DAVIS rule).
* Masks are id maps; an object is scored from the first scored frame in which it appears in
  the ground truth *or* the prediction. On a later frame where it is absent from both, it
  scores J = F = 1 (empty vs empty). Frames before its first appearance do not count.
* Only objects that appear in the ground truth of some scored frame are reported; objects
  that only the prediction contains are ignored.
* An object's J (F) is the mean of its per-frame J (F); its J&F is (J + F) / 2.

On top of that, as the SAM2S paper reports results: a video's score is the mean over its
objects, a subset's score the mean over its videos, and the overall score the mean over
subsets (macro average). vos-benchmark's own "global" score, the mean over all objects of a
subset, is kept as :attr:`SubsetScore.object_jf` for comparison.

All scores are fractions in [0, 1] (reports print them as percentages).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from sam2s.evaluation.metrics import frame_jf

__all__ = [
    "BenchmarkScore",
    "ObjectScore",
    "SubsetScore",
    "VideoScore",
    "VideoScorer",
    "score_video",
    "summarize",
    "summarize_subset",
]


def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return float(np.mean(values)) if values else math.nan


@dataclass(frozen=True)
class ObjectScore:
    """Scores of one object of one video.

    Attributes:
        obj_id: the object's id.
        category: vocabulary name, if known.
        frame_indices: the frames it was scored on, ascending.
        j_per_frame: J on each of those frames.
        f_per_frame: F on each of those frames.
    """

    obj_id: int
    category: str | None
    frame_indices: tuple[int, ...]
    j_per_frame: tuple[float, ...]
    f_per_frame: tuple[float, ...]

    @property
    def j(self) -> float:
        return _mean(self.j_per_frame)

    @property
    def f(self) -> float:
        return _mean(self.f_per_frame)

    @property
    def jf(self) -> float:
        return (self.j + self.f) / 2


@dataclass(frozen=True)
class VideoScore:
    """Scores of one video: its objects and their mean (``nan`` if no object was scored).

    Attributes:
        name: video name.
        objects: per-object scores, by ascending id.
        num_frames: frames processed by the tracker.
        seconds: tracking time (0 when not measured).
    """

    name: str
    objects: tuple[ObjectScore, ...]
    num_frames: int = 0
    seconds: float = 0.0

    @property
    def j(self) -> float:
        return _mean(o.j for o in self.objects)

    @property
    def f(self) -> float:
        return _mean(o.f for o in self.objects)

    @property
    def jf(self) -> float:
        return (self.j + self.f) / 2

    @property
    def fps(self) -> float:
        return self.num_frames / self.seconds if self.seconds > 0 else math.nan

    def per_frame_jf(self) -> tuple[tuple[int, ...], tuple[float, ...]]:
        """Frame indices and, for each, the mean J&F over the objects scored on that frame."""
        sums: dict[int, list[float]] = {}
        for obj in self.objects:
            for t, j, f in zip(obj.frame_indices, obj.j_per_frame, obj.f_per_frame):
                sums.setdefault(t, []).append((j + f) / 2)
        frames = tuple(sorted(sums))
        return frames, tuple(float(np.mean(sums[t])) for t in frames)


@dataclass(frozen=True)
class SubsetScore:
    """Scores of one test subset: mean over its videos that have a scored object.

    Attributes:
        name: subset name.
        videos: per-video scores.
    """

    name: str
    videos: tuple[VideoScore, ...]

    @property
    def scored_videos(self) -> tuple[VideoScore, ...]:
        return tuple(v for v in self.videos if v.objects)

    @property
    def j(self) -> float:
        return _mean(v.j for v in self.scored_videos)

    @property
    def f(self) -> float:
        return _mean(v.f for v in self.scored_videos)

    @property
    def jf(self) -> float:
        return (self.j + self.f) / 2

    @property
    def object_jf(self) -> float:
        """vos-benchmark's global score: the mean J&F over every object of every video."""
        objects = [o for v in self.videos for o in v.objects]
        return (_mean(o.j for o in objects) + _mean(o.f for o in objects)) / 2

    @property
    def fps(self) -> float:
        seconds = sum(v.seconds for v in self.videos)
        return sum(v.num_frames for v in self.videos) / seconds if seconds > 0 else math.nan


@dataclass(frozen=True)
class BenchmarkScore:
    """Overall scores: the macro average over subsets."""

    subsets: tuple[SubsetScore, ...]

    @property
    def j(self) -> float:
        return _mean(s.j for s in self.subsets)

    @property
    def f(self) -> float:
        return _mean(s.f for s in self.subsets)

    @property
    def jf(self) -> float:
        return (self.j + self.f) / 2

    @property
    def fps(self) -> float:
        seconds = sum(v.seconds for s in self.subsets for v in s.videos)
        frames = sum(v.num_frames for s in self.subsets for v in s.videos)
        return frames / seconds if seconds > 0 else math.nan


@dataclass
class _FrameRecord:
    index: int
    gt_objects: frozenset[int]
    scores: dict[int, tuple[float, float]] = field(default_factory=dict)  # objects present on this frame


class VideoScorer:
    """Scores one video frame by frame, keeping only a few numbers per frame.

    Feed the annotated frames in increasing order with :meth:`add_frame`, then call
    :meth:`result`. Frames are held back only as (J, F) pairs, so long videos are cheap.

    Args:
        name: video name.
        categories: ``obj_id -> vocabulary name`` to attach to the results.
        skip_first_and_last: drop the first and last fed frame (DAVIS rule).
    """

    def __init__(
        self, name: str, categories: Mapping[int, str] | None = None, skip_first_and_last: bool = True
    ) -> None:
        self.name = name
        self.categories = dict(categories or {})
        self.skip_first_and_last = skip_first_and_last
        self._frames: list[_FrameRecord] = []

    def add_frame(self, frame_index: int, pred: np.ndarray, gt: np.ndarray) -> None:
        """Score one annotated frame.

        Args:
            frame_index: index of the frame in the video (must increase).
            pred: int (H, W) predicted id map, 0 = background.
            gt: int (H, W) ground-truth id map.
        """
        pred = np.asarray(pred)
        gt = np.asarray(gt)
        if pred.shape != gt.shape or pred.ndim != 2:
            raise ValueError(
                f"{self.name} frame {frame_index}: prediction {pred.shape} and ground truth {gt.shape} must be equal 2D shapes"
            )
        if self._frames and frame_index <= self._frames[-1].index:
            raise ValueError(
                f"{self.name}: frames must be added in increasing order ({frame_index} after {self._frames[-1].index})"
            )
        gt_ids = frozenset(int(i) for i in np.unique(gt) if i != 0)
        pred_ids = frozenset(int(i) for i in np.unique(pred) if i != 0)
        record = _FrameRecord(frame_index, gt_ids)
        # Scores of absent-from-both objects are always (1, 1), so only present ones are computed.
        for obj_id in sorted(gt_ids | pred_ids):
            record.scores[obj_id] = frame_jf(pred == obj_id, gt == obj_id)
        self._frames.append(record)

    def result(self, num_frames: int = 0, seconds: float = 0.0) -> VideoScore:
        """The video's scores.

        Args:
            num_frames: frames the tracker processed (for FPS).
            seconds: tracking time (for FPS).
        """
        frames = self._frames[1:-1] if self.skip_first_and_last else self._frames
        reported = sorted(set().union(*(f.gt_objects for f in frames))) if frames else []
        objects = []
        for obj_id in reported:
            first = next(k for k, f in enumerate(frames) if obj_id in f.scores)
            indices, js, fs = [], [], []
            for record in frames[first:]:
                j, f = record.scores.get(obj_id, (1.0, 1.0))
                indices.append(record.index)
                js.append(float(j))
                fs.append(float(f))
            objects.append(
                ObjectScore(obj_id, self.categories.get(obj_id), tuple(indices), tuple(js), tuple(fs))
            )
        return VideoScore(self.name, tuple(objects), num_frames=num_frames, seconds=seconds)


def score_video(
    name: str,
    frames: Iterable[tuple[int, np.ndarray, np.ndarray]],
    categories: Mapping[int, str] | None = None,
    skip_first_and_last: bool = True,
) -> VideoScore:
    """Score a video from ``(frame_index, pred id map, gt id map)`` triples (annotated frames only)."""
    scorer = VideoScorer(name, categories, skip_first_and_last)
    for frame_index, pred, gt in frames:
        scorer.add_frame(frame_index, pred, gt)
    return scorer.result()


def summarize_subset(name: str, videos: Sequence[VideoScore]) -> SubsetScore:
    """Group video scores into a subset."""
    return SubsetScore(name, tuple(videos))


def summarize(subsets: Sequence[SubsetScore]) -> BenchmarkScore:
    """Group subset scores into the overall result."""
    if not subsets:
        raise ValueError("need at least one subset to summarize")
    return BenchmarkScore(tuple(subsets))
