"""The SAM 2.1 mask decoder.

Learned output tokens (an optional object-score token, an IoU token and ``1 + M`` mask tokens)
are concatenated with the prompt tokens and run through the two-way transformer against the
image embedding. Each mask token then becomes, through its own MLP, the weights of a dot
product with the upscaled image features: that product is the mask logit map at 4x the
embedding resolution.

Mask token 0 predicts a single mask; tokens ``1..M`` predict ``M`` alternatives for ambiguous
prompts. Output selection, as in SAM 2.1:

* ``multimask_output=True``: masks and IoU of tokens ``1..M``.
* ``multimask_output=False`` with ``dynamic_multimask_via_stability`` (evaluation only): the
  single mask when its stability score (IoU of the mask thresholded at ``+delta`` and at
  ``-delta``) is at least ``dynamic_multimask_stability_thresh``; otherwise the multimask
  output with the highest predicted IoU.
* otherwise: token 0.

The token returned for the object pointer is token 0, except with ``multimask_output`` and
``use_multimask_token_for_obj_ptr``, when it is tokens ``1..M``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from sam2s.modeling.common import MLP, LayerNorm2d
from sam2s.modeling.kernels import Conv2d, Linear

__all__ = ["MaskDecoder", "MaskDecoderOutput"]


@dataclass
class MaskDecoderOutput:
    """What the mask decoder returns.

    Attributes:
        masks: ``(B, M, 4h, 4w)`` mask logits (``M`` is 1 or the number of multimask outputs).
        iou_pred: ``(B, M)`` predicted IoU of each mask.
        sam_tokens: ``(B, M', C)`` output tokens for the object pointer (``M'`` is 1, or ``M``
            with ``multimask_output`` and ``use_multimask_token_for_obj_ptr``).
        object_score_logits: ``(B, 1)`` object-presence logits (constant 10 when the decoder
            does not predict object scores).
    """

    masks: torch.Tensor
    iou_pred: torch.Tensor
    sam_tokens: torch.Tensor
    object_score_logits: torch.Tensor


class MaskDecoder(nn.Module):
    """Predict masks from image and prompt embeddings.

    Args:
        transformer_dim: token width ``C``.
        transformer: the two-way transformer (``(image, image_pe, tokens) -> (tokens, image)``).
        num_multimask_outputs: number of alternative masks ``M``.
        activation: activation class of the upscaling path.
        iou_head_depth: layers of the IoU MLP.
        iou_head_hidden_dim: hidden width of the IoU MLP.
        use_high_res_features: add stride-4 and stride-8 backbone features (projected by
            ``conv_s0``/``conv_s1``, see :meth:`project_high_res_features`) during upscaling.
        iou_prediction_use_sigmoid: squash IoU predictions to ``[0, 1]``.
        dynamic_multimask_via_stability: fall back to the best multimask output when the
            single mask is unstable (evaluation only).
        dynamic_multimask_stability_delta: logit margin of the stability score.
        dynamic_multimask_stability_thresh: minimum stability to keep the single mask.
        pred_obj_scores: predict an object-presence logit from a dedicated token.
        pred_obj_scores_mlp: use a 3-layer MLP (not a linear layer) for that logit.
        use_multimask_token_for_obj_ptr: with multimask output, return the multimask tokens
            for the object pointer.
    """

    def __init__(
        self,
        *,
        transformer_dim: int,
        transformer: nn.Module,
        num_multimask_outputs: int = 3,
        activation: type[nn.Module] = nn.GELU,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
        use_high_res_features: bool = False,
        iou_prediction_use_sigmoid: bool = False,
        dynamic_multimask_via_stability: bool = False,
        dynamic_multimask_stability_delta: float = 0.05,
        dynamic_multimask_stability_thresh: float = 0.98,
        pred_obj_scores: bool = False,
        pred_obj_scores_mlp: bool = False,
        use_multimask_token_for_obj_ptr: bool = False,
    ) -> None:
        super().__init__()
        self.transformer_dim = transformer_dim
        self.transformer = transformer
        self.num_multimask_outputs = num_multimask_outputs
        self.num_mask_tokens = num_multimask_outputs + 1

        self.iou_token = nn.Embedding(1, transformer_dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        self.pred_obj_scores = pred_obj_scores
        if pred_obj_scores:
            self.obj_score_token = nn.Embedding(1, transformer_dim)
        self.use_multimask_token_for_obj_ptr = use_multimask_token_for_obj_ptr

        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(transformer_dim // 4),
            activation(),
            nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            activation(),
        )
        self.use_high_res_features = use_high_res_features
        if use_high_res_features:
            self.conv_s0 = Conv2d(transformer_dim, transformer_dim // 8, kernel_size=1)
            self.conv_s1 = Conv2d(transformer_dim, transformer_dim // 4, kernel_size=1)

        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(transformer_dim, transformer_dim, transformer_dim // 8, 3)
            for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(
            transformer_dim,
            iou_head_hidden_dim,
            self.num_mask_tokens,
            iou_head_depth,
            sigmoid_output=iou_prediction_use_sigmoid,
        )
        if pred_obj_scores:
            self.pred_obj_score_head = (
                MLP(transformer_dim, transformer_dim, 1, 3)
                if pred_obj_scores_mlp
                else Linear(transformer_dim, 1)
            )

        self.dynamic_multimask_via_stability = dynamic_multimask_via_stability
        self.dynamic_multimask_stability_delta = dynamic_multimask_stability_delta
        self.dynamic_multimask_stability_thresh = dynamic_multimask_stability_thresh

    def project_high_res_features(self, feat_s0: torch.Tensor, feat_s1: torch.Tensor) -> list[torch.Tensor]:
        """Project the backbone's stride-4 and stride-8 features for :meth:`forward`.

        Args:
            feat_s0: ``(B, C, 4h, 4w)`` stride-4 features.
            feat_s1: ``(B, C, 2h, 2w)`` stride-8 features.

        Returns:
            ``[(B, C/8, 4h, 4w), (B, C/4, 2h, 2w)]``.
        """
        if not self.use_high_res_features:
            raise RuntimeError("this mask decoder was built with use_high_res_features=False")
        return [self.conv_s0(feat_s0), self.conv_s1(feat_s1)]

    def _output_tokens(self) -> torch.Tensor:
        """The learned output tokens ``(T, C)``: [object score], IoU, mask tokens."""
        tokens = [self.iou_token.weight, self.mask_tokens.weight]
        if self.pred_obj_scores:
            tokens.insert(0, self.obj_score_token.weight)
        return torch.cat(tokens, dim=0)

    def _upscale(
        self, image_tokens: torch.Tensor, high_res_features: list[torch.Tensor] | None
    ) -> torch.Tensor:
        """``(B, C, h, w) -> (B, C/8, 4h, 4w)``, adding high-res features when configured."""
        if not self.use_high_res_features:
            return self.output_upscaling(image_tokens)
        if high_res_features is None or len(high_res_features) != 2:
            raise ValueError(
                "this mask decoder uses high-res features: pass high_res_features=[s0, s1] "
                "(see project_high_res_features)"
            )
        deconv1, norm1, act1, deconv2, act2 = self.output_upscaling
        feat_s0, feat_s1 = high_res_features
        upscaled = act1(norm1(deconv1(image_tokens) + feat_s1))
        return act2(deconv2(upscaled) + feat_s0)

    def predict_masks(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        repeat_image: bool,
        high_res_features: list[torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Predict every mask token's output, before selection.

        Returns:
            ``(masks (B, 1+M, 4h, 4w), iou_pred (B, 1+M), mask_tokens (B, 1+M, C),
            object_score_logits (B, 1))``.
        """
        batch = sparse_prompt_embeddings.shape[0]
        output_tokens = self._output_tokens()
        tokens = torch.cat(
            (output_tokens.unsqueeze(0).expand(batch, -1, -1), sparse_prompt_embeddings), dim=1
        )

        if image_pe.shape[0] != 1:
            raise ValueError(
                f"image_pe must have batch size 1 (from get_dense_pe()), got {tuple(image_pe.shape)}"
            )
        if repeat_image:
            # One image for every prompt set: broadcasting the image against the dense prompts
            # gives the per-prompt copy without materialising a repeated image first.
            if image_embeddings.shape[0] != 1:
                raise ValueError(
                    f"repeat_image=True expects one image embedding, got batch {image_embeddings.shape[0]}"
                )
            src = image_embeddings + dense_prompt_embeddings
            if src.shape[0] != batch:
                src = src.expand(batch, -1, -1, -1)
        else:
            if image_embeddings.shape[0] != batch:
                raise ValueError(
                    f"image batch {image_embeddings.shape[0]} differs from prompt batch {batch}; "
                    "pass repeat_image=True to share one image across prompts"
                )
            src = image_embeddings + dense_prompt_embeddings
        _, channels, height, width = src.shape

        hs, image_tokens = self.transformer(src, image_pe, tokens)
        first = 1 if self.pred_obj_scores else 0
        iou_token_out = hs[:, first, :]
        mask_tokens_out = hs[:, first + 1 : first + 1 + self.num_mask_tokens, :]

        upscaled = self._upscale(
            image_tokens.transpose(1, 2).reshape(batch, channels, height, width), high_res_features
        )
        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, index, :]) for index, mlp in enumerate(self.output_hypernetworks_mlps)],
            dim=1,
        )
        up_height, up_width = upscaled.shape[-2:]
        masks = (hyper_in @ upscaled.flatten(2)).view(batch, -1, up_height, up_width)

        iou_pred = self.iou_prediction_head(iou_token_out)
        if self.pred_obj_scores:
            object_score_logits = self.pred_obj_score_head(hs[:, 0, :])
        else:
            # Without an object-score head the object is taken as present: sigmoid(10) ~ 1.
            object_score_logits = iou_pred.new_full((batch, 1), 10.0)
        return masks, iou_pred, mask_tokens_out, object_score_logits

    def stability_scores(self, mask_logits: torch.Tensor) -> torch.Tensor:
        """IoU of the masks thresholded at ``+delta`` and ``-delta``.

        Args:
            mask_logits: ``(..., H, W)`` logits.

        Returns:
            ``(...)`` scores in ``[0, 1]`` (1 for an empty mask).
        """
        flat = mask_logits.flatten(-2)
        delta = self.dynamic_multimask_stability_delta
        intersection = (flat > delta).sum(dim=-1).float()
        union = (flat > -delta).sum(dim=-1).float()
        return torch.where(union > 0, intersection / union, 1.0)

    def _select_stable(
        self, masks: torch.Tensor, iou_pred: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Single mask, or the best-IoU multimask output where the single mask is unstable.

        Args:
            masks: ``(B, 1+M, H, W)`` all mask logits.
            iou_pred: ``(B, 1+M)`` all IoU predictions.

        Returns:
            ``(masks (B, 1, H, W), iou_pred (B, 1))``.
        """
        multi_iou = iou_pred[:, 1:]
        best = multi_iou.argmax(dim=-1, keepdim=True)  # (B, 1)
        best_masks = torch.gather(masks[:, 1:], 1, best[:, :, None, None].expand(-1, -1, *masks.shape[-2:]))
        best_iou = torch.gather(multi_iou, 1, best)

        single_masks = masks[:, 0:1]
        is_stable = self.stability_scores(single_masks) >= self.dynamic_multimask_stability_thresh  # (B, 1)
        chosen_masks = torch.where(is_stable[..., None, None], single_masks, best_masks)
        chosen_iou = torch.where(is_stable, iou_pred[:, 0:1], best_iou)
        return chosen_masks, chosen_iou

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
        repeat_image: bool,
        high_res_features: list[torch.Tensor] | None = None,
    ) -> MaskDecoderOutput:
        """Predict masks.

        Args:
            image_embeddings: ``(B, C, h, w)`` image features, or ``(1, C, h, w)`` with
                ``repeat_image``.
            image_pe: ``(1, C, h, w)`` positional encoding (``PromptEncoder.get_dense_pe()``).
            sparse_prompt_embeddings: ``(B, N, C)`` point and box tokens.
            dense_prompt_embeddings: ``(B, C, h, w)`` mask-prompt embedding.
            multimask_output: return the ``M`` alternative masks instead of one.
            repeat_image: share one image embedding across the ``B`` prompt sets.
            high_res_features: ``[(B, C/8, 4h, 4w), (B, C/4, 2h, 2w)]`` projected backbone
                features; required when built with ``use_high_res_features``.

        Returns:
            A :class:`MaskDecoderOutput`.
        """
        masks, iou_pred, mask_tokens, object_score_logits = self.predict_masks(
            image_embeddings,
            image_pe,
            sparse_prompt_embeddings,
            dense_prompt_embeddings,
            repeat_image=repeat_image,
            high_res_features=high_res_features,
        )
        if multimask_output:
            masks, iou_pred = masks[:, 1:], iou_pred[:, 1:]
        elif self.dynamic_multimask_via_stability and not self.training:
            masks, iou_pred = self._select_stable(masks, iou_pred)
        else:
            masks, iou_pred = masks[:, 0:1], iou_pred[:, 0:1]

        # The single-mask token is the object pointer even after a multimask click: training
        # always tracks after several clicks, so the pointer memory has only seen that token.
        if multimask_output and self.use_multimask_token_for_obj_ptr:
            sam_tokens = mask_tokens[:, 1:]
        else:
            sam_tokens = mask_tokens[:, 0:1]
        return MaskDecoderOutput(
            masks=masks, iou_pred=iou_pred, sam_tokens=sam_tokens, object_score_logits=object_score_logits
        )
