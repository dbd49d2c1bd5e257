"""DiveMem's memory policy on crafted object-score / IoU sequences (no network involved)."""

from __future__ import annotations

import gc
import io
import weakref

import pytest
import torch

from sam2s.config import DiveMemConfig, TrackerConfig, load_config
from sam2s.memory import DiveMemPolicy, SAM2WindowPolicy, build_memory_policy
from sam2s.memory.base import FrameMemory, ObjectMemory, RecentFrameCache
from sam2s.memory.divemem import least_similar

EMBED_DIM = 8


def make_frame(
    t: int, score: float = 5.0, iou: float = 0.99, embedding: torch.Tensor | None = None
) -> FrameMemory:
    if embedding is None:
        embedding = torch.ones(EMBED_DIM)
    return FrameMemory(
        frame_index=t,
        features=torch.zeros(1, 64, 2, 2, dtype=torch.bfloat16),
        obj_ptr=torch.full((1, 256), float(t)),
        object_score=torch.tensor([[score]]),
        iou_score=torch.tensor([[iou]]),
        low_res_logits=torch.zeros(1, 1, 8, 8),
        image_embedding=embedding,
    )


def axis(i: int) -> torch.Tensor:
    vector = torch.zeros(EMBED_DIM)
    vector[i] = 1.0
    return vector


class Tracker:
    """Plays a session's part: select, then store, then observe, frame after frame."""

    def __init__(
        self, config: DiveMemConfig | None = None, cache: int = 64, tracker: TrackerConfig | None = None
    ):
        self.policy = DiveMemPolicy(tracker or TrackerConfig(), config or DiveMemConfig(enabled=True))
        self.memory = ObjectMemory(recent=RecentFrameCache(cache))
        self.memory.conditioning[0] = make_frame(0, embedding=axis(0))
        self.selections = {}

    def step(self, frame: FrameMemory, reverse: bool = False, num_frames: int | None = None) -> None:
        self.selections[frame.frame_index] = self.policy.select(
            self.memory, frame.frame_index, reverse, num_frames
        )
        self.memory.recent.put(frame)
        self.policy.observe(self.memory, frame, reverse)

    def bank_indices(self) -> list[int]:
        return [m.frame_index for m in self.policy.long_term_bank(self.memory)]


def test_four_confident_frames_add_nothing_and_the_fifth_is_the_first_candidate():
    run = Tracker()
    for t in range(1, 5):
        run.step(make_frame(t))
    assert run.policy.candidates == [] and list(run.policy.long_term) == []
    run.step(make_frame(5))
    assert [c.frame_index for c in run.policy.candidates] == [5]
    for t in range(6, 9):
        run.step(make_frame(t))
    assert list(run.policy.long_term) == []  # 4 candidates: the buffer is not full yet
    run.step(make_frame(9))
    assert len(run.policy.long_term) == 1 and run.policy.candidates == []


@pytest.mark.parametrize(
    "breaker",
    [
        make_frame(8, iou=0.95),  # IoU must be strictly above gamma
        make_frame(8, score=-0.5),  # target absent, however confident the mask
        make_frame(9),  # frame 8 was never tracked: a gap breaks the run too
    ],
    ids=["low_iou", "absent", "gap"],
)
def test_a_broken_run_resets_the_run_and_the_buffer(breaker):
    run = Tracker()
    for t in range(1, 8):
        run.step(make_frame(t))
    assert [c.frame_index for c in run.policy.candidates] == [5, 6, 7]
    run.step(breaker)
    assert run.policy.candidates == []
    # a confident frame after a gap starts the new run; a low-confidence frame is no part of it
    first = breaker.frame_index + (0 if run.policy.is_confident(breaker) else 1)
    for t in range(first, first + 4):
        run.step(make_frame(t))
    assert run.policy.candidates == []  # 4 confident frames after the break: still nothing
    run.step(make_frame(first + 4))
    assert [c.frame_index for c in run.policy.candidates] == [first + 4]
    assert list(run.policy.long_term) == []


def test_the_least_similar_candidate_joins_the_bank():
    run = Tracker()  # l0 embeds along axis 0
    near_l0 = axis(0) + 0.1 * axis(1)
    embeddings = {5: near_l0, 6: near_l0, 7: axis(2), 8: near_l0, 9: axis(0)}
    for t in range(1, 10):
        run.step(make_frame(t, embedding=embeddings.get(t, axis(0))))
    assert run.bank_indices() == [0, 7]
    # the next choice is measured against the newest long-term memory (frame 7, axis 2), not l0
    embeddings = {10: axis(2), 11: axis(2), 12: axis(0), 13: axis(2) + 0.1 * axis(0), 14: axis(2)}
    for t in range(10, 15):
        run.step(make_frame(t, embedding=embeddings[t]))
    assert run.bank_indices() == [0, 7, 12]


