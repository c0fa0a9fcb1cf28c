"""Kronecker-factored layers and the nearest-Kronecker (SVD) initialisation.

A weight W of shape (m, n) = (out, in), like ``nn.Linear.weight``, is replaced by

    W = sum_r A_r kron B_r,   A_r: (m1, n1),  B_r: (m2, n2),  m = m1*m2,  n = n1*n2.

Row-major identity used everywhere below (checked against ``torch.kron`` in tests):

    x: (n,) viewed as X: (n1, n2)   ->   (A kron B) x == (A @ X @ B.T).reshape(m1*m2)

so the forward pass never builds W: it contracts the input with B (right side) and with
A (left side), in whichever order costs fewer FLOPs (paper Eq. 7). How those two products
are laid out in memory to run near the FLOP bound lives in kbert/fastkron.py.
"""

from __future__ import annotations

import math

import torch
from torch import nn
import torch.nn.functional as F

from kbert.fastkron import PLAN_ORDER, choose_plan, kron_linear

Shape = tuple[int, int]


# --------------------------------------------------------------------------------------
# Shape checks and FLOP counting (paper Eq. 7)
# --------------------------------------------------------------------------------------


def factor_shapes(out_features: int, in_features: int, a_shape: Shape) -> tuple[Shape, Shape]:
    """Return (A shape, B shape) for W (out, in) = A kron B with A of shape ``a_shape``."""
    m1, n1 = (int(v) for v in a_shape)
    if m1 < 1 or n1 < 1 or out_features % m1 or in_features % n1:
        raise ValueError(
            f"Kronecker factor A of shape {tuple(a_shape)} does not divide the "
            f"{out_features}x{in_features} (out x in) matrix: A's rows must divide {out_features} "
            f"and its columns must divide {in_features}"
        )
    return (m1, n1), (out_features // m1, in_features // n1)


def max_rank(a_shape: Shape, b_shape: Shape) -> int:
    """Largest useful number of Kronecker sums: the rank of the rearranged matrix."""
    return min(a_shape[0] * a_shape[1], b_shape[0] * b_shape[1])


def kron_flops_per_order(a_shape: Shape, b_shape: Shape) -> dict[str, int]:
    """FLOPs for one input vector, for each association order (paper Eq. 7).

    ``b_first``: Z = X @ B.T (n1 x m2), then A @ Z.   (2n2-1) m2 n1 + (2n1-1) m2 m1
    ``a_first``: Z = A @ X  (m1 x n2), then Z @ B.T.  (2n1-1) n2 m1 + (2n2-1) m2 m1
    """
    (m1, n1), (m2, n2) = a_shape, b_shape
    return {
        "b_first": (2 * n2 - 1) * m2 * n1 + (2 * n1 - 1) * m2 * m1,
        "a_first": (2 * n1 - 1) * n2 * m1 + (2 * n2 - 1) * m2 * m1,
    }


def dense_flops(out_features: int, in_features: int) -> int:
    """FLOPs of a dense matrix-vector product, counted the same way as Eq. 7."""
    return (2 * in_features - 1) * out_features


# --------------------------------------------------------------------------------------
# Nearest Kronecker product (Van Loan & Pitsianis 1993)
# --------------------------------------------------------------------------------------


def rearrange(W: torch.Tensor, a_shape: Shape, b_shape: Shape) -> torch.Tensor:
    """R(W): one row per (m2 x n2) block of W, flattened; shape (m1*n1, m2*n2).

    ||W - sum A_r kron B_r||_F == ||R(W) - sum vec(A_r) vec(B_r)^T||_F, so the best
    rank-r Kronecker sum is the best rank-r approximation of R(W).
    """
    (m1, n1), (m2, n2) = a_shape, b_shape
    return W.reshape(m1, m2, n1, n2).permute(0, 2, 1, 3).reshape(m1 * n1, m2 * n2)


def nearest_kronecker(
    W: torch.Tensor, a_shape: Shape, b_shape: Shape, rank: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Factors A (rank, m1, n1) and B (rank, m2, n2) minimising ||W - sum_r A_r kron B_r||_F.

    The singular value is split evenly (sqrt on each side), as in paper Eqs. 4-5.
    """
    a_shape, b_shape = tuple(a_shape), tuple(b_shape)
    (m1, n1), (m2, n2) = a_shape, b_shape
    if W.dim() != 2 or W.shape != (m1 * m2, n1 * n2):
        raise ValueError(
            f"W of shape {tuple(W.shape)} is not A {a_shape} kron B {b_shape} = "
            f"({m1 * m2}, {n1 * n2})"
        )
    limit = max_rank(a_shape, b_shape)
    if not 1 <= rank <= limit:
        raise ValueError(f"rank {rank} is not allowed for A {a_shape}, B {b_shape}: use 1..{limit}")
    R = rearrange(W.detach().double(), a_shape, b_shape)
    U, S, Vh = torch.linalg.svd(R, full_matrices=False)
    root = S[:rank].sqrt()
    A = (U[:, :rank] * root).T.reshape(rank, m1, n1)
    B = (Vh[:rank] * root[:, None]).reshape(rank, m2, n2)
    return A.to(W.dtype), B.to(W.dtype)


def kron_sum(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """Materialise sum_r A_r kron B_r (for tests, export and the dense reference)."""
    return sum(torch.kron(a, b) for a, b in zip(A, B))


# --------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------


class KroneckerLinear(nn.Module):
    """Linear layer with weight W = sum_r A_r kron B_r of shape (out, in), plus a dense bias."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        a_shape: Shape,
        rank: int = 1,
        bias: bool = True,
        order: str | None = None,
    ):
        super().__init__()
        self.a_shape, self.b_shape = factor_shapes(out_features, in_features, a_shape)
        limit = max_rank(self.a_shape, self.b_shape)
        if not 1 <= rank <= limit:
            raise ValueError(
                f"rank {rank} is not allowed for A {self.a_shape}, B {self.b_shape}: use 1..{limit}"
            )
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.A = nn.Parameter(torch.empty(rank, *self.a_shape))
        self.B = nn.Parameter(torch.empty(rank, *self.b_shape))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        costs = kron_flops_per_order(self.a_shape, self.b_shape)
        self.order = order or min(costs, key=costs.get)  # Eq. 7 association order
        if self.order not in costs:
            raise ValueError(f"unknown contraction order {self.order!r}: use 'a_first' or 'b_first'")
        # Memory layout of the two products (see choose_plan); assign a plan to override.
        self.plan = choose_plan(self.a_shape, self.b_shape, rank, self.order)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Each factor gets std s so that W's entries have std sqrt(r) * s^2 = 1/sqrt(in),
        # the scale of a default nn.Linear.
        std = (1.0 / math.sqrt(self.in_features * self.rank)) ** 0.5
        nn.init.normal_(self.A, std=std)
        nn.init.normal_(self.B, std=std)

    @classmethod
    def from_dense(cls, linear: nn.Linear, a_shape: Shape, rank: int = 1) -> "KroneckerLinear":
        """Nearest-Kronecker initialisation from a dense ``nn.Linear``; the bias is copied."""
        layer = cls(linear.in_features, linear.out_features, a_shape, rank, bias=linear.bias is not None)
        A, B = nearest_kronecker(linear.weight, layer.a_shape, layer.b_shape, rank)
        with torch.no_grad():
            layer.A.copy_(A)
            layer.B.copy_(B)
            if linear.bias is not None:
                layer.bias.copy_(linear.bias)
        return layer

    @property
    def weight(self) -> torch.Tensor:
        """The dense (out, in) weight. Materialised: for inspection and tests only."""
        return kron_sum(self.A, self.B)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        plan = self.plan
        if plan != "generic" and PLAN_ORDER.get(plan) != self.order:  # order was reassigned
            plan = choose_plan(self.a_shape, self.b_shape, self.rank, self.order)
        return kron_linear(x, self.A, self.B, self.bias, self.order, plan)

    def flops(self, tokens: int = 1) -> int:
        """Eq. 7 FLOPs for ``tokens`` input vectors (cheaper order; bias not counted)."""
        return tokens * self.rank * min(kron_flops_per_order(self.a_shape, self.b_shape).values())

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def extra_repr(self) -> str:
        return (
            f"in={self.in_features}, out={self.out_features}, A={self.a_shape}, B={self.b_shape}, "
            f"rank={self.rank}, order={self.order}, plan={self.plan}, bias={self.bias is not None}"
        )


class KroneckerEmbedding(nn.Module):
    """Word embedding X_i = A_E[i] kron B_E: a (V, d/n) table and one shared (1, n) row.

    The lookup costs O(d) per token; B_E is shared by every token (paper Eq. 8).
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, n: int, padding_idx: int | None = None):
        super().__init__()
        if n < 1 or embedding_dim % n:
            raise ValueError(f"embedding factor n={n} must divide the embedding size {embedding_dim}")
        self.num_embeddings, self.embedding_dim, self.n = num_embeddings, embedding_dim, n
        self.padding_idx = padding_idx
        self.A = nn.Parameter(torch.empty(num_embeddings, embedding_dim // n))
        self.B = nn.Parameter(torch.empty(1, n))
        self.reset_parameters()

    def reset_parameters(self, std: float = 0.02) -> None:
        # Entries of A kron B then have std ~ std, like BERT's N(0, 0.02) embedding init.
        nn.init.normal_(self.A, std=std ** 0.5)
        nn.init.normal_(self.B, std=std ** 0.5)

    @classmethod
    def from_dense(cls, embedding: nn.Embedding, n: int) -> "KroneckerEmbedding":
        V, d = embedding.weight.shape
        layer = cls(V, d, n, embedding.padding_idx)
        A, B = nearest_kronecker(embedding.weight, (V, d // n), (1, n), rank=1)
        with torch.no_grad():
            layer.A.copy_(A[0])
            layer.B.copy_(B[0])
        return layer

    @property
    def weight(self) -> torch.Tensor:
        """The dense (V, d) table. Materialised: for inspection and tests only."""
        return torch.kron(self.A, self.B)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = F.embedding(ids, self.A, self.padding_idx)  # (..., d/n)
        return (rows.unsqueeze(-1) * self.B[0]).flatten(-2)  # (..., d/n, n) -> (..., d)

    def flops(self, tokens: int = 1) -> int:
        return tokens * self.embedding_dim  # one multiply per output element

    def num_parameters(self) -> int:
        return self.A.numel() + self.B.numel()

    def extra_repr(self) -> str:
        return f"V={self.num_embeddings}, d={self.embedding_dim}, A=({self.num_embeddings}, {self.embedding_dim // self.n}), B=(1, {self.n})"
