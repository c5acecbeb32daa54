// Row kernels of Softmax and LayerNormalization and their backward, one block per
// row of `len` contiguous elements (the backend moves a softmax axis last first).
// LayerNorm statistics are computed in two passes (mean, then the mean squared
// deviation), as the CPU backend does. The parameter gradients of LayerNorm are
// column sums in double over fixed chunks of rows.

// out = exp(x − max x) / Σ exp(x − max x)
extern "C" __global__ void softmax_rows_f32(float* out, const float* x, i64 rows, i64 len) {
    for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
        const float* xr = x + r * len;
        float* yr = out + r * len;
        float m = -gl_inf();
        for (i64 j = threadIdx.x; j < len; j += blockDim.x) m = gl_nanmax(m, xr[j]);
        m = gl_block_max(m);
        float s = 0.0f;
        for (i64 j = threadIdx.x; j < len; j += blockDim.x) {
            float e = expf(xr[j] - m);
            yr[j] = e;
            s += e;
        }
        s = gl_block_sum(s);
        float inv = 1.0f / s;
        for (i64 j = threadIdx.x; j < len; j += blockDim.x) yr[j] *= inv;
    }
}

// dx = y·(dy − Σ dy·y)
extern "C" __global__ void softmax_grad_rows_f32(float* dx, const float* y, const float* dy, i64 rows,
                                                 i64 len) {
    for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
        const float* yr = y + r * len;
        const float* gr = dy + r * len;
        float s = 0.0f;
        for (i64 j = threadIdx.x; j < len; j += blockDim.x) s += yr[j] * gr[j];
        s = gl_block_sum(s);
        for (i64 j = threadIdx.x; j < len; j += blockDim.x) dx[r * len + j] = yr[j] * (gr[j] - s);
    }
}

// Mean and 1/√(variance + eps) of one row; every thread of the block gets them.
__device__ void gl_row_stats(const float* xr, i64 len, float eps, float* mean_out, float* inv_out) {
    float s = 0.0f;
    for (i64 j = threadIdx.x; j < len; j += blockDim.x) s += xr[j];
    float mean = gl_block_sum(s) / (float)len;
    float q = 0.0f;
    for (i64 j = threadIdx.x; j < len; j += blockDim.x) {
        float d = xr[j] - mean;
        q += d * d;
    }
    float var = gl_block_sum(q) / (float)len;
    *mean_out = mean;
    *inv_out = 1.0f / sqrtf(var + eps);
}

// y = (x − mean)·inv·gamma + beta; gamma and beta hold `len` values. With
// write_stats, mean[r] and inv_std[r] are written too.
extern "C" __global__ void layer_norm_rows_f32(float* y, float* mean_out, float* inv_out, const float* x,
                                               const float* gamma, const float* beta, i64 rows, i64 len,
                                               float eps, int has_beta, int write_stats) {
    for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
        const float* xr = x + r * len;
        float mean, inv;
        gl_row_stats(xr, len, eps, &mean, &inv);
        for (i64 j = threadIdx.x; j < len; j += blockDim.x) {
            float v = (xr[j] - mean) * inv * gamma[j];
            y[r * len + j] = has_beta ? v + beta[j] : v;
        }
        if (write_stats && threadIdx.x == 0) {
            mean_out[r] = mean;
            inv_out[r] = inv;
        }
    }
}

// With x̂ = (x − mean)·inv and g = dy·gamma: dx = inv·(g − mean(g) − x̂·mean(g·x̂)).
// Writes each row's mean and inv for the parameter gradients.
extern "C" __global__ void layer_norm_grad_rows_f32(float* dx, float* mean_out, float* inv_out,
                                                    const float* x, const float* dy, const float* gamma,
                                                    i64 rows, i64 len, float eps) {
    for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
        const float* xr = x + r * len;
        const float* gr = dy + r * len;
        float mean, inv;
        gl_row_stats(xr, len, eps, &mean, &inv);
        float sg = 0.0f;
        float sgx = 0.0f;
        for (i64 j = threadIdx.x; j < len; j += blockDim.x) {
            float g = gr[j] * gamma[j];
            sg += g;
            sgx += g * (xr[j] - mean);
        }
        float g_mean = gl_block_sum(sg) / (float)len;
        float gx_mean = gl_block_sum(sgx) * inv / (float)len;
        for (i64 j = threadIdx.x; j < len; j += blockDim.x) {
            float g = gr[j] * gamma[j];
            float xhat = (xr[j] - mean) * inv;
            dx[r * len + j] = inv * (g - g_mean - xhat * gx_mean);
        }
        if (threadIdx.x == 0) {
            mean_out[r] = mean;
            inv_out[r] = inv;
        }
    }
}

// Per chunk of rows (blockIdx.y) and column c: Σ dy·x̂ into pg and Σ dy into pb.
extern "C" __global__ void layer_norm_param_partials(double* pg, double* pb, const float* x,
                                                     const float* dy, const float* mean,
                                                     const float* inv, i64 rows, i64 cols,
                                                     i64 rows_per_chunk) {
    i64 c = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    i64 chunk = blockIdx.y;
    if (c >= cols) return;
    i64 r0 = chunk * rows_per_chunk;
    i64 r1 = r0 + rows_per_chunk < rows ? r0 + rows_per_chunk : rows;
    double sg = 0.0;
    double sb = 0.0;
    for (i64 r = r0; r < r1; ++r) {
        float g = dy[r * cols + c];
        float xhat = (x[r * cols + c] - mean[r]) * inv[r];
        sg += (double)(g * xhat);
        sb += (double)g;
    }
    pg[chunk * cols + c] = sg;
    pb[chunk * cols + c] = sb;
}
