/* lmk_exp_shift and lmk_silu_mul (base/lmk_vexp.c), on every path this CPU has (portable,
 * SSE2, AVX2): within 2 ulp of the correctly rounded e^x on a dense sample of the normal
 * range, special values as documented, in-place use and SiLU; the SSE2 path equal bit for
 * bit to the portable one with the sum in its documented order. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "lmk_test.h"
#include "lmk_vexp.h"

float lmk_vexp_portable(float x);
int lmk_vexp_force_path(int path);

static int64_t ulps(float a, float b)
{
    int32_t ia, ib;
    memcpy(&ia, &a, 4);
    memcpy(&ib, &b, 4);
    if (ia < 0)
        ia = INT32_MIN - ia;
    if (ib < 0)
        ib = INT32_MIN - ib;
    return ia > ib ? (int64_t)ia - ib : (int64_t)ib - ia;
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static float frand(float lo, float hi)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return lo + (hi - lo) * (float)((rng >> 40) / 16777216.0);
}

static int check_path(int path)
{
    /* accuracy: every 97th float in [-87.33, 88.72] (both signs), one at a time and in fours */
    int64_t worst = 0, n = 0;
    float worst_x = 0;
    static float xs[4096], ys[4096];
    int nx = 0;
    for (uint64_t b = 0; b < 0x80000000ull; b += 97)
        for (int sgn = 0; sgn < 2; sgn++) {
            uint32_t bits = (uint32_t)b | (sgn ? 0x80000000u : 0);
            float x;
            memcpy(&x, &bits, 4);
            if (!(x >= -87.33f && x <= 88.72f))
                continue;
            xs[nx++] = x;
            if (nx == 4096 || (b + 97 >= 0x80000000ull && sgn == 1)) {
                lmk_exp_shift(ys, xs, nx, 0.0f);
                for (int i = 0; i < nx; i++) {
                    float want = (float)exp((double)xs[i]);
                    int64_t u = ulps(ys[i], want);
                    if (u > worst)
                        worst = u, worst_x = xs[i];
                    n++;
                }
                nx = 0;
            }
        }
    printf("test_vexp: path %d: %lld values, worst %lld ulp at %.9g\n", path, (long long)n,
           (long long)worst, worst_x);
    CHECK(n > 1000000);
    CHECK(worst <= 2);

    /* special values, through the vector path (a group of four) and the tail */
    float sp[8] = {0.0f, -INFINITY, INFINITY, NAN, 100.0f, -100.0f, -0.0f, 1.0f};
    float sy[8];
    for (int off = 0; off < 2; off++) {
        double z = lmk_exp_shift(sy, sp + off * 4, 4, 0.0f);
        (void)z;
        lmk_exp_shift(sy + 4, sp + off * 4, 3, 0.0f); /* the tail path */
        for (int i = 0; i < 3; i++)
            CHECK(memcmp(&sy[i], &sy[4 + i], 4) == 0 || (isnan(sy[i]) && isnan(sy[4 + i])));
        for (int i = 0; i < 4; i++) {
            float x = sp[off * 4 + i], y = sy[i];
            if (isnan(x))
                CHECK(isnan(y));
            else if (x == INFINITY || x == 100.0f)
                CHECK(y == INFINITY);
            else if (x == -INFINITY || x == -100.0f)
                CHECK(y == 0.0f);
            else if (x == 0.0f)
                CHECK(y == 1.0f);
        }
    }

    /* SSE2 == portable bit for bit, with a shift, odd lengths, and the sum's order; AVX2
     * within 2 ulp of the portable path and its sum within 1e-12 of theirs */
    for (int rep = 0; rep < 50; rep++) {
        int len = 1 + (int)frand(0, 1000);
        float shift = frand(-5, 5);
        static float x[1024], y[1024];
        for (int i = 0; i < len; i++)
            x[i] = frand(-120, 95);
        if (len > 3)
            x[3] = NAN;
        double z = lmk_exp_shift(y, x, len, shift);
        double acc[4] = {0, 0, 0, 0}, tail = 0;
        int bad = 0, i = 0;
        for (; i < len; i++) {
            float want = lmk_vexp_portable(x[i] - shift);
            if (isnan(want) ? !isnan(y[i])
                            : path == 3 ? ulps(want, y[i]) > 2 : memcmp(&want, &y[i], 4) != 0)
                bad++;
            if (i < len / 4 * 4)
                acc[i % 4] += y[i];
            else
                tail += y[i];
        }
        CHECK(bad == 0);
        double want_z = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + tail;
        if (path == 3)
            CHECK(isnan(z) ? isnan(want_z) : fabs(z - want_z) <= 1e-12 * fabs(want_z));
        else
            CHECK(memcmp(&z, &want_z, sizeof z) == 0 || (isnan(z) && isnan(want_z)));
        /* in place gives the same */
        static float x2[1024];
        memcpy(x2, x, (size_t)len * 4);
        double z2 = lmk_exp_shift(x2, x2, len, shift);
        CHECK(memcmp(x2, y, (size_t)len * 4) == 0);
        CHECK(memcmp(&z, &z2, sizeof z) == 0 || (isnan(z) && isnan(z2)));
    }
    CHECK(lmk_exp_shift(ys, xs, 0, 0.0f) == 0.0);

    /* softmax weights: shifted by the maximum they sum as e^(x - m) does in double */
    {
        float x[37], y[37];
        float m = -INFINITY;
        for (int i = 0; i < 37; i++) {
            x[i] = frand(-30, 10);
            m = x[i] > m ? x[i] : m;
        }
        double z = lmk_exp_shift(y, x, 37, m), want = 0;
        for (int i = 0; i < 37; i++)
            want += exp((double)x[i] - m);
        CHECK(fabs(z - want) <= 1e-6 * want);
    }

    /* SiLU gating against double precision, in place over x and over u */
    {
        float x[103], u[103], y[103];
        for (int i = 0; i < 103; i++)
            x[i] = frand(-90, 90), u[i] = frand(-2, 2);
        x[0] = 0.0f, x[1] = -100.0f, x[2] = 100.0f;
        lmk_silu_mul(y, x, u, 103);
        int bad = 0;
        for (int i = 0; i < 103; i++) {
            double want = (double)x[i] / (1.0 + exp(-(double)x[i])) * u[i];
            /* below -88.7, e^-x is +inf in single precision (as with expf): y is -0 where
             * the exact value is under 1e-35 */
            if (!(fabs(y[i] - want) <= 1e-6 * fabs(want) + 1e-35)) {
                fprintf(stderr, "silu(%.9g) * %.9g = %.9g, want %.9g\n", x[i], u[i], y[i], want);
                bad++;
            }
        }
        CHECK(bad == 0);
        float xa[103], ua[103];
        memcpy(xa, x, sizeof x);
        memcpy(ua, u, sizeof u);
        lmk_silu_mul(xa, xa, u, 103);
        lmk_silu_mul(ua, x, ua, 103);
        CHECK(memcmp(xa, y, sizeof y) == 0 && memcmp(ua, y, sizeof y) == 0);
    }
    return 0;
}

int main(void)
{
    int paths = 0;
    for (int path = 1; path <= 3; path++) {
        if (lmk_vexp_force_path(path) != 0) {
            printf("test_vexp: path %d not on this CPU\n", path);
            continue;
        }
        check_path(path);
        paths++;
    }
    lmk_vexp_force_path(0);
    CHECK(paths >= 1);
    return lmk_test_finish("test_vexp", 0);
}