def test_least_similar_needs_embeddings_and_breaks_ties_by_age():
    frames = [make_frame(t, embedding=axis(1)) for t in range(3)]
    assert least_similar(frames, make_frame(9, embedding=axis(0))).frame_index == 0
    assert least_similar(frames, None).frame_index == 2
    frames[1].image_embedding = None
    with pytest.raises(ValueError, match="image embedding"):
        least_similar(frames, None)


def test_the_bank_never_exceeds_n_plus_one_and_keeps_the_first_prompted_memory():
    generator = torch.Generator().manual_seed(0)
    run = Tracker(DiveMemConfig(enabled=True, num_long_term=4))
    first = run.memory.conditioning[0]
    promoted = []
    for t in range(1, 301):
        confident = t % 37 != 0  # a few breaks along the way
        run.step(
            make_frame(
                t, score=5.0 if confident else -5.0, embedding=torch.randn(EMBED_DIM, generator=generator)
            )
        )
        bank = run.policy.long_term_bank(run.memory)
        assert len(bank) <= 5
        assert bank[0] is first
        if run.policy.long_term and (not promoted or promoted[-1] != run.policy.long_term[-1].frame_index):
            promoted.append(run.policy.long_term[-1].frame_index)
    assert len(run.policy.long_term) == 4
    assert [m.frame_index for m in run.policy.long_term] == promoted[-4:]  # FIFO: the newest four
    kinds = [f.kind for f in run.selections[300].frames]
    assert (
        kinds.count("conditioning") == 1 and kinds.count("long_term") == 4 and kinds.count("short_term") == 6
    )


def test_policy_state_stays_bounded_on_a_long_video():
    run = Tracker(cache=16)
    alive = []
    generator = torch.Generator().manual_seed(1)
    for t in range(1, 2001):
        frame = make_frame(t, embedding=torch.randn(EMBED_DIM, generator=generator))
        alive.append(weakref.ref(frame))
        run.step(frame)
        del frame
    run.selections.clear()
    gc.collect()
    survivors = sum(ref() is not None for ref in alive)
    # the session's 16-frame cache + at most N_l bank frames + buffer_size candidates
    assert survivors <= 16 + 4 + 5
    assert len(run.policy.long_term) == 4 and len(run.policy.candidates) <= 5


def test_selection_adds_long_term_memories_and_their_past_pointers_once():
    run = Tracker()
    for t in range(1, 40):
        run.step(make_frame(t, embedding=axis(t % EMBED_DIM)))
    bank = list(run.policy.long_term)
    inputs = run.policy.select(run.memory, 40, False, None)
    long_term = [f for f in inputs.frames if f.kind == "long_term"]
    assert [id(f.features) for f in long_term] == [id(m.features) for m in bank if m.frame_index < 34]
    assert 0 < len(long_term) < len(bank)
    assert all(f.temporal_slot == TrackerConfig().num_maskmem - 1 for f in long_term)
    # the window already attends frames 34..39; a bank frame among them is not repeated
    for memory in bank:
        uses = sum(f.features is memory.features for f in inputs.frames)
        assert uses == 1
    pointer_frames = sorted(40 - d for d, _ in inputs.pointers)
    assert pointer_frames == sorted({0, *range(25, 40), *(m.frame_index for m in bank)})

    no_pointers = Tracker(DiveMemConfig(enabled=True, long_term_pointers=False))
    for t in range(1, 40):
        no_pointers.step(make_frame(t, embedding=axis(t % EMBED_DIM)))
    inputs = no_pointers.policy.select(no_pointers.memory, 40, False, None)
    assert sorted(40 - d for d, _ in inputs.pointers) == [0, *range(25, 40)]


def test_a_new_pass_drops_the_memories_it_will_track_again():
    run = Tracker()
    for t in range(1, 60):
        run.step(make_frame(t, embedding=axis(t % EMBED_DIM)))
    before = [m.frame_index for m in run.policy.long_term]
    assert len(before) == 4 and min(before) < 45 < max(before)
    # forward again from frame 45 (e.g. a restart after a correction)
    run.policy.select(run.memory, 45, False, None)
    assert [m.frame_index for m in run.policy.long_term] == [t for t in before if t < 45]
    assert run.policy.candidates == [] and run.policy.run_length == 0


def test_backward_pass_keeps_forward_memories_as_spatial_memory_without_pointers():
    run = Tracker()
    run.memory.conditioning = {30: make_frame(30, embedding=axis(0))}
    for t in range(31, 60):
        run.step(make_frame(t, embedding=axis(t % EMBED_DIM)))
    kept = list(run.policy.long_term)
    inputs = run.policy.select(run.memory, 29, True, None)
    assert list(run.policy.long_term) == kept  # nothing below frame 29 to drop
    long_term = [f for f in inputs.frames if f.kind == "long_term"]
    assert len(long_term) == len([m for m in kept if m.frame_index > 35])  # 30..35 are the window's
    assert all(d > 0 for d, _ in inputs.pointers)  # no pointer from the future of a backward pass


