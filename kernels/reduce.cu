// Reductions over contiguous rows and down the columns of row-major matrices, and a
// scan for non-finite values. The backend moves reduced axes last before a row
// reduction; column sums serve the parameter gradients (bias terms of GLoRA
// layers), summed in double over fixed chunks of rows so results do not depend on
// timing.

// op: 0 sum, 1 mean, 2 max (NaN propagates). An empty row gives 0, NaN and -inf.
extern "C" __global__ void reduce_rows_f32(float* out, const float* x, i64 rows, i64 len, int op) {
    for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
        const float* row = x + r * len;
        if (op == 2) {
            float m = -gl_inf();
            for (i64 j = threadIdx.x; j < len; j += blockDim.x) m = gl_nanmax(m, row[j]);
            m = gl_block_max(m);
            if (threadIdx.x == 0) out[r] = m;
        } else {
            float s = 0.0f;
            for (i64 j = threadIdx.x; j < len; j += blockDim.x) s += row[j];
            s = gl_block_sum(s);
            if (threadIdx.x == 0) out[r] = op == 1 ? s / (float)len : s;
        }
    }
}

// Row sums in double.
extern "C" __global__ void row_sums_f64(double* out, const float* x, i64 rows, i64 len) {
    for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
        const float* row = x + r * len;
        double s = 0.0;
        for (i64 j = threadIdx.x; j < len; j += blockDim.x) s += (double)row[j];
        s = gl_block_sum_d(s);
        if (threadIdx.x == 0) out[r] = s;
    }
}

// part[chunk, c] = Σ of x[r, c] over the rows of chunk `blockIdx.y`; grid.x covers
// the columns.
extern "C" __global__ void col_sum_partials(double* part, const float* x, i64 rows, i64 cols,
                                            i64 rows_per_chunk) {
    i64 c = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    i64 chunk = blockIdx.y;
    if (c >= cols) return;
    i64 r0 = chunk * rows_per_chunk;
    i64 r1 = r0 + rows_per_chunk < rows ? r0 + rows_per_chunk : rows;
    double s = 0.0;
    for (i64 r = r0; r < r1; ++r) s += (double)x[r * cols + c];
    part[chunk * cols + c] = s;
}

// out[c] = Σ_chunk part[chunk, c], chunks in order.
extern "C" __global__ void sum_partials(double* out, const double* part, i64 chunks, i64 cols) {
    GL_FOR(c, cols) {
        double s = 0.0;
        for (i64 k = 0; k < chunks; ++k) s += part[k * cols + c];
        out[c] = s;
    }
}

extern "C" __global__ void f64_to_f32(float* out, const double* x, i64 n) {
    GL_FOR(i, n) { out[i] = (float)x[i]; }
}

// result[0] = the smallest index of a non-finite element of x (left unchanged
// when there is none; the caller fills it with all ones first).
extern "C" __global__ void first_non_finite(u64* result, const float* x, i64 n) {
    GL_FOR(i, n) {
        float a = x[i];
        if (a != a || a == gl_inf() || a == -gl_inf()) atomicMin(result, (u64)i);
    }
}
