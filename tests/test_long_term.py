"""The long-term benchmark (port swaps, return frames, scores) and the ablation script end to end."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from sam2s.data.datasets import VideoDataset
from sam2s.data.synthetic import SyntheticVideo, SyntheticVideoConfig
from sam2s.evaluation import evaluate
from sam2s.evaluation.long_term import long_term_scores, return_frames, write_long_term_benchmark
from sam2s.training.demo import FirstMaskBaseline

REPO = Path(__file__).resolve().parent.parent


def _long_config(**changes) -> SyntheticVideoConfig:
    options = {"num_frames": 1200, "height": 48, "width": 48, "long": True, "num_instruments": 3, "num_tissues": 1}
    options.update(changes)
    return SyntheticVideoConfig(**options)


def test_port_swap_trades_ports_while_both_are_out():
    swapped = SyntheticVideo(_long_config(port_swap=True), seed=0)
    plain = SyntheticVideo(_long_config(), seed=0)
    t = swapped.port_swap_frame
    assert t is not None and plain.port_swap_frame is None
    first, second = swapped._tracks[:2]
    # Both are out on the swap frame, so the trade is never seen happening.
    assert first.presence[t] == 0 and second.presence[t] == 0
    np.testing.assert_array_equal(first.entry[t], plain._tracks[1].entry[0])
    np.testing.assert_array_equal(second.entry[t], plain._tracks[0].entry[0])
    # Up to the swap the two videos are the same.
    for index in (0, t // 2, t - 1):
        np.testing.assert_array_equal(swapped.frame(index).image, plain.frame(index).image)
    # After it, the first instrument comes back through the second one's port.
    back = t + int(np.argmax(first.presence[t:] == 1))
    assert first.presence[back] == 1
    assert not np.array_equal(swapped.frame(back).masks[0], plain.frame(back).masks[0])


def test_port_swap_needs_long_mode_and_two_instruments():
    with pytest.raises(ValueError, match="port_swap needs long mode"):
        SyntheticVideoConfig(num_frames=48, port_swap=True)
    with pytest.raises(ValueError, match="port_swap needs long mode"):
        SyntheticVideoConfig(num_frames=400, long=True, num_instruments=1, port_swap=True)


@pytest.mark.parametrize(
    ("present", "expected"),
    [
        ("0110011010", "0000011010"),
        ("1111", "0000"),
        ("0011", "0000"),
        ("1010", "0010"),
        ("", ""),
    ],
)
def test_return_frames_are_present_frames_after_a_loss(present, expected):
    result = return_frames([c == "1" for c in present])
    assert "".join("1" if v else "0" for v in result) == expected


class _GroundTruthPredictor:
    """Answers every frame with the ground truth: the scores' upper bound."""

    def __init__(self, dataset: VideoDataset) -> None:
        self.dataset = dataset

    def start(self, source: str):
        from types import SimpleNamespace

        record = next(r for r in self.dataset.records if str(r.frame_dir) == source)
        dataset = self.dataset

        class _Session:
            def add_prompt(self, **_):
                return None

            def propagate(self, direction="forward", start_frame=None, max_frames=None):
                frames = range(start_frame or 0, record.num_frames)
                for count, index in enumerate(frames):
                    if max_frames is not None and count >= max_frames:
                        return
                    labels = dataset.read_label_map(record, index)
                    ids = sorted(int(i) for i in record.object_ids)
                    yield SimpleNamespace(
                        frame_index=index, obj_ids=ids, masks=np.stack([labels == i for i in ids])
                    )

        return _Session()


@pytest.fixture(scope="module")
def long_benchmark(tmp_path_factory):
    root = tmp_path_factory.mktemp("long_term")
    # 900 frames: the test video's first instrument leaves and comes back
    return write_long_term_benchmark(root, train_videos=0, test_videos=1, num_frames=900, size=32, progress=False)


def test_benchmark_scores_ground_truth_perfectly_and_a_still_mask_worse(long_benchmark):
    test = VideoDataset(long_benchmark.test)
    swaps = json.loads((long_benchmark.test / "port_swaps.json").read_text())
    assert set(swaps) == {"long_000"}

    perfect = long_term_scores(evaluate(lambda: _GroundTruthPredictor(test), test, "mask", progress=False), test)
    assert perfect.jf == pytest.approx(1.0)
    assert perfect.jf_after_return == pytest.approx(1.0)
    assert perfect.jf_tissue == pytest.approx(1.0)
    assert perfect.returning_objects >= 1 and perfect.tissue_objects == 2

    still = long_term_scores(evaluate(FirstMaskBaseline, test, "mask", progress=False), test)
    assert still.jf < 0.9
    assert still.jf_after_return < 0.6  # a returning instrument is rarely where it was first seen


