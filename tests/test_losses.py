"""Distillation losses: zero when student == teacher, masking, and pinned golden values."""

import pytest
import torch

from kbert.losses import attention_score_mse, distillation_loss, masked_mse, soft_cross_entropy
from helpers import ALL_LOSSES, GOLDEN_LOSSES, tiny_batch, tiny_pair

def test_every_intermediate_term_is_zero_when_student_is_teacher():
    teacher, _ = tiny_pair()
    batch = tiny_batch()
    out = teacher(**batch)
    _, terms = distillation_loss(out, out, batch["attention_mask"], ALL_LOSSES, "classification")
    for name in ("embedding", "attention", "hidden"):
        assert terms[name] == 0.0
    # Soft CE of a distribution with itself is its entropy, the minimum over student logits.
    logits = out.logits.detach().requires_grad_(True)
    soft_cross_entropy(logits, out.logits.detach(), 1.0).backward()
    assert logits.grad.abs().max() < 1e-6


def test_padding_never_enters_the_losses():
    s, t = torch.randn(2, 5, 4), torch.randn(2, 5, 4)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    t2 = t.clone()
    t2[0, 3:] += 100.0  # change only padded positions
    assert masked_mse(s, t, mask) == pytest.approx(float(masked_mse(s, t2, mask)))
    scores_s, scores_t = torch.randn(2, 3, 5, 5), torch.randn(2, 3, 5, 5)
    scores_t2 = scores_t.clone()
    scores_t2[0, :, :, 3:] = torch.finfo(torch.float32).min  # the additive mask on padded keys
    scores_t2[0, :, 3:, :] = 7.0  # padded queries
    full = attention_score_mse(scores_s, scores_t2, mask)
    assert torch.isfinite(full)
    valid = mask[:, :, None] * mask[:, None, :]
    selected = valid[:, None].expand_as(scores_s).bool()
    expected = ((scores_s - scores_t2)[selected] ** 2).mean()
    assert float(full) == pytest.approx(float(expected), rel=1e-6)


def test_depth_mismatch_is_a_clear_error():
    """Student layer m takes teacher layer m * N / M, so M must divide N (here 2 vs 3)."""
    teacher, student = tiny_pair()
    batch = tiny_batch()
    t_out = teacher(**batch)
    s_out = student(**batch)
    t_out.hidden_states = t_out.hidden_states + t_out.hidden_states[-1:]
    with pytest.raises(ValueError, match="the student depth must divide the teacher's"):
        distillation_loss(s_out, t_out, batch["attention_mask"], ALL_LOSSES, "classification")


def test_all_terms_off_is_an_error():
    teacher, _ = tiny_pair()
    out = teacher(**tiny_batch())
    with pytest.raises(ValueError, match="switched off"):
        distillation_loss(out, out, tiny_batch()["attention_mask"], {k: 0.0 for k in ALL_LOSSES}, "classification")


def test_golden_losses_on_tiny_models():
    """Pinned values: a change here means the loss definitions (or the model) changed."""
    teacher, student = tiny_pair()
    batch = tiny_batch()
    total, terms = distillation_loss(student(**batch), teacher(**batch), batch["attention_mask"], ALL_LOSSES, "classification")
    assert terms == pytest.approx(GOLDEN_LOSSES, rel=1e-3, abs=1e-6)
    assert total.item() == pytest.approx(sum(GOLDEN_LOSSES.values()), rel=1e-3)


# --------------------------------------------------------------------------------------
# loss_normalisation: relative (each intermediate MSE over the teacher's mean square)
# --------------------------------------------------------------------------------------

def _outputs(hidden, scores):
    return type("Out", (), {"hidden_states": hidden, "attention_scores": scores})()


def _random_outputs(seed, layers=2, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    hidden = tuple(scale * torch.randn(2, 5, 8, generator=g) for _ in range(layers + 1))
    scores = tuple(scale * torch.randn(2, 4, 5, 5, generator=g) for _ in range(layers))
    return _outputs(hidden, scores)


MASK = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
INTERMEDIATE = {"embedding": 1.0, "attention": 1.0, "hidden": 1.0}


def test_relative_terms_are_one_per_layer_for_a_student_that_outputs_zeros():
    teacher = _random_outputs(0)
    zeros = _outputs(tuple(torch.zeros_like(h) for h in teacher.hidden_states),
                     tuple(torch.zeros_like(s) for s in teacher.attention_scores))
    _, terms = distillation_loss(zeros, teacher, MASK, INTERMEDIATE, normalisation="relative")
    assert terms == pytest.approx({"embedding": 1.0, "attention": 2.0, "hidden": 2.0}, rel=1e-6)  # 2 layers


def test_relative_terms_do_not_depend_on_the_units_while_plain_ones_do():
    student, teacher = _random_outputs(1), _random_outputs(2)
    big_student, big_teacher = _random_outputs(1, scale=10.0), _random_outputs(2, scale=10.0)
    _, plain = distillation_loss(student, teacher, MASK, INTERMEDIATE)
    _, plain_big = distillation_loss(big_student, big_teacher, MASK, INTERMEDIATE)
    _, rel = distillation_loss(student, teacher, MASK, INTERMEDIATE, normalisation="relative")
    _, rel_big = distillation_loss(big_student, big_teacher, MASK, INTERMEDIATE, normalisation="relative")
    assert rel_big == pytest.approx(rel, rel=1e-5)
    assert plain_big == pytest.approx({k: 100 * v for k, v in plain.items()}, rel=1e-5)
    # Each layer's relative error is its plain MSE over the teacher's mean square on the same entries.
    t = teacher.hidden_states[0]
    m = MASK.bool()
    expected = ((student.hidden_states[0] - t)[m] ** 2).sum() / (t[m] ** 2).sum()
    assert rel["embedding"] == pytest.approx(float(expected), rel=1e-6)


def test_relative_normalisation_ignores_padding_and_is_zero_for_the_teacher_itself():
    teacher = _random_outputs(3)
    _, terms = distillation_loss(teacher, teacher, MASK, INTERMEDIATE, normalisation="relative")
    assert all(v == 0.0 for v in terms.values())
    scores = teacher.attention_scores[0].clone()
    scores[0, :, :, 3:] = torch.finfo(torch.float32).min  # padded keys carry the additive mask
    zero = torch.zeros_like(scores)
    value = attention_score_mse(zero, scores, MASK, normalise=True)
    assert torch.isfinite(value) and float(value) == pytest.approx(1.0, rel=1e-6)


def test_unknown_normalisation_is_a_clear_error():
    teacher = _random_outputs(4)
    with pytest.raises(ValueError, match="loss normalisation 'batch'; known: \\['none', 'relative'\\]"):
        distillation_loss(teacher, teacher, MASK, INTERMEDIATE, normalisation="batch")
