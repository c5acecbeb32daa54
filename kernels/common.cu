// Helpers shared by every kernel file. The GPU backend prepends this file to each
// kernel source before NVRTC compiles it, so it holds device functions only.
//
// Conventions of all kernels:
// - sizes, offsets and indices are 64-bit (`i64`), modes and ranks are `int`;
// - tensors are row-major; a strided read or write walks the output (or input)
//   index space in row-major order and maps each flat index through `Dims`
//   strides given in elements;
// - one-dimensional kernels use grid-stride loops, so any grid size is correct;
// - row kernels use one block of GL_BLOCK threads per row (grid-stride over rows).

#define GL_MAX_RANK 8
#define GL_BLOCK 256

typedef long long i64;
typedef unsigned long long u64;

// Sizes or strides of up to GL_MAX_RANK axes, passed by value.
struct Dims {
    i64 v[GL_MAX_RANK];
};

#define GL_FOR(i, n)                                                        \
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < (n);      \
         i += (i64)blockDim.x * gridDim.x)

__device__ __forceinline__ float gl_inf() { return __int_as_float(0x7f800000); }
__device__ __forceinline__ float gl_nan() { return __int_as_float(0x7fffffff); }
__device__ __forceinline__ double gl_nan_d() { return __longlong_as_double(0x7ff8000000000000LL); }

// Offset of row-major flat index `i` of a `rank`-axis index space of sizes `dims`
// in a buffer read through `strides`.
__device__ __forceinline__ i64 gl_offset(i64 i, int rank, const Dims& dims, const Dims& strides) {
    i64 off = 0;
    for (int d = rank - 1; d >= 0; --d) {
        i64 n = dims.v[d];
        off += (i % n) * strides.v[d];
        i /= n;
    }
    return off;
}

// The maximum that propagates NaN.
__device__ __forceinline__ float gl_nanmax(float a, float b) {
    if (a != a) return a;
    if (b != b) return b;
    return a > b ? a : b;
}

__device__ __forceinline__ float gl_warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ double gl_warp_sum_d(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float gl_warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = gl_nanmax(v, __shfl_down_sync(0xffffffffu, v, o));
    return v;
}

// Block-wide reductions: every thread of the block must call them; every thread
// gets the result. The leading barrier makes back-to-back calls safe.
__device__ float gl_block_sum(float v) {
    __shared__ float part[32];
    int lane = threadIdx.x & 31;
    int warp = threadIdx.x >> 5;
    v = gl_warp_sum(v);
    __syncthreads();
    if (lane == 0) part[warp] = v;
    __syncthreads();
    int warps = (blockDim.x + 31) >> 5;
    v = (int)threadIdx.x < warps ? part[threadIdx.x] : 0.0f;
    if (warp == 0) v = gl_warp_sum(v);
    if (threadIdx.x == 0) part[0] = v;
    __syncthreads();
    return part[0];
}

__device__ double gl_block_sum_d(double v) {
    __shared__ double part_d[32];
    int lane = threadIdx.x & 31;
    int warp = threadIdx.x >> 5;
    v = gl_warp_sum_d(v);
    __syncthreads();
    if (lane == 0) part_d[warp] = v;
    __syncthreads();
    int warps = (blockDim.x + 31) >> 5;
    v = (int)threadIdx.x < warps ? part_d[threadIdx.x] : 0.0;
    if (warp == 0) v = gl_warp_sum_d(v);
    if (threadIdx.x == 0) part_d[0] = v;
    __syncthreads();
    return part_d[0];
}

__device__ float gl_block_max(float v) {
    __shared__ float part_m[32];
    int lane = threadIdx.x & 31;
    int warp = threadIdx.x >> 5;
    v = gl_warp_max(v);
    __syncthreads();
    if (lane == 0) part_m[warp] = v;
    __syncthreads();
    int warps = (blockDim.x + 31) >> 5;
    v = (int)threadIdx.x < warps ? part_m[threadIdx.x] : -gl_inf();
    if (warp == 0) v = gl_warp_max(v);
    if (threadIdx.x == 0) part_m[0] = v;
    __syncthreads();
    return part_m[0];
}
