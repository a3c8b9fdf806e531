"""Fixed C text of the generated project: the random generator, the weight loader, the CLI driver, the Makefile.

The per-network parts (types, constants, one function per layer) are written by `generate.py`; these pieces are
the same for every network and are pasted in. Everything is C99 (`-std=c99 -pedantic` clean) and needs only the
C standard library; no libm.
"""

# The rate-encoding generator: numpy's default_rng (SeedSequence -> PCG64 XSL-RR 128/64), bit for bit, with the
# 128-bit arithmetic emulated on 64-bit halves so that it is portable C99.
RNG_C = r"""
/* ---- numpy-compatible random numbers for rate encoding -------------------------------------------------- */

typedef struct { uint64_t hi, lo; } snn_u128;

static uint64_t snn_mulhi64(uint64_t a, uint64_t b)
{
    uint64_t a_lo = a & 0xFFFFFFFFu, a_hi = a >> 32, b_lo = b & 0xFFFFFFFFu, b_hi = b >> 32;
    uint64_t p0 = a_lo * b_lo, p1 = a_lo * b_hi, p2 = a_hi * b_lo, p3 = a_hi * b_hi;
    uint64_t mid = (p0 >> 32) + (p1 & 0xFFFFFFFFu) + (p2 & 0xFFFFFFFFu);
    return p3 + (p1 >> 32) + (p2 >> 32) + (mid >> 32);
}

static snn_u128 snn_mul128(snn_u128 a, snn_u128 b)
{
    snn_u128 r;
    r.lo = a.lo * b.lo;
    r.hi = snn_mulhi64(a.lo, b.lo) + a.lo * b.hi + a.hi * b.lo;
    return r;
}

static snn_u128 snn_add128(snn_u128 a, snn_u128 b)
{
    snn_u128 r;
    r.lo = a.lo + b.lo;
    r.hi = a.hi + b.hi + (r.lo < a.lo ? 1u : 0u);
    return r;
}

static const snn_u128 snn_pcg_mult = {0x2360ED051FC65DA4u, 0x4385DF649FCCF645u};

static void snn_pcg_step(snn_pcg64 *rng)
{
    snn_u128 s, inc;
    s.hi = rng->state_hi; s.lo = rng->state_lo;
    inc.hi = rng->inc_hi; inc.lo = rng->inc_lo;
    s = snn_add128(snn_mul128(s, snn_pcg_mult), inc);
    rng->state_hi = s.hi; rng->state_lo = s.lo;
}

uint64_t snn_pcg64_next(snn_pcg64 *rng)
{
    uint64_t x;
    unsigned rot;
    snn_pcg_step(rng);
    x = rng->state_hi ^ rng->state_lo;
    rot = (unsigned)(rng->state_hi >> 58);
    return (x >> rot) | (x << ((64u - rot) & 63u));
}

double snn_pcg64_double(snn_pcg64 *rng)
{
    return (double)(snn_pcg64_next(rng) >> 11) * (1.0 / 9007199254740992.0);
}

void snn_pcg64_advance(snn_pcg64 *rng, uint64_t delta)
{
    snn_u128 cur_mult = snn_pcg_mult, cur_plus, acc_mult, acc_plus, s, one;
    cur_plus.hi = rng->inc_hi; cur_plus.lo = rng->inc_lo;
    acc_mult.hi = 0; acc_mult.lo = 1;
    acc_plus.hi = 0; acc_plus.lo = 0;
    one.hi = 0; one.lo = 1;
    while (delta > 0) {
        if (delta & 1u) {
            acc_mult = snn_mul128(acc_mult, cur_mult);
            acc_plus = snn_add128(snn_mul128(acc_plus, cur_mult), cur_plus);
        }
        cur_plus = snn_mul128(snn_add128(cur_mult, one), cur_plus);
        cur_mult = snn_mul128(cur_mult, cur_mult);
        delta >>= 1;
    }
    s.hi = rng->state_hi; s.lo = rng->state_lo;
    s = snn_add128(snn_mul128(acc_mult, s), acc_plus);
    rng->state_hi = s.hi; rng->state_lo = s.lo;
}

/* SeedSequence(seed) of numpy (pool of four 32-bit words, O'Neill's seed_seq hash), then PCG64's seeding. */
static uint32_t snn_hashmix(uint32_t value, uint32_t *hash_const)
{
    value ^= *hash_const;
    *hash_const *= 0x931e8875u;
    value *= *hash_const;
    value ^= value >> 16;
    return value;
}

static uint32_t snn_mix(uint32_t x, uint32_t y)
{
    uint32_t r = 0xca01f9ddu * x - 0x4973f715u * y;
    return r ^ (r >> 16);
}

void snn_pcg64_seed(snn_pcg64 *rng, uint64_t seed)
{
    uint32_t entropy[2], pool[4], words[8], hash_const = 0x43b0d7e5u;
    uint64_t w64[4];
    int n_entropy, i, j;
    entropy[0] = (uint32_t)(seed & 0xFFFFFFFFu);
    entropy[1] = (uint32_t)(seed >> 32);
    n_entropy = entropy[1] ? 2 : 1;
    for (i = 0; i < 4; ++i)
        pool[i] = snn_hashmix(i < n_entropy ? entropy[i] : 0u, &hash_const);
    for (i = 0; i < 4; ++i)
        for (j = 0; j < 4; ++j)
            if (i != j)
                pool[j] = snn_mix(pool[j], snn_hashmix(pool[i], &hash_const));
    hash_const = 0x8b51f9ddu;
    for (i = 0; i < 8; ++i) {
        uint32_t v = pool[i % 4];
        v ^= hash_const;
        hash_const *= 0x58f38dedu;
        v *= hash_const;
        v ^= v >> 16;
        words[i] = v;
    }
    for (i = 0; i < 4; ++i)
        w64[i] = (uint64_t)words[2 * i] | ((uint64_t)words[2 * i + 1] << 32);
    /* pcg64_set_seed(state = (w64[0] << 64) | w64[1], inc = (w64[2] << 64) | w64[3]) */
    rng->state_hi = 0; rng->state_lo = 0;
    rng->inc_hi = (w64[2] << 1) | (w64[3] >> 63);
    rng->inc_lo = (w64[3] << 1) | 1u;
    snn_pcg_step(rng);
    {
        snn_u128 s, add;
        s.hi = rng->state_hi; s.lo = rng->state_lo;
        add.hi = w64[0]; add.lo = w64[1];
        s = snn_add128(s, add);
        rng->state_hi = s.hi; rng->state_lo = s.lo;
    }
    snn_pcg_step(rng);
}

void snn_rate_encode(snn_pcg64 *rng, const double *x, snn_input_t *spikes, size_t n)
{
    size_t i;
    for (i = 0; i < n; ++i)
        spikes[i] = (snn_input_t)(snn_pcg64_double(rng) < x[i] ? 1 : 0);
}
"""

