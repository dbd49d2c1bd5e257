"""Frame sources: videos, frame folders, volumes and arrays, decoded one frame at a time.

Start with :func:`open_source`; every source implements :class:`FrameSource`.
"""

from sam2s.data.sources.array import ArraySource, LiveStreamSource
from sam2s.data.sources.base import (
    FrameIndexError,
    FrameSource,
    FrameTiming,
    SourceError,
    SourceGeometry,
    SourceKind,
    StreamEndedError,
    VolumeGeometry,
)
from sam2s.data.sources.factory import open_source
from sam2s.data.sources.folder import FRAME_SUFFIXES, FrameFolderSource, natural_sort_key
from sam2s.data.sources.video import VIDEO_SUFFIXES, VideoFileSource
from sam2s.data.sources.volume import PLANE_NAMES, VOLUME_SUFFIXES, VolumeSource, axis_from_plane
from sam2s.data.sources.windowing import (
    WINDOW_PRESETS,
    IntensityWindow,
    PercentileWindow,
    WindowSpec,
    resolve_window,
    window_to_rgb,
)

__all__ = [
    "FRAME_SUFFIXES",
    "PLANE_NAMES",
    "VIDEO_SUFFIXES",
    "VOLUME_SUFFIXES",
    "WINDOW_PRESETS",
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
    "SourceKind",
    "StreamEndedError",
    "VideoFileSource",
    "VolumeGeometry",
    "VolumeSource",
    "WindowSpec",
    "axis_from_plane",
    "natural_sort_key",
    "open_source",
    "resolve_window",
    "window_to_rgb",
]
