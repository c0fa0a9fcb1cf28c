"""Distillation losses (paper Eq. 14), layer l of the student to layer l of the teacher.

    L = w_emb * MSE(E_s, E_t)                         embedding output (hidden_states[0])
      + w_att * sum_l MSE(O_s^l, O_t^l)               pre-softmax scores Q K^T / sqrt(d_k)
      + w_hid * sum_l MSE(H_s^l, H_t^l)               layer outputs (hidden_states[l])
      + w_logit * logit loss                          soft CE at temperature t (MSE for regression)
      + w_sup * supervised loss                       CE / MSE / span CE against the labels

All weights default to 1 (the paper's unweighted sum). Choices the paper leaves open are
arguments here and config fields, with defaults written down in docs/deviations.md:
padding positions are excluded from every MSE (queries and keys for the scores), and
the score MSE is averaged over heads.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

TERMS = ("embedding", "attention", "hidden", "logit", "supervised")


def masked_mse(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the positions where ``mask`` is 1.

    student, teacher: (B, T, d); mask: (B, T).
    """
    m = mask.to(student.dtype).unsqueeze(-1)
    return ((student - teacher) ** 2 * m).sum() / (m.sum() * student.shape[-1]).clamp_min(1)


def attention_score_mse(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MSE of pre-softmax scores over real (query, key) pairs, averaged over heads.

    student, teacher: (B, H, T, T), already carrying the additive mask on padded keys;
    mask: (B, T). Padded entries are dropped, so the -1e38 mask values never enter the loss.
    """
    pair = (mask[:, :, None] * mask[:, None, :]).to(student.dtype).unsqueeze(1)  # (B, 1, T, T)
    diff = torch.where(pair.bool(), student - teacher, torch.zeros((), dtype=student.dtype))
    return (diff**2).sum() / (pair.sum() * student.shape[1]).clamp_min(1)


def soft_cross_entropy(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """TinyBERT's prediction loss: CE(softmax(z_t / t), softmax(z_s / t)), mean over the batch."""
    targets = F.softmax(teacher_logits / temperature, dim=-1)
    return -(targets * F.log_softmax(student_logits / temperature, dim=-1)).sum(-1).mean()


def logit_loss(student, teacher, kind: str, temperature: float = 1.0) -> torch.Tensor:
    """Prediction-layer distillation for each kind of task head."""
    if kind == "classification":
        return soft_cross_entropy(student.logits, teacher.logits, temperature)
    if kind == "regression":
        return F.mse_loss(student.logits, teacher.logits)
    if kind == "span":
        return (
            soft_cross_entropy(student.start_logits, teacher.start_logits, temperature)
            + soft_cross_entropy(student.end_logits, teacher.end_logits, temperature)
        ) / 2
    raise ValueError(f"unknown task kind {kind!r}")


def intermediate_losses(student, teacher, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """Embedding, attention-score and hidden-state terms; student and teacher must have equal depth."""
    if len(student.hidden_states) != len(teacher.hidden_states):
        raise ValueError(
            f"student has {len(student.hidden_states) - 1} layers, teacher {len(teacher.hidden_states) - 1}: "
            "KroneckerBERT distils layer l to layer l, so the depths must match"
        )
    if student.hidden_states[0].shape[-1] != teacher.hidden_states[0].shape[-1]:
        raise ValueError("student and teacher hidden sizes differ; KroneckerBERT keeps the teacher's width")
    return {
        "embedding": masked_mse(student.hidden_states[0], teacher.hidden_states[0], mask),
        "attention": sum(attention_score_mse(s, t, mask) for s, t in zip(student.attention_scores, teacher.attention_scores)),
        "hidden": sum(masked_mse(s, t, mask) for s, t in zip(student.hidden_states[1:], teacher.hidden_states[1:])),
    }


def distillation_loss(student, teacher, mask, weights: dict[str, float], kind: str | None = None,
                      temperature: float = 1.0) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted sum of the enabled terms (weight 0 = off) and each term's value for logging.

    ``kind`` None means there is no task head (general distillation): logit and supervised
    terms are skipped. The supervised term is the student model's own ``loss``.
    """
    unknown = set(weights) - set(TERMS) - {"mlm", "nsp"}
    if unknown:
        raise ValueError(f"unknown loss terms {sorted(unknown)}; known: {list(TERMS)}")
    terms: dict[str, torch.Tensor] = {}
    if any(weights.get(k, 0) for k in ("embedding", "attention", "hidden")):
        terms.update({k: v for k, v in intermediate_losses(student, teacher, mask).items() if weights.get(k, 0)})
    if kind is not None and weights.get("logit", 0):
        terms["logit"] = logit_loss(student, teacher, kind, temperature)
    if kind is not None and weights.get("supervised", 0):
        terms["supervised"] = student.loss
    if not terms:
        raise ValueError("every loss term is switched off; nothing to train on")
    total = sum(weights[k] * v for k, v in terms.items())
    return total, {k: float(v.detach()) for k, v in terms.items()}
