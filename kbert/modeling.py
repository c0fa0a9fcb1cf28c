"""KroneckerBERT, one file: a BERT encoder whose matrices are dense or Kronecker-factored.

The dense teacher and the Kronecker student run through this same code, so they expose
identical outputs for distillation:

    hidden_states:    tuple of L+1 tensors (batch, seq, hidden): embeddings, then each layer
    attention_scores: tuple of L tensors (batch, heads, seq, seq): Q K^T / sqrt(d_k) plus the
                      additive padding mask, i.e. the *pre-softmax* scores the paper distils

Parameter names follow Hugging Face ``BertModel`` exactly (``encoder.layer.3.attention.self.query``),
so any HF BERT checkpoint loads into the dense configuration with no key mapping; a
Kronecker layer stores ``A``, ``B`` and ``bias`` where a dense one stores ``weight`` and ``bias``.

Which matrices are Kronecker is set by ``KBertConfig.kronecker`` (``None`` = dense teacher):

    {"attention_a_shape": [m1, n1],   # A of W_Q, W_K, W_V, W_O (heads stacked: hidden x hidden)
     "ffn_a_shape": [m1, n1],         # A of W1 (intermediate x hidden); W2 uses it swapped
     "embedding_n": n,                # word embedding = A_E (V x d/n) kron B_E (1 x n)
     "rank": 1}                       # number of Kronecker sums

The equal-size baselines (issue "same-pipeline baselines") use the same code:

    low_rank = {"attention_rank": r, "ffn_rank": r, "embedding_rank": r}   # W = U V (kbert/layers/lowrank.py)
    teacher_hidden_size = 384   # a narrower dense student (TinyBERT-style): ``fit_dense`` maps its
                                # hidden states to the teacher's width for the distillation losses

``residual_permutation`` (``init: permuted``, kbert/permutation.py): the residual stream runs
in a permuted order of the hidden coordinates that is closer to Kronecker form; the model
reports ``hidden_states`` (and feeds its pooler) in the teacher's order, so it is a drop-in
for the unpermuted network.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
import torch.nn.functional as F
from transformers import PretrainedConfig, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.utils import ModelOutput

from kbert.kernels.attention import attention_context, attention_scores
from kbert.kernels.linear import autocast_dtype, heads_fusable, kron_heads
from kbert.layers.kronecker import KroneckerEmbedding, KroneckerLinear
from kbert.layers.lowrank import LowRankEmbedding, LowRankLinear


class KBertConfig(PretrainedConfig):
    model_type = "kbert"

    def __init__(
        self,
        vocab_size: int = 30522,
        hidden_size: int = 768,
        num_hidden_layers: int = 12,
        num_attention_heads: int = 12,
        intermediate_size: int = 3072,
        hidden_act: str = "gelu",
        hidden_dropout_prob: float = 0.1,
        attention_probs_dropout_prob: float = 0.1,
        max_position_embeddings: int = 512,
        type_vocab_size: int = 2,
        initializer_range: float = 0.02,
        layer_norm_eps: float = 1e-12,
        pad_token_id: int = 0,
        kronecker: dict | None = None,
        low_rank: dict | None = None,
        teacher_hidden_size: int | None = None,
        residual_permutation: list[int] | None = None,
        **kwargs,
    ):
        super().__init__(pad_token_id=pad_token_id, **kwargs)
        if hidden_size % num_attention_heads:
            raise ValueError(f"hidden_size {hidden_size} is not a multiple of num_attention_heads {num_attention_heads}")
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.max_position_embeddings = max_position_embeddings
        self.type_vocab_size = type_vocab_size
        self.initializer_range = initializer_range
        self.layer_norm_eps = layer_norm_eps
        self.kronecker = dict(kronecker) if kronecker else None
        self.low_rank = dict(low_rank) if low_rank else None
        if self.kronecker and self.low_rank:
            raise ValueError("a model is Kronecker-factored or low-rank, not both")
        # Set only for students narrower than their teacher (then they carry ``fit_dense``).
        self.teacher_hidden_size = teacher_hidden_size if teacher_hidden_size != hidden_size else None
        if residual_permutation is not None and sorted(residual_permutation) != list(range(hidden_size)):
            raise ValueError(f"residual_permutation must be a permutation of range({hidden_size})")
        self.residual_permutation = list(residual_permutation) if residual_permutation is not None else None

    @classmethod
    def from_bert_config(cls, bert_config, **overrides) -> "KBertConfig":
        """A dense KBertConfig with the architecture of an HF ``BertConfig``."""
        if getattr(bert_config, "model_type", None) not in ("bert", "kbert"):
            raise ValueError(
                f"checkpoint has model_type {getattr(bert_config, 'model_type', None)!r}; "
                "kbert can only load BERT-architecture checkpoints (model_type 'bert')"
            )
        if getattr(bert_config, "position_embedding_type", "absolute") != "absolute":
            raise ValueError("only absolute position embeddings are supported")
        keys = [
            "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
            "hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings",
            "type_vocab_size", "initializer_range", "layer_norm_eps", "pad_token_id",
        ]
        fields = {k: getattr(bert_config, k) for k in keys}
        fields.update(overrides)
        return cls(**fields)


def make_linear(config: KBertConfig, group: str, in_features: int, out_features: int, swap: bool = False) -> nn.Module:
    """The ``group`` ("attention" or "ffn") matrix in this config's factorisation.

    Dense ``nn.Linear`` by default; ``KroneckerLinear`` (A shape swapped for FFN W2, whose
    matrix is W1's transposed in shape) or ``LowRankLinear`` when the config says so.
    """
    if config.kronecker is not None:
        a_shape = config.kronecker[f"{group}_a_shape"]
        a_shape = (a_shape[1], a_shape[0]) if swap else tuple(a_shape)
        return KroneckerLinear(in_features, out_features, a_shape, rank=int(config.kronecker.get("rank", 1)))
    if config.low_rank is not None:
        return LowRankLinear(in_features, out_features, int(config.low_rank[f"{group}_rank"]))
    return nn.Linear(in_features, out_features)


# Students with fewer layers (the dense TinyBERT-style baseline): which teacher layer each
# student layer is distilled from (kbert.losses) and, with init: selected, copied from.
def teacher_layers(student_layers: int, teacher_layers: int) -> list[int]:
    """Teacher layer (1-based) distilled into each student layer 1..M: m * N / M."""
    if teacher_layers % student_layers:
        raise ValueError(
            f"student has {student_layers} layers, teacher {teacher_layers}: layer m is distilled from teacher "
            f"layer m * {teacher_layers}/{student_layers}, so the student depth must divide the teacher's"
        )
    step = teacher_layers // student_layers
    return [m * step for m in range(1, student_layers + 1)]


# --------------------------------------------------------------------------------------
# Embeddings
# --------------------------------------------------------------------------------------


class KBertEmbeddings(nn.Module):
    """Word (dense or Kronecker) + position + token-type embeddings, then LayerNorm."""

    def __init__(self, config: KBertConfig):
        super().__init__()
        V, d, pad = config.vocab_size, config.hidden_size, config.pad_token_id
        if config.kronecker is not None:
            self.word_embeddings = KroneckerEmbedding(V, d, int(config.kronecker["embedding_n"]), pad)
        elif config.low_rank is not None:
            self.word_embeddings = LowRankEmbedding(V, d, int(config.low_rank["embedding_rank"]), pad)
        else:
            self.word_embeddings = nn.Embedding(V, d, padding_idx=pad)
        # Position and token-type tables stay dense: only then does KroneckerBERT_21 count to
        # the paper's 5.2M parameters (see docs/deviations.md).
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)  # (T,)
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions) + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(x))  # (B, T, d)


# --------------------------------------------------------------------------------------
# Transformer layer
# --------------------------------------------------------------------------------------


class KBertSelfAttention(nn.Module):
    """Multi-head attention that also returns the pre-softmax scores.

    W_Q, W_K, W_V are the per-head matrices stacked into one (d x d) matrix each, which is
    what gets Kronecker-factored (paper Eq. 10), so a B factor can be shared by all heads.
    """

    def __init__(self, config: KBertConfig):
        super().__init__()
        d = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = d // self.num_heads
        self.query = make_linear(config, "attention", d, d)
        self.key = make_linear(config, "attention", d, d)
        self.value = make_linear(config, "attention", d, d)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)
        self._decide_fusion()
        for layer in (self.query, self.key, self.value):
            if isinstance(layer, KroneckerLinear):
                layer.on_replan(self._decide_fusion)

    def _decide_fusion(self) -> None:
        """Whether Q/K/V run fused (``kron_heads``): fixed by their shapes and plans, so
        decided here and again only when one of them is re-planned."""
        self.fused_qkv = heads_fusable([self.query, self.key, self.value], self.num_heads)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        return x.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, T, dh)

    def _qkv(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Q, K, V as contiguous (B*H, T, dh) each.

        Kronecker Q/K/V of one shape run fused (``kron_heads``: one pass applies the three
        B factors, the bias pass writes the head layout); otherwise each projection, then
        its head transpose.
        """
        B, T, _ = h.shape
        fused = kron_heads(h, [self.query, self.key, self.value], self.num_heads) if self.fused_qkv else None
        if fused is not None:
            return tuple(t.view(B * self.num_heads, T, self.head_dim) for t in fused.unbind(0))
        return tuple(
            self._heads(layer(h)).reshape(B * self.num_heads, T, self.head_dim) for layer in (self.query, self.key, self.value)
        )

    def forward(self, h: torch.Tensor, additive_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, T, d = h.shape
        H = self.num_heads
        q, k, v = self._qkv(h)  # (B*H, T, dh)
        # scores = Q K^T / sqrt(dh) + mask in one batched GEMM; the mask (B, 1, 1|T, T) is
        # broadcast over heads (a copy of B*H*T values for the usual key mask).
        # Inference on CPU: the same two products as C passes (scale and mask fused, context
        # written in (B, T, d) directly); None where they do not apply.
        alpha = 1.0 / math.sqrt(self.head_dim)
        scores = attention_scores(q, k, additive_mask, H, alpha)
        if scores is None:
            mask = additive_mask.expand(B, H, additive_mask.shape[-2], T).reshape(B * H, -1, T)
            scores = torch.baddbmm(mask, q, k.transpose(1, 2), alpha=alpha)  # (B*H, T, T)
        probs = self.dropout(F.softmax(scores, dim=-1, dtype=torch.float32))  # fp32 even under autocast
        context = attention_context(probs, v, H)
        if context is None:
            context = torch.bmm(probs, v).view(B, H, T, self.head_dim).transpose(1, 2).reshape(B, T, d)
        return context, scores.view(B, H, T, T)


class KBertSelfOutput(nn.Module):
    """W_O, dropout, residual, LayerNorm."""

    def __init__(self, config: KBertConfig):
        super().__init__()
        d = config.hidden_size
        self.dense = make_linear(config, "attention", d, d)
        self.LayerNorm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, context: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(context)) + residual)


