/* Pillow's 8-bit antialiased resampling ("Image.resize(size, BICUBIC)" and friends), bit-exact,
 * rearranged so the inner loops run over contiguous memory and vectorise.
 *
 * The filter coefficients (doubles turned into 22-bit fixed point) and the pass order are
 * computed by the Python caller (afsd_cli/ops/bicubic_resize.py) exactly as Pillow computes them; this
 * file only runs the two separable passes with Pillow's integer arithmetic:
 *     out = clamp((2^21 + sum_t in[first + t] * k[t]) >> 22, 0, 255)
 * Pillow walks each output pixel over its taps with interleaved channels. Here the horizontal
 * pass transposes its input to [column][row * channels] so one output column is a sum of whole
 * input columns (a multiply-add over rows * channels contiguous lanes), and the vertical pass
 * sums whole rows. The integer results are identical; only the loop order differs.
 *
 * Plain C with no Python or torch headers: compiled on first use with the system compiler and
 * loaded through ctypes.
 */
#include <stdint.h>
#include <string.h>

#define PRECISION_BITS 22

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define AFSD_HAVE_AVX2_PATH 1
#else
#define AFSD_HAVE_AVX2_PATH 0
#endif

static inline uint8_t clip8(int32_t value) {
    value >>= PRECISION_BITS;
    return (uint8_t)(value < 0 ? 0 : (value > 255 ? 255 : value));
}

/* out[j] = clip8(2^21 + sum_t lines[t * stride + j] * k[t]) for j < len: the one arithmetic
 * kernel of both passes. Blocks of up to BLOCK lanes keep their sums in registers across the taps
 * (full blocks are inlined with a constant width, so they vectorise). */
#define BLOCK 64
static inline __attribute__((always_inline)) void sum_block(const uint8_t *lines, long stride, const int32_t *k,
                                                            int count, int width, uint8_t *out) {
    int32_t sum[BLOCK];
    for (int i = 0; i < width; i++) sum[i] = 1 << (PRECISION_BITS - 1);
    for (int t = 0; t < count; t++) {
        const uint8_t *line = lines + t * stride;
        const int32_t weight = k[t];
        for (int i = 0; i < width; i++) sum[i] += (int32_t)line[i] * weight;
    }
    for (int i = 0; i < width; i++) out[i] = clip8(sum[i]);
}

static void weighted_sum_portable(const uint8_t *lines, long stride, const int32_t *k, int count, long len,
                                  uint8_t *out) {
    long j = 0;
    for (; j + BLOCK <= len; j += BLOCK) sum_block(lines + j, stride, k, count, BLOCK, out + j);
    if (j < len) sum_block(lines + j, stride, k, count, (int)(len - j), out + j);
}

#if AFSD_HAVE_AVX2_PATH
/* Eight lanes of uint8 widened to int32. */
__attribute__((target("avx2"))) static inline __m256i load8(const uint8_t *p) {
    return _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p));
}

/* The same sums with AVX2: 32 lanes per block in four registers; the clamp to 0..255 is the
 * saturation of the two packs (values after the shift are within -512..511). */
__attribute__((target("avx2"))) static void weighted_sum_avx2(const uint8_t *lines, long stride, const int32_t *k,
                                                              int count, long len, uint8_t *out) {
    const __m256i half = _mm256_set1_epi32(1 << (PRECISION_BITS - 1));
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    long j = 0;
    for (; j + 32 <= len; j += 32) {
        __m256i s0 = half, s1 = half, s2 = half, s3 = half;
        for (int t = 0; t < count; t++) {
            const uint8_t *line = lines + t * stride + j;
            const __m256i w = _mm256_set1_epi32(k[t]);
            s0 = _mm256_add_epi32(s0, _mm256_mullo_epi32(load8(line), w));
            s1 = _mm256_add_epi32(s1, _mm256_mullo_epi32(load8(line + 8), w));
            s2 = _mm256_add_epi32(s2, _mm256_mullo_epi32(load8(line + 16), w));
            s3 = _mm256_add_epi32(s3, _mm256_mullo_epi32(load8(line + 24), w));
        }
        const __m256i s01 = _mm256_packs_epi32(_mm256_srai_epi32(s0, PRECISION_BITS), _mm256_srai_epi32(s1, PRECISION_BITS));
        const __m256i s23 = _mm256_packs_epi32(_mm256_srai_epi32(s2, PRECISION_BITS), _mm256_srai_epi32(s3, PRECISION_BITS));
        /* packs interleave 128-bit halves; the permute restores lane order */
        _mm256_storeu_si256((__m256i *)(out + j), _mm256_permutevar8x32_epi32(_mm256_packus_epi16(s01, s23), order));
    }
    if (j < len) weighted_sum_portable(lines + j, stride, k, count, len - j, out + j);
}
#endif

