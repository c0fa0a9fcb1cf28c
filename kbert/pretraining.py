"""The student's MLM and NSP heads for general KD (the paper's MLM + NSP terms, §3.5.2).

Only the general-kd stage uses them: it wraps the student encoder in ``PretrainingStudent``,
trains encoder and heads together and saves the encoder alone (task KD starts fresh task
heads, so the pre-training heads have no later use). Both heads start as copies of the
teacher's (HF ``BertForPreTraining``'s ``cls.predictions`` and ``cls.seq_relationship``),
as every uncompressed layer does.

The MLM decoder weight is *tied* to the student's word embedding (Kronecker A_E kron B_E,
low-rank or dense), not a dense copy of the teacher's decoder: BERT and TinyBERT tie it to
the input embedding, so the MLM term trains the compressed embedding as it trains BERT's.
A dense copy would add a V x d matrix (23.4M for BERT-base, more than KroneckerBERT_8
itself) that the student never keeps, and would leave the embedding out of the MLM gradient.
The teacher's decoder is BERT-base's word embedding, so at the SVD init the tied decoder is
its nearest-Kronecker approximation. Only the decoder's bias is copied.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers.activations import ACT2FN
from transformers.utils import ModelOutput

from kbert.data.batching import NOT_PREDICTED
from kbert.losses import masked_lm_loss, next_sentence_loss
from kbert.modeling import KBertConfig, KBertModel


class MaskedLMTransform(nn.Module):
    """HF's ``cls.predictions.transform``: dense, activation, LayerNorm (d -> d)."""

    def __init__(self, config: KBertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = ACT2FN[config.hidden_act]
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.act(self.dense(h)))


class MaskedLMPrediction(nn.Module):
    """HF's ``cls.predictions`` without its decoder weight: the caller passes the tied one."""

    def __init__(self, config: KBertConfig):
        super().__init__()
        self.transform = MaskedLMTransform(config)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, h: torch.Tensor, decoder: torch.Tensor) -> torch.Tensor:
        """h: (N, d) hidden states; decoder: (V, d) word embedding table -> (N, V) logits."""
        return self.transform(h) @ decoder.T + self.bias


class PretrainingHeads(nn.Module):
    """The heads the switched-on terms need, under HF's names (less ``cls.``), so the teacher's
    weights load key for key: ``predictions`` (mlm) and ``seq_relationship`` (nsp, on the pooler)."""

    def __init__(self, config: KBertConfig, terms: list[str]):
        super().__init__()
        self.predictions = MaskedLMPrediction(config) if "mlm" in terms else None
        self.seq_relationship = nn.Linear(config.hidden_size, 2) if "nsp" in terms else None


@dataclass
class PretrainingOutput(ModelOutput):
    """What ``distillation_loss`` reads: the encoder's outputs and the heads' losses (None = head off)."""

    hidden_states: tuple[torch.Tensor, ...] | None = None
    attention_scores: tuple[torch.Tensor, ...] | None = None
    mlm_loss: torch.Tensor | None = None
    nsp_loss: torch.Tensor | None = None


class PretrainingStudent(nn.Module):
    """A student encoder with its pre-training heads; the forward computes the heads' losses."""

    def __init__(self, encoder: KBertModel, heads: PretrainingHeads):
        super().__init__()
        self.encoder = encoder
        self.heads = heads

    def forward(self, input_ids, attention_mask, token_type_ids, labels, next_sentence_label) -> PretrainingOutput:
        """input_ids, attention_mask, token_type_ids, labels (MLM, ``NOT_PREDICTED`` where not
        masked): (B, T); next_sentence_label: (B,)."""
        out = self.encoder(input_ids, attention_mask, token_type_ids)
        result = PretrainingOutput(hidden_states=out.hidden_states, attention_scores=out.attention_scores)
        if self.heads.predictions is not None:
            masked = labels != NOT_PREDICTED  # logits at the masked positions only: (N, V), not (B, T, V)
            decoder = self.encoder.embeddings.word_embeddings.weight  # (V, d), tied
            logits = self.heads.predictions(out.last_hidden_state[masked], decoder)
            result.mlm_loss = masked_lm_loss(logits, labels[masked])
        if self.heads.seq_relationship is not None:
            result.nsp_loss = next_sentence_loss(self.heads.seq_relationship(out.pooler_output), next_sentence_label)
        return result


def with_pretraining_heads(encoder: KBertModel, teacher_heads: dict[str, torch.Tensor], terms: list[str],
                           student: str) -> PretrainingStudent:
    """``encoder`` with the heads ``terms`` need, loaded from the teacher's (``kbert.teachers.pretraining_heads``)."""
    if encoder.config.teacher_hidden_size:
        raise ValueError(
            f"student {student!r} is {encoder.config.hidden_size} wide, its teacher {encoder.config.teacher_hidden_size}: "
            f"the {'/'.join(terms)} heads are copied from the teacher, so they need the teacher's width. TinyBERT's "
            f"general KD has no MLM/NSP terms either: set general_kd.per_student.{student}.losses.{{mlm,nsp}} to 0")
    if "mlm" in terms and encoder.config.residual_permutation is not None:
        # The decoder is tied to the word embedding, whose columns run in the permuted order
        # while the hidden states it reads are reported in the teacher's.
        raise ValueError(f"student {student!r} has init: permuted, whose word embedding is reordered: the MLM "
                         f"decoder tied to it does not apply. Set general_kd.per_student.{student}.losses.mlm to 0 "
                         "or use init: svd")
    heads = PretrainingHeads(encoder.config, terms)
    heads.load_state_dict(teacher_heads)  # strict: every head weight the terms need comes from the teacher
    return PretrainingStudent(encoder, heads)
