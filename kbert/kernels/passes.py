"""The memory-bound passes of the Kronecker layouts, each a C kernel with a torch fallback.

Building blocks of kbert/kernels/plans.py: the middle-axis product with a tiny matrix,
planar <-> interleaved copies (optionally in attention's heads layout), products with a
tiny B, and the one-pass float32 kernels of plans b_planar (m2 == 2) and a_planar
(n2 == 2). The C versions (kbert/kernels/csrc/) and the torch ops give the same numbers
up to rounding; every buffer is allocated on the input's device.
"""

from __future__ import annotations

import torch

from kbert.kernels.native import f32_kernel, kernel, ptr

PLANAR_MAX = 4  # planar layout when the axis that must be interleaved has at most this many entries
NATIVE_MIX_MAX = 16  # C kernel for products with a tiny B when its inner size is at most this


def mid(M: torch.Tensor, X: torch.Tensor, bias: torch.Tensor | None = None, colsum: bool = False):
    """Y[n] = M @ X[n] (+ bias) for M (p, q), X (N, q, L), bias (p, L): the middle-axis product.

    With ``colsum`` also returns X summed over n, shape (q*L,) (a bias gradient, for free).
    """
    N, q, L = X.shape
    p = M.shape[0]
    X, M = X.contiguous(), M.contiguous()
    bias = None if bias is None else bias.contiguous()
    fn = kernel("kbert_mid", M, X, bias)
    if fn is not None:
        Y = torch.empty(N, p, L, dtype=X.dtype, device=X.device)
        cs = torch.empty(q * L, dtype=X.dtype, device=X.device) if colsum else None
        fn(ptr(M), ptr(X), ptr(bias), ptr(Y), ptr(cs), N, p, q, L, torch.get_num_threads())
        return (Y, cs) if colsum else Y
    if q <= 2:  # expansion: broadcast multiply-adds beat a batched GEMM with K <= 2
        Y = torch.empty(N, p, L, dtype=X.dtype, device=X.device)
        if bias is None:
            torch.mul(X[:, 0:1], M[:, 0, None], out=Y)
        else:
            torch.addcmul(bias, M[:, 0, None], X[:, 0:1], out=Y)
        for j in range(1, q):
            Y.addcmul_(M[:, j, None], X[:, j:j + 1])
    else:
        Y = torch.matmul(M, X)
        if bias is not None:
            Y.add_(bias)
    return (Y, X.sum(0).reshape(q * L)) if colsum else Y


