"""Function-preserving permutations that bring a dense BERT closer to Kronecker form.

The nearest Kronecker product A kron B of W (paper §3.2) depends on the order of W's rows
and columns: entry (i1*m2 + i2, j1*n2 + j2) must be A[i1, j1] B[i2, j2]. Some orders of
the same network are much closer to that form than others, and many orders compute the
same function:

    residual   one permutation of the hidden coordinates for the whole network: columns of
               every embedding table and of every matrix that reads the residual stream
               (W_Q, W_K, W_V, W1), rows of every matrix that writes it (W_O, W2), and every
               LayerNorm's weight and bias. The model reports its hidden states back in
               the teacher's order (``KBertConfig.residual_permutation``), so no loss,
               pooler or head sees the change.
    qk[l]      per layer, within each head: the rows of W_Q and W_K (and their biases) in
               the same order, which leaves every score q . k unchanged.
    vo[l]      per layer, within each head: the rows of W_V and the columns of W_O.
    ffn[l]     per layer: the rows of W1 (and its bias) and the columns of W2.

:func:`search` finds them by block-coordinate descent on the summed relative errors
||W' - nearest Kronecker(W')||^2 / ||W||^2 of every factorised matrix: with every
approximation fixed, the best order of one group is a linear assignment (scipy's
``linear_sum_assignment``); with the orders fixed, the best approximations are the SVDs.
Neither step can raise the error, so the result is never worse than the plain SVD of the
unpermuted teacher (the identity is where the search starts). Issue 13; measured in
docs/ladder.md. TQCompressedGPT2 uses permutations with Kronecker factors for GPT-2 in
the same spirit.

Permutations are index tensors: the new coordinate i holds the old coordinate perm[i],
i.e. W' = W[rows][:, cols].
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from kbert.layers.kronecker import factor_shapes, nearest_kronecker


@dataclass
class Permutations:
    residual: torch.Tensor          # (d,)
    qk: list[torch.Tensor]          # per layer, (d,), within heads
    vo: list[torch.Tensor]          # per layer, (d,), within heads
    ffn: list[torch.Tensor]         # per layer, (f,)


def identity(d: int, f: int, layers: int) -> Permutations:
    return Permutations(torch.arange(d), [torch.arange(d) for _ in range(layers)],
                        [torch.arange(d) for _ in range(layers)], [torch.arange(f) for _ in range(layers)])


# --------------------------------------------------------------------------------------
# The factorised matrices of one encoder, each with the permutations of its rows and columns
# --------------------------------------------------------------------------------------


@dataclass
class Matrix:
    name: str
    W: torch.Tensor                 # the teacher's weight, original order, float64
    a_shape: tuple[int, int]
    rows: tuple[str, int] | None    # (group, layer) of the row permutation; None: rows stay
    cols: tuple[str, int] | None


def factorised_matrices(encoder, kronecker: dict) -> list[Matrix]:
    """Every matrix the Kronecker student factorises, with its A shape and permutation groups."""
    att = tuple(kronecker["attention_a_shape"])
    ffn = tuple(kronecker["ffn_a_shape"])
    n = int(kronecker["embedding_n"])
    E = encoder.embeddings.word_embeddings.weight
    out = [Matrix("embeddings.word_embeddings", E.detach().double(), (E.shape[0], E.shape[1] // n),
                  None, ("residual", 0))]
    for l, layer in enumerate(encoder.encoder.layer):
        prefix = f"encoder.layer.{l}."
        attention = layer.attention
        for part, rows in (("query", "qk"), ("key", "qk"), ("value", "vo")):
            W = getattr(attention.self, part).weight
            out.append(Matrix(f"{prefix}attention.self.{part}", W.detach().double(), att, (rows, l), ("residual", 0)))
        out.append(Matrix(f"{prefix}attention.output.dense", attention.output.dense.weight.detach().double(), att,
                          ("residual", 0), ("vo", l)))
        out.append(Matrix(f"{prefix}intermediate.dense", layer.intermediate.dense.weight.detach().double(), ffn,
                          ("ffn", l), ("residual", 0)))
        out.append(Matrix(f"{prefix}output.dense", layer.output.dense.weight.detach().double(), ffn[::-1],
                          ("residual", 0), ("ffn", l)))
    return out


def _perm(perms: Permutations, key: tuple[str, int] | None) -> torch.Tensor | None:
    if key is None:
        return None
    group, layer = key
    return perms.residual if group == "residual" else getattr(perms, group)[layer]


def permuted(matrix: Matrix, perms: Permutations) -> torch.Tensor:
    W = matrix.W
    rows, cols = _perm(perms, matrix.rows), _perm(perms, matrix.cols)
    if rows is not None:
        W = W[rows]
    if cols is not None:
        W = W[:, cols]
    return W


def nearest(W: torch.Tensor, a_shape: tuple[int, int]) -> torch.Tensor:
    """The nearest Kronecker product of W (rank 1), as a dense matrix."""
    a, b = factor_shapes(W.shape[0], W.shape[1], a_shape)
    A, B = nearest_kronecker(W, a, b)
    return torch.kron(A[0], B[0])


def relative_errors(matrices: list[Matrix], perms: Permutations) -> dict[str, float]:
    """||W' - nearest Kronecker(W')||_F / ||W||_F per matrix (the compress report's measure)."""
    errors = {}
    for m in matrices:
        W = permuted(m, perms)
        errors[m.name] = float((W - nearest(W, m.a_shape)).norm() / m.W.norm())
    return errors


# --------------------------------------------------------------------------------------
# The search
# --------------------------------------------------------------------------------------


def _assignment_cost(matrix: Matrix, perms: Permutations, approx: torch.Tensor, axis: str) -> torch.Tensor:
    """cost[old, slot]: squared distance (over ||W||^2) of the teacher's row/column ``old``,
    in the current order of the other axis, from the approximation's row/column ``slot``."""
    W = matrix.W
    other = _perm(perms, matrix.cols if axis == "rows" else matrix.rows)
    if axis == "rows":
        vectors, targets = (W if other is None else W[:, other]), approx
    else:
        vectors, targets = (W if other is None else W[other]).T, approx.T
    return torch.cdist(vectors, targets) ** 2 / matrix.W.norm() ** 2


def _solve(cost: torch.Tensor, block: int | None) -> torch.Tensor:
    """The permutation (slot -> old index) of least total cost; within blocks of ``block``."""
    size = cost.shape[0]
    perm = torch.empty(size, dtype=torch.long)
    step = block or size
    for start in range(0, size, step):
        old, slot = linear_sum_assignment(cost[start:start + step, start:start + step].numpy())
        perm[start + slot] = torch.as_tensor(start + old)
    return perm


def search(encoder, kronecker: dict, iterations: int = 4, log=None) -> tuple[Permutations, dict]:
    """Permutations of ``encoder`` (a dense KBertModel) for the Kronecker shapes ``kronecker``,
    and a report: mean relative error of the plain SVD, after each iteration, and per matrix."""
    config = encoder.config
    matrices = factorised_matrices(encoder, kronecker)
    perms = identity(config.hidden_size, config.intermediate_size, config.num_hidden_layers)
    head = config.hidden_size // config.num_attention_heads
    groups = [("residual", 0, None)] + [(g, l, head if g in ("qk", "vo") else None)
                                         for l in range(config.num_hidden_layers) for g in ("qk", "vo", "ffn")]
    before = errors = relative_errors(matrices, perms)
    history = [float(np.mean(list(before.values())))]
    for iteration in range(iterations):
        for group, layer, block in groups:
            key = (group, layer)
            cost = 0
            for m in matrices:
                for axis in ("rows", "cols"):
                    if getattr(m, axis) == key:
                        approx = nearest(permuted(m, perms), m.a_shape)
                        cost = cost + _assignment_cost(m, perms, approx, axis)
            new = _solve(cost, block)
            if group == "residual":
                perms.residual = new
            else:
                getattr(perms, group)[layer] = new
        errors = relative_errors(matrices, perms)
        history.append(float(np.mean(list(errors.values()))))
        if log:
            log(f"permutation search: iteration {iteration + 1}, mean relative error {history[-1]:.4f}")
    report = {"relative_error_mean_unpermuted": history[0], "relative_error_mean_by_iteration": history[1:],
              "relative_error_unpermuted": before, "relative_error_permuted": errors}
    return perms, report


# --------------------------------------------------------------------------------------
# Applying them
# --------------------------------------------------------------------------------------


@torch.no_grad()
def apply(model, perms: Permutations):
    """A copy of the dense ``model`` (KBertModel or task model) in the permuted order, with
    ``config.residual_permutation`` set so that it computes exactly what ``model`` computes."""
    model = copy.deepcopy(model)
    encoder = model.bert if hasattr(model, "bert") else model
    if encoder.config.residual_permutation is not None:
        raise ValueError("the model is already permuted")
    p = perms.residual

    def take(param, rows=None, cols=None):
        value = param.data
        if rows is not None:
            value = value[rows]
        if cols is not None:
            value = value[:, cols]
        param.data = value.contiguous()

    def linear(module, rows=None, cols=None):
        take(module.weight, rows, cols)
        if rows is not None:
            take(module.bias, rows)

    def layer_norm(module):
        take(module.weight, p)
        take(module.bias, p)

    embeddings = encoder.embeddings
    for table in (embeddings.word_embeddings, embeddings.position_embeddings, embeddings.token_type_embeddings):
        take(table.weight, cols=p)
    layer_norm(embeddings.LayerNorm)
    for l, layer in enumerate(encoder.encoder.layer):
        attention = layer.attention
        linear(attention.self.query, perms.qk[l], p)
        linear(attention.self.key, perms.qk[l], p)
        linear(attention.self.value, perms.vo[l], p)
        linear(attention.output.dense, p, perms.vo[l])
        layer_norm(attention.output.LayerNorm)
        linear(layer.intermediate.dense, perms.ffn[l], p)
        linear(layer.output.dense, p, perms.ffn[l])
        layer_norm(layer.output.LayerNorm)
    encoder.set_residual_permutation(p.tolist())
    return model
