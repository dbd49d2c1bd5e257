"""Train, evaluate and package the demo model shipped in ``bundle/models/model.pt``.

The demo model is ``sam2s_demo`` (sam2s/configs/sam2s_demo.yaml) trained from scratch on a CPU
on synthetic surgical videos, CT/MR volumes and single frames, then evaluated on a held-out
synthetic test set (another seed) against the baseline that copies the first-frame mask.

Steps (``all`` runs them in order)::

    python scripts/train_demo_model.py data       # write the data under --data-dir
    python scripts/train_demo_model.py train      # bootstrap + main phase into --run-dir (resumes)
    python scripts/train_demo_model.py package    # bundle/models/: model.pt (float16), config, training log
    python scripts/train_demo_model.py evaluate   # the shipped model.pt: J&F (1 and 3 clicks), baseline,
                                                  # volume Dice -> bundle/models/metrics.json

Two training processes (one thread each) share the work with ``torchrun``::

    torchrun --nproc_per_node 2 scripts/train_demo_model.py train --threads 1 --batch-size 2
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sam2s.training.demo import (
    FirstMaskBaseline,
    evaluate_videos,
    evaluate_volume,
    package_demo_model,
    small_check,
    write_demo_data,
    write_json,
)

BUNDLE_MODELS = REPO / "bundle" / "models"
CONFIG_YAML = REPO / "sam2s" / "configs" / "sam2s_demo.yaml"
TRAIN_COMMAND_FILE = "train_command.txt"


def demo_train_config(args: argparse.Namespace, phase: str = "main"):
    """The training config of one phase: ``"bootstrap"`` (tracking only) or ``"main"``.

    Learned from scratch, memory-based tracking does not start while prompts are mostly clicks
    and boxes (whose first masks are poor) and many samples are single images: the model settles
    on empty masks for every tracked frame. The bootstrap phase therefore trains on consecutive
    video and volume clips whose first frame is given as a mask, so every memory it reads is
    right; the main phase then continues from its weights with the full SAM2S recipe.
    """
    from sam2s.training import TrainConfig

    data = write_demo_data(args.data_dir)
    bootstrap = phase == "bootstrap"
    steps = args.bootstrap_steps if bootstrap else args.steps
    config = TrainConfig().to_dict()
    config.update(
        model="sam2s_demo",
        vocabulary="minilm",
        out_dir=str(args.run_dir / "bootstrap" if bootstrap else args.run_dir),
        init_checkpoint=None if bootstrap or not args.bootstrap_steps else str(bootstrap_weights(args)),
        steps=steps,
        batch_size=args.batch_size,
        seed=1 if bootstrap else 0,
        device="cpu",
        log_every=20,
        checkpoint_every=100,
        threads=args.threads,
    )
    config["data"].update(
        videos=[str(data.train_videos)], volumes=[str(data.train_volumes)], images=[str(data.train_images)]
    )
    # 3 objects per clip, 8-frame clips, DiveMem hybrid 1:1 with contiguous clips, volumes as a
    # quarter of the sequences. Two departures from the paper's recipe, for a model learned from
    # scratch in an hour of CPU: images 2:3 instead of 1:4 (a one-frame clip costs a sixth of a
    # video clip and is where clicks are learned), and 2 correction clicks instead of SAM 2's 7.
    config["sampling"].update(num_frames=8, max_objects=3, volume_fraction=0.25, image_fraction=0.4)
    config["prompts"].update(correction_clicks=2)
    if bootstrap:
        config["sampling"].update(hybrid=False, image_fraction=0.0)
        config["prompts"].update(prob_mask=1.0, prob_box=0.0)
    # From scratch: a much larger learning rate than the paper's fine-tuning 1e-5, no layer decay.
    config["optim"].update(
        lr=args.lr,
        image_encoder_lr=args.lr,
        layer_decay=1.0,
        weight_decay=0.05,
        warmup_steps=min(200, steps // 10) if bootstrap else min(100, steps // 20),
        min_lr_ratio=0.5 if bootstrap else 0.05,
        grad_clip=1.0,
    )
    return TrainConfig.from_dict(config)


def bootstrap_weights(args: argparse.Namespace) -> Path:
    return args.run_dir / "bootstrap" / "model_final.pt"


def command_data(args: argparse.Namespace) -> None:
    data = write_demo_data(args.data_dir)
    print(json.dumps({k: str(v) for k, v in data.__dict__.items()}, indent=2))


def command_train(args: argparse.Namespace) -> None:
    from sam2s.training import Trainer, init_distributed

    config = demo_train_config(args, "main")
    context = init_distributed(config.device)
    if context.is_main:  # the evaluation records how its weights were made
        launcher = "torchrun --nproc_per_node {} ".format(context.world_size) if context.is_distributed else "python "
        command = launcher + " ".join(["scripts/train_demo_model.py", *sys.argv[1:]])
        args.run_dir.mkdir(parents=True, exist_ok=True)
        (args.run_dir / TRAIN_COMMAND_FILE).write_text(command + "\n")
    try:
        if args.bootstrap_steps:
            bootstrap = demo_train_config(args, "bootstrap")
            Trainer(bootstrap, context, progress=not args.no_progress).train(resume="auto")
            context.barrier()
        Trainer(config, context, progress=not args.no_progress).train(resume="auto")
    finally:
        context.shutdown()


def command_evaluate(args: argparse.Namespace) -> dict:
    import torch

    import sam2s

    if args.threads:
        torch.set_num_threads(args.threads)
    data = write_demo_data(args.data_dir)
    weights = Path(args.weights) if args.weights else BUNDLE_MODELS / "model.pt"

    def predictor():
        return sam2s.VideoPredictor(sam2s.build_model("sam2s_demo", checkpoint=weights))

    start = time.perf_counter()
    metrics: dict = {"weights": str(weights), "test_set": str(data.test_videos)}
    metrics["jf"] = evaluate_videos(predictor, data.test_videos, ["1click", "3click", "mask"])
    metrics["baseline_first_mask_jf"] = evaluate_videos(FirstMaskBaseline, data.test_videos, ["mask"])["mask"]
    volume_scores = []
    for case in range(args.volumes):
        volume_scores += evaluate_volume(predictor(), data.test_volumes, case)
    metrics["volume_dice"] = [score.__dict__ for score in volume_scores]
    ct = [s.dice for s in volume_scores if s.case.endswith(("000", "002", "004", "006"))]  # even cases are CT
    metrics["ct_mean_dice"] = float(sum(ct) / len(ct)) if ct else None
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        metrics["ci_check"] = small_check(sam2s.build_model("sam2s_demo", checkpoint=weights), scratch)
    metrics["evaluation_seconds"] = round(time.perf_counter() - start, 1)
    recorded = args.run_dir / TRAIN_COMMAND_FILE
    metrics["commands"] = {
        "data": "python scripts/train_demo_model.py data",
        "train": recorded.read_text().strip() if recorded.is_file() else None,
        "evaluate": "python scripts/train_demo_model.py evaluate",
    }
    print(json.dumps(metrics, indent=2))
    write_json(args.run_dir / "metrics.json", metrics)
    if not args.weights:
        write_json(BUNDLE_MODELS / "metrics.json", metrics)
    return metrics


def command_package(args: argparse.Namespace) -> None:
    BUNDLE_MODELS.mkdir(parents=True, exist_ok=True)
    target = package_demo_model(args.run_dir / "model_final.pt", BUNDLE_MODELS / "model.pt", CONFIG_YAML)
    copies = (
        ("bootstrap/train.log", "training_log_bootstrap.txt"),
        ("bootstrap/metrics.jsonl", "training_metrics_bootstrap.jsonl"),
        ("train.log", "training_log.txt"),
        ("metrics.jsonl", "training_metrics.jsonl"),
        (TRAIN_COMMAND_FILE, TRAIN_COMMAND_FILE),
    )
    for name, new_name in copies:
        if (args.run_dir / name).is_file():
            shutil.copyfile(args.run_dir / name, BUNDLE_MODELS / new_name)
    print(f"packaged {target} ({target.stat().st_size / 2**20:.1f} MiB)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["data", "train", "evaluate", "package", "all"])
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/sam2s_demo_data"))
    parser.add_argument("--run-dir", type=Path, default=Path("/tmp/sam2s_demo_run"))
    parser.add_argument("--steps", type=int, default=5000, help="steps of the main phase")
    parser.add_argument(
        "--bootstrap-steps", type=int, default=1500, help="steps of the tracking-only first phase (0: none)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=1, help="global batch (a multiple of the processes)"
    )
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per process")
    parser.add_argument("--weights", help="weights to evaluate (default: the shipped bundle/models/model.pt)")
    parser.add_argument("--volumes", type=int, default=4, help="test volumes to score")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    commands = {
        "data": [command_data],
        "train": [command_train],
        "evaluate": [command_evaluate],
        "package": [command_package],
        "all": [command_data, command_train, command_package, command_evaluate],
    }
    for command in commands[args.command]:
        command(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
