/* exp(x) that a compiler can vectorise: branch-free, no libm call.
 *
 * exp(x) = 2^n * exp(r), n = round(x / ln 2), r = x - n ln 2 with |r| <= ln(2)/2,
 * exp(r) by its Taylor polynomial (degree 13 in double, 7 in float: truncation
 * below half an ulp), 2^n written straight into the exponent bits. n is rounded with
 * the 1.5 * 2^52 (2^23) shift trick, whose low mantissa bits then hold n.
 * 2^n is applied as 2^(n/2) * 2^(n - n/2), so that results near overflow and in the
 * subnormal range come out right. Error: within one ulp (double), two (float). Overflow gives +inf,
 * underflow 0, NaN stays NaN.
 */
#ifndef PYBACKPROP_VEXP_H
#define PYBACKPROP_VEXP_H

#include <stdint.h>
#include <string.h>
#include <math.h>

static inline double pb_exp(double x)
{
    const double shift = 6755399441055744.0;          /* 1.5 * 2^52 */
    const double log2e = 1.4426950408889634;
    const double ln2_hi = 6.93147180369123816490e-01;
    const double ln2_lo = 1.90821492927058770002e-10;
    double xc = x > 709.8 ? 709.8 : x;
    xc = xc < -745.2 ? -745.2 : xc;
    double t = xc * log2e + shift;
    double n = t - shift;
    double r = (xc - n * ln2_hi) - n * ln2_lo;
    double p = 1.0 / 6227020800.0;                     /* 1/13! */
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    int64_t bits, shift_bits;
    memcpy(&bits, &t, sizeof bits);
    memcpy(&shift_bits, &shift, sizeof shift_bits);
    int64_t k = bits - shift_bits;                     /* n, in [-1075, 1025] */
    int64_t half = k >> 1;
    int64_t e1 = (half + 1023) << 52, e2 = (k - half + 1023) << 52;
    double s1, s2;
    memcpy(&s1, &e1, sizeof s1);
    memcpy(&s2, &e2, sizeof s2);
    double result = (p * s1) * s2;
    result = x > 709.782712893384 ? HUGE_VAL : result;
    result = x < -745.1332191019412 ? 0.0 : result;
    return result;
}

static inline float pb_expf(float x)
{
    const float shift = 12582912.0f;                   /* 1.5 * 2^23 */
    const float log2e = 1.44269504088896341f;
    const float ln2_hi = 0.693359375f;
    const float ln2_lo = -2.12194440e-4f;
    float xc = x > 88.8f ? 88.8f : x;
    xc = xc < -104.0f ? -104.0f : xc;
    float t = xc * log2e + shift;
    float n = t - shift;
    float r = (xc - n * ln2_hi) - n * ln2_lo;
    float p = 1.0f / 5040.0f;                          /* 1/7! */
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    int32_t bits, shift_bits;
    memcpy(&bits, &t, sizeof bits);
    memcpy(&shift_bits, &shift, sizeof shift_bits);
    int32_t k = bits - shift_bits;                     /* n, in [-150, 129] */
    int32_t half = k >> 1;
    int32_t e1 = (half + 127) << 23, e2 = (k - half + 127) << 23;
    float s1, s2;
    memcpy(&s1, &e1, sizeof s1);
    memcpy(&s2, &e2, sizeof s2);
    float result = (p * s1) * s2;
    result = x > 88.72283935546875f ? HUGE_VALF : result;
    result = x < -103.97207708f ? 0.0f : result;
    return result;
}

/* tanh(x), branch-free: for |x| >= 0.625, (1 - e) / (1 + e) with e = exp(-2|x|);
 * below, x + x³ P(x²) / Q(x²) (Cephes' rational approximation), which keeps full
 * relative precision near 0 where the first form cancels. Both are computed and one
 * selected, so the loop vectorises. */
static inline double pb_tanh(double x)
{
    double a = fabs(x);
    double e = pb_exp(-2.0 * a);
    double big = (1.0 - e) / (1.0 + e);
    big = x < 0 ? -big : big;
    double z = x * x;
    double p = (-9.64399179425052238628e-1 * z - 9.92877231001918586564e1) * z
               - 1.61468768441708447952e3;
    double q = ((z + 1.12811678491632931402e2) * z + 2.23548839060100448583e3) * z
               + 4.84406305325125486048e3;
    double small = x + x * z * (p / q);
    double result = a < 0.625 ? small : big;
    return x != x ? x : result;
}

static inline float pb_tanhf(float x)
{
    float a = fabsf(x);
    float e = pb_expf(-2.0f * a);
    float big = (1.0f - e) / (1.0f + e);
    big = x < 0 ? -big : big;
    float z = x * x;
    float small = ((((-5.70498872745e-3f * z + 2.06390887954e-2f) * z
                     - 5.37397155531e-2f) * z + 1.33314422036e-1f) * z
                   - 3.33332819422e-1f) * z * x + x;
    float result = a < 0.625f ? small : big;
    return x != x ? x : result;
}

#endif
