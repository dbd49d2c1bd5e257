"""The SAM 2.1 network and its per-frame tracking step.

:class:`SAM2Model` holds every learned part (attribute names equal the official checkpoint's
top-level keys) and exposes the four things a predictor does with a frame:

1. :meth:`SAM2Model.encode_image` — image encoder + FPN neck (once per frame, shared by objects);
2. :meth:`SAM2Model.condition_on_memory` — memory attention over the memories a policy chose;
3. :meth:`SAM2Model.decode` / :meth:`SAM2Model.mask_as_output` — prompt encoder + mask decoder
   (or a mask prompt taken as the answer), giving masks, IoU, object score and object pointer;
4. :meth:`SAM2Model.encode_memory` — memory encoder for the frame's final mask.

Which memories to attend to is not decided here: the predictor's memory policy chooses them and
passes them in as :class:`MemoryInputs`. This module does no file or video I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.init import trunc_normal_

from sam2s.config import ModelConfig
from sam2s.modeling.common import MLP
from sam2s.modeling.image_encoder import build_image_encoder
from sam2s.modeling.mask_decoder import MaskDecoder, MaskDecoderOutput
from sam2s.modeling.memory_attention import MemoryAttention
from sam2s.modeling.memory_encoder import MemoryEncoder
from sam2s.modeling.postprocess import fill_small_holes
from sam2s.modeling.prompt_encoder import PromptEncoder
from sam2s.modeling.two_way_transformer import TwoWayTransformer

__all__ = [
    "NO_OBJECT_LOGIT",
    "FrameDecoding",
    "FrameFeatures",
    "MemoryFrame",
    "MemoryInputs",
    "PointPrompt",
    "SAM2Model",
    "sine_time_encoding",
]

# Mask logit given to every pixel of an object the model says is absent (as SAM 2).
NO_OBJECT_LOGIT = -1024.0
# A mask prompt taken as the output becomes logits of exactly +/- 10 (as SAM 2).
MASK_PROMPT_SCALE, MASK_PROMPT_BIAS = 20.0, -10.0


def sine_time_encoding(positions: torch.Tensor, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """1D sine/cosine encoding of (fractional) temporal positions.

    Args:
        positions: ``(N,)`` float positions.
        dim: output width (even).

    Returns:
        ``(N, dim)``: sines in the first half, cosines in the second.
    """
    half = dim // 2
    steps = torch.arange(half, dtype=torch.float32, device=positions.device)
    freqs = temperature ** (2 * (steps // 2) / half)
    angles = positions.unsqueeze(-1) / freqs
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


@dataclass
class FrameFeatures:
    """Image features of one frame, ready for the decoder and the memory modules.

    Attributes:
        vision: ``(B, C, h, w)`` lowest-resolution features (C = 256, h = image_size / 16).
        vision_pos: ``(B, C, h, w)`` their sine position encoding.
        high_res: ``[(B, C/8, 4h, 4w), (B, C/4, 2h, 2w)]`` projected skip features for the decoder.
    """

    vision: torch.Tensor
    vision_pos: torch.Tensor
    high_res: list[torch.Tensor]

    def expand(self, batch_size: int) -> FrameFeatures:
        """The same features viewed for ``batch_size`` objects (no copy)."""
        if self.vision.shape[0] == batch_size:
            return self
        grow = lambda t: t.expand(batch_size, *t.shape[1:])
        return FrameFeatures(grow(self.vision), grow(self.vision_pos), [grow(t) for t in self.high_res])

    def pooled(self) -> torch.Tensor:
        """``(C,)`` spatial mean of the first item's lowest-resolution features."""
        return self.vision[0].float().mean(dim=(-2, -1))

    @property
    def grid(self) -> tuple[int, int]:
        return int(self.vision.shape[-2]), int(self.vision.shape[-1])


@dataclass
class PointPrompt:
    """Clicks and box corners in model-input pixels.

    Attributes:
        coords: ``(B, N, 2)`` float (x, y) in ``[0, image_size]``.
        labels: ``(B, N)`` int32: 1 positive, 0 negative, 2/3 box corners, -1 padding.
    """

    coords: torch.Tensor
    labels: torch.Tensor

    @property
    def num_points(self) -> int:
        return int(self.labels.shape[1])

    def concat(self, other: PointPrompt) -> PointPrompt:
        return PointPrompt(torch.cat([self.coords, other.coords], 1), torch.cat([self.labels, other.labels], 1))


