"""CUDA C++ source of the letterbox kernel (kept as a string so it ships inside the wheel).

One thread per model-input pixel. Inside the resized area it does OpenCV's fixed-point bilinear resize
from precomputed tables (edgedet/preprocess/resize_tables.py) and rounds to uint8 as OpenCV does;
everywhere else it writes the padding. Then, per output channel c (source channel c for BGR, 2 - c for
RGB): ``v = float(p) * a[c] + b[c]`` with separate IEEE multiply and add (``__fmul_rn``/``__fadd_rn``: no
fused multiply-add, so the rounding matches numpy's two steps), stored as float32 or float16 in CHW order.
"""

from __future__ import annotations

# pycuda prepared-call format: src, src_pitch, src_w, src_h, xtab, ytab, new_w, new_h, pad_x, pad_y,
# out, out_w, out_h, a0..a2, b0..b2, pad0..pad2, reverse
KERNEL_SIGNATURE = "PiiiPPiiiiPii" + "f" * 9 + "i"

KERNEL_SOURCE = r"""
#include <cuda_fp16.h>

template <typename T> __device__ __forceinline__ T to_out(float v);
template <> __device__ __forceinline__ float to_out<float>(float v) { return v; }
template <> __device__ __forceinline__ __half to_out<__half>(float v) { return __float2half_rn(v); }

template <typename T>
__device__ __forceinline__ void letterbox(
    const unsigned char* __restrict__ src, int src_pitch, int src_w, int src_h,
    const int2* __restrict__ xtab, const int2* __restrict__ ytab,
    int new_w, int new_h, int pad_x, int pad_y,
    T* __restrict__ out, int out_w, int out_h,
    float a0, float a1, float a2, float b0, float b1, float b2,
    float p0, float p1, float p2, int reverse)
{
    const int x = blockIdx.x * blockDim.x + threadIdx.x;
    const int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= out_w || y >= out_h) return;
    const size_t plane = (size_t)out_w * out_h;
    const size_t idx = (size_t)y * out_w + x;
    const int dx = x - pad_x;
    const int dy = y - pad_y;
    float v0, v1, v2;
    if (dx >= 0 && dy >= 0 && dx < new_w && dy < new_h) {
        const int2 tx = xtab[dx];
        const int2 ty = ytab[dy];
        const int sx0 = tx.x;
        const int sx1 = min(sx0 + 1, src_w - 1);
        // rows follow OpenCV: raw index and weights, both rows clipped to the image when read
        const int sy0 = min(max(ty.x, 0), src_h - 1);
        const int sy1 = min(max(ty.x + 1, 0), src_h - 1);
        const int wa0 = tx.y & 0xffff, wa1 = (tx.y >> 16) & 0xffff;
        const int wb0 = ty.y & 0xffff, wb1 = (ty.y >> 16) & 0xffff;
        const unsigned char* row0 = src + (size_t)sy0 * src_pitch;
        const unsigned char* row1 = src + (size_t)sy1 * src_pitch;
        int px[3];
        #pragma unroll
        for (int c = 0; c < 3; ++c) {
            const int h0 = (int)row0[sx0 * 3 + c] * wa0 + (int)row0[sx1 * 3 + c] * wa1;
            const int h1 = (int)row1[sx0 * 3 + c] * wa0 + (int)row1[sx1 * 3 + c] * wa1;
            const int r = (((h0 >> 4) * wb0) >> 16) + (((h1 >> 4) * wb1) >> 16);
            px[c] = min(max((r + 2) >> 2, 0), 255);
        }
        const int c0 = reverse ? px[2] : px[0];
        const int c1 = px[1];
        const int c2 = reverse ? px[0] : px[2];
        v0 = __fadd_rn(__fmul_rn((float)c0, a0), b0);
        v1 = __fadd_rn(__fmul_rn((float)c1, a1), b1);
        v2 = __fadd_rn(__fmul_rn((float)c2, a2), b2);
    } else {
        v0 = p0; v1 = p1; v2 = p2;
    }
    out[idx] = to_out<T>(v0);
    out[plane + idx] = to_out<T>(v1);
    out[2 * plane + idx] = to_out<T>(v2);
}

#define LETTERBOX_ARGS \
    const unsigned char* src, int src_pitch, int src_w, int src_h, const int2* xtab, const int2* ytab, \
    int new_w, int new_h, int pad_x, int pad_y, OUT_T* out, int out_w, int out_h, \
    float a0, float a1, float a2, float b0, float b1, float b2, float p0, float p1, float p2, int reverse
#define LETTERBOX_CALL \
    letterbox(src, src_pitch, src_w, src_h, xtab, ytab, new_w, new_h, pad_x, pad_y, out, out_w, out_h, \
              a0, a1, a2, b0, b1, b2, p0, p1, p2, reverse)

#define OUT_T float
extern "C" __global__ void letterbox_f32(LETTERBOX_ARGS) { LETTERBOX_CALL; }
#undef OUT_T
#define OUT_T __half
extern "C" __global__ void letterbox_f16(LETTERBOX_ARGS) { LETTERBOX_CALL; }
#undef OUT_T
"""