def _load_ablation_script():
    spec = importlib.util.spec_from_file_location("ablation_script", REPO / "scripts" / "ablation.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_ablation_script_trains_evaluates_and_reports(tmp_path):
    ablation = _load_ablation_script()
    common = [
        "--data-dir", str(tmp_path / "data"), "--out-dir", str(tmp_path / "runs"),
        "--variants", "sam2", "sam2s", "--seeds", "0",
        "--size", "64", "--frames", "400", "--train-videos", "1", "--test-videos", "1",
        "--init-weights", "none", "--steps", "2", "--batch-size", "1",
        "--protocol", "1click", "--no-progress",
    ]  # fmt: skip
    assert ablation.main(["all", *common]) == 0

    rows = json.loads((tmp_path / "runs" / "results.json").read_text())
    assert [(r["variant"], r["seed"]) for r in rows] == [("sam2", 0), ("sam2s", 0)]
    assert all(0.0 <= r["jf"] <= 1.0 for r in rows)
    sam2s_log = (tmp_path / "runs" / "sam2s" / "seed_0" / "train.log").read_text()
    assert "ARL on, TSL on, DiveMem on" in sam2s_log
    sam2_log = (tmp_path / "runs" / "sam2" / "seed_0" / "train.log").read_text()
    assert "ARL off, TSL off, DiveMem off" in sam2_log and "tsl 0.0000" in sam2_log
    table = (tmp_path / "runs" / "ablation.md").read_text(encoding="utf-8")
    assert "| SAM 2 memory | 0 |" in table and "(SAM2S) | 0 |" in table
    assert (tmp_path / "runs" / "ablation.png").stat().st_size > 1000

    # A second run finds everything done and reuses the cached scores.
    before = (tmp_path / "runs" / "sam2" / "seed_0" / "long_term_scores_1click.json").stat().st_mtime_ns
    assert ablation.main(["all", *common]) == 0
    assert (tmp_path / "runs" / "sam2" / "seed_0" / "long_term_scores_1click.json").stat().st_mtime_ns == before


def test_ablation_table_reports_mean_and_half_range():
    ablation = _load_ablation_script()
    rows = [
        {"variant": "sam2", "seed": 0, "jf": 0.5, "jf_after_return": 0.2, "jf_tissue": math.nan},
        {"variant": "sam2", "seed": 1, "jf": 0.7, "jf_after_return": 0.4, "jf_tissue": 0.9},
    ]
    table = ablation.report_table(rows)
    assert "| SAM 2 memory | 0, 1 | 60.0 ± 10.0 (50.0 / 70.0) | 30.0 ± 10.0 (20.0 / 40.0) | 90.0 |" in table


def test_ablation_rows_differ_only_in_their_switched_parts(tmp_path):
    """Same data, steps and seed for every row; memory, TSL, ARL and hybrid clips as the row says.
    By default the paper's four rows run; the contiguous-clip DiveMem row only when asked for."""
    ablation = _load_ablation_script()
    args = ablation.build_parser().parse_args(["train", "--out-dir", str(tmp_path), "--steps", "10"])
    assert args.variants == ["sam2", "divemem", "divemem_tsl", "sam2s"]

    configs = {name: ablation.train_config(args, variant, 0, tmp_path / "videos")
               for name, variant in ablation.VARIANTS.items()}  # fmt: skip
    switched = {
        name: (c.model_overrides["divemem.enabled"], c.model_overrides["semantic.enabled"], c.model_overrides["arl"],
               c.sampling.hybrid)
        for name, c in configs.items()
    }  # fmt: skip
    assert switched == {
        "sam2": (False, False, False, False),
        "divemem": (True, False, False, True),
        "divemem_tsl": (True, True, False, True),
        "sam2s": (True, True, True, True),
        "divemem_contiguous": (True, False, False, False),
    }
    common = {(c.steps, c.seed, tuple(c.data.videos), c.init_checkpoint) for c in configs.values()}
    assert len(common) == 1
