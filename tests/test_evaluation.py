"""Evaluation: J/F against vos-benchmark, aggregation rules, click protocol, runner, reports."""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from vos_benchmark.evaluator import Evaluator
from vos_benchmark.utils import _seg2bmap

from sam2s.data.datasets import VideoDataset, read_label_png
from sam2s.data.synthetic import write_synthetic_dataset
from sam2s.evaluation import frame_jf
from sam2s.evaluation.aggregate import BenchmarkScore, SubsetScore, VideoScorer, score_video
from sam2s.evaluation.clicks import box_from_mask, first_click, mask_centre, next_click, parse_protocol
from sam2s.evaluation.metrics import boundary_map, boundary_tolerance, dice
from sam2s.evaluation.report import write_report
from sam2s.evaluation.runner import add_arguments, discover_subsets, evaluate, run

# ----------------------------------------------------------------------------------------------
# metrics
# ----------------------------------------------------------------------------------------------


def reference_jf(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    """J and F of object 1 computed by vos-benchmark's own Evaluator."""
    evaluator = Evaluator()
    evaluator.objects_in_gt.add(1)  # so that an object absent from both masks is still scored
    evaluator.feed_frame(pred.astype(np.uint8), gt.astype(np.uint8))
    return float(evaluator.object_iou[1][0]), float(evaluator.boundary_f[1][0])


def disk(shape, cy, cx, r):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def square(shape, top, left, size):
    mask = np.zeros(shape, bool)
    mask[top : top + size, left : left + size] = True
    return mask


SHAPE = (61, 83)  # odd sizes; tolerance ceil(0.008 * 103) = 1


@pytest.mark.parametrize(
    "pred, gt",
    [
        pytest.param(disk(SHAPE, 30, 40, 12), disk(SHAPE, 30, 40, 12), id="identical disks"),
        pytest.param(disk(SHAPE, 30, 40, 12), disk(SHAPE, 31, 41, 12), id="disks shifted 1"),
        pytest.param(disk(SHAPE, 30, 40, 12), disk(SHAPE, 33, 44, 12), id="disks shifted 5"),
        pytest.param(disk(SHAPE, 30, 40, 12), disk(SHAPE, 30, 60, 12), id="disks shifted 20"),
        pytest.param(np.zeros(SHAPE, bool), disk(SHAPE, 30, 40, 12), id="empty prediction"),
        pytest.param(disk(SHAPE, 30, 40, 12), np.zeros(SHAPE, bool), id="empty gt"),
        pytest.param(np.zeros(SHAPE, bool), np.zeros(SHAPE, bool), id="both empty"),
        pytest.param(np.ones(SHAPE, bool), np.ones(SHAPE, bool), id="full frame"),
        pytest.param(np.ones(SHAPE, bool), disk(SHAPE, 30, 40, 20), id="full frame vs disk"),
        pytest.param(square(SHAPE, 10, 10, 3), square(SHAPE, 10, 10, 3), id="3x3 identical"),
        pytest.param(square(SHAPE, 10, 10, 3), square(SHAPE, 11, 12, 3), id="3x3 shifted"),
        pytest.param(square(SHAPE, 0, 0, 3), square(SHAPE, 58, 80, 3), id="3x3 corners"),
        pytest.param(disk((7, 5), 3, 2, 2), disk((7, 5), 4, 2, 2), id="tiny odd frame"),
        pytest.param(disk((1, 9), 0, 4, 2), disk((1, 9), 0, 5, 2), id="single row"),
    ],
)
def test_frame_jf_matches_vos_benchmark(pred, gt):
    j, f = frame_jf(pred, gt)
    ref_j, ref_f = reference_jf(pred, gt)
    assert j == pytest.approx(ref_j, abs=1e-6)
    assert f == pytest.approx(ref_f, abs=1e-6)
    assert 0.0 <= j <= 1.0 and 0.0 <= f <= 1.0


def test_frame_jf_known_values():
    assert frame_jf(np.zeros(SHAPE, bool), np.zeros(SHAPE, bool)) == (1.0, 1.0)
    assert frame_jf(np.zeros(SHAPE, bool), disk(SHAPE, 30, 40, 5)) == (0.0, 0.0)
    # A shift within the boundary tolerance keeps F = 1 while J drops.
    j, f = frame_jf(square(SHAPE, 10, 10, 8), square(SHAPE, 10, 11, 8))
    assert j == pytest.approx(56 / 72) and f == 1.0


def test_frame_jf_random_masks_and_large_frame():
    from scipy import ndimage

    rng = np.random.default_rng(0)
    for _ in range(40):
        h, w = rng.integers(2, 70, size=2)
        pred = ndimage.gaussian_filter(rng.random((h, w)), rng.uniform(0.5, 3)) > rng.uniform(0.35, 0.65)
        gt = ndimage.gaussian_filter(rng.random((h, w)), rng.uniform(0.5, 3)) > rng.uniform(0.35, 0.65)
        np.testing.assert_allclose(frame_jf(pred, gt), reference_jf(pred, gt), atol=1e-6)
    # 480p: tolerance ceil(0.008 * 999.8) = 8 pixels, exercising the distance-based dilation.
    big = (480, 877)
    pred, gt = disk(big, 200, 400, 120), disk(big, 207, 395, 118)
    assert boundary_tolerance(big) == 8.0
    np.testing.assert_allclose(frame_jf(pred, gt), reference_jf(pred, gt), atol=1e-6)


def test_boundary_map_matches_seg2bmap():
    rng = np.random.default_rng(1)
    for shape in [(5, 7), (1, 6), (6, 1), (20, 13)]:
        mask = rng.random(shape) > 0.5
        np.testing.assert_array_equal(boundary_map(mask), _seg2bmap(mask.copy()))
    # A k x k square away from the edges has 4k boundary pixels.
    assert boundary_map(square((20, 20), 5, 5, 4)).sum() == 16


def test_frame_jf_rejects_bad_shapes():
    with pytest.raises(ValueError, match="differ in size"):
        frame_jf(np.zeros((4, 4), bool), np.zeros((4, 5), bool))
    with pytest.raises(ValueError, match="2D"):
        frame_jf(np.zeros((2, 4, 4), bool), np.zeros((2, 4, 4), bool))


# ----------------------------------------------------------------------------------------------
# aggregation
# ----------------------------------------------------------------------------------------------

AGG = (40, 40)  # tolerance 1 pixel


def labels(*objects: tuple[int, np.ndarray]) -> np.ndarray:
    out = np.zeros(AGG, np.int64)
    for obj_id, mask in objects:
        out[mask] = obj_id
    return out


A = square(AGG, 5, 5, 4)  # object 1's place
B = square(AGG, 25, 25, 4)  # object 2's place
FAR = square(AGG, 5, 30, 4)  # far from both


def video_a():
    """Two objects; object 2 appears at frame 2. Frames 0 and 4 are not scored."""
    gt = [
        labels((1, A)),
        labels((1, A)),
        labels((1, A), (2, B)),
        labels((1, A), (2, B)),
        labels((1, A), (2, B)),
    ]
    pred = [
        labels(),  # skipped
        labels((1, A)),  # obj 1 perfect
        labels((1, A)),  # obj 1 perfect; obj 2 missed: J = F = 0
        labels((1, A), (1, FAR), (2, B)),  # obj 1 plus a far blob: J = 1/2, F = 2/3; obj 2 perfect
        labels((2, A)),  # skipped
    ]
    return [(t, p, g) for t, (p, g) in enumerate(zip(pred, gt))]


def video_b():
    """Object 1 missed, then absent from both (J = F = 1); object 3 exists only in the prediction."""
    gt = [labels((1, A)), labels((1, A)), labels(), labels((1, A))]
    pred = [labels((1, A)), labels((3, B)), labels(), labels((1, A))]
    return [(t, p, g) for t, (p, g) in enumerate(zip(pred, gt))]


def test_aggregation_hand_computed():
    a = score_video("a", video_a(), categories={1: "grasper"})
    b = score_video("b", video_b())
    c = score_video("c", [(t, labels((1, A)), labels((1, A))) for t in range(6)])

    obj1, obj2 = a.objects
    assert obj1.frame_indices == (1, 2, 3) and obj1.category == "grasper"
    assert obj1.j == pytest.approx((1 + 1 + 0.5) / 3)
    assert obj1.f == pytest.approx((1 + 1 + 2 / 3) / 3)
    assert obj2.frame_indices == (2, 3)  # scored from its first appearance
    assert (obj2.j, obj2.f) == (0.5, 0.5)
    jf_a = ((2.5 / 3 + (2 + 2 / 3) / 3) / 2 + 0.5) / 2
    assert a.jf == pytest.approx(jf_a)

    assert [o.obj_id for o in b.objects] == [1]  # object 3 only in the prediction: not reported
    assert b.objects[0].j_per_frame == (0.0, 1.0) and b.jf == pytest.approx(0.5)
    assert c.jf == 1.0

    s1 = SubsetScore("s1", (a, b))
    s2 = SubsetScore("s2", (c,))
    overall = BenchmarkScore((s1, s2))
    assert s1.jf == pytest.approx((jf_a + 0.5) / 2)
    assert s1.object_jf == pytest.approx((obj1.jf + 0.5 + 0.5) / 3)
    assert overall.jf == pytest.approx(((jf_a + 0.5) / 2 + 1.0) / 2)
    frames, values = a.per_frame_jf()
    assert frames == (1, 2, 3) and values[0] == 1.0 and values[1] == pytest.approx(0.5)


@pytest.mark.parametrize("make_video", [video_a, video_b])
def test_aggregation_matches_vos_benchmark_evaluator(make_video):
    frames = make_video()
    evaluator = Evaluator()
    for _, pred, gt in frames[1:-1]:
        evaluator.feed_frame(pred, gt)
    ref_j, ref_f = evaluator.conclude()
    ours = score_video("v", frames)
    assert {o.obj_id for o in ours.objects} == set(ref_j)
    for obj in ours.objects:
        assert 100 * obj.j == pytest.approx(ref_j[obj.obj_id], abs=1e-6)
        assert 100 * obj.f == pytest.approx(ref_f[obj.obj_id], abs=1e-6)


def test_scorer_edge_cases():
    scorer = VideoScorer("v")
    scorer.add_frame(3, labels(), labels())
    with pytest.raises(ValueError, match="increasing"):
        scorer.add_frame(3, labels(), labels())
    short = score_video("short", video_a()[:2])  # nothing left after skipping the ends
    assert short.objects == () and math.isnan(short.jf)
    assert SubsetScore("s", (short, score_video("c", video_b()))).jf == pytest.approx(0.5)
    everything = score_video("all", video_a(), skip_first_and_last=False)
    assert everything.objects[0].frame_indices == (0, 1, 2, 3, 4)


# ----------------------------------------------------------------------------------------------
# clicks
# ----------------------------------------------------------------------------------------------


def test_mask_centre_and_first_click():
    rect = np.zeros((30, 40), bool)
    rect[10:15, 20:29] = True  # 9 wide, 5 tall
    assert mask_centre(rect) == (24, 12)
    corner = np.zeros((30, 40), bool)
    corner[0:10, 0:10] = True  # the image border counts as boundary
    assert mask_centre(corner) == (4, 4)
    ell = np.zeros((30, 30), bool)
    ell[2:28, 2:8] = True  # thin vertical bar
    ell[18:28, 2:28] = True  # thick foot
    x, y = mask_centre(ell)
    assert 18 <= y < 28 and ell[y, x]  # inside the thick foot, not the thin bar
    click = first_click(rect)
    assert click.positive and click.label == 1 and (click.x, click.y) == (24, 12)
    with pytest.raises(ValueError, match="empty"):
        first_click(np.zeros((5, 5), bool))


def test_next_click_picks_largest_error_region():
    gt = np.zeros((40, 40), bool)
    gt[5:25, 5:25] = True
    assert next_click(gt, gt) is None

    pred = gt.copy()
    pred[5:8, 5:8] = False  # 9 missed pixels
    pred[30:35, 30:35] = True  # 25 false-positive pixels
    click = next_click(pred, gt)
    assert not click.positive and click.label == 0 and (click.x, click.y) == (32, 32)

    pred = gt.copy()
    pred[10:20, 10:20] = False  # 100 missed pixels beat the 25 false positives
    pred[30:35, 30:35] = True
    click = next_click(pred, gt)
    assert click.positive and (click.x, click.y) == (14, 14)

    # Equal sizes: the false negative wins.
    pred = gt.copy()
    pred[5:9, 5:9] = False
    pred[30:34, 30:34] = True
    assert next_click(pred, gt).positive

    # Diagonal neighbours are one region (8-connectivity): 2 + 2 diagonal pixels beat 3 pixels.
    gt = np.zeros((20, 20), bool)
    pred = np.zeros((20, 20), bool)
    pred[[2, 3, 4, 5], [2, 3, 4, 5]] = True
    pred[10, 10:13] = True
    click = next_click(pred, gt)
    assert not click.positive and click.y < 6


def test_box_and_protocols():
    gt = np.zeros((20, 30), bool)
    gt[3:9, 11:20] = True
    assert box_from_mask(gt) == (11, 3, 19, 8)
    assert parse_protocol("3click").num_clicks == 3
    assert parse_protocol("box").kind == "box"
    with pytest.raises(ValueError, match="choose one of"):
        parse_protocol("7click")


# ----------------------------------------------------------------------------------------------
# runner
# ----------------------------------------------------------------------------------------------


@dataclass
class FakeOutput:
    frame_index: int
    obj_ids: list[int]
    masks: np.ndarray


class FakeSession:
    """A session with the public predictor API whose masks are the ground truth shifted right.

    The shift shrinks with every extra click (4, 3, 2, 1, 0 pixels), so more clicks score better;
    a box gives a 3-pixel shift and a mask prompt the exact ground truth.
    """

    def __init__(self, source: str) -> None:
        self.frame_dir = Path(source)
        self.annotations = self.frame_dir.parent.parent / "Annotations" / self.frame_dir.name
        self.num_frames = len(list(self.frame_dir.glob("*.jpg")))
        self.prompts: dict[int, dict] = {}
        self.calls: list[tuple] = []

    def add_prompt(self, frame_index, obj_id, points=None, labels=None, box=None, mask=None):
        self.calls.append(
            ("add_prompt", frame_index, obj_id, points, labels, box is not None, mask is not None)
        )
        self.prompts[obj_id] = {
            "frame": frame_index,
            "points": points,
            "labels": labels,
            "box": box,
            "mask": mask,
        }

    def _shift(self, obj_id):
        prompt = self.prompts[obj_id]
        if prompt["mask"] is not None:
            return 0
        if prompt["box"] is not None:
            return 3
        return max(0, 5 - len(prompt["points"]))

    def propagate(self, direction="forward", start_frame=None, max_frames=None):
        self.calls.append(("propagate", direction, start_frame, max_frames))
        assert direction == "forward"
        first = min(p["frame"] for p in self.prompts.values())
        start = first if start_frame is None else start_frame
        stop = self.num_frames if max_frames is None else min(self.num_frames, start + max_frames)
        obj_ids = sorted(self.prompts)
        for t in range(start, stop):
            gt = read_label_png(self.annotations / f"{t:05d}.png")
            masks = np.zeros((len(obj_ids), *gt.shape), bool)
            for k, obj_id in enumerate(obj_ids):
                if t >= self.prompts[obj_id]["frame"]:
                    masks[k] = np.roll(gt == obj_id, self._shift(obj_id), axis=1)
            yield FakeOutput(t, obj_ids, masks)


class FakePredictor:
    def __init__(self) -> None:
        self.sessions: list[FakeSession] = []

    def start(self, source):
        session = FakeSession(source)
        self.sessions.append(session)
        return session


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("eval_data")
    write_synthetic_dataset(root, num_videos=2, num_frames=10, height=48, width=64, seed=5, progress=False)
    return root


def test_evaluate_protocols_with_fake_predictor(synthetic_root, tmp_path):
    dataset = VideoDataset(synthetic_root)
    results = {}
    predictors = {}
    for protocol in ("1click", "3click", "5click", "box", "mask"):
        predictors[protocol] = FakePredictor()
        results[protocol] = evaluate(lambda p=protocol: predictors[p], dataset, protocol, progress=False)
    three_click_predictor = predictors["3click"]
    assert results["mask"].jf == pytest.approx(1.0)
    assert results["1click"].jf < results["box"].jf < results["3click"].jf < results["5click"].jf
    assert results["5click"].jf == pytest.approx(1.0)  # the fifth click makes the fake exact

    result = results["3click"]
    (subset,) = result.scores.subsets
    assert [v.name for v in subset.videos] == ["synth_000", "synth_001"]
    for video in subset.videos:
        assert video.num_frames == 10 and video.seconds > 0 and video.fps > 0
        assert {o.obj_id for o in video.objects} <= set(dataset.record(video.name).object_ids)
        assert all(o.category is not None for o in video.objects)

    # Three clicks per object on its first frame: the first at the gt centre, the next ones
    # from the model's mask on that frame (the gt shifted by 4, then 3 pixels).
    session = three_click_predictor.sessions[0]
    record = dataset.record("synth_000")
    prompts = {p.obj_id: p for p in result.prompts["synth_000"]}
    assert set(prompts) == set(record.object_ids)
    for obj_id, prompt in prompts.items():
        gt = dataset.read_label_map(record, prompt.frame_index) == obj_id
        expected = [first_click(gt)]
        for shift in (4, 3):
            expected.append(next_click(np.roll(gt, shift, axis=1), gt))
        assert prompt.points == tuple((c.x, c.y) for c in expected)
        assert prompt.labels == tuple(c.label for c in expected)
    late = [p for p in prompts.values() if p.frame_index > 0]
    assert late, (
        "the synthetic video has an instrument entering after frame 0; it is prompted where it appears"
    )
    assert ("propagate", "forward", 0, 1) in session.calls
    cumulative = [c for c in session.calls if c[0] == "add_prompt" and c[2] == 1]
    assert [len(c[3]) for c in cumulative] == [1, 2, 3]


def test_runner_scores_equal_vos_benchmark_on_saved_masks(synthetic_root, tmp_path):
    dataset = VideoDataset(synthetic_root)
    result = evaluate(FakePredictor, dataset, "1click", save_masks_to=tmp_path / "masks", progress=False)
    video = result.scores.subsets[0].videos[0]
    pred_dir = tmp_path / "masks" / synthetic_root.name / video.name
    gt_dir = synthetic_root / "Annotations" / video.name
    names = sorted(p.name for p in gt_dir.glob("*.png"))
    assert sorted(p.name for p in pred_dir.glob("*.png")) == names
    evaluator = Evaluator()
    for name in names[1:-1]:
        evaluator.feed_frame(np.array(Image.open(pred_dir / name)), np.array(Image.open(gt_dir / name)))
    ref_j, ref_f = evaluator.conclude()
    assert {o.obj_id for o in video.objects} == set(ref_j)
    for obj in video.objects:
        assert 100 * obj.j == pytest.approx(ref_j[obj.obj_id], abs=1e-6)
        assert 100 * obj.f == pytest.approx(ref_f[obj.obj_id], abs=1e-6)


def test_multi_subset_report_and_cli(synthetic_root, tmp_path, monkeypatch):
    import sam2s

    benchmark = tmp_path / "bench"
    benchmark.mkdir()
    (benchmark / "endovis").symlink_to(synthetic_root, target_is_directory=True)
    write_synthetic_dataset(
        benchmark / "cholec", num_videos=1, num_frames=6, height=32, width=40, seed=9, progress=False
    )
    subsets = discover_subsets(benchmark)
    assert sorted(subsets) == ["cholec", "endovis"]

    built = {}

    def fake_build_model(name, checkpoint=None, device="cpu"):
        built.update(name=name, checkpoint=checkpoint, device=device)
        return object()

    monkeypatch.setattr(sam2s, "build_model", fake_build_model, raising=False)
    monkeypatch.setattr(sam2s, "VideoPredictor", lambda model: FakePredictor(), raising=False)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    out = tmp_path / "report"
    args = parser.parse_args([str(benchmark), "--protocol", "box", "--checkpoint", "none", "--out", str(out)])
    assert run(args) == 0
    assert built == {"name": "sam2s_demo", "checkpoint": None, "device": "cpu"}

    report = json.loads((out / "results.json").read_text())
    assert report["protocol"] == "box" and [s["name"] for s in report["subsets"]] == ["cholec", "endovis"]
    subset_jf = [s["jf"] for s in report["subsets"]]
    assert report["jf"] == pytest.approx(sum(subset_jf) / 2, abs=1e-5)
    assert 0 < report["jf"] < 1
    markdown = (out / "results.md").read_text()
    assert "| subset | videos | J&F |" in markdown and "| cholec |" in markdown and "**average**" in markdown
    with Image.open(out / "per_frame_jf.png") as plot:
        assert plot.format == "PNG" and plot.width > 100
    assert not list(out.glob(".*tmp*"))


def test_write_report_handles_unscored_video(tmp_path):
    from sam2s.evaluation.runner import EvaluationResult

    empty = score_video("empty", video_a()[:2])
    result = EvaluationResult(
        "3click", BenchmarkScore((SubsetScore("s", (empty, score_video("a", video_a()))),))
    )
    files = write_report(result, tmp_path)
    data = json.loads(files.json.read_text())
    assert data["subsets"][0]["videos"][0]["jf"] is None
    assert "n/a" in files.markdown.read_text()


@pytest.mark.slow
def test_evaluate_with_the_real_video_predictor(tmp_path):
    """The runner drives the project's own predictor through the public API (random mini model)."""
    import sam2s
    from sam2s.data.synthetic import SyntheticVideo, SyntheticVideoConfig, write_davis_video

    config = SyntheticVideoConfig(num_frames=3, height=32, width=32, num_instruments=0, num_tissues=1)
    write_davis_video(SyntheticVideo(config, seed=1), tmp_path, "clip", progress=False)
    model = sam2s.build_model("sam2.1_hiera_mini", checkpoint=None, device="cpu")
    result = evaluate(lambda: sam2s.VideoPredictor(model), VideoDataset(tmp_path), "3click", progress=False)
    (video,) = result.scores.subsets[0].videos
    assert video.num_frames == 3 and video.fps > 0
    (obj,) = video.objects
    assert obj.obj_id == 1 and obj.frame_indices == (1,)
    assert 0.0 <= obj.jf <= 1.0
    (prompt,) = result.prompts["clip"]
    assert prompt.frame_index == 0 and 1 <= len(prompt.points) <= 3


def test_dice_of_volumes_and_empty_masks():
    a = np.zeros((2, 4, 4), bool)
    b = np.zeros((2, 4, 4), bool)
    assert dice(a, b) == 1.0  # both empty
    a[0, :2] = True  # 8 voxels
    b[0, 1:3] = True  # 8 voxels, 4 shared
    assert dice(a, b) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="differ in size"):
        dice(a, b[0])
