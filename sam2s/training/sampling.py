"""Which frames and objects each training clip holds: DiveMem hybrid sampling, SAM 2's plain
clips, the image:video mix, and sharding across processes.

Every clip is a pure function of ``(seed, sample index)``: :meth:`ClipSampler.sample` seeds a
fresh generator with both, so the data a run sees does not depend on how many processes share
it, on data-loader workers, or on where a run was resumed. A step of the global batch ``B``
consumes samples ``step * B`` to ``step * B + B - 1``; rank ``r`` of ``W`` processes takes the
``r``-th contiguous slice of ``B / W`` of them (:class:`DistributedClipSampler`). The sampler's
position is therefore just the step number, which the trainer saves in its checkpoints.

Clip kinds (each 8 frames by default):

* **DiveMem hybrid** (SAM2S): 1 conditioning frame where the objects are present + 2 long-term
  frames drawn at random from the whole video + 5 consecutive frames. The clip is processed in
  that order; the consecutive frames attend to the conditioning frame as ``"conditioning"``, to
  the two long-term frames as ``"long_term"`` and to the consecutive frames before them as
  ``"short_term"`` memories, which is what DiveMem's memory bank holds at inference. The window
  does not contain the conditioning frame, and the long-term frames lie outside the window.
* **Contiguous** (SAM 2): a window of consecutive frames, prompted on its first frame.

Hybrid and contiguous clips are mixed ``hybrid_fraction`` : 1 - ``hybrid_fraction`` (1:1 in the
paper); hybrid sampling off gives SAM 2's sampling alone. A video too short for a hybrid clip
gets a contiguous one. With probability ``reverse_prob`` the consecutive frames run backwards
in time (SAM 2 trains both directions; volumes are propagated both ways). Images (one-frame
clips) are drawn with probability ``image_fraction`` (0.2, i.e. images:videos = 1:4). Volumes are
slice sequences and count as videos; ``volume_fraction`` fixes their share of the sequence clips.
Up to ``max_objects`` objects present on the conditioning frame are tracked per clip.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from tqdm import tqdm

from sam2s.data.datasets import ImageDataset, VideoDataset, VolumeDataset

__all__ = [
    "ROLE_CONDITIONING",
    "ROLE_LONG_TERM",
    "ROLE_SHORT_TERM",
    "ClipRequest",
    "ClipSampler",
    "DistributedClipSampler",
    "ImageEntry",
    "SamplingConfig",
    "SequenceEntry",
    "contiguous_clip",
    "hybrid_clip",
    "index_images",
    "index_videos",
    "index_volumes",
]

ROLE_CONDITIONING = "conditioning"
ROLE_LONG_TERM = "long_term"
ROLE_SHORT_TERM = "short_term"

SourceKind = Literal["video", "volume", "image"]


@dataclass
class SamplingConfig:
    """How clips are drawn (defaults: the SAM2S paper).

    Attributes:
        num_frames: frames per video clip (8).
        max_objects: objects tracked per clip, at most.
        hybrid: use DiveMem hybrid clips (off: SAM 2's contiguous clips only).
        hybrid_fraction: share of hybrid clips among video clips (0.5 = 1:1).
        num_long_term: long-term frames of a hybrid clip (2).
        image_fraction: share of one-frame image clips (0.2 = images:videos 1:4).
        volume_fraction: share of volume clips among sequence clips; ``None`` draws videos and
            volumes in proportion to their numbers.
        reverse_prob: probability that the consecutive frames run backwards in time.
        hflip_prob: probability of a horizontal flip of the whole clip.
        volume_axis: array axis of the (D, H, W) volumes whose slices form the sequence.
    """

    num_frames: int = 8
    max_objects: int = 3
    hybrid: bool = True
    hybrid_fraction: float = 0.5
    num_long_term: int = 2
    image_fraction: float = 0.2
    volume_fraction: float | None = None
    reverse_prob: float = 0.5
    hflip_prob: float = 0.5
    volume_axis: int = 0

    def __post_init__(self) -> None:
        if self.num_frames < 1 or self.max_objects < 1:
            raise ValueError(
                f"num_frames and max_objects must be >= 1, got {self.num_frames}, {self.max_objects}"
            )
        if self.hybrid and self.num_frames < self.num_long_term + 2:
            raise ValueError(
                f"a hybrid clip of {self.num_frames} frames cannot hold 1 conditioning frame, "
                f"{self.num_long_term} long-term frames and at least one consecutive frame"
            )
        for name in ("hybrid_fraction", "image_fraction", "reverse_prob", "hflip_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {value}")
        if self.volume_fraction is not None and not 0.0 <= self.volume_fraction <= 1.0:
            raise ValueError(f"volume_fraction must lie in [0, 1] or be None, got {self.volume_fraction}")


@dataclass(frozen=True)
class SequenceEntry:
    """A video or volume as the sampler sees it.

    Attributes:
        kind: ``"video"`` or ``"volume"``.
        dataset: index of its dataset among the datasets of that kind.
        item: index of the record in its dataset.
        name: video or case name.
        frames: usable frame (slice) indices, ascending (a video's annotated frames).
        object_ids: the objects (label values) of the sequence.
        presence: ``(len(frames), len(object_ids))`` bool, whether each object is visible.
    """

    kind: SourceKind
    dataset: int
    item: int
    name: str
    frames: tuple[int, ...]
    object_ids: tuple[int, ...]
    presence: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class ImageEntry:
    """An image with at least one object."""

    dataset: int
    item: int
    name: str
    object_ids: tuple[int, ...]


@dataclass(frozen=True)
class ClipRequest:
    """One training sample: what to load and how the clip is laid out.

    Attributes:
        sample_index: global position in the run's sample stream.
        seed: per-sample seed for prompt simulation and dropout.
        kind: ``"video"``, ``"volume"`` or ``"image"``.
        dataset: dataset index (among datasets of that kind).
        item: record index in the dataset.
        frame_indices: source frames (slices) in clip order; ``(0,)`` for an image.
        roles: role of each clip frame: ``"conditioning"``, ``"long_term"`` or ``"short_term"``.
        obj_ids: objects to track, all present on the first clip frame.
        reverse: the consecutive frames run backwards in time.
        hybrid: a DiveMem hybrid clip (else contiguous or an image).
        hflip: flip the clip horizontally.
        num_source_frames: length of the source sequence (1 for an image).
    """

    sample_index: int
    seed: int
    kind: SourceKind
    dataset: int
    item: int
    frame_indices: tuple[int, ...]
    roles: tuple[str, ...]
    obj_ids: tuple[int, ...]
    reverse: bool
    hybrid: bool
    hflip: bool
    num_source_frames: int


# ----------------------------------------------------------------------------------------------
# Frame layouts
# ----------------------------------------------------------------------------------------------


def contiguous_clip(
    rng: np.random.Generator, presence: np.ndarray, num_frames: int, reverse: bool
) -> tuple[list[int], list[str]] | None:
    """SAM 2's clip: consecutive positions whose first frame (in clip order) shows an object.

    Args:
        rng: generator (consumed).
        presence: ``(n, O)`` bool object visibility per position.
        num_frames: clip length (shorter sequences give shorter clips).
        reverse: run backwards in time.

    Returns:
        Positions into the sequence in clip order and their roles, or ``None`` if no window fits.
    """
    n = len(presence)
    length = min(num_frames, n)
    starts = np.arange(n - length + 1)
    firsts = starts + length - 1 if reverse else starts
    valid = starts[presence[firsts].any(axis=1)]
    if len(valid) == 0:
        return None
    start = int(rng.choice(valid))
    positions = list(range(start, start + length))
    if reverse:
        positions.reverse()
    return positions, [ROLE_CONDITIONING] + [ROLE_SHORT_TERM] * (length - 1)


def hybrid_clip(
    rng: np.random.Generator, presence: np.ndarray, num_frames: int, num_long_term: int, reverse: bool
) -> tuple[list[int], list[str]] | None:
    """DiveMem's clip: conditioning frame + long-term frames + consecutive frames (see module doc).

    Args:
        rng: generator (consumed).
        presence: ``(n, O)`` bool object visibility per position.
        num_frames: clip length.
        num_long_term: long-term frames in the clip.
        reverse: the consecutive frames run backwards in time.

    Returns:
        Positions in clip order and their roles, or ``None`` if the sequence is too short.
    """
    n = len(presence)
    window = num_frames - 1 - num_long_term
    if n < num_frames or window < 1:
        return None
    conditioning_candidates = np.flatnonzero(presence.any(axis=1))
    if len(conditioning_candidates) == 0:
        return None
    conditioning = int(rng.choice(conditioning_candidates))
    starts = [s for s in range(n - window + 1) if not s <= conditioning < s + window]
    if not starts:
        return None
    start = int(rng.choice(starts))
    consecutive = list(range(start, start + window))
    rest = np.array([p for p in range(n) if p != conditioning and p not in consecutive])
    if len(rest) < num_long_term:
        return None
    long_term = sorted(int(p) for p in rng.choice(rest, size=num_long_term, replace=False))
    if reverse:
        consecutive.reverse()
        long_term.reverse()
    positions = [conditioning] + long_term + consecutive
    roles = [ROLE_CONDITIONING] + [ROLE_LONG_TERM] * num_long_term + [ROLE_SHORT_TERM] * window
    return positions, roles


# ----------------------------------------------------------------------------------------------
# Indexing data sets
# ----------------------------------------------------------------------------------------------


def index_videos(datasets: Sequence[VideoDataset], progress: bool = True) -> list[SequenceEntry]:
    """Read which objects each annotated frame shows (one pass over the annotation PNGs)."""
    entries = []
    work = [(d, i, r) for d, ds in enumerate(datasets) for i, r in enumerate(ds.records)]
    for dataset_id, item, record in tqdm(work, desc="index videos", disable=not progress or len(work) < 2):
        dataset = datasets[dataset_id]
        frames = record.annotated_frames
        ids = record.object_ids
        presence = np.zeros((len(frames), len(ids)), dtype=bool)
        for row, frame in enumerate(frames):
            visible = set(np.unique(dataset.read_label_map(record, frame)).tolist())
            presence[row] = [obj in visible for obj in ids]
        if presence.any():
            entries.append(SequenceEntry("video", dataset_id, item, record.name, frames, ids, presence))
    return entries


def index_volumes(
    datasets: Sequence[VolumeDataset], axis: int = 0, progress: bool = True
) -> list[SequenceEntry]:
    """Read which labels each slice (along ``axis``) shows."""
    entries = []
    work = [(d, i, r) for d, ds in enumerate(datasets) for i, r in enumerate(ds.records)]
    for dataset_id, item, record in tqdm(work, desc="index volumes", disable=not progress or len(work) < 2):
        labels = datasets[dataset_id].load_volume(record).labels
        ids = tuple(int(v) for v in np.unique(labels) if v != 0)
        moved = np.moveaxis(labels, axis, 0).reshape(labels.shape[axis], -1)
        presence = (
            np.stack([(moved == obj).any(axis=1) for obj in ids], axis=1)
            if ids
            else np.zeros((len(moved), 0), bool)
        )
        if presence.any():
            frames = tuple(range(labels.shape[axis]))
            entries.append(SequenceEntry("volume", dataset_id, item, record.name, frames, ids, presence))
    return entries


def index_images(datasets: Sequence[ImageDataset]) -> list[ImageEntry]:
    """Images that have at least one object."""
    return [
        ImageEntry(d, i, r.name, r.object_ids)
        for d, ds in enumerate(datasets)
        for i, r in enumerate(ds.records)
        if r.object_ids
    ]


# ----------------------------------------------------------------------------------------------
# Samplers
# ----------------------------------------------------------------------------------------------


class ClipSampler:
    """Draws :class:`ClipRequest` s as a pure function of ``(seed, sample index)``.

    Args:
        sequences: videos and volumes (:func:`index_videos`, :func:`index_volumes`).
        images: images (:func:`index_images`).
        config: sampling settings.
        seed: run seed.

    Raises:
        ValueError: there is nothing to sample from.
    """

    def __init__(
        self,
        sequences: Sequence[SequenceEntry],
        images: Sequence[ImageEntry],
        config: SamplingConfig,
        seed: int = 0,
    ) -> None:
        if not sequences and not images:
            raise ValueError(
                "no training data: give at least one video, volume or image dataset with objects"
            )
        self.videos = [s for s in sequences if s.kind == "video"]
        self.volumes = [s for s in sequences if s.kind == "volume"]
        self.images = list(images)
        self.config = config
        self.seed = int(seed)

    def sample(self, index: int) -> ClipRequest:
        """The clip at position ``index`` of the sample stream."""
        rng = np.random.default_rng([self.seed, int(index)])
        cfg = self.config
        seed = int(rng.integers(0, 2**62))
        hflip = bool(rng.random() < cfg.hflip_prob)
        sequences = self.videos + self.volumes
        use_image = bool(self.images) and (not sequences or rng.random() < cfg.image_fraction)
        if use_image:
            entry = self.images[int(rng.integers(len(self.images)))]
            obj_ids = self._pick_objects(rng, entry.object_ids)
            return ClipRequest(
                index,
                seed,
                "image",
                entry.dataset,
                entry.item,
                (0,),
                (ROLE_CONDITIONING,),
                obj_ids,
                reverse=False,
                hybrid=False,
                hflip=hflip,
                num_source_frames=1,
            )
        entry = self._pick_sequence(rng)
        reverse = bool(rng.random() < cfg.reverse_prob)
        hybrid = cfg.hybrid and rng.random() < cfg.hybrid_fraction
        layout = (
            hybrid_clip(rng, entry.presence, cfg.num_frames, cfg.num_long_term, reverse) if hybrid else None
        )
        hybrid = layout is not None
        if layout is None:
            layout = contiguous_clip(rng, entry.presence, cfg.num_frames, reverse)
        if layout is None:  # index_* keep only sequences where some object is visible
            raise RuntimeError(f"{entry.kind} {entry.name!r} has no frame to prompt")
        positions, roles = layout
        present = entry.presence[positions[0]]
        obj_ids = self._pick_objects(rng, tuple(o for o, p in zip(entry.object_ids, present) if p))
        return ClipRequest(
            index,
            seed,
            entry.kind,
            entry.dataset,
            entry.item,
            tuple(entry.frames[p] for p in positions),
            tuple(roles),
            obj_ids,
            reverse=reverse,
            hybrid=hybrid,
            hflip=hflip,
            num_source_frames=len(entry.frames),
        )

    def _pick_sequence(self, rng: np.random.Generator) -> SequenceEntry:
        fraction = self.config.volume_fraction
        if fraction is not None and self.videos and self.volumes:
            pool = self.volumes if rng.random() < fraction else self.videos
        else:
            pool = self.videos + self.volumes
        return pool[int(rng.integers(len(pool)))]

    def _pick_objects(self, rng: np.random.Generator, candidates: tuple[int, ...]) -> tuple[int, ...]:
        if len(candidates) <= self.config.max_objects:
            return tuple(candidates)
        chosen = rng.choice(len(candidates), size=self.config.max_objects, replace=False)
        return tuple(candidates[i] for i in sorted(chosen))


class DistributedClipSampler:
    """Shards each step's global batch across processes (see the module docstring).

    Args:
        sampler: the run's clip sampler.
        global_batch_size: clips per optimisation step over all processes.
        rank: this process.
        world_size: number of processes; must divide ``global_batch_size``.
    """

    def __init__(
        self, sampler: ClipSampler, global_batch_size: int, rank: int = 0, world_size: int = 1
    ) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"invalid rank {rank} of world size {world_size}")
        if global_batch_size < world_size or global_batch_size % world_size:
            raise ValueError(
                f"the global batch of {global_batch_size} clips cannot be split evenly over {world_size} "
                "processes; use a batch size that is a multiple of the number of processes"
            )
        self.sampler = sampler
        self.global_batch_size = global_batch_size
        self.rank = rank
        self.world_size = world_size

    @property
    def local_batch_size(self) -> int:
        return self.global_batch_size // self.world_size

    def sample_indices(self, step: int) -> range:
        """Global sample indices this process trains on at ``step``."""
        first = step * self.global_batch_size + self.rank * self.local_batch_size
        return range(first, first + self.local_batch_size)

    def batch(self, step: int) -> list[ClipRequest]:
        return [self.sampler.sample(i) for i in self.sample_indices(step)]
