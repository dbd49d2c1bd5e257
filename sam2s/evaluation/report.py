"""Evaluation reports: JSON, a Markdown table and a plot of per-frame J&F.

Scores are fractions in [0, 1] in the JSON file (``NaN`` written as ``null``) and
percentages with two decimals in the Markdown table, as papers print them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sam2s.evaluation.aggregate import BenchmarkScore, ObjectScore, SubsetScore, VideoScore
from sam2s.writers.base import save_atomically

if TYPE_CHECKING:
    from sam2s.evaluation.runner import EvaluationResult

__all__ = [
    "ReportFiles",
    "markdown_report",
    "plot_per_frame_jf",
    "result_to_dict",
    "write_report",
]


def _number(value: float) -> float | None:
    return None if math.isnan(value) else round(float(value), 6)


def _object_dict(obj: ObjectScore) -> dict[str, Any]:
    return {
        "obj_id": obj.obj_id,
        "category": obj.category,
        "j": _number(obj.j),
        "f": _number(obj.f),
        "jf": _number(obj.jf),
        "frames": list(obj.frame_indices),
        "j_per_frame": [_number(v) for v in obj.j_per_frame],
        "f_per_frame": [_number(v) for v in obj.f_per_frame],
    }


def _video_dict(video: VideoScore) -> dict[str, Any]:
    return {
        "name": video.name,
        "j": _number(video.j),
        "f": _number(video.f),
        "jf": _number(video.jf),
        "num_frames": video.num_frames,
        "seconds": round(video.seconds, 6),
        "fps": _number(video.fps),
        "objects": [_object_dict(o) for o in video.objects],
    }


def _subset_dict(subset: SubsetScore) -> dict[str, Any]:
    return {
        "name": subset.name,
        "j": _number(subset.j),
        "f": _number(subset.f),
        "jf": _number(subset.jf),
        "object_jf": _number(subset.object_jf),
        "fps": _number(subset.fps),
        "videos": [_video_dict(v) for v in subset.videos],
    }


def result_to_dict(result: EvaluationResult) -> dict[str, Any]:
    """A JSON-ready dictionary of an evaluation: scores at every level, prompts, timing."""
    scores: BenchmarkScore = result.scores
    return {
        "protocol": result.protocol,
        "model": result.model,
        "j": _number(scores.j),
        "f": _number(scores.f),
        "jf": _number(scores.jf),
        "fps": _number(scores.fps),
        "subsets": [_subset_dict(s) for s in scores.subsets],
        "prompts": {
            video: [
                {
                    "obj_id": p.obj_id,
                    "frame_index": p.frame_index,
                    "points": [list(xy) for xy in p.points],
                    "labels": list(p.labels),
                    "box": list(p.box) if p.box is not None else None,
                    "mask": p.mask,
                }
                for p in prompts
            ]
            for video, prompts in result.prompts.items()
        },
    }


def _pct(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:.2f}"


def _fps(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.1f}"


def markdown_report(result: EvaluationResult) -> str:
    """Markdown with a subset table (plus the macro average) and a per-video table."""
    scores = result.scores
    lines = [
        f"# Evaluation: protocol `{result.protocol}`" + (f", model `{result.model}`" if result.model else ""),
        "",
        "J&F, J and F in percent; J&F of a subset is the mean over its videos, the average the mean over subsets.",
        "",
        "| subset | videos | J&F | J | F | J&F (mean over objects) | FPS |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for s in scores.subsets:
        lines.append(
            f"| {s.name} | {len(s.videos)} | {_pct(s.jf)} | {_pct(s.j)} | {_pct(s.f)} | {_pct(s.object_jf)} | {_fps(s.fps)} |"
        )
    lines.append(
        f"| **average** | {sum(len(s.videos) for s in scores.subsets)} | **{_pct(scores.jf)}** | "
        f"{_pct(scores.j)} | {_pct(scores.f)} |  | {_fps(scores.fps)} |"
    )
    lines += [
        "",
        "| subset | video | objects | J&F | J | F | frames | FPS |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for s in scores.subsets:
        for v in s.videos:
            lines.append(
                f"| {s.name} | {v.name} | {len(v.objects)} | {_pct(v.jf)} | {_pct(v.j)} | {_pct(v.f)} | {v.num_frames} | {_fps(v.fps)} |"
            )
    return "\n".join(lines) + "\n"


def plot_per_frame_jf(result: EvaluationResult, path: str | Path) -> Path:
    """Save a PNG with one panel per subset and one line per video: J&F against frame index."""
    # The object-oriented API with an Agg canvas leaves pyplot's global backend alone.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    subsets = result.scores.subsets
    figure = Figure(figsize=(8, 2.6 * max(1, len(subsets))), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(max(1, len(subsets)), 1, squeeze=False)[:, 0]
    for ax, subset in zip(axes, subsets):
        for video in subset.videos:
            frames, values = video.per_frame_jf()
            if frames:
                ax.plot(frames, [100 * v for v in values], label=video.name, linewidth=1.2)
        ax.set_title(f"{subset.name}: J&F {_pct(subset.jf)}", fontsize=10)
        ax.set_xlabel("frame")
        ax.set_ylabel("J&F (%)")
        ax.set_ylim(-2, 102)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if 0 < len(subset.videos) <= 12:
            ax.legend(fontsize=7, loc="lower left")
    return save_atomically(path, lambda tmp: figure.savefig(tmp, format="png", dpi=110))


@dataclass(frozen=True)
class ReportFiles:
    """Paths written by :func:`write_report`."""

    json: Path
    markdown: Path
    plot: Path


def write_report(result: EvaluationResult, out_dir: str | Path) -> ReportFiles:
    """Write ``results.json``, ``results.md`` and ``per_frame_jf.png`` into ``out_dir``."""
    out_dir = Path(out_dir)
    text = json.dumps(result_to_dict(result), indent=2) + "\n"
    json_path = save_atomically(out_dir / "results.json", lambda tmp: tmp.write_text(text))
    markdown = markdown_report(result)
    md_path = save_atomically(out_dir / "results.md", lambda tmp: tmp.write_text(markdown))
    plot_path = plot_per_frame_jf(result, out_dir / "per_frame_jf.png")
    return ReportFiles(json_path, md_path, plot_path)
