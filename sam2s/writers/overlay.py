"""An MP4 of the source frames with each object drawn as a translucent colour and a solid contour.

Frames are encoded in index order. Masks that arrive ahead of the next frame to encode (for
example the forward half of a ``direction="both"`` propagation, before the backward half reaches
the start) wait in memory, bit-packed and zlib-compressed (a few KiB per frame for typical
masks); frames never given masks are encoded without overlay.

Resuming: the video is encoded in parts of ``part_frames`` frames under ``<name>.parts/``, each
a complete MP4 renamed into place when done and then recorded in ``<name>.progress.json``. A
resumed writer keeps the finished parts, skips their frames when they are written again, and
:meth:`close` joins all parts into the final file by copying packets (no re-encoding).
"""

from __future__ import annotations

import re
import shutil
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from sam2s.data.sources.base import FrameSource
from sam2s.writers.base import MaskWriter, atomic_output, check_masks, davis_palette
from sam2s.writers.progress import WriterProgress

__all__ = ["OverlayVideoWriter", "render_overlay"]

_PART_NAME = re.compile(r"^(\d+)-(\d+)\.mp4$")


def _import_av():
    try:
        import av
    except ImportError as error:  # pragma: no cover - av is in the "video" extra
        raise ImportError("writing overlay videos needs PyAV: pip install 'sam2s[video]'") from error
    return av


