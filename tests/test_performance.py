"""The fast inference path: same numbers as the plain path, bounded caches, no host reads in the
per-frame loop, and the ``sam2s benchmark`` command against the official predictor."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sam2s.benchmark import benchmark_model, synthetic_clip
from sam2s.benchmark import main as benchmark_main
from sam2s.data.sources import ArraySource
from sam2s.memory.sam2_window import SAM2WindowPolicy
from sam2s.modeling import kernels
from sam2s.modeling.memory_cache import MemoryAttentionCache
from sam2s.modeling.sam2 import MemoryFrame, MemoryInputs
from sam2s.predictor.prefetch import FramePrefetcher
from sam2s.predictor.video import VideoPredictor
from sam2s.semantics.vocabulary_bank import VocabularyBank


def _relative_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


# ------------------------------------------------------------------------------------- kernels
def test_fast_kernels_equal_pytorch_kernels_up_to_rounding():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 300, 96, generator=generator)
    weight, bias = torch.randn(160, 96, generator=generator), torch.randn(160, generator=generator)
    q = torch.randn(2, 3, 700, 32, generator=generator)
    k = torch.randn(2, 3, 900, 32, generator=generator)
    v = torch.randn(2, 3, 900, 16, generator=generator)  # values narrower than keys
    conv = kernels.Conv2d(96, 40, kernel_size=1)
    image = torch.randn(1, 96, 12, 20, generator=generator)
    with torch.no_grad():
        reference = [
            F.gelu(F.linear(x, weight, bias)),
            F.scaled_dot_product_attention(q, k, v),
            F.conv2d(image, conv.weight, conv.bias),
        ]
        with kernels.fast_kernels():
            assert kernels.use_fast_path(x) == kernels.onednn_available()
            fast = [
                kernels.linear(x, weight, bias, activation="gelu"),
                kernels.attention(q, k, v),
                conv(image),
            ]
    for got, expected in zip(fast, reference):
        assert got.shape == expected.shape
        assert _relative_diff(got, expected) < 1e-5


def test_fast_path_only_inside_the_block_without_autograd():
    x = torch.zeros(4, 8)
    with torch.no_grad():
        assert not kernels.use_fast_path(x)  # modules called directly keep PyTorch's kernels
        with kernels.fast_kernels():
            assert kernels.use_fast_path(x) == kernels.onednn_available()
            assert not kernels.use_fast_path(x.double())
            with kernels.cpu_kernels("aten"):
                assert not kernels.use_fast_path(x)
    with kernels.fast_kernels():
        assert not kernels.use_fast_path(x)  # autograd on: training uses PyTorch's kernels
    with pytest.raises(ValueError, match="CPU kernels must be one of"):
        kernels.set_cpu_kernels("mkl")


# -------------------------------------------------------------------------------- memory cache
def _memory_inputs(model, grid, frames, pointers: int, seed: int) -> MemoryInputs:
    generator = torch.Generator().manual_seed(seed)
    spatial = [
        MemoryFrame(features, slot, kind)
        for features, (slot, kind) in zip(
            frames, [(6, "conditioning"), (5, "short_term"), (4, "short_term"), (6, "long_term")]
        )
    ]
    ptrs = [(d + 1, torch.randn(1, model.hidden_dim, generator=generator)) for d in range(pointers)]
    return MemoryInputs(spatial, ptrs, pointer_time_span=15)


@pytest.mark.parametrize("name", ["sam2.1_hiera_mini", "sam2s_mini"])
def test_memory_attention_cache_equals_the_plain_path(name):
    model = benchmark_model(name)
    generator = torch.Generator().manual_seed(1)
    with torch.inference_mode():
        features = model.encode_image(
            torch.randn(1, 3, model.image_size, model.image_size, generator=generator)
        )
        memories = [
            torch.randn(1, model.mem_dim, *features.grid, generator=generator).bfloat16() for _ in range(6)
        ]
        cache = MemoryAttentionCache()
        # three frames: the window slides, so cached frames move to other temporal slots
        for step in range(3):
            memory = _memory_inputs(
                model, features.grid, memories[step : step + 4], pointers=step + 1, seed=step
            )
            expected = model.condition_on_memory(features, memory)
            with kernels.fast_kernels():
                got = cache.condition(model, features, memory)
            cache.end_frame()
            assert _relative_diff(got, expected) < 1e-5, step
            assert len(cache) == 4  # only the memories this frame attended
        # changed weights are noticed: the cache starts afresh
        with torch.no_grad():
            model.memory_attention.layers[0].cross_attn_image.k_proj.weight.mul_(2.0)
        expected = model.condition_on_memory(features, memory)
        assert _relative_diff(cache.condition(model, features, memory), expected) < 1e-5


def test_memory_attention_cache_passes_empty_memory_and_batches_to_the_model():
    model = benchmark_model("sam2.1_hiera_mini")
    with torch.inference_mode():
        features = model.encode_image(torch.zeros(1, 3, model.image_size, model.image_size))
        cache = MemoryAttentionCache()
        assert torch.equal(cache.condition(model, features, None), model.condition_on_memory(features, None))
        assert len(cache) == 0


# ---------------------------------------------------------------------------------- predictor
def _session(model, frames, **predictor_options):
    session = VideoPredictor(model, **predictor_options).start(ArraySource(frames))
    session.add_prompt(0, 1, points=[[20, 30]], labels=[1])
    session.add_prompt(0, 2, box=[40, 8, 60, 26])
    return session


def _tiny_clip(num_frames: int = 12) -> np.ndarray:
    return synthetic_clip(num_frames, 2, height=48, width=64, seed=3).frames


def test_fast_session_matches_pytorch_kernels_and_reading_ahead_changes_nothing():
    model = benchmark_model("sam2.1_hiera_mini", image_size=128, seed=2)
    frames = _tiny_clip()
    with kernels.cpu_kernels("aten"):
        reference = [r.logits for r in _session(model, frames, prefetch=0).propagate("both")]
    fast = [r.logits for r in _session(model, frames, prefetch=0).propagate("both")]
    read_ahead = [r.logits for r in _session(model, frames, prefetch=3).propagate("both")]
    assert len(reference) == len(fast) == len(read_ahead) == len(frames)
    for expected, got, ahead in zip(reference, fast, read_ahead):
        assert (got - expected).abs().max() <= 1e-4
        assert torch.equal(ahead, got)


class _NoHostReads:
    """Makes Tensor.item / .cpu() / .tolist() / .numpy() raise while active."""

    NAMES = ("item", "cpu", "tolist", "numpy")

    def __init__(self, monkeypatch) -> None:
        self.monkeypatch = monkeypatch
        self.active = False
        for name in self.NAMES:
            original = getattr(torch.Tensor, name)
            monkeypatch.setattr(torch.Tensor, name, self._guard(name, original))

    def _guard(self, name, original):
        guard = self

        def guarded(tensor, *args, **kwargs):
            if guard.active and threading.current_thread() is threading.main_thread():
                raise AssertionError(
                    f"Tensor.{name}() read a value back to the host inside the per-frame loop"
                )
            return original(tensor, *args, **kwargs)

        return guarded


def _propagate_without_host_reads(session, monkeypatch) -> list:
    guard = _NoHostReads(monkeypatch)
    results = []
    frames = session.propagate("forward")
    results.append(next(frames))  # starting a pass encodes the prompted frames' memories
    guard.active = True
    for result in frames:
        guard.active = False
        results.append(result)
        guard.active = True
    guard.active = False
    return results


def test_propagation_frames_read_nothing_back_to_the_host(monkeypatch):
    model = benchmark_model("sam2.1_hiera_mini", seed=4)
    session = _session(model, _tiny_clip(10))
    results = _propagate_without_host_reads(session, monkeypatch)
    assert [r.frame_index for r in results] == list(range(10))
    for result in results:
        assert result.logits.device == model.device and result.object_scores.device == model.device
    assert (results[-1].logits > 0).any()  # the objects are tracked, not absent


def test_sam2s_class_probabilities_stay_on_the_device(monkeypatch):
    # the TSL head without DiveMem: DiveMem's candidate rule reads two scores per frame
    model = benchmark_model("sam2s_mini", seed=5)
    names = ("grasper", "hook", "liver")
    embeddings = F.normalize(
        torch.randn(len(names), model.config.semantic.text_dim, generator=torch.Generator().manual_seed(0)),
        dim=-1,
    )
    model.set_vocabulary(VocabularyBank(names, embeddings, encoder_name="random-test"))
    session = _session(model, _tiny_clip(9), policy_factory=lambda: SAM2WindowPolicy(model.config.tracker))
    results = _propagate_without_host_reads(session, monkeypatch)
    last = results[-1]
    assert sorted(last.class_probabilities) == [1, 2]
    assert all(p.device == model.device and p.shape == (3,) for p in last.class_probabilities.values())
    scores = last.class_scores  # read on access
    assert list(scores[1]) == list(names) and abs(sum(scores[1].values()) - 1.0) < 1e-5


def test_held_bytes_count_the_attention_cache_and_stay_bounded():
    model = benchmark_model("sam2.1_hiera_mini", image_size=128, seed=6)
    session = _session(model, _tiny_clip(30), cache_frames=16)
    held = [session.held_bytes() for _ in session.propagate("forward")]
    cache_bytes = sum(t.untyped_storage().nbytes() for t in session._attention_cache.held_tensors())
    assert cache_bytes > 0 and len(session._attention_cache) == 2 * model.num_maskmem
    # flat once the recent-frame stores (16 frames) and the attention cache are full
    assert max(held[20:]) == held[17], held


# ---------------------------------------------------------------------------------- prefetcher
def test_prefetcher_reads_ahead_in_order_and_skips_unneeded_frames():
    reads: list[int] = []

    def prepare(index: int) -> torch.Tensor:
        reads.append(index)
        if index == 5:
            raise EOFError("stream ended")
        return torch.full((3, 2, 2), float(index))

    with FramePrefetcher(prepare, iter(range(10)), depth=2) as prefetcher:
        assert prefetcher.take(0)[0, 0, 0] == 0
        assert prefetcher.take(7) is None  # not scheduled yet: the caller reads it itself
        assert prefetcher.take(2)[0, 0, 0] == 2  # frame 1 was not needed
        assert prefetcher.take(3)[0, 0, 0] == 3
        with pytest.raises(EOFError):
            prefetcher.take(5)
    # in order, each frame at most once (frames 1 and 4 may be cancelled before their turn), and
    # never more than `depth` frames beyond the one taken last
    assert reads == sorted(set(reads)) and {0, 2, 3, 5} <= set(reads) and max(reads) <= 7


# ---------------------------------------------------------------------------------- benchmark
def test_benchmark_compares_with_the_official_predictor(tmp_path, capsys):
    pytest.importorskip("sam2", reason="the official sam2 package is part of the test environment")
    out = tmp_path / "bench.json"
    code = benchmark_main(
        [
            "--compare-official",
            "--model",
            "sam2.1_hiera_mini",
            "--frames",
            "9",
            "--objects",
            "2",
            "--frame-size",
            "60x80",
            "--threads",
            "1",
            "--json",
            str(out),
        ]
    )
    assert code == 0
    results = json.loads(out.read_text())
    assert results["max_logit_diff"] <= 1e-3
    assert results["mask_mismatch_fraction"] <= 1e-4
    assert results["speed_ratio"] > 0
    for side in ("project", "official"):
        assert results[side]["frames_measured"] == 9 - 7
        assert len(results[side]["frame_seconds"]) == 9
        assert results[side]["first_mask_s"] > 0
    assert results["peak_rss_mib"] > 0
    printed = capsys.readouterr().out
    assert "speed ratio (official / project)" in printed


def test_benchmark_alone_never_imports_the_official_package(tmp_path):
    # Through the ``sam2s`` command line, as users run it.
    script = (
        "import sys; from sam2s.cli import main; "
        f"assert main(['benchmark', '--model', 'sam2.1_hiera_mini', '--frames', '8', '--frame-size', '32x32', '--json', r'{tmp_path / 'b.json'}']) == 0; "
        "assert not any(m == 'sam2' or m.startswith('sam2.') for m in sys.modules), 'sam2 was imported'"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((tmp_path / "b.json").read_text())
    assert "speed_ratio" not in results and results["project"]["frames_measured"] == 1


def test_benchmark_rejects_bad_options():
    with pytest.raises(ValueError, match="must exceed num_maskmem"):
        benchmark_main(["--model", "sam2.1_hiera_mini", "--frames", "7"])
    with pytest.raises(ValueError, match="HEIGHTxWIDTH"):
        benchmark_main(["--model", "sam2.1_hiera_mini", "--frame-size", "big"])
    with pytest.raises(ValueError, match="SAM2S parts"):
        benchmark_main(["--model", "sam2s_mini", "--compare-official", "--frames", "9"])


# ---------------------------------------------------------------------------------------- GPU
@pytest.mark.gpu
def test_gpu_propagation_never_waits_for_the_device_and_matches_the_cpu(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # float32 convolutions, as on the CPU
    cpu_model = benchmark_model("sam2.1_hiera_mini", seed=7)
    frames = _tiny_clip(10)
    expected = [r.logits for r in _session(cpu_model, frames).propagate("forward")]
    model = benchmark_model("sam2.1_hiera_mini", seed=7, device="cuda")
    # CUDA's own check: any synchronising call inside a tracked frame raises
    session = _session(model, frames, autocast=False, prefetch=0)
    frames_iter = session.propagate("forward")
    results = [next(frames_iter)]
    for _ in range(len(frames) - 1):
        torch.cuda.set_sync_debug_mode("error")
        try:
            result = next(frames_iter)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        results.append(result)
    for result, reference in zip(results, expected):
        assert result.logits.is_cuda
        assert (result.logits.float().cpu() - reference).abs().max() <= 1e-3
    # reading ahead into pinned memory (the default on CUDA) changes nothing
    ahead = _session(model, frames, autocast=False)
    assert ahead.predictor.prefetch == 2
    for result, other in zip(results, ahead.propagate("forward")):
        assert torch.equal(result.logits, other.logits)


@pytest.mark.gpu
def test_gpu_bfloat16_autocast_stays_close_and_reads_nothing_back(monkeypatch):
    model = benchmark_model("sam2.1_hiera_mini", seed=8, device="cuda")
    frames = _tiny_clip(10)
    reference = [r.logits for r in _session(model, frames, autocast=False).propagate("forward")]
    results = _propagate_without_host_reads(_session(model, frames), monkeypatch)  # autocast on by default
    assert max(float((r.logits.float() - e).abs().max()) for r, e in zip(results[1:], reference[1:])) < 0.5


@pytest.mark.gpu
def test_gpu_benchmark_reports_fps_and_gpu_memory(tmp_path):
    out = tmp_path / "gpu.json"
    assert (
        benchmark_main(
            ["--model", "sam2.1_hiera_mini", "--device", "cuda", "--frames", "10", "--json", str(out)]
        )
        == 0
    )
    results = json.loads(out.read_text())
    assert results["project"]["fps"] > 0 and results["peak_gpu_mib"] > 0


@pytest.mark.gpu
def test_gpu_cuda_graph_image_encoder_gives_the_eager_numbers():
    model = benchmark_model("sam2.1_hiera_mini", seed=9, device="cuda")
    frames = _tiny_clip(10)
    eager = [r.logits for r in _session(model, frames, autocast=False).propagate("forward")]
    graphed = [
        r.logits
        for r in _session(model, frames, autocast=False, compile="reduce-overhead").propagate("forward")
    ]
    assert max(float((a - b).abs().max()) for a, b in zip(eager, graphed)) <= 1e-3
