// Elementwise f32 kernels: binary ops with broadcasting (strides 0 on broadcast
// axes), the unary functions, Clip, GELU, the derivative rules of the unary
// functions, Where (any element size), casts between f32 and the integer and bool
// storage types, and fills. Semantics follow the CPU backend's elementwise.rs,
// norm.rs (GELU) and grad/unary.rs.

#define GL_SQRT1_2 0.70710678118654752f
#define GL_TWO_OVER_SQRT_PI 1.1283791670955126f
#define GL_INV_SQRT_2PI 0.3989422804014327f
#define GL_SQRT_2_OVER_PI 0.7978845608028654f
#define GL_GELU_CUBIC 0.044715f

// x^y as the CPU computes it: the common exponents exactly, the rest in double.
__device__ __forceinline__ float gl_pow(float x, float y) {
    if (y == 2.0f) return x * x;
    if (y == 1.0f) return x;
    if (y == 0.5f) return sqrtf(x);
    return (float)pow((double)x, (double)y);
}

__device__ __forceinline__ float gl_binary(int op, float x, float y) {
    switch (op) {
        case 0: return x + y;
        case 1: return x - y;
        case 2: return x * y;
        case 3: return x / y;
        default: return gl_pow(x, y);
    }
}

// op: 0 add, 1 sub, 2 mul, 3 div, 4 pow. `a` and `b` are read through their
// broadcast strides over the output's `dims`.
extern "C" __global__ void binary_f32(float* out, const float* a, const float* b, i64 n, int rank,
                                      Dims dims, Dims a_strides, Dims b_strides, int op) {
    GL_FOR(i, n) {
        float x = a[gl_offset(i, rank, dims, a_strides)];
        float y = b[gl_offset(i, rank, dims, b_strides)];
        out[i] = gl_binary(op, x, y);
    }
}

// The same for two contiguous operands of the output's shape.
extern "C" __global__ void binary_same_f32(float* out, const float* a, const float* b, i64 n, int op) {
    GL_FOR(i, n) { out[i] = gl_binary(op, a[i], b[i]); }
}

// op: 0 sqrt, 1 reciprocal, 2 neg, 3 abs, 4 exp, 5 log, 6 erf, 7 tanh, 8 relu, 9 sigmoid,
// 10 sin, 11 cos.
extern "C" __global__ void unary_f32(float* out, const float* x, i64 n, int op) {
    GL_FOR(i, n) {
        float a = x[i];
        float r;
        switch (op) {
            case 0: r = sqrtf(a); break;
            case 1: r = 1.0f / a; break;
            case 2: r = -a; break;
            case 3: r = fabsf(a); break;
            case 4: r = expf(a); break;
            case 5: r = logf(a); break;
            case 6: r = erff(a); break;
            case 7: r = tanhf(a); break;
            case 8: r = a < 0.0f ? 0.0f : a; break;
            case 10: r = sinf(a); break;
            case 11: r = cosf(a); break;
            default: r = 1.0f / (1.0f + expf(-a)); break;
        }
        out[i] = r;
    }
}

// min(max(a, lo), hi) keeping NaN, as numpy's clip.
extern "C" __global__ void clip_f32(float* out, const float* x, i64 n, float lo, float hi) {
    GL_FOR(i, n) {
        float a = x[i];
        a = a < lo ? lo : a;
        out[i] = a > hi ? hi : a;
    }
}

__device__ __forceinline__ float gl_gelu_erf(float x) { return 0.5f * x * (1.0f + erff(x * GL_SQRT1_2)); }

// 1 + tanh(u) = 2 / (1 + e^{-2u}), which has no cancellation.
__device__ __forceinline__ float gl_gelu_tanh(float x) {
    float u = GL_SQRT_2_OVER_PI * (x + GL_GELU_CUBIC * x * x * x);
    return x / (1.0f + expf(-2.0f * u));
}

// approx: 0 exact (erf), 1 tanh.
extern "C" __global__ void gelu_f32(float* out, const float* x, i64 n, int approx) {
    GL_FOR(i, n) { out[i] = approx == 0 ? gl_gelu_erf(x[i]) : gl_gelu_tanh(x[i]); }
}

__device__ __forceinline__ float gl_gelu_tanh_slope(float x) {
    float x2 = x * x;
    float u = GL_SQRT_2_OVER_PI * (x + GL_GELU_CUBIC * x2 * x);
    float du = GL_SQRT_2_OVER_PI * (1.0f + 3.0f * GL_GELU_CUBIC * x2);
    float s = 1.0f / (1.0f + expf(-2.0f * u));
    return s + 2.0f * x * s * (1.0f - s) * du;
}