def _inner(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` whose four neighbours are all in the mask (a one-pixel erosion)."""
    padded = np.pad(mask, 1, mode="edge")
    return mask & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]


def render_overlay(
    frame: np.ndarray,
    obj_ids: Sequence[int],
    masks: np.ndarray,
    *,
    alpha: float = 0.5,
    palette: np.ndarray | None = None,
) -> np.ndarray:
    """Blend object colours into a frame.

    Args:
        frame: ``(H, W, 3)`` uint8 RGB.
        obj_ids: one id per mask; the colour of id ``i`` is ``palette[i % 256]``.
        masks: ``(O, H, W)`` bool.
        alpha: opacity of the fill; the one-pixel contour is drawn opaque.
        palette: ``(256, 3)`` uint8 colours, DAVIS by default.

    Returns:
        ``(H, W, 3)`` uint8; later objects are drawn over earlier ones.
    """
    palette = davis_palette() if palette is None else palette
    out = frame.astype(np.float32)
    for obj_id, mask in zip(obj_ids, masks):
        if not mask.any():
            continue
        color = palette[int(obj_id) % 256].astype(np.float32)
        out[mask] = out[mask] * (1.0 - alpha) + color * alpha
        out[mask & ~_inner(mask)] = color
    return np.rint(out).astype(np.uint8)


@dataclass(frozen=True)
class _PackedMasks:
    """One frame's masks, bit-packed and compressed while they wait for their turn."""

    obj_ids: tuple[int, ...]
    shape: tuple[int, int, int]
    data: bytes

    @classmethod
    def pack(cls, obj_ids: Sequence[int], masks: np.ndarray) -> _PackedMasks:
        return cls(tuple(obj_ids), masks.shape, zlib.compress(np.packbits(masks, axis=None).tobytes(), 1))

    def unpack(self) -> np.ndarray:
        bits = np.frombuffer(zlib.decompress(self.data), np.uint8)
        count = int(np.prod(self.shape))
        return np.unpackbits(bits, count=count).astype(bool).reshape(self.shape)


@dataclass(frozen=True)
class _Part:
    first: int
    last: int  # inclusive
    path: Path


class _PartEncoder:
    """Encodes consecutive frames into one MP4 part, renamed into place by :meth:`finish`."""

    def __init__(
        self, path: Path, first: int, rate: Fraction, size: tuple[int, int], options: dict[str, str]
    ):
        av = _import_av()
        self.path, self.first, self.count = path, first, 0
        self._temporary = path.with_name(f".tmp-{path.name}")
        self._container = av.open(str(self._temporary), "w", format="mp4")
        self._stream = self._container.add_stream("libx264", rate=rate, options=options)
        self._stream.height, self._stream.width = size
        self._stream.pix_fmt = "yuv420p"
        self._stream.codec_context.time_base = 1 / rate
        self._time_base = 1 / rate
        self._av = av

    def add(self, rgb: np.ndarray) -> None:
        frame = self._av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts, frame.time_base = self.count, self._time_base
        self._container.mux(self._stream.encode(frame))
        self.count += 1

    def finish(self) -> _Part:
        self._container.mux(self._stream.encode())
        self._container.close()
        final = self.path.with_name(f"{self.first:07d}-{self.first + self.count - 1:07d}.mp4")
        self._temporary.replace(final)
        return _Part(self.first, self.first + self.count - 1, final)

    def discard(self) -> None:
        try:
            self._container.close()
        finally:
            self._temporary.unlink(missing_ok=True)


class OverlayVideoWriter(MaskWriter):
    """Renders the source frames with translucent coloured masks and contours into an H.264 MP4.

    Args:
        path: the ``.mp4`` to write.
        fps: frame rate; defaults to the source's (videos), required for other sources.
        source: the frames to draw on (read in order as masks arrive).
        alpha: fill opacity.
        start_frame: first frame of the video; frames before it are refused.
        part_frames: frames per part file (the unit a resumed run keeps).
        crf: x264 quality (lower is better, 18 is visually lossless).
        preset: x264 speed preset.
        resume: keep the finished parts of an earlier run.

    Odd frame sizes are padded by repeating the last row/column, since yuv420p needs even sizes.
    Variable-rate sources are written at a constant ``fps``. A video source shared with a
    predictor is read right after the predictor read the same frame, so its decoder stays in
    place; give the writer its own source when masks arrive far out of order.
    """

    def __init__(
        self,
        path: str | Path,
        fps: float | None = None,
        *,
        source: FrameSource,
        alpha: float = 0.5,
        start_frame: int = 0,
        part_frames: int = 500,
        crf: int = 20,
        preset: str = "veryfast",
        resume: bool = False,
    ) -> None:
        self.path = Path(path)
        if self.path.suffix.lower() != ".mp4":
            raise ValueError(f"the overlay video is an .mp4 file, got {self.path.name}")
        fps = fps if fps is not None else source.geometry.fps
        if fps is None or not fps > 0:
            raise ValueError(
                f"give the overlay video a frame rate (fps=...): {type(source).__name__} has none"
            )
        if part_frames < 1:
            raise ValueError(f"part_frames must be at least 1, got {part_frames}")
        self.source = source
        self.rate = Fraction(fps).limit_denominator(1001 * 1000)
        self.alpha = float(alpha)
        self.start_frame = int(start_frame)
        self.part_frames = int(part_frames)
        # No B-frames: every part then starts with decode time = presentation time, so parts join
        # into one stream with an even frame timing (mixed reorder delays would leave gaps).
        self._options = {"crf": str(int(crf)), "preset": preset, "bf": "0"}
        self._size = (source.height + source.height % 2, source.width + source.width % 2)
        self.parts_dir = self.path.with_name(f"{self.path.name}.parts")
        self.progress = WriterProgress(
            self.path.with_name(f"{self.path.name}.progress.json"),
            writer="overlay_video",
            settings={
                "fps": [self.rate.numerator, self.rate.denominator],
                "start_frame": self.start_frame,
                "size": list(self._size),
                "alpha": self.alpha,
                "options": self._options,
            },
            resume=resume,
            flush_every=None,  # frames are recorded when their part is on disk
        )
        self._parts = self._reusable_parts() if resume else []
        if not resume:
            shutil.rmtree(self.parts_dir, ignore_errors=True)
        self.parts_dir.mkdir(parents=True, exist_ok=True)
        self._finished = set(range(self.start_frame, self._next_part_start()))
        self.progress.reset_frames(self._finished)
        self._next_frame = self._next_part_start()
        self._pending: dict[int, _PackedMasks] = {}
        self._encoder: _PartEncoder | None = None
        self._palette = davis_palette()
        self._closed = False

    # -- resume -------------------------------------------------------------------------------

    def _reusable_parts(self) -> list[_Part]:
        """Finished parts continuing each other from ``start_frame`` whose frames the manifest records."""
        recorded = self.progress.completed_frames()
        found = []
        for entry in self.parts_dir.glob("*.mp4") if self.parts_dir.is_dir() else []:
            match = _PART_NAME.match(entry.name)
            if match:
                found.append(_Part(int(match.group(1)), int(match.group(2)), entry))
        found.sort(key=lambda part: part.first)
        kept: list[_Part] = []
        expected = self.start_frame
        for part in found:
            if part.first != expected or not set(range(part.first, part.last + 1)) <= recorded:
                break
            kept.append(part)
            expected = part.last + 1
        for entry in self.parts_dir.iterdir() if self.parts_dir.is_dir() else []:
            if entry not in {part.path for part in kept}:
                entry.unlink()
        return kept

    def _next_part_start(self) -> int:
        return self._parts[-1].last + 1 if self._parts else self.start_frame

    def completed_frames(self) -> set[int]:
        return set(self._finished)

    # -- writing ------------------------------------------------------------------------------

    def write(self, frame_index: int, obj_ids: Sequence[int], masks: np.ndarray) -> None:
        if self._closed:
            raise RuntimeError(f"OverlayVideoWriter({self.path}) is closed")
        ids, masks = check_masks(frame_index, obj_ids, masks, (self.source.height, self.source.width))
        frame_index = int(frame_index)
        if frame_index < self.start_frame:
            raise ValueError(
                f"frame {frame_index} is before the overlay video's start_frame {self.start_frame}"
            )
        if frame_index in self._finished:
            return  # encoded in a part kept from an earlier run
        if frame_index < self._next_frame:
            raise ValueError(
                f"frame {frame_index} of the overlay video is already encoded (frames go in order from "
                f"{self.start_frame}); write corrected masks with PngMaskWriter and render the video afterwards"
            )
        self._pending[frame_index] = _PackedMasks.pack(ids, masks)
        while self._next_frame in self._pending:
            packed = self._pending.pop(self._next_frame)
            self._encode(packed.obj_ids, packed.unpack())

    def _encode(self, obj_ids: Sequence[int], masks: np.ndarray) -> None:
        if self._encoder is None:
            path = self.parts_dir / f"{self._next_frame:07d}.mp4"
            self._encoder = _PartEncoder(path, self._next_frame, self.rate, self._size, self._options)
        frame = render_overlay(
            self.source.read(self._next_frame), obj_ids, masks, alpha=self.alpha, palette=self._palette
        )
        pad_rows, pad_cols = self._size[0] - frame.shape[0], self._size[1] - frame.shape[1]
        if pad_rows or pad_cols:
            frame = np.pad(frame, ((0, pad_rows), (0, pad_cols), (0, 0)), mode="edge")
        self._encoder.add(frame)
        self._next_frame += 1
        if self._encoder.count >= self.part_frames:
            self._finish_part()

    def _finish_part(self) -> None:
        if self._encoder is None:
            return
        encoder, self._encoder = self._encoder, None
        if encoder.count == 0:
            encoder.discard()
            return
        part = encoder.finish()
        self._parts.append(part)
        frames = range(part.first, part.last + 1)
        self._finished.update(frames)
        self.progress.add_many(frames)
        self.progress.flush()

    def close(self) -> None:
        """Encode the waiting frames (frames without masks plainly), join the parts, mark complete."""
        if self._closed:
            return
        self._closed = True
        if self._pending:
            last = max(self._pending)
            empty = np.zeros((0, self.source.height, self.source.width), bool)
            while self._next_frame <= last:
                packed = self._pending.pop(self._next_frame, None)
                if packed is None:
                    self._encode((), empty)
                else:
                    self._encode(packed.obj_ids, packed.unpack())
        self._finish_part()
        if not self._parts:
            raise RuntimeError(f"no frames were written to the overlay video {self.path}; nothing to encode")
        with atomic_output(self.path) as temporary:
            _join_parts([part.path for part in self._parts], temporary)
        self.progress.mark_complete()
        shutil.rmtree(self.parts_dir, ignore_errors=True)

    def abort(self) -> None:
        """Keep the frames encoded so far as a finished part; waiting masks are dropped."""
        if not self._closed:
            self._closed = True
            self._finish_part()
            self._pending.clear()


def _join_parts(parts: Sequence[Path], target: Path) -> None:
    """Concatenate MP4 parts with identical encoder settings by copying their packets."""
    av = _import_av()
    with av.open(str(target), "w", format="mp4") as output:
        out_stream = None
        offset = 0  # in the parts' stream time base
        for part in parts:
            with av.open(str(part)) as part_container:
                stream = part_container.streams.video[0]
                if out_stream is None:
                    out_stream = output.add_stream_from_template(stream)
                    time_base = stream.time_base
                elif stream.time_base != time_base:
                    raise RuntimeError(
                        f"overlay part {part} has time base {stream.time_base}, expected {time_base}"
                    )
                end = offset
                for packet in part_container.demux(stream):
                    if packet.dts is None:
                        continue  # end-of-stream marker
                    duration = packet.duration or 0
                    packet.pts += offset
                    packet.dts += offset
                    end = max(end, packet.pts + duration)
                    packet.stream = out_stream
                    output.mux(packet)
                offset = end