def test_a_corrected_frame_replaces_its_long_term_memory():
    run = Tracker()
    for t in range(1, 30):
        run.step(make_frame(t, embedding=axis(t % EMBED_DIM)))
    target = run.policy.long_term[0]
    corrected = make_frame(target.frame_index, embedding=axis(0))
    run.memory.conditioning[target.frame_index] = corrected
    inputs = run.policy.select(run.memory, 30, False, None)
    attended = [f.features for f in inputs.frames]
    assert not any(target.features is f for f in attended)
    assert any(corrected.features is f for f in attended)


def test_first_prompted_memory_is_adopted_again_and_attended_when_the_window_leaves_it_out():
    tracker = TrackerConfig(max_cond_frames_in_attn=2)
    run = Tracker(tracker=tracker)
    run.memory.conditioning[50] = make_frame(50, embedding=axis(1))
    run.memory.conditioning[60] = make_frame(60, embedding=axis(2))
    inputs = run.policy.select(run.memory, 55, False, None)
    l0 = run.memory.conditioning[0]
    assert run.policy.first_prompted_memory(run.memory) is l0
    kinds = {id(f.features): f.kind for f in inputs.frames}
    # the two closest prompted frames are conditioning; l0 is still attended, as long-term memory
    assert kinds[id(run.memory.conditioning[50].features)] == "conditioning"
    assert kinds[id(l0.features)] == "long_term"
    del run.memory.conditioning[0]  # the user cleared frame 0's prompts
    assert run.policy.first_prompted_memory(run.memory).frame_index == 50


def test_build_memory_policy_follows_the_config_and_checks_values():
    assert isinstance(build_memory_policy(load_config("sam2s_mini")), DiveMemPolicy)
    assert type(build_memory_policy(load_config("sam2.1_hiera_mini"))) is SAM2WindowPolicy
    assert DiveMemPolicy.needs_image_embedding and not SAM2WindowPolicy.needs_image_embedding
    for bad in ({"num_long_term": -1}, {"stable_frames": 0}, {"buffer_size": 0}, {"iou_threshold": 1.5}):
        with pytest.raises(ValueError):
            DiveMemPolicy(TrackerConfig(), DiveMemConfig(enabled=True, **bad))


def test_reset_forgets_everything():
    run = Tracker()
    for t in range(1, 20):
        run.step(make_frame(t, embedding=axis(t % EMBED_DIM)))
    run.policy.reset()
    assert list(run.policy.long_term) == [] and run.policy.candidates == [] and run.policy.run_length == 0


def test_saved_state_restores_the_same_selection():
    run = Tracker()
    for t in range(1, 41):
        run.step(make_frame(t, embedding=axis(t % EMBED_DIM)))
    assert len(run.policy.long_term) == 4 and run.policy.candidates

    def save_and_load(value):
        buffer = io.BytesIO()
        torch.save(value, buffer)
        buffer.seek(0)
        return torch.load(buffer, weights_only=True)

    # saved apart, so the bank's tensors are not the very objects of the store (as after a move
    # to another device); the policy must still recognise the frames the window attends
    saved = {
        "policy": save_and_load(run.policy.state_dict()),
        "recent": save_and_load([m.to_dict() for m in run.memory.recent.values()]),
    }

    restored = Tracker()
    for data in saved["recent"]:
        restored.memory.recent.put(FrameMemory.from_dict(data))
    restored.policy.load_state_dict(saved["policy"], restored.memory)
    assert restored.policy.held_tensors() and len(restored.policy.held_tensors()) == len(
        run.policy.held_tensors()
    )
    for t in range(41, 60):  # both go on tracking the same frames
        frame = make_frame(t, embedding=axis((3 * t) % EMBED_DIM))
        run.step(frame)
        restored.step(FrameMemory.from_dict(frame.to_dict()))
        ours, theirs = run.selections[t], restored.selections[t]
        assert [(f.kind, f.temporal_slot) for f in ours.frames] == [
            (f.kind, f.temporal_slot) for f in theirs.frames
        ]
        assert [d for d, _ in ours.pointers] == [d for d, _ in theirs.pointers]
    assert [m.frame_index for m in run.policy.long_term] == [m.frame_index for m in restored.policy.long_term]
    # a session saved without DiveMem restores an empty bank
    restored.policy.load_state_dict({}, restored.memory)
    assert list(restored.policy.long_term) == [] and restored.policy.candidates == []
