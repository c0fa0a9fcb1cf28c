"""Fast Kronecker contractions: the memory layouts, native kernels and backward pass
behind ``KroneckerLinear`` (kbert/kronecker.py has the maths and the layers).

Everything here is an exact rewrite of ``y = x @ (A kron B).T + bias``, checked against
``torch.kron`` forward and backward in tests/test_fast_paths.py. Read kbert/kronecker.py
first; this module only makes it fast.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import torch

from kbert.device import autocast_dtype

Shape = tuple[int, int]


def _eq7(a_shape: Shape, b_shape: Shape) -> dict[str, int]:
    """Paper Eq. 7 FLOPs per order (imported here: kbert.kronecker imports this module)."""
    from kbert.kronecker import kron_flops_per_order

    return kron_flops_per_order(a_shape, b_shape)


# --------------------------------------------------------------------------------------
# Fast contraction (the forward pass never builds W)
# --------------------------------------------------------------------------------------
#
# Per token, X = x.view(n1, n2) and Y = A @ X @ B.T + bias (one Kronecker sum; sums of
# several use the generic path). Of the two products one contracts the *last* axis of an
# (N, rows, cols) activation: a single GEMM over all N tokens, no copies. The other
# contracts the *middle* axis, which no single GEMM can do in place; how it is done is the
# layer's "plan" (all are exact rewrites, tested against torch.kron):
#
#   b_planar  order b_first, short m2 (attention: A 384x384 / 384x48, B 2x2 / 2x16).
#             Zp = B @ X^T for every token, written planar (m2, N*n1); then one GEMM
#             Zp[i2] @ A^T per output column i2, into (m2, N, m1); one interleave pass
#             (+ bias) to (N, m1, m2) at the end.
#   b_mid     order b_first, small A (FFN W1: A 8x2 / 16x2). Z = X @ B^T as one GEMM,
#             then Y[n] = A @ Z[n] + bias: a memory-bound pass with the tiny A.
#   a_mid     order a_first, small A (FFN W2: A 2x8 / 2x16). Z[n] = A @ X[n], then GEMM.
#   a_planar  order a_first, short n2: the mirror image of b_planar.
#
# The memory-bound passes (middle-axis product with a tiny matrix, planar <-> interleaved
# copies, products with a tiny B) run in small C kernels when a C compiler is present
# (``_native_lib``), else as torch ops; both give the same numbers up to rounding. For
# m2 == 2 in float32, b_planar is a single C pass (``_planar2``: B, then A, then the
# interleaved store with the bias, per block of tokens in L1). ``kron_heads`` runs Q, K, V
# that way and writes attention's head layout directly. The backward pass
# (``_KronLinearFn``) is written out with the same layouts, so training never transposes a
# big tensor either; the bias gradient is summed inside a pass that reads the output
# gradient anyway. docs/efficiency.md has the measurements.

PLANS = ("b_planar", "b_mid", "a_mid", "a_planar", "generic")
PLAN_ORDER = {"b_planar": "b_first", "b_mid": "b_first", "a_mid": "a_first", "a_planar": "a_first"}
_PLANAR_MAX = 4  # planar layout when the axis that must be interleaved has at most this many entries
_NATIVE_MIX_MAX = 16  # C kernel for products with a tiny B when its inner size is at most this


def choose_plan(a_shape: Shape, b_shape: Shape, rank: int = 1, order: str | None = None) -> str:
    """Layout plan of one Kronecker layer: a cost model that counts copies, not just FLOPs.

    ``order`` (default: Eq. 7's cheaper one) fixes which factor is applied first. The
    middle-axis product then runs either as big GEMMs on a planar layout, at the price of
    one interleave pass, when the axis to move is short (<= 4: B of the Table-1 attention
    matrices is 2 x 2 or 2 x 16), or as one memory-bound pass with the small factor.
    """
    (m1, n1), (m2, n2) = a_shape, b_shape
    if order is None:
        costs = _eq7(a_shape, b_shape)
        order = min(costs, key=costs.get)
    if order not in ("a_first", "b_first"):
        raise ValueError(f"unknown contraction order {order!r}: use 'a_first' or 'b_first'")
    if rank != 1:
        return "generic"
    if order == "b_first":
        return "b_planar" if m2 <= _PLANAR_MAX and m2 < m1 * n1 else "b_mid"
    return "a_planar" if n2 <= _PLANAR_MAX and n2 < m1 * n1 else "a_mid"


# ---- C kernels for the memory-bound passes (optional; torch ops otherwise) -----------

_NATIVE_BODY = r"""
/* Y[n,i,l] = bias[i,l] + sum_j M[i,j] X[n,j,l] (bias may be NULL); colsum[j,l] = sum_n X[n,j,l] if given. */
void kbert_mid_SUF(const T *M, const T *X, const T *bias, T *Y, T *colsum, long N, long p, long q, long L, int nt) {
    long w = q * L;
    ACC *part = colsum ? (ACC *)calloc((size_t)nt * w, sizeof(ACC)) : NULL;
    #pragma omp parallel num_threads(nt)
    {
        ACC *acc = part ? part + (size_t)omp_get_thread_num() * w : NULL;
        T *blk = part ? (T *)calloc((size_t)w, sizeof(T)) : NULL;
        long count = 0;
        #pragma omp for schedule(static)
        for (long n = 0; n < N; n++) {
            const T *Xn = X + n * w;
            T *Yn = Y + n * p * L;
            for (long i = 0; i < p; i++) {
                T *y = Yn + i * L;
                const T *mi = M + i * q;
                const T a0 = mi[0];
                if (bias) { const T *b = bias + i * L; for (long l = 0; l < L; l++) y[l] = b[l] + a0 * Xn[l]; }
                else { for (long l = 0; l < L; l++) y[l] = a0 * Xn[l]; }
                for (long j = 1; j < q; j++) {
                    const T *x = Xn + j * L; const T a = mi[j];
                    for (long l = 0; l < L; l++) y[l] += a * x[l];
                }
            }
            if (blk) {
                for (long c = 0; c < w; c++) blk[c] += Xn[c];
                if (++count == 64) { for (long c = 0; c < w; c++) { acc[c] += blk[c]; blk[c] = 0; } count = 0; }
            }
        }
        if (blk) { for (long c = 0; c < w; c++) acc[c] += blk[c]; free(blk); }
    }
    if (colsum) {
        for (long c = 0; c < w; c++) { ACC s = 0; for (int t = 0; t < nt; t++) s += part[(size_t)t * w + c]; colsum[c] = (T)s; }
        free(part);
    }
}

/* P[i, r] = sum_j b[i, j] X[r, j]: rows X (R, n) -> planar P (k, R). */
void kbert_rows_to_planar_SUF(const T *X, const T *b, T *P, long R, long n, long k, int nt) {
    #pragma omp parallel for num_threads(nt) schedule(static)
    for (long r0 = 0; r0 < R; r0 += 512) {
        long r1 = r0 + 512 < R ? r0 + 512 : R;
        for (long i = 0; i < k; i++) {
            const T *bi = b + i * n;
            T *p = P + i * R;
            if (n == 2) {
                const T b0 = bi[0], b1 = bi[1];
                for (long r = r0; r < r1; r++) p[r] = b0 * X[2 * r] + b1 * X[2 * r + 1];
            } else {
                for (long r = r0; r < r1; r++) { const T *x = X + r * n; T s = 0; for (long j = 0; j < n; j++) s += bi[j] * x[j]; p[r] = s; }
            }
        }
    }
}

/* GX[r, j] = sum_i G[i, r] b[i, j] and GB[i, j] = sum_r G[i, r] X[r, j] (GX or GB may be NULL). */
void kbert_planar_to_rows_SUF(const T *G, const T *b, const T *X, T *GX, T *GB, long R, long k, long n, int nt) {
    long w = k * n;
    ACC *part = GB ? (ACC *)calloc((size_t)nt * w, sizeof(ACC)) : NULL;
    #pragma omp parallel num_threads(nt)
    {
        ACC *acc = part ? part + (size_t)omp_get_thread_num() * w : NULL;
        T *blk = part ? (T *)malloc((size_t)w * sizeof(T)) : NULL;
        #pragma omp for schedule(static)
        for (long r0 = 0; r0 < R; r0 += 512) {
            long r1 = r0 + 512 < R ? r0 + 512 : R;
            if (GX) {
                if (n == 2) {
                    const T *g = G + r0;
                    const T b0 = b[0], b1 = b[1];
                    for (long r = r0; r < r1; r++) { GX[2 * r] = g[r - r0] * b0; GX[2 * r + 1] = g[r - r0] * b1; }
                    for (long i = 1; i < k; i++) {
                        const T *gi = G + i * R;
                        const T c0 = b[i * 2], c1 = b[i * 2 + 1];
                        for (long r = r0; r < r1; r++) { GX[2 * r] += gi[r] * c0; GX[2 * r + 1] += gi[r] * c1; }
                    }
                } else {
                    for (long r = r0; r < r1; r++) {
                        T *gx = GX + r * n;
                        for (long j = 0; j < n; j++) gx[j] = 0;
                        for (long i = 0; i < k; i++) { T g = G[i * R + r]; const T *bi = b + i * n; for (long j = 0; j < n; j++) gx[j] += g * bi[j]; }
                    }
                }
            }
            if (acc) {
                for (long c = 0; c < w; c++) blk[c] = 0;
                for (long i = 0; i < k; i++) {
                    const T *g = G + i * R;
                    if (n == 2) {
                        T s0 = 0, s1 = 0;
                        for (long r = r0; r < r1; r++) { s0 += g[r] * X[2 * r]; s1 += g[r] * X[2 * r + 1]; }
                        blk[i * 2] = s0; blk[i * 2 + 1] = s1;
                    } else {
                        T *a = blk + i * n;
                        for (long r = r0; r < r1; r++) { const T *x = X + r * n; T gr = g[r]; for (long j = 0; j < n; j++) a[j] += gr * x[j]; }
                    }
                }
                for (long c = 0; c < w; c++) acc[c] += blk[c];
            }
        }
        free(blk);
    }
    if (GB) {
        for (long c = 0; c < w; c++) { ACC s = 0; for (int t = 0; t < nt; t++) s += part[(size_t)t * w + c]; GB[c] = (T)s; }
        free(part);
    }
}

/* Planar P (k, N, m) -> rows of width W = m*k, element (n, i*k + c) = P[c, n, i] + bias[i*k + c] (bias may
   be NULL), stored at ((n / seq * H + col / dh) * seq + n % seq) * dh + col % dh with dh = W / H: the
   heads layout (batch, H, seq, dh) of attention; H = 1, seq = N is the plain (N, m, k) layout. */
void kbert_interleave_SUF(const T *P, const T *bias, T *Y, long N, long m, long k, long seq, long H, int nt) {
    const long W = m * k, dh = W / H;
    #pragma omp parallel for num_threads(nt) schedule(static)
    for (long n = 0; n < N; n++) {
        T *base = Y + ((n / seq) * H * seq + n % seq) * dh;
        if (k == 2 && dh % 2 == 0) {
            const long hm = dh / 2;
            for (long h = 0; h < H; h++) {
                T *y = base + h * seq * dh;
                const T *p0 = P + n * m + h * hm, *p1 = P + (N + n) * m + h * hm;
                if (bias) { const T *b = bias + h * dh; for (long i = 0; i < hm; i++) { y[2 * i] = p0[i] + b[2 * i]; y[2 * i + 1] = p1[i] + b[2 * i + 1]; } }
                else { for (long i = 0; i < hm; i++) { y[2 * i] = p0[i]; y[2 * i + 1] = p1[i]; } }
            }
        } else {
            for (long c = 0; c < k; c++) {
                const T *p = P + (c * N + n) * m;
                for (long i = 0; i < m; i++) {
                    const long col = i * k + c;
                    base[(col / dh) * seq * dh + col % dh] = bias ? p[i] + bias[col] : p[i];
                }
            }
        }
    }
}

/* The inverse of kbert_interleave (same layouts, no bias): P[c, n, i] = element (n, i*k + c) of Y;
   colsum[i*k + c] = sum_n of that element if given (a bias gradient). */
void kbert_deinterleave_SUF(const T *Y, T *P, T *colsum, long N, long m, long k, long seq, long H, int nt) {
    const long W = m * k, dh = W / H;
    ACC *part = colsum ? (ACC *)calloc((size_t)nt * W, sizeof(ACC)) : NULL;
    #pragma omp parallel num_threads(nt)
    {
        ACC *acc = part ? part + (size_t)omp_get_thread_num() * W : NULL;
        T *blk = part ? (T *)calloc((size_t)W, sizeof(T)) : NULL;
        long count = 0;
        #pragma omp for schedule(static)
        for (long n = 0; n < N; n++) {
            const T *base = Y + ((n / seq) * H * seq + n % seq) * dh;
            if (k == 2 && dh % 2 == 0) {
                const long hm = dh / 2;
                for (long h = 0; h < H; h++) {
                    const T *y = base + h * seq * dh;
                    T *p0 = P + n * m + h * hm, *p1 = P + (N + n) * m + h * hm;
                    for (long i = 0; i < hm; i++) { p0[i] = y[2 * i]; p1[i] = y[2 * i + 1]; }
                    if (blk) { T *bl = blk + h * dh; for (long c = 0; c < dh; c++) bl[c] += y[c]; }
                }
            } else {
                for (long c = 0; c < k; c++) {
                    T *p = P + (c * N + n) * m;
                    for (long i = 0; i < m; i++) { const long col = i * k + c; p[i] = base[(col / dh) * seq * dh + col % dh]; }
                }
                if (blk) for (long col = 0; col < W; col++) blk[col] += base[(col / dh) * seq * dh + col % dh];
            }
            if (blk && ++count == 64) { for (long c = 0; c < W; c++) { acc[c] += blk[c]; blk[c] = 0; } count = 0; }
        }
        if (blk) { for (long c = 0; c < W; c++) acc[c] += blk[c]; free(blk); }
    }
    if (colsum) {
        for (long c = 0; c < W; c++) { ACC s = 0; for (int t = 0; t < nt; t++) s += part[(size_t)t * W + c]; colsum[c] = (T)s; }
        free(part);
    }
}
"""


_NATIVE_FUSED = r"""
typedef float v16 __attribute__((vector_size(64)));
typedef float v16u __attribute__((vector_size(64), aligned(4)));
typedef int v16i __attribute__((vector_size(64)));
#if defined(__clang__)
#define KB_LO(a, b) __builtin_shufflevector(a, b, 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23)
#define KB_HI(a, b) __builtin_shufflevector(a, b, 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31)
#else
#define KB_LO(a, b) __builtin_shuffle(a, b, (v16i){0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23})
#define KB_HI(a, b) __builtin_shuffle(a, b, (v16i){8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31})
#endif
#define KB_TB 6

/* Plan b_planar in one pass for m2 == 2, float32: per block of KB_TB tokens,
   Z[n, j1, c] = sum_j2 B[c, j2] X[n, j1*n2 + j2] stays in L1, then 16 rows of A at a time,
   Y(n, i1*2 + c) = bias[i1*2 + c] + sum_j1 A[i1, j1] Z[n, j1, c], stored as interleaved pairs with
   the heads mapping of kbert_interleave (dh = 2*m1/H a multiple of 32, or H == 1).
   At = A^T (n1, m1) with m1 % 16 == 0. If Zp: also writes Z planar, Zp[c, n*n1 + j1] (for backward). */
void kbert_planar2_f32(const float *X, const float *B, const float *At, const float *bias, float *Y, float *Zp,
                       long N, long m1, long n1, long n2, long seq, long H, int nt) {
    const long W = 2 * m1, dh = W / H;
    #pragma omp parallel num_threads(nt)
    {
        float *Z = (float *)malloc(sizeof(float) * KB_TB * n1 * 2);
        #pragma omp for schedule(static)
        for (long n0 = 0; n0 < N; n0 += KB_TB) {
            const long tb = N - n0 < KB_TB ? N - n0 : KB_TB;
            for (long t = 0; t < KB_TB; t++) {
                float *z = Z + t * n1 * 2;
                if (t >= tb) { memset(z, 0, sizeof(float) * n1 * 2); continue; }
                const float *x = X + (n0 + t) * n1 * n2;
                for (long j1 = 0; j1 < n1; j1++) {
                    const float *xr = x + j1 * n2;
                    float s0 = 0, s1 = 0;
                    for (long j2 = 0; j2 < n2; j2++) { s0 += B[j2] * xr[j2]; s1 += B[n2 + j2] * xr[j2]; }
                    z[2 * j1] = s0; z[2 * j1 + 1] = s1;
                }
                if (Zp) {
                    float *p0 = Zp + (n0 + t) * n1, *p1 = Zp + N * n1 + (n0 + t) * n1;
                    for (long j1 = 0; j1 < n1; j1++) { p0[j1] = z[2 * j1]; p1[j1] = z[2 * j1 + 1]; }
                }
            }
            for (long i0 = 0; i0 < m1; i0 += 16) {
                v16 acc[KB_TB][2];
                for (int t = 0; t < KB_TB; t++) { acc[t][0] = (v16){0}; acc[t][1] = (v16){0}; }
                for (long j1 = 0; j1 < n1; j1++) {
                    const v16 a = *(const v16u *)(At + j1 * m1 + i0);
                    for (int t = 0; t < KB_TB; t++) {
                        acc[t][0] += a * Z[(t * n1 + j1) * 2];
                        acc[t][1] += a * Z[(t * n1 + j1) * 2 + 1];
                    }
                }
                const long col = 2 * i0;
                v16 b0 = {0}, b1 = {0};
                if (bias) { b0 = *(const v16u *)(bias + col); b1 = *(const v16u *)(bias + col + 16); }
                for (long t = 0; t < tb; t++) {
                    const long n = n0 + t;
                    float *y = Y + (((n / seq) * H + col / dh) * seq + n % seq) * dh + col % dh;
                    *(v16u *)y = KB_LO(acc[t][0], acc[t][1]) + b0;
                    *(v16u *)(y + 16) = KB_HI(acc[t][0], acc[t][1]) + b1;
                }
            }
        }
        free(Z);
    }
}
"""


# Attention's two batched products (shared by dense and Kronecker models, inference only):
# Q K^T with the scale and the additive mask fused, and P V written straight into the
# (batch, seq, heads*dh) layout that the output projection reads.
_NATIVE_ATTENTION = r"""
#define RB 6

/* S[bh, i, j] = alpha * sum_d Q[bh, i, d] K[bh, j, d] + mask[bh / H, (i if mask_rows) , j]
   Q, K: (BH, T, dh) contiguous; S: (BH, T, T); mask: (B, mrows, T) with mrows 1 or T, or NULL. T % 16 == 0. */
void kbert_scores_f32(const float *Q, const float *K, const float *mask, float *S, float alpha,
                      long BH, long H, long T, long dh, long mrows, int nt) {
    #pragma omp parallel num_threads(nt)
    {
        float *Kt = (float *)malloc(sizeof(float) * dh * T);
        float *Qp = (float *)malloc(sizeof(float) * RB * dh);
        #pragma omp for schedule(static)
        for (long bh = 0; bh < BH; bh++) {
            const float *q = Q + bh * T * dh, *k = K + bh * T * dh;
            for (long j = 0; j < T; j++) for (long d = 0; d < dh; d++) Kt[d * T + j] = k[j * dh + d];
            const float *mb = mask ? mask + (bh / H) * mrows * T : NULL;
            float *s = S + bh * T * T;
            for (long i0 = 0; i0 < T; i0 += RB) {
                const long rb = T - i0 < RB ? T - i0 : RB;
                const float *qb = q + i0 * dh;
                if (rb < RB) { memset(Qp, 0, sizeof(float) * RB * dh); memcpy(Qp, qb, sizeof(float) * rb * dh); qb = Qp; }
                for (long j0 = 0; j0 < T; j0 += 16) {
                    v16 acc[RB];
                    for (int r = 0; r < RB; r++) acc[r] = (v16){0};
                    for (long d = 0; d < dh; d++) {
                        const v16 kv = *(const v16u *)(Kt + d * T + j0);
                        for (int r = 0; r < RB; r++) acc[r] += kv * qb[r * dh + d];
                    }
                    for (long r = 0; r < rb; r++) {
                        v16 out = acc[r] * alpha;
                        if (mb) out += *(const v16u *)(mb + (mrows == 1 ? 0 : (i0 + r) * T) + j0);
                        *(v16u *)(s + (i0 + r) * T + j0) = out;
                    }
                }
            }
        }
        free(Kt); free(Qp);
    }
}


static inline __attribute__((always_inline)) void ctx_block(const float *p, const float *v, float *C, long b, long h,
        long H, long T, long dh, long i0, long rb, const long nv) {
    v16 acc[RB][4];
    for (int r = 0; r < RB; r++) for (int e = 0; e < 4; e++) acc[r][e] = (v16){0};
    if (rb == RB) {
        for (long j = 0; j < T; j++) {
            v16 vv[4];
            for (long e = 0; e < nv; e++) vv[e] = *(const v16u *)(v + j * dh + 16 * e);
            for (int r = 0; r < RB; r++) {
                const float pr = p[(i0 + r) * T + j];
                for (long e = 0; e < nv; e++) acc[r][e] += vv[e] * pr;
            }
        }
    } else {
        for (long j = 0; j < T; j++) {
            v16 vv[4];
            for (long e = 0; e < nv; e++) vv[e] = *(const v16u *)(v + j * dh + 16 * e);
            for (long r = 0; r < rb; r++) {
                const float pr = p[(i0 + r) * T + j];
                for (long e = 0; e < nv; e++) acc[r][e] += vv[e] * pr;
            }
        }
    }
    for (long r = 0; r < rb; r++) {
        float *c = C + ((b * T + i0 + r) * H + h) * dh;
        for (long e = 0; e < nv; e++) *(v16u *)(c + 16 * e) = acc[r][e];
    }
}

/* C[b, i, h*dh + e] = sum_j P[bh, i, j] V[bh, j, e], bh = b*H + h: written straight into (B, T, H*dh).
   dh in {16, 32, 48, 64}. */
void kbert_context_f32(const float *P, const float *V, float *C, long BH, long H, long T, long dh, int nt) {
    #pragma omp parallel for num_threads(nt) schedule(static)
    for (long bh = 0; bh < BH; bh++) {
        const long b = bh / H, h = bh % H;
        const float *p = P + bh * T * T, *v = V + bh * T * dh;
        for (long i0 = 0; i0 < T; i0 += RB) {
            const long rb = T - i0 < RB ? T - i0 : RB;
            switch (dh) {
                case 64: ctx_block(p, v, C, b, h, H, T, dh, i0, rb, 4); break;
                case 48: ctx_block(p, v, C, b, h, H, T, dh, i0, rb, 3); break;
                case 32: ctx_block(p, v, C, b, h, H, T, dh, i0, rb, 2); break;
                default: ctx_block(p, v, C, b, h, H, T, dh, i0, rb, 1); break;
            }
        }
    }
}

/* Plan a_planar in one pass for n2 == 2, float32: per block of KB_TB tokens and 16 rows of A,
   Z[n, i1, c] = sum_j1 A[i1, j1] X[n, j1*2 + c] (X read as stored: interleaved pairs), then the row
   Y[n, i1*m2 : (i1+1)*m2] = bias[i1*m2 : ...] + B[:, 0] Z[n, i1, 0] + B[:, 1] Z[n, i1, 1] as one vector.
   At = A^T (n1, m1) with m1 % 16 == 0; Bt = B^T padded to (2, 16), m2 <= 16; bias padded by 16 floats
   (may be NULL). If Zp: also writes Z planar, Zp[c, n*m1 + i1] (for backward). */
void kbert_aplanar2_f32(const float *X, const float *Bt, const float *At, const float *bias, float *Y, float *Zp,
                        long N, long m1, long n1, long m2, int nt) {
    const v16 b0 = *(const v16u *)Bt, b1 = *(const v16u *)(Bt + 16);
    #pragma omp parallel for num_threads(nt) schedule(static)
    for (long n0 = 0; n0 < N; n0 += KB_TB) {
        const long tb = N - n0 < KB_TB ? N - n0 : KB_TB;
        const float *xs[KB_TB];
        for (long t = 0; t < KB_TB; t++) xs[t] = X + (n0 + (t < tb ? t : 0)) * n1 * 2;
        for (long i0 = 0; i0 < m1; i0 += 16) {
            v16 acc[KB_TB][2];
            for (int t = 0; t < KB_TB; t++) { acc[t][0] = (v16){0}; acc[t][1] = (v16){0}; }
            for (long j1 = 0; j1 < n1; j1++) {
                const v16 a = *(const v16u *)(At + j1 * m1 + i0);
                for (int t = 0; t < KB_TB; t++) {
                    acc[t][0] += a * xs[t][2 * j1];
                    acc[t][1] += a * xs[t][2 * j1 + 1];
                }
            }
            for (long t = 0; t < tb; t++) {
                const long n = n0 + t;
                float z0[16], z1[16];
                *(v16u *)z0 = acc[t][0];
                *(v16u *)z1 = acc[t][1];
                if (Zp) { *(v16u *)(Zp + n * m1 + i0) = acc[t][0]; *(v16u *)(Zp + (N + n) * m1 + i0) = acc[t][1]; }
                float *y = Y + (n * m1 + i0) * m2;
                for (int l = 0; l < 16; l++) {
                    v16 v = b0 * z0[l] + b1 * z1[l];
                    if (bias) v += *(const v16u *)(bias + (i0 + l) * m2);
                    if ((i0 + l) * m2 + 16 <= m1 * m2) {
                        *(v16u *)(y + l * m2) = v;  /* may spill into later rows of this token: written next */
                    } else {
                        for (long e = 0; e < m2; e++) y[l * m2 + e] = v[e];
                    }
                }
            }
        }
    }
}
"""


def _native_source() -> str:
    out = "#include <stddef.h>\n#include <stdlib.h>\n#include <string.h>\n#include <omp.h>\n\n"
    for suffix, ctype in (("f32", "float"), ("f64", "double")):
        out += f"#define T {ctype}\n#define ACC double\n{_NATIVE_BODY.replace('_SUF', '_' + suffix)}#undef T\n#undef ACC\n\n"
    return out + _NATIVE_FUSED + _NATIVE_ATTENTION


# -fassociative-math lets the compiler vectorise the sums; no -ffast-math (it would set
# flush-to-zero for the whole process and assume no NaNs).
_NATIVE_FLAGS = ["-O3", "-fPIC", "-shared", "-fopenmp", "-fno-math-errno", "-fassociative-math",
                 "-fno-signed-zeros", "-fno-trapping-math"]
_NATIVE_SIGNATURES = {  # name: (pointer args, long args)
    "kbert_mid": (5, 4),
    "kbert_rows_to_planar": (3, 3),
    "kbert_planar_to_rows": (5, 3),
    "kbert_interleave": (3, 5),
    "kbert_deinterleave": (3, 5),
}
_native_state: dict = {}


def _native_lib():
    """The compiled C kernels, or None (no compiler, ``KBERT_NATIVE=0``, or any failure).

    Built once per machine with the system C compiler (< 1 s) into ``$KBERT_NATIVE_DIR``
    (default ``~/.cache/kbert/native``), keyed by source, compiler and CPU flags. The
    kernels use the OpenMP runtime torch already loaded, with torch's thread count.
    """
    if "lib" in _native_state:
        return _native_state["lib"]
    _native_state["lib"] = None
    if os.environ.get("KBERT_NATIVE", "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    try:
        _native_state["lib"] = _build_native()
    except Exception as error:  # fall back to torch ops, and say so once
        _native_state["error"] = repr(error)
        warnings.warn(f"kbert: C kernels for Kronecker layers unavailable ({error}); using torch ops", stacklevel=3)
    return _native_state["lib"]


def _build_native():
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if cc is None:
        raise RuntimeError("no C compiler on PATH")
    source = _native_source()
    flags = ""
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as cpuinfo:
            flags = next((line for line in cpuinfo if line.startswith("flags")), "")
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    key = hashlib.sha256("\0".join([source, " ".join(_NATIVE_FLAGS), cc, version, flags, platform.machine()]).encode())
    root = Path(os.environ.get("KBERT_NATIVE_DIR") or Path.home() / ".cache" / "kbert" / "native")
    so = root / f"kbert_kron_{key.hexdigest()[:16]}.so"
    if not so.exists():
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=root) as tmp:
            src, out = Path(tmp) / "kron.c", Path(tmp) / so.name
            src.write_text(source)
            cmd = [cc, *_NATIVE_FLAGS, str(src), "-o", str(out)]
            run = subprocess.run(cmd[:1] + ["-march=native"] + cmd[1:], capture_output=True, text=True, timeout=120)
            if run.returncode != 0:  # some compilers reject -march=native
                run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
            if run.returncode != 0:
                raise RuntimeError(f"{cc} failed: {run.stderr.strip()[-300:]}")
            os.replace(out, so)  # atomic: concurrent builders race harmlessly
    lib = ctypes.CDLL(str(so))
    for name, (pointers, longs) in _NATIVE_SIGNATURES.items():
        for suffix in ("f32", "f64"):
            fn = getattr(lib, f"{name}_{suffix}")
            fn.argtypes = [ctypes.c_void_p] * pointers + [ctypes.c_long] * longs + [ctypes.c_int]
            fn.restype = None
    lib.kbert_planar2_f32.argtypes = [ctypes.c_void_p] * 6 + [ctypes.c_long] * 6 + [ctypes.c_int]
    lib.kbert_scores_f32.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_float] + [ctypes.c_long] * 5 + [ctypes.c_int]
    lib.kbert_context_f32.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_long] * 4 + [ctypes.c_int]
    lib.kbert_aplanar2_f32.argtypes = [ctypes.c_void_p] * 6 + [ctypes.c_long] * 4 + [ctypes.c_int]
    for name in ("kbert_planar2_f32", "kbert_aplanar2_f32", "kbert_scores_f32", "kbert_context_f32"):
        getattr(lib, name).restype = None
    return lib


def native_available() -> bool:
    """Whether the C kernels are in use (see ``_native_lib``)."""
    return _native_lib() is not None


def _kernel(name: str, *tensors: torch.Tensor | None):
    """The C kernel ``name`` for these tensors' dtype, or None (use torch ops)."""
    lib = _native_lib()
    dtype = next(t for t in tensors if t is not None).dtype
    if lib is None or dtype not in (torch.float32, torch.float64):
        return None
    if any(t is not None and (t.device.type != "cpu" or t.dtype != dtype) for t in tensors):
        return None
    return getattr(lib, f"{name}_{'f32' if dtype == torch.float32 else 'f64'}")


def _ptr(t: torch.Tensor | None):
    return None if t is None else t.data_ptr()


def _mid(M: torch.Tensor, X: torch.Tensor, bias: torch.Tensor | None = None, colsum: bool = False):
    """Y[n] = M @ X[n] (+ bias) for M (p, q), X (N, q, L), bias (p, L): the middle-axis product.

    With ``colsum`` also returns X summed over n, shape (q*L,) (a bias gradient, for free).
    """
    N, q, L = X.shape
    p = M.shape[0]
    X, M = X.contiguous(), M.contiguous()
    bias = None if bias is None else bias.contiguous()
    fn = _kernel("kbert_mid", M, X, bias)
    if fn is not None:
        Y = torch.empty(N, p, L, dtype=X.dtype, device=X.device)
        cs = torch.empty(q * L, dtype=X.dtype, device=X.device) if colsum else None
        fn(_ptr(M), _ptr(X), _ptr(bias), _ptr(Y), _ptr(cs), N, p, q, L, torch.get_num_threads())
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


def _mid_grad(G: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    """sum_n G[n] @ T[n].T for G (N, p, L), T (N, q, L): the gradient of the tiny factor."""
    if G.shape[1] >= T.shape[1]:  # batched products are fast with the long side as rows
        return torch.bmm(G, T.transpose(1, 2)).sum(0)
    return torch.bmm(T, G.transpose(1, 2)).sum(0).T


def _rows_to_planar(X: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """P[i, r] = sum_j b[i, j] X[r, j] for X (R, n), b (k, n): (k, R)."""
    R, n = X.shape
    k = b.shape[0]
    fn = _kernel("kbert_rows_to_planar", X, b) if n <= _NATIVE_MIX_MAX else None
    if fn is None:
        return torch.mm(b, X.T)
    b = b.contiguous()
    P = torch.empty(k, R, dtype=X.dtype, device=X.device)
    fn(_ptr(X), _ptr(b), _ptr(P), R, n, k, torch.get_num_threads())
    return P


def _planar_to_rows(G: torch.Tensor, b: torch.Tensor, X: torch.Tensor, want_gx: bool, want_gb: bool):
    """(G.T @ b, G @ X) for G (k, R), b (k, n), X (R, n); either may be skipped (None)."""
    k, R = G.shape
    n = b.shape[1]
    fn = _kernel("kbert_planar_to_rows", G, b, X) if n <= _PLANAR_MAX else None
    if fn is None:
        return (torch.mm(G.T, b) if want_gx else None), (G @ X if want_gb else None)
    b = b.contiguous()
    gx = torch.empty(R, n, dtype=G.dtype, device=G.device) if want_gx else None
    gb = torch.empty(k, n, dtype=G.dtype, device=G.device) if want_gb else None
    fn(_ptr(G), _ptr(b), _ptr(X), _ptr(gx), _ptr(gb), R, k, n, torch.get_num_threads())
    return gx, gb


def _interleave(P: torch.Tensor, bias: torch.Tensor | None = None, heads: tuple[int, int] | None = None,
                out: torch.Tensor | None = None) -> torch.Tensor:
    """Planar (k, N, m) -> (N, m, k) contiguous, plus bias (m*k,) if given.

    With ``heads=(H, seq)`` the result is laid out for attention instead: (N/seq, H, seq,
    m*k/H), as ``y.view(N/seq, seq, H, -1).transpose(1, 2).contiguous()`` would give.
    """
    k, N, m = P.shape
    H, seq = heads or (1, N)
    bias = None if bias is None else bias.contiguous()
    fn = _kernel("kbert_interleave", P, bias)
    if fn is not None:
        Y = torch.empty(N, m, k, dtype=P.dtype, device=P.device) if heads is None else torch.empty(N // seq, H, seq, m * k // H, dtype=P.dtype, device=P.device)
        Y = Y if out is None else out
        fn(_ptr(P), _ptr(bias), _ptr(Y), N, m, k, seq, H, torch.get_num_threads())
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


def _deinterleave(Y: torch.Tensor, colsum: bool = False, k: int | None = None, heads: bool = False,
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
    fn = _kernel("kbert_deinterleave", Y)
    if fn is not None:
        Y = Y.contiguous()
        P = torch.empty(k, N, m, dtype=Y.dtype, device=Y.device) if out is None else out
        cs = (torch.empty(m * k, dtype=Y.dtype, device=Y.device) if colsum_out is None else colsum_out) if colsum else None
        fn(_ptr(Y), _ptr(P), _ptr(cs), N, m, k, seq, H, torch.get_num_threads())
        return (P, cs) if colsum else P
    if heads:
        Y = Y.transpose(1, 2).reshape(N, m, k)
    P = Y.reshape(1, N, m) if k == 1 else Y.permute(2, 0, 1).contiguous()
    P = P if out is None else out.copy_(P)
    cs = Y.sum(0).reshape(m * k) if colsum else None
    if cs is not None and colsum_out is not None:
        cs = colsum_out.copy_(cs)
    return (P, cs) if colsum else P


def attention_scores(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor, heads: int, alpha: float) -> torch.Tensor | None:
    """alpha * q @ k^T + mask for q, k (B*H, T, dh) and mask (B, 1, 1|T, T), as one C pass.

    Inference only (no autograd); None when it does not apply (then use torch.baddbmm).
    """
    BH, T, dh = q.shape
    if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or mask.requires_grad):
        return None
    if T % 16 or mask.dim() != 4 or mask.shape[-1] != T or mask.shape[1] != 1 or mask.shape[2] not in (1, T):
        return None
    if BH % heads or mask.shape[0] != BH // heads or _native_lib() is None:
        return None
    if any(t.dtype != torch.float32 or t.device.type != "cpu" for t in (q, k, mask)):
        return None
    q, k, mask = q.contiguous(), k.contiguous(), mask.contiguous()
    S = torch.empty(BH, T, T, dtype=q.dtype, device=q.device)
    _native_lib().kbert_scores_f32(_ptr(q), _ptr(k), _ptr(mask), _ptr(S), float(alpha), BH, heads, T, dh,
                                   mask.shape[2], torch.get_num_threads())
    return S


def attention_context(probs: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor | None:
    """probs @ v for (B*H, T, T) x (B*H, T, dh), returned as (B, T, H*dh) in one C pass.

    Inference only; None when it does not apply.
    """
    BH, T, dh = v.shape
    if torch.is_grad_enabled() and (probs.requires_grad or v.requires_grad):
        return None
    if dh % 16 or dh > 64 or BH % heads or _native_lib() is None:
        return None
    if any(t.dtype != torch.float32 or t.device.type != "cpu" for t in (probs, v)):
        return None
    probs, v = probs.contiguous(), v.contiguous()
    C = torch.empty(BH // heads, T, heads * dh, dtype=v.dtype, device=v.device)
    _native_lib().kbert_context_f32(_ptr(probs), _ptr(v), _ptr(C), BH, heads, T, dh, torch.get_num_threads())
    return C


def _planar2(x, a, b, bias, heads=None, want_zp=False, out=None, zp_out=None):
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
    tensors = [t for t in (x, a, b, bias) if t is not None]
    if _native_lib() is None or any(t.dtype != torch.float32 or t.device.type != "cpu" for t in tensors):
        return None
    At, b = a.T.contiguous(), b.contiguous()
    bias = None if bias is None else bias.contiguous()
    if out is None:
        out = torch.empty(N, m1 * 2, dtype=x.dtype, device=x.device) if heads is None else torch.empty(N // seq, H, seq, 2 * m1 // H, dtype=x.dtype, device=x.device)
    Zp = None
    if want_zp:
        Zp = torch.empty(2, N * n1, dtype=x.dtype, device=x.device) if zp_out is None else zp_out
    _native_lib().kbert_planar2_f32(_ptr(x), _ptr(b), _ptr(At), _ptr(bias), _ptr(out), _ptr(Zp),
                                    N, m1, n1, n2, seq, H, torch.get_num_threads())
    return out, Zp


def _aplanar2(x, a, b, bias, want_zp=False):
    """Plan a_planar as one C pass (n2 == 2, m2 <= 16, float32); None when it does not apply. Returns (y, Zp)."""
    (m1, n1), (m2, n2) = a.shape, b.shape
    N = x.shape[0]
    if n2 != 2 or m1 % 16 or m2 > 16:
        return None
    tensors = [t for t in (x, a, b, bias) if t is not None]
    if _native_lib() is None or any(t.dtype != torch.float32 or t.device.type != "cpu" for t in tensors):
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
    _native_lib().kbert_aplanar2_f32(_ptr(x), _ptr(Bt), _ptr(At), _ptr(padded), _ptr(Y), _ptr(Zp), N, m1, n1, m2,
                                     torch.get_num_threads())
    return Y, Zp


def _forward(x, a, b, bias, plan, want_saved=True):
    """One Kronecker sum: x (N, n1*n2) contiguous, a (m1, n1), b (m2, n2). Returns y and the saved tensors."""
    (m1, n1), (m2, n2) = a.shape, b.shape
    N = x.shape[0]
    if plan == "b_planar":
        fused = _planar2(x, a, b, bias, want_zp=want_saved)
        if fused is not None:
            return fused[0], (fused[1],)
        Zp = _rows_to_planar(x.view(N * n1, n2), b)  # (m2, N*n1): B on every token, planar
        Yp = torch.empty(m2, N, m1, dtype=x.dtype, device=x.device)
        for i2 in range(m2):
            torch.mm(Zp[i2].view(N, n1), a.T, out=Yp[i2])  # one big GEMM per output column of B
        return _interleave(Yp, bias).view(N, m1 * m2), (Zp,)
    if plan == "b_mid":
        Z = torch.mm(x.view(N * n1, n2), b.T).view(N, n1, m2)
        return _mid(a, Z, None if bias is None else bias.view(m1, m2)).view(N, m1 * m2), (Z,)
    if plan == "a_mid":
        Z = _mid(a, x.view(N, n1, n2))  # (N, m1, n2)
        Y = torch.mm(Z.view(N * m1, n2), b.T)
        if bias is not None:
            Y.view(N, m1, m2).add_(bias.view(m1, m2))
        return Y.view(N, m1 * m2), (Z,)
    if plan == "a_planar":
        fused = _aplanar2(x, a, b, bias, want_zp=want_saved)
        if fused is not None:
            return fused[0], (None, fused[1])  # backward deinterleaves x itself
        Xp = _deinterleave(x.view(N, n1, n2))  # (n2, N, n1)
        Zp = torch.mm(Xp.view(n2 * N, n1), a.T)  # (n2*N, m1)
        Y = torch.mm(Zp.view(n2, N * m1).T, b.T)  # (N*m1, m2)
        if bias is not None:
            Y.view(N, m1, m2).add_(bias.view(m1, m2))
        return Y.view(N, m1 * m2), (Xp, Zp)
    raise ValueError(f"unknown plan {plan!r}; plans: {PLANS}")


def _backward(g, x, a, b, saved, plan, need):
    """Gradients (x, a, b, bias) of <g, y> for one Kronecker sum; ``need`` says which are wanted."""
    (m1, n1), (m2, n2) = a.shape, b.shape
    N = g.shape[0]
    gx = ga = gb = gbias = None
    if plan == "b_planar":
        (Zp,) = saved
        gYp, gbias = _deinterleave(g.view(N, m1, m2), colsum=True)  # (m2, N, m1); bias gradient on the way
        if need[1]:
            ga = gYp.view(m2 * N, m1).T @ Zp.view(m2 * N, n1)
        if need[0] or need[2]:
            gZp = torch.mm(gYp.view(m2 * N, m1), a).view(m2, N * n1)
            gx, gb = _planar_to_rows(gZp, b, x.view(N * n1, n2), need[0], need[2])
            gx = None if gx is None else gx.view(N, n1 * n2)
    elif plan == "b_mid":
        (Z,) = saved
        g3 = g.view(N, m1, m2)
        if need[1]:
            ga = _mid_grad(g3, Z)
        if need[0] or need[2]:
            gZ, gbias = _mid(a.T, g3, colsum=True)
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
                gx = _mid(a.T, gZ).view(N, n1 * n2)
            if need[1]:
                ga = _mid_grad(gZ, x.view(N, n1, n2))
    elif plan == "a_planar":
        Xp, Zp = saved
        if Xp is None and need[1]:
            Xp = _deinterleave(x.view(N, n1, n2))
        g2 = g.view(N * m1, m2)
        if need[2]:
            gb = _planar_to_rows(Zp.view(n2, N * m1), b.T, g2, False, True)[1].T  # (m2, n2)
        if need[0] or need[1]:
            gZp = _rows_to_planar(g2, b.T.contiguous())  # (n2, N*m1)
            if need[1]:
                ga = gZp.view(n2 * N, m1).T @ Xp.view(n2 * N, n1)
            if need[0]:
                gx = _interleave(torch.mm(gZp.view(n2 * N, m1), a).view(n2, N, n1)).view(N, n1 * n2)
    else:
        raise ValueError(f"unknown plan {plan!r}; plans: {PLANS}")
    return gx, ga, gb, gbias


class _KronLinearFn(torch.autograd.Function):
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


class _KronHeadsFn(torch.autograd.Function):
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
        fused = _planar2(x, As[0], Bs[0], biases[0], (heads, seq), want_zp, out[0], None if Zp is None else Zp[0])
        if fused is not None:  # one C pass per layer
            for s in range(1, S):
                _planar2(x, As[s], Bs[s], biases[s], (heads, seq), want_zp, out[s], None if Zp is None else Zp[s])
        else:
            Zp = _rows_to_planar(x.view(N * n1, n2), Bcat).view(S, m2, N * n1)  # B of every layer, one pass
            Yp = torch.empty(S, m2, N, m1, dtype=x.dtype, device=x.device)
            for s in range(S):
                torch.mm(Zp[s].view(m2 * N, n1), As[s].T, out=Yp[s].view(m2 * N, m1))
                _interleave(Yp[s], biases[s], heads=(heads, seq), out=out[s])
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
            _deinterleave(g[s], colsum=True, k=m2, heads=True, out=gYp[s], colsum_out=gbias[s])
            if need[3 + 3 * s]:
                grads[3 * s] = (gYp[s].view(m2 * N, m1).T @ Zp[s].view(m2 * N, n1)).unsqueeze(0)
            if ctx.has_bias[s] and need[3 + 3 * s + 2]:
                grads[3 * s + 2] = gbias[s]
        gx = None
        if need_x or need_b:
            gZp = torch.empty(S, m2 * N, n1, dtype=g.dtype, device=g.device)
            for s in range(S):
                torch.mm(gYp[s].view(m2 * N, m1), As[s], out=gZp[s])
            gx, gB = _planar_to_rows(gZp.view(S * m2, N * n1), Bcat, x.view(N * n1, n2), need_x, need_b)
            gx = None if gx is None else gx.view(N, n1 * n2)
            for s in range(S):
                if need[3 + 3 * s + 1]:
                    grads[3 * s + 1] = gB[s * m2:(s + 1) * m2].unsqueeze(0)
        return (gx, None, None, *grads)


# ---- autocast ------------------------------------------------------------------------
#
# Autocast does not look inside a custom autograd Function, and the passes above need one
# dtype for input, factors and bias. Under autocast the layer therefore casts its operands
# to the autocast dtype once, outside the Function (the casts are differentiable, so the
# gradients still reach the fp32 parameters), and runs the Function with autocast off. In
# bf16 the C kernels (float32/float64 only) step aside and the same layouts run as torch
# ops, whose matrix products use the CPU's bf16 instructions (or the GPU's tensor cores).


@contextlib.contextmanager
def _autocast_operands(x: torch.Tensor, params: list):
    """Yield (x, params) cast to the autocast dtype with autocast off; unchanged without autocast."""
    low = autocast_dtype(x)
    if low is None:
        yield x, params
        return
    with torch.autocast(x.device.type, enabled=False):
        yield x.to(low), [None if p is None else p.to(low) for p in params]


def kron_heads(x: torch.Tensor, layers: list, num_heads: int) -> torch.Tensor | None:
    """Several ``KroneckerLinear`` on one input (attention's Q, K, V), in attention layout.

    x (batch, seq, d) -> (len(layers), batch, num_heads, seq, d_out / num_heads), equal to
    stacking ``layer(x).view(batch, seq, H, -1).transpose(1, 2)``. The B factors of all
    layers are applied in one pass over x and the head layout is written by the same pass
    that adds the bias. Returns None when the layers cannot be fused that way (different
    shapes, a plan other than b_planar, more than one Kronecker sum): call them one by one.
    """
    # Only KroneckerLinear layers have a plan (dense nn.Linear layers are never fused).
    first = layers[0]
    if x.dim() != 3 or getattr(first, "plan", None) != "b_planar" or first.rank != 1:
        return None
    for layer in layers:
        if not hasattr(layer, "plan") or layer._forward_hooks or layer._forward_pre_hooks:
            return None
        if (layer.a_shape, layer.b_shape, layer.rank, layer.plan) != (first.a_shape, first.b_shape, 1, "b_planar"):
            return None
        if layer.plan != "b_planar" or PLAN_ORDER["b_planar"] != layer.order:
            return None
        if autocast_dtype(x) is None and (layer.A.dtype != x.dtype or layer.B.dtype != x.dtype):
            return None
    if first.out_features % num_heads or x.shape[-1] != first.in_features:
        return None
    nb, seq, _ = x.shape
    if nb * seq == 0:
        return None
    params = []
    for layer in layers:
        params += [layer.A, layer.B, layer.bias]
    with _autocast_operands(x, params) as (x, params):
        return _KronHeadsFn.apply(x.reshape(nb * seq, -1).contiguous(), num_heads, seq, *params)


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
    if order == "a_first":
        Xt = x.reshape(N, n1, n2).transpose(1, 2).reshape(N * n2, n1)
        Z = Xt @ A.reshape(r * m1, n1).T  # (N*n2, r*m1)
        Z = Z.reshape(N, n2, r, m1).permute(0, 3, 2, 1).reshape(N * m1, r * n2)
        B_cat = B.permute(1, 0, 2).reshape(m2, r * n2)
        return (Z @ B_cat.T).reshape(N, m1 * m2)
    raise ValueError(f"unknown contraction order {order!r}: use 'a_first' or 'b_first'")


def kron_linear(
    x: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    bias: torch.Tensor | None = None,
    order: str | None = None,
    plan: str | None = None,
) -> torch.Tensor:
    """y = x @ (sum_r A_r kron B_r).T + bias for x (..., n1*n2) -> (..., m1*m2).

    ``order``: Eq. 7's association order (default: the cheaper); ``plan``: the memory
    layout (default: :func:`choose_plan`; ``"generic"`` is the plain two-GEMM version).
    """
    r, m1, n1 = A.shape
    _, m2, n2 = B.shape
    if x.shape[-1] != n1 * n2:
        raise ValueError(f"input has {x.shape[-1]} features; A {tuple(A.shape[1:])} kron B {tuple(B.shape[1:])} needs {n1 * n2}")
    if order is None:
        costs = _eq7((m1, n1), (m2, n2))
        order = min(costs, key=costs.get)
    plan = plan or choose_plan((m1, n1), (m2, n2), r, order)
    if plan not in PLANS:
        raise ValueError(f"unknown plan {plan!r}; plans: {PLANS}")
    if plan != "generic" and r != 1:
        raise ValueError(f"plan {plan!r} handles one Kronecker sum; this layer has {r}: use 'generic'")
    lead = x.shape[:-1]
    with _autocast_operands(x, [A, B, bias]) as (x, (A, B, bias)):
        x2 = x.reshape(-1, n1 * n2)
        if plan == "generic" or x2.shape[0] == 0:
            y = _generic_matmul(x2, A, B, order)
            y = y if bias is None else y + bias
        else:
            y = _KronLinearFn.apply(x2.contiguous(), A, B, bias, plan)
    return y.reshape(*lead, m1 * m2)


def kron_matmul(x: torch.Tensor, A: torch.Tensor, B: torch.Tensor, order: str, plan: str | None = None) -> torch.Tensor:
    """y = x @ (sum_r A_r kron B_r).T without materialising the Kronecker product.

    x: (N, n1*n2), A: (r, m1, n1), B: (r, m2, n2)  ->  y: (N, m1*m2). ``order`` is the
    association order of Eq. 7 ('a_first' or 'b_first'); ``plan`` is the memory layout
    (default: :func:`choose_plan` for that order; see the comment above).
    """
    if order not in ("a_first", "b_first"):
        raise ValueError(f"unknown contraction order {order!r}: use 'a_first' or 'b_first'")
    if plan is not None and plan != "generic" and PLAN_ORDER.get(plan, order) != order:
        raise ValueError(f"plan {plan!r} applies {PLAN_ORDER[plan]}, not {order}")
    return kron_linear(x, A, B, None, order, plan)
