"""Dense BERT -> compressed student: Table-1 presets, shape searches, exact counts.

Three student families, built by the same ``compress`` step:

    kronecker  the paper's student. Compressed (nearest-Kronecker SVD of the teacher's
               matrix): the word embedding, W_Q, W_K, W_V, W_O and FFN W1, W2 of every layer.
               Copied dense: biases, LayerNorms, position and token-type embeddings, pooler
               and any task head.
    lowrank    the same matrices as truncated-SVD products U V, each with the rank that
               spends the parameters its Kronecker twin spends (``match``).
    dense      TinyBERT-style: fewer layers, narrower hidden size, sized to the parameter
               count of the Kronecker student it ``match``es. Randomly initialised
               (TinyBERT's general distillation starts from scratch), or with
               ``init: selected`` a sub-block of every teacher matrix (weight selection).
"""

from __future__ import annotations

import itertools
import logging
import math

import numpy as np
import torch

from kbert import permutation
from kbert.calibration import calibration_stats, data_aware_init
from kbert.layers.flops import dense_flops, kron_flops, low_rank_flops
from kbert.layers.kronecker import KroneckerEmbedding, KroneckerLinear, rearrange
from kbert.layers.lowrank import LowRankEmbedding, LowRankLinear
from kbert.modeling import KBertConfig, KBertModel, teacher_layers

log = logging.getLogger(__name__)

FAMILIES = ("kronecker", "lowrank", "dense")
FACTORISED = (KroneckerLinear, KroneckerEmbedding, LowRankLinear, LowRankEmbedding)
# Initialisations each family accepts, the first its default. svd: the paper's; data_aware:
# kbert/calibration.py; permuted: kbert/permutation.py; random: TinyBERT's; selected:
# select_teacher_weights below.
INITS = {"kronecker": ("svd", "data_aware", "permuted"), "lowrank": ("svd",), "dense": ("random", "selected")}
MATCH_TOLERANCE = 0.05  # equal-size baselines: parameter count within 5% of the matched student

# Table 1 of the paper, as A shapes (rows = output side). Valid for BERT-base (768 / 3072).
PRESETS = {
    "kroneckerbert_8": {"attention_a_shape": [384, 384], "ffn_a_shape": [8, 2], "embedding_n": 8, "rank": 1},
    "kroneckerbert_21": {"attention_a_shape": [384, 48], "ffn_a_shape": [16, 2], "embedding_n": 16, "rank": 1},
}
PRESET_TEACHER = {"hidden_size": 768, "intermediate_size": 3072}


# --------------------------------------------------------------------------------------
# Counting (no weights needed)
# --------------------------------------------------------------------------------------


def count_parameters(config: KBertConfig) -> int:
    """Parameters of the encoder (embeddings, layers, pooler), without any task head.

    A dense student's ``fit_dense`` projection is left out: it serves distillation only.
    """
    with torch.device("meta"):
        model = KBertModel(config)
    return sum(p.numel() for name, p in model.named_parameters() if not name.startswith("fit_dense."))


