"""Data-aware nearest Kronecker product: maths, safeguard, and compress(init=data_aware)."""

import pytest
import torch

from kbert.calibration import calibration_stats, data_aware_init, data_error
from kbert.students import compress
from kbert.layers.kronecker import (
    KroneckerLinear, kron_sum, kronecker_moment_factors, nearest_kronecker, nearest_kronecker_embedding_weighted,
    nearest_kronecker_weighted, output_error, second_moment,
)
from kbert.modeling import KBertConfig, KBertModel

F64 = dict(dtype=torch.float64)
A_SHAPE, B_SHAPE = (3, 4), (5, 2)  # W: (15, 8), inputs of 4 x 2
TINY = dict(vocab_size=100, hidden_size=16, num_hidden_layers=2, num_attention_heads=4, intermediate_size=32,
            max_position_embeddings=32)


def _spd(n, g):
    M = torch.randn(n, n, generator=g, **F64)
    return M @ M.T + 0.1 * torch.eye(n, **F64)


def _correlated_inputs(g, N=400, n=8):
    """Inputs with a dense, non-Kronecker covariance and unequal scales."""
    return torch.randn(N, n, generator=g, **F64) @ torch.randn(n, n, generator=g, **F64) * torch.logspace(0, 1, n, **F64)


@pytest.mark.parametrize("rank", [1, 2])
def test_identity_covariance_gives_the_plain_svd(rank):
    W = torch.randn(15, 8, generator=torch.Generator().manual_seed(0), **F64)
    A, B = nearest_kronecker(W, A_SHAPE, B_SHAPE, rank)
    Aw, Bw = nearest_kronecker_weighted(W, A_SHAPE, B_SHAPE, rank, 3 * torch.eye(4, **F64), torch.eye(2, **F64))
    assert (kron_sum(Aw, Bw) - kron_sum(A, B)).abs().max() < 1e-10
    for r in range(rank):  # the same balanced factors, up to the sign of each pair
        sign = torch.sign((Aw[r] * A[r]).sum())
        assert (sign * Aw[r] - A[r]).abs().max() < 1e-10 and (sign * Bw[r] - B[r]).abs().max() < 1e-10


def test_exact_kronecker_weight_is_recovered_under_any_weighting():
    g = torch.Generator().manual_seed(1)
    W = torch.kron(torch.randn(*A_SHAPE, generator=g, **F64), torch.randn(*B_SHAPE, generator=g, **F64))
    A, B = nearest_kronecker_weighted(W, A_SHAPE, B_SHAPE, 1, _spd(4, g), _spd(2, g))
    torch.testing.assert_close(kron_sum(A, B), W)


def test_kronecker_moment_factors_are_exact_and_positive_definite():
    g = torch.Generator().manual_seed(2)
    C1, C2 = _spd(4, g), _spd(2, g)
    F1, F2 = kronecker_moment_factors(torch.kron(C1, C2), 4, 2)
    torch.testing.assert_close(torch.kron(F1, F2), torch.kron(C1, C2))
    assert torch.linalg.eigvalsh(F1).min() > 0 and torch.linalg.eigvalsh(F2).min() > 0


@pytest.mark.parametrize("seed", range(3))
def test_strictly_better_and_optimal_for_kronecker_covariance(seed):
    g = torch.Generator().manual_seed(seed)
    W, C1, C2 = torch.randn(15, 8, generator=g, **F64), _spd(4, g), _spd(2, g)
    C = torch.kron(C1, C2)
    A, B = nearest_kronecker_weighted(W, A_SHAPE, B_SHAPE, 1, C1, C2, damping=0.0)
    best = output_error(W, kron_sum(A, B), C)
    plain = output_error(W, kron_sum(*nearest_kronecker(W, A_SHAPE, B_SHAPE)), C)
    assert best < 0.99 * plain
    for _ in range(100):  # and no nearby factors do better on the weighted error
        dA, dB = (0.02 * torch.randn(t.shape, generator=g, **F64) for t in (A, B))
        assert output_error(W, kron_sum(A + dA, B + dB), C) >= best - 1e-12


@pytest.mark.parametrize("seed", range(5))
def test_safeguard_never_worse_than_svd_on_fitted_data(seed):
    g = torch.Generator().manual_seed(seed)
    layer = KroneckerLinear(8, 15, A_SHAPE).double()
    W = torch.randn(15, 8, generator=g, **F64)
    fit, heldout = (second_moment(_correlated_inputs(g)) for _ in range(2))
    plain = nearest_kronecker(W, A_SHAPE, B_SHAPE)
    kept, record = data_aware_init(layer, W, plain, fit, heldout)
    errors = {name: output_error(W, kron_sum(*f), fit) for name, f in (("svd", plain), ("kept", kept))}
    assert errors["kept"] <= errors["svd"]
    assert record["init_kept"] in ("svd", "data_aware")
    assert record["output_error_svd"] == pytest.approx(output_error(W, kron_sum(*plain), heldout))