class KBertAttention(nn.Module):
    def __init__(self, config: KBertConfig):
        super().__init__()
        self.self = KBertSelfAttention(config)
        self.output = KBertSelfOutput(config)

    def forward(self, h: torch.Tensor, additive_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        context, scores = self.self(h, additive_mask)
        return self.output(context, h), scores


class KBertIntermediate(nn.Module):
    """FFN W1 (d -> d_ff) and the activation."""

    def __init__(self, config: KBertConfig):
        super().__init__()
        self.dense = make_linear(config, "ffn", config.hidden_size, config.intermediate_size)
        self.act = ACT2FN[config.hidden_act]

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.act(self.dense(h))


class KBertOutput(nn.Module):
    """FFN W2 (d_ff -> d), residual, LayerNorm."""

    def __init__(self, config: KBertConfig):
        super().__init__()
        self.dense = make_linear(config, "ffn", config.intermediate_size, config.hidden_size, swap=True)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, ffn: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(ffn)) + residual)


class KBertLayer(nn.Module):
    def __init__(self, config: KBertConfig):
        super().__init__()
        self.attention = KBertAttention(config)
        self.intermediate = KBertIntermediate(config)
        self.output = KBertOutput(config)

    def forward(self, h: torch.Tensor, additive_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, scores = self.attention(h, additive_mask)
        return self.output(self.intermediate(a), a), scores


class KBertEncoder(nn.Module):
    def __init__(self, config: KBertConfig):
        super().__init__()
        self.layer = nn.ModuleList(KBertLayer(config) for _ in range(config.num_hidden_layers))


class KBertPooler(nn.Module):
    """tanh(W h_[CLS]); kept dense and copied from the teacher."""

    def __init__(self, config: KBertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = nn.Tanh()

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.activation(self.dense(h[:, 0]))


# --------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------


@dataclass
class KBertModelOutput(ModelOutput):
    last_hidden_state: torch.Tensor | None = None
    pooler_output: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attention_scores: tuple[torch.Tensor, ...] | None = None


@dataclass
class KBertTaskOutput(ModelOutput):
    """Task output: ``logits`` for sequence tasks, ``start_logits``/``end_logits`` for QA."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    start_logits: torch.Tensor | None = None
    end_logits: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attention_scores: tuple[torch.Tensor, ...] | None = None


class KBertPreTrainedModel(PreTrainedModel):
    config_class = KBertConfig
    base_model_prefix = "bert"
    _keys_to_ignore_on_load_unexpected = [r"position_ids", r"cls\.", r"pooler"]

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=std)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, (KroneckerLinear, KroneckerEmbedding, LowRankLinear, LowRankEmbedding)):
            module.reset_parameters()


class KBertModel(KBertPreTrainedModel):
    base_model_prefix = ""

    def __init__(self, config: KBertConfig):
        super().__init__(config)
        self.embeddings = KBertEmbeddings(config)
        self.encoder = KBertEncoder(config)
        self.pooler = KBertPooler(config)
        if config.teacher_hidden_size:
            # TinyBERT's learned projection (student width -> teacher width) for the embedding
            # and hidden-state losses; used only in distillation, not counted as a parameter.
            self.fit_dense = nn.Linear(config.hidden_size, config.teacher_hidden_size)
        self.set_residual_permutation(config.residual_permutation)
        self.post_init()

    def set_residual_permutation(self, permutation: list[int] | None) -> None:
        """Run the residual stream in ``permutation``'s order (the weights must already be in
        it: kbert.permutation.apply) and report hidden states in the original order."""
        self.config.residual_permutation = list(permutation) if permutation is not None else None
        # (hidden,) position of each original coordinate in the permuted order, made on first
        # use on the input's device. Not a buffer: from_pretrained builds the model on the meta
        # device and leaves non-persistent buffers without data; the config holds the order.
        self._to_teacher_order = None

    def in_teacher_order(self, h: torch.Tensor) -> torch.Tensor:
        """(B, T, hidden) in the residual stream's order -> the teacher's (identity when unpermuted)."""
        if self.config.residual_permutation is None:
            return h
        if self._to_teacher_order is None or self._to_teacher_order.device != h.device:
            self._to_teacher_order = torch.argsort(torch.tensor(self.config.residual_permutation, device=h.device))
        return h.index_select(-1, self._to_teacher_order)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> KBertModelOutput:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        h = self.embeddings(input_ids, token_type_ids)
        # Additive key mask, broadcast over heads and queries: (B, 1, 1, T). A large finite
        # negative (not -inf) keeps fully masked rows finite; under autocast the scores are
        # computed in its dtype, where fp32's most negative value would round to -inf.
        dtype = autocast_dtype(h) or h.dtype
        additive = (1.0 - attention_mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min
        hidden_states, scores = [self.in_teacher_order(h)], []
        for layer in self.encoder.layer:
            h, s = layer(h, additive)
            hidden_states.append(self.in_teacher_order(h))
            scores.append(s)
        return KBertModelOutput(
            last_hidden_state=hidden_states[-1],
            pooler_output=self.pooler(hidden_states[-1]),
            hidden_states=tuple(hidden_states),
            attention_scores=tuple(scores),
        )


class KBertForSequenceClassification(KBertPreTrainedModel):
    """[CLS] pooler -> dropout -> linear; ``num_labels == 1`` means regression (MSE)."""

    def __init__(self, config: KBertConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bert = KBertModel(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None) -> KBertTaskOutput:
        out = self.bert(input_ids, attention_mask, token_type_ids)
        logits = self.classifier(self.dropout(out.pooler_output))  # (B, num_labels)
        loss = None
        if labels is not None:
            if self.num_labels == 1:
                loss = F.mse_loss(logits.squeeze(-1).float(), labels.float())  # losses in fp32 under autocast
            else:
                loss = F.cross_entropy(logits.float(), labels)
        return KBertTaskOutput(loss=loss, logits=logits, hidden_states=out.hidden_states, attention_scores=out.attention_scores)


class KBertForQuestionAnswering(KBertPreTrainedModel):
    """Span QA head: one linear layer giving start and end logits per token."""

    def __init__(self, config: KBertConfig):
        config.num_labels = 2
        super().__init__(config)
        self.bert = KBertModel(config)
        self.qa_outputs = nn.Linear(config.hidden_size, 2)
        self.post_init()

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, start_positions=None, end_positions=None) -> KBertTaskOutput:
        out = self.bert(input_ids, attention_mask, token_type_ids)
        start_logits, end_logits = self.qa_outputs(out.last_hidden_state).unbind(-1)  # (B, T) each
        loss = None
        if start_positions is not None and end_positions is not None:
            loss = (F.cross_entropy(start_logits.float(), start_positions)
                    + F.cross_entropy(end_logits.float(), end_positions)) / 2
        return KBertTaskOutput(
            loss=loss, start_logits=start_logits, end_logits=end_logits,
            hidden_states=out.hidden_states, attention_scores=out.attention_scores,
        )


TASK_MODELS = {
    "classification": KBertForSequenceClassification,
    "regression": KBertForSequenceClassification,
    "span": KBertForQuestionAnswering,
}
