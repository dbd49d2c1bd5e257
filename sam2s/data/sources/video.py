"""Frame-accurate, on-demand decoding of video files (mp4, avi, mkv, mov, ...) through PyAV.

Opening a video runs one fast pass over its packets (demuxing only, no decoding) to learn every
frame's presentation timestamp and where the keyframes are. That index gives:

* the exact frame count, whatever the container header claims (mkv often states none);
* frame ``i`` = the ``i``-th frame in presentation order, which stays right for variable frame
  rate video (no rounding of ``time * fps``);
* frame-accurate random access: seek to the last keyframe at or before the frame, then decode
  forward to its timestamp;
* a check for truncated files, whose packet count or span falls short of the header.

The decoder's position is kept between reads, so reading frames in order never seeks again, and
skipping ahead decodes forward when no keyframe lies between here and the target.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from tqdm import tqdm

from sam2s.data.sources.base import FrameSource, FrameTiming, SourceError, SourceGeometry

__all__ = ["VIDEO_SUFFIXES", "VideoFileSource"]

VIDEO_SUFFIXES = (".mp4", ".m4v", ".avi", ".mkv", ".mov", ".webm", ".mpg", ".mpeg", ".ts", ".wmv")

# A file whose indexed frames end before the header's stated duration, by more than two frames
# plus this share of the duration (at most _TRUNCATION_SLACK_MAX_S), is truncated. The slack
# covers containers that round their duration or pad it a little.
_TRUNCATION_SLACK_FRACTION = 0.01
_TRUNCATION_SLACK_MAX_S = 1.0


def _import_av():
    try:
        import av
    except ImportError as error:  # pragma: no cover - av is in the "video" extra
        raise ImportError("reading video files needs PyAV: pip install 'sam2s[video]'") from error
    return av


@dataclass(frozen=True, eq=False)
class _PacketIndex:
    """What the packet pass learnt: every frame's timestamp and the keyframes' timestamps, ascending."""

    frame_pts: np.ndarray  # (T,) int64
    keyframe_pts: list[int]
    discarded_packets: int


class VideoFileSource(FrameSource):
    """Frames of a video file, decoded one at a time.

    Args:
        path: the video file.
        decoder_threads: let FFmpeg decode with several threads (faster, same pixels).
        show_progress: show a progress bar while indexing long videos.

    Raises:
        FileNotFoundError: the file does not exist.
        SourceError: the file is empty, not a video, has no frames, or is truncated.

    The frames' timestamps are in ``geometry.timing`` (``pts`` in ``time_base`` units and
    ``times`` in seconds). Pixel size is the stored size; sample aspect ratio and rotation
    metadata are not applied.
    """

    def __init__(self, path: str | Path, *, decoder_threads: bool = True, show_progress: bool = True) -> None:
        av = _import_av()
        self._av = av
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"video file not found: {self.path}")
        if self.path.stat().st_size == 0:
            raise SourceError(f"cannot read video {self.path}: the file is empty (0 bytes)")
        try:
            self._container = av.open(str(self.path))
        except av.FFmpegError as error:
            raise SourceError(
                f"cannot read video {self.path}: it is truncated, damaged or not a video file ({error})"
            ) from error
        self._lock = threading.Lock()
        try:
            if not self._container.streams.video:
                kinds = sorted({stream.type for stream in self._container.streams})
                hint = "" if "audio" in kinds or "subtitle" in kinds else "; the file is truncated or damaged"
                raise SourceError(
                    f"cannot read video {self.path}: it contains no video stream "
                    f"(streams found: {', '.join(kinds) or 'none'}){hint}"
                )
            self._stream = self._container.streams.video[0]
            index = self._index_packets(show_progress)
            self._check_complete(index)
            if decoder_threads:
                self._stream.thread_type = "AUTO"
        except BaseException:
            self._container.close()
            raise

        self._frame_pts = index.frame_pts
        self._keyframe_pts = index.keyframe_pts
        self._index_of_pts = {int(pts): i for i, pts in enumerate(index.frame_pts)}
        self._decoded: Iterator | None = None  # the decoder's frame iterator after the last seek
        self._position: int | None = None  # index of the frame the decoder produced last
        self._cached: np.ndarray | None = None  # RGB of frame `_position`, if converted

        height, width = self._stream.codec_context.height, self._stream.codec_context.width
        if not height or not width:
            first = self._decode_to(0)
            height, width = first.shape[:2]
        self.num_frames = len(self._frame_pts)
        self.height, self.width = int(height), int(width)
        timing = FrameTiming(
            time_base=Fraction(self._stream.time_base),
            pts=self._frame_pts,
            average_rate=Fraction(self._stream.average_rate) if self._stream.average_rate else None,
        )
        self.geometry = SourceGeometry(
            kind="video",
            height=self.height,
            width=self.width,
            num_frames=self.num_frames,
            path=str(self.path),
            timing=timing,
        )

    # -- indexing ---------------------------------------------------------------------------

    def _index_packets(self, show_progress: bool) -> _PacketIndex:
        frame_pts: list[int] = []
        keyframe_pts: list[int] = []
        discarded = 0
        stated = self._stream.frames or None
        bar = tqdm(
            total=stated,
            desc=f"indexing {self.path.name}",
            unit="frame",
            disable=not show_progress,
            delay=2.0,  # only long videos get a bar
            leave=False,
        )
        try:
            for packet in self._container.demux(self._stream):
                if packet.size == 0 and packet.pts is None and packet.dts is None:
                    continue  # the demuxer's end-of-stream marker
                if packet.is_discard:
                    discarded += 1  # e.g. cut by an mp4 edit list; the decoder drops it too
                    continue
                pts = packet.pts if packet.pts is not None else packet.dts
                if pts is None:
                    raise SourceError(
                        f"cannot index video {self.path}: its packets carry no timestamps; "
                        "remux it into an mp4 or mkv container (ffmpeg -i in -c copy out.mkv)"
                    )
                frame_pts.append(int(pts))
                if packet.is_keyframe:
                    keyframe_pts.append(int(pts))
                bar.update()
        except self._av.FFmpegError as error:
            raise SourceError(
                f"cannot read video {self.path}: reading failed after {len(frame_pts)} frames; "
                f"the file is truncated or damaged ({error})"
            ) from error
        finally:
            bar.close()

        if not frame_pts:
            raise SourceError(f"cannot read video {self.path}: its video stream has no frames")
        pts_array = np.sort(np.asarray(frame_pts, dtype=np.int64))
        if np.any(np.diff(pts_array) == 0):
            raise SourceError(
                f"cannot index video {self.path}: several frames share a timestamp, so frames cannot be "
                "addressed exactly; remux it (ffmpeg -i in -c copy out.mkv) or extract its frames to a folder"
            )
        keyframes = sorted(set(keyframe_pts)) or [int(pts_array[0])]
        return _PacketIndex(pts_array, keyframes, discarded)

    def _check_complete(self, index: _PacketIndex) -> None:
        """Refuse files that end before their header says they should."""
        found = len(index.frame_pts) + index.discarded_packets
        stated = self._stream.frames
        if stated and found < stated:
            raise SourceError(
                f"video {self.path} is truncated: its header states {stated} frames but only {found} are present"
            )
        stated_end = self._stated_end_seconds()
        if stated_end is None:
            return
        time_base = float(self._stream.time_base)
        start = self._stream.start_time if self._stream.start_time is not None else int(index.frame_pts[0])
        last = float(index.frame_pts[-1] - start) * time_base
        # The typical frame interval (a truncated file may lose frames just before its last one).
        step = float(np.median(np.diff(index.frame_pts))) * time_base if len(index.frame_pts) > 1 else 0.0
        slack = 2 * step + min(_TRUNCATION_SLACK_FRACTION * stated_end, _TRUNCATION_SLACK_MAX_S)
        if last + step + slack < stated_end:
            raise SourceError(
                f"video {self.path} is truncated: its header states {stated_end:.2f} s but the frames "
                f"present end at {last + step:.2f} s"
            )

    def _stated_end_seconds(self) -> float | None:
        if self._stream.duration is not None:
            return float(self._stream.duration * self._stream.time_base)
        if len(self._container.streams) == 1 and self._container.duration is not None:
            # Only the video stream exists, so the container's duration is the video's.
            return self._container.duration / 1_000_000
        return None

    # -- decoding ---------------------------------------------------------------------------

    def read(self, index: int) -> np.ndarray:
        """Return frame ``index`` as ``(H, W, 3)`` uint8 RGB (a new array)."""
        index = self._checked_index(index)
        with self._lock:
            return self._decode_to(index).copy()

    def _decode_to(self, index: int) -> np.ndarray:
        if self._position == index and self._cached is not None:
            return self._cached
        if not self._can_decode_forward_to(index):
            self._seek_before(index)
        target_pts = int(self._frame_pts[index])
        while True:
            frame = self._next_frame(index)
            position = self._position_of(frame)
            self._position, self._cached = position, None
            if position == index:
                break
            if position > index or (frame.pts is not None and frame.pts > target_pts):
                raise SourceError(
                    f"cannot decode frame {index} of {self.path}: the decoder skipped it "
                    "(the file is damaged around that frame)"
                )
        self._cached = frame.to_ndarray(format="rgb24")
        return self._cached

    def _can_decode_forward_to(self, index: int) -> bool:
        """True when decoding on from the current position reaches ``index`` no slower than a seek."""
        if self._decoded is None or self._position is None or self._position >= index:
            return False
        keyframe = self._keyframe_at_or_before(int(self._frame_pts[index]))
        # A seek would restart at that keyframe; it only saves work when the keyframe lies
        # beyond the next frame the decoder would produce anyway.
        return self._index_of_pts[keyframe] <= self._position + 1

    def _keyframe_at_or_before(self, pts: int) -> int:
        position = bisect.bisect_right(self._keyframe_pts, pts) - 1
        return self._keyframe_pts[max(position, 0)]

    def _seek_before(self, index: int) -> None:
        keyframe = self._keyframe_at_or_before(int(self._frame_pts[index]))
        try:
            self._container.seek(keyframe, stream=self._stream, backward=True, any_frame=False)
        except self._av.FFmpegError as error:
            raise SourceError(f"cannot seek to frame {index} of {self.path}: {error}") from error
        self._decoded = self._container.decode(self._stream)
        self._position, self._cached = None, None

    def _next_frame(self, index: int):
        try:
            return next(self._decoded)  # type: ignore[arg-type]
        except StopIteration:
            self._decoded = None
            raise SourceError(
                f"cannot decode frame {index} of {self.path}: the stream ended before it; "
                "the file is truncated or damaged"
            ) from None
        except self._av.FFmpegError as error:
            self._decoded = None
            raise SourceError(
                f"cannot decode frame {index} of {self.path}: the file is damaged ({error})"
            ) from error

    def _position_of(self, frame) -> int:
        if frame.pts is not None and int(frame.pts) in self._index_of_pts:
            return self._index_of_pts[int(frame.pts)]
        if self._position is not None:
            # No usable timestamp: the decoder presents frames in order, so it is the next one.
            return self._position + 1
        raise SourceError(
            f"cannot place a decoded frame of {self.path} (timestamp {frame.pts} is not in the index); "
            "remux the file (ffmpeg -i in -c copy out.mkv)"
        )

    def close(self) -> None:
        with self._lock:
            self._decoded = None
            self._cached = None
            self._container.close()

    def __repr__(self) -> str:
        return (
            f"VideoFileSource({str(self.path)!r}, frames={self.num_frames}, size={self.height}x{self.width})"
        )
