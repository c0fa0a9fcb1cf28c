/* The one-pass float32 kernels of plans b_planar (m2 == 2) and a_planar (n2 == 2): kbert/kernels/passes.py. */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>
#include "simd.h"

#define KB_TB 6

/* 1 when this library was compiled with 512-bit vectors (AVX-512). The kernels of this file and
   of attention.c keep arrays of v16 accumulators that then live in registers; without AVX-512
   GCC splits every v16 in two and keeps those arrays on the stack, and the kernels ran 4-30x
   slower than torch's own ops (AVX2-only EPYC, one thread). kbert/kernels/native.py hands
   them out only where this returns 1. */
int kbert_wide_vectors(void) {
#if defined(__AVX512F__)
    return 1;
#else
    return 0;
#endif
}

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