def test_output_error_is_the_relative_error_on_the_inputs():
    g = torch.Generator().manual_seed(3)
    W, W_hat, X = torch.randn(15, 8, generator=g, **F64), torch.randn(15, 8, generator=g, **F64), _correlated_inputs(g)
    expected = float(((W - W_hat) @ X.T).norm() / (W @ X.T).norm())
    assert output_error(W, W_hat, second_moment(X)) == pytest.approx(expected, rel=1e-10)


def test_held_out_output_error_serves_low_rank_matrices_too():
    """data_error, with the statistics calibration_stats keeps, is for a truncated SVD what it
    is for a Kronecker product: the relative error of the matrix's output on the teacher's own
    inputs to it (0 at full rank); for the word embedding the frequency-weighted row error."""
    from kbert.layers.lowrank import truncated_svd

    torch.manual_seed(0)
    teacher = KBertModel(KBertConfig(**TINY)).eval()
    ids = torch.randint(1, 100, (6, 12))
    name, table = "encoder.layer.1.intermediate.dense", "embeddings.word_embeddings"
    stats = calibration_stats(teacher, teacher, [name, table], ids)
    inputs = []
    layer = dict(teacher.named_modules())[name]
    hook = layer.register_forward_hook(lambda module, args, out: inputs.append(args[0].reshape(-1, 16)))
    with torch.no_grad():
        teacher(input_ids=ids)
    hook.remove()
    W, X = layer.weight.detach(), inputs[0].double()
    for rank in (4, 16):
        U, V = truncated_svd(W, rank)
        expected = float(((W - U @ V).double() @ X.T).norm() / (W.double() @ X.T).norm())
        got = data_error(W, U @ V, stats[name])
        assert got == pytest.approx(expected, rel=1e-4, abs=1e-6)
        assert (got < 1e-5) == (rank == 16)
    E = teacher.embeddings.word_embeddings.weight.detach()
    U, V = truncated_svd(E, 4)
    f = stats[table]
    expected = float((((E - U @ V).double() ** 2).sum(1) @ f).sqrt() / ((E.double() ** 2).sum(1) @ f).sqrt())
    assert data_error(E, U @ V, f) == pytest.approx(expected, rel=1e-6)


def test_embedding_uniform_weights_give_the_plain_svd():
    E = torch.randn(50, 12, generator=torch.Generator().manual_seed(4), **F64)
    A, B = nearest_kronecker(E, (50, 4), (1, 3))
    Aw, Bw = nearest_kronecker_embedding_weighted(E, 3, torch.full((50,), 0.02, **F64))
    assert (torch.kron(Aw, Bw) - torch.kron(A[0], B[0])).abs().max() < 1e-10


def test_embedding_frequency_weighting_fits_frequent_rows_and_keeps_unseen_rows():
    g = torch.Generator().manual_seed(5)
    E = torch.randn(50, 12, generator=g, **F64)
    w = torch.zeros(50, **F64)
    w[:5] = torch.rand(5, generator=g, **F64)  # only five tokens seen

    def weighted_error(A, B):
        return float(((E - torch.kron(A, B)) ** 2).sum(1) @ w)

    A, B = nearest_kronecker_embedding_weighted(E, 3, w)
    A0, B0 = nearest_kronecker(E, (50, 4), (1, 3))
    assert weighted_error(A, B) < weighted_error(A0[0], B0[0])
    # An unseen row is still the least-squares row for the shared B.
    blocks = E[10].reshape(4, 3)
    torch.testing.assert_close(A[10], blocks @ B[0] / (B[0] @ B[0]))


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda W: nearest_kronecker_weighted(W, A_SHAPE, B_SHAPE, 1, torch.eye(3, **F64), torch.eye(2, **F64)), r"C1 .* \(4, 4\)"),
        (lambda W: nearest_kronecker_weighted(W, A_SHAPE, B_SHAPE, 1, torch.eye(4, **F64), torch.eye(4, **F64)), r"C2 .* \(2, 2\)"),
        (lambda W: kronecker_moment_factors(torch.eye(6, **F64), 4, 2), r"should be \(8, 8\)"),
        (lambda W: output_error(W, W, torch.eye(15, **F64)), r"should be \(8, 8\)"),
        (lambda W: nearest_kronecker_weighted(W, A_SHAPE, B_SHAPE, 1, torch.zeros(4, 4, **F64), torch.eye(2, **F64)), "zero"),
        (lambda W: nearest_kronecker_embedding_weighted(W, 2, torch.ones(3)), "15 non-negative"),
    ],
)
def test_bad_inputs_raise_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call(torch.randn(15, 8, **F64))