@dataclass
class MemoryFrame:
    """One remembered frame of one object, as memory attention consumes it.

    Attributes:
        features: ``(B, mem_dim, h, w)`` memory-encoder output (stored in bfloat16 like SAM 2).
        temporal_slot: index into ``maskmem_tpos_enc`` (``num_maskmem - 1`` for conditioning frames,
            ``num_maskmem - 1 - k`` for the k-th most recent frame).
        kind: ``"conditioning"``, ``"short_term"`` or ``"long_term"`` (for SAM2S temporal embeddings).
    """

    features: torch.Tensor
    temporal_slot: int
    kind: str = "short_term"


@dataclass
class MemoryInputs:
    """What a memory policy selected for the current frame.

    Attributes:
        frames: spatial memories, in the order they are attended.
        pointers: ``(signed frame distance, (B, C) object pointer)`` pairs.
        pointer_time_span: distances are divided by this before the sine encoding; SAM 2 uses
            ``min(num_frames, max_obj_ptrs) - 1``.
    """

    frames: list[MemoryFrame] = field(default_factory=list)
    pointers: list[tuple[int, torch.Tensor]] = field(default_factory=list)
    pointer_time_span: int = 15

    @property
    def is_empty(self) -> bool:
        return not self.frames and not self.pointers


@dataclass
class FrameDecoding:
    """The decoder's answer for one frame and a batch of objects.

    Attributes:
        low_res_logits: ``(B, 1, 4h, 4w)`` chosen mask logits (-1024 where the object is absent).
        high_res_logits: ``(B, 1, S, S)`` the same at model input size S.
        iou_scores: ``(B, 1)`` predicted IoU of the chosen mask.
        object_score_logits: ``(B, 1)`` object-presence logits.
        obj_ptr: ``(B, C)`` object pointer for later frames.
        all_low_res_logits: ``(B, M, 4h, 4w)`` every candidate mask (M = 1 or 3).
        all_iou_scores: ``(B, M)``.
    """

    low_res_logits: torch.Tensor
    high_res_logits: torch.Tensor
    iou_scores: torch.Tensor
    object_score_logits: torch.Tensor
    obj_ptr: torch.Tensor
    all_low_res_logits: torch.Tensor
    all_iou_scores: torch.Tensor


