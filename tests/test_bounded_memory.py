"""Memory held by a session does not grow with the number of frames it has tracked."""

from __future__ import annotations

import numpy as np

from sam2s.data.sources import ArraySource
from sam2s.predictor.video import Session, VideoPredictor
from tests.parity import parity_model


def _moving_disk(num_frames: int, size: int = 64) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    frames = np.full((num_frames, size, size, 3), 90, np.uint8)
    for t in range(num_frames):
        cx = 20 + 12 * np.sin(t / 15)
        frames[t][(xx - cx) ** 2 + (yy - 32) ** 2 < 8**2] = (210, 60, 50)
    return frames


def _held_after(num_frames: int, predictor: VideoPredictor) -> tuple[int, int]:
    session = Session(predictor, ArraySource(_moving_disk(num_frames)))
    session.add_prompt(0, 1, points=[[20, 32]], labels=[1])
    session.add_prompt(0, 2, box=[40, 10, 60, 30])
    peak = 0
    for _ in session.propagate("forward"):
        peak = max(peak, session.held_bytes())
    return peak, sum(len(obj.memory.recent) for obj in session.objects.values())


def test_held_bytes_are_the_same_for_50_and_400_frames():
    predictor = VideoPredictor(parity_model("sam2.1_hiera_mini", seed=1), cache_frames=24)
    short_peak, short_cached = _held_after(50, predictor)
    long_peak, long_cached = _held_after(400, predictor)
    assert short_cached == long_cached == 2 * 24
    assert long_peak <= short_peak * 1.02, (short_peak, long_peak)
