// One fused AdamW update over many tensors: blockIdx.y picks an entry of a device
// table, grid.x strides over that tensor. The arithmetic is the host optimiser's
// (src/train/optim.rs), in double with explicitly rounded operations so that no
// multiply-add is contracted and results match it bit for bit.

struct AdamWSlot {
    u64 param;  // float*
    u64 grad;   // const float*
    u64 m;      // float*
    u64 v;      // float*
    u64 len;
    double step_size;   // lr / (1 − beta1^t)
    double bias2_sqrt;  // √(1 − beta2^t)
};

extern "C" __global__ void adamw_multi(const AdamWSlot* slots, double beta1, double beta2, double eps,
                                       double decay) {
    AdamWSlot s = slots[blockIdx.y];
    float* p = (float*)s.param;
    const float* g = (const float*)s.grad;
    float* m = (float*)s.m;
    float* v = (float*)s.v;
    i64 n = (i64)s.len;
    double one_minus_b1 = __dsub_rn(1.0, beta1);
    double one_minus_b2 = __dsub_rn(1.0, beta2);
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64)blockDim.x * gridDim.x) {
        double gd = (double)g[i];
        double m_new = __dadd_rn(__dmul_rn(beta1, (double)m[i]), __dmul_rn(one_minus_b1, gd));
        double v_new = __dadd_rn(__dmul_rn(beta2, (double)v[i]), __dmul_rn(__dmul_rn(one_minus_b2, gd), gd));
        float mf = __double2float_rn(m_new);
        float vf = __double2float_rn(v_new);
        m[i] = mf;
        v[i] = vf;
        double denom = __dadd_rn(__ddiv_rn(__dsqrt_rn((double)vf), s.bias2_sqrt), eps);
        double decayed = __dmul_rn((double)p[i], decay);
        double update = __ddiv_rn(__dmul_rn(s.step_size, (double)mf), denom);
        p[i] = __double2float_rn(__dsub_rn(decayed, update));
    }
}
