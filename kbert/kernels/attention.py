"""Attention's two batched products as single C passes (dense and Kronecker models alike).

Inference only: Q K^T with the scale and the additive mask fused, and P V written straight
into the (batch, seq, heads*dh) layout that the output projection reads
(kbert/kernels/csrc/attention.c). Each returns None when it does not apply (autograd,
shapes, dtype, device, no C kernels); the caller then runs the torch ops.
"""

from __future__ import annotations

import torch

from kbert.kernels.native import f32_kernel, ptr


def attention_scores(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor, heads: int, alpha: float) -> torch.Tensor | None:
    """alpha * q @ k^T + mask for q, k (B*H, T, dh) and mask (B, 1, 1|T, T), as one C pass.

    Inference only (no autograd); None when it does not apply (then use torch.baddbmm).
    """
    BH, T, dh = q.shape
    if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or mask.requires_grad):
        return None
    if T % 16 or mask.dim() != 4 or mask.shape[-1] != T or mask.shape[1] != 1 or mask.shape[2] not in (1, T):
        return None
    if BH % heads or mask.shape[0] != BH // heads:
        return None
    fn = f32_kernel("kbert_scores_f32", q, k, mask)
    if fn is None:
        return None
    q, k, mask = q.contiguous(), k.contiguous(), mask.contiguous()
    S = torch.empty(BH, T, T, dtype=q.dtype, device=q.device)
    fn(ptr(q), ptr(k), ptr(mask), ptr(S), float(alpha), BH, heads, T, dh, mask.shape[2], torch.get_num_threads())
    return S


def attention_context(probs: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor | None:
    """probs @ v for (B*H, T, T) x (B*H, T, dh), returned as (B, T, H*dh) in one C pass.

    Inference only; None when it does not apply.
    """
    BH, T, dh = v.shape
    if torch.is_grad_enabled() and (probs.requires_grad or v.requires_grad):
        return None
    if dh % 16 or dh > 64 or BH % heads:
        return None
    fn = f32_kernel("kbert_context_f32", probs, v)
    if fn is None:
        return None
    probs, v = probs.contiguous(), v.contiguous()
    C = torch.empty(BH // heads, T, heads * dh, dtype=v.dtype, device=v.device)
    fn(ptr(probs), ptr(v), ptr(C), BH, heads, T, dh, torch.get_num_threads())
    return C
