"""The image predictor gives the official SAM 2.1 image predictor's numbers (<= 1e-3)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sam2s import ImagePredictor
from tests.official import build_official_image_predictor
from tests.parity import TOLERANCE, DecoderRecorder, parity_model, synthetic_clip

PROMPTS = [
    {"points": [[40, 60]], "labels": [1], "multimask_output": True},
    {"points": [[40, 60], [100, 30]], "labels": [1, 0], "multimask_output": False},
    {"box": [25, 45, 56, 76], "multimask_output": False},
    {"box": [25, 45, 56, 76], "points": [[40, 60]], "labels": [1], "multimask_output": True},
]


def _official_predict(predictor, prompt, mask_input=None):
    return predictor.predict(
        point_coords=None if "points" not in prompt else np.array(prompt["points"], dtype=np.float32),
        point_labels=None if "labels" not in prompt else np.array(prompt["labels"]),
        box=None if "box" not in prompt else np.array(prompt["box"], dtype=np.float32),
        mask_input=mask_input,
        multimask_output=prompt["multimask_output"],
        return_logits=True,
    )


def _check(name: str, image: np.ndarray, seed: int) -> None:
    model = parity_model(name, seed)
    official = build_official_image_predictor(name, model.state_dict())
    ours = ImagePredictor(model)
    recorder = DecoderRecorder()
    recorder.attach_project(model.sam_mask_decoder)
    official.set_image(image)
    ours.set_image(image)
    for prompt in PROMPTS:
        kwargs = {k: v for k, v in prompt.items()}
        expected_masks, expected_iou, expected_low = _official_predict(official, prompt)
        got = ours.predict(return_logits=True, **kwargs)
        assert np.abs(expected_masks - got.masks).max() <= TOLERANCE
        assert np.abs(expected_iou - got.iou_scores).max() <= TOLERANCE
        assert np.abs(expected_low - got.low_res_logits).max() <= TOLERANCE
        # Feed the best low-res mask back, as an interactive refinement does.
        best = int(np.argmax(got.iou_scores))
        expected_masks, expected_iou, _ = _official_predict(official, prompt, expected_low[best : best + 1])
        got = ours.predict(mask_input=got.low_res_logits[best : best + 1], return_logits=True, **kwargs)
        assert np.abs(expected_masks - got.masks).max() <= TOLERANCE
        assert np.abs(expected_iou - got.iou_scores).max() <= TOLERANCE
    for call in recorder.calls:  # the image path has no object-presence decision
        call.object_score = torch.ones_like(call.object_score)
    recorder.assert_margins()


def test_mini_image_predictor_matches_official():
    _check("sam2.1_hiera_mini", synthetic_clip(1)[0], seed=1)


@pytest.mark.slow
def test_hiera_t_image_predictor_matches_official():
    _check("sam2.1_hiera_t", synthetic_clip(1, height=96, width=128)[0], seed=3)


def test_predict_before_set_image_is_a_clear_error():
    predictor = ImagePredictor(parity_model("sam2.1_hiera_mini"))
    with pytest.raises(RuntimeError, match="set_image"):
        predictor.predict(points=[[1, 1]], labels=[1])


def test_binary_masks_are_logits_above_zero():
    predictor = ImagePredictor(parity_model("sam2.1_hiera_mini"))
    image = synthetic_clip(1)[0]
    predictor.set_image(image)
    logits = predictor.predict(points=[[40, 60]], labels=[1], return_logits=True)
    masks = predictor.predict(points=[[40, 60]], labels=[1])
    assert masks.masks.dtype == bool and masks.masks.shape == (3, 120, 160)
    assert np.array_equal(masks.masks, logits.masks > 0)
    assert torch.is_tensor(torch.as_tensor(masks.iou_scores))