class SAM2Model(nn.Module):
    """SAM 2.1: image encoder, prompt encoder, mask decoder, memory encoder and memory attention.

    Args:
        config: architecture and tracking settings (see :mod:`sam2s.config`).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        tracker = config.tracker
        self.image_size = config.image_size
        self.hidden_dim = config.neck.d_model
        self.mem_dim = config.memory_encoder.out_dim
        self.num_maskmem = tracker.num_maskmem
        self.embedding_grid = config.image_size // config.backbone_stride

        self.image_encoder = build_image_encoder(
            {k: v for k, v in vars(config.trunk).items()},
            {k: v for k, v in vars(config.neck).items() if k != "scalp"},
            scalp=config.neck.scalp,
        )
        attn = config.memory_attention
        self.memory_attention = MemoryAttention(
            d_model=self.hidden_dim,
            num_layers=attn.num_layers,
            dim_feedforward=attn.dim_feedforward,
            num_heads=attn.num_heads,
            dropout=attn.dropout,
            rope_theta=attn.rope_theta,
            feat_sizes=tuple(attn.feat_sizes),
            kv_in_dim=self.mem_dim,
        )
        if attn.same_position_init:
            self.memory_attention.prefer_same_position(attn.same_position_init)
        self.memory_encoder = MemoryEncoder(out_dim=self.mem_dim, in_dim=self.hidden_dim)

        self.maskmem_tpos_enc = nn.Parameter(torch.zeros(self.num_maskmem, 1, 1, self.mem_dim))
        self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, self.hidden_dim))
        self.no_mem_pos_enc = nn.Parameter(torch.zeros(1, 1, self.hidden_dim))
        self.no_obj_ptr = nn.Parameter(torch.zeros(1, self.hidden_dim))
        self.no_obj_embed_spatial = nn.Parameter(torch.zeros(1, self.mem_dim))
        for param in (self.maskmem_tpos_enc, self.no_mem_embed, self.no_mem_pos_enc, self.no_obj_ptr,
                      self.no_obj_embed_spatial):
            trunc_normal_(param, std=0.02)
        # A mask prompt is brought to decoder mask-input size (4h) by a learned stride-4 conv.
        self.mask_downsample = nn.Conv2d(1, 1, kernel_size=4, stride=4)

        self.sam_prompt_encoder = PromptEncoder(
            embed_dim=self.hidden_dim,
            image_embedding_size=(self.embedding_grid, self.embedding_grid),
            input_image_size=(self.image_size, self.image_size),
            mask_in_chans=16,
        )
        self.sam_mask_decoder = MaskDecoder(
            transformer_dim=self.hidden_dim,
            transformer=TwoWayTransformer(depth=2, embedding_dim=self.hidden_dim, num_heads=8, mlp_dim=2048),
            num_multimask_outputs=3,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
            use_high_res_features=True,
            iou_prediction_use_sigmoid=True,
            pred_obj_scores=True,
            pred_obj_scores_mlp=True,
            use_multimask_token_for_obj_ptr=True,
            dynamic_multimask_via_stability=tracker.dynamic_multimask_via_stability,
            dynamic_multimask_stability_delta=tracker.dynamic_multimask_stability_delta,
            dynamic_multimask_stability_thresh=tracker.dynamic_multimask_stability_thresh,
        )
        if config.mask_decoder.prompt_position_init:
            self.sam_mask_decoder.transformer.prefer_nearby_prompts(config.mask_decoder.prompt_position_init)
        self.obj_ptr_proj = MLP(self.hidden_dim, self.hidden_dim, self.hidden_dim, 3)
        self.obj_ptr_tpos_proj = nn.Linear(self.hidden_dim, self.mem_dim)
        self._memory_pos_cache: dict[tuple, torch.Tensor] = {}

    # ------------------------------------------------------------------ image side
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def low_res_size(self) -> int:
        """Side of the decoder's low-resolution mask logits (image_size / 4)."""
        return self.embedding_grid * 4

    def encode_image(self, images: torch.Tensor) -> FrameFeatures:
        """Run the image encoder on normalised frames.

        Args:
            images: ``(B, 3, S, S)`` float, ImageNet-normalised, S = ``image_size``.

        Returns:
            :class:`FrameFeatures` with the decoder's skip projections already applied.
        """
        out = self.image_encoder(images)
        fpn, pos = out.backbone_fpn, out.vision_pos_enc
        high_res = [self.sam_mask_decoder.conv_s0(fpn[0]), self.sam_mask_decoder.conv_s1(fpn[1])]
        return FrameFeatures(vision=fpn[-1], vision_pos=pos[-1], high_res=high_res)

    # ------------------------------------------------------------------ memory side
    def condition_on_memory(self, features: FrameFeatures, memory: MemoryInputs | None) -> torch.Tensor:
        """Fuse the frame's features with its memories.

        Args:
            features: the current frame (batch B).
            memory: what the policy chose; ``None`` for a frame without memory (an initial
                conditioning frame or a single image), which adds the learned "no memory" embedding.

        Returns:
            ``(B, C, h, w)`` memory-conditioned features.
        """
        vision = features.vision
        batch, channels, h, w = vision.shape
        if memory is None or memory.is_empty:
            return vision + self.no_mem_embed.view(1, channels, 1, 1)

        tokens, token_pos = self.memory_tokens(memory, batch, (h, w), vision.device)
        num_ptr_tokens = self._num_pointer_tokens(memory)
        current = vision.flatten(2).permute(2, 0, 1)
        current_pos = features.vision_pos.flatten(2).permute(2, 0, 1)
        fused = self.memory_attention(
            curr=current,
            memory=tokens,
            curr_pos=current_pos,
            memory_pos=token_pos,
            num_obj_ptr_tokens=num_ptr_tokens,
        )
        return fused.permute(1, 2, 0).reshape(batch, channels, h, w)

    def _num_pointer_tokens(self, memory: MemoryInputs) -> int:
        return len(memory.pointers) * (self.hidden_dim // self.mem_dim)

    def memory_tokens(
        self, memory: MemoryInputs, batch: int, grid: tuple[int, int], device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Flatten the selected memories into attention tokens.

        Returns:
            ``(M, B, mem_dim)`` tokens and ``(M, B, mem_dim)`` their position encodings; spatial
            tokens first, object-pointer tokens (each pointer split into C / mem_dim tokens) last.
        """
        tokens, positions = [], []
        spatial_pos = self.memory_position(grid, device)
        for frame in memory.frames:
            tokens.append(frame.features.to(device).flatten(2).permute(2, 0, 1))
            pos = spatial_pos + self.temporal_encoding(frame)
            positions.append(pos.expand(-1, batch, -1))
        if memory.pointers:
            ptr_tokens, ptr_pos = self.pointer_tokens(memory, batch, device)
            tokens.append(ptr_tokens)
            positions.append(ptr_pos)
        # Stored spatial memories are bfloat16; concatenating with float32 pointers restores
        # float32, as in SAM 2 (which stores them the same way).
        return torch.cat(tokens, 0).float(), torch.cat(positions, 0)

    def temporal_encoding(self, frame: MemoryFrame) -> torch.Tensor:
        """``(1, 1, mem_dim)`` temporal position of a memory frame (SAM2S adds its type here)."""
        return self.maskmem_tpos_enc[frame.temporal_slot].view(1, 1, self.mem_dim)

    def memory_position(self, grid: tuple[int, int], device: torch.device) -> torch.Tensor:
        """``(h*w, 1, mem_dim)`` sine position encoding of a memory feature map (same for all frames)."""
        key = (grid, str(device))
        cached = self._memory_pos_cache.get(key)
        if cached is None:
            probe = torch.zeros(1, self.mem_dim, *grid, device=device)
            cached = self.memory_encoder.position_encoding(probe).flatten(2).permute(2, 0, 1)
            self._memory_pos_cache[key] = cached
        return cached

    def pointer_tokens(
        self, memory: MemoryInputs, batch: int, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Object pointers as ``(P * C/mem_dim, B, mem_dim)`` tokens with temporal encodings."""
        distances, pointers = zip(*memory.pointers)
        ptrs = torch.stack(pointers, 0)  # (P, B, C)
        scale = max(memory.pointer_time_span, 1)
        # built on the host and copied without waiting, so a GPU's queue is not drained per frame
        times = torch.tensor(distances, dtype=torch.float32).to(device, non_blocking=True) / scale
        pos = self.obj_ptr_tpos_proj(sine_time_encoding(times, self.hidden_dim))  # (P, mem_dim)
        pos = pos.unsqueeze(1).expand(-1, batch, self.mem_dim)
        split = self.hidden_dim // self.mem_dim
        ptrs = ptrs.reshape(-1, batch, split, self.mem_dim).permute(0, 2, 1, 3).flatten(0, 1)
        return ptrs, pos.repeat_interleave(split, dim=0)

    def encode_memory(
        self,
        features: FrameFeatures,
        high_res_logits: torch.Tensor,
        object_score_logits: torch.Tensor,
        from_prompt: bool,
    ) -> torch.Tensor:
        """Encode the frame and its final mask into a memory.

        Args:
            features: the frame's features (batch B).
            high_res_logits: ``(B, 1, S, S)`` mask logits at model input size.
            object_score_logits: ``(B, 1)``; absent objects get the learned "no object" embedding.
            from_prompt: the mask came from user clicks; SAM 2 then encodes it as a hard mask.

        Returns:
            ``(B, mem_dim, h, w)`` memory features (float32; callers store them as bfloat16).
        """
        tracker = self.config.tracker
        if tracker.binarize_mask_from_pts_for_mem_enc and from_prompt and not self.training:
            mask = (high_res_logits > 0).float()
        else:
            mask = torch.sigmoid(high_res_logits)
        mask = mask * tracker.sigmoid_scale_for_mem_enc + tracker.sigmoid_bias_for_mem_enc
        memory, _ = self.memory_encoder(features.vision, mask, skip_mask_sigmoid=True)
        absent = (object_score_logits <= 0).float()[..., None, None]
        return memory + absent * self.no_obj_embed_spatial[..., None, None]

    # ------------------------------------------------------------------ decoder side
    def decode(
        self,
        conditioned: torch.Tensor,
        features: FrameFeatures,
        points: PointPrompt | None,
        mask_logits: torch.Tensor | None,
        multimask: bool,
    ) -> FrameDecoding:
        """Prompt encoder + mask decoder on memory-conditioned features.

        Args:
            conditioned: ``(B, C, h, w)`` from :meth:`condition_on_memory`.
            features: the frame (for the high-resolution skip features).
            points: clicks / box corners, or ``None`` (tracking without prompts).
            mask_logits: ``(B, 1, *, *)`` dense mask prompt (resized to 4h with antialiasing), or ``None``.
            multimask: predict three candidates and keep the one with the highest predicted IoU.
        """
        batch = conditioned.shape[0]
        device = conditioned.device
        if points is None:  # SAM 2 feeds one padding point when tracking without prompts
            points = PointPrompt(
                torch.zeros(batch, 1, 2, device=device), -torch.ones(batch, 1, dtype=torch.int32, device=device)
            )
        if mask_logits is not None and mask_logits.shape[-2:] != (self.low_res_size, self.low_res_size):
            mask_logits = F.interpolate(
                mask_logits.float(), size=(self.low_res_size, self.low_res_size),
                mode="bilinear", align_corners=False, antialias=True,
            )
        out = self.run_mask_decoder(conditioned, features, points, mask_logits, multimask)
        present = out.object_score_logits > 0
        all_low = torch.where(present[:, None, None], out.masks, NO_OBJECT_LOGIT).float()
        if multimask:
            best = torch.argmax(out.iou_pred, dim=-1)
            rows = torch.arange(batch, device=device)
            low = all_low[rows, best].unsqueeze(1)
            iou = out.iou_pred[rows, best].unsqueeze(1)
            token = out.sam_tokens[rows, best] if out.sam_tokens.shape[1] > 1 else out.sam_tokens[:, 0]
        else:
            low, iou, token = all_low, out.iou_pred, out.sam_tokens[:, 0]
        high = self.upscale_to_input(low)
        obj_ptr = self._object_pointer(self.obj_ptr_proj(token), present.float())
        return FrameDecoding(low, high, iou, out.object_score_logits, obj_ptr, all_low, out.iou_pred)

    def multimask_for(self, points: PointPrompt | None) -> bool:
        """Whether decoding with ``points`` (``None``: a tracked frame) predicts three candidates."""
        return self.config.tracker.use_multimask(None if points is None else points.num_points)

    def run_mask_decoder(
        self,
        conditioned: torch.Tensor,
        features: FrameFeatures,
        points: PointPrompt | None,
        mask_logits: torch.Tensor | None,
        multimask: bool,
    ) -> MaskDecoderOutput:
        """Prompt encoder + mask decoder, without SAM 2's object-presence masking.

        Args:
            conditioned: ``(B, C, h, w)`` image embedding (memory-conditioned or "no memory").
            features: the frame (for the high-resolution skip features).
            points: clicks / box corners, or ``None`` for no sparse prompt.
            mask_logits: ``(B, 1, 4h, 4w)`` dense mask prompt, or ``None``.
            multimask: predict three candidate masks.
        """
        sparse, dense = self.sam_prompt_encoder(
            points=None if points is None else (points.coords, points.labels), boxes=None, masks=mask_logits
        )
        return self.sam_mask_decoder(
            image_embeddings=conditioned,
            image_pe=self.sam_prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
            repeat_image=False,
            high_res_features=features.high_res,
        )

    def _object_pointer(self, pointer: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """Absent objects point with the learned "no object" pointer."""
        return present * pointer + (1 - present) * self.no_obj_ptr

    def upscale_to_input(self, low_res_logits: torch.Tensor) -> torch.Tensor:
        """``(B, M, 4h, 4w)`` -> ``(B, M, S, S)`` bilinear."""
        return F.interpolate(
            low_res_logits, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False
        )

    def mask_as_output(self, features: FrameFeatures, mask: torch.Tensor) -> FrameDecoding:
        """Take a mask prompt as the frame's answer (SAM 2.1 does so on mask-prompted frames).

        Args:
            features: the frame (batch B).
            mask: ``(B, 1, S, S)`` binary mask at model input size.
        """
        mask = mask.float()
        high = mask * MASK_PROMPT_SCALE + MASK_PROMPT_BIAS
        low = F.interpolate(
            high, size=(high.shape[-2] // 4, high.shape[-1] // 4), mode="bilinear",
            align_corners=False, antialias=True,
        )
        iou = mask.new_ones(mask.shape[0], 1)
        # The pointer still comes from the decoder, prompted with the downsampled mask on the
        # raw (not memory-conditioned) features, as SAM 2 does.
        decoded = self.decode(features.vision, features, None, self.mask_downsample(mask), multimask=False)
        present = torch.any(mask.flatten(1) > 0.0, dim=1, keepdim=True).float()
        score = MASK_PROMPT_SCALE * present + MASK_PROMPT_BIAS
        obj_ptr = self._object_pointer(decoded.obj_ptr, present)
        return FrameDecoding(low, high, iou, score, obj_ptr, low, iou)

    def postprocess_low_res(self, low_res_logits: torch.Tensor) -> torch.Tensor:
        """Fill small holes as configured (``fill_hole_area``)."""
        return fill_small_holes(low_res_logits, self.config.tracker.fill_hole_area)
