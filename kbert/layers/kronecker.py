"""Kronecker-factored layers and the nearest-Kronecker (SVD) initialisation.

A weight W of shape (m, n) = (out, in), like ``nn.Linear.weight``, is replaced by

    W = sum_r A_r kron B_r,   A_r: (m1, n1),  B_r: (m2, n2),  m = m1*m2,  n = n1*n2.

Row-major identity used everywhere below (checked against ``torch.kron`` in tests):

    x: (n,) viewed as X: (n1, n2)   ->   (A kron B) x == (A @ X @ B.T).reshape(m1*m2)

so the forward pass never builds W: it contracts the input with B (right side) and with
A (left side), in whichever order costs fewer FLOPs (paper Eq. 7). How those two products
are laid out in memory to run near the FLOP bound lives in kbert/kernels/.
"""

from __future__ import annotations

import math

import torch
from torch import nn
import torch.nn.functional as F

from kbert.kernels.linear import kron_linear
from kbert.kernels.plans import check_plan, choose_plan
from kbert.layers.flops import Shape, association_order, kron_flops


# --------------------------------------------------------------------------------------
# Shape checks
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


def _check_rank(rank: int, a_shape: Shape, b_shape: Shape) -> None:
    limit = max_rank(a_shape, b_shape)
    if not 1 <= rank <= limit:
        raise ValueError(f"rank {rank} is not allowed for A {a_shape}, B {b_shape}: use 1..{limit}")


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
    _check_rank(rank, a_shape, b_shape)
    R = rearrange(W.detach().double(), a_shape, b_shape)
    U, S, Vh = torch.linalg.svd(R, full_matrices=False)
    root = S[:rank].sqrt()
    A = (U[:, :rank] * root).T.reshape(rank, m1, n1)
    B = (Vh[:rank] * root[:, None]).reshape(rank, m2, n2)
    return A.to(W.dtype), B.to(W.dtype)


