"""Function-preserving permutations (init: permuted, kbert/permutation.py)."""

import pytest
import torch

from kbert import permutation
from kbert.losses import distillation_loss
from kbert.modeling import KBertConfig, KBertForSequenceClassification, KBertModel
from kbert.students import compress
from helpers import ALL_LOSSES, TINY, tiny_batch

SHAPES = {"attention_a_shape": [2, 2], "ffn_a_shape": [2, 2], "embedding_n": 2, "rank": 1}


def tiny_teacher(seed=0):
    torch.manual_seed(seed)
    return KBertForSequenceClassification(KBertConfig(**TINY, num_labels=3)).eval()


def random_permutations(config, seed=1):
    g = torch.Generator().manual_seed(seed)
    d, f, heads = config.hidden_size, config.intermediate_size, config.num_attention_heads
    size = d // heads

    def within_heads():
        return torch.cat([h * size + torch.randperm(size, generator=g) for h in range(heads)])

    layers = config.num_hidden_layers
    return permutation.Permutations(torch.randperm(d, generator=g), [within_heads() for _ in range(layers)],
                                    [within_heads() for _ in range(layers)],
                                    [torch.randperm(f, generator=g) for _ in range(layers)])


def test_a_permuted_model_computes_exactly_what_the_original_computes():
    teacher = tiny_teacher()
    moved = permutation.apply(teacher, random_permutations(teacher.config))
    assert not torch.equal(moved.bert.encoder.layer[0].attention.self.query.weight,
                           teacher.bert.encoder.layer[0].attention.self.query.weight)
    batch = tiny_batch()
    a, b = teacher(**batch), moved(**batch)
    torch.testing.assert_close(b.logits, a.logits, rtol=1e-5, atol=1e-5)
    for x, y in zip(a.hidden_states, b.hidden_states):
        torch.testing.assert_close(y, x, rtol=1e-5, atol=1e-5)
    for x, y in zip(a.attention_scores, b.attention_scores):
        torch.testing.assert_close(y, x, rtol=1e-5, atol=1e-4)


def test_the_order_survives_save_and_load(tmp_path):
    teacher = tiny_teacher()
    moved = permutation.apply(teacher.bert, random_permutations(teacher.config))
    moved.save_pretrained(tmp_path)
    loaded = KBertModel.from_pretrained(tmp_path).eval()
    assert loaded.config.residual_permutation == moved.config.residual_permutation
    batch = tiny_batch()
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    torch.testing.assert_close(loaded(**inputs).last_hidden_state, teacher.bert(**inputs).last_hidden_state,
                               rtol=1e-5, atol=1e-5)


def test_search_never_raises_the_error_and_lowers_it_on_a_shuffled_kronecker_network():
    """A network whose matrices are exact Kronecker products in a hidden order: the plain SVD of
    the shuffled order loses energy, the search has to find some of it again (a local search:
    measured 0.745 -> 0.722, not all of it)."""
    teacher = tiny_teacher()
    exact, _ = compress(teacher.bert, SHAPES)                   # exact Kronecker products ...
    dense = KBertModel(KBertConfig(**TINY)).eval()
    dense.load_state_dict({k: v for k, v in exact.state_dict().items() if k in dense.state_dict()}, strict=False)
    for name, module in exact.named_modules():
        if hasattr(module, "A"):
            dict(dense.named_modules())[name].weight.data = module.weight.detach().clone()
    shuffled = permutation.apply(dense, random_permutations(dense.config, seed=3))   # ... hidden by a shuffle
    shuffled.set_residual_permutation(None)
    perms, report = permutation.search(shuffled, SHAPES, iterations=3)
    steps = [report["relative_error_mean_unpermuted"]] + report["relative_error_mean_by_iteration"]
    assert all(later <= earlier + 1e-9 for earlier, later in zip(steps, steps[1:]))
    assert steps[-1] < steps[0] - 0.01
    assert sorted(perms.residual.tolist()) == list(range(TINY["hidden_size"]))
    head = TINY["hidden_size"] // TINY["num_attention_heads"]
    for p in perms.qk + perms.vo:        # within heads only: head h's slots hold head h's rows
        assert all(int(p[i]) // head == i // head for i in range(len(p)))


def test_permuted_init_keeps_the_function_and_lowers_the_init_error():
    teacher = tiny_teacher()
    plain, plain_report = compress(teacher, SHAPES)
    student, report = compress(teacher, {**SHAPES, "init": "permuted"})
    assert student.config.residual_permutation is not None
    assert report["relative_error_mean"] <= plain_report["relative_error_mean"] + 1e-6
    assert report["permutation"]["relative_error_mean_unpermuted"] == pytest.approx(plain_report["relative_error_mean"],
                                                                                   rel=1e-5)
    # A lossless student (every B 1x1) in the permuted order is still the teacher: every
    # distillation term against the unpermuted teacher is zero.
    lossless = {"attention_a_shape": [16, 16], "ffn_a_shape": [32, 16], "embedding_n": 1, "init": "permuted"}
    copy, _ = compress(teacher, lossless)
    batch = tiny_batch()
    _, terms = distillation_loss(copy(**batch), teacher(**batch), batch["attention_mask"],
                                 {k: ALL_LOSSES[k] for k in ("embedding", "attention", "hidden")})
    assert max(terms.values()) < 1e-9


def test_permuted_init_is_for_kronecker_students_only_and_a_bad_order_is_refused():
    teacher = tiny_teacher()
    with pytest.raises(ValueError, match="init: permuted is for kronecker students, not lowrank"):
        compress(teacher, {"family": "lowrank", "match": "k", "init": "permuted"}, match_spec=SHAPES)
    with pytest.raises(ValueError, match="residual_permutation must be a permutation of range"):
        KBertConfig(**TINY, residual_permutation=[0] * TINY["hidden_size"])


def test_a_permuted_student_refuses_the_tied_mlm_decoder():
    from kbert.pretraining import with_pretraining_heads
    teacher = tiny_teacher()
    student, _ = compress(teacher.bert, {**SHAPES, "init": "permuted"})
    with pytest.raises(ValueError, match="init: permuted, whose word embedding is reordered"):
        with_pretraining_heads(student, {}, ["mlm", "nsp"], "kb")
