/* kron_passes.h for float32 (kbert_*_f32) and float64 (kbert_*_f64); sums accumulate in double. */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>

#define KB_CAT2(name, suffix) name##_##suffix
#define KB_CAT(name, suffix) KB_CAT2(name, suffix)
#define KB(name) KB_CAT(name, KB_SUF)

#define T float
#define ACC double
#define KB_SUF f32
#include "kron_passes.h"
#undef T
#undef ACC
#undef KB_SUF

#define T double
#define ACC double
#define KB_SUF f64
#include "kron_passes.h"
#undef T
#undef ACC
#undef KB_SUF