@torch.no_grad()
def _held_out_errors(student, teacher, ids):
    """Per factorised linear layer: ||(W_student - W) X^T|| / ||W X^T|| on the teacher's inputs X."""
    inputs, modules = {}, dict(teacher.named_modules())
    names = [n for n, m in student.named_modules() if isinstance(m, KroneckerLinear)]

    def keep(name):
        def hook(module, args, output):
            inputs[name] = args[0].reshape(-1, args[0].shape[-1])
        return hook

    hooks = [modules[n].register_forward_hook(keep(n)) for n in names]
    teacher(ids)
    for h in hooks:
        h.remove()
    W = {n: modules[n].weight for n in names}
    return {n: float(((student.get_submodule(n).weight - W[n]) @ inputs[n].T).norm() / (W[n] @ inputs[n].T).norm())
            for n in names}


def test_compress_data_aware_is_closer_to_the_teacher_on_held_out_text():
    torch.manual_seed(0)
    teacher = KBertModel(KBertConfig(**TINY)).eval()
    g = torch.Generator().manual_seed(6)
    # Skewed token ids: a few frequent tokens, as in text, so the frequency weighting matters.
    fit, heldout = ((torch.rand(n, 16, generator=g) ** 3 * 100).long() for n in (32, 16))
    spec = {"attention_a_shape": [4, 4], "ffn_a_shape": [4, 2], "embedding_n": 2}
    plain, _ = compress(teacher, spec)
    aware, report = compress(teacher, {**spec, "init": "data_aware"}, calibration=(fit, heldout))
    assert report["init"] == "data_aware" and report["data_aware_kept"] > 0
    assert report["output_error_data_aware_mean"] < report["output_error_svd_mean"]
    # Measured independently of kbert.calibration: each layer of the student applied to the
    # teacher's own inputs on held-out text (a single forward, one batch of 16 sequences).
    e_plain, e_aware = _held_out_errors(plain, teacher, heldout), _held_out_errors(aware, teacher, heldout)
    for name, kept in report["init_kept"].items():
        if kept == "svd" and name in e_plain:
            assert e_aware[name] == pytest.approx(e_plain[name])
        if name in e_plain:
            assert e_aware[name] == pytest.approx(report[f"output_error_{kept}"][name], rel=1e-4)
    assert sum(e_aware.values()) < sum(e_plain.values())


@pytest.mark.parametrize(
    "spec,calibration,match",
    [
        ({"init": "magic"}, None, "unknown init"),
        ({"init": "data_aware"}, None, "needs calibration"),
        ({"init": "data_aware", "family": "lowrank", "match": "k"}, (torch.ones(1, 4).long(),) * 2, "for kronecker students"),
    ],
)
def test_bad_init_specs(spec, calibration, match):
    teacher = KBertModel(KBertConfig(**TINY))
    with pytest.raises(ValueError, match=match):
        compress(teacher, {"attention_a_shape": [4, 4], "ffn_a_shape": [4, 2], "embedding_n": 2, **spec},
                 calibration=calibration)


def test_config_accepts_data_aware_for_kronecker_students_only():
    from kbert.config import ConfigError, load_config

    base = {"preset": "t", "tasks": ["mrpc"]}
    config = load_config({**base, "students": {"s": {"target_compression": 4, "init": "data_aware"}}})
    assert config["students"]["s"]["init"] == "data_aware"
    assert "init" not in load_config({**base, "students": {"s": {"target_compression": 4}}})["students"]["s"]
    with pytest.raises(ConfigError, match="kronecker"):
        load_config({**base, "students": {"k": {"target_compression": 4},
                                          "s": {"family": "lowrank", "match": "k", "init": "data_aware"}}})


def test_calibration_windows_are_full_and_from_separate_documents():
    from kbert.stages import compress as ct
    from kbert.teachers import tokenizer_for

    tokenizer = tokenizer_for({"source": "random"})
    words = "apple river stone house green music paper water light table chair night money world city " \
            "school black white game food".split()
    documents = [" ".join([w] * 1300) for w in words]  # ten full windows each, one word per document
    fit, heldout = ct.calibration_ids(documents, tokenizer)
    assert fit.shape == (ct.CALIBRATION_FIT, ct.CALIBRATION_LENGTH)
    assert heldout.shape == (ct.CALIBRATION_HELDOUT, ct.CALIBRATION_LENGTH)
    assert (fit[:, 0] == tokenizer.cls_token_id).all() and (heldout[:, -1] == tokenizer.sep_token_id).all()
    seen = [set(part[:, 1:-1].flatten().tolist()) for part in (fit, heldout)]
    assert len(seen[0]) == 13 and seen[1] and not seen[0] & seen[1]
