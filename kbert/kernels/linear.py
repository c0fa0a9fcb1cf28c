"""Kronecker products as layers call them: ``kron_linear`` (one layer) and ``kron_heads``
(attention's Q, K, V in one go), with autocast handled outside the autograd Functions.

``y = x @ (sum_r A_r kron B_r).T + bias`` without building the Kronecker product: one
Kronecker sum runs one of the layout plans of kbert/kernels/plans.py, several sums (or
plan ``generic``) the plain two-GEMM contraction below, through autograd.
"""

from __future__ import annotations

import contextlib

import torch

from kbert.kernels.plans import PLAN_ORDER, KronHeadsFn, KronLinearFn, check_plan, choose_plan
from kbert.layers.flops import association_order


# Autocast does not look inside a custom autograd Function, and the passes above need one
# dtype for input, factors and bias. Under autocast the layer therefore casts its operands
# to the autocast dtype once, outside the Function (the casts are differentiable, so the
# gradients still reach the fp32 parameters), and runs the Function with autocast off. In
# bf16 the C kernels (float32/float64 only) step aside and the same layouts run as torch
# ops, whose matrix products use the CPU's bf16 instructions (or the GPU's tensor cores).


def autocast_dtype(x: torch.Tensor) -> torch.dtype | None:
    """The dtype autocast computes in on x's device, or None when autocast is off there."""
    kind = x.device.type
    if not torch.amp.is_autocast_available(kind) or not torch.is_autocast_enabled(kind):
        return None
    return torch.get_autocast_dtype(kind)


@contextlib.contextmanager
def _autocast_operands(x: torch.Tensor, params: list):
    """Yield (x, params) cast to the autocast dtype with autocast off; unchanged without autocast."""
    low = autocast_dtype(x)
    if low is None:
        yield x, params
        return
    with torch.autocast(x.device.type, enabled=False):
        yield x.to(low), [None if p is None else p.to(low) for p in params]


def heads_fusable(layers: list, num_heads: int) -> bool:
    """Whether :func:`kron_heads` can run ``layers`` (attention's Q, K, V) fused:
    ``KroneckerLinear`` layers of one shape, one Kronecker sum each, plan b_planar, and
    ``num_heads`` dividing their output. It depends on the layers' shapes and plans only, so
    callers decide once, when the layers are built, and again only when a plan changes
    (``KroneckerLinear.on_replan``), never per call.
    """
    # Only KroneckerLinear layers have a plan (dense and low-rank layers are never fused).
    first = layers[0]
    if getattr(first, "plan", None) != "b_planar" or first.rank != 1 or first.out_features % num_heads:
        return False
    # (a layer's plan always applies its order: KroneckerLinear checks on assignment)
    return all(hasattr(layer, "plan") and (layer.a_shape, layer.b_shape, layer.rank, layer.plan)
               == (first.a_shape, first.b_shape, 1, "b_planar") for layer in layers)


def kron_heads(x: torch.Tensor, layers: list, num_heads: int) -> torch.Tensor | None:
    """Several ``KroneckerLinear`` on one input (attention's Q, K, V), in attention layout,
    for layers that :func:`heads_fusable` accepted.

    x (batch, seq, d) -> (len(layers), batch, num_heads, seq, d_out / num_heads), equal to
    stacking ``layer(x).view(batch, seq, H, -1).transpose(1, 2)``. The B factors of all
    layers are applied in one pass over x and the head layout is written by the same pass
    that adds the bias. Returns None where this call cannot take that pass (call the layers
    one by one): no tokens, an input dtype other than the factors' without autocast, or a
    forward hook on a layer (the fused pass would skip it); the input and the hooks change
    between calls, the layers' shapes and plans do not.
    """
    width = layers[0].in_features
    if x.dim() != 3 or x.shape[-1] != width:
        raise ValueError(f"kron_heads takes input (batch, seq, {width}), got {tuple(x.shape)}")
    nb, seq, _ = x.shape
    if nb * seq == 0 or any(layer._forward_hooks or layer._forward_pre_hooks for layer in layers):
        return None
    if autocast_dtype(x) is None and any(layer.A.dtype != x.dtype or layer.B.dtype != x.dtype for layer in layers):
        return None
    params = []
    for layer in layers:
        params += [layer.A, layer.B, layer.bias]
    with _autocast_operands(x, params) as (x, params):
        return KronHeadsFn.apply(x.reshape(nb * seq, -1).contiguous(), num_heads, seq, *params)


def _generic_matmul(x: torch.Tensor, A: torch.Tensor, B: torch.Tensor, order: str) -> torch.Tensor:
    """Any number of Kronecker sums, through autograd: two GEMMs over all rows and sums, with transposes."""
    r, m1, n1 = A.shape
    _, m2, n2 = B.shape
    N = x.shape[0]
    if order == "b_first":
        # (N*n1, n2) @ (n2, r*m2): contract the inner index j2 with every B_r at once.
        Z = x.reshape(N * n1, n2) @ B.reshape(r * m2, n2).T  # (N*n1, r*m2)
        # Bring j1 last so A contracts it in one GEMM: rows (N, m2), cols (r, n1).
        Z = Z.reshape(N, n1, r, m2).permute(0, 3, 2, 1).reshape(N * m2, r * n1)
        A_cat = A.permute(1, 0, 2).reshape(m1, r * n1)  # sums over r fold into the GEMM's K
        Y = Z @ A_cat.T  # (N*m2, m1)
        return Y.reshape(N, m2, m1).transpose(1, 2).reshape(N, m1 * m2)
    # a_first (the order was checked by the caller)
    Xt = x.reshape(N, n1, n2).transpose(1, 2).reshape(N * n2, n1)
    Z = Xt @ A.reshape(r * m1, n1).T  # (N*n2, r*m1)
    Z = Z.reshape(N, n2, r, m1).permute(0, 3, 2, 1).reshape(N * m1, r * n2)
    B_cat = B.permute(1, 0, 2).reshape(m2, r * n2)
    return (Z @ B_cat.T).reshape(N, m1 * m2)


def kron_linear(
    x: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    bias: torch.Tensor | None = None,
    order: str | None = None,
    plan: str | None = None,
) -> torch.Tensor:
    """y = x @ (sum_r A_r kron B_r).T + bias for x (..., n1*n2) -> (..., m1*m2).

    ``order``: Eq. 7's association order (default: the cheaper, or the one ``plan``
    applies); ``plan``: the memory layout (default: :func:`choose_plan`; ``"generic"`` is
    the plain two-GEMM version, the only one for more than one Kronecker sum).
    """
    r, m1, n1 = A.shape
    _, m2, n2 = B.shape
    if x.shape[-1] != n1 * n2:
        raise ValueError(f"input has {x.shape[-1]} features; A {tuple(A.shape[1:])} kron B {tuple(B.shape[1:])} needs {n1 * n2}")
    if not plan:
        order = association_order((m1, n1), (m2, n2), order)
        plan = choose_plan((m1, n1), (m2, n2), r, order)
    else:
        check_plan(plan, r, order)
        order = association_order((m1, n1), (m2, n2), order or PLAN_ORDER.get(plan))
    lead = x.shape[:-1]
    with _autocast_operands(x, [A, B, bias]) as (x, (A, B, bias)):
        x2 = x.reshape(-1, n1 * n2)
        if plan == "generic" or x2.shape[0] == 0:
            y = _generic_matmul(x2, A, B, order)
            y = y if bias is None else y + bias
        else:
            y = KronLinearFn.apply(x2.contiguous(), A, B, bias, plan)
    return y.reshape(*lead, m1 * m2)
