"""Streaming benchmark: does memory or start-up time grow with the video's length?

Writes a synthetic MP4 of each length (default 200 and 2,000 frames), then, each in a fresh
process, opens it with ``sam2.1_hiera_mini`` (random weights), prompts two objects on frame 0
and propagates to the end. Prints, side by side: peak RSS, time to the first mask, the bytes of
tensors the session holds at its peak, and their growth from the shortest to the longest video.

    .venv/bin/python scripts/benchmark_streaming.py [--frames 200 2000] [--config sam2.1_hiera_mini]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


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


def measure(video: str, config: str) -> dict:
    """Runs in a child process so that its peak RSS is its own."""
    import torch

    import sam2s

    torch.manual_seed(0)
    model = sam2s.build_model(config)
    session = sam2s.VideoPredictor(model).start(video)
    size = session.width
    started = time.perf_counter()
    session.add_prompt(0, 1, points=[[size / 2, size / 2]], labels=[1])
    session.add_prompt(0, 2, box=[size * 0.65, size * 0.17, size * 0.85, size * 0.33])
    first_mask_s = None
    peak_held, frames = 0, 0
    for _ in session.propagate("forward"):
        if first_mask_s is None:
            first_mask_s = time.perf_counter() - started
        peak_held = max(peak_held, session.held_bytes())
        frames += 1
    total_s = time.perf_counter() - started
    return {
        "frames": frames,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "first_mask_s": first_mask_s,
        "held_mib": peak_held / 2**20,
        "s_per_frame": total_s / max(frames, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, nargs="+", default=[200, 2000])
    parser.add_argument("--config", default="sam2.1_hiera_mini")
    parser.add_argument("--child", nargs=2, metavar=("VIDEO", "CONFIG"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(*args.child)))
        return 0
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for count in args.frames:
            video = Path(folder) / f"clip_{count}.mp4"
            write_video(video, count)
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(video), args.config],
                check=True, capture_output=True, text=True,
            )
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"{'frames':>8} {'peak RSS MiB':>13} {'first mask s':>13} {'held MiB':>9} {'s/frame':>8}")
    for row in rows:
        print(f"{row['frames']:>8} {row['peak_rss_mib']:>13.1f} {row['first_mask_s']:>13.3f} "
              f"{row['held_mib']:>9.2f} {row['s_per_frame']:>8.4f}")
    first, last = rows[0], rows[-1]
    print(f"growth {first['frames']} -> {last['frames']} frames: "
          f"peak RSS x{last['peak_rss_mib'] / first['peak_rss_mib']:.3f}, "
          f"held bytes x{last['held_mib'] / first['held_mib']:.3f}, "
          f"time to first mask x{last['first_mask_s'] / first['first_mask_s']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