typedef void (*weighted_sum_fn)(const uint8_t *, long, const int32_t *, int, long, uint8_t *);

static weighted_sum_fn chosen_sum = 0; /* a benign race: every thread stores the same pointer */
static int simd_allowed = 1;

static weighted_sum_fn pick_weighted_sum(void) {
#if AFSD_HAVE_AVX2_PATH
    __builtin_cpu_init();
    if (simd_allowed && __builtin_cpu_supports("avx2")) return weighted_sum_avx2;
#endif
    return weighted_sum_portable;
}

/* Allow (1) or forbid (0) the SIMD path, e.g. to test the portable one; returns 1 when the SIMD
 * path is now in use. */
int afsd_resize_simd(int allow) {
    simd_allowed = allow;
    chosen_sum = pick_weighted_sum();
    return chosen_sum != weighted_sum_portable;
}

static inline void weighted_sum(const uint8_t *lines, long stride, const int32_t *k, int count, long len,
                                uint8_t *out) {
    if (!chosen_sum) chosen_sum = pick_weighted_sum();
    chosen_sum(lines, stride, k, count, len, out);
}

/* Vertical pass: dst row o = sum_t src row (bounds[2o] - offset + t) * k[o][t], rows of `len`
 * bytes. With `reverse`, every group of `channels` bytes is written in reverse order (only used
 * when there is no horizontal pass, which otherwise does the reversal for free). */
static void vertical_pass(const uint8_t *src, long src_stride, int len, int channels, uint8_t *dst,
                          long dst_stride, int out_rows, const int32_t *bounds, int offset,
                          const int32_t *kk, int ksize, int reverse) {
    for (int o = 0; o < out_rows; o++) {
        const int first = bounds[2 * o] - offset, count = bounds[2 * o + 1];
        const int32_t *k = kk + (long)o * ksize;
        uint8_t *out = dst + (long)o * dst_stride;
        weighted_sum(src + (long)first * src_stride, src_stride, k, count, len, out);
        if (reverse && channels > 1) {
            for (int j = 0; j < len; j += channels)
                for (int a = 0, b = channels - 1; a < b; a++, b--) {
                    const uint8_t swap = out[j + a];
                    out[j + a] = out[j + b];
                    out[j + b] = swap;
                }
        }
    }
}

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define AFSD_LITTLE_ENDIAN 1
#else
#define AFSD_LITTLE_ENDIAN 0
#endif

static inline uint32_t load_pixel(const uint8_t *p) { /* 3 bytes; reads (and drops) a 4th */
    uint32_t value;
    memcpy(&value, p, 4);
    return value & 0xFFFFFFu;
}

static inline uint32_t reverse_pixel(uint32_t v) {
    return ((v & 0xFFu) << 16) | (v & 0xFF00u) | ((v >> 16) & 0xFFu);
}

/* Four pixels of one column (rows y .. y + 3) packed into 12 bytes. */
static inline void store_column4(uint8_t *to, uint64_t a, uint64_t b, uint64_t c, uint32_t d) {
    const uint64_t low = a | (b << 24) | (c << 48);
    const uint32_t high = (uint32_t)(c >> 16) | (d << 8);
    memcpy(to, &low, 8);
    memcpy(to + 8, &high, 4);
}

/* columns[x][y * 3 + c] = src[y][x * 3 + c] for 3-byte pixels, in tiles of 4 columns x 4 rows:
 * 4-byte pixel loads, 12-byte column stores (byte-by-byte copying costs 2-3x more). */