def _balance(A: torch.Tensor, B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rescale each pair so that ||A_r||_F == ||B_r||_F, the even split of Eqs. 4-5.

    A_r kron B_r is unchanged; balanced factors train alike whichever way they were found.
    A (rank, m1, n1), B (rank, m2, n2).
    """
    a, b = A.flatten(1).norm(dim=1), B.flatten(1).norm(dim=1)
    s = torch.where((a > 0) & (b > 0), (b / a).sqrt(), torch.ones_like(a))[:, None, None]
    return A * s, B / s


# --------------------------------------------------------------------------------------
# Data-aware nearest Kronecker product
# --------------------------------------------------------------------------------------
#
# The plain SVD weighs every entry of W alike. What the student inherits is W's action on
# the layer's inputs x, so the error that matters is E||(W - W_hat) x||^2 = tr(D C D^T),
# D = W - W_hat, C = E[x x^T]. With C replaced by a Kronecker product C1 kron C2 (K-FAC
# style; input index (i1, i2) as in ``rearrange``) the minimum still has a closed form.


def second_moment(X: torch.Tensor) -> torch.Tensor:
    """C = X^T X / N (float64) of inputs X (N, n), one input vector per row."""
    if X.dim() != 2 or X.shape[0] == 0:
        raise ValueError(f"inputs must be a non-empty (N, n) matrix, got shape {tuple(X.shape)}")
    X = X.detach().double()
    return X.T @ X / X.shape[0]


def _check_square(C: torch.Tensor, size: int, what: str) -> None:
    if C.shape != (size, size):
        raise ValueError(f"{what} of shape {tuple(C.shape)} should be ({size}, {size})")


def kronecker_moment_factors(C: torch.Tensor, n1: int, n2: int) -> tuple[torch.Tensor, torch.Tensor]:
    """C1 (n1, n1), C2 (n2, n2) symmetric PSD with C1 kron C2 nearest to C (n1*n2, n1*n2).

    Van Loan-Pitsianis of C itself, rather than K-FAC's marginals C1 = E[X X^T] / n2,
    C2 = E[X^T X] / n1 (x viewed as X: (n1, n2)): the marginals are exact only when the two
    input indices are independent, this is the Frobenius-best product whatever C is, and
    C is at hand anyway (the safeguard measures output errors with it). For a symmetric
    PSD C the top singular vectors of R(C) are symmetric PSD up to one common sign (Van Loan
    & Pitsianis 1993), fixed here by a positive trace.
    """
    _check_square(C, n1 * n2, f"input second moment for an input of {n1} x {n2}")
    C = C.detach().double()
    U, S, Vh = torch.linalg.svd(rearrange(C, (n1, n1), (n2, n2)), full_matrices=False)
    C1, C2 = (U[:, 0] * S[0].sqrt()).reshape(n1, n1), (Vh[0] * S[0].sqrt()).reshape(n2, n2)
    if torch.trace(C1) < 0:
        C1, C2 = -C1, -C2
    return (C1 + C1.T) / 2, (C2 + C2.T) / 2


def _root_and_inverse(C: torch.Tensor, damping: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric L = (C + delta I)^(1/2) and L^-1, delta = damping * mean(diag C).

    The damping keeps L^-1 bounded along directions the inputs (almost) never take, where
    the weighted objective does not care what W_hat does.
    """
    evals, V = torch.linalg.eigh(C)
    evals = evals.clamp_min(0)  # rounding can leave tiny negative eigenvalues
    if evals.sum() <= 0:
        raise ValueError("input second moment is zero: the calibration inputs carry no signal")
    root = (evals + damping * evals.mean()).sqrt()  # mean(eigenvalues) == mean(diag C)
    return (V * root) @ V.T, (V / root) @ V.T


def nearest_kronecker_weighted(
    W: torch.Tensor, a_shape: Shape, b_shape: Shape, rank: int,
    C1: torch.Tensor, C2: torch.Tensor, damping: float = 1e-2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Factors A (rank, m1, n1), B (rank, m2, n2) minimising ||(W - sum_r A_r kron B_r)(L1 kron L2)||_F.

    C1 = L1 L1^T (n1 x n1) and C2 = L2 L2^T (n2 x n2) are the Kronecker factors of the input
    second moment (``kronecker_moment_factors``), damped as in ``_root_and_inverse``. L is
    invertible, so W' = W (L1 kron L2) has the plain nearest Kronecker sum A' kron B', and
    (A' kron B')(L1 kron L2)^-1 = (A' L1^-1) kron (B' L2^-1): one SVD, no (n x n) inverse.
    """
    (m1, n1), (m2, n2) = tuple(a_shape), tuple(b_shape)
    _check_square(C1, n1, f"C1 for A of shape {(m1, n1)}")
    _check_square(C2, n2, f"C2 for B of shape {(m2, n2)}")
    if W.shape != (m1 * m2, n1 * n2):
        raise ValueError(f"W of shape {tuple(W.shape)} is not A {(m1, n1)} kron B {(m2, n2)} = ({m1 * m2}, {n1 * n2})")
    L1, L1_inv = _root_and_inverse(C1.double(), damping)
    L2, L2_inv = _root_and_inverse(C2.double(), damping)
    # W (L1 kron L2) with the input side viewed as (n1, n2): contract each index with its factor.
    Wp = torch.einsum("mij,ik,jl->mkl", W.detach().double().reshape(-1, n1, n2), L1, L2).reshape(W.shape)
    A, B = nearest_kronecker(Wp, (m1, n1), (m2, n2), rank)
    A, B = _balance(A @ L1_inv, B @ L2_inv)
    return A.to(W.dtype), B.to(W.dtype)


def output_error(W: torch.Tensor, W_hat: torch.Tensor, C: torch.Tensor) -> float:
    """||(W - W_hat) X^T||_F / ||W X^T||_F for inputs X with second moment C (any scale)."""
    _check_square(C, W.shape[1], f"input second moment for a {tuple(W.shape)} (out x in) matrix")
    W, D, C = W.detach().double(), (W - W_hat).detach().double(), C.double()
    return float(((D @ C) * D).sum().clamp_min(0).sqrt() / ((W @ C) * W).sum().sqrt())


def nearest_kronecker_embedding_weighted(
    E: torch.Tensor, n: int, weights: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """A (V, d/n), B (1, n) minimising sum_v w_v ||e_v - a_v kron B||^2 over the rows e_v of E (V, d).

    Scaling row v by sqrt(w_v) turns this into the plain problem (one SVD), which fixes the
    shared row B. Every a_v is then the least-squares row for that B, the same whatever
    w_v is, so tokens with w_v = 0 (never seen) still get their best row; the weights only
    decide B.
    """
    V, d = E.shape
    if n < 1 or d % n:
        raise ValueError(f"embedding factor n={n} must divide the embedding size {d}")
    if weights.shape != (V,) or (weights < 0).any() or weights.sum() <= 0:
        raise ValueError(f"weights must be {V} non-negative token weights, not all zero; got shape {tuple(weights.shape)}")
    blocks = E.detach().double().reshape(V * d // n, n)  # rearrange(E, (V, d/n), (1, n))
    scale = weights.double().sqrt().repeat_interleave(d // n)[:, None]
    b = torch.linalg.svd(blocks * scale, full_matrices=False)[2][0]  # (n,), unit norm
    A, B = _balance((blocks @ b).reshape(1, V, d // n), b.reshape(1, 1, n))
    return A[0].to(E.dtype), B[0].to(E.dtype)


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
        _check_rank(rank, self.a_shape, self.b_shape)
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.A = nn.Parameter(torch.empty(rank, *self.a_shape))
        self.B = nn.Parameter(torch.empty(rank, *self.b_shape))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self._replan_callbacks = []
        self.order = order  # Eq. 7's cheaper association order when None; also fixes the plan
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Each factor gets std s so that W's entries have std sqrt(r) * s^2 = 1/sqrt(in),
        # the scale of a default nn.Linear.
        std = (1.0 / math.sqrt(self.in_features * self.rank)) ** 0.5
        nn.init.normal_(self.A, std=std)
        nn.init.normal_(self.B, std=std)

    @property
    def order(self) -> str:
        """Which factor is applied first ('a_first' or 'b_first'). Assigning it re-plans the layout."""
        return self._order

    @order.setter
    def order(self, order: str | None) -> None:
        self._order = association_order(self.a_shape, self.b_shape, order or None)
        if getattr(self, "_plan", None) != "generic":  # a plan forced to "generic" stays
            self._set_plan(choose_plan(self.a_shape, self.b_shape, self.rank, self._order))

    @property
    def plan(self) -> str:
        """Memory layout of the two products (kbert/kernels/plans.py), fixed with the order;
        assign one to force it (it must apply this layer's order; "generic" always does)."""
        return self._plan

    @plan.setter
    def plan(self, plan: str) -> None:
        check_plan(plan, self.rank, self._order)
        self._set_plan(plan)

    def on_replan(self, callback) -> None:
        """Call ``callback()`` whenever this layer's plan is set again (order or plan
        assigned): a caller that decided something from the plan (attention's fused Q/K/V)
        decides again."""
        self._replan_callbacks.append(callback)

    def _set_plan(self, plan: str) -> None:
        self._plan = plan
        for callback in self._replan_callbacks:
            callback()

    def svd_factors(self, W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A (rank, m1, n1), B (rank, m2, n2) nearest to a dense (out, in) weight W (the SVD init)."""
        return nearest_kronecker(W, self.a_shape, self.b_shape, self.rank)

    @property
    def weight(self) -> torch.Tensor:
        """The dense (out, in) weight. Materialised: for inspection and tests only."""
        return kron_sum(self.A, self.B)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return kron_linear(x, self.A, self.B, self.bias, self.order, self.plan)

    def flops(self, tokens: int = 1) -> int:
        """Eq. 7 FLOPs for ``tokens`` input vectors (cheaper order; bias not counted)."""
        return tokens * kron_flops(self.a_shape, self.b_shape, self.rank)

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

    def svd_factors(self, E: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A (V, d/n), B (1, n) with A kron B nearest to a dense (V, d) table E (the SVD init)."""
        A, B = nearest_kronecker(E, (self.num_embeddings, self.embedding_dim // self.n), (1, self.n))
        return A[0], B[0]

    @property
    def weight(self) -> torch.Tensor:
        """The dense (V, d) table, materialised: for inspection, tests and the tied MLM decoder of
        general KD (kbert/pretraining.py); lookups never build it."""
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
