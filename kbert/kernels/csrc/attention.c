/* Attention's two batched products (dense and Kronecker models, inference only): Q K^T with the scale and
   the additive mask fused, and P V written straight into the (batch, seq, heads*dh) layout that the output
   projection reads. kbert/kernels/attention.py. */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>
#include "simd.h"

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
