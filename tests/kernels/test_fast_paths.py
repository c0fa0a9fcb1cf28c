"""Every fast Kronecker path equals the plain reference ``x @ (sum_r A_r kron B_r).T + bias``.

Forward and backward (x, A, B, bias), float64 and float32, with the C kernels and with the
torch-only fallback, for every plan on shapes that include the Table-1 shapes (full size,
few tokens) and scaled-down versions, 3-D inputs, both association orders, rank > 1 (the
generic path) and the fused Q/K/V attention projection. Tolerances: float64 1e-10
(relative and absolute); float32 2e-5 relative to the largest entry of the reference.
No timing here.
"""

from __future__ import annotations

import contextlib
import itertools

import pytest
import torch

import kbert.kernels.native as N
from kbert.kernels import passes
from kbert.kernels.attention import attention_context, attention_scores
from kbert.kernels.linear import heads_fusable, kron_heads, kron_linear
from kbert.kernels.plans import choose_plan
from kbert.layers.kronecker import KroneckerLinear, kron_sum, max_rank

PLANS = ["b_planar", "b_mid", "a_mid", "a_planar"]
# (out, in, A shape): Table-1 shapes, scaled-down ones that keep their structure (m2 = 2 with
# m1 % 16 == 0 reaches the fused one-pass kernel), and edge cases (a factor of size 1).
SHAPES = [
    (768, 768, (384, 384)),  # KroneckerBERT_8 attention
    (768, 768, (384, 48)),  # KroneckerBERT_21 attention
    (3072, 768, (8, 2)),  # KroneckerBERT_8 W1
    (768, 3072, (2, 8)),  # KroneckerBERT_8 W2
    (3072, 768, (16, 2)),  # KroneckerBERT_21 W1
    (768, 3072, (2, 16)),  # KroneckerBERT_21 W2
    (64, 64, (32, 32)),
    (64, 64, (32, 8)),
    (256, 64, (8, 2)),
    (64, 256, (2, 16)),
    (12, 8, (3, 2)),
    (8, 12, (4, 6)),
    (6, 10, (1, 1)),
    (6, 10, (6, 10)),
    (48, 20, (24, 10)),
    (128, 64, (64, 32)),  # m2 = n2 = 2: both one-pass kernels, output rows of 2
    (384, 96, (32, 48)),  # a_planar one pass with B 12 x 2 (a MiniLM student's W1, scaled down)
    (32, 64, (16, 32)),  # B 2 x 2 with m1 = 16: a single block of A rows
]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny problems: one thread keeps these tests fast on a busy machine (results do not depend on it)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@contextlib.contextmanager
def native(enabled: bool):
    """Run with the C kernels (skipped if they cannot be built here) or with torch ops only.

    With them, the one-pass float32 kernels are handed out even where the library has no
    512-bit vectors (they are slow there, not wrong), so that their numbers are checked on
    every machine.
    """
    saved = dict(N._native_state)
    try:
        if enabled:
            if not N.native_available():
                pytest.skip(f"C kernels unavailable: {N._native_state.get('error')}")
            N._native_state["wide"] = True
        else:
            N._native_state.clear()
            N._native_state["lib"] = None
        yield
    finally:
        N._native_state.clear()
        N._native_state.update(saved)


def _tol(dtype, ref: torch.Tensor) -> dict:
    if dtype == torch.float64:
        return dict(rtol=1e-10, atol=1e-10)
    return dict(rtol=2e-5, atol=2e-5 * max(1.0, float(ref.detach().abs().max())))


def _factors(out_f, in_f, a_shape, rank=1, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    m1, n1 = a_shape
    m2, n2 = out_f // m1, in_f // n1
    A = torch.randn(rank, m1, n1, generator=g, dtype=dtype).requires_grad_(True)
    B = torch.randn(rank, m2, n2, generator=g, dtype=dtype).requires_grad_(True)
    bias = torch.randn(out_f, generator=g, dtype=dtype).requires_grad_(True)
    return A, B, bias


def _check(fn, x, A, B, bias, dtype):
    """fn(x, A, B, bias) against the materialised reference, values and all four gradients."""
    y = fn(x, A, B, bias)
    ref = x @ kron_sum(A, B).T + (0 if bias is None else bias)
    tol = _tol(dtype, ref)
    torch.testing.assert_close(y, ref, **tol)
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=dtype)
    inputs = [t for t in (x, A, B, bias) if t is not None]
    got = torch.autograd.grad(y, inputs, g)
    want = torch.autograd.grad(ref, inputs, g)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, **_tol(dtype, b))


