// The fused loss: softmax cross-entropy of logits [n, k] against integer labels
// (already checked and widened to i64 by the backend), targets smoothed to
// t = (1 − eps)·onehot + eps/k, averaged over the `counted` rows with a label; and
// its gradient dloss·(softmax − t)/counted. A negative label marks a row without a
// target: loss and gradient 0. One block per row; per-row losses in double.

// row_loss[r] = log Σ exp(z − max) − (1 − eps)·(z_label − max) − eps·mean(z − max).
// A label past k gives NaN.
extern "C" __global__ void xent_rows(double* row_loss, const float* z, const i64* labels, i64 n, i64 k,
                                     double eps) {
    for (i64 r = blockIdx.x; r < n; r += gridDim.x) {
        const float* zr = z + r * k;
        float m = -gl_inf();
        for (i64 j = threadIdx.x; j < k; j += blockDim.x) m = gl_nanmax(m, zr[j]);
        m = gl_block_max(m);
        float total = 0.0f;
        double shifted = 0.0;
        for (i64 j = threadIdx.x; j < k; j += blockDim.x) {
            float s = zr[j] - m;
            total += expf(s);
            shifted += (double)s;
        }
        total = gl_block_sum(total);
        shifted = gl_block_sum_d(shifted);
        if (threadIdx.x == 0) {
            i64 label = labels[r];
            if (label < 0) {
                row_loss[r] = 0.0;
            } else if (label >= k) {
                row_loss[r] = gl_nan_d();
            } else {
                double log_sum = log((double)total);
                double mean_shifted = shifted / (double)k;
                row_loss[r] = log_sum - (1.0 - eps) * (double)(zr[label] - m) - eps * mean_shifted;
            }
        }
    }
}

// out[0] = (Σ row_loss) / counted. One block.
extern "C" __global__ void xent_mean(float* out, const double* row_loss, i64 n, i64 counted) {
    double s = 0.0;
    for (i64 r = threadIdx.x; r < n; r += blockDim.x) s += row_loss[r];
    s = gl_block_sum_d(s);
    if (threadIdx.x == 0) out[0] = (float)(s / (double)counted);
}

// dz = scale·(softmax(z) − t) with scale = dloss/counted read from the device.
extern "C" __global__ void xent_grad_rows(float* dz, const float* z, const i64* labels, const float* dloss,
                                          i64 n, i64 counted, i64 k, float eps) {
    float scale = (float)((double)dloss[0] / (double)counted);
    for (i64 r = blockIdx.x; r < n; r += gridDim.x) {
        const float* zr = z + r * k;
        float m = -gl_inf();
        for (i64 j = threadIdx.x; j < k; j += blockDim.x) m = gl_nanmax(m, zr[j]);
        m = gl_block_max(m);
        float total = 0.0f;
        for (i64 j = threadIdx.x; j < k; j += blockDim.x) total += expf(zr[j] - m);
        total = gl_block_sum(total);
        float p_scale = scale / total;
        float off = scale * eps / (float)k;
        i64 label = labels[r];
        bool valid = label < k;
        for (i64 j = threadIdx.x; j < k; j += blockDim.x) {
            float v = expf(zr[j] - m) * p_scale - off;
            if (j == label) v -= scale * (1.0f - eps);
            dz[r * k + j] = label < 0 ? 0.0f : valid ? v : gl_nan();
        }
    }
}