static inline void transpose_in_rgb(const uint8_t *src, long src_stride, int rows, int width, uint8_t *columns) {
    const long column_len = (long)rows * 3;
    /* Pixel loads read one byte too many: never on the last column (it could be past the end). */
    const int fast_width = AFSD_LITTLE_ENDIAN ? ((width - 1) / 4) * 4 : 0;
    const int fast_rows = (rows / 4) * 4;
    for (int x = 0; x < fast_width; x += 4) {
        uint8_t *restrict column = columns + x * column_len;
        for (int y = 0; y < fast_rows; y += 4) {
            const uint8_t *restrict r0 = src + (long)y * src_stride + (long)x * 3;
            const uint8_t *restrict r1 = r0 + src_stride, *restrict r2 = r1 + src_stride, *restrict r3 = r2 + src_stride;
            for (int i = 0; i < 4; i++)
                store_column4(column + i * column_len + 3 * y, load_pixel(r0 + 3 * i), load_pixel(r1 + 3 * i),
                              load_pixel(r2 + 3 * i), load_pixel(r3 + 3 * i));
        }
    }
    /* the rest: rows below the last full tile, and columns right of the last full tile */
    for (int x = 0; x < width; x++) {
        uint8_t *restrict column = columns + x * column_len;
        const uint8_t *restrict in = src + (long)x * 3;
        for (int y = x < fast_width ? fast_rows : 0; y < rows; y++) {
            column[3 * y + 0] = in[(long)y * src_stride + 0];
            column[3 * y + 1] = in[(long)y * src_stride + 1];
            column[3 * y + 2] = in[(long)y * src_stride + 2];
        }
    }
}

/* dst[y][o * 3 + c] = out_columns[o][y * 3 + c'] with c' = c, or 2 - c when reversing: 12-byte
 * loads of four rows of a column, 4-byte pixel stores whose spare byte is rewritten by o + 1. */
static inline void transpose_out_rgb(const uint8_t *out_columns, int rows, int out_w, uint8_t *dst,
                                     long dst_stride, int reverse) {
    const long column_len = (long)rows * 3;
    const int fast_columns = AFSD_LITTLE_ENDIAN ? out_w - 1 : 0;
    const int fast_rows = (rows / 4) * 4;
    for (int o = 0; o < out_w; o++) {
        const uint8_t *restrict column = out_columns + (long)o * column_len;
        uint8_t *restrict out = dst + 3 * o;
        int y = 0;
        if (o < fast_columns) {
            for (; y < fast_rows; y += 4) {
                uint64_t low;
                uint32_t high;
                memcpy(&low, column + 3 * y, 8);
                memcpy(&high, column + 3 * y + 8, 4);
                uint32_t pixel[4] = {(uint32_t)(low & 0xFFFFFFu), (uint32_t)((low >> 24) & 0xFFFFFFu),
                                     (uint32_t)(low >> 48) | ((high & 0xFFu) << 16), high >> 8};
                for (int i = 0; i < 4; i++) {
                    const uint32_t value = reverse ? reverse_pixel(pixel[i]) : pixel[i];
                    memcpy(out + (long)(y + i) * dst_stride, &value, 4);
                }
            }
        }
        for (; y < rows; y++)
            for (int c = 0; c < 3; c++) out[(long)y * dst_stride + c] = column[3 * y + (reverse ? 2 - c : c)];
    }
}

/* Horizontal pass over `rows` rows of `width` pixels: transpose to columns, sum whole columns,
 * transpose the out_w result columns back into dst rows (reversing the channels on the way when
 * asked). Inlined with constant `channels` so the byte shuffles unroll. */
static inline __attribute__((always_inline)) void horizontal_pass_impl(
    const uint8_t *src, long src_stride, int rows, int width, const int channels, uint8_t *dst,
    long dst_stride, int out_w, const int32_t *bounds, const int32_t *kk, int ksize, int reverse,
    uint8_t *columns, uint8_t *out_columns) {
    const long column_len = (long)rows * channels;
    if (channels == 3) {
        transpose_in_rgb(src, src_stride, rows, width, columns);
    } else {
        for (int x = 0; x < width; x++)
            for (int y = 0; y < rows; y++)
                for (int c = 0; c < channels; c++)
                    columns[x * column_len + (long)y * channels + c] = src[(long)y * src_stride + (long)x * channels + c];
    }
    for (int o = 0; o < out_w; o++) {
        const int first = bounds[2 * o], count = bounds[2 * o + 1];
        weighted_sum(columns + (long)first * column_len, column_len, kk + (long)o * ksize, count, column_len,
                     out_columns + (long)o * column_len);
    }
    if (channels == 3) {
        transpose_out_rgb(out_columns, rows, out_w, dst, dst_stride, reverse);
    } else {
        for (int y = 0; y < rows; y++)
            for (int o = 0; o < out_w; o++)
                for (int c = 0; c < channels; c++)
                    dst[(long)y * dst_stride + (long)o * channels + c] =
                        out_columns[(long)o * column_len + (long)y * channels + (reverse ? channels - 1 - c : c)];
    }
}

