/* An epoch's shuffle without leaving C: the Mersenne Twister (MT19937) that numpy's
 * legacy RandomState draws from, run on a copy of its state (get_state; the caller
 * puts the advanced state back with set_state), and the Fisher-Yates shuffle of
 * RandomState.shuffle on a 1-D array: for i = n-1 down to 1, swap x[i] with x[j],
 * j uniform in [0, i] by masked rejection on 32-bit draws. Same draws, same order,
 * same result (tests/test_api.py compares them over seeds and lengths). Arrays of
 * 2^32 rows or more are left to RandomState itself. */
#ifndef PYBACKPROP_MT19937_H
#define PYBACKPROP_MT19937_H

#include <stdint.h>
#include <Python.h>   /* Py_ssize_t */

#define PB_MT_N 624
#define PB_MT_M 397

typedef struct {
    uint32_t* key;     /* PB_MT_N words */
    Py_ssize_t* pos;   /* next word to temper; PB_MT_N: regenerate first */
} pb_mt;

static void pb_mt_regenerate(uint32_t* mt)
{
    const uint32_t upper = 0x80000000u, lower = 0x7fffffffu, twist = 0x9908b0dfu;
    uint32_t y;
    int i;
    for (i = 0; i < PB_MT_N - 1; i++) {
        y = (mt[i] & upper) | (mt[i + 1] & lower);
        mt[i] = mt[(i + PB_MT_M) % PB_MT_N] ^ (y >> 1) ^ ((0u - (y & 1u)) & twist);
    }
    y = (mt[PB_MT_N - 1] & upper) | (mt[0] & lower);
    mt[PB_MT_N - 1] = mt[PB_MT_M - 1] ^ (y >> 1) ^ ((0u - (y & 1u)) & twist);
}

static inline uint32_t pb_mt_next32(pb_mt* s)
{
    if (*s->pos >= PB_MT_N) {
        pb_mt_regenerate(s->key);
        *s->pos = 0;
    }
    uint32_t y = s->key[(*s->pos)++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= y >> 18;
    return y;
}

static void pb_shuffle(pb_mt* s, Py_ssize_t* x, Py_ssize_t n)
{
    for (Py_ssize_t i = n - 1; i >= 1; i--) {
        uint32_t max = (uint32_t)i, mask = max, v;
        mask |= mask >> 1;
        mask |= mask >> 2;
        mask |= mask >> 4;
        mask |= mask >> 8;
        mask |= mask >> 16;
        do {
            v = pb_mt_next32(s) & mask;
        } while (v > max);
        Py_ssize_t tmp = x[i];
        x[i] = x[v];
        x[v] = tmp;
    }
}

#endif
