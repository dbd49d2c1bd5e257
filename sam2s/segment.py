"""``sam2s segment``: prompts file in, masks out, for a video, a frame folder or a volume.

Output folder::

    masks/00000.png ...        palette PNG per frame, pixel value = object id
    labels.nii.gz, labels.seg.nrrd   label volume with the source geometry (volumes only)
    overlay.mp4                coloured overlay of the masks on the frames (videos and folders)
    summary.json               what was done: frames, objects, timings, class predictions
    run.json                   the job's options and whether it finished

While it runs, ``session.pt`` holds the session's memory state and where propagation stands,
saved every ``--save-every`` frames. A run that stops (crash, Ctrl+C, SIGKILL) leaves
``run.json`` marked unfinished; ``--resume`` reloads that state and continues, giving masks
identical to an uninterrupted run.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm import tqdm

from sam2s.writers.base import atomic_output, write_json

if TYPE_CHECKING:
    from sam2s.data.sources import FrameSource
    from sam2s.writers import MaskWriter

__all__ = [
    "SegmentJob",
    "SegmentOptions",
    "WriterFactory",
    "add_arguments",
    "check_prompts_fit",
    "default_writers",
    "print_summary",
    "run",
]

logger = logging.getLogger(__name__)

RUN_MANIFEST = "run.json"
SESSION_STATE = "session.pt"
# Options that must be the same for a run to be resumed.
RESUME_KEYS = ("input", "prompts", "model", "checkpoint", "direction", "axis", "window", "start_frame")


@dataclass
class SegmentOptions:
    input: str
    prompts: str
    out: str
    model: str = "sam2s_demo"
    checkpoint: str | None = "demo"
    device: str = "auto"
    direction: str = "both"
    start_frame: int | None = None
    axis: str | None = None
    window: str | None = None
    overlay: bool = True
    resume: bool = False
    overwrite: bool = False
    save_every: int = 25
    cache_frames: int = 64
    progress: bool = True


@dataclass
class Cursor:
    """Where propagation stands: the pass and the next frame to track in it."""

    pass_index: int = 0
    next_frame: int | None = None


# Builds the mask writers of one run: (output folder, frame source, resume) -> writers.
WriterFactory = Callable[[Path, "FrameSource", bool], list["MaskWriter"]]


class SegmentJob:
    """One segmentation run (see the module docstring).

    Args:
        options: what to segment, where to write and how.
        predictor: a ready :class:`~sam2s.predictor.video.VideoPredictor` (the MONAI bundle passes
            the one its config builds); ``None`` builds one from ``options.model``,
            ``options.checkpoint``, ``options.device`` and ``options.cache_frames``.
        writers: builds the per-frame mask writers; ``None`` uses :func:`default_writers`.
    """

    def __init__(self, options: SegmentOptions, predictor=None, writers: WriterFactory | None = None) -> None:
        self.options = options
        self.out = Path(options.out)
        self.predictor = predictor
        self.writers = writers or default_writers

    # ------------------------------------------------------------------ run
    def run(self) -> dict:
        from sam2s.data.sources import open_source
        from sam2s.predictor.video import Session
        from sam2s.prompts import load_prompts

        options = self.options
        prompts = load_prompts(options.prompts)
        source = open_source(options.input, axis=_axis(options.axis), window=_window(options.window))
        try:
            # Every input is checked before the output folder is touched or the model is loaded.
            check_prompts_fit(prompts, source, options.prompts, options.input)
            self._prepare_output_folder()
            started = time.perf_counter()
            try:
                session = Session(self._predictor(), source)
                cursor = self._restore(session) if options.resume else None
                if cursor is None:
                    prompts.apply(session)
                    cursor = Cursor()
                writers = self._open_writers(source, resume=options.resume)
                frames_done = self._propagate(session, cursor, writers)
                writers.close()
                overlay = self._render_overlay(source) if options.overlay and source.geometry.volume is None else None
            except BaseException:
                logger.warning("segmentation stopped early; rerun with --resume to continue")
                raise
        finally:
            source.close()
        summary = {
            "input": options.input,
            "model": options.model,
            "objects": {o.obj_id: o.name for o in prompts.objects},
            "frames_written": frames_done,
            "num_frames": source.num_frames,
            "seconds": round(time.perf_counter() - started, 3),
            "masks": str(self.out / "masks"),
            "overlay": None if overlay is None else str(overlay),
            # the writers decide what is written (the bundle can switch the label volume off)
            "label_volume": str(self.out / "labels.nii.gz") if (self.out / "labels.nii.gz").is_file() else None,
        }
        write_json(self.out / "summary.json", summary, sort_keys=False)
        (self.out / SESSION_STATE).unlink(missing_ok=True)
        self._write_manifest(complete=True)
        return summary

    # ------------------------------------------------------------------ pieces
    def _predictor(self):
        if self.predictor is not None:
            return self.predictor
        from sam2s.checkpoint import build_model
        from sam2s.predictor.video import VideoPredictor

        options = self.options
        checkpoint = None if options.checkpoint in (None, "none") else options.checkpoint
        model = build_model(options.model, checkpoint=checkpoint, device=options.device)
        return VideoPredictor(model, cache_frames=options.cache_frames)

    def _prepare_output_folder(self) -> None:
        manifest_path = self.out / RUN_MANIFEST
        options = self.options
        if manifest_path.is_file():
            previous = json.loads(manifest_path.read_text())
            if options.overwrite:
                shutil.rmtree(self.out)
            elif options.resume:
                if previous.get("complete"):
                    raise FileExistsError(f"{self.out} holds a finished run; nothing to resume (use --overwrite to redo it)")
                changed = [k for k in RESUME_KEYS if previous["options"].get(k) != asdict(options).get(k)]
                if changed:
                    raise ValueError(f"cannot resume {self.out}: option(s) {changed} differ from the unfinished run")
            else:
                state = "a finished" if previous.get("complete") else "an unfinished"
                hint = "--overwrite to replace it" if previous.get("complete") else "--resume to continue it or --overwrite"
                raise FileExistsError(f"{self.out} already holds {state} run; use {hint}, or another --out")
        elif options.resume:
            raise FileNotFoundError(f"nothing to resume in {self.out} (no {RUN_MANIFEST})")
        self.out.mkdir(parents=True, exist_ok=True)
        self._write_manifest(complete=False)

    def _write_manifest(self, complete: bool) -> None:
        write_json(self.out / RUN_MANIFEST, {"options": asdict(self.options), "complete": complete}, sort_keys=False)

    def _restore(self, session) -> Cursor | None:
        path = self.out / SESSION_STATE
        if not path.is_file():
            return None  # stopped before the first save: start over
        saved = torch.load(path, map_location="cpu", weights_only=True)
        session.load_state_dict(saved["session"])
        cursor = Cursor(**saved["cursor"])
        logger.info("resuming at pass %d, frame %s", cursor.pass_index, cursor.next_frame)
        return cursor

    def _save(self, session, cursor: Cursor) -> None:
        with atomic_output(self.out / SESSION_STATE) as temporary:
            torch.save({"session": session.state_dict(), "cursor": asdict(cursor)}, temporary)

    def _open_writers(self, source, resume: bool):
        from sam2s.writers import CompositeMaskWriter

        return CompositeMaskWriter(self.writers(self.out, source, resume))

    def _propagate(self, session, cursor: Cursor, writers) -> int:
        options = self.options
        passes = session.plan(options.direction, options.start_frame)
        total = session.num_frames
        bar = tqdm(total=total, desc="segment", unit="frame", disable=not options.progress)
        written = 0
        try:
            for pass_index in range(cursor.pass_index, len(passes)):
                planned = passes[pass_index]
                resume_at = cursor.next_frame if pass_index == cursor.pass_index else None
                for result in session.run_pass(planned, resume_at=resume_at):
                    masks = result.masks.cpu().numpy()
                    writers.write(result.frame_index, result.obj_ids, masks)
                    written += 1
                    bar.update(1)
                    step = -1 if planned.reverse else 1
                    cursor = Cursor(pass_index, result.frame_index + step)
                    if written % options.save_every == 0:
                        self._save(session, cursor)
                cursor = Cursor(pass_index + 1, None)
        except BaseException:
            writers.abort()
            raise
        finally:
            bar.close()
        return written

    def _render_overlay(self, source) -> Path:
        """Draw the written PNG masks on the frames, in frame order (memory stays flat)."""
        from sam2s.writers import OverlayVideoWriter, read_png_mask

        path = self.out / "overlay.mp4"
        fps = source.geometry.fps or 10.0
        mask_dir = self.out / "masks"
        with OverlayVideoWriter(path, fps, source=source) as writer:
            for index in tqdm(range(source.num_frames), desc="overlay", unit="frame", disable=not self.options.progress):
                mask_path = mask_dir / f"{index:05d}.png"
                labels = read_png_mask(mask_path) if mask_path.is_file() else np.zeros((source.height, source.width), np.uint8)
                ids = [int(v) for v in np.unique(labels) if v != 0]
                writer.write(index, ids, np.stack([labels == i for i in ids]) if ids else np.zeros((0, *labels.shape), bool))
        return path


def default_writers(out: Path, source, resume: bool) -> list:
    """PNG masks for every input (``out/masks``; the overlay video is drawn from them), plus a
    NIfTI label volume and a Slicer ``.seg.nrrd`` with the source geometry for volumes."""
    from sam2s.writers import LabelVolumeWriter, PngMaskWriter, SegNrrdWriter

    writers = [PngMaskWriter(out / "masks", resume=resume)]
    if source.geometry.volume is not None:
        writers.append(LabelVolumeWriter(out / "labels.nii.gz", source.geometry, resume=resume))
        writers.append(SegNrrdWriter(out / "labels.seg.nrrd", source.geometry, resume=resume))
    return writers


def check_prompts_fit(
    prompts, source, origin: str | Path = "prompts", input_name: str | Path = "the input"
) -> None:
    """Check that every prompt of a prompts file lies on a frame and inside the frames of ``source``.

    Done before the model loads, so a typo in the prompts file is reported at once, by its place
    in the file. Points and box corners may lie on the far edge (x = width, y = height), as the
    predictor allows.

    Args:
        prompts: a :class:`~sam2s.prompts.PromptsFile`.
        source: the opened frame source.
        origin: the prompts file, as named in messages.
        input_name: the input, as named in messages.

    Raises:
        PromptsFileError: a frame index past the last frame, a point or box outside the frame,
            or a mask whose size is not the frame size.
    """
    from sam2s.prompts import PromptsFileError

    num_frames, width, height = source.num_frames, source.width, source.height
    for i, obj in enumerate(prompts.objects):
        for j, prompt in enumerate(obj.prompts):
            where = f"{origin}: objects[{i}] (id {obj.obj_id}).prompts[{j}]"
            if num_frames is not None and prompt.frame >= num_frames:
                raise PromptsFileError(
                    f"{where}: frame {prompt.frame} is out of range: {input_name} has {num_frames} "
                    f"frames (0..{num_frames - 1})"
                )
            corners = list(prompt.points or []) + ([prompt.box[:2], prompt.box[2:]] if prompt.box else [])
            for x, y in corners:
                if not (0 <= x <= width and 0 <= y <= height):
                    raise PromptsFileError(
                        f"{where}: point ({x:g}, {y:g}) is outside the {width}x{height} frames of "
                        f"{input_name}; points and boxes are (x, y) pixels with 0 <= x <= {width}, "
                        f"0 <= y <= {height}"
                    )
            if prompt.mask is not None and prompt.mask.shape != (height, width):
                raise PromptsFileError(
                    f"{where}: the mask is {prompt.mask.shape[1]}x{prompt.mask.shape[0]} but the frames of "
                    f"{input_name} are {width}x{height} (width x height)"
                )


def _axis(value: str | None):
    if value is None:
        return None
    return int(value) if value.isdigit() else value


def _window(value: str | None):
    if value is None:
        return None
    if "," in value:
        lower, upper = (float(v) for v in value.split(","))
        return (lower, upper)
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="video file, frame folder, volume (NIfTI/NRRD/MHA) or DICOM folder")
    parser.add_argument("--prompts", required=True, help="prompts JSON file (format in the README)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--model", default="sam2s_demo", help="model config name or YAML path (default: sam2s_demo)")
    parser.add_argument("--checkpoint", default="demo",
                        help="'demo' (shipped weights), a checkpoint path, or 'none' for random weights")
    parser.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda, cuda:1, mps")
    parser.add_argument("--direction", default="both", choices=["forward", "backward", "both"])
    parser.add_argument("--start-frame", type=int, default=None, help="start propagation here instead of the prompted frame")
    parser.add_argument("--axis", default=None, help="volumes: axial, coronal, sagittal or 0/1/2")
    parser.add_argument("--window", default=None, help="volumes: ct_soft_tissue, ct_lung, ct_bone, ct_abdomen, mr, auto (the default: 0.5-99.5 percentiles) or LOW,HIGH")
    parser.add_argument("--no-overlay", dest="overlay", action="store_false", help="skip the overlay MP4")
    parser.add_argument("--resume", action="store_true", help="continue an unfinished run in --out")
    parser.add_argument("--overwrite", action="store_true", help="replace what --out holds")
    parser.add_argument("--save-every", type=int, default=25, help="save the session state every N frames")
    parser.add_argument("--cache-frames", type=int, default=64, help="recent-frame memories kept per object")
    parser.add_argument("--no-progress", dest="progress", action="store_false")


def print_summary(summary: dict) -> None:
    """Print what a run did and where its masks, overlay and label volume are."""
    print(f"segmented {summary['frames_written']} frames of {summary['input']} in {summary['seconds']} s")
    print(f"  masks:   {summary['masks']}")
    if summary["overlay"]:
        print(f"  overlay: {summary['overlay']}")
    if summary["label_volume"]:
        print(f"  labels:  {summary['label_volume']}")


def run(args: argparse.Namespace) -> int:
    options = SegmentOptions(**{k: getattr(args, k) for k in SegmentOptions.__dataclass_fields__})
    print_summary(SegmentJob(options).run())
    return 0