def mid_grad(G: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    """sum_n G[n] @ T[n].T for G (N, p, L), T (N, q, L): the gradient of the tiny factor."""
    if G.shape[1] >= T.shape[1]:  # batched products are fast with the long side as rows
        return torch.bmm(G, T.transpose(1, 2)).sum(0)
    return torch.bmm(T, G.transpose(1, 2)).sum(0).T


def rows_to_planar(X: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """P[i, r] = sum_j b[i, j] X[r, j] for X (R, n), b (k, n): (k, R)."""
    R, n = X.shape
    k = b.shape[0]
    fn = kernel("kbert_rows_to_planar", X, b) if n <= NATIVE_MIX_MAX else None
    if fn is None:
        return torch.mm(b, X.T)
    b = b.contiguous()
    P = torch.empty(k, R, dtype=X.dtype, device=X.device)
    fn(ptr(X), ptr(b), ptr(P), R, n, k, torch.get_num_threads())
    return P


def planar_to_rows(G: torch.Tensor, b: torch.Tensor, X: torch.Tensor, want_gx: bool, want_gb: bool):
    """(G.T @ b, G @ X) for G (k, R), b (k, n), X (R, n); either may be skipped (None)."""
    k, R = G.shape
    n = b.shape[1]
    fn = kernel("kbert_planar_to_rows", G, b, X) if n <= PLANAR_MAX else None
    if fn is None:
        return (torch.mm(G.T, b) if want_gx else None), (G @ X if want_gb else None)
    b = b.contiguous()
    gx = torch.empty(R, n, dtype=G.dtype, device=G.device) if want_gx else None
    gb = torch.empty(k, n, dtype=G.dtype, device=G.device) if want_gb else None
    fn(ptr(G), ptr(b), ptr(X), ptr(gx), ptr(gb), R, k, n, torch.get_num_threads())
    return gx, gb


def interleave(P: torch.Tensor, bias: torch.Tensor | None = None, heads: tuple[int, int] | None = None,
                out: torch.Tensor | None = None) -> torch.Tensor:
    """Planar (k, N, m) -> (N, m, k) contiguous, plus bias (m*k,) if given.

    With ``heads=(H, seq)`` the result is laid out for attention instead: (N/seq, H, seq,
    m*k/H), as ``y.view(N/seq, seq, H, -1).transpose(1, 2).contiguous()`` would give.
    """
    k, N, m = P.shape
    H, seq = heads or (1, N)
    bias = None if bias is None else bias.contiguous()
    fn = kernel("kbert_interleave", P, bias)
    if fn is not None:
        Y = torch.empty(N, m, k, dtype=P.dtype, device=P.device) if heads is None else torch.empty(N // seq, H, seq, m * k // H, dtype=P.dtype, device=P.device)
        Y = Y if out is None else out
        fn(ptr(P), ptr(bias), ptr(Y), N, m, k, seq, H, torch.get_num_threads())
        return Y
    if k == 1:
        Y = P.view(N, m, 1)
    elif k == 2 and P.dtype in (torch.float32, torch.float64):
        Y = torch.view_as_real(torch.complex(P[0], P[1]))  # writes (re, im) pairs: a plain copy
    else:
        Y = P.permute(1, 2, 0).contiguous()
    Y = Y if bias is None else Y + bias.view(m, k)
    if heads is not None:
        Y = Y.view(N // seq, seq, H, m * k // H).transpose(1, 2).contiguous()
    return Y if out is None else out.copy_(Y.view(out.shape))


def deinterleave(Y: torch.Tensor, colsum: bool = False, k: int | None = None, heads: bool = False,
                  out: torch.Tensor | None = None, colsum_out: torch.Tensor | None = None):
    """(N, m, k) -> (k, N, m) contiguous; with ``colsum`` also Y summed over n, (m*k,).

    With ``heads`` Y is in the attention layout (batch, H, seq, dh) and ``k`` must be given.
    """
    if heads:
        nb, H, seq, dh = Y.shape
        N, m = nb * seq, H * dh // k
    else:
        N, m, k = Y.shape
        H, seq = 1, N
    fn = kernel("kbert_deinterleave", Y)
    if fn is not None:
        Y = Y.contiguous()
        P = torch.empty(k, N, m, dtype=Y.dtype, device=Y.device) if out is None else out
        cs = (torch.empty(m * k, dtype=Y.dtype, device=Y.device) if colsum_out is None else colsum_out) if colsum else None
        fn(ptr(Y), ptr(P), ptr(cs), N, m, k, seq, H, torch.get_num_threads())
        return (P, cs) if colsum else P
    if heads:
        Y = Y.transpose(1, 2).reshape(N, m, k)
    P = Y.reshape(1, N, m) if k == 1 else Y.permute(2, 0, 1).contiguous()
    P = P if out is None else out.copy_(P)
    cs = Y.sum(0).reshape(m * k) if colsum else None
    if cs is not None and colsum_out is not None:
        cs = colsum_out.copy_(cs)
    return (P, cs) if colsum else P



def planar2(x, a, b, bias, heads=None, want_zp=False, out=None, zp_out=None):
    """Plan b_planar as one C pass (m2 == 2, float32); None when it does not apply.

    Returns (y, Zp): y (N, m1*2), or with ``heads=(H, seq)`` the attention layout, written
    into ``out`` if given; Zp (2, N*n1), the planar B-products the backward pass needs,
    when ``want_zp`` (into ``zp_out`` if given), else None.
    """
    (m1, n1), (m2, n2) = a.shape, b.shape
    N = x.shape[0]
    H, seq = heads or (1, N)
    if m2 != 2 or m1 % 16 or N % seq or (H > 1 and ((2 * m1) % H or (2 * m1 // H) % 32)):
        return None
    fn = f32_kernel("kbert_planar2_f32", x, a, b, bias)
    if fn is None:
        return None
    At, b = a.T.contiguous(), b.contiguous()
    bias = None if bias is None else bias.contiguous()
    if out is None:
        out = torch.empty(N, m1 * 2, dtype=x.dtype, device=x.device) if heads is None else torch.empty(N // seq, H, seq, 2 * m1 // H, dtype=x.dtype, device=x.device)
    Zp = None
    if want_zp:
        Zp = torch.empty(2, N * n1, dtype=x.dtype, device=x.device) if zp_out is None else zp_out
    fn(ptr(x), ptr(b), ptr(At), ptr(bias), ptr(out), ptr(Zp), N, m1, n1, n2, seq, H, torch.get_num_threads())
    return out, Zp


def aplanar2(x, a, b, bias, want_zp=False):
    """Plan a_planar as one C pass (n2 == 2, m2 <= 16, float32); None when it does not apply. Returns (y, Zp)."""
    (m1, n1), (m2, n2) = a.shape, b.shape
    N = x.shape[0]
    if n2 != 2 or m1 % 16 or m2 > 16:
        return None
    fn = f32_kernel("kbert_aplanar2_f32", x, a, b, bias)
    if fn is None:
        return None
    At = a.T.contiguous()
    Bt = torch.zeros(2, 16, dtype=x.dtype, device=x.device)
    Bt[:, :m2] = b.detach().T
    padded = None
    if bias is not None:
        padded = torch.zeros(m1 * m2 + 16, dtype=x.dtype, device=x.device)
        padded[: m1 * m2] = bias.detach()
    Y = torch.empty(N, m1 * m2, dtype=x.dtype, device=x.device)
    Zp = torch.empty(2, N * m1, dtype=x.dtype, device=x.device) if want_zp else None
    fn(ptr(x), ptr(Bt), ptr(At), ptr(padded), ptr(Y), ptr(Zp), N, m1, n1, m2, torch.get_num_threads())
    return Y, Zp
