"""The objects that the bundle's configs instantiate (``bundle/configs/*.json``).

``inference.json`` wires MONAI's inference properties to the project's own pieces, so the
bundle runs exactly what ``sam2s segment`` runs:

===================  ====================================================================
config id            object
===================  ====================================================================
``network_def``      :func:`sam2s.build_model` (config name ``model``, weights ``checkpoint``)
``memory_policy``    :func:`sam2s.memory.build_memory_policy` for the network's config
``inferer``          :class:`sam2s.VideoPredictor` with that memory policy
``preprocessing``    :class:`CheckInputs`: the input exists, the prompts file is valid
``dataset``          a :class:`monai.data.Dataset` of ``{"input", "prompts"}`` items
``postprocessing``   :class:`MaskWriterSet`: PNG masks, label volumes, overlay video
``evaluator``        :class:`SegmentationWorkflow`: runs :class:`sam2s.segment.SegmentJob`
===================  ====================================================================

Frame decoding, resizing to the model's input size and normalisation happen in the frame
source and the session (:mod:`sam2s.data.sources`, :class:`~sam2s.transforms.model_input.ToModelInput`);
masks are mapped back to the source geometry by the session and written as frames arrive.

``evaluate.json`` uses :class:`EvaluationWorkflow` around :func:`sam2s.evaluation.evaluate`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "CheckInputs",
    "EvaluationWorkflow",
    "MaskWriterSet",
    "SegmentationInput",
    "SegmentationWorkflow",
    "check_dataset",
    "find_bundle_root",
    "resolve_checkpoint",
]

logger = logging.getLogger(__name__)

# Files that mark a bundle folder.
_BUNDLE_MARKER = Path("configs") / "metadata.json"


def find_bundle_root(start: str | Path | None = None) -> str:
    """The bundle folder the configs live in, for the ``bundle_root`` config entry.

    MONAI's parser does not tell a config where its file is, so this looks, in order, at the
    current folder (run from inside the bundle, as model-zoo bundles are), at ``./bundle`` (run
    from the repository root), and at the ``bundle`` folder of the source checkout this package
    was imported from. Pass ``--bundle_root DIR`` to choose another.

    Raises:
        FileNotFoundError: none of these holds ``configs/metadata.json``.
    """
    here = Path(start) if start is not None else Path.cwd()
    checkout = Path(__file__).resolve().parents[2] / "bundle"
    candidates = [here, here / "bundle", checkout]
    for folder in candidates:
        if (folder / _BUNDLE_MARKER).is_file():
            return str(folder)
    raise FileNotFoundError(
        "cannot find the bundle folder (looked for configs/metadata.json in "
        + ", ".join(str(c) for c in candidates)
        + "); run from the bundle folder or its parent, or pass --bundle_root DIR"
    )


def resolve_checkpoint(checkpoint: str | os.PathLike | None) -> str | None:
    """Turn the ``checkpoint`` config entry into what :func:`sam2s.build_model` takes.

    ``"none"`` (or null) means random weights, ``"demo"`` the shipped demo weights; anything
    else is a path that must exist.

    Raises:
        FileNotFoundError: the path does not exist, with what to do about it.
    """
    if checkpoint is None or str(checkpoint).strip().lower() in ("", "none"):
        return None
    if str(checkpoint) == "demo":
        return "demo"
    path = Path(checkpoint)
    if not path.is_file():
        hint = (
            "this bundle does not hold its model yet (models/model.pt); fetch or train it (see docs/README.md), "
            if path.name == "model.pt" and path.parent.name == "models"
            else ""
        )
        raise FileNotFoundError(
            f"checkpoint {str(path)!r} does not exist; {hint}or pass --checkpoint PATH with the matching "
            "--model NAME (e.g. --model sam2.1_hiera_t --checkpoint sam2.1_hiera_tiny.pt), or --checkpoint none"
        )
    return str(path)


@dataclass(frozen=True)
class SegmentationInput:
    """One item to segment: a video file, frame folder or volume, and its prompts file."""

    input: Path
    prompts: Path


class CheckInputs:
    """The inference preprocessing: check one ``{"input", "prompts"}`` item before any model work.

    The prompts file is parsed and validated here (:func:`sam2s.prompts.load_prompts`); that its
    frames and coordinates fit the input is checked once the input is opened, still before the
    model runs (:func:`sam2s.segment.check_prompts_fit`).

    Raises:
        ValueError: an item without ``input`` or ``prompts``.
        FileNotFoundError: the input does not exist.
        PromptsFileError: the prompts file is missing, not JSON, or not in the prompts format.
    """

    def __call__(self, item: Mapping[str, Any]) -> SegmentationInput:
        from sam2s.prompts import load_prompts

        missing = [key for key in ("input", "prompts") if not item.get(key)]
        if missing:
            raise ValueError(f"no {' or '.join(missing)} given; pass --input PATH and --prompts FILE")
        source, prompts = Path(item["input"]), Path(item["prompts"])
        if not source.exists():
            raise FileNotFoundError(
                f"input {str(source)!r} does not exist; pass --input with a video file, a frame folder, "
                "a volume (NIfTI, NRRD, MHA) or a DICOM folder"
            )
        load_prompts(prompts)
        return SegmentationInput(source, prompts)


def check_dataset(dataset: Sequence[SegmentationInput]) -> int:
    """Run the preprocessing of every item now, so that a missing input or a bad prompts file is
    reported before the model loads (the config's ``initialize`` step). Returns the item count."""
    for index in range(len(dataset)):
        dataset[index]
    return len(dataset)


@dataclass
class MaskWriterSet:
    """The inference postprocessing: which files the masks are written to.

    PNG masks (``masks/00000.png`` ..., pixel value = object id) are always written: the overlay
    video is drawn from them and an interrupted run resumes from them.

    Attributes:
        label_volume: volumes: ``labels.nii.gz`` with the source's spacing, origin and direction.
        seg_nrrd: volumes: ``labels.seg.nrrd`` for 3D Slicer's Segment Editor.
        overlay: videos and frame folders: ``overlay.mp4``, the masks drawn on the frames.
    """

    label_volume: bool = True
    seg_nrrd: bool = True
    overlay: bool = True

    def __call__(self, out: Path, source, resume: bool) -> list:
        """The writers of one run (a :data:`sam2s.segment.WriterFactory`)."""
        from sam2s.writers import LabelVolumeWriter, PngMaskWriter, SegNrrdWriter

        writers = [PngMaskWriter(out / "masks", resume=resume)]
        if source.geometry.volume is not None:
            if self.label_volume:
                writers.append(LabelVolumeWriter(out / "labels.nii.gz", source.geometry, resume=resume))
            if self.seg_nrrd:
                writers.append(SegNrrdWriter(out / "labels.seg.nrrd", source.geometry, resume=resume))
        return writers


class SegmentationWorkflow:
    """The inference evaluator: segments every dataset item with :class:`sam2s.segment.SegmentJob`.

    Args:
        dataset: items that the preprocessing turns into :class:`SegmentationInput`.
        inferer: the :class:`sam2s.VideoPredictor` (network and memory policy).
        postprocessing: the :class:`MaskWriterSet`.
        output_dir: where results go; with several items, one sub-folder per input name.
        model: the model config name, recorded in ``summary.json``.
        checkpoint: the weights, recorded in ``summary.json``.
        direction: ``"forward"``, ``"backward"`` or ``"both"`` from the prompted frames.
        start_frame: start propagation here instead of at the prompted frames.
        axis: volumes: slicing axis, ``0``/``1``/``2`` or ``"axial"``/``"coronal"``/``"sagittal"``.
        window: volumes: intensity window preset or ``[lower, upper]``.
        overwrite: replace an earlier run's results in ``output_dir`` (only a folder holding a
            run's ``run.json`` is ever cleared).
        resume: continue an interrupted run in ``output_dir`` instead.
        save_every: save the session state every this many frames (for ``resume``).
        progress: show progress bars.
    """

    def __init__(
        self,
        dataset: Sequence[SegmentationInput],
        inferer,
        postprocessing: MaskWriterSet,
        output_dir: str | Path,
        model: str = "",
        checkpoint: str | None = None,
        direction: str = "both",
        start_frame: int | None = None,
        axis: int | str | None = None,
        window: str | Sequence[float] | None = None,
        overwrite: bool = True,
        resume: bool = False,
        save_every: int = 25,
        progress: bool = True,
    ) -> None:
        if direction not in ("forward", "backward", "both"):
            raise ValueError(f"direction must be 'forward', 'backward' or 'both', got {direction!r}")
        if overwrite and resume:
            overwrite = False  # resuming keeps what the interrupted run wrote
        self.dataset = dataset
        self.inferer = inferer
        self.postprocessing = postprocessing
        self.output_dir = Path(output_dir)
        self.model = str(model)
        self.checkpoint = None if checkpoint is None else str(checkpoint)
        self.direction = direction
        self.start_frame = start_frame
        self.axis = None if axis is None else str(axis)
        if window is not None and not isinstance(window, str):
            lower, upper = window
            window = f"{float(lower)},{float(upper)}"
        self.window = window
        self.overwrite = overwrite
        self.resume = resume
        self.save_every = save_every
        self.progress = progress

    def _output_folder(self, item: SegmentationInput) -> Path:
        if len(self.dataset) == 1:
            return self.output_dir
        name = item.input.name.removesuffix(".gz")
        return self.output_dir / (Path(name).stem if item.input.is_file() else name)

    def run(self) -> list[dict]:
        """Segment every item; print and return each run's summary (see :mod:`sam2s.segment`)."""
        from sam2s.segment import SegmentJob, SegmentOptions, print_summary

        summaries = []
        for index in range(len(self.dataset)):
            item = self.dataset[index]
            options = SegmentOptions(
                input=str(item.input),
                prompts=str(item.prompts),
                out=str(self._output_folder(item)),
                model=self.model,
                checkpoint=self.checkpoint,
                device=str(self.inferer.device),
                direction=self.direction,
                start_frame=self.start_frame,
                axis=self.axis,
                window=self.window,
                overlay=self.postprocessing.overlay,
                resume=self.resume,
                overwrite=self.overwrite,
                save_every=self.save_every,
                cache_frames=self.inferer.cache_frames,
                progress=self.progress,
            )
            summary = SegmentJob(options, predictor=self.inferer, writers=self.postprocessing).run()
            print_summary(summary)
            summaries.append(summary)
        return summaries


class EvaluationWorkflow:
    """The evaluate evaluator: J&F of the predictor on DAVIS-layout data, printed as a table.

    Args:
        dataset: ``{subset name: VideoDataset}`` (:func:`sam2s.evaluation.runner.discover_subsets`).
        inferer: the :class:`sam2s.VideoPredictor` to evaluate.
        output_dir: where ``results.json``, ``results.md`` and ``per_frame_jf.png`` go.
        protocol: first-frame prompts: ``"1click"``, ``"3click"`` (paper default), ``"5click"``,
            ``"box"`` or ``"mask"``.
        videos: evaluate only these videos; ``None`` evaluates every video.
        model: the model name, recorded in the report.
        skip_first_and_last: the DAVIS rule (first and last annotated frame not scored).
        save_masks: also write the predicted masks under ``output_dir/masks``.
        progress: show a progress bar.
    """

    def __init__(
        self,
        dataset: Mapping,
        inferer,
        output_dir: str | Path,
        protocol: str = "3click",
        videos: Sequence[str] | None = None,
        model: str | None = None,
        skip_first_and_last: bool = True,
        save_masks: bool = False,
        progress: bool = True,
    ) -> None:
        self.dataset = dataset
        self.inferer = inferer
        self.output_dir = Path(output_dir)
        self.protocol = protocol
        self.videos = None if videos is None else list(videos)
        self.model = model
        self.skip_first_and_last = skip_first_and_last
        self.save_masks = save_masks
        self.progress = progress

    def run(self):
        """Evaluate, write the report, print the J&F table; returns the
        :class:`~sam2s.evaluation.runner.EvaluationResult`."""
        from sam2s.evaluation.report import write_report
        from sam2s.evaluation.runner import evaluate

        result = evaluate(
            lambda: self.inferer,
            self.dataset,
            self.protocol,
            skip_first_and_last=self.skip_first_and_last,
            videos=self.videos,
            save_masks_to=self.output_dir / "masks" if self.save_masks else None,
            model_name=self.model,
            progress=self.progress,
        )
        files = write_report(result, self.output_dir)
        print(files.markdown.read_text(), end="")
        print(f"report: {files.json}, {files.markdown}, {files.plot}")
        return result