// dx = f'(x)·dy. kind: 0 sqrt, 1 reciprocal, 2 exp, 3 log, 4 abs, 5 erf, 6 tanh,
// 7 relu, 8 sigmoid, 9 gelu (erf), 10 gelu (tanh). Each rule reads the cheaper of
// the forward input x and output y.
extern "C" __global__ void unary_grad_f32(float* dx, const float* x, const float* y, const float* dy,
                                          i64 n, int kind) {
    GL_FOR(i, n) {
        float g = dy[i];
        float r;
        switch (kind) {
            case 0: r = g / (2.0f * y[i]); break;
            case 1: r = -g * y[i] * y[i]; break;
            case 2: r = g * y[i]; break;
            case 3: r = g / x[i]; break;
            case 4: {
                float a = x[i];
                r = a > 0.0f ? g : (a < 0.0f ? -g : 0.0f * a);
                break;
            }
            case 5: r = g * GL_TWO_OVER_SQRT_PI * expf(-x[i] * x[i]); break;
            case 6: r = g * (1.0f - y[i] * y[i]); break;
            case 7: r = x[i] > 0.0f ? g : 0.0f; break;
            case 8: r = g * y[i] * (1.0f - y[i]); break;
            case 9: {
                float a = x[i];
                float pdf_part = g * a * GL_INV_SQRT_2PI * expf(-0.5f * a * a);
                float cdf_part = g * (0.5f * (1.0f + erff(a * GL_SQRT1_2)));
                r = pdf_part + cdf_part;
                break;
            }
            default: r = g * gl_gelu_tanh_slope(x[i]); break;
        }
        dx[i] = r;
    }
}

template <typename T>
__device__ void gl_where(T* out, const unsigned char* cond, const T* a, const T* b, i64 n, int rank,
                         const Dims& dims, const Dims& c_strides, const Dims& a_strides,
                         const Dims& b_strides) {
    GL_FOR(i, n) {
        bool c = cond[gl_offset(i, rank, dims, c_strides)] != 0;
        out[i] = c ? a[gl_offset(i, rank, dims, a_strides)] : b[gl_offset(i, rank, dims, b_strides)];
    }
}

extern "C" __global__ void where_1(unsigned char* out, const unsigned char* cond, const unsigned char* a,
                                   const unsigned char* b, i64 n, int rank, Dims dims, Dims c_strides,
                                   Dims a_strides, Dims b_strides) {
    gl_where(out, cond, a, b, n, rank, dims, c_strides, a_strides, b_strides);
}

extern "C" __global__ void where_2(unsigned short* out, const unsigned char* cond, const unsigned short* a,
                                   const unsigned short* b, i64 n, int rank, Dims dims, Dims c_strides,
                                   Dims a_strides, Dims b_strides) {
    gl_where(out, cond, a, b, n, rank, dims, c_strides, a_strides, b_strides);
}

extern "C" __global__ void where_4(unsigned int* out, const unsigned char* cond, const unsigned int* a,
                                   const unsigned int* b, i64 n, int rank, Dims dims, Dims c_strides,
                                   Dims a_strides, Dims b_strides) {
    gl_where(out, cond, a, b, n, rank, dims, c_strides, a_strides, b_strides);
}

extern "C" __global__ void where_8(u64* out, const unsigned char* cond, const u64* a, const u64* b, i64 n,
                                   int rank, Dims dims, Dims c_strides, Dims a_strides, Dims b_strides) {
    gl_where(out, cond, a, b, n, rank, dims, c_strides, a_strides, b_strides);
}

// Float to integer conversions truncate towards zero, saturate at the type's range
// and turn NaN into 0, as Rust's `as` does.
__device__ __forceinline__ i64 gl_f32_to_i64(float a) {
    if (a != a) return 0;
    if (a >= 9.2233720e18f) return 0x7fffffffffffffffLL;
    if (a <= -9.2233720e18f) return (i64)(-0x7fffffffffffffffLL - 1);
    return (i64)a;
}

__device__ __forceinline__ int gl_f32_to_i32(float a) {
    if (a != a) return 0;
    if (a >= 2147483647.0f) return 2147483647;
    if (a <= -2147483648.0f) return (int)(-2147483647 - 1);
    return (int)a;
}

extern "C" __global__ void cast_f32_to_i64(i64* out, const float* x, i64 n) {
    GL_FOR(i, n) { out[i] = gl_f32_to_i64(x[i]); }
}

extern "C" __global__ void cast_f32_to_i32(int* out, const float* x, i64 n) {
    GL_FOR(i, n) { out[i] = gl_f32_to_i32(x[i]); }
}

extern "C" __global__ void cast_f32_to_bool(unsigned char* out, const float* x, i64 n) {
    GL_FOR(i, n) { out[i] = x[i] != 0.0f ? 1 : 0; }
}

extern "C" __global__ void cast_i64_to_f32(float* out, const i64* x, i64 n) {
    GL_FOR(i, n) { out[i] = (float)x[i]; }
}

extern "C" __global__ void cast_i32_to_f32(float* out, const int* x, i64 n) {
    GL_FOR(i, n) { out[i] = (float)x[i]; }
}

extern "C" __global__ void cast_bool_to_f32(float* out, const unsigned char* x, i64 n) {
    GL_FOR(i, n) { out[i] = x[i] != 0 ? 1.0f : 0.0f; }
}

extern "C" __global__ void fill_f32(float* out, i64 n, float value) {
    GL_FOR(i, n) { out[i] = value; }
}

extern "C" __global__ void scale_f32(float* out, i64 n, float factor) {
    GL_FOR(i, n) { out[i] *= factor; }
}
