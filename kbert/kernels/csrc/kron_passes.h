/* The memory-bound passes of the Kronecker layouts (kbert/kernels/passes.py), written once for an
   element type T with accumulator ACC; kron_passes.c instantiates them as KB(name) = name_f32 and
   name_f64. No include guard: included once per type. */
/* Y[n,i,l] = bias[i,l] + sum_j M[i,j] X[n,j,l] (bias may be NULL); colsum[j,l] = sum_n X[n,j,l] if given. */
void KB(kbert_mid)(const T *M, const T *X, const T *bias, T *Y, T *colsum, long N, long p, long q, long L, int nt) {
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
void KB(kbert_rows_to_planar)(const T *X, const T *b, T *P, long R, long n, long k, int nt) {
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
void KB(kbert_planar_to_rows)(const T *G, const T *b, const T *X, T *GX, T *GB, long R, long k, long n, int nt) {
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
void KB(kbert_interleave)(const T *P, const T *bias, T *Y, long N, long m, long k, long seq, long H, int nt) {
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
void KB(kbert_deinterleave)(const T *Y, T *P, T *colsum, long N, long m, long k, long seq, long H, int nt) {
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
