"""``sam2s benchmark``: how fast the video predictor tracks, optionally against the official SAM 2.1.

The benchmark builds a model with random weights (``--model``, ``--image-size``), makes a
synthetic clip with one moving shape per object and clicks each shape once on frame 0, then
propagates forward and times every frame. With ``--compare-official`` the official SAM 2.1 video
predictor (the ``sam2`` package, imported only then) gets the very same weights, decoded frames and
clicks, and the two predictors advance in turn, one frame each, so that both see the same machine
load. Reported per predictor:

* seconds per frame: the median over the frames tracked with a full memory bank (frame index >=
  ``num_maskmem``: the prompted frame plus six recent frames), and on a GPU the frames per second;
* time to first mask: opening the clip and the first click (the official predictor loads every
  frame of the clip first, the project's streams them);
* peak resident memory of the process (both predictors together when comparing) and, on a GPU,
  the peak GPU memory.

With ``--compare-official`` also: ``speed_ratio`` (official seconds per frame divided by the
project's, both medians over the full-bank frames), ``max_logit_diff`` (largest absolute
difference of the logits either returns, over every frame and object) and the fraction of mask
pixels whose sign differs. ``--json FILE`` writes all of it.

Random weights would put every object's presence score near zero, so every mask would be
"absent" on both sides and the comparison would mean nothing: the last layer of the object-score
head is scaled so that objects are confidently present. Hole filling is off on both sides (the
official code skips it on CPU anyway). Opt-in modes that change the numbers are reported against
the official float32 result: ``--precision bfloat16`` (autocast) and ``--kernels aten`` (PyTorch's
default CPU kernels, to measure what the oneDNN kernels gain).
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import resource
import statistics
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from sam2s.config import ModelConfig
from sam2s.writers.base import write_json

__all__ = [
    "BenchmarkClip",
    "SideReport",
    "add_arguments",
    "benchmark_model",
    "build_official_video_predictor",
    "main",
    "official_overrides",
    "run",
    "synthetic_clip",
]

logger = logging.getLogger(__name__)

# Where the official package keeps the config this benchmark overrides (any size would do: every
# architecture value is overridden from the project's config).
OFFICIAL_BASE_CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"


# ---------------------------------------------------------------------------------------- inputs
@dataclass
class BenchmarkClip:
    """A synthetic clip and its clicks.

    Attributes:
        frames: ``(T, H, W, 3)`` uint8 RGB frames.
        clicks: ``obj_id -> (x, y)`` one positive click per object on frame 0, in pixels.
    """

    frames: np.ndarray
    clicks: dict[int, tuple[float, float]]


def synthetic_clip(
    num_frames: int, num_objects: int, height: int = 480, width: int = 640, seed: int = 0
) -> BenchmarkClip:
    """Coloured disks and boxes drifting over a noisy background, one shape per object.

    Args:
        num_frames: frames of the clip.
        num_objects: shapes (and objects), at least 1.
        height, width: frame size in pixels.
        seed: background noise and shape colours.
    """
    if num_frames < 1 or num_objects < 1:
        raise ValueError(
            f"need at least one frame and one object, got {num_frames} frames and {num_objects} objects"
        )
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    background = (rng.random((height, width, 3)) * 60 + 70).astype(np.uint8)
    colours = rng.integers(150, 256, size=(num_objects, 3), dtype=np.uint8)
    radius = max(4.0, min(height, width) / (4 * num_objects + 4))
    centres = [((k + 1) * width / (num_objects + 1), height / 2) for k in range(num_objects)]
    frames = np.repeat(background[None], num_frames, axis=0)
    for t in range(num_frames):
        for k, (cx, cy) in enumerate(centres):
            x = cx + radius * np.sin(t / 9 + k)
            y = cy + radius * np.cos(t / 11 + 2 * k)
            if k % 2 == 0:
                inside = (xx - x) ** 2 + (yy - y) ** 2 < radius**2
            else:
                inside = (np.abs(xx - x) < radius) & (np.abs(yy - y) < 0.7 * radius)
            frames[t][inside] = colours[k]
    clicks = {
        k + 1: (float(cx + radius * np.sin(k)), float(cy + radius * np.cos(2 * k)))
        for k, (cx, cy) in enumerate(centres)
    }
    return BenchmarkClip(frames, clicks)


def benchmark_model(name: str, image_size: int | None = None, seed: int = 0, device: str = "cpu"):
    """A randomly initialised model whose objects are confidently present.

    Args:
        name: config name (``"sam2.1_hiera_t"``, ...).
        image_size: model input size (the memory-attention grid follows); ``None`` keeps the config's.
        seed: weight initialisation.
        device: where the model lives.
    """
    from sam2s.checkpoint import build_model
    from sam2s.config import load_config

    config = load_config(name)
    overrides: dict = {"tracker.fill_hole_area": 0}
    if image_size is not None and image_size != config.image_size:
        stride = config.backbone_stride
        if image_size % (stride * 4) != 0:
            raise ValueError(f"--image-size must be a multiple of {stride * 4}, got {image_size}")
        overrides["image_size"] = image_size
        overrides["memory_attention.feat_sizes"] = [image_size // stride, image_size // stride]
    torch.manual_seed(seed)
    model = build_model(config, device=device, **overrides)
    # Random weights leave the presence logit near 0; make it large and positive.
    head = model.sam_mask_decoder.pred_obj_score_head
    last = head.layers[-1] if hasattr(head, "layers") else head
    with torch.no_grad():
        last.weight.mul_(40.0)
        last.bias.fill_(6.0)
    return model


# ---------------------------------------------------------------------------- official builder
def _listing(values) -> str:
    return "[" + ",".join(str(v) for v in values) + "]"


def official_overrides(config: ModelConfig) -> list[str]:
    """Hydra overrides that make the official package build the architecture of ``config``.

    Every size-dependent value is taken from the project's config, and the video predictor gets
    the project's tracking settings (hole filling off, corrections kept as conditioning frames).
    """
    if config.is_sam2s:
        raise ValueError(
            f"config {config.name!r} has SAM2S parts (DiveMem, TSL) that the official predictor lacks; "
            "compare a sam2.1_hiera_* config (--image-size picks the input size)"
        )
    trunk, neck, attn, tracker = config.trunk, config.neck, config.memory_attention, config.tracker
    d_model, mem_dim = neck.d_model, config.memory_encoder.out_dim
    model, enc, mem, layer = (
        "++model",
        "++model.image_encoder",
        "++model.memory_attention",
        "++model.memory_attention.layer",
    )
    grid = _listing(attn.feat_sizes)
    return [
        f"{model}.image_size={config.image_size}",
        f"{enc}.trunk.embed_dim={trunk.embed_dim}",
        f"{enc}.trunk.num_heads={trunk.num_heads}",
        f"{enc}.trunk.stages={_listing(trunk.stages)}",
        f"{enc}.trunk.global_att_blocks={_listing(trunk.global_att_blocks)}",
        f"{enc}.trunk.window_pos_embed_bkg_spatial_size={_listing(trunk.window_pos_embed_bkg_spatial_size)}",
        f"{enc}.trunk.window_spec={_listing(trunk.window_spec)}",
        f"{enc}.neck.d_model={d_model}",
        f"{enc}.neck.position_encoding.num_pos_feats={d_model}",
        f"{enc}.neck.backbone_channel_list={_listing(neck.backbone_channel_list)}",
        f"{enc}.neck.fpn_top_down_levels={_listing(neck.fpn_top_down_levels)}",
        f"{enc}.scalp={neck.scalp}",
        f"{mem}.d_model={d_model}",
        f"{mem}.num_layers={attn.num_layers}",
        f"{layer}.d_model={d_model}",
        f"{layer}.dim_feedforward={attn.dim_feedforward}",
        f"{layer}.dropout={attn.dropout}",
        f"{layer}.self_attention.embedding_dim={d_model}",
        f"{layer}.self_attention.num_heads={attn.num_heads}",
        f"{layer}.self_attention.feat_sizes={grid}",
        f"{layer}.self_attention.rope_theta={attn.rope_theta}",
        f"{layer}.cross_attention.embedding_dim={d_model}",
        f"{layer}.cross_attention.num_heads={attn.num_heads}",
        f"{layer}.cross_attention.feat_sizes={grid}",
        f"{layer}.cross_attention.rope_theta={attn.rope_theta}",
        f"{layer}.cross_attention.kv_in_dim={mem_dim}",
        f"{model}.memory_encoder.out_dim={mem_dim}",
        f"{model}.memory_encoder.position_encoding.num_pos_feats={mem_dim}",
        f"{model}.memory_encoder.fuser.layer.dim={d_model}",
        f"++model.memory_encoder.mask_downsampler.embed_dim={d_model}",
        f"++model.memory_encoder.in_dim={d_model}",
        f"{model}.num_maskmem={tracker.num_maskmem}",
        f"{model}.max_obj_ptrs_in_encoder={tracker.max_obj_ptrs}",
        f"{model}.max_cond_frames_in_attn={tracker.max_cond_frames_in_attn}",
        f"{model}.memory_temporal_stride_for_eval={tracker.memory_temporal_stride}",
        f"{model}.sigmoid_scale_for_mem_enc={tracker.sigmoid_scale_for_mem_enc}",
        f"{model}.sigmoid_bias_for_mem_enc={tracker.sigmoid_bias_for_mem_enc}",
        f"{model}.binarize_mask_from_pts_for_mem_enc={str(tracker.binarize_mask_from_pts_for_mem_enc).lower()}",
        f"{model}.multimask_output_for_tracking={str(tracker.multimask_output_for_tracking).lower()}",
        f"{model}.multimask_min_pt_num={tracker.multimask_min_pt_num}",
        f"{model}.multimask_max_pt_num={tracker.multimask_max_pt_num}",
        "++model.sam_mask_decoder_extra_args.dynamic_multimask_via_stability="
        + str(tracker.dynamic_multimask_via_stability).lower(),
        f"++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_delta={tracker.dynamic_multimask_stability_delta}",
        f"++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_thresh={tracker.dynamic_multimask_stability_thresh}",
        f"{model}.fill_hole_area={tracker.fill_hole_area}",
        f"{model}.add_all_frames_to_correct_as_cond=true",
    ]


def build_official_video_predictor(
    config: ModelConfig, state_dict: dict[str, torch.Tensor], device: str | torch.device = "cpu"
):
    """The official ``SAM2VideoPredictor`` with the architecture of ``config`` and the given weights.

    Needs the official ``sam2`` package (``SAM2_BUILD_CUDA=0 pip install sam2==1.1.0``); it is
    imported here only, never by the rest of the project.
    """
    try:
        from sam2.build_sam import build_sam2_video_predictor
    except ImportError as err:
        raise RuntimeError(
            "--compare-official needs the official SAM 2 package: SAM2_BUILD_CUDA=0 pip install sam2==1.1.0"
        ) from err
    predictor = build_sam2_video_predictor(
        OFFICIAL_BASE_CONFIG,
        ckpt_path=None,
        device=str(device),
        mode="eval",
        hydra_overrides_extra=official_overrides(config),
        apply_postprocessing=False,
    )
    predictor.load_state_dict(state_dict, strict=True)
    return predictor.eval()


# ---------------------------------------------------------------------------------- measurement
@dataclass
class SideReport:
    """What one predictor measured.

    Attributes:
        name: ``"project"`` or ``"official"``.
        frame_seconds: wall time of every yielded frame, in order.
        first_mask_s: opening the clip and the first object's click.
        full_bank_from: frames from this index on were tracked with a full memory bank.
    """

    name: str
    frame_seconds: list[float] = field(default_factory=list)
    first_mask_s: float = 0.0
    full_bank_from: int = 0

    @property
    def steady(self) -> list[float]:
        return self.frame_seconds[self.full_bank_from :]

    @property
    def s_per_frame(self) -> float:
        """Median seconds per frame with a full memory bank."""
        steady = self.steady
        if not steady:
            raise ValueError(
                f"no frame was tracked with a full memory bank; use more than {self.full_bank_from} frames"
            )
        return statistics.median(steady)

    def summary(self) -> dict:
        steady = self.steady
        return {
            "s_per_frame": self.s_per_frame,
            "fps": 1.0 / self.s_per_frame,
            "s_per_frame_min": min(steady),
            "s_per_frame_max": max(steady),
            "frames_measured": len(steady),
            "first_mask_s": self.first_mask_s,
            "frame_seconds": self.frame_seconds,
        }


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(step, device: torch.device):
    """``step()`` and its wall time, waiting for the device to finish (outside the predictor)."""
    started = time.perf_counter()
    out = step()
    _synchronize(device)
    return out, time.perf_counter() - started


class _ProjectSide:
    """The project's predictor on the clip: opens it, clicks, then yields ``(frame, logits)``."""

    def __init__(
        self, model, clip: BenchmarkClip, precision: str, report: SideReport, compile_mode: str | None = None
    ) -> None:
        from sam2s.data.sources import ArraySource
        from sam2s.predictor.video import VideoPredictor

        self.device = model.device
        bfloat16 = precision == "bfloat16"
        predictor = VideoPredictor(model, cpu_autocast=bfloat16, autocast=bfloat16, compile=compile_mode)

        def open_and_click():
            session = predictor.start(ArraySource(clip.frames))
            obj_id, (x, y) = next(iter(clip.clicks.items()))
            session.add_prompt(0, obj_id, points=[[x, y]], labels=[1])
            return session

        self.session, report.first_mask_s = _timed(open_and_click, self.device)
        for obj_id, (x, y) in list(clip.clicks.items())[1:]:
            self.session.add_prompt(0, obj_id, points=[[x, y]], labels=[1])
        self._frames = self.session.propagate("forward")

    def step(self) -> tuple[int, torch.Tensor]:
        result = next(self._frames)
        return result.frame_index, result.logits

    def close(self) -> None:
        self.session.close()


