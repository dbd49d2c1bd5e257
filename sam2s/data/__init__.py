"""Data: frame sources (videos, frame folders, volumes, arrays) and datasets."""

from sam2s.data.sources import (
    ArraySource,
    FrameFolderSource,
    FrameIndexError,
    FrameSource,
    FrameTiming,
    IntensityWindow,
    LiveStreamSource,
    PercentileWindow,
    SourceError,
    SourceGeometry,
    VideoFileSource,
    VolumeGeometry,
    VolumeSource,
    open_source,
)

__all__ = [
    "ArraySource",
    "FrameFolderSource",
    "FrameIndexError",
    "FrameSource",
    "FrameTiming",
    "IntensityWindow",
    "LiveStreamSource",
    "PercentileWindow",
    "SourceError",
    "SourceGeometry",
    "VideoFileSource",
    "VolumeGeometry",
    "VolumeSource",
    "open_source",
]
