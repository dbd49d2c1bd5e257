"""Load a sampled :class:`~sam2s.training.sampling.ClipRequest` into model-ready tensors."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from sam2s.data.datasets import ClipKeys, ImageDataset, VideoDataset, VolumeDataset, clip_transforms
from sam2s.training.sampling import ClipRequest

__all__ = ["ClipLoader", "TrainingClip"]


@dataclass
class TrainingClip:
    """One training clip.

    Attributes:
        images: ``(T, 3, S, S)`` float32 ImageNet-normalised frames in clip order.
        masks: ``(T, O, S, S)`` bool ground truth of the O tracked objects.
        roles: per frame: ``"conditioning"``, ``"long_term"`` or ``"short_term"``.
        frame_indices: source frame (slice) of each clip frame.
        obj_ids: the tracked objects.
        categories: vocabulary name of each object, or ``None``.
        reverse: the consecutive frames run backwards in time.
        num_source_frames: length of the source sequence (for object-pointer time scaling).
        seed: per-sample seed for prompt simulation and dropout.
        name: source name, for logs.
    """

    images: torch.Tensor
    masks: torch.Tensor
    roles: tuple[str, ...]
    frame_indices: tuple[int, ...]
    obj_ids: tuple[int, ...]
    categories: tuple[str | None, ...]
    reverse: bool
    num_source_frames: int
    seed: int
    name: str

    @property
    def num_frames(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_objects(self) -> int:
        return int(self.masks.shape[1])

    def to(self, device: torch.device | str) -> TrainingClip:
        return TrainingClip(
            self.images.to(device, non_blocking=True),
            self.masks.to(device, non_blocking=True),
            self.roles,
            self.frame_indices,
            self.obj_ids,
            self.categories,
            self.reverse,
            self.num_source_frames,
            self.seed,
            self.name,
        )


class ClipLoader:
    """Reads clips from the run's datasets, resizes them to the model input and normalises them.

    Args:
        videos: video datasets (``ClipRequest.dataset`` indexes this list for video clips).
        volumes: volume datasets.
        images: image datasets.
        image_size: model input side.
        volume_axis: slicing axis of the volumes.
        volume_window: intensity window of the volumes (``None``: the 0.5-99.5 percentile
            window, as the predictor's volume source uses by default).
    """

    def __init__(
        self,
        videos: Sequence[VideoDataset],
        volumes: Sequence[VolumeDataset],
        images: Sequence[ImageDataset],
        image_size: int,
        volume_axis: int = 0,
        volume_window: tuple[float, float] | None = None,
    ) -> None:
        self.videos = list(videos)
        self.volumes = list(volumes)
        self.images = list(images)
        self.volume_axis = volume_axis
        self.volume_window = volume_window
        self.transform = clip_transforms(image_size)

    def load(self, request: ClipRequest) -> TrainingClip:
        if request.kind == "video":
            clip = self.videos[request.dataset].load_clip(
                request.item, request.frame_indices, request.obj_ids
            )
        elif request.kind == "volume":
            clip = self.volumes[request.dataset].load_clip(
                request.item, request.frame_indices, self.volume_axis, self.volume_window, request.obj_ids
            )
        elif request.kind == "image":
            clip = self.images[request.dataset].load_clip(request.item, request.obj_ids)
        else:
            raise ValueError(f"unknown clip kind {request.kind!r}")
        clip = self.transform(clip)
        images, masks = clip[ClipKeys.IMAGE], clip[ClipKeys.MASKS]
        if request.hflip:
            images, masks = images.flip(-1), masks.flip(-1)
        return TrainingClip(
            images=images.float().contiguous(),
            masks=masks.bool().contiguous(),
            roles=request.roles,
            frame_indices=request.frame_indices,
            obj_ids=request.obj_ids,
            categories=tuple(clip[ClipKeys.CATEGORIES]),
            reverse=request.reverse,
            num_source_frames=request.num_source_frames,
            seed=request.seed,
            name=str(clip[ClipKeys.NAME]),
        )
