// Data movement of any element size (1, 2, 4 or 8 bytes; the suffix names it):
// strided reads (Transpose, Expand, Slice, Split, broadcasting operands into a
// contiguous buffer), strided writes (Concat, the Slice backward), Gather along one
// axis; plus the f32 scatter-back of Gather and the im2col unfolding of Conv.

// out[i] = x[offset + Σ idx_d·strides_d] over the row-major index space `dims`.
template <typename T>
__device__ void gl_strided_read(T* out, const T* x, i64 n, int rank, const Dims& dims,
                                const Dims& strides, i64 offset) {
    GL_FOR(i, n) { out[i] = x[offset + gl_offset(i, rank, dims, strides)]; }
}

// out[offset + Σ idx_d·strides_d] = x[i] over the row-major index space `dims`.
template <typename T>
__device__ void gl_strided_write(T* out, const T* x, i64 n, int rank, const Dims& dims,
                                 const Dims& strides, i64 offset) {
    GL_FOR(i, n) { out[offset + gl_offset(i, rank, dims, strides)] = x[i]; }
}

// out[o, j, t] = x[o, pos[j], t] with `pos` already normalised to [0, d).
template <typename T>
__device__ void gl_gather_axis(T* out, const T* x, const i64* pos, i64 outer, i64 count, i64 d,
                               i64 inner) {
    i64 n = outer * count * inner;
    GL_FOR(i, n) {
        i64 t = i % inner;
        i64 j = (i / inner) % count;
        i64 o = i / (inner * count);
        out[i] = x[(o * d + pos[j]) * inner + t];
    }
}

extern "C" __global__ void strided_read_1(unsigned char* out, const unsigned char* x, i64 n, int rank,
                                          Dims dims, Dims strides, i64 offset) {
    gl_strided_read(out, x, n, rank, dims, strides, offset);
}
extern "C" __global__ void strided_read_2(unsigned short* out, const unsigned short* x, i64 n, int rank,
                                          Dims dims, Dims strides, i64 offset) {
    gl_strided_read(out, x, n, rank, dims, strides, offset);
}
extern "C" __global__ void strided_read_4(unsigned int* out, const unsigned int* x, i64 n, int rank,
                                          Dims dims, Dims strides, i64 offset) {
    gl_strided_read(out, x, n, rank, dims, strides, offset);
}
extern "C" __global__ void strided_read_8(u64* out, const u64* x, i64 n, int rank, Dims dims,
                                          Dims strides, i64 offset) {
    gl_strided_read(out, x, n, rank, dims, strides, offset);
}

extern "C" __global__ void strided_write_1(unsigned char* out, const unsigned char* x, i64 n, int rank,
                                           Dims dims, Dims strides, i64 offset) {
    gl_strided_write(out, x, n, rank, dims, strides, offset);
}
extern "C" __global__ void strided_write_2(unsigned short* out, const unsigned short* x, i64 n, int rank,
                                           Dims dims, Dims strides, i64 offset) {
    gl_strided_write(out, x, n, rank, dims, strides, offset);
}
extern "C" __global__ void strided_write_4(unsigned int* out, const unsigned int* x, i64 n, int rank,
                                           Dims dims, Dims strides, i64 offset) {
    gl_strided_write(out, x, n, rank, dims, strides, offset);
}
extern "C" __global__ void strided_write_8(u64* out, const u64* x, i64 n, int rank, Dims dims,
                                           Dims strides, i64 offset) {
    gl_strided_write(out, x, n, rank, dims, strides, offset);
}

extern "C" __global__ void gather_axis_1(unsigned char* out, const unsigned char* x, const i64* pos,
                                         i64 outer, i64 count, i64 d, i64 inner) {
    gl_gather_axis(out, x, pos, outer, count, d, inner);
}
extern "C" __global__ void gather_axis_2(unsigned short* out, const unsigned short* x, const i64* pos,
                                         i64 outer, i64 count, i64 d, i64 inner) {
    gl_gather_axis(out, x, pos, outer, count, d, inner);
}
extern "C" __global__ void gather_axis_4(unsigned int* out, const unsigned int* x, const i64* pos,
                                         i64 outer, i64 count, i64 d, i64 inner) {
    gl_gather_axis(out, x, pos, outer, count, d, inner);
}
extern "C" __global__ void gather_axis_8(u64* out, const u64* x, const i64* pos, i64 outer, i64 count,
                                         i64 d, i64 inner) {
    gl_gather_axis(out, x, pos, outer, count, d, inner);
}

// dx[o, p, t] = Σ over j with pos[j] == p of dy[o, j, t], j in order: one thread per
// element of dx, so repeated indices always add up the same way.
extern "C" __global__ void gather_grad_f32(float* dx, const float* dy, const i64* pos, i64 outer,
                                           i64 count, i64 d, i64 inner) {
    i64 n = outer * d * inner;
    GL_FOR(i, n) {
        i64 t = i % inner;
        i64 p = (i / inner) % d;
        i64 o = i / (inner * d);
        float s = 0.0f;
        for (i64 j = 0; j < count; ++j) {
            if (pos[j] == p) s += dy[(o * count + j) * inner + t];
        }
        dx[i] = s;
    }
}

// The same by atomic adds into a zeroed dx, for many indices: one thread per
// element of dy.
extern "C" __global__ void gather_grad_atomic_f32(float* dx, const float* dy, const i64* pos, i64 outer,
                                                  i64 count, i64 d, i64 inner) {
    i64 n = outer * count * inner;
    GL_FOR(i, n) {
        i64 t = i % inner;
        i64 j = (i / inner) % count;
        i64 o = i / (inner * count);
        atomicAdd(&dx[(o * d + pos[j]) * inner + t], dy[i]);
    }
}

// Unfolds `images` images of x [.., c, h, w] (x points at the first of them) into
// columns: layout 0 writes cols[img, ck, p], layout 1 cols[ck, img, p], with
// ck = (channel, ki, kj) and p = (oy, ox). Positions in the padding read 0.
extern "C" __global__ void im2col_f32(float* cols, const float* x, i64 images, i64 c, i64 h, i64 w,
                                      i64 kh, i64 kw, i64 sh, i64 sw, i64 ph, i64 pw, i64 dh, i64 dw,
                                      i64 oh, i64 ow, int layout) {
    i64 p_count = oh * ow;
    i64 ck_count = c * kh * kw;
    i64 n = images * ck_count * p_count;
    GL_FOR(i, n) {
        i64 p = i % p_count;
        i64 img, ck;
        if (layout == 0) {
            ck = (i / p_count) % ck_count;
            img = i / (p_count * ck_count);
        } else {
            img = (i / p_count) % images;
            ck = i / (p_count * images);
        }
        i64 kj = ck % kw;
        i64 ki = (ck / kw) % kh;
        i64 ch = ck / (kw * kh);
        i64 oy = p / ow;
        i64 ox = p % ow;
        i64 iy = oy * sh + ki * dh - ph;
        i64 ix = ox * sw + kj * dw - pw;
        float v = 0.0f;
        if (iy >= 0 && iy < h && ix >= 0 && ix < w) v = x[((img * c + ch) * h + iy) * w + ix];
        cols[i] = v;
    }
}
