"""Distillation losses (paper Eq. 14), layer l of the student to layer l of the teacher.

    L = w_emb * MSE(E_s, E_t)                         embedding output (hidden_states[0])
      + w_att * sum_l MSE(O_s^l, O_t^l)               pre-softmax scores Q K^T / sqrt(d_k)
      + w_hid * sum_l MSE(H_s^l, H_t^l)               layer outputs (hidden_states[l])
      + w_logit * logit loss                          soft CE at temperature t (MSE for regression)
      + w_sup * supervised loss                       CE / MSE / span CE against the labels
      + w_mlm * masked-LM CE + w_nsp * next-sentence CE    general KD only (the student's own heads)

All weights default to 1 (the paper's unweighted sum). Choices the paper leaves open are
arguments here and config fields, with defaults written down in docs/deviations.md:
padding positions are excluded from every MSE (queries and keys for the scores), and
the score MSE is averaged over heads.

``normalisation="relative"`` (config ``loss_normalisation``, off by default) divides each
MSE, layer by layer, by the teacher's mean square of the same positions, so every
intermediate term is a relative error (1 for a student that outputs zeros) whatever the
scale of what it compares. In the plain sum the pre-softmax scores, whose magnitudes are
tens, drown every other term (20-60 times the rest on MiniLM, issue 13).

Students with fewer or narrower layers (the dense TinyBERT-style baseline) use TinyBERT's
rules: student layer m is distilled from teacher layer m * (N / M), and student hidden
states (embedding output included) pass through the student's learned ``fit_dense``
projection before the hidden-state MSE.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kbert.modeling import teacher_layers

TERMS = ("embedding", "attention", "hidden", "logit", "supervised")
NORMALISATIONS = ("none", "relative")  # config loss_normalisation
PRETRAINING_TERMS = ("mlm", "nsp")  # general KD with BERT pre-training inputs (kbert/pretraining.py)


def relative(error: torch.Tensor, teacher_square: torch.Tensor) -> torch.Tensor:
    """A squared error over the teacher's square on the same entries (both sums); never divides by 0."""
    return error / teacher_square.clamp_min(1e-12)


def masked_mse(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor, normalise: bool = False) -> torch.Tensor:
    """Mean squared error over the positions where ``mask`` is 1 (``normalise``: over the teacher's mean square).

    student, teacher: (B, T, d); mask: (B, T). Computed in fp32 (the inputs may be bf16 under autocast).
    """
    student, teacher = student.float(), teacher.float()
    m = mask.to(student.dtype).unsqueeze(-1)
    error = ((student - teacher) ** 2 * m).sum()
    if normalise:
        return relative(error, (teacher**2 * m).sum())
    return error / (m.sum() * student.shape[-1]).clamp_min(1)


def attention_score_mse(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor,
                        normalise: bool = False) -> torch.Tensor:
    """MSE of pre-softmax scores over real (query, key) pairs, averaged over heads
    (``normalise``: over the teacher's mean square score on the same pairs).

    student, teacher: (B, H, T, T), already carrying the additive mask on padded keys;
    mask: (B, T). Padded entries are dropped, so the -1e38 mask values never enter the loss.
    Computed in fp32.
    """
    student, teacher = student.float(), teacher.float()
    if student.shape != teacher.shape:
        raise ValueError(f"attention scores of shape {tuple(student.shape)} (student) vs {tuple(teacher.shape)} "
                         "(teacher): scores are distilled head to head, so the head counts must match")
    pair = (mask[:, :, None] * mask[:, None, :]).to(student.dtype).unsqueeze(1)  # (B, 1, T, T)
    zero = torch.zeros((), dtype=student.dtype)
    error = (torch.where(pair.bool(), student - teacher, zero) ** 2).sum()
    if normalise:
        return relative(error, (torch.where(pair.bool(), teacher, zero) ** 2).sum())
    return error / (pair.sum() * student.shape[1]).clamp_min(1)


