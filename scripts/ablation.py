"""Does each SAM2S part earn its place? Train and evaluate the paper's ablation on synthetic data.

Four models of one size (``sam2s_demo``) fine-tuned from the same weights, on the same long-term
training videos, for the same number of steps:

==================  ============  ===============  =====  =====
variant             memory        hybrid sampling  TSL    ARL
==================  ============  ===============  =====  =====
sam2                SAM 2 window  off              off    off
divemem             DiveMem       on               off    off
divemem_tsl         DiveMem       on               on     off
sam2s               DiveMem       on               on     on
divemem_contiguous  DiveMem       off              off    off
==================  ============  ===============  =====  =====

The last row is not in the paper's ablation and runs only when named in ``--variants``: it tells
what DiveMem's memory does apart from the hybrid clips it is trained with.

Each is scored on the fixed test split of the long-term benchmark
(:mod:`sam2s.evaluation.long_term`): J&F overall, J&F on the frames after an object's return and
J&F of the tissue objects, with the paper's first-frame click protocol.

Steps (``all`` runs them in order; each skips what is already done, so a run can be resumed)::

    python scripts/ablation.py data       # the benchmark under --data-dir
    python scripts/ablation.py train      # every variant x seed under --out-dir/<variant>/seed_<n>
    python scripts/ablation.py evaluate   # each model on the test split -> --out-dir/results.json
    python scripts/ablation.py report     # --out-dir/ablation.md (table) and ablation.png

Two training processes share the work with ``torchrun``::

    torchrun --nproc_per_node 2 scripts/ablation.py train --threads 1 --batch-size 2
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sam2s.writers.base import write_atomically, write_json

log = logging.getLogger("sam2s.ablation")


@dataclass(frozen=True)
class Variant:
    """One row of the ablation: which SAM2S parts are on, and how its training clips are drawn."""

    name: str
    label: str
    divemem: bool
    tsl: bool
    arl: bool
    hybrid_sampling: bool  # hybrid clips (recent frames + frames from far back) mixed 1:1 with contiguous ones

    def model_overrides(self) -> dict[str, bool]:
        return {"divemem.enabled": self.divemem, "semantic.enabled": self.tsl, "arl": self.arl}


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("sam2", "SAM 2 memory", divemem=False, tsl=False, arl=False, hybrid_sampling=False),
        Variant("divemem", "+ DiveMem", divemem=True, tsl=False, arl=False, hybrid_sampling=True),
        Variant("divemem_tsl", "+ DiveMem + TSL", divemem=True, tsl=True, arl=False, hybrid_sampling=True),
        Variant("sam2s", "+ DiveMem + TSL + ARL (SAM2S)", divemem=True, tsl=True, arl=True, hybrid_sampling=True),
        # A diagnostic row, not in the paper's ablation: DiveMem trained on contiguous clips only,
        # to separate what the memory does from what hybrid sampling does.
        Variant(
            "divemem_contiguous", "+ DiveMem, contiguous clips", divemem=True, tsl=False, arl=False,
            hybrid_sampling=False,
        ),
    )
}

#: The paper's four rows, what ``--variants`` runs by default.
PAPER_VARIANTS = ["sam2", "divemem", "divemem_tsl", "sam2s"]

RESULTS_FILE = "results.json"


def score_file(args: argparse.Namespace) -> str:
    """Cached scores of one model, per protocol and DiveMem threshold."""
    threshold = "" if args.iou_threshold is None else f"_iou{args.iou_threshold:g}"
    return f"long_term_scores_{args.protocol}{threshold}.json"


def row_key(row: dict) -> tuple:
    return row["variant"], row["seed"], row["protocol"], row.get("iou_threshold")


def image_overrides(args: argparse.Namespace) -> dict:
    """The model's input size follows the benchmark's frame size."""
    return {"image_size": args.size, "memory_attention.feat_sizes": [args.size // 16] * 2}


def run_dir(args: argparse.Namespace, variant: str, seed: int) -> Path:
    return args.out_dir / variant / f"seed_{seed}"


def benchmark(args: argparse.Namespace):
    from sam2s.evaluation.long_term import write_long_term_benchmark

    return write_long_term_benchmark(
        args.data_dir,
        train_videos=args.train_videos,
        test_videos=args.test_videos,
        num_frames=args.frames,
        size=args.size,
        progress=not args.no_progress,
    )


def train_config(args: argparse.Namespace, variant: Variant, seed: int, train_videos: Path):
    """One variant's fine-tuning run: identical for all four but for the switched parts."""
    from sam2s.training import TrainConfig

    config = TrainConfig(
        model=args.model,
        model_overrides={**image_overrides(args), **variant.model_overrides()},
        init_checkpoint=str(args.init_weights) if args.init_weights else None,
        vocabulary=args.vocabulary if variant.tsl else None,
        out_dir=str(run_dir(args, variant.name, seed)),
        steps=args.steps,
        batch_size=args.batch_size,
        seed=seed,
        device=args.device,
        log_every=20,
        checkpoint_every=200,
        threads=args.threads,
    )
    return config.replace(
        **{
            "data.videos": [str(train_videos)],
            "sampling.num_frames": 8,
            "sampling.max_objects": 3,
            "sampling.image_fraction": 0.0,
            "sampling.hybrid": variant.hybrid_sampling,
            "prompts.correction_clicks": 2,
            "optim.lr": args.lr,
            "optim.image_encoder_lr": args.lr,
            "optim.layer_decay": 0.9,
            "optim.weight_decay": 0.05,
            "optim.warmup_steps": min(100, args.steps // 10),
            "optim.grad_clip": 1.0,
        }
    )


def selected(args: argparse.Namespace) -> list[Variant]:
    return [VARIANTS[name] for name in args.variants]


def command_data(args: argparse.Namespace) -> None:
    data = benchmark(args)
    print(json.dumps({"train": str(data.train), "test": str(data.test)}, indent=2))


def command_train(args: argparse.Namespace) -> None:
    from sam2s.training import Trainer, init_distributed

    context = init_distributed(args.device)
    train_videos = benchmark(args).train
    try:
        for variant in selected(args):
            for seed in args.seeds:
                if (run_dir(args, variant.name, seed) / "model_final.pt").is_file():
                    if context.is_main:
                        log.info("%s seed %d: already trained", variant.name, seed)
                    continue
                config = train_config(args, variant, seed, train_videos)
                Trainer(config, context, progress=not args.no_progress).train(resume="auto")
                context.barrier()
    finally:
        context.shutdown()


def command_evaluate(args: argparse.Namespace) -> list[dict]:
    import torch

    import sam2s
    from sam2s.data.datasets import VideoDataset
    from sam2s.evaluation import evaluate
    from sam2s.evaluation.long_term import long_term_scores

    if args.threads:
        torch.set_num_threads(args.threads)
    test = VideoDataset(benchmark(args).test)
    rows = []
    for variant in selected(args):
        for seed in args.seeds:
            folder = run_dir(args, variant.name, seed)
            cached = folder / score_file(args)
            if cached.is_file():
                rows.append(json.loads(cached.read_text()))
                continue
            weights = folder / "model_final.pt"
            if not weights.is_file():
                raise FileNotFoundError(f"{weights} is missing: run `scripts/ablation.py train` first")
            overrides = {**image_overrides(args), **variant.model_overrides()}
            if variant.divemem and args.iou_threshold is not None:
                overrides["divemem.iou_threshold"] = args.iou_threshold
            model = sam2s.build_model(args.model, checkpoint=weights, **overrides)
            result = evaluate(
                lambda model=model: sam2s.VideoPredictor(model),
                test,
                args.protocol,
                progress=not args.no_progress,
            )
            score = long_term_scores(result, test)
            row = {
                "variant": variant.name,
                "seed": seed,
                "protocol": args.protocol,
                "iou_threshold": args.iou_threshold if variant.divemem else None,
                **asdict(score),
            }
            log.info("%s seed %d: %s", variant.name, seed, row)
            write_json(cached, row)
            rows.append(row)
    # Merge with earlier evaluations (other variants, seeds, protocols or thresholds).
    results = args.out_dir / RESULTS_FILE
    earlier = json.loads(results.read_text()) if results.is_file() else []
    fresh = {row_key(r) for r in rows}
    write_json(results, [r for r in earlier if row_key(r) not in fresh] + rows)
    return rows


METRICS = (("jf", "J&F"), ("jf_after_return", "J&F after a return"), ("jf_tissue", "J&F tissue"))


def _summary(per_seed: list[float]) -> str:
    """``mean ± half-range (seed a / seed b ...)`` in %; NaN (no such object) is left out of both."""
    values = [v for v in per_seed if not math.isnan(v)]
    if not values:
        return "n/a"
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{100 * mean:.1f}"
    spread = (max(values) - min(values)) / 2
    each_seed = " / ".join("n/a" if math.isnan(v) else f"{100 * v:.1f}" for v in per_seed)
    return f"{100 * mean:.1f} ± {100 * spread:.1f} ({each_seed})"


def _groups(rows: list[dict]) -> list[tuple[str, list[dict]]]:
    """Rows grouped by variant (table order) and DiveMem threshold, with a label for each group;
    each group's rows in seed order."""
    groups = []
    for name, variant in VARIANTS.items():
        thresholds = sorted({r.get("iou_threshold") for r in rows if r["variant"] == name}, key=lambda g: g or 1.0)
        for threshold in reversed(thresholds):  # the paper's γ first
            mine = [r for r in rows if r["variant"] == name and r.get("iou_threshold") == threshold]
            mine.sort(key=lambda r: r["seed"])
            label = variant.label if threshold is None else f"{variant.label}, γ = {threshold:g}"
            groups.append((label, mine))
    return groups


def report_table(rows: list[dict]) -> str:
    """Markdown table: per variant, mean ± half-range over seeds of each metric (in %), then each
    seed's value in the order of the seeds column."""
    header = "| model | seeds | " + " | ".join(title for _, title in METRICS) + " |"
    lines = [header, "|" + "---|" * (2 + len(METRICS))]
    for label, mine in _groups(rows):
        seeds = ", ".join(str(r["seed"]) for r in mine)
        cells = [_summary([r[key] for r in mine]) for key, _ in METRICS]
        lines.append(f"| {label} | {seeds} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> Path | None:
    """Bars of the seed means with each seed as a dot, one panel per metric."""
    from monai.utils import optional_import

    pyplot, has_matplotlib = optional_import("matplotlib.pyplot")
    if not has_matplotlib:
        log.warning("matplotlib is missing: no plot")
        return None
    import matplotlib

    matplotlib.use("Agg")
    groups = _groups(rows)
    figure, axes = pyplot.subplots(1, len(METRICS), figsize=(4 * len(METRICS), 4.2), sharey=True)
    for axis, (key, title) in zip(axes, METRICS):
        for x, (_, mine) in enumerate(groups):
            values = [r[key] for r in mine if not math.isnan(r[key])]
            if values:
                axis.bar(x, sum(values) / len(values), color="#7aa6c2")
                axis.scatter([x] * len(values), values, color="black", s=12, zorder=3)
        axis.set_xticks(range(len(groups)), [label for label, _ in groups], rotation=35, ha="right", fontsize=7)
        axis.set_title(title)
        axis.set_ylim(0, 1)
    axes[0].set_ylabel("J&F")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    pyplot.close(figure)
    return path


def command_report(args: argparse.Namespace) -> str:
    results = args.out_dir / RESULTS_FILE
    if not results.is_file():
        raise FileNotFoundError(f"{results} is missing: run `scripts/ablation.py evaluate` first")
    rows = json.loads(results.read_text())
    table = report_table(rows)
    text = (
        f"Ablation on the synthetic long-term benchmark ({args.protocol}; mean ± half-range over seeds, "
        "then each seed, %)\n\n"
        + table
    )
    write_atomically(args.out_dir / "ablation.md", lambda handle: handle.write(text.encode()))
    plot(rows, args.out_dir / "ablation.png")
    print(text)
    return table


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["data", "train", "evaluate", "report", "all"])
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/sam2s_long_term"))
    parser.add_argument("--out-dir", type=Path, default=Path("/tmp/sam2s_ablation"))
    parser.add_argument(
        "--variants", nargs="+", choices=list(VARIANTS), default=PAPER_VARIANTS,
        help="rows to run (default: the paper's four; divemem_contiguous is a diagnostic row)",
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--model", default="sam2s_demo", help="model config of all four (default sam2s_demo)")
    parser.add_argument(
        "--init-weights",
        type=Path,
        default=REPO / "bundle" / "models" / "model.pt",
        help="weights every variant starts from (default: the shipped demo model); 'none' trains from scratch",
    )
    parser.add_argument("--vocabulary", default="minilm", help="class bank of the TSL variants")
    parser.add_argument("--steps", type=int, default=3000, help="training steps per model")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per process")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--train-videos", type=int, default=24)
    parser.add_argument("--test-videos", type=int, default=4)
    parser.add_argument("--frames", type=int, default=1000, help="frames per benchmark video (>= 400)")
    parser.add_argument("--size", type=int, default=128, help="frame size and model input size")
    parser.add_argument("--protocol", default="3click", help="first-frame prompts of the evaluation")
    parser.add_argument(
        "--iou-threshold",
        type=float,
        help="evaluate the DiveMem rows with this long-term admission threshold γ instead of the config's 0.95",
    )
    parser.add_argument("--no-progress", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if str(args.init_weights).lower() == "none":
        args.init_weights = None
    elif not args.init_weights.is_file():
        raise SystemExit(
            f"--init-weights {args.init_weights} does not exist: train the demo model first "
            "(scripts/train_demo_model.py) or pass other weights, or 'none' to train from scratch"
        )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    commands = {
        "data": [command_data],
        "train": [command_train],
        "evaluate": [command_evaluate],
        "report": [command_report],
        "all": [command_data, command_train, command_evaluate, command_report],
    }
    for command in commands[args.command]:
        command(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
