/* Gaussian soft-NMS over 1-D segments, the loop of the official ``softnms_v2`` in plain C.
 *
 * Same float32 operations in the same order as afsd_cli/engine/postprocess.py:soft_nms (NumPy)
 * and soft_nms_torch (PyTorch, bit-identical to the official code); only expf comes from the C
 * library (within an ulp of the others). Built with -ffp-contract=off so no multiply-add is
 * fused where the reference rounds twice.
 *
 * Repeatedly: keep the best remaining candidate (lowest index on ties), decay every other
 * remaining score by exp(-IoU^2 / sigma), drop those below the threshold. The official loop
 * stops while one candidate is left and never keeps it; emit_last keeps it.
 */
#include <math.h>
#include <stdint.h>

/* NumPy's minimum/maximum: a NaN in either argument gives NaN (a malformed segment then gets a
 * NaN score and is dropped, as in the reference). */
static inline float np_minimum(float a, float b) { return (a != a || b != b) ? NAN : (a < b ? a : b); }
static inline float np_maximum(float a, float b) { return (a != a || b != b) ? NAN : (a > b ? a : b); }

/* start/end/score: n candidates (score is decayed in place). remaining: scratch of n ints.
 * kept: capacity top_k; receives the kept indices in the order they were chosen.
 * Returns how many were kept. */
int afsd_soft_nms(const float *start, const float *end, float *score, int n, float sigma, int top_k,
                  float threshold, int emit_last, int64_t *kept, int32_t *remaining) {
    const float min_width = 1e-5f;
    int count = 0, nkept = 0;
    for (int i = 0; i < n; i++)
        if (score[i] >= threshold) remaining[count++] = i;
    while (count > 1 && nkept < top_k) {
        int best = 0;
        for (int j = 1; j < count; j++)
            if (score[remaining[j]] > score[remaining[best]]) best = j;
        const int index = remaining[best];
        kept[nkept++] = index;
        const float top_start = start[index], top_end = end[index];
        const float length = top_end - top_start;
        const float width = min_width > length ? min_width : length; /* NaN stays NaN, as max() */
        int next = 0;
        for (int j = 0; j < count; j++) {
            if (j == best) continue;
            const int other = remaining[j];
            const float os = start[other], oe = end[other];
            const float inter = np_maximum(np_minimum(oe, top_end) - np_maximum(os, top_start), 0.0f);
            const float union_ = width + (oe - os) - inter;
            float decayed = score[other];
            /* Disjoint segments (IoU exactly 0) keep their score: the reference multiplies by
             * exp(-0) = 1. Only skipped when that is exact (no 0/0, no NaN, sigma > 0). */
            if (!(inter == 0.0f && union_ != 0.0f && union_ == union_ && sigma > 0.0f)) {
                const float iou = inter / union_;
                decayed *= expf(-(iou * iou) / sigma);
                score[other] = decayed;
            }
            if (decayed >= threshold) remaining[next++] = other;
        }
        count = next;
    }
    if (emit_last && count == 1 && nkept < top_k) kept[nkept++] = remaining[0];
    return nkept;
}
