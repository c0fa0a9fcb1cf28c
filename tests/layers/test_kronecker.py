"""Kronecker maths: forward/backward against torch.kron, nearest-Kronecker optimality."""

import pytest
import torch

from kbert.layers.kronecker import (
    KroneckerEmbedding, KroneckerLinear, kron_sum, max_rank, nearest_kronecker, rearrange,
)

SHAPES = [  # (out, in, A shape)
    (12, 8, (3, 2)),
    (8, 12, (4, 6)),
    (16, 16, (4, 4)),
    (6, 10, (1, 1)),  # B is the whole matrix
    (6, 10, (6, 10)),  # A is the whole matrix
]


@pytest.mark.parametrize("out_f,in_f,a_shape", SHAPES)
@pytest.mark.parametrize("rank", [1, 2])
@pytest.mark.parametrize("order", ["a_first", "b_first"])
def test_forward_and_grad_match_dense_kron(out_f, in_f, a_shape, rank, order):
    torch.manual_seed(0)
    b_shape = (out_f // a_shape[0], in_f // a_shape[1])
    rank = min(rank, max_rank(a_shape, b_shape))
    layer = KroneckerLinear(in_f, out_f, a_shape, rank=rank, order=order).double()
    x = torch.randn(3, 5, in_f, dtype=torch.float64, requires_grad=True)  # 3-D input
    y = layer(x)
    W = kron_sum(layer.A, layer.B)
    y_ref = x @ W.T + layer.bias
    torch.testing.assert_close(y, y_ref)
    g = torch.randn_like(y)
    grads = torch.autograd.grad(y, (x, layer.A, layer.B, layer.bias), g)
    grads_ref = torch.autograd.grad(y_ref, (x, layer.A, layer.B, layer.bias), g)
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b)


def test_weight_equals_torch_kron():
    layer = KroneckerLinear(12, 8, (4, 3), rank=1)
    torch.testing.assert_close(layer.weight, torch.kron(layer.A[0], layer.B[0]))


def test_nearest_kronecker_recovers_exact_product():
    torch.manual_seed(1)
    A, B = torch.randn(4, 3, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64)
    W = torch.kron(A, B)
    A_hat, B_hat = nearest_kronecker(W, (4, 3), (5, 2))
    torch.testing.assert_close(torch.kron(A_hat[0], B_hat[0]), W)
    # Up to the scale split: A_hat = c A and B_hat = B / c.
    c = (A_hat[0] / A).flatten()
    torch.testing.assert_close(c, c[0].expand_as(c))


def test_full_rank_reproduces_W():
    torch.manual_seed(2)
    W = torch.randn(6, 8, dtype=torch.float64)
    A, B = nearest_kronecker(W, (2, 4), (3, 2), rank=6)  # min(2*4, 3*2) = 6
    torch.testing.assert_close(kron_sum(A, B), W)


def test_nearest_kronecker_is_never_beaten_by_perturbations():
    torch.manual_seed(3)
    W = torch.randn(12, 12, dtype=torch.float64)
    A, B = nearest_kronecker(W, (3, 4), (4, 3))
    best = (W - torch.kron(A[0], B[0])).norm()
    for _ in range(200):
        dA, dB = 0.05 * torch.randn_like(A[0]), 0.05 * torch.randn_like(B[0])
        assert (W - torch.kron(A[0] + dA, B[0] + dB)).norm() >= best - 1e-12


def test_rearrangement_preserves_norm():
    W = torch.randn(8, 6)
    torch.testing.assert_close(rearrange(W, (2, 3), (4, 2)).norm(), W.norm())


def test_embedding_is_row_kron():
    emb = KroneckerEmbedding(50, 12, 4)
    ids = torch.tensor([[0, 7, 49]])
    expected = torch.stack([torch.kron(emb.A[i], emb.B[0]) for i in ids[0]])[None]
    torch.testing.assert_close(emb(ids), expected)
    torch.testing.assert_close(emb.weight[ids[0]], expected[0])


def test_embedding_svd_factors_are_the_optimal_rank_one():
    dense = torch.nn.Embedding(20, 8)
    emb = KroneckerEmbedding(20, 8, 4)
    with torch.no_grad():
        for param, factor in zip((emb.A, emb.B), emb.svd_factors(dense.weight)):
            param.copy_(factor)
    A, B = nearest_kronecker(dense.weight, (20, 2), (1, 4))
    torch.testing.assert_close(emb.weight, torch.kron(A[0], B[0]))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(in_features=10, out_features=6, a_shape=(4, 2)), "does not divide"),
        (dict(in_features=10, out_features=6, a_shape=(3, 3)), "does not divide"),
        (dict(in_features=4, out_features=4, a_shape=(2, 2), rank=5), "rank 5"),
    ],
)
def test_bad_shapes_raise_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        KroneckerLinear(**kwargs)


def test_bad_embedding_factor():
    with pytest.raises(ValueError, match="must divide"):
        KroneckerEmbedding(10, 12, 5)
