"""Data-aware initialisation: the teacher's inputs to every factorised matrix, and the choice.

``compress`` with ``init: data_aware`` runs the teacher over calibration token ids, keeps
per factorised matrix what the weighted nearest-Kronecker product needs (the input second
moment E[x x^T] of a linear layer, the token frequencies of the word embedding), fits the
data-aware factors, and keeps them only where they beat the plain SVD on the fitted data.
Held-out calibration text measures both, so the report says what the choice bought.
"""

from __future__ import annotations

from collections import defaultdict

import torch

from kbert.layers.kronecker import (
    KroneckerEmbedding, KroneckerLinear, kron_sum, kronecker_moment_factors, nearest_kronecker_embedding_weighted,
    nearest_kronecker_weighted, output_error,
)

BATCH_SIZE = 16  # calibration sequences per teacher forward
# The embedding is fitted with token weights (1 - EMBEDDING_FLOOR) * frequency + EMBEDDING_FLOOR / V:
# the floor pulls the shared embedding row B_E towards the plain SVD's, which serves the whole
# vocabulary; a calibration sample sees a few thousand distinct tokens of it.
EMBEDDING_FLOOR = 0.1


@torch.no_grad()
def input_moments(model: torch.nn.Module, encoder: torch.nn.Module, names: list[str],
                  ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """E[x x^T] (in, in), float64, of the input of each module ``names`` of ``model``.

    ``encoder`` (``model`` itself or its ``.bert``) runs over ``ids`` (N, T), unpadded
    sequences, so every position is a real token. Forward hooks read the inputs.
    """
    modules = dict(model.named_modules())
    sums, tokens = defaultdict(float), defaultdict(int)

    def hook(name):
        def record(module, args, output):
            x = args[0].reshape(-1, args[0].shape[-1])  # (B*T, in)
            sums[name] = sums[name] + (x.T @ x).double()  # float32 per batch, float64 across
            tokens[name] += x.shape[0]
        return record

    handles = [modules[name].register_forward_hook(hook(name)) for name in names]
    try:
        for batch in ids.split(BATCH_SIZE):
            encoder(input_ids=batch)
    finally:
        for handle in handles:
            handle.remove()
    return {name: sums[name] / tokens[name] for name in names}


def token_frequencies(ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """How often each token occurs in ``ids``, as a fraction of all tokens; (V,) float64."""
    counts = torch.bincount(ids.flatten(), minlength=vocab_size).double()
    return counts / counts.sum()


def calibration_stats(model, encoder, names: list[str], ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """What ``data_aware_init`` needs for every factorised module: a moment or token weights."""
    modules = dict(model.named_modules())
    linear = [n for n in names if isinstance(modules[n], torch.nn.Linear)]
    stats = input_moments(model, encoder, linear, ids)
    for name in names:
        if isinstance(modules[name], torch.nn.Embedding):
            stats[name] = token_frequencies(ids, modules[name].num_embeddings)
    return stats


def _dense(module, factors: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """The (out, in) linear weight, or the (V, d) embedding table, of ``factors``."""
    A, B = factors
    return kron_sum(A, B) if isinstance(module, KroneckerLinear) else torch.kron(A, B)


def data_error(W: torch.Tensor, W_hat: torch.Tensor, stat: torch.Tensor) -> float:
    """Relative output error on data of any approximation W_hat of W (Kronecker, low-rank).

    ``stat`` is what ``calibration_stats`` keeps: for a linear layer the input moment (in, in),
    and the error is ``output_error``; for the embedding the token frequencies (V,), and the
    error is the frequency-weighted row error sqrt(sum_v f_v ||e_v - e_hat_v||^2 / sum_v f_v
    ||e_v||^2), the same quantity with one-hot inputs (C = diag f)."""
    if stat.dim() == 2:
        return output_error(W, W_hat, stat)
    D, W = (W - W_hat).double(), W.double()
    return float(((D ** 2).sum(1) @ stat).sqrt() / ((W ** 2).sum(1) @ stat).sqrt())


@torch.no_grad()
def final_state_error(student: torch.nn.Module, teacher: torch.nn.Module, ids: torch.Tensor) -> float:
    """Relative error ||s - t|| / ||t|| of the student's final hidden states on ``ids`` (N, T)."""
    s, t = student(ids).last_hidden_state, teacher(ids).last_hidden_state
    return float((s - t).norm() / t.norm())


def _weighted_factors(module, W: torch.Tensor, fit: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(module, KroneckerLinear):
        (_, n1), (_, n2) = module.a_shape, module.b_shape
        C1, C2 = kronecker_moment_factors(fit, n1, n2)
        return nearest_kronecker_weighted(W, module.a_shape, module.b_shape, module.rank, C1, C2)
    if isinstance(module, KroneckerEmbedding):
        floored = (1 - EMBEDDING_FLOOR) * fit + EMBEDDING_FLOOR / len(fit)
        return nearest_kronecker_embedding_weighted(W, module.n, floored)
    raise ValueError(f"data-aware initialisation is for Kronecker layers, not {type(module).__name__}")


def data_aware_init(module, W: torch.Tensor, plain: tuple[torch.Tensor, torch.Tensor],
                    fit: torch.Tensor, heldout: torch.Tensor) -> tuple[tuple[torch.Tensor, torch.Tensor], dict]:
    """The better of the plain factors and the data-aware ones on the ``fit`` data, and a record.

    ``fit`` / ``heldout``: the module's calibration statistic (``calibration_stats``) on the
    fitted and on the held-out text. The record has both inits' weight errors (relative
    Frobenius) and held-out output errors, and which init was kept.
    """
    weighted = _weighted_factors(module, W, fit)
    W_plain, W_weighted = _dense(module, plain), _dense(module, weighted)
    kept = "data_aware" if data_error(W, W_weighted, fit) < data_error(W, W_plain, fit) else "svd"
    record = {
        "weight_error_svd": float((W_plain - W).norm() / W.norm()),
        "weight_error_data_aware": float((W_weighted - W).norm() / W.norm()),
        "output_error_svd": data_error(W, W_plain, heldout),
        "output_error_data_aware": data_error(W, W_weighted, heldout),
        "init_kept": kept,
    }
    return (weighted if kept == "data_aware" else plain), record