class _OfficialSide:
    """The official predictor on the same decoded frames (read back from a JPEG folder)."""

    def __init__(self, model, clip: BenchmarkClip, folder: Path, report: SideReport) -> None:
        self.device = model.device
        self.predictor = build_official_video_predictor(model.config, model.state_dict(), self.device)

        def open_and_click():
            state = self.predictor.init_state(str(folder))
            obj_id, (x, y) = next(iter(clip.clicks.items()))
            self.predictor.add_new_points_or_box(state, 0, obj_id, points=[[x, y]], labels=[1])
            return state

        with torch.inference_mode():
            self.state, report.first_mask_s = _timed(open_and_click, self.device)
            for obj_id, (x, y) in list(clip.clicks.items())[1:]:
                self.predictor.add_new_points_or_box(self.state, 0, obj_id, points=[[x, y]], labels=[1])
        self._frames = self.predictor.propagate_in_video(self.state)

    def step(self) -> tuple[int, torch.Tensor]:
        frame_index, _, logits = next(self._frames)
        return frame_index, logits[:, 0]

    def close(self) -> None:
        self._frames.close()


def _write_jpeg_folder(frames: np.ndarray, folder: Path) -> np.ndarray:
    """Write frames as JPEGs (the official predictor reads folders of .jpg only) and return them
    decoded again, so that both predictors see the very same RGB values."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for index, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"{index:05d}.jpg", quality=95)
    return np.stack(
        [np.asarray(Image.open(folder / f"{i:05d}.jpg").convert("RGB")) for i in range(len(frames))]
    )


def _cpu_model_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _peak_rss_mib() -> float:
    # Linux reports kibibytes, macOS bytes.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**20 if platform.system() == "Darwin" else 1024)


# ----------------------------------------------------------------------------------- command
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``sam2s benchmark``."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (
        "example:\n  sam2s benchmark --compare-official --model sam2.1_hiera_t --image-size 512 "
        "--frames 32 --objects 3 --json bench.json"
    )
    parser.add_argument(
        "--model", default="sam2.1_hiera_t", help="config name (random weights; default: %(default)s)"
    )
    parser.add_argument(
        "--image-size", type=int, default=None, help="model input size (default: the config's)"
    )
    parser.add_argument(
        "--frames",
        type=int,
        default=32,
        help="clip length; frames from num_maskmem (7) on are measured (default: %(default)s)",
    )
    parser.add_argument("--objects", type=int, default=1, help="objects tracked (default: %(default)s)")
    parser.add_argument(
        "--frame-size", default="480x640", help="HEIGHTxWIDTH of the clip (default: %(default)s)"
    )
    parser.add_argument(
        "--compare-official",
        action="store_true",
        help="also run the official SAM 2.1 video predictor (needs the sam2 package)",
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default: %(default)s)")
    parser.add_argument(
        "--threads", type=int, default=None, help="CPU threads for both predictors (default: PyTorch's)"
    )
    parser.add_argument(
        "--precision",
        choices=("float32", "bfloat16"),
        default="float32",
        help="the project's precision; bfloat16 is opt-in and changes the logits (default: %(default)s)",
    )
    parser.add_argument(
        "--kernels",
        choices=("onednn", "aten"),
        default=None,
        help="the project's CPU kernels (default: onednn unless SAM2S_CPU_KERNELS says otherwise)",
    )
    parser.add_argument(
        "--compile",
        default=None,
        choices=("default", "reduce-overhead", "max-autotune"),
        help="compile the project's image encoder with torch.compile in this mode (opt-in)",
    )
    parser.add_argument("--seed", type=int, default=0, help="weights and clip (default: %(default)s)")
    parser.add_argument("--json", type=Path, default=None, help="write the results to this JSON file")


def _frame_size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--frame-size must look like 480x640 (HEIGHTxWIDTH), got {text!r}") from None
    if height < 16 or width < 16:
        raise ValueError(f"--frame-size must be at least 16x16, got {text!r}")
    return height, width


def _alternate(
    sides: list, reports: list[SideReport], num_frames: int
) -> Iterator[list[tuple[int, torch.Tensor]]]:
    """Advance every side by one frame in turn; yields each frame's outputs (moved to the CPU
    after the timing, so reading them back is not counted)."""
    from tqdm import tqdm

    for _ in tqdm(range(num_frames), desc="benchmark", unit="frame", disable=None):
        outputs = []
        for side, report in zip(sides, reports):
            (frame_index, logits), seconds = _timed(side.step, side.device)
            report.frame_seconds.append(seconds)
            outputs.append((frame_index, logits.float().cpu()))
        yield outputs


def run(args: argparse.Namespace) -> int:
    """Run the benchmark and print (and optionally save) the results."""
    from sam2s.checkpoint import resolve_device
    from sam2s.config import load_config
    from sam2s.modeling import kernels

    height, width = _frame_size(args.frame_size)
    if args.objects < 1:
        raise ValueError(f"--objects must be at least 1, got {args.objects}")
    config = load_config(args.model)
    if args.compare_official:
        official_overrides(config)  # fails early, with its reason, for configs the official lacks
    num_maskmem = config.tracker.num_maskmem
    if args.frames <= num_maskmem:
        raise ValueError(
            f"--frames must exceed num_maskmem ({num_maskmem}) to measure frames with a full memory bank"
        )
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if args.kernels is not None:
        kernels.set_cpu_kernels(args.kernels)
    device = resolve_device(args.device)
    load_before = os.getloadavg()

    model = benchmark_model(args.model, args.image_size, seed=args.seed, device=device)
    clip = synthetic_clip(args.frames, args.objects, height, width, seed=args.seed)
    reports = [SideReport("project", full_bank_from=num_maskmem)]
    max_diff, mismatched, pixels = 0.0, 0, 0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with tempfile.TemporaryDirectory(prefix="sam2s-benchmark-") as folder:
        sides: list = []
        if args.compare_official:
            # Both predictors must see identical RGB values: the official one reads JPEGs.
            clip = BenchmarkClip(_write_jpeg_folder(clip.frames, Path(folder)), clip.clicks)
            reports.append(SideReport("official", full_bank_from=num_maskmem))
            official = _OfficialSide(model, clip, Path(folder), reports[1])
        project = _ProjectSide(model, clip, args.precision, reports[0], args.compile)
        sides = [project] + ([official] if args.compare_official else [])
        try:
            for outputs in _alternate(sides, reports, args.frames):
                if len(outputs) == 2:
                    (ours_index, ours), (theirs_index, theirs) = outputs
                    if ours_index != theirs_index:
                        raise RuntimeError(
                            f"the predictors yielded frames {ours_index} and {theirs_index} in the same step"
                        )
                    max_diff = max(max_diff, float((ours - theirs).abs().max()))
                    mismatched += int(((ours > 0) != (theirs > 0)).sum())
                    pixels += ours.numel()
        finally:
            for side in sides:
                side.close()

    results = {
        "model": args.model,
        "image_size": model.image_size,
        "frames": args.frames,
        "objects": args.objects,
        "frame_size": [height, width],
        "device": str(device),
        "precision": args.precision,
        "compile": args.compile,
        "cpu_kernels": kernels.get_cpu_kernels(),
        "threads": torch.get_num_threads(),
        "cpu": _cpu_model_name(),
        "torch": torch.__version__,
        "load_average": {"start": list(load_before), "end": list(os.getloadavg())},
        "full_bank_from_frame": num_maskmem,
        "peak_rss_mib": _peak_rss_mib(),
        "project": reports[0].summary(),
    }
    if device.type == "cuda":
        results["peak_gpu_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
        results["gpu"] = torch.cuda.get_device_name(device)
    if args.compare_official:
        results["official"] = reports[1].summary()
        results["speed_ratio"] = reports[1].s_per_frame / reports[0].s_per_frame
        results["max_logit_diff"] = max_diff
        results["mask_mismatch_fraction"] = mismatched / max(pixels, 1)
    _print_table(results, reports)
    if args.json is not None:
        write_json(args.json, results, sort_keys=False)
    return 0


def _print_table(results: dict, reports: list[SideReport]) -> None:
    print(
        f"{results['model']} at {results['image_size']} px, {results['objects']} object(s), "
        f"{results['frames']} frames of {results['frame_size'][1]}x{results['frame_size'][0]}, "
        f"{results['device']}, {results['threads']} thread(s), {results['precision']}, "
        f"CPU kernels {results['cpu_kernels']}"
    )
    print(
        f"CPU: {results['cpu']}; load average {results['load_average']['start'][0]:.2f} -> "
        f"{results['load_average']['end'][0]:.2f}"
    )
    print(
        f"{'predictor':<10} {'s/frame':>9} {'FPS':>7} {'first mask s':>13}   (median over frames >= "
        f"{results['full_bank_from_frame']})"
    )
    for report in reports:
        summary = results[report.name]
        print(
            f"{report.name:<10} {summary['s_per_frame']:>9.4f} {summary['fps']:>7.2f} {summary['first_mask_s']:>13.3f}"
        )
    print(f"peak RSS {results['peak_rss_mib']:.0f} MiB" + (" (both predictors)" if len(reports) > 1 else ""))
    if "peak_gpu_mib" in results:
        print(f"peak GPU memory {results['peak_gpu_mib']:.0f} MiB ({results['gpu']})")
    if "speed_ratio" in results:
        print(
            f"speed ratio (official / project): {results['speed_ratio']:.2f}x; "
            f"max |logit difference| {results['max_logit_diff']:.2e}; "
            f"mask pixels that differ {results['mask_mismatch_fraction']:.2e}"
        )


def main(argv: list[str] | None = None) -> int:
    """``python -m sam2s.benchmark`` (the same as ``sam2s benchmark``)."""
    parser = argparse.ArgumentParser(prog="sam2s benchmark", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
