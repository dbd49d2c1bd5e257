"""Tests of the SAM2S losses: ARL soft labels and focal loss, SAM 2's terms, TSL and the total."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sam2s.losses import (
    LossBreakdown,
    SAM2SLoss,
    SAM2SLossConfig,
    dice_loss,
    gaussian_kernel2d,
    gaussian_soften,
    iou_prediction_loss,
    object_score_loss,
    select_lowest_loss_mask,
    sigmoid_focal_loss,
    soft_sigmoid_focal_loss,
    tsl_loss,
)


def reference_focal(logits: torch.Tensor, targets: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    """RetinaNet focal loss per pixel, written out term by term for hard targets."""
    p = torch.sigmoid(logits)
    positive = -alpha * (1 - p) ** gamma * torch.log(p)
    negative = -(1 - alpha) * p**gamma * torch.log(1 - p)
    return torch.where(targets > 0.5, positive, negative)


# ------------------------------------------------------------------------------------- ARL


def test_gaussian_kernel_is_normalised_and_symmetric():
    kernel = gaussian_kernel2d(5, 1.0)
    assert kernel.shape == (5, 5)
    assert kernel.sum().item() == pytest.approx(1.0, abs=1e-6)
    assert torch.allclose(kernel, kernel.t()) and torch.allclose(kernel, kernel.flip(0))
    assert kernel[2, 2] == kernel.max()


@pytest.mark.parametrize("size, sigma", [(4, 1.0), (0, 1.0), (5, 0.0), (5, -1.0)])
def test_gaussian_kernel_rejects_bad_arguments(size, sigma):
    with pytest.raises(ValueError):
        gaussian_kernel2d(size, sigma)


def test_soft_labels_of_a_one_pixel_line_keep_its_mass():
    masks = torch.zeros(2, 1, 32, 32)
    masks[0, 0, 8:24, 16] = 1.0  # vertical segment well inside the frame
    masks[1, 0, 10, :] = 1.0  # horizontal line running from border to border
    soft = gaussian_soften(masks)
    assert soft.shape == masks.shape
    assert soft.min() >= 0 and soft.max() <= 1
    assert soft[0].sum().item() == pytest.approx(16.0, abs=1e-4)
    # Replicate padding: the line cut by the frame edges still sums to its 32 pixels.
    assert soft[1].sum().item() == pytest.approx(32.0, abs=1e-4)
    # Across the line the profile is the 1D Gaussian: exp(-d^2/2) normalised over d = -2..2.
    weights = torch.exp(-(torch.arange(-2.0, 3.0) ** 2) / 2)
    weights = weights / weights.sum()
    assert torch.allclose(soft[1, 0, 8:13, 5], weights, atol=1e-6)
    assert torch.allclose(soft[1, 0, 8:13, 0], weights, atol=1e-6)
    # The labels are blurred, not just copied.
    assert soft[0, 0, 16, 16].item() == pytest.approx(weights[2].item(), abs=1e-6)


def test_soften_keeps_constant_masks_and_accepts_bool():
    ones = torch.ones(1, 1, 9, 9, dtype=torch.bool)
    assert torch.allclose(gaussian_soften(ones), torch.ones(1, 1, 9, 9))
    assert torch.equal(gaussian_soften(torch.zeros(1, 1, 9, 9)), torch.zeros(1, 1, 9, 9))
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        gaussian_soften(torch.zeros(1, 2, 9, 9))


def test_soft_focal_equals_hard_focal_for_binary_targets():
    torch.manual_seed(0)
    logits = torch.randn(3, 2, 8, 8, dtype=torch.float64) * 3
    targets = (torch.rand(3, 1, 8, 8) > 0.5).double()
    soft = soft_sigmoid_focal_loss(logits, targets, alpha=0.25, gamma=2.0)
    hard = sigmoid_focal_loss(logits, targets.bool(), alpha=0.25, gamma=2.0)
    reference = reference_focal(logits, targets.expand_as(logits), 0.25, 2.0).flatten(2).mean(-1) / 3
    assert soft.shape == (3, 2)
    assert torch.allclose(soft, hard)
    assert torch.allclose(soft, reference, rtol=1e-9, atol=1e-12)


def test_soft_focal_normalises_by_number_of_objects():
    logits = torch.randn(2, 1, 4, 4)
    targets = torch.rand(2, 1, 4, 4)
    per_batch = soft_sigmoid_focal_loss(logits, targets)
    per_ten = soft_sigmoid_focal_loss(logits, targets, num_objects=10)
    assert torch.allclose(per_batch * 2 / 10, per_ten)


def test_soft_focal_prefers_the_soft_label():
    # With soft targets the loss must reward predicting the blurred boundary over a hard edge.
    target = torch.full((1, 1, 1, 1), 0.5)
    losses = [soft_sigmoid_focal_loss(torch.full((1, 1, 1, 1), x), target).item() for x in (-4.0, 0.0, 4.0)]
    assert losses[1] < losses[0] and losses[1] < losses[2]


def test_arl_with_vanishing_sigma_equals_hard_focal_loss():
    torch.manual_seed(1)
    logits = torch.randn(2, 3, 16, 16, requires_grad=True)
    targets = torch.zeros(2, 16, 16)
    targets[0, 4:10, 3:12] = 1
    targets[1, 7:9, 1:15] = 1
    common = {
        "mask_logits": logits,
        "iou_predictions": torch.rand(2, 3),
        "object_score_logits": torch.randn(2, 1),
    }
    arl = SAM2SLoss(SAM2SLossConfig(use_tsl=False, arl_sigma=1e-3))(target_masks=targets, **common)
    hard = SAM2SLoss(SAM2SLossConfig(use_tsl=False, use_arl=False))(target_masks=targets, **common)
    blurred = SAM2SLoss(SAM2SLossConfig(use_tsl=False))(target_masks=targets, **common)
    assert torch.allclose(arl.mask, hard.mask, atol=1e-7)
    assert torch.allclose(arl.total, hard.total, atol=1e-6)
    assert not torch.allclose(blurred.mask, hard.mask, atol=1e-4)


# ----------------------------------------------------------------------- SAM 2's terms


def test_dice_loss_values():
    target = torch.zeros(1, 1, 4, 4)
    target[..., :2, :] = 1
    perfect = torch.where(target > 0, 50.0, -50.0)
    assert dice_loss(perfect, target).item() == pytest.approx(0.0, abs=1e-6)
    assert dice_loss(torch.full((1, 1, 4, 4), -50.0), torch.zeros(1, 1, 4, 4)).item() == pytest.approx(
        0.0, abs=1e-6
    )
    # All-background prediction of an 8-pixel object: 1 - 1/(8 + 1).
    assert dice_loss(torch.full((1, 1, 4, 4), -50.0), target).item() == pytest.approx(8 / 9, abs=1e-6)


def test_iou_prediction_loss_l1_and_mse():
    target = torch.zeros(1, 1, 4, 4)
    target[..., :2, :] = 1  # 8 pixels
    logits = torch.full((1, 2, 4, 4), -1.0)
    logits[0, 0, :1, :] = 1.0  # 4 pixels inside the target: IoU 0.5
    logits[0, 1, :, :] = 1.0  # everything: IoU 0.5
    logits[0, 1, 3, :] = -1.0  # 12 pixels: IoU 8/12
    predicted = torch.tensor([[0.25, 1.0]])
    l1 = iou_prediction_loss(logits, target, predicted, kind="l1")
    mse = iou_prediction_loss(logits, target, predicted, kind="mse")
    assert torch.allclose(l1, torch.tensor([[0.25, 1 / 3]]))
    assert torch.allclose(mse, torch.tensor([[0.0625, 1 / 9]]))
    with pytest.raises(ValueError, match="kind"):
        iou_prediction_loss(logits, target, predicted, kind="huber")


def test_object_score_loss_is_binary_cross_entropy():
    logits = torch.tensor([[2.0], [-1.0], [0.5]])
    present = torch.tensor([[1.0], [0.0], [0.0]])
    expected = F.binary_cross_entropy_with_logits(logits, present, reduction="sum") / 3
    assert object_score_loss(logits, present).item() == pytest.approx(expected.item())


def test_multimask_rule_picks_the_lowest_focal_plus_dice():
    focal = torch.tensor([[0.10, 0.01, 0.05]])
    dice = torch.tensor([[0.10, 0.50, 0.05]])
    iou = torch.tensor([[0.3, 0.6, 0.9]])
    chosen = select_lowest_loss_mask(focal, dice, iou, mask_weight=20.0, dice_weight=1.0)
    # weighted: 2.1, 0.7, 1.05 -> index 1
    assert chosen.best_index.tolist() == [1]
    assert chosen.mask.item() == pytest.approx(0.01) and chosen.dice.item() == pytest.approx(0.5)
    assert chosen.iou.item() == pytest.approx(0.6)  # mean over all candidates
    only_chosen = select_lowest_loss_mask(focal, dice, iou, supervise_all_iou=False)
    assert only_chosen.iou.item() == pytest.approx(0.6)
    assert select_lowest_loss_mask(focal, dice, iou, mask_weight=1.0).best_index.tolist() == [2]


def test_multimask_gradients_reach_only_the_best_mask():
    target = torch.zeros(1, 8, 8)
    target[0, 2:6, 2:6] = 1
    good = torch.where(target[0] > 0, 6.0, -6.0)
    logits = torch.stack([torch.zeros(8, 8), good, -good])[None].clone().requires_grad_(True)
    ious = torch.full((1, 3), 0.5, requires_grad=True)
    result = SAM2SLoss(SAM2SLossConfig(use_tsl=False))(logits, ious, torch.zeros(1, 1), target)
    result.total.backward()
    grad_norms = logits.grad.flatten(2).abs().sum(-1)[0]
    assert grad_norms[1] > 0
    assert grad_norms[0] == 0 and grad_norms[2] == 0
    assert (ious.grad != 0).all()  # the IoU head learns on every candidate


def test_absent_objects_train_only_the_object_score():
    logits = torch.randn(2, 1, 8, 8, requires_grad=True)
    targets = torch.zeros(2, 8, 8)
    targets[0, 1:4, 1:4] = 1  # object 1 is absent
    scores = torch.tensor([[3.0], [2.0]])
    result = SAM2SLoss(SAM2SLossConfig(use_tsl=False))(logits, torch.rand(2, 1), scores, targets)
    result.total.backward()
    assert logits.grad[1].abs().sum() == 0 and logits.grad[0].abs().sum() > 0
    expected_occlusion = (F.softplus(-scores[0]) + F.softplus(scores[1])).item() / 2
    assert result.occlusion.item() == pytest.approx(expected_occlusion, rel=1e-6)


# ----------------------------------------------------------------------------- TSL


def test_tsl_loss_is_cross_entropy_of_scaled_cosine():
    torch.manual_seed(2)
    embeddings = torch.randn(4, 6)
    bank = F.normalize(torch.randn(5, 6), dim=-1)
    targets = torch.tensor([0, 3, -1, 4])
    logits = 100.0 * F.normalize(embeddings, dim=-1) @ bank.t()
    expected = F.cross_entropy(logits[[0, 1, 3]], targets[[0, 1, 3]])
    assert tsl_loss(embeddings, bank, targets).item() == pytest.approx(expected.item(), rel=1e-5)
    # Scaling the embeddings changes nothing (cosine similarity).
    assert tsl_loss(embeddings * 7, bank, targets).item() == pytest.approx(expected.item(), rel=1e-5)


def test_tsl_loss_skips_objects_without_category():
    torch.manual_seed(3)
    embeddings = torch.randn(3, 4, requires_grad=True)
    bank = torch.randn(2, 4)
    with_one = tsl_loss(embeddings, bank, torch.tensor([-1, 1, -1]))
    only_that = tsl_loss(embeddings[1:2], bank, torch.tensor([1]))
    assert with_one.item() == pytest.approx(only_that.item(), rel=1e-6)
    with_one.backward()
    assert embeddings.grad[0].abs().sum() == 0 and embeddings.grad[2].abs().sum() == 0
    assert embeddings.grad[1].abs().sum() > 0


def test_tsl_loss_without_any_category_is_zero_with_a_graph():
    embeddings = torch.randn(2, 4, requires_grad=True)
    loss = tsl_loss(embeddings, torch.randn(3, 4), torch.tensor([-1, -1]))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(embeddings.grad, torch.zeros(2, 4))


@pytest.mark.parametrize(
    "targets", [torch.tensor([0, 3]), torch.tensor([0, -2]), torch.tensor([0.0, 1.0]), torch.tensor([0])]
)
def test_tsl_loss_rejects_bad_targets(targets):
    with pytest.raises(ValueError):
        tsl_loss(torch.randn(2, 4), torch.randn(3, 4), targets)


# ------------------------------------------------------------------------- total loss


def _toy_inputs(seed: int = 4):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, 3, 12, 12, generator=generator)
    targets = torch.zeros(3, 12, 12)
    targets[0, 2:8, 3:9] = 1
    targets[1, 5:11, 0:4] = 1
    return {
        "mask_logits": logits,
        "iou_predictions": torch.rand(3, 3, generator=generator),
        "object_score_logits": torch.randn(3, 1, generator=generator),
        "target_masks": targets,
        "class_embeddings": torch.randn(3, 8, generator=generator),
        "class_targets": torch.tensor([1, -1, 0]),
        "text_bank": torch.randn(4, 8, generator=generator),
    }


def test_total_loss_uses_the_paper_weights():
    config = SAM2SLossConfig()
    assert (
        config.mask_weight,
        config.dice_weight,
        config.iou_weight,
        config.occlusion_weight,
        config.tsl_weight,
    ) == (
        20.0,
        1.0,
        1.0,
        1.0,
        0.1,
    )
    assert config.use_arl and config.use_tsl and (config.arl_kernel_size, config.arl_sigma) == (5, 1.0)
    result = SAM2SLoss()(**_toy_inputs())
    expected = 20 * result.mask + result.iou + result.dice + result.occlusion + 0.1 * result.tsl
    assert result.total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert all(value > 0 for value in result.to_floats().values())
    inputs = _toy_inputs()
    assert result.tsl.item() == pytest.approx(
        tsl_loss(inputs["class_embeddings"], inputs["text_bank"], inputs["class_targets"]).item(), rel=1e-6
    )


def test_total_loss_weights_are_configurable():
    inputs = _toy_inputs()
    base = SAM2SLoss()(**inputs)
    config = SAM2SLossConfig(
        mask_weight=3.0, dice_weight=0.5, iou_weight=2.0, occlusion_weight=4.0, tsl_weight=1.5
    )
    result = SAM2SLoss(config)(**inputs)
    expected = 3 * result.mask + 0.5 * result.dice + 2 * result.iou + 4 * result.occlusion + 1.5 * result.tsl
    assert result.total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert result.occlusion.item() == pytest.approx(base.occlusion.item())
    assert result.tsl.item() == pytest.approx(base.tsl.item())


def test_total_loss_without_tsl_ignores_class_inputs():
    inputs = _toy_inputs()
    with_tsl = SAM2SLoss()(**inputs)
    for key in ("class_embeddings", "class_targets", "text_bank"):
        inputs.pop(key)
    without = SAM2SLoss(SAM2SLossConfig(use_tsl=False))(**inputs)
    assert without.tsl.item() == 0.0
    assert without.total.item() == pytest.approx((with_tsl.total - 0.1 * with_tsl.tsl).item(), rel=1e-6)
    with pytest.raises(ValueError, match="use_tsl"):
        SAM2SLoss()(**inputs)


def test_breakdowns_add_up_and_log_as_floats():
    first = SAM2SLoss()(**_toy_inputs(5))
    second = SAM2SLoss()(**_toy_inputs(6))
    both = first + second
    assert isinstance(both, LossBreakdown)
    for name, value in both.to_floats().items():
        assert isinstance(value, float)
        assert value == pytest.approx(first.to_floats()[name] + second.to_floats()[name], rel=1e-6)


def test_total_loss_checks_shapes():
    inputs = _toy_inputs()
    inputs["target_masks"] = torch.zeros(3, 24, 24)
    with pytest.raises(ValueError, match="upsample"):
        SAM2SLoss()(**inputs)


def test_total_loss_is_finite_for_confident_predictions():
    inputs = _toy_inputs()
    inputs["mask_logits"] = inputs["mask_logits"] * 1e3
    result = SAM2SLoss()(**inputs)
    assert math.isfinite(result.total.item())