# Weight blob loading (bin mode). The generated code provides snn_param_specs[] (expected byte sizes) and
# snn_bind_params(ctx, pointers).
LOADER_C = r"""
/* ---- weight blob ---------------------------------------------------------------------------------------- */

static uint64_t snn_rd64(const unsigned char *p)
{
    uint64_t v = 0;
    int i;
    for (i = 7; i >= 0; --i)
        v = (v << 8) | p[i];
    return v;
}

static unsigned char *snn_load_blob(const char *path)
{
    FILE *f;
    long size;
    unsigned char *blob;
    uint64_t n, i;
    if (path == NULL)
        path = "weights.bin";
    f = fopen(path, "rb");
    if (f == NULL) {
        snn_set_error("cannot open weight file ", path);
        return NULL;
    }
    if (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 64 || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        snn_set_error("weight file is truncated: ", path);
        return NULL;
    }
    blob = (unsigned char *)malloc((size_t)size);
    if (blob == NULL) {
        fclose(f);
        snn_set_error("out of memory reading ", path);
        return NULL;
    }
    if (fread(blob, 1, (size_t)size, f) != (size_t)size) {
        fclose(f);
        free(blob);
        snn_set_error("cannot read weight file ", path);
        return NULL;
    }
    fclose(f);
    if (memcmp(blob, "SNNCWTS1", 8) != 0 || snn_rd64(blob + 8) != 1u) {
        free(blob);
        snn_set_error("not an snnc weight blob (bad magic or version): ", path);
        return NULL;
    }
    if (snn_rd64(blob + 16) != (uint64_t)size) {
        free(blob);
        snn_set_error("weight blob size does not match its header: ", path);
        return NULL;
    }
    if (memcmp(blob + 24, snn_layout_hash, 32) != 0) {
        free(blob);
        snn_set_error("weight blob was generated for a different network layout: ", path);
        return NULL;
    }
    n = snn_rd64(blob + 56);
    if (n != SNN_NUM_PARAMS || 64u + 16u * n > (uint64_t)size) {
        free(blob);
        snn_set_error("weight blob has the wrong number of arrays: ", path);
        return NULL;
    }
    for (i = 0; i < n; ++i) {
        uint64_t off = snn_rd64(blob + 64 + 16 * i), nbytes = snn_rd64(blob + 72 + 16 * i);
        if (nbytes != snn_param_nbytes[i] || off % 8u != 0 || off + nbytes > (uint64_t)size) {
            free(blob);
            snn_set_error("weight blob array has the wrong size or offset: ", snn_param_names[i]);
            return NULL;
        }
    }
    {   /* little-endian host check: the blob is little-endian */
        const uint32_t probe = 1u;
        if (*(const unsigned char *)&probe != 1u) {
            free(blob);
            snn_set_error("big-endian hosts are not supported by the weight blob: ", path);
            return NULL;
        }
    }
    return blob;
}

static const void *snn_blob_array(const unsigned char *blob, int i)
{
    return blob + snn_rd64(blob + 64 + 16 * (uint64_t)i);
}
"""