@pytest.mark.parametrize("use_native", [True, False], ids=["native", "torch"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("plan", PLANS)
def test_every_plan_matches_reference(plan, dtype, use_native):
    with native(use_native):
        for out_f, in_f, a_shape in SHAPES:
            if out_f * in_f > 100_000 and (dtype == torch.float64) == use_native:
                continue  # full Table-1 sizes: float32 with the C kernels, float64 with torch ops
            A, B, bias = _factors(out_f, in_f, a_shape, dtype=dtype)
            tokens = 2 if out_f * in_f > 100_000 else 7
            x = torch.randn(2, tokens, in_f, dtype=dtype, generator=torch.Generator().manual_seed(2)).requires_grad_(True)
            _check(lambda x, A, B, b: kron_linear(x, A, B, b, plan=plan), x, A, B, bias, dtype)


@pytest.mark.parametrize("use_native", [True, False], ids=["native", "torch"])
def test_no_bias_and_frozen_factors(use_native):
    with native(use_native):
        for plan in PLANS:
            A, B, _ = _factors(64, 64, (32, 8))
            x = torch.randn(5, 64, dtype=torch.float64, requires_grad=True)
            _check(lambda x, A, B, b: kron_linear(x, A, B, None, plan=plan), x, A, B, None, torch.float64)
            # Only x needs a gradient (frozen factors), then only the factors (frozen input).
            A0, B0 = A.detach(), B.detach()
            y = kron_linear(x, A0, B0, plan=plan)
            (gx,) = torch.autograd.grad(y.sum(), x)
            torch.testing.assert_close(gx, torch.ones_like(y) @ kron_sum(A0, B0))
            xd = x.detach()
            gA, gB = torch.autograd.grad(kron_linear(xd, A, B, plan=plan).pow(2).sum(), (A, B))
            rA, rB = torch.autograd.grad((xd @ kron_sum(A, B).T).pow(2).sum(), (A, B))
            torch.testing.assert_close(gA, rA)
            torch.testing.assert_close(gB, rB)


@pytest.mark.parametrize("plan", PLANS)
def test_gradcheck_float64(plan):
    with native(N.native_available()):
        A, B, bias = _factors(12, 8, (6, 4))
        x = torch.randn(4, 8, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda x, A, B, b: kron_linear(x, A, B, b, plan=plan), (x, A, B, bias))


@pytest.mark.parametrize("order", ["a_first", "b_first"])
@pytest.mark.parametrize("rank", [1, 2, 3])
def test_layer_both_orders_any_rank(order, rank):
    torch.manual_seed(0)
    for out_f, in_f, a_shape in [(64, 64, (32, 8)), (256, 64, (8, 2)), (12, 8, (3, 2))]:
        layer = KroneckerLinear(in_f, out_f, a_shape, rank=min(rank, max_rank(a_shape, (out_f // a_shape[0], in_f // a_shape[1]))), order=order).double()
        assert layer.plan == ("generic" if layer.rank > 1 else choose_plan(layer.a_shape, layer.b_shape, 1, order))
        x = torch.randn(2, 3, in_f, dtype=torch.float64, requires_grad=True)
        _check(lambda x, A, B, b: layer(x), x, layer.A, layer.B, layer.bias, torch.float64)


def test_generic_plan_matches_fast_plans():
    torch.manual_seed(0)
    A, B, bias = _factors(64, 64, (32, 8), dtype=torch.float32)
    x = torch.randn(9, 64)
    ref = kron_linear(x, A, B, bias, plan="generic")
    for plan in PLANS:
        torch.testing.assert_close(kron_linear(x, A, B, bias, plan=plan), ref, rtol=2e-5, atol=2e-5)


def test_order_and_plan_are_checked():
    A, B, _ = _factors(24, 20, (6, 5), rank=2)
    x = torch.randn(4, 20, dtype=torch.float64)
    for order in ("a_first", "b_first"):
        torch.testing.assert_close(kron_linear(x, A, B, order=order), x @ kron_sum(A, B).T)
    A1, B1 = A[:1], B[:1]
    torch.testing.assert_close(kron_linear(x, A1, B1, order="b_first", plan="b_mid"), x @ kron_sum(A1, B1).T)
    with pytest.raises(ValueError, match="unknown contraction order"):
        kron_linear(x, A, B, order="c_first")
    with pytest.raises(ValueError, match="applies a_first"):
        kron_linear(x, A1, B1, order="b_first", plan="a_mid")
    with pytest.raises(ValueError, match="one Kronecker sum"):
        kron_linear(x, A, B, plan="b_mid")
    with pytest.raises(ValueError, match="unknown plan"):
        kron_linear(x, A1, B1, plan="fastest")
    layer = KroneckerLinear(20, 24, (6, 5))
    assert layer.order == "b_first" and layer.plan == "b_planar"
    with pytest.raises(ValueError, match="applies a_first"):  # a plan must apply the layer's order
        layer.plan = "a_mid"
    layer.plan = "generic"
    layer.order = "a_first"  # a forced generic plan stays
    assert layer.plan == "generic"


def test_odd_inputs():
    layer = KroneckerLinear(64, 64, (32, 8)).double()
    x = torch.randn(3, 8, 64, dtype=torch.float64)
    ref = x @ layer.weight.T + layer.bias
    torch.testing.assert_close(layer(x.transpose(0, 1)).transpose(0, 1), ref)  # non-contiguous input
    assert layer(torch.zeros(0, 64, dtype=torch.float64)).shape == (0, 64)  # no tokens
    torch.testing.assert_close(layer(x[0, 0]), ref[0, 0])  # one vector, no batch dims
    layer.order = "a_first"  # reassigning the order re-plans the layout
    assert layer.plan == choose_plan(layer.a_shape, layer.b_shape, 1, "a_first")
    torch.testing.assert_close(layer(x), ref)


def test_table1_plans():
    """Which layout each Table-1 shape gets (docs/efficiency.md explains why)."""
    expected = {
        ((384, 384), (2, 2)): "b_planar",
        ((384, 48), (2, 16)): "b_planar",
        ((8, 2), (384, 384)): "b_mid",
        ((2, 8), (384, 384)): "a_mid",
        ((16, 2), (192, 384)): "b_mid",
        ((2, 16), (384, 192)): "a_mid",
    }
    for (a, b), plan in expected.items():
        assert choose_plan(a, b) == plan
    assert choose_plan((16, 2), (192, 384), rank=2) == "generic"


@pytest.mark.parametrize("use_native", [True, False], ids=["native", "torch"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_fused_qkv_heads(dtype, use_native):
    """kron_heads == stacking layer(x) in (batch, heads, seq, dh) layout, values and gradients."""
    cases = [(768, (384, 48), 12), (64, (32, 8), 2), (64, (32, 32), 4), (24, (12, 4), 3), (12, (6, 3), 4), (24, (8, 6), 4)]
    with native(use_native):
        for d, a_shape, heads in cases:
            torch.manual_seed(0)
            layers = [KroneckerLinear(d, d, a_shape).to(dtype) for _ in range(3)]
            for layer in layers:
                torch.nn.init.normal_(layer.bias)
            assert layers[0].plan == "b_planar"
            x = torch.randn(2, 5, d, dtype=dtype, requires_grad=True)
            out = kron_heads(x, layers, heads)
            ref = torch.stack([layer(x).view(2, 5, heads, -1).transpose(1, 2) for layer in layers])
            torch.testing.assert_close(out, ref, **_tol(dtype, ref))
            params = [x] + [p for layer in layers for p in (layer.A, layer.B, layer.bias)]
            g = torch.randn_like(ref)
            for a, b in zip(torch.autograd.grad(out, params, g), torch.autograd.grad(ref, params, g)):
                torch.testing.assert_close(a, b, **_tol(dtype, b))
    # Shapes that cannot be fused are left to the caller.
    mixed = [KroneckerLinear(64, 64, (32, 8)), KroneckerLinear(64, 64, (16, 8)), KroneckerLinear(64, 64, (32, 8))]
    assert not heads_fusable(mixed, 2)
    assert not heads_fusable([torch.nn.Linear(64, 64)] * 3, 2)
    assert not heads_fusable([KroneckerLinear(64, 64, (32, 8))] * 3, 3)  # 3 heads do not divide 64
    assert heads_fusable([KroneckerLinear(64, 64, (32, 8))] * 3, 2)


def _kron_student(layers=2):
    """A small Kronecker student encoder whose Q/K/V fuse (plan b_planar, 2 heads), seeded."""
    from kbert.students import student_config
    from kbert.modeling import KBertConfig, KBertModel

    base = KBertConfig(vocab_size=50, hidden_size=64, num_hidden_layers=layers, num_attention_heads=2,
                       intermediate_size=128, max_position_embeddings=16)
    config = student_config(base, {"attention_a_shape": [32, 8], "ffn_a_shape": [4, 2], "embedding_n": 4})
    torch.manual_seed(0)
    return KBertModel(config).eval()


def test_attention_fused_and_unfused_agree(monkeypatch):
    """A Kronecker student's attention gives the same scores and outputs with and without Q/K/V fusion."""
    model = _kron_student()
    assert all(layer.attention.self.fused_qkv for layer in model.encoder.layer)  # decided when built
    ids = torch.randint(1, 50, (2, 7))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    fused = model(ids, mask)
    monkeypatch.setattr("kbert.modeling.kron_heads", lambda *args: None)
    plain = model(ids, mask)
    for a, b in zip(fused.hidden_states + fused.attention_scores, plain.hidden_states + plain.attention_scores):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_replanning_a_projection_decides_the_fusion_again():
    """Attention's Q/K/V fusion is fixed at construction and changes only with a plan."""
    attention = _kron_student(layers=1).encoder.layer[0].attention.self
    assert attention.fused_qkv
    attention.key.plan = "generic"
    assert not attention.fused_qkv
    attention.key.order = "b_first"  # re-planned, but a forced generic plan stays
    assert not attention.fused_qkv
    attention.key.plan = "b_planar"
    assert attention.fused_qkv


def test_kron_heads_rejects_other_input_widths():
    layers = [KroneckerLinear(64, 64, (32, 8)) for _ in range(3)]
    with pytest.raises(ValueError, match=r"input \(batch, seq, 64\), got \(2, 3, 32\)"):
        kron_heads(torch.randn(2, 3, 32), layers, 2)


def test_native_kernels_build_from_scratch(tmp_path, monkeypatch):
    import shutil

    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler")
    saved = dict(N._native_state)
    try:
        monkeypatch.setenv("KBERT_NATIVE_DIR", str(tmp_path))
        N._native_state.clear()
        assert N.native_available(), N._native_state.get("error")
        assert list(tmp_path.glob("kbert_kron_*.so"))
        monkeypatch.setenv("KBERT_NATIVE", "0")
        N._native_state.clear()
        assert not N.native_available()
    finally:
        N._native_state.clear()
        N._native_state.update(saved)


def test_one_pass_kernels_only_with_512_bit_vectors():
    """The float32 one-pass kernels (b_planar, a_planar, attention) are used only where the
    library was compiled with AVX-512 (-march=native on a CPU that has it): on AVX2 they ran
    4-30x slower than torch's ops, so there every caller takes the torch path."""
    if not N.native_available():
        pytest.skip(f"C kernels unavailable: {N._native_state.get('error')}")
    with open("/proc/cpuinfo") as cpuinfo:
        flags = next((line for line in cpuinfo if line.startswith("flags")), "").split()
    wide = bool(N.native_lib().kbert_wide_vectors())
    assert wide == ("avx512f" in flags)
    x, a, b = torch.randn(32, 64), torch.randn(32, 32), torch.randn(2, 2)
    q, mask = torch.randn(4, 16, 16), torch.zeros(2, 1, 1, 16)
    with torch.no_grad():
        taken = passes.planar2(x, a, b, None) is not None, attention_scores(q, q, mask, 2, 1.0) is not None
    assert taken == (wide, wide)


def test_chunked_helpers_match_torch():
    """The C kernels' building blocks against their torch definitions (incl. the bias-gradient sums)."""
    with native(True):
        g = torch.Generator().manual_seed(0)
        for dtype, (k, N, m) in itertools.product([torch.float32, torch.float64], [(2, 70, 48), (3, 5, 7), (1, 4, 6)]):
            P = torch.randn(k, N, m, generator=g, dtype=dtype)
            bias = torch.randn(m * k, generator=g, dtype=dtype)
            Y = passes.interleave(P, bias)
            torch.testing.assert_close(Y, P.permute(1, 2, 0) + bias.view(m, k))
            back, colsum = passes.deinterleave(Y, colsum=True)
            torch.testing.assert_close(back, Y.permute(2, 0, 1))
            torch.testing.assert_close(colsum, Y.sum(0).reshape(-1), **_tol(dtype, colsum))
            M = torch.randn(3, k, generator=g, dtype=dtype)
            X = torch.randn(N, k, m, generator=g, dtype=dtype)
            b2 = torch.randn(3, m, generator=g, dtype=dtype)
            out, cs = passes.mid(M, X, b2, colsum=True)
            torch.testing.assert_close(out, torch.matmul(M, X) + b2, **_tol(dtype, out))
            torch.testing.assert_close(cs, X.sum(0).reshape(-1), **_tol(dtype, cs))


def test_attention_kernels_match_torch():
    """The inference-only C passes of attention (Q K^T + mask, P V) against torch, and their fallbacks."""
    with native(True):
        g = torch.Generator().manual_seed(0)
        for B, H, T, dh, rows in [(2, 3, 32, 16, 1), (1, 2, 16, 64, 16), (3, 2, 48, 32, 1), (2, 2, 16, 48, 1)]:
            q, k, v = (torch.randn(B * H, T, dh, generator=g) for _ in range(3))
            mask = torch.randn(B, 1, rows, T, generator=g)
            mask[0, ..., T // 2:] = torch.finfo(torch.float32).min
            with torch.no_grad():
                scores = attention_scores(q, k, mask, H, 0.125)
                ref = torch.baddbmm(mask.expand(B, H, rows, T).reshape(B * H, -1, T), q, k.transpose(1, 2), alpha=0.125)
                torch.testing.assert_close(scores, ref)
                probs = ref.softmax(-1)
                context = attention_context(probs, v, H)
                torch.testing.assert_close(context, torch.bmm(probs, v).view(B, H, T, dh).transpose(1, 2).reshape(B, T, H * dh))
        with torch.no_grad():  # shapes the kernels do not take
            assert attention_scores(torch.randn(4, 7, 16), torch.randn(4, 7, 16), torch.zeros(2, 1, 1, 7), 2, 1.0) is None
            assert attention_context(torch.randn(4, 8, 8), torch.randn(4, 8, 8), 2) is None
        qg = torch.randn(2, 16, 16, requires_grad=True)  # autograd needs torch ops
        assert attention_scores(qg, qg, torch.zeros(1, 1, 1, 16), 2, 1.0) is None


def test_model_inference_fast_path_matches_autograd_path():
    """KBertModel under no_grad (C attention passes, T % 16 == 0) equals the autograd path."""
    from kbert.modeling import KBertConfig, KBertModel

    config = KBertConfig(vocab_size=50, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=128, max_position_embeddings=32)
    torch.manual_seed(0)
    model = KBertModel(config).eval()
    ids = torch.randint(1, 50, (2, 16))
    mask = torch.ones_like(ids)
    mask[1, 11:] = 0
    with torch.no_grad():
        fast = model(ids, mask)
    slow = model(ids, mask)  # grad enabled: torch ops
    for a, b in zip(fast.hidden_states + fast.attention_scores, slow.hidden_states + slow.attention_scores):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_kernels_with_two_threads():
    """Per-thread partial sums (bias and factor gradients) and work splitting with 2 threads."""
    torch.set_num_threads(2)
    try:
        with native(True):
            for plan, (out_f, in_f, a_shape) in [("b_planar", (64, 64, (32, 8))), ("b_planar", (64, 64, (32, 32))),
                                                  ("b_mid", (256, 64, (8, 2))), ("a_mid", (64, 256, (2, 16))),
                                                  ("a_planar", (48, 20, (24, 10)))]:
                for dtype in (torch.float32, torch.float64):
                    A, B, bias = _factors(out_f, in_f, a_shape, dtype=dtype)
                    x = torch.randn(3, 67, in_f, dtype=dtype, requires_grad=True)
                    _check(lambda x, A, B, b: kron_linear(x, A, B, b, plan=plan), x, A, B, bias, dtype)
    finally:
        torch.set_num_threads(1)
