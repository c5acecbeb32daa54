// GLoRA layer kernels (forward and backward). The adapter tensors are row-major:
// Ad, Bd [d_out, rank], Au, Bu [rank, d_in], Cd [d_in, rank], Cu [rank, 1],
// D, E [d_out]. W0 is [d_out, d_in] (in_out = 0) or [d_in, d_out] (in_out = 1);
// element (i, j) is output i, input j.
//
// Option codes. A and B: 0 none, 1 LoRA of rank r, 2 vector (first column of the
// down factor), 3 constant (its [0, 0] element). C: 0 none, 1 LoRA of rank r,
// 2 vector. D and E: 0 none, 1 vector, 2 constant.

__device__ __forceinline__ float gl_ab_term(int mode, int r, const float* down, const float* up, i64 i,
                                            i64 j, i64 rank, i64 d_in) {
    if (mode == 1) {
        float s = 0.0f;
        for (int k = 0; k < r; ++k) s += down[i * rank + k] * up[(i64)k * d_in + j];
        return s;
    }
    if (mode == 2) return down[i * rank];
    if (mode == 3) return down[0];
    return 0.0f;
}

__device__ __forceinline__ float gl_c_term(int mode, int r, const float* cd, const float* cu, i64 j,
                                           i64 rank) {
    if (mode == 1) {
        float s = 0.0f;
        for (int k = 0; k < r; ++k) s += cd[j * rank + k] * cu[k];
        return s;
    }
    if (mode == 2) return cd[j * rank];
    return 0.0f;
}

__device__ __forceinline__ float gl_de_term(int mode, const float* v, i64 i) {
    return mode == 1 ? v[i] : v[0];
}

// W' = W0 + W0⊙A + B in W0's stored layout, in one pass.
extern "C" __global__ void glora_weight(float* w, const float* w0, const float* ad, const float* au,
                                        const float* bd, const float* bu, i64 d_out, i64 d_in, i64 rank,
                                        int in_out, int a_mode, int a_r, int b_mode, int b_r) {
    i64 n = d_out * d_in;
    GL_FOR(e, n) {
        i64 i, j;
        if (in_out) {
            j = e / d_out;
            i = e % d_out;
        } else {
            i = e / d_in;
            j = e % d_in;
        }
        float base = w0[e];
        float a = gl_ab_term(a_mode, a_r, ad, au, i, j, rank, d_in);
        float b = gl_ab_term(b_mode, b_r, bd, bu, i, j, rank, d_in);
        w[e] = base + base * a + b;
    }
}