ERROR_C = r"""
static char snn_error_text[512];

static void snn_set_error(const char *what, const char *detail)
{
    size_t n = strlen(what), m = strlen(detail);
    if (n > sizeof snn_error_text - 1)
        n = sizeof snn_error_text - 1;
    if (m > sizeof snn_error_text - 1 - n)
        m = sizeof snn_error_text - 1 - n;
    memcpy(snn_error_text, what, n);
    memcpy(snn_error_text + n, detail, m);
    snn_error_text[n + m] = '\0';
}

const char *snn_last_error(void)
{
    return snn_error_text;
}
"""

MAIN_C = r"""/* snn_run: command-line driver of the generated snnc model (see snn_model.h). C99, standard library only.
 *
 * usage: snn_run -i INPUT -o OUTPUT -T T1[,T2,...] [-w WEIGHTS] [--raw] [--seed N] [--rng-batch B] [-q]
 *
 * INPUT   raw little-endian samples, each SNN_INPUT_SIZE values in (C, H, W) order:
 *         int32 (fixed point, direct encoding: round(x / scale)), float32 or float64 (float mode, see
 *         SNN_INPUT_FILE_BYTES), float64 probabilities in [0, 1] (rate encoding, either mode).
 *         The number of samples is the file size / (SNN_INPUT_SIZE * element size).
 * OUTPUT  per sample: for each checkpoint T (ascending), for each output layer (snn_output_names order), its
 *         values in (C, H, W) order as float64 means over the first T steps (or, with --raw, the raw sums
 *         snn_sum_t: int64 in fixed point, float64 in float mode); then SNN_NUM_NEURON_LAYERS int64 spike counts
 *         (|s| summed over all steps up to the last checkpoint).
 * --seed N       rate encoding: numpy.random.default_rng(N) (default 0).
 * --rng-batch B  rate encoding: like numpy drawing one (B, C, H, W) array a step, sample b uses slice b
 *                (default: B = number of samples in INPUT).
 * Timing of the step loop goes to stderr unless -q.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "snn_model.h"

#define MAX_CHECKPOINTS 256

static int fail(const char *msg, const char *detail)
{
    fprintf(stderr, "snn_run: %s%s\n", msg, detail ? detail : "");
    return 2;
}

int main(int argc, char **argv)
{
    const char *in_path = NULL, *out_path = NULL, *w_path = NULL;
    long ts[MAX_CHECKPOINTS];
    int n_ts = 0, raw = 0, quiet = 0, i, k;
    unsigned long long seed = 0, rng_batch = 0;
    FILE *f;
    long size;
    size_t elem = SNN_INPUT_FILE_BYTES, n_samples, b, max_out = 0;
    unsigned char *inputs;
    snn_input_t *x;
    double *dec;
    snn_sum_t *sums;
    int64_t counts[SNN_NUM_NEURON_LAYERS + 1];
    snn_ctx *ctx;
    clock_t c0, ticks = 0;
    (void)seed;
    (void)rng_batch;

    for (i = 1; i < argc; ++i) {
        if (!strcmp(argv[i], "-i") && i + 1 < argc) in_path = argv[++i];
        else if (!strcmp(argv[i], "-o") && i + 1 < argc) out_path = argv[++i];
        else if (!strcmp(argv[i], "-w") && i + 1 < argc) w_path = argv[++i];
        else if (!strcmp(argv[i], "--raw")) raw = 1;
        else if (!strcmp(argv[i], "-q")) quiet = 1;
        else if (!strcmp(argv[i], "--seed") && i + 1 < argc) seed = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--rng-batch") && i + 1 < argc) rng_batch = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "-T") && i + 1 < argc) {
            char *p = argv[++i], *end;
            while (*p) {
                long t = strtol(p, &end, 10);
                if (end == p || t < 1 || n_ts >= MAX_CHECKPOINTS || (n_ts > 0 && t <= ts[n_ts - 1]))
                    return fail("-T needs ascending positive integers, got ", argv[i]);
                ts[n_ts++] = t;
                p = end;
                if (*p == ',') ++p;
            }
        } else {
            fprintf(stderr, "usage: snn_run -i INPUT -o OUTPUT -T T1[,T2,...] [-w WEIGHTS] [--raw] "
                            "[--seed N] [--rng-batch B] [-q]\n");
            return 2;
        }
    }
    if (in_path == NULL || out_path == NULL || n_ts == 0)
        return fail("-i, -o and -T are required", NULL);

    f = fopen(in_path, "rb");
    if (f == NULL) return fail("cannot open ", in_path);
    if (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        return fail("cannot size ", in_path);
    }
    if (size == 0 || (size_t)size % (SNN_INPUT_SIZE * elem) != 0) {
        fclose(f);
        return fail("input size is not a whole number of samples: ", in_path);
    }
    n_samples = (size_t)size / (SNN_INPUT_SIZE * elem);
    inputs = (unsigned char *)malloc((size_t)size);
    if (inputs == NULL || fread(inputs, 1, (size_t)size, f) != (size_t)size) {
        fclose(f);
        return fail("cannot read ", in_path);
    }
    fclose(f);

    ctx = snn_init(w_path);
    if (ctx == NULL) return fail(snn_last_error(), NULL);
    for (k = 0; k < SNN_NUM_OUTPUTS; ++k)
        if (snn_output_sizes[k] > max_out) max_out = snn_output_sizes[k];
    x = (snn_input_t *)malloc(SNN_INPUT_SIZE * sizeof(snn_input_t));
    dec = (double *)malloc(max_out * sizeof(double));
    sums = (snn_sum_t *)malloc(max_out * sizeof(snn_sum_t));
    if (x == NULL || dec == NULL || sums == NULL) return fail("out of memory", NULL);
    f = fopen(out_path, "wb");
    if (f == NULL) return fail("cannot write ", out_path);

    for (b = 0; b < n_samples; ++b) {
        long t = 0;
        int next = 0;
#if SNN_RATE_ENCODING
        snn_pcg64 rng;
        const double *probs = (const double *)(const void *)(inputs + b * SNN_INPUT_SIZE * elem);
        uint64_t batch = rng_batch ? (uint64_t)rng_batch : (uint64_t)n_samples;
        snn_pcg64_seed(&rng, (uint64_t)seed);
        snn_pcg64_advance(&rng, (uint64_t)b * SNN_INPUT_SIZE);
#else
        const void *src = inputs + b * SNN_INPUT_SIZE * elem;
        {
            size_t j;
            for (j = 0; j < SNN_INPUT_SIZE; ++j) {
                SNN_INPUT_FILE_T v;
                memcpy(&v, (const unsigned char *)src + j * elem, sizeof v);
                x[j] = (snn_input_t)v;
            }
        }
#endif
        snn_reset(ctx);
        while (next < n_ts) {
#if SNN_RATE_ENCODING
            snn_rate_encode(&rng, probs, x, SNN_INPUT_SIZE);
            snn_pcg64_advance(&rng, (batch - 1u) * SNN_INPUT_SIZE);
#endif
            c0 = clock();
            snn_step(ctx, x);
            ticks += clock() - c0;
            ++t;
            if (t == ts[next]) {
                for (k = 0; k < SNN_NUM_OUTPUTS; ++k) {
                    size_t n = snn_output_sizes[k];
                    if (raw) {
                        snn_read_output_sums(ctx, k, sums);
                        if (fwrite(sums, sizeof(snn_sum_t), n, f) != n) return fail("write failed: ", out_path);
                    } else {
                        snn_read_outputs(ctx, k, dec);
                        if (fwrite(dec, sizeof(double), n, f) != n) return fail("write failed: ", out_path);
                    }
                }
                ++next;
            }
        }
        snn_spike_counts(ctx, counts);
        if (SNN_NUM_NEURON_LAYERS > 0 &&
            fwrite(counts, sizeof(int64_t), SNN_NUM_NEURON_LAYERS, f) != SNN_NUM_NEURON_LAYERS)
            return fail("write failed: ", out_path);
    }
    if (fclose(f) != 0) return fail("write failed: ", out_path);
    if (!quiet)
        fprintf(stderr, "snn_run: %lu sample(s) x %ld steps, %.3f ms/step\n", (unsigned long)n_samples,
                ts[n_ts - 1], 1e3 * (double)ticks / CLOCKS_PER_SEC / ((double)n_samples * (double)ts[n_ts - 1]));
    snn_free(ctx);
    free(inputs);
    free(x);
    free(dec);
    free(sums);
    return 0;
}
"""

MAKEFILE = """# Builds the snnc model library and its command-line driver with any C99 compiler.
# Multi-core hosts: make CFLAGS="-O3 -fno-trapping-math -fopenmp" (threads from OMP_NUM_THREADS; results do not
# depend on them; -fno-trapping-math lets the float neuron updates vectorize).
CC ?= cc
CFLAGS ?= -O2
SNN_CFLAGS = -std=c99 $(CFLAGS)

all: libsnn.a snn_run

snn_model.o: snn_model.c snn_model.h{extra_deps}
\t$(CC) $(SNN_CFLAGS) -c snn_model.c -o $@

libsnn.a: snn_model.o
\t$(AR) rcs $@ snn_model.o

snn_run: main.c snn_model.h libsnn.a
\t$(CC) $(SNN_CFLAGS) main.c libsnn.a -o $@ $(LDFLAGS)

clean:
\trm -f snn_model.o libsnn.a snn_run

.PHONY: all clean
"""