def soft_cross_entropy(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """TinyBERT's prediction loss: CE(softmax(z_t / t), softmax(z_s / t)), mean over the batch; in fp32."""
    student_logits, teacher_logits = student_logits.float(), teacher_logits.float()
    targets = F.softmax(teacher_logits / temperature, dim=-1)
    return -(targets * F.log_softmax(student_logits / temperature, dim=-1)).sum(-1).mean()


def logit_loss(student, teacher, kind: str, temperature: float = 1.0) -> torch.Tensor:
    """Prediction-layer distillation for each kind of task head."""
    if kind == "classification":
        return soft_cross_entropy(student.logits, teacher.logits, temperature)
    if kind == "regression":
        # Not F.mse_loss: it saves the target for backward, and the teacher's logits are
        # inference-mode tensors (kbert/stages run the teacher under torch.inference_mode).
        return ((student.logits.float() - teacher.logits.float()) ** 2).mean()
    if kind == "span":
        return (
            soft_cross_entropy(student.start_logits, teacher.start_logits, temperature)
            + soft_cross_entropy(student.end_logits, teacher.end_logits, temperature)
        ) / 2
    raise ValueError(f"unknown task kind {kind!r}")


def masked_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """BERT's MLM loss: cross-entropy at the masked positions, mean over them; 0 when none was masked.

    logits: (N, V) at the batch's N masked positions only; labels: (N,) the original ids. fp32.
    """
    return F.cross_entropy(logits.float(), labels, reduction="sum") / max(len(labels), 1)


def next_sentence_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """BERT's NSP loss: cross-entropy of (B, 2) logits against (B,) labels (0: B follows A). fp32."""
    return F.cross_entropy(logits.float(), labels)


def intermediate_losses(student, teacher, mask: torch.Tensor, projection=None,
                        normalisation: str = "none") -> dict[str, torch.Tensor]:
    """Embedding, attention-score and hidden-state terms (each a sum over layers).

    ``projection`` (the student's ``fit_dense``) maps student hidden states to the teacher's
    width; it is required exactly when the widths differ. ``normalisation``: see the module.
    """
    if normalisation not in NORMALISATIONS:
        raise ValueError(f"loss normalisation {normalisation!r}; known: {list(NORMALISATIONS)}")
    norm = normalisation == "relative"
    mapped = teacher_layers(len(student.hidden_states) - 1, len(teacher.hidden_states) - 1)
    s_width, t_width = student.hidden_states[0].shape[-1], teacher.hidden_states[0].shape[-1]
    if (s_width != t_width) != (projection is not None):
        raise ValueError(
            f"student width {s_width}, teacher width {t_width}: a projection is needed exactly when they differ "
            "(KroneckerBERT keeps the teacher's width; dense students carry fit_dense)"
        )
    project = projection or (lambda h: h)
    t_hidden = [teacher.hidden_states[0]] + [teacher.hidden_states[n] for n in mapped]
    t_scores = [teacher.attention_scores[n - 1] for n in mapped]
    s_hidden = [project(h) for h in student.hidden_states]
    return {
        "embedding": masked_mse(s_hidden[0], t_hidden[0], mask, norm),
        "attention": sum(attention_score_mse(s, t, mask, norm) for s, t in zip(student.attention_scores, t_scores)),
        "hidden": sum(masked_mse(s, t, mask, norm) for s, t in zip(s_hidden[1:], t_hidden[1:])),
    }


def distillation_loss(student, teacher, mask, weights: dict[str, float], kind: str | None = None,
                      temperature: float = 1.0, projection=None,
                      normalisation: str = "none") -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted sum of the enabled terms (weight 0 = off) and each term's value for logging.

    ``kind`` None means there is no task head (general distillation): logit and supervised
    terms are skipped, mlm and nsp are the student's own ``mlm_loss``/``nsp_loss`` (its
    pre-training heads, ``kbert.pretraining``). The supervised term is the student model's
    own ``loss``. ``projection`` and ``normalisation``: see ``intermediate_losses``.
    """
    unknown = set(weights) - set(TERMS) - set(PRETRAINING_TERMS)
    if unknown:
        raise ValueError(f"unknown loss terms {sorted(unknown)}; known: {list(TERMS + PRETRAINING_TERMS)}")
    terms: dict[str, torch.Tensor] = {}
    if any(weights.get(k, 0) for k in ("embedding", "attention", "hidden")):
        intermediate = intermediate_losses(student, teacher, mask, projection, normalisation)
        terms.update({k: v for k, v in intermediate.items() if weights.get(k, 0)})
    if kind is not None and weights.get("logit", 0):
        terms["logit"] = logit_loss(student, teacher, kind, temperature)
    if kind is not None and weights.get("supervised", 0):
        terms["supervised"] = student.loss
    for term in PRETRAINING_TERMS:
        if kind is None and weights.get(term, 0):
            if getattr(student, f"{term}_loss", None) is None:
                raise ValueError(f"the {term} loss is on but the student has no {term} head: "
                                 "wrap it with kbert.pretraining.with_pretraining_heads")
            terms[term] = getattr(student, f"{term}_loss")
    if not terms:
        raise ValueError("every loss term is switched off; nothing to train on")
    total = sum(weights[k] * v for k, v in terms.items())
    return total, {k: float(v.detach()) for k, v in terms.items()}
