"""SAM2S: SAM 2.1 plus DiveMem temporal embeddings and the temporal-semantic (TSL) head.

:class:`SAM2SModel` is a :class:`~sam2s.modeling.sam2.SAM2Model` with two optional additions,
each switched by the model config:

* **DiveMem temporal embeddings** (``divemem.enabled`` and ``divemem.temporal_embeddings``):
  ``divemem_tpos_enc``, a learnable ``(num_maskmem + 1, 1, 1, mem_dim)`` table that takes the
  place of SAM 2's ``maskmem_tpos_enc`` as the temporal part of the memory position encoding
  (memory position = sine spatial encoding + this embedding, added before memory attention).
  Row ``k < num_maskmem - 1`` marks a short-term memory k + 1 frames back in SAM 2's slot order,
  row ``num_maskmem - 1`` a conditioning (prompted) memory, row ``num_maskmem`` a long-term
  memory. It is initialised from SAM 2.1's ``maskmem_tpos_enc``: the first ``num_maskmem`` rows
  are copies, and the long-term row copies the conditioning row (SAM 2 gives every memory that
  may be any distance away, a prompted frame, that encoding). So a model initialised from
  SAM 2.1 gives SAM 2's numbers exactly as long as DiveMem's long-term bank is empty.
  ``maskmem_tpos_enc`` stays in the model (SAM 2.1 checkpoints have it) but is then unused.
* **TSL head** (``semantic.enabled``): :class:`~sam2s.modeling.semantic_head.TemporalSemanticHead`
  reads the frame's memory tokens (the same tokens and position encodings memory attention
  sees) and the memory-conditioned current features, and gives a class embedding per object.
  :meth:`SAM2SModel.class_probabilities` compares it with the class bank (the category names'
  text embeddings, attached with :meth:`SAM2SModel.set_vocabulary` and stored in the
  checkpoint beside the weights) as a softmax of cosine similarity × ``logit_scale`` (100).

ARL (``config.arl``) only changes the training loss (:mod:`sam2s.losses`); the model carries the
flag. SAM2S-only parameters are named ``divemem_*`` and ``semantic_head.*`` so that SAM 2.1
checkpoints load without them (:mod:`sam2s.checkpoint`).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import torch
from torch import nn

from sam2s.config import ModelConfig
from sam2s.modeling.sam2 import FrameFeatures, MemoryFrame, MemoryInputs, SAM2Model
from sam2s.modeling.semantic_head import TemporalSemanticHead, class_logits
from sam2s.semantics.vocabulary_bank import VocabularyBank

__all__ = ["VOCABULARY_EXTRA_KEY", "SAM2SModel"]

#: Checkpoint entry (beside ``"model"``) that holds the class bank.
VOCABULARY_EXTRA_KEY = "vocabulary"


class SAM2SModel(SAM2Model):
    """SAM 2.1 with DiveMem temporal embeddings and a TSL head (see the module docstring).

    Args:
        config: a SAM2S config (``sam2s_hiera_*``); with every SAM2S switch off it is SAM 2.1.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        if config.divemem.enabled and config.divemem.temporal_embeddings:
            self.divemem_tpos_enc = nn.Parameter(torch.zeros(self.num_maskmem + 1, 1, 1, self.mem_dim))
            self.init_divemem_from_sam2()
        else:
            self.register_parameter("divemem_tpos_enc", None)

        semantic = config.semantic
        self.semantic_head: TemporalSemanticHead | None = None
        if semantic.enabled:
            self.semantic_head = TemporalSemanticHead(
                d_model=self.hidden_dim,
                mem_dim=self.mem_dim,
                text_dim=semantic.text_dim,
                num_heads=semantic.num_heads,
                mlp_dim=semantic.mlp_dim,
            )
        self.logit_scale = semantic.logit_scale
        self.vocabulary: VocabularyBank | None = None
        # (K, text_dim) text embeddings of the category names; a buffer so .to(device) moves it,
        # not persistent because it travels as a checkpoint extra (names + encoder metadata).
        self.register_buffer("class_bank", torch.zeros(0, semantic.text_dim), persistent=False)

    # ------------------------------------------------------------------ DiveMem embeddings
    @property
    def conditioning_row(self) -> int:
        return self.num_maskmem - 1

    @property
    def long_term_row(self) -> int:
        return self.num_maskmem

    def temporal_encoding(self, frame: MemoryFrame) -> torch.Tensor:
        """``(1, 1, mem_dim)`` temporal embedding of a memory by its kind (and recency)."""
        if self.divemem_tpos_enc is None:
            return super().temporal_encoding(frame)
        if frame.kind == "conditioning":
            row = self.conditioning_row
        elif frame.kind == "long_term":
            row = self.long_term_row
        elif frame.kind == "short_term":
            if not 0 <= frame.temporal_slot < self.conditioning_row:
                raise ValueError(
                    f"a short-term memory needs a temporal slot in [0, {self.conditioning_row - 1}], "
                    f"got {frame.temporal_slot}"
                )
            row = frame.temporal_slot
        else:
            raise ValueError(
                f"unknown memory kind {frame.kind!r}; expected conditioning, short_term or long_term"
            )
        return self.divemem_tpos_enc[row].view(1, 1, self.mem_dim)

    @torch.no_grad()
    def init_divemem_from_sam2(self) -> None:
        """Set the DiveMem temporal embeddings from SAM 2.1's ``maskmem_tpos_enc`` (see module doc)."""
        if self.divemem_tpos_enc is None:
            return
        sam2_table = self.maskmem_tpos_enc.detach()
        self.divemem_tpos_enc[: self.num_maskmem].copy_(sam2_table)
        self.divemem_tpos_enc[self.long_term_row].copy_(sam2_table[self.conditioning_row])

    def init_absent_parameters(self, absent: Collection[str]) -> list[str]:
        """Initialise SAM2S-only parameters a loaded (SAM 2.1) checkpoint lacked.

        The DiveMem embeddings are derived from the loaded ``maskmem_tpos_enc``; the TSL head has no
        SAM 2.1 counterpart and keeps its random initialisation (it is trained by the TSL loss).

        Args:
            absent: state-dict keys of this model that the checkpoint did not have.

        Returns:
            The keys that were initialised from SAM 2.1 weights.
        """
        if "divemem_tpos_enc" in absent:
            self.init_divemem_from_sam2()
            return ["divemem_tpos_enc"]
        return []

    # ------------------------------------------------------------------ TSL
    def class_embedding(
        self, features: FrameFeatures, conditioned: torch.Tensor, memory: MemoryInputs | None
    ) -> torch.Tensor:
        """The TSL head's class embedding of each object on a frame (differentiable, for training too).

        Args:
            features: the frame's image features (for the position encoding).
            conditioned: ``(B, C, h, w)`` memory-conditioned features
                (:meth:`~sam2s.modeling.sam2.SAM2Model.condition_on_memory`).
            memory: the memories the frame was conditioned on, or ``None`` (a frame without memory).

        Returns:
            ``(B, text_dim)`` class embeddings (not normalised); pass them with :attr:`class_bank`
            to ``sam2s.losses.tsl_loss`` when training.
        """
        if self.semantic_head is None:
            raise RuntimeError(
                f"config {self.config.name!r} has no semantic head; enable semantic.enabled for TSL"
            )
        batch, _channels, h, w = conditioned.shape
        current = conditioned.flatten(2).transpose(1, 2)
        current_pos = features.vision_pos.expand(batch, -1, -1, -1).flatten(2).transpose(1, 2)
        memory_tokens = memory_pos = None
        if memory is not None and not memory.is_empty:
            tokens, positions = self.memory_tokens(memory, batch, (h, w), conditioned.device)
            memory_tokens, memory_pos = tokens.transpose(0, 1), positions.transpose(0, 1)
        return self.semantic_head(memory_tokens, memory_pos, current, current_pos.to(current.dtype))

    @property
    def has_class_bank(self) -> bool:
        return self.vocabulary is not None

    @property
    def class_names(self) -> tuple[str, ...]:
        return () if self.vocabulary is None else self.vocabulary.class_names

    def set_vocabulary(self, bank: VocabularyBank | None) -> None:
        """Attach the category names and their ``(K, text_dim)`` text embeddings (``None`` detaches)."""
        if bank is None:
            self.vocabulary = None
            self.class_bank = self.class_bank.new_zeros(0, self.config.semantic.text_dim)
            return
        if bank.dim != self.config.semantic.text_dim:
            raise ValueError(
                f"the vocabulary bank has {bank.dim}-d embeddings ({bank.encoder_name}) but config "
                f"{self.config.name!r} expects semantic.text_dim = {self.config.semantic.text_dim}; build the "
                "bank with the text encoder the model was trained with"
            )
        self.vocabulary = bank
        self.class_bank = bank.embeddings.to(self.class_bank.device)

    def class_logits(self, class_embeddings: torch.Tensor) -> torch.Tensor:
        """``(B, text_dim)`` -> ``(B, K)`` cosine similarity to the class bank × ``logit_scale``."""
        if not self.has_class_bank:
            raise RuntimeError(
                "no class bank attached: load a SAM2S checkpoint that has one, or call set_vocabulary()"
            )
        return class_logits(class_embeddings.float(), self.class_bank, self.logit_scale)

    def class_probabilities(self, class_embedding: torch.Tensor) -> dict[str, float]:
        """Category probabilities of one object.

        Args:
            class_embedding: ``(text_dim,)`` or ``(1, text_dim)``.

        Returns:
            ``{category name: probability}`` in class-bank order (softmax over the K names).
        """
        embedding = class_embedding.reshape(1, -1)
        probabilities = self.class_logits(embedding).softmax(dim=-1)[0].tolist()
        return dict(zip(self.class_names, probabilities))

    # ------------------------------------------------------------------ checkpoint extras
    def checkpoint_extras(self) -> dict[str, Any]:
        """Entries stored beside the weights (plain data: loads with ``weights_only=True``)."""
        if self.vocabulary is None:
            return {}
        return {VOCABULARY_EXTRA_KEY: self.vocabulary.to_state_dict()}

    def apply_checkpoint_extras(self, extras: dict[str, Any]) -> None:
        """Attach what :meth:`checkpoint_extras` stored (the class bank), when this model has a TSL head."""
        state = extras.get(VOCABULARY_EXTRA_KEY)
        if state is not None and self.semantic_head is not None:
            self.set_vocabulary(VocabularyBank.from_state_dict(state))