// bias[i] = b0[i] + b0[i]·D_i + E_i + Σ_j W0[i, j]·c_j, one warp per output. Without
// a base bias, D is skipped and the sum starts from 0.
extern "C" __global__ void glora_bias(float* bias, const float* w0, const float* b0, const float* cd,
                                      const float* cu, const float* dvec, const float* evec, i64 d_out,
                                      i64 d_in, i64 rank, int in_out, int has_b0, int c_mode, int c_r,
                                      int d_mode, int e_mode) {
    int lane = threadIdx.x & 31;
    i64 warp = ((i64)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    i64 warps = ((i64)blockDim.x * gridDim.x) >> 5;
    for (i64 i = warp; i < d_out; i += warps) {
        float p = 0.0f;
        if (c_mode != 0) {
            float s = 0.0f;
            for (i64 j = lane; j < d_in; j += 32) {
                float wv = in_out ? w0[j * d_out + i] : w0[i * d_in + j];
                s += wv * gl_c_term(c_mode, c_r, cd, cu, j, rank);
            }
            p = gl_warp_sum(s);
        }
        if (lane == 0) {
            float b = has_b0 ? b0[i] : 0.0f;
            if (has_b0 && d_mode != 0) b += b0[i] * gl_de_term(d_mode, dvec, i);
            if (e_mode != 0) b += gl_de_term(e_mode, evec, i);
            if (c_mode != 0) b += p;
            bias[i] = b;
        }
    }
}

// m[i, j] = g[i, j]·W0(i, j): g is [d_out, d_in]; W0 in its stored layout.
extern "C" __global__ void glora_mask(float* m, const float* g, const float* w0, i64 d_out, i64 d_in,
                                      int in_out) {
    i64 n = d_out * d_in;
    GL_FOR(e, n) {
        i64 i = e / d_in;
        i64 j = e % d_in;
        float wv = in_out ? w0[j * d_out + i] : w0[e];
        m[e] = g[e] * wv;
    }
}

// The gradient of a vector option (column 0 of a down factor with row stride
// `rank`, mode 2) or of a constant (element [0, 0], the total, mode 3) from
// per-output sums. One block.
extern "C" __global__ void glora_write_vc(float* dst, const double* sums, i64 d_out, i64 rank, int mode) {
    if (mode == 2) {
        for (i64 i = threadIdx.x; i < d_out; i += blockDim.x) dst[i * rank] = (float)sums[i];
    } else {
        double s = 0.0;
        for (i64 i = threadIdx.x; i < d_out; i += blockDim.x) s += sums[i];
        s = gl_block_sum_d(s);
        if (threadIdx.x == 0) dst[0] = (float)s;
    }
}

// dE = db (vector) or Σ db (constant); dD = db⊙b0 or its sum, when the layer has a
// base bias. One block.
extern "C" __global__ void glora_de_grads(float* dd, float* de, const double* db, const float* b0,
                                          i64 d_out, int has_b0, int d_mode, int e_mode) {
    if (e_mode == 1) {
        for (i64 i = threadIdx.x; i < d_out; i += blockDim.x) de[i] = (float)db[i];
    } else if (e_mode == 2) {
        double s = 0.0;
        for (i64 i = threadIdx.x; i < d_out; i += blockDim.x) s += db[i];
        s = gl_block_sum_d(s);
        if (threadIdx.x == 0) de[0] = (float)s;
    }
    if (has_b0 && d_mode == 1) {
        for (i64 i = threadIdx.x; i < d_out; i += blockDim.x) dd[i] = (float)(db[i] * (double)b0[i]);
    } else if (has_b0 && d_mode == 2) {
        double s = 0.0;
        for (i64 i = threadIdx.x; i < d_out; i += blockDim.x) s += db[i] * (double)b0[i];
        s = gl_block_sum_d(s);
        if (threadIdx.x == 0) dd[0] = (float)s;
    }
}

// dc[j] = Σ_i W0(i, j)·db[i], one warp per input j.
extern "C" __global__ void glora_prompt_grad(double* dc, const float* w0, const double* db, i64 d_out,
                                             i64 d_in, int in_out) {
    int lane = threadIdx.x & 31;
    i64 warp = ((i64)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    i64 warps = ((i64)blockDim.x * gridDim.x) >> 5;
    for (i64 j = warp; j < d_in; j += warps) {
        double s = 0.0;
        for (i64 i = lane; i < d_out; i += 32) {
            float wv = in_out ? w0[j * d_out + i] : w0[i * d_in + j];
            s += (double)wv * db[i];
        }
        s = gl_warp_sum_d(s);
        if (lane == 0) dc[j] = s;
    }
}

// C LoRA of rank r: dCd[j, k] = dc[j]·Cu[k] and dCu[k] = Σ_j Cd[j, k]·dc[j] for k < r;
// C vector: dCd[j, 0] = dc[j]. One block.
extern "C" __global__ void glora_c_grads(float* dcd, float* dcu, const double* dc, const float* cd,
                                         const float* cu, i64 d_in, i64 rank, int c_mode, int c_r) {
    if (c_mode == 2) {
        for (i64 j = threadIdx.x; j < d_in; j += blockDim.x) dcd[j * rank] = (float)dc[j];
        return;
    }
    if (c_mode != 1) return;
    for (i64 j = threadIdx.x; j < d_in; j += blockDim.x) {
        for (int k = 0; k < c_r; ++k) dcd[j * rank + k] = (float)(dc[j] * (double)cu[k]);
    }
    for (int k = 0; k < c_r; ++k) {
        double s = 0.0;
        for (i64 j = threadIdx.x; j < d_in; j += blockDim.x) s += (double)cd[j * rank + k] * dc[j];
        s = gl_block_sum_d(s);
        if (threadIdx.x == 0) dcu[k] = (float)s;
    }
}
