"""Layout plans of a Kronecker layer and the autograd Functions that run them.

Everything here is an exact rewrite of ``y = x @ (A kron B).T + bias`` (one Kronecker sum),
checked against ``torch.kron`` forward and backward in tests/kernels/. Read
kbert/layers/kronecker.py first; this package only makes it fast.

Per token, X = x.view(n1, n2) and Y = A @ X @ B.T + bias (one Kronecker sum; sums of
several use the generic path). Of the two products one contracts the *last* axis of an
(N, rows, cols) activation: a single GEMM over all N tokens, no copies. The other
contracts the *middle* axis, which no single GEMM can do in place; how it is done is the
layer's "plan" (all are exact rewrites, tested against torch.kron):

  b_planar  order b_first, short m2 (attention: A 384x384 / 384x48, B 2x2 / 2x16).
            Zp = B @ X^T for every token, written planar (m2, N*n1); then one GEMM
            Zp[i2] @ A^T per output column i2, into (m2, N, m1); one interleave pass
            (+ bias) to (N, m1, m2) at the end.
  b_mid     order b_first, small A (FFN W1: A 8x2 / 16x2). Z = X @ B^T as one GEMM,
            then Y[n] = A @ Z[n] + bias: a memory-bound pass with the tiny A.
  a_mid     order a_first, small A (FFN W2: A 2x8 / 2x16). Z[n] = A @ X[n], then GEMM.
  a_planar  order a_first, short n2: the mirror image of b_planar.

The memory-bound passes (middle-axis product with a tiny matrix, planar <-> interleaved
copies, products with a tiny B) run in small C kernels when a C compiler is present
(kbert/kernels/native.py), else as torch ops; both give the same numbers up to rounding.
For
m2 == 2 in float32, b_planar is a single C pass (``passes.planar2``: B, then A, then the
interleaved store with the bias, per block of tokens in L1). ``KronHeadsFn``
(``kbert.kernels.linear.kron_heads``) runs Q, K, V that way and writes attention's head
layout directly. The backward pass
(``KronLinearFn``) is written out with the same layouts, so training never transposes a
big tensor either; the bias gradient is summed inside a pass that reads the output
gradient anyway. docs/efficiency.md has the measurements.
"""

from __future__ import annotations

import torch

from kbert.kernels.passes import (
    PLANAR_MAX, aplanar2, deinterleave, interleave, mid, mid_grad, planar2, planar_to_rows, rows_to_planar,
)
from kbert.layers.flops import Shape, association_order

PLANS = ("b_planar", "b_mid", "a_mid", "a_planar", "generic")
PLAN_ORDER = {"b_planar": "b_first", "b_mid": "b_first", "a_mid": "a_first", "a_planar": "a_first"}


def choose_plan(a_shape: Shape, b_shape: Shape, rank: int = 1, order: str | None = None) -> str:
    """Layout plan of one Kronecker layer: a cost model that counts copies, not just FLOPs.

    ``order`` (default: Eq. 7's cheaper one) fixes which factor is applied first. The
    middle-axis product then runs either as big GEMMs on a planar layout, at the price of
    one interleave pass, when the axis to move is short (<= 4: B of the Table-1 attention
    matrices is 2 x 2 or 2 x 16), or as one memory-bound pass with the small factor.
    """
    (m1, n1), (m2, n2) = a_shape, b_shape
    order = association_order(a_shape, b_shape, order)
    if rank != 1:
        return "generic"
    if order == "b_first":
        return "b_planar" if m2 <= PLANAR_MAX and m2 < m1 * n1 else "b_mid"
    return "a_planar" if n2 <= PLANAR_MAX and n2 < m1 * n1 else "a_mid"


def check_plan(plan: str, rank: int, order: str | None = None) -> None:
    """Raise unless ``plan`` is a plan that can run ``rank`` Kronecker sums in ``order`` (None: any)."""
    if plan not in PLANS:
        raise ValueError(f"unknown plan {plan!r}; plans: {PLANS}")
    if plan == "generic":
        return
    if rank != 1:
        raise ValueError(f"plan {plan!r} handles one Kronecker sum; this layer has {rank}: use 'generic'")
    if order is not None and PLAN_ORDER[plan] != order:
        raise ValueError(f"plan {plan!r} applies {PLAN_ORDER[plan]}, not {order}")