static void horizontal_pass(const uint8_t *src, long src_stride, int rows, int width, int channels,
                            uint8_t *dst, long dst_stride, int out_w, const int32_t *bounds,
                            const int32_t *kk, int ksize, int reverse, uint8_t *columns,
                            uint8_t *out_columns) {
    if (channels == 3)
        horizontal_pass_impl(src, src_stride, rows, width, 3, dst, dst_stride, out_w, bounds, kk, ksize, reverse,
                             columns, out_columns);
    else if (channels == 1)
        horizontal_pass_impl(src, src_stride, rows, width, 1, dst, dst_stride, out_w, bounds, kk, ksize, 0,
                             columns, out_columns);
    else
        horizontal_pass_impl(src, src_stride, rows, width, channels, dst, dst_stride, out_w, bounds, kk, ksize,
                             reverse, columns, out_columns);
}

/* Bytes of workspace afsd_resize_u8 needs (the caller allocates it once and reuses it). */
long afsd_resize_workspace(int height, int width, int channels, int out_h, int out_w) {
    const long c = channels;
    const long rows = height > out_h ? height : out_h;
    const long widest = width > out_w ? width : out_w;
    /* columns + result columns + intermediate image, each 64-byte aligned */
    return (long)width * rows * c + (long)out_w * rows * c + rows * widest * c + 3 * 64;
}

static uint8_t *align64(uint8_t *p) { return (uint8_t *)(((uintptr_t)p + 63) & ~(uintptr_t)63); }

/* Resize src [height][width][channels] (rows src_stride bytes apart) into dst
 * [out_h][out_w][channels] (contiguous). need_h / need_v / vertical_first follow Pillow's
 * decisions; xbounds/ybounds hold (first, count) per output, xk/yk the fixed-point taps.
 * Returns 0, or -1 when the workspace is too small. */
int afsd_resize_u8(const uint8_t *src, int height, int width, int channels, long src_stride,
                   uint8_t *dst, int out_h, int out_w, int reverse, int need_h, int need_v,
                   int vertical_first, const int32_t *xbounds, const int32_t *xk, int xksize,
                   const int32_t *ybounds, const int32_t *yk, int yksize, uint8_t *workspace,
                   long workspace_bytes) {
    const long c = channels;
    const long rows = height > out_h ? height : out_h;
    if (workspace_bytes < afsd_resize_workspace(height, width, channels, out_h, out_w)) return -1;
    uint8_t *columns = align64(workspace);
    uint8_t *out_columns = align64(columns + (long)width * rows * c);
    uint8_t *middle = align64(out_columns + (long)out_w * rows * c);
    const long dst_stride = (long)out_w * c;

    if (!need_h && !need_v) {
        for (int y = 0; y < height; y++)
            for (int x = 0; x < width; x++)
                for (int ch = 0; ch < channels; ch++)
                    dst[y * dst_stride + x * c + ch] = src[y * src_stride + x * c + (reverse ? c - 1 - ch : ch)];
        return 0;
    }
    if (!need_v) {
        horizontal_pass(src, src_stride, height, width, channels, dst, dst_stride, out_w, xbounds, xk,
                        xksize, reverse, columns, out_columns);
        return 0;
    }
    if (!need_h) {
        vertical_pass(src, src_stride, (int)(width * c), channels, dst, dst_stride, out_h, ybounds, 0, yk,
                      yksize, reverse);
        return 0;
    }
    if (vertical_first) {
        vertical_pass(src, src_stride, (int)(width * c), channels, middle, width * c, out_h, ybounds, 0, yk,
                      yksize, 0);
        horizontal_pass(middle, width * c, out_h, width, channels, dst, dst_stride, out_w, xbounds, xk,
                        xksize, reverse, columns, out_columns);
    } else {
        /* Only the rows the vertical pass reads go through the horizontal pass (as in Pillow). */
        const int first = ybounds[0];
        const int last = ybounds[2 * out_h - 2] + ybounds[2 * out_h - 1];
        horizontal_pass(src + (long)first * src_stride, src_stride, last - first, width, channels, middle,
                        out_w * c, out_w, xbounds, xk, xksize, reverse, columns, out_columns);
        vertical_pass(middle, out_w * c, (int)(out_w * c), channels, dst, dst_stride, out_h, ybounds, first,
                      yk, yksize, 0);
    }
    return 0;
}
