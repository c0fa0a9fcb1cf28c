"""FLOP counts of dense, Kronecker and low-rank layers, and the Eq. 7 association order.

A leaf module (no kbert imports): the layers, the kernels and the student search all count
and choose with these functions. Every count is for one input vector, a matrix-vector
product of an (m, n) matrix costing (2n - 1) m.
"""

from __future__ import annotations

Shape = tuple[int, int]
ORDERS = ("b_first", "a_first")  # ties go to the first (dict order in ``kron_flops_per_order``)


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


def association_order(a_shape: Shape, b_shape: Shape, order: str | None = None) -> str:
    """``order`` if it is one of ``ORDERS``, else an error; None: Eq. 7's cheaper order."""
    if order is None:
        costs = kron_flops_per_order(a_shape, b_shape)
        return min(costs, key=costs.get)
    if order not in ORDERS:
        raise ValueError(f"unknown contraction order {order!r}: use 'a_first' or 'b_first'")
    return order


def kron_flops(a_shape: Shape, b_shape: Shape, rank: int = 1) -> int:
    """Eq. 7 FLOPs of sum_r A_r kron B_r for one input vector, in the cheaper order (no bias)."""
    return rank * min(kron_flops_per_order(a_shape, b_shape).values())


def dense_flops(out_features: int, in_features: int) -> int:
    """FLOPs of a dense matrix-vector product, counted the same way as Eq. 7."""
    return (2 * in_features - 1) * out_features


def low_rank_flops(out_features: int, in_features: int, rank: int) -> int:
    """FLOPs of x -> U (V x) for one input vector, counted as for dense and Kronecker layers."""
    return (2 * in_features - 1) * rank + (2 * rank - 1) * out_features