def _forward(x, a, b, bias, plan, want_saved=True):
    """One Kronecker sum: x (N, n1*n2) contiguous, a (m1, n1), b (m2, n2). Returns y and the saved tensors."""
    (m1, n1), (m2, n2) = a.shape, b.shape
    N = x.shape[0]
    if plan == "b_planar":
        fused = planar2(x, a, b, bias, want_zp=want_saved)
        if fused is not None:
            return fused[0], (fused[1],)
        Zp = rows_to_planar(x.view(N * n1, n2), b)  # (m2, N*n1): B on every token, planar
        Yp = torch.empty(m2, N, m1, dtype=x.dtype, device=x.device)
        for i2 in range(m2):
            torch.mm(Zp[i2].view(N, n1), a.T, out=Yp[i2])  # one big GEMM per output column of B
        return interleave(Yp, bias).view(N, m1 * m2), (Zp,)
    if plan == "b_mid":
        Z = torch.mm(x.view(N * n1, n2), b.T).view(N, n1, m2)
        return mid(a, Z, None if bias is None else bias.view(m1, m2)).view(N, m1 * m2), (Z,)
    if plan == "a_mid":
        Z = mid(a, x.view(N, n1, n2))  # (N, m1, n2)
        Y = torch.mm(Z.view(N * m1, n2), b.T)
        if bias is not None:
            Y.view(N, m1, m2).add_(bias.view(m1, m2))
        return Y.view(N, m1 * m2), (Z,)
    # a_planar (the plan was checked by the caller)
    fused = aplanar2(x, a, b, bias, want_zp=want_saved)
    if fused is not None:
        return fused[0], (None, fused[1])  # backward deinterleaves x itself
    Xp = deinterleave(x.view(N, n1, n2))  # (n2, N, n1)
    Zp = torch.mm(Xp.view(n2 * N, n1), a.T)  # (n2*N, m1)
    Y = torch.mm(Zp.view(n2, N * m1).T, b.T)  # (N*m1, m2)
    if bias is not None:
        Y.view(N, m1, m2).add_(bias.view(m1, m2))
    return Y.view(N, m1 * m2), (Xp, Zp)


def _backward(g, x, a, b, saved, plan, need):
    """Gradients (x, a, b, bias) of <g, y> for one Kronecker sum; ``need`` says which are wanted."""
    (m1, n1), (m2, n2) = a.shape, b.shape
    N = g.shape[0]
    gx = ga = gb = gbias = None
    if plan == "b_planar":
        (Zp,) = saved
        gYp, gbias = deinterleave(g.view(N, m1, m2), colsum=True)  # (m2, N, m1); bias gradient on the way
        if need[1]:
            ga = gYp.view(m2 * N, m1).T @ Zp.view(m2 * N, n1)
        if need[0] or need[2]:
            gZp = torch.mm(gYp.view(m2 * N, m1), a).view(m2, N * n1)
            gx, gb = planar_to_rows(gZp, b, x.view(N * n1, n2), need[0], need[2])
            gx = None if gx is None else gx.view(N, n1 * n2)
    elif plan == "b_mid":
        (Z,) = saved
        g3 = g.view(N, m1, m2)
        if need[1]:
            ga = mid_grad(g3, Z)
        if need[0] or need[2]:
            gZ, gbias = mid(a.T, g3, colsum=True)
            gZ = gZ.view(N * n1, m2)
            if need[0]:
                gx = torch.mm(gZ, b).view(N, n1 * n2)
            if need[2]:
                gb = gZ.T @ x.view(N * n1, n2)
    elif plan == "a_mid":
        (Z,) = saved
        g2 = g.view(N * m1, m2)
        if need[2]:
            gb = g2.T @ Z.view(N * m1, n2)
        if need[0] or need[1]:
            gZ = torch.mm(g2, b).view(N, m1, n2)
            if need[0]:
                gx = mid(a.T, gZ).view(N, n1 * n2)
            if need[1]:
                ga = mid_grad(gZ, x.view(N, n1, n2))
    else:  # a_planar
        Xp, Zp = saved
        if Xp is None and need[1]:
            Xp = deinterleave(x.view(N, n1, n2))
        g2 = g.view(N * m1, m2)
        if need[2]:
            gb = planar_to_rows(Zp.view(n2, N * m1), b.T, g2, False, True)[1].T  # (m2, n2)
        if need[0] or need[1]:
            gZp = rows_to_planar(g2, b.T.contiguous())  # (n2, N*m1)
            if need[1]:
                ga = gZp.view(n2 * N, m1).T @ Xp.view(n2 * N, n1)
            if need[0]:
                gx = interleave(torch.mm(gZp.view(n2 * N, m1), a).view(n2, N, n1)).view(N, n1 * n2)
    return gx, ga, gb, gbias


