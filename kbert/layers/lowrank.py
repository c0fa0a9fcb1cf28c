"""Low-rank (truncated SVD) layers: the equal-size baseline to Kronecker factorisation.

A weight W of shape (out, in) is replaced by U @ V with U: (out, r), V: (r, in), i.e.
r * (out + in) parameters instead of out * in. Initialised from the teacher's W by the
truncated SVD (Eckart-Young: the best rank-r approximation in Frobenius norm), with the
singular values split evenly between the two factors, as for the Kronecker factors.
"""

from __future__ import annotations

import math

import torch
from torch import nn
import torch.nn.functional as F


def truncated_svd(W: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """U (m, r) and V (r, n) minimising ||W - U V||_F, with sqrt(S) on each side."""
    if W.dim() != 2:
        raise ValueError(f"truncated_svd needs a matrix, got shape {tuple(W.shape)}")
    if not 1 <= rank <= min(W.shape):
        raise ValueError(f"rank {rank} is not allowed for a {tuple(W.shape)} matrix: use 1..{min(W.shape)}")
    U, S, Vh = torch.linalg.svd(W.detach().double(), full_matrices=False)
    root = S[:rank].sqrt()
    return (U[:, :rank] * root).to(W.dtype), (Vh[:rank] * root[:, None]).to(W.dtype)


class _LowRank(nn.Module):
    """What both low-rank layers share: W = U @ V, fitted to a dense weight by truncated SVD."""

    def svd_factors(self, W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """U, V nearest to a dense weight W of this layer's shape (the SVD init)."""
        return truncated_svd(W, self.rank)

    @property
    def weight(self) -> torch.Tensor:
        """The dense (out, in) weight or (V, d) table, materialised: for inspection, tests and the
        tied MLM decoder of general KD (kbert/pretraining.py); forward passes never build it."""
        return self.U @ self.V


class LowRankLinear(_LowRank):
    """Linear layer with weight W = U @ V of shape (out, in), plus a dense bias."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True):
        super().__init__()
        if not 1 <= rank <= min(in_features, out_features):
            raise ValueError(
                f"rank {rank} is not allowed for a {out_features}x{in_features} matrix: "
                f"use 1..{min(in_features, out_features)}"
            )
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.U = nn.Parameter(torch.empty(out_features, rank))
        self.V = nn.Parameter(torch.empty(rank, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Factor stds chosen so W = U V has entries of std 1/sqrt(in), like nn.Linear.
        std = (1.0 / (math.sqrt(self.in_features) * math.sqrt(self.rank))) ** 0.5
        nn.init.normal_(self.U, std=std)
        nn.init.normal_(self.V, std=std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.linear(x, self.V), self.U, self.bias)  # (..., in) -> (..., r) -> (..., out)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, rank={self.rank}, bias={self.bias is not None}"


class LowRankEmbedding(_LowRank):
    """Word embedding X_i = U[i] @ V: a (V, r) table and one shared (r, d) projection."""

    def __init__(self, num_embeddings: int, embedding_dim: int, rank: int, padding_idx: int | None = None):
        super().__init__()
        if not 1 <= rank <= min(num_embeddings, embedding_dim):
            raise ValueError(f"embedding rank {rank} is not allowed: use 1..{min(num_embeddings, embedding_dim)}")
        self.num_embeddings, self.embedding_dim, self.rank = num_embeddings, embedding_dim, rank
        self.padding_idx = padding_idx
        self.U = nn.Parameter(torch.empty(num_embeddings, rank))
        self.V = nn.Parameter(torch.empty(rank, embedding_dim))
        self.reset_parameters()

    def reset_parameters(self, std: float = 0.02) -> None:
        # Entries of U V then have std ~ std, like BERT's N(0, 0.02) embedding init.
        factor_std = (std / math.sqrt(self.rank)) ** 0.5
        nn.init.normal_(self.U, std=factor_std)
        nn.init.normal_(self.V, std=factor_std)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.U, self.padding_idx) @ self.V  # (..., r) -> (..., d)

    def extra_repr(self) -> str:
        return f"V={self.num_embeddings}, d={self.embedding_dim}, rank={self.rank}"