def _linear_flops(config: KBertConfig, group: str, out_f: int, in_f: int, swap: bool = False) -> int:
    """FLOPs per token of one ``group`` ("attention" / "ffn") matrix, as modeling.make_linear builds it."""
    if config.kronecker is not None:
        m1, n1 = config.kronecker[f"{group}_a_shape"]
        if swap:
            m1, n1 = n1, m1
        rank = int(config.kronecker.get("rank", 1))
        return kron_flops((m1, n1), (out_f // m1, in_f // n1), rank)
    if config.low_rank is not None:
        return low_rank_flops(out_f, in_f, int(config.low_rank[f"{group}_rank"]))
    return dense_flops(out_f, in_f)


def count_flops(config: KBertConfig, seq_len: int = 128, attention_scores: bool = False) -> int:
    """Forward FLOPs of one sequence, counting linear layers by paper Eq. 7.

    With ``attention_scores`` the Q K^T and probs @ V products are added (they are the same
    for dense and Kronecker models, and the paper's Table 1 leaves them out).
    """
    d, f = config.hidden_size, config.intermediate_size
    per_token = (
        4 * _linear_flops(config, "attention", d, d)
        + _linear_flops(config, "ffn", f, d)
        + _linear_flops(config, "ffn", d, f, swap=True)
    )
    total = config.num_hidden_layers * per_token * seq_len
    if attention_scores:
        # Q K^T: T*T dot products of length d (all heads together), same for probs @ V.
        total += config.num_hidden_layers * 2 * seq_len * seq_len * (2 * d - 1)
    return total


def compression_factor(teacher: KBertConfig, student: KBertConfig) -> float:
    return count_parameters(teacher) / count_parameters(student)


# --------------------------------------------------------------------------------------
# Which shapes
# --------------------------------------------------------------------------------------


def _divisors(n: int) -> list[int]:
    return [k for k in range(1, n + 1) if n % k == 0]


def _kron_shapes(out_f: int, in_f: int):
    """All A shapes for an (out, in) matrix whose factors are real matrices (every side >= 2).

    A factor with a side of 1 makes A kron B a low-rank matrix (paper §3.2.2); the paper's
    shapes never do that, so the search leaves them out.
    """
    for m1, n1 in itertools.product(_divisors(out_f), _divisors(in_f)):
        if min(m1, n1, out_f // m1, in_f // n1) >= 2:
            yield m1, n1


def _lost_energy(W: torch.Tensor, a_shape) -> float:
    """||W - nearest Kronecker product||_F^2: all but the top singular value of R(W)."""
    b_shape = (W.shape[0] // a_shape[0], W.shape[1] // a_shape[1])
    S = torch.linalg.svdvals(rearrange(W.double(), a_shape, b_shape))
    return float((S[1:] ** 2).sum())


def shape_search(
    config: KBertConfig,
    target_compression: float,
    teacher: KBertModel | None = None,
    tolerance: float = 0.05,
    max_spread: float = 4.0,
) -> dict:
    """Kronecker shapes that reach ``target_compression`` within ``tolerance``.

    As in the paper, one A shape serves all attention matrices and one (swapped for W2) both
    FFN matrices; the embedding keeps one row vector of length n. The per-component
    compression factors (attention, FFN, embedding) must stay within ``max_spread`` of each
    other: otherwise all parameters drift into the embedding table, which costs no FLOPs,
    and the encoder is crushed (the paper's KroneckerBERT_8 has 4x / 16x / 8x, spread 4;
    KroneckerBERT_21 32x / 32x / 16x, spread 2).

    Among those, without weights: the fewest FLOPs (the paper's criterion). With the
    ``teacher``'s weights: the smallest SVD-initialisation error (Frobenius norm of what the
    nearest Kronecker products lose, measured on the middle layer and the embedding), then
    the fewest FLOPs. The paper's text gives no quality criterion; see docs/deviations.md.
    """
    d, f, L, V = config.hidden_size, config.intermediate_size, config.num_hidden_layers, config.vocab_size
    dense_total = count_parameters(config)
    # Parameters that do not depend on the shapes: everything but the 6 matrices per layer
    # and the word-embedding table.
    fixed = dense_total - L * (4 * d * d + 2 * d * f) - V * d

    def options(out_f, in_f):
        """(A shape, weights of one matrix, FLOPs per token of W and of its swapped twin)."""
        for (m1, n1) in _kron_shapes(out_f, in_f):
            m2, n2 = out_f // m1, in_f // n1
            flops = kron_flops((m1, n1), (m2, n2))
            twin = kron_flops((n1, m1), (n2, m2))
            yield (m1, n1), m1 * n1 + m2 * n2, flops, twin

    att = list(options(d, d))
    ffn = list(options(f, d))
    emb = [n for n in _divisors(d) if n >= 2]
    if not att or not ffn:
        raise ValueError(f"no Kronecker shapes for hidden {d} / intermediate {f}")

    # Grids over (attention shape, FFN shape, embedding n).
    a_params = np.array([o[1] for o in att], dtype=float)[:, None, None]
    f_params = np.array([o[1] for o in ffn], dtype=float)[None, :, None]
    e_n = np.array(emb, dtype=float)[None, None, :]
    params = fixed + L * (4 * a_params + 2 * f_params) + V * d / e_n + e_n
    flops = L * (4 * np.array([o[2] for o in att])[:, None, None] + np.array([o[2] + o[3] for o in ffn])[None, :, None])
    flops = np.broadcast_to(flops, params.shape)
    component_cf = np.stack(np.broadcast_arrays(d * d / a_params, d * f / f_params, e_n))
    spread = component_cf.max(0) / component_cf.min(0)
    cf = dense_total / params
    ok = (np.abs(cf / target_compression - 1) <= tolerance) & (spread <= max_spread)
    if not ok.any():
        raise ValueError(
            f"no shapes reach compression {target_compression} within {tolerance:.0%} with balanced components "
            f"(spread <= {max_spread}) on this teacher (reachable: {cf.min():.1f}x to {cf.max():.1f}x)"
        )
    lost = np.zeros(cf.shape)
    if teacher is not None:
        lost = _search_errors(teacher, att, ffn, emb, ok)
    # Lexicographic: least SVD error (if weights), fewest FLOPs, closest compression factor.
    key = np.lexsort((np.abs(cf - target_compression)[ok], flops[ok], lost[ok]))
    i, j, k = (idx[ok][key[0]] for idx in np.indices(cf.shape))
    return {"attention_a_shape": list(att[i][0]), "ffn_a_shape": list(ffn[j][0]), "embedding_n": emb[k], "rank": 1}


@torch.no_grad()
def _search_errors(teacher: KBertModel, att, ffn, emb, ok: np.ndarray) -> np.ndarray:
    """Lost energy of every (attention, FFN, embedding) candidate allowed by ``ok``.

    The error separates by component, so each shape is scored once: attention and FFN on
    the middle layer (scaled by the depth), the word embedding on its own table.
    """
    layer = teacher.encoder.layer[len(teacher.encoder.layer) // 2]
    attention = [layer.attention.self.query, layer.attention.self.key, layer.attention.self.value, layer.attention.output.dense]
    L = len(teacher.encoder.layer)
    used_a, used_f, used_e = ok.any((1, 2)), ok.any((0, 2)), ok.any((0, 1))
    e_att = np.array([
        L * sum(_lost_energy(m.weight, o[0]) for m in attention) if used else np.inf for o, used in zip(att, used_a)
    ])
    e_ffn = np.array([
        L * (_lost_energy(layer.intermediate.dense.weight, o[0]) + _lost_energy(layer.output.dense.weight, o[0][::-1]))
        if used else np.inf
        for o, used in zip(ffn, used_f)
    ])
    table = teacher.embeddings.word_embeddings.weight
    e_emb = np.array([_lost_energy(table, (table.shape[0], table.shape[1] // n)) if used else np.inf for n, used in zip(emb, used_e)])
    return e_att[:, None, None] + e_ffn[None, :, None] + e_emb[None, None, :]


def _check_shapes(teacher_config: KBertConfig, spec: dict) -> None:
    """Explicit shapes must tile the teacher's matrices exactly (A kron B is m1*m2 x n1*n2)."""
    d, f = teacher_config.hidden_size, teacher_config.intermediate_size
    for key, (out_f, in_f) in (("attention_a_shape", (d, d)), ("ffn_a_shape", (f, d))):
        m1, n1 = spec[key]
        if out_f % m1 or in_f % n1:
            raise ValueError(f"{key} {[m1, n1]} does not divide the teacher's {out_f} x {in_f} matrices "
                             f"(rows: a divisor of {out_f}, columns: a divisor of {in_f})")
    if d % spec["embedding_n"]:
        raise ValueError(f"embedding_n {spec['embedding_n']} does not divide the teacher's hidden size {d}; "
                         f"divisors: {_divisors(d)}")


def student_errors(teacher_config: KBertConfig, students: dict) -> list[str]:
    """Why each configured student cannot be built from this teacher (empty: all can)."""
    errors = []
    for name, spec in students.items():
        try:
            student_config(teacher_config, spec, None, students.get(spec.get("match")))
        except ValueError as err:
            errors.append(f"config.students.{name}: {err}")
    return errors


def student_kronecker(teacher_config: KBertConfig, spec: dict, teacher: KBertModel | None = None) -> dict:
    """Resolve a Kronecker student spec from the config into explicit Kronecker shapes."""
    if "preset" in spec:
        name = spec["preset"]
        if name not in PRESETS:
            raise ValueError(f"unknown student preset {name!r}; presets: {sorted(PRESETS)}")
        wanted = {k: getattr(teacher_config, k) for k in PRESET_TEACHER}
        if wanted != PRESET_TEACHER:
            raise ValueError(
                f"preset {name!r} has the Table-1 shapes of BERT-base {PRESET_TEACHER}; this teacher has {wanted}: "
                "use target_compression to search shapes for it"
            )
        return dict(PRESETS[name])
    if "target_compression" in spec:
        return shape_search(teacher_config, float(spec["target_compression"]), teacher)
    keys = ("attention_a_shape", "ffn_a_shape", "embedding_n")
    if all(k in spec for k in keys):
        _check_shapes(teacher_config, spec)
        return {**{k: spec[k] for k in keys}, "rank": int(spec.get("rank", 1))}
    raise ValueError(f"student spec {spec} needs 'preset', 'target_compression' or explicit {list(keys)}")


def low_rank_ranks(reference: KBertConfig) -> dict:
    """Ranks that give every low-rank matrix the parameters of its Kronecker twin in ``reference``.

    A (m x n) matrix costs r (m + n) parameters at rank r, and rank * (m1 n1 + m2 n2) as a
    Kronecker sum, so r = Kronecker parameters / (m + n), rounded; the embedding likewise.
    """
    k = reference.kronecker
    d, f, V = reference.hidden_size, reference.intermediate_size, reference.vocab_size
    kron_rank = int(k.get("rank", 1))

    def kron_params(out_f, in_f, a_shape):
        m1, n1 = a_shape
        return kron_rank * (m1 * n1 + (out_f // m1) * (in_f // n1))

    n = int(k["embedding_n"])
    return {
        "attention_rank": max(1, round(kron_params(d, d, k["attention_a_shape"]) / (2 * d))),
        "ffn_rank": max(1, round(kron_params(f, d, k["ffn_a_shape"]) / (f + d))),
        "embedding_rank": max(1, round((V * d // n + n) / (V + d))),
    }


def _dense_config(teacher_config: KBertConfig, hidden_size: int, num_hidden_layers: int,
                  intermediate_size: int) -> KBertConfig:
    """The teacher's config with a TinyBERT-style shape (and fit_dense when narrower)."""
    fields = {**teacher_config.to_dict(), "hidden_size": hidden_size, "num_hidden_layers": num_hidden_layers,
              "intermediate_size": intermediate_size, "teacher_hidden_size": teacher_config.hidden_size}
    return KBertConfig.from_dict(fields)


def dense_shape(teacher_config: KBertConfig, target_params: int, spec: dict) -> dict:
    """TinyBERT-style shape (layers, hidden, FFN width) with ``target_params`` parameters.

    Defaults follow TinyBERT_4 on BERT-base: a third of the teacher's layers and the
    teacher's head count (attention scores are distilled head to head). Among hidden sizes
    that are multiples of the head count, the FFN width is solved so that the count hits the
    target; the hidden size whose FFN/hidden ratio is closest to the teacher's wins.
    ``hidden_size`` / ``intermediate_size`` / ``num_hidden_layers`` in the spec fix those.
    """
    L, H = teacher_config.num_hidden_layers, teacher_config.num_attention_heads
    layers = int(spec.get("num_hidden_layers", max(1, L // 3)))
    if layers < 1 or L % layers:
        raise ValueError(f"dense student with {layers} layers: TinyBERT's uniform layer mapping needs a divisor "
                         f"of the teacher's {L} layers")
    hiddens = [int(spec["hidden_size"])] if "hidden_size" in spec else range(H, teacher_config.hidden_size + 1, H)
    teacher_ratio = teacher_config.intermediate_size / teacher_config.hidden_size
    best = None
    for hidden in hiddens:
        if "intermediate_size" in spec:
            intermediate = int(spec["intermediate_size"])
        else:
            # The count is linear in the FFN width: solve a + b * f = target.
            a = count_parameters(_dense_config(teacher_config, hidden, layers, 1))
            b = count_parameters(_dense_config(teacher_config, hidden, layers, 2)) - a
            intermediate = round((target_params - a) / b) + 1
            if intermediate < 1:
                continue
        off_ratio = abs(math.log(intermediate / hidden / teacher_ratio))
        if best is None or off_ratio < best[0]:
            best = (off_ratio, hidden, intermediate)
    if best is None:
        raise ValueError(f"no dense shape with {layers} layers reaches {target_params:,} parameters "
                         "(the word-embedding table alone is larger): use fewer layers or a larger target")
    _, hidden, intermediate = best
    return {"hidden_size": hidden, "num_hidden_layers": layers, "intermediate_size": intermediate}


def student_config(teacher_config: KBertConfig, spec: dict, teacher: KBertModel | None = None,
                   match_spec: dict | None = None) -> KBertConfig:
    """The student's config.

    Kronecker students: with ``teacher`` weights the shape search minimises the SVD error.
    Low-rank and dense students are sized to match the Kronecker student ``match_spec``
    (the config's ``students[spec["match"]]``) within MATCH_TOLERANCE.
    """
    family = spec.get("family", "kronecker")
    if family not in FAMILIES:
        raise ValueError(f"unknown student family {family!r}; families: {list(FAMILIES)}")
    config = KBertConfig.from_dict(teacher_config.to_dict())
    if family == "kronecker":
        config.kronecker = student_kronecker(teacher_config, spec, teacher)
        return config
    if match_spec is None or match_spec.get("family", "kronecker") != "kronecker":
        raise ValueError(f"a {family} student is sized to match a Kronecker student: its spec needs "
                         "'match: <name of a kronecker student>'")
    reference = student_config(teacher_config, match_spec, teacher)
    target = count_parameters(reference)
    if family == "lowrank":
        config.low_rank = low_rank_ranks(reference)
    else:
        config = _dense_config(teacher_config, **dense_shape(teacher_config, target, spec))
        # Raise where the widths cannot be selected, once they are the real ones: a matched
        # shape search picks other shapes without the teacher's weights (the config check),
        # and so another size; compress, which has the weights, checks again.
        if spec.get("init") == "selected" and (teacher is not None or "target_compression" not in match_spec):
            teacher_selection(teacher_config, config)
    params = count_parameters(config)
    if abs(params / target - 1) > MATCH_TOLERANCE:
        raise ValueError(f"the {family} student has {params:,} parameters, {params / target - 1:+.1%} off the "
                         f"{target:,} of the Kronecker student it matches (allowed: {MATCH_TOLERANCE:.0%})")
    return config


# --------------------------------------------------------------------------------------
# The compression itself
# --------------------------------------------------------------------------------------


def _set_factors(module, factors: tuple[torch.Tensor, torch.Tensor]) -> None:
    first, second = (module.U, module.V) if isinstance(module, (LowRankLinear, LowRankEmbedding)) else (module.A, module.B)
    first.copy_(factors[0])
    second.copy_(factors[1])


def _evenly_spaced(n_from: int, n_to: int) -> torch.Tensor:
    """``n_to`` distinct indices spread evenly over range(n_from) (weight selection's choice)."""
    if n_to > n_from:
        raise ValueError(f"cannot select {n_to} of {n_from} teacher units: the dense student is wider than the "
                         "teacher there; init: selected needs every width at most the teacher's")
    return torch.linspace(0, n_from - 1, n_to).round().long()


def _selected_cut(name: str, residual, heads, ffn) -> tuple:
    """Index sets (rows, columns) that cut a student weight ``name`` out of the teacher's.

    ``residual``: kept coordinates of the residual stream; ``heads``: kept coordinates of
    the Q/K/V outputs (the same in every one of them, so scores and values stay paired);
    ``ffn``: kept FFN units. None keeps a whole dimension.
    """
    kind = name.rsplit(".", 1)[-1]  # weight / bias
    if "embeddings" in name and "LayerNorm" not in name:
        return (None, residual)                                  # (rows of the table, hidden)
    if any(part in name for part in (".query.", ".key.", ".value.")):
        return (heads, residual) if kind == "weight" else (heads,)
    if "attention.output.dense" in name:
        return (residual, heads) if kind == "weight" else (residual,)
    if "intermediate.dense" in name:
        return (ffn, residual) if kind == "weight" else (ffn,)
    if "output.dense" in name:                                   # the FFN's second matrix
        return (residual, ffn) if kind == "weight" else (residual,)
    if "LayerNorm" in name:
        return (residual,)
    if "pooler.dense" in name:
        return (residual, residual) if kind == "weight" else (residual,)
    raise ValueError(f"init: selected does not know how to cut {name!r} from the teacher")


def teacher_selection(teacher: KBertConfig, student: KBertConfig) -> dict[str, torch.Tensor]:
    """The teacher indices a dense ``init: selected`` student keeps (select_teacher_weights):
    ``residual`` coordinates, ``heads`` (Q/K/V output coordinates) and ``ffn`` units. Raises
    where the student is wider than the teacher or has another head count."""
    if student.num_attention_heads != teacher.num_attention_heads:
        raise ValueError(f"init: selected keeps the teacher's {teacher.num_attention_heads} heads; the student has "
                         f"{student.num_attention_heads}")
    if student.num_hidden_layers > teacher.num_hidden_layers:
        raise ValueError(f"init: selected takes each student layer from a teacher layer: {student.num_hidden_layers} "
                         f"layers, the teacher has {teacher.num_hidden_layers}")
    head_t = teacher.hidden_size // teacher.num_attention_heads
    head_s = student.hidden_size // student.num_attention_heads
    return {
        "residual": _evenly_spaced(teacher.hidden_size, student.hidden_size),
        "heads": torch.cat([h * head_t + _evenly_spaced(head_t, head_s) for h in range(teacher.num_attention_heads)]),
        "ffn": _evenly_spaced(teacher.intermediate_size, student.intermediate_size),
    }


@torch.no_grad()
def select_teacher_weights(student: KBertModel, teacher: KBertModel) -> None:
    """Dense ``init: selected``: every student weight a sub-block of the teacher's.

    Weight selection (Xu et al., ICLR 2024, "Initializing Models with Larger Ones"): the
    same evenly spaced residual coordinates in every matrix; in each head, evenly spaced
    head coordinates, the same for Q, K and V rows and O columns; evenly spaced FFN units.
    Student layer m starts as teacher layer m * N / M, the layer its hidden-state loss maps
    it to (TinyBERT's uniform mapping, kbert.modeling.teacher_layers). ``fit_dense`` starts as
    the map back into the teacher's coordinates, so the hidden losses compare what was kept.
    """
    s, t = student.config, teacher.config
    residual, heads, ffn = teacher_selection(t, s).values()
    source_layer = {m: n - 1 for m, n in enumerate(teacher_layers(s.num_hidden_layers, t.num_hidden_layers))}
    teacher_state = teacher.state_dict()
    state = {}
    for name in student.state_dict():
        if name.startswith("fit_dense."):
            continue
        source = name
        if name.startswith("encoder.layer."):
            m = int(name.split(".")[2])
            source = name.replace(f"encoder.layer.{m}.", f"encoder.layer.{source_layer[m]}.", 1)
        value = teacher_state[source]
        for dim, index in enumerate(_selected_cut(name, residual, heads, ffn)):
            if index is not None:
                value = value.index_select(dim, index)
        state[name] = value
    student.load_state_dict(state, strict=False)
    if getattr(student, "fit_dense", None) is not None:
        student.fit_dense.weight.zero_()
        student.fit_dense.weight[residual, torch.arange(s.hidden_size)] = 1.0   # (teacher d, student d)
        student.fit_dense.bias.zero_()


def _init_report(records: dict[str, dict]) -> dict:
    """Per-matrix data-aware records regrouped by quantity, with means and the kept count."""
    report = {}
    for key in ("weight_error_svd", "weight_error_data_aware", "output_error_svd", "output_error_data_aware"):
        report[key] = {name: r[key] for name, r in records.items()}
        report[f"{key}_mean"] = float(np.mean(list(report[key].values())))
    report["init_kept"] = {name: r["init_kept"] for name, r in records.items()}
    report["data_aware_kept"] = sum(kept == "data_aware" for kept in report["init_kept"].values())
    return report


@torch.no_grad()
def compress(teacher: torch.nn.Module, spec: dict, match_spec: dict | None = None,
             calibration: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.nn.Module, dict]:
    """Student of ``teacher`` (a KBertModel or a task model) in the family of ``spec``.

    Kronecker and low-rank students start from the SVD of the teacher's matrices (nearest
    Kronecker product / truncated SVD) and copy everything else; dense students start from
    random weights, as TinyBERT's do, or with ``init: selected`` from sub-blocks of the
    teacher's (select_teacher_weights). With ``init: data_aware`` a Kronecker student's
    factors are fitted to the teacher's inputs on ``calibration`` = (fit ids, held-out ids),
    each (N, T) unpadded token ids (kbert/calibration.py). Returns the student (same class
    as the teacher) and a report with the relative Frobenius error of every factorised
    matrix (and, data-aware, both inits' weight and held-out output errors).
    """
    if getattr(teacher.config, "kronecker", None) or getattr(teacher.config, "low_rank", None):
        raise ValueError("the teacher is already compressed; compress a dense teacher")
    family = spec.get("family", "kronecker")
    if family not in INITS:
        raise ValueError(f"unknown student family {family!r}; families: {list(FAMILIES)}")
    init = spec.get("init", INITS[family][0])
    if init not in INITS[family]:
        owners = [f for f, inits in INITS.items() if init in inits]
        if not owners:
            raise ValueError(f"unknown init {init!r}; {family} students take one of {list(INITS[family])}")
        raise ValueError(f"init: {init} is for {' and '.join(owners)} students, not {family}")
    if init == "data_aware" and calibration is None:
        raise ValueError("init: data_aware needs calibration token ids (fit, held-out)")
    encoder = teacher.bert if hasattr(teacher, "bert") else teacher
    config = student_config(teacher.config, spec, encoder, match_spec)
    permutation_report = {}
    if init == "permuted":
        # The same function in an order closer to Kronecker form; the student inherits that
        # order (config.residual_permutation) and reports its states in the teacher's.
        perms, permutation_report = permutation.search(encoder, config.kronecker, log=log.info)
        teacher = permutation.apply(teacher, perms)
        config.residual_permutation = perms.residual.tolist()
    student = type(teacher)(config)
    dense = dict(teacher.named_modules())
    factorised = {name: m for name, m in student.named_modules() if isinstance(m, FACTORISED)}
    if init == "data_aware":
        fit, heldout = (calibration_stats(teacher, encoder, list(factorised), ids) for ids in calibration)
    errors, records = {}, {}
    for name, module in factorised.items():
        W = dense[name].weight
        factors = module.svd_factors(W)  # the plain init: nearest Kronecker product / truncated SVD
        if init == "data_aware":
            factors, records[name] = data_aware_init(module, W, factors, fit[name], heldout[name])
        _set_factors(module, factors)
        if getattr(module, "bias", None) is not None:
            module.bias.copy_(dense[name].bias)
        errors[name] = float((module.weight - W).norm() / W.norm())
    if init == "selected":
        select_teacher_weights(student.bert if hasattr(student, "bert") else student, encoder)
    if family != "dense":
        # Everything not factorised keeps the teacher's values (same names, same shapes).
        teacher_state = teacher.state_dict()
        copied = {k for k, v in student.state_dict().items() if k in teacher_state and teacher_state[k].shape == v.shape}
        student.load_state_dict({k: teacher_state[k] for k in copied}, strict=False)
    report = {
        "family": family,
        "init": init,
        "kronecker": config.kronecker,
        "low_rank": config.low_rank,
        "shape": {k: getattr(config, k) for k in ("hidden_size", "num_hidden_layers", "intermediate_size")},
        "params": count_parameters(config),
        "teacher_params": count_parameters(teacher.config),
        "compression_factor": compression_factor(teacher.config, config),
        "flops_seq128": count_flops(config, 128),
        "teacher_flops_seq128": count_flops(teacher.config, 128),
        "relative_error_mean": float(np.mean(list(errors.values()))) if errors else None,
        "relative_error": errors,
        **(_init_report(records) if records else {}),
        **({"permutation": permutation_report} if permutation_report else {}),
    }
    return student.eval(), report