class KronLinearFn(torch.autograd.Function):
    """y = x @ (A[0] kron B[0]).T + bias, with a hand-written, copy-free backward pass."""

    @staticmethod
    def forward(ctx, x, A, B, bias, plan):
        y, saved = _forward(x, A[0], B[0], bias, plan, want_saved=any(ctx.needs_input_grad))
        ctx.plan = plan
        ctx.has_bias = bias is not None
        ctx.save_for_backward(x, A, B, *saved)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        x, A, B, *saved = ctx.saved_tensors
        need = ctx.needs_input_grad
        gx, ga, gb, gbias = _backward(g.contiguous(), x, A[0], B[0], saved, ctx.plan, need[:3])
        if ctx.has_bias and need[3]:
            gbias = g.sum(0) if gbias is None else gbias
        else:
            gbias = None
        return (
            gx if need[0] else None,
            None if ga is None else ga.unsqueeze(0),
            None if gb is None else gb.unsqueeze(0),
            gbias,
            None,
        )


class KronHeadsFn(torch.autograd.Function):
    """S Kronecker layers (plan b_planar, one sum each) on one input, written in attention layout.

    x (N, n1*n2) -> (S, N/seq, H, seq, dh): B of all S layers is applied in one pass over
    x, then one GEMM per layer and output column of B, then one interleave pass that adds
    the bias and writes the heads layout directly (no separate head transposes).
    """

    @staticmethod
    def forward(ctx, x, heads, seq, *params):
        S = len(params) // 3
        As = [params[3 * s][0] for s in range(S)]
        Bs = [params[3 * s + 1][0] for s in range(S)]
        biases = [params[3 * s + 2] for s in range(S)]
        (m1, n1), (m2, n2) = As[0].shape, Bs[0].shape
        N = x.shape[0]
        Bcat = torch.cat(Bs)  # (S*m2, n2)
        out = torch.empty(S, N // seq, heads, seq, m1 * m2 // heads, dtype=x.dtype, device=x.device)
        want_zp = any(ctx.needs_input_grad)
        Zp = torch.empty(S, m2, N * n1, dtype=x.dtype, device=x.device) if want_zp else None
        fused = planar2(x, As[0], Bs[0], biases[0], (heads, seq), want_zp, out[0], None if Zp is None else Zp[0])
        if fused is not None:  # one C pass per layer
            for s in range(1, S):
                planar2(x, As[s], Bs[s], biases[s], (heads, seq), want_zp, out[s], None if Zp is None else Zp[s])
        else:
            Zp = rows_to_planar(x.view(N * n1, n2), Bcat).view(S, m2, N * n1)  # B of every layer, one pass
            Yp = torch.empty(S, m2, N, m1, dtype=x.dtype, device=x.device)
            for s in range(S):
                torch.mm(Zp[s].view(m2 * N, n1), As[s].T, out=Yp[s].view(m2 * N, m1))
                interleave(Yp[s], biases[s], heads=(heads, seq), out=out[s])
        if Zp is None:
            Zp = torch.empty(0, dtype=x.dtype, device=x.device)
        ctx.heads, ctx.seq, ctx.S = heads, seq, S
        ctx.has_bias = [b is not None for b in biases]
        ctx.save_for_backward(x, Bcat, Zp, *As)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        x, Bcat, Zp, *As = ctx.saved_tensors
        S, need = ctx.S, ctx.needs_input_grad
        (m1, n1), n2 = As[0].shape, Bcat.shape[1]
        m2, N = Bcat.shape[0] // S, x.shape[0]
        gYp = torch.empty(S, m2, N, m1, dtype=g.dtype, device=g.device)
        gbias = torch.empty(S, m1 * m2, dtype=g.dtype, device=g.device)
        grads = [None] * (3 * S)
        need_x = need[0]
        need_b = any(need[3 + 3 * s + 1] for s in range(S))
        for s in range(S):
            deinterleave(g[s], colsum=True, k=m2, heads=True, out=gYp[s], colsum_out=gbias[s])
            if need[3 + 3 * s]:
                grads[3 * s] = (gYp[s].view(m2 * N, m1).T @ Zp[s].view(m2 * N, n1)).unsqueeze(0)
            if ctx.has_bias[s] and need[3 + 3 * s + 2]:
                grads[3 * s + 2] = gbias[s]
        gx = None
        if need_x or need_b:
            gZp = torch.empty(S, m2 * N, n1, dtype=g.dtype, device=g.device)
            for s in range(S):
                torch.mm(gYp[s].view(m2 * N, m1), As[s], out=gZp[s])
            gx, gB = planar_to_rows(gZp.view(S * m2, N * n1), Bcat, x.view(N * n1, n2), need_x, need_b)
            gx = None if gx is None else gx.view(N, n1 * n2)
            for s in range(S):
                if need[3 + 3 * s + 1]:
                    grads[3 * s + 1] = gB[s * m2:(s + 1) * m2].unsqueeze(0)
        return (gx, None, None, *grads)
