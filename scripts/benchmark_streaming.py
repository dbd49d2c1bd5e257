"""Streaming benchmark: do memory, start-up time or per-frame time grow with the video's length?

Writes a synthetic MP4 of each length (default 200 and 2,000 frames), then, each in a fresh
process, opens it with ``sam2.1_hiera_mini`` (random weights), prompts two objects on frame 0
and propagates to the end. Prints, side by side: peak RSS, time to the first mask, the bytes of
tensors the session holds at its peak, the per-frame time around frame 100 and over the last
frames, the resident memory at frame 100 and at the end, and their growth from the shortest to
the longest video.

``--divemem`` switches on DiveMem's long-term memory (on a SAM 2.1 config this makes it a SAM2S
model with DiveMem only); ``--config`` picks any config (``sam2s_mini`` has DiveMem and TSL).

    .venv/bin/python scripts/benchmark_streaming.py [--frames 200 2000] [--config sam2.1_hiera_mini]
        [--divemem] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# per-frame time and resident memory are read around this frame and over this many last frames
EARLY_FRAME = 100
WINDOW = 50


def write_video(path: Path, num_frames: int, size: int = 128) -> None:
    import av

    yy, xx = np.mgrid[:size, :size]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for t in range(num_frames):
            frame = np.full((size, size, 3), 90, np.uint8)
            cx = size / 2 + size / 4 * np.sin(t / 40)
            frame[(xx - cx) ** 2 + (yy - size / 2) ** 2 < (size / 8) ** 2] = (210, 60, 50)
            frame[(np.abs(xx - size * 0.75) < size / 10) & (np.abs(yy - size / 4) < size / 12)] = (60, 200, 80)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def current_rss_mib() -> float:
    """Resident memory now (Linux), not the peak."""
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def measure(video: str, config: str, divemem: bool, threads: int | None) -> dict:
    """Runs in a child process so that its peak RSS is its own."""
    import torch

    import sam2s

    if threads is not None:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = sam2s.build_model(config, **({"divemem.enabled": True} if divemem else {}))
    if model.config.divemem.enabled:
        # Random weights predict a mediocre IoU, so DiveMem's candidate rule (IoU > 0.95 on 5
        # frames in a row) would never fire and its bank would stay empty: make the IoU head
        # and the object-score head confident so the long-term bank fills and turns over.
        decoder = model.sam_mask_decoder
        with torch.no_grad():
            decoder.iou_prediction_head.layers[-1].weight.mul_(0.05)
            decoder.iou_prediction_head.layers[-1].bias.fill_(6.0)
            decoder.pred_obj_score_head.layers[-1].weight.mul_(40.0)
            decoder.pred_obj_score_head.layers[-1].bias.fill_(6.0)
    session = sam2s.VideoPredictor(model).start(video)
    size = session.width
    started = time.perf_counter()
    session.add_prompt(0, 1, points=[[size / 2, size / 2]], labels=[1])
    session.add_prompt(0, 2, box=[size * 0.65, size * 0.17, size * 0.85, size * 0.33])
    first_mask_s = None
    peak_held, frame_seconds, rss = 0, [], []
    last = time.perf_counter()
    for _ in session.propagate("forward"):
        now = time.perf_counter()
        if first_mask_s is None:
            first_mask_s = now - started
        frame_seconds.append(now - last)
        rss.append(current_rss_mib())
        peak_held = max(peak_held, session.held_bytes())
        last = time.perf_counter()  # the bookkeeping above is not the predictor's time
    total_s = time.perf_counter() - started
    frames = len(frame_seconds)
    early = slice(max(1, EARLY_FRAME - WINDOW // 2), min(frames, EARLY_FRAME + WINDOW // 2))
    return {
        "frames": frames,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "first_mask_s": first_mask_s,
        "held_mib": peak_held / 2**20,
        "s_per_frame": total_s / max(frames, 1),
        "s_per_frame_early": statistics.median(frame_seconds[early]),
        "s_per_frame_end": statistics.median(frame_seconds[-WINDOW:]),
        "rss_early_mib": rss[min(EARLY_FRAME, frames - 1)],
        "rss_end_mib": rss[-1],
        "long_term": _long_term_frames(session),
    }


def _long_term_frames(session) -> list[int]:
    """Frames in the first object's DiveMem long-term bank at the end (empty without DiveMem)."""
    policy = next(iter(session.objects.values())).policy
    return [memory.frame_index for memory in getattr(policy, "long_term", [])]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, nargs="+", default=[200, 2000])
    parser.add_argument("--config", default="sam2.1_hiera_mini")
    parser.add_argument("--divemem", action="store_true", help="switch on DiveMem's long-term memory")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: PyTorch's)")
    parser.add_argument("--child", nargs=2, metavar=("VIDEO", "CONFIG"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(*args.child, divemem=args.divemem, threads=args.threads)))
        return 0
    if min(args.frames) <= EARLY_FRAME + WINDOW // 2:
        parser.error(f"--frames must all exceed {EARLY_FRAME + WINDOW // 2} (per-frame time is read around frame {EARLY_FRAME})")
    options = (["--divemem"] if args.divemem else []) + ([f"--threads={args.threads}"] if args.threads else [])
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for count in args.frames:
            video = Path(folder) / f"clip_{count}.mp4"
            write_video(video, count)
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(video), args.config, *options],
                check=True, capture_output=True, text=True,
            )
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"config {args.config}{' + DiveMem' if args.divemem else ''}")
    print(f"{'frames':>8} {'peak RSS MiB':>13} {'first mask s':>13} {'held MiB':>9} {'s/frame':>8} "
          f"{'s/frame@100':>12} {'s/frame@end':>12} {'RSS@100':>8} {'RSS@end':>8}  long-term bank")
    for row in rows:
        print(f"{row['frames']:>8} {row['peak_rss_mib']:>13.1f} {row['first_mask_s']:>13.3f} "
              f"{row['held_mib']:>9.2f} {row['s_per_frame']:>8.4f} {row['s_per_frame_early']:>12.4f} "
              f"{row['s_per_frame_end']:>12.4f} {row['rss_early_mib']:>8.1f} {row['rss_end_mib']:>8.1f}  "
              f"{row['long_term']}")
    first, last = rows[0], rows[-1]
    print(f"growth {first['frames']} -> {last['frames']} frames: "
          f"peak RSS x{last['peak_rss_mib'] / first['peak_rss_mib']:.3f}, "
          f"held bytes x{last['held_mib'] / first['held_mib']:.3f}, "
          f"time to first mask x{last['first_mask_s'] / first['first_mask_s']:.3f}")
    print(f"within the {last['frames']}-frame run, frame {EARLY_FRAME} -> end: "
          f"s/frame x{last['s_per_frame_end'] / last['s_per_frame_early']:.3f}, "
          f"RSS {last['rss_early_mib']:.1f} -> {last['rss_end_mib']:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
