"""Semi-supervised VOS evaluation with simulated first-frame prompts, through the public predictor API.

For every video the runner:

1. finds each object's first annotated frame in the ground truth (frame 0 for most data
   sets; later for objects that enter later, as in YouTube-VOS) and prompts it there only;
2. builds the prompt with the chosen protocol (:mod:`sam2s.evaluation.clicks`): for
   ``1click``/``3click``/``5click`` the first click is placed from the ground truth, and each
   further click from the model's current mask on that frame, read back with
   ``session.propagate(start_frame=f, max_frames=1)``; ``box`` and ``mask`` give the tight box
   or the ground-truth mask;
3. tracks online with ``session.propagate(direction="forward")`` and scores every annotated
   frame (:mod:`sam2s.evaluation.aggregate`), merging the predicted per-object masks into one
   id map the way SAM 2's VOS tool writes its PNGs (lowest id wins where masks overlap);
4. times the forward propagation (all objects together) for FPS.

Prompt updates call ``session.add_prompt`` again for the same frame and object with *all*
points so far, i.e. the runner relies on a repeated ``add_prompt`` replacing that object's
points on that frame (SAM 2's default behaviour).

The predictor is anything with ``start(source) -> session`` as in DESIGN §5; the session's
``propagate`` yields objects with ``frame_index``, ``obj_ids`` and ``masks`` (O, H, W) bool.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from typing import Protocol as TypingProtocol

import numpy as np
from PIL import Image
from tqdm import tqdm

from sam2s.data.datasets import DatasetError, VideoDataset, VideoRecord, label_map_from_masks
from sam2s.evaluation.aggregate import BenchmarkScore, SubsetScore, VideoScore, VideoScorer
from sam2s.evaluation.clicks import Protocol, box_from_mask, first_click, next_click, parse_protocol

__all__ = [
    "EvaluationResult",
    "ObjectPrompt",
    "add_arguments",
    "discover_subsets",
    "evaluate",
    "evaluate_video",
    "run",
]


class _FrameOutput(TypingProtocol):
    frame_index: int
    obj_ids: Sequence[int]
    masks: np.ndarray


class _Session(TypingProtocol):
    def add_prompt(self, frame_index: int, obj_id: int, **prompt: Any) -> Any: ...

    def propagate(
        self, direction: str = ..., start_frame: int | None = ..., max_frames: int | None = ...
    ) -> Iterator[_FrameOutput]: ...


class _Predictor(TypingProtocol):
    def start(self, source: Any) -> _Session: ...


@dataclass(frozen=True)
class ObjectPrompt:
    """The final prompt given for one object.

    Attributes:
        obj_id: object id.
        frame_index: the frame prompted (the object's first annotated frame).
        points: clicks ``(x, y)`` in order.
        labels: 1 positive / 0 negative, one per point.
        box: ``(x0, y0, x1, y1)`` for the box protocol.
        mask: whether the ground-truth mask was given.
    """

    obj_id: int
    frame_index: int
    points: tuple[tuple[int, int], ...] = ()
    labels: tuple[int, ...] = ()
    box: tuple[int, int, int, int] | None = None
    mask: bool = False


@dataclass(frozen=True)
class EvaluationResult:
    """Outcome of :func:`evaluate`.

    Attributes:
        protocol: prompt protocol name.
        scores: J&F at every level (see :mod:`sam2s.evaluation.aggregate`).
        prompts: per video, the prompts that were given.
        model: model name, when known.
    """

    protocol: str
    scores: BenchmarkScore
    prompts: Mapping[str, tuple[ObjectPrompt, ...]] = field(default_factory=dict)
    model: str | None = None

    @property
    def jf(self) -> float:
        return self.scores.jf

    @property
    def fps(self) -> float:
        return self.scores.fps


def _frame_masks(output: _FrameOutput, obj_ids: Sequence[int], shape: tuple[int, int]) -> np.ndarray:
    """bool (len(obj_ids), H, W): the output's masks reordered to ``obj_ids`` (missing ones empty)."""
    masks = np.asarray(output.masks, dtype=bool)
    if masks.ndim != 3 or masks.shape[1:] != shape:
        raise ValueError(
            f"predictor output for frame {output.frame_index} has masks of shape {masks.shape}; expected (O, {shape[0]}, {shape[1]})"
        )
    index = {int(o): k for k, o in enumerate(output.obj_ids)}
    result = np.zeros((len(obj_ids), *shape), dtype=bool)
    for k, obj_id in enumerate(obj_ids):
        if obj_id in index:
            result[k] = masks[index[obj_id]]
    return result


def _predict_one_frame(session: _Session, frame_index: int) -> _FrameOutput:
    outputs = session.propagate(direction="forward", start_frame=frame_index, max_frames=1)
    try:
        output = next(iter(outputs))
    except StopIteration as err:
        raise RuntimeError(
            f"the predictor yielded nothing for frame {frame_index} with start_frame={frame_index}, max_frames=1"
        ) from err
    finally:
        close = getattr(outputs, "close", None)
        if close is not None:
            close()
    if output.frame_index != frame_index:
        raise RuntimeError(f"asked the predictor for frame {frame_index} and got frame {output.frame_index}")
    return output


def _first_appearances(dataset: VideoDataset, record: VideoRecord) -> dict[int, tuple[int, np.ndarray]]:
    """For each object, its first annotated frame and its ground-truth mask there."""
    found: dict[int, tuple[int, np.ndarray]] = {}
    for frame_index in record.annotated_frames:
        labels = dataset.read_label_map(record, frame_index)
        for obj_id in np.unique(labels):
            if obj_id != 0 and int(obj_id) not in found:
                found[int(obj_id)] = (frame_index, labels == obj_id)
        if len(found) == len(record.object_ids):
            break
    return found


def _prompt_objects(
    session: _Session, protocol: Protocol, appearances: Mapping[int, tuple[int, np.ndarray]]
) -> tuple[ObjectPrompt, ...]:
    """Give every object its first-frame prompt; clicks are refined round by round."""
    if protocol.kind == "mask":
        for obj_id, (frame_index, gt) in appearances.items():
            session.add_prompt(frame_index=frame_index, obj_id=obj_id, mask=gt)
        return tuple(ObjectPrompt(o, f, mask=True) for o, (f, _) in appearances.items())
    if protocol.kind == "box":
        prompts = []
        for obj_id, (frame_index, gt) in appearances.items():
            box = box_from_mask(gt)
            session.add_prompt(frame_index=frame_index, obj_id=obj_id, box=list(box))
            prompts.append(ObjectPrompt(obj_id, frame_index, box=box))
        return tuple(prompts)

    clicks = {obj_id: [first_click(gt)] for obj_id, (_, gt) in appearances.items()}
    for obj_id, (frame_index, _) in appearances.items():
        click = clicks[obj_id][0]
        session.add_prompt(
            frame_index=frame_index, obj_id=obj_id, points=[[click.x, click.y]], labels=[click.label]
        )
    frames = sorted({f for f, _ in appearances.values()})
    for _ in range(protocol.num_clicks - 1):
        for frame_index in frames:
            on_frame = [o for o, (f, _) in appearances.items() if f == frame_index]
            output = _predict_one_frame(session, frame_index)
            shape = appearances[on_frame[0]][1].shape
            predicted = _frame_masks(output, on_frame, shape)
            for obj_id, pred in zip(on_frame, predicted):
                click = next_click(pred, appearances[obj_id][1])
                if click is None:  # already perfect: nothing to correct
                    continue
                clicks[obj_id].append(click)
                session.add_prompt(
                    frame_index=frame_index,
                    obj_id=obj_id,
                    points=[[c.x, c.y] for c in clicks[obj_id]],
                    labels=[c.label for c in clicks[obj_id]],
                )
    return tuple(
        ObjectPrompt(
            o, f, points=tuple((c.x, c.y) for c in clicks[o]), labels=tuple(c.label for c in clicks[o])
        )
        for o, (f, _) in appearances.items()
    )


def _save_label_png(path: Path, labels: np.ndarray) -> None:
    from sam2s.writers.base import davis_palette, save_atomically

    image = Image.fromarray(labels.astype(np.uint8), mode="P")
    image.putpalette(davis_palette().reshape(-1).tolist())
    save_atomically(path, lambda tmp: image.save(tmp, format="PNG"))


def evaluate_video(
    predictor: _Predictor,
    dataset: VideoDataset,
    video: str | int | VideoRecord,
    protocol: str | Protocol = "3click",
    skip_first_and_last: bool = True,
    save_masks_to: str | Path | None = None,
) -> tuple[VideoScore, tuple[ObjectPrompt, ...]]:
    """Prompt, track and score one video.

    Args:
        predictor: object with ``start(source)`` (DESIGN §5).
        dataset: the video's dataset.
        video: name, index or record.
        protocol: prompt protocol name.
        skip_first_and_last: DAVIS rule for scoring.
        save_masks_to: if given, write the predicted id maps of annotated frames as palette PNGs
            in this folder (for checking with vos-benchmark).

    Returns:
        The video's scores (with frame count and propagation time) and the prompts given.
    """
    protocol = parse_protocol(protocol)
    record = dataset.record(video)
    appearances = dict(sorted(_first_appearances(dataset, record).items()))
    if not appearances:
        raise DatasetError(f"video {record.name!r}: no object in any annotated frame, nothing to prompt")
    obj_ids = tuple(sorted(appearances))
    session = predictor.start(str(record.frame_dir))
    prompts = _prompt_objects(session, protocol, appearances)

    scorer = VideoScorer(record.name, record.categories, skip_first_and_last)
    annotated = list(record.annotated_frames)
    shape = next(iter(appearances.values()))[1].shape
    empty = np.zeros(shape, dtype=np.int64)
    next_annotated = 0  # position in `annotated` of the next frame to score
    earliest_prompt = min(f for f, _ in appearances.values())
    processed = 0

    def score(frame_index: int, pred_labels: np.ndarray) -> None:
        scorer.add_frame(frame_index, pred_labels, dataset.read_label_map(record, frame_index))
        if save_masks_to is not None:
            _save_label_png(Path(save_masks_to) / f"{record.frame_paths[frame_index].stem}.png", pred_labels)

    start = time.perf_counter()
    for output in session.propagate(direction="forward"):
        processed += 1
        t = int(output.frame_index)
        # Annotated frames before the first prompt are not tracked: their prediction is empty.
        while next_annotated < len(annotated) and annotated[next_annotated] < t:
            skipped = annotated[next_annotated]
            if skipped >= earliest_prompt:
                raise RuntimeError(
                    f"video {record.name!r}: the predictor skipped frame {skipped} during forward propagation"
                )
            score(skipped, empty)
            next_annotated += 1
        if next_annotated < len(annotated) and annotated[next_annotated] == t:
            score(t, label_map_from_masks(_frame_masks(output, obj_ids, shape), obj_ids))
            next_annotated += 1
    seconds = time.perf_counter() - start
    if next_annotated < len(annotated):
        raise RuntimeError(
            f"video {record.name!r}: forward propagation stopped before annotated frame {annotated[next_annotated]}"
        )
    return scorer.result(num_frames=processed, seconds=seconds), prompts


def evaluate(
    predictor_factory: Callable[[], _Predictor],
    dataset: VideoDataset | Mapping[str, VideoDataset],
    protocol: str | Protocol = "3click",
    *,
    skip_first_and_last: bool = True,
    videos: Sequence[str] | None = None,
    save_masks_to: str | Path | None = None,
    model_name: str | None = None,
    progress: bool = True,
) -> EvaluationResult:
    """Evaluate a video predictor on one or several test subsets.

    Args:
        predictor_factory: called once to build the predictor, which is reused for every video
            (each video gets its own session).
        dataset: one dataset, or ``{subset name: dataset}`` for a multi-subset benchmark.
        protocol: ``"1click"``, ``"3click"`` (paper default), ``"5click"``, ``"box"`` or ``"mask"``.
        skip_first_and_last: drop the first and last annotated frame of each video (DAVIS rule).
        videos: only these video names (in every subset that has them).
        save_masks_to: write predicted PNGs under ``save_masks_to/<subset>/<video>/``.
        model_name: recorded in the result.
        progress: show a progress bar over videos.

    Returns:
        Typed scores per object, video, subset and overall, FPS and the prompts given.
    """
    protocol = parse_protocol(protocol)
    subsets = dict(dataset) if isinstance(dataset, Mapping) else {Path(dataset.root).name: dataset}
    if not subsets:
        raise ValueError("no dataset to evaluate")
    predictor = predictor_factory()
    work = [
        (subset, ds, record)
        for subset, ds in subsets.items()
        for record in ds.records
        if videos is None or record.name in videos
    ]
    if not work:
        raise ValueError(f"none of the videos {list(videos or [])} is in the datasets")
    per_subset: dict[str, list[VideoScore]] = {name: [] for name in subsets}
    prompts: dict[str, tuple[ObjectPrompt, ...]] = {}
    for subset, ds, record in tqdm(work, desc=f"evaluate ({protocol.name})", disable=not progress):
        out = None if save_masks_to is None else Path(save_masks_to) / subset / record.name
        score, video_prompts = evaluate_video(predictor, ds, record, protocol, skip_first_and_last, out)
        per_subset[subset].append(score)
        prompts[f"{subset}/{record.name}" if len(subsets) > 1 else record.name] = video_prompts
    scores = BenchmarkScore(tuple(SubsetScore(name, tuple(v)) for name, v in per_subset.items() if v))
    return EvaluationResult(protocol.name, scores, prompts, model_name)


def discover_subsets(root: str | Path) -> dict[str, VideoDataset]:
    """Datasets under ``root``: ``root`` itself if it holds ``JPEGImages/``, else each sub-folder that does.

    Raises:
        DatasetError: neither ``root`` nor any sub-folder is a dataset.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist")
    if (root / "JPEGImages").is_dir():
        return {root.name: VideoDataset(root)}
    subsets = {p.name: VideoDataset(p) for p in sorted(root.iterdir()) if (p / "JPEGImages").is_dir()}
    if not subsets:
        raise DatasetError(
            f"{root} holds no JPEGImages/ folder, nor any sub-folder with one (one per test subset)"
        )
    return subsets


# ----------------------------------------------------------------------------------------------
# Command line: `sam2s evaluate`
# ----------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``sam2s evaluate`` to ``parser``."""
    parser.add_argument(
        "dataset", type=Path, help="dataset folder (JPEGImages/ + Annotations/) or a folder of subsets"
    )
    parser.add_argument(
        "--protocol",
        default="3click",
        choices=["1click", "3click", "5click", "box", "mask"],
        help="first-frame prompts (default 3click, as in the paper)",
    )
    parser.add_argument("--model", default="sam2s_demo", help="model config name (default sam2s_demo)")
    parser.add_argument(
        "--checkpoint",
        default="demo",
        help="checkpoint path, 'demo' for the shipped weights, or 'none' for random weights (default demo)",
    )
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument(
        "--out", type=Path, default=Path("evaluation"), help="report folder (default ./evaluation)"
    )
    parser.add_argument("--videos", nargs="+", default=None, help="evaluate only these videos")
    parser.add_argument(
        "--save-masks", action="store_true", help="also write predicted masks as PNGs under --out/masks"
    )
    parser.add_argument(
        "--all-frames", action="store_true", help="score the first and last frame too (not the DAVIS rule)"
    )


def run(args: argparse.Namespace) -> int:
    """Run ``sam2s evaluate`` with parsed ``args``; returns the exit status."""
    from sam2s.evaluation.report import write_report

    def predictor_factory():
        import sam2s

        checkpoint = None if str(args.checkpoint).lower() == "none" else args.checkpoint
        model = sam2s.build_model(args.model, checkpoint=checkpoint, device=args.device)
        return sam2s.VideoPredictor(model)

    result = evaluate(
        predictor_factory,
        discover_subsets(args.dataset),
        args.protocol,
        skip_first_and_last=not args.all_frames,
        videos=args.videos,
        save_masks_to=args.out / "masks" if args.save_masks else None,
        model_name=args.model,
    )
    files = write_report(result, args.out)
    print(files.markdown.read_text(), end="")
    print(f"report: {files.json}, {files.markdown}, {files.plot}")
    return 0
