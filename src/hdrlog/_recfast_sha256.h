/* SHA-256 (FIPS 180-4) compression for hdrlog._recfast's redaction markers (HMAC-SHA256 from precomputed pad
 * states), included by _recfast.c only.
 *
 * Two implementations of the compression function: portable C, and the x86 SHA extensions (SHA-NI), chosen once at
 * import by CPUID. A marker costs two compressions (the value's last block of the inner hash, the outer hash's one
 * block): ~2,000 cycles in C, ~300 with SHA-NI. tests/test_recfast.py compares both with hashlib on every length
 * 0..300 and on large inputs.
 *
 * sha_block_fn(state, blocks, n): n 64-byte blocks into state (8 words, FIPS 180-4's H0..H7). */
#include <stdint.h>
#include <string.h>

static const uint32_t sha_k[64] = {
    0x428a2f98u, 0x71374491u, 0xb5c0fbcfu, 0xe9b5dba5u, 0x3956c25bu, 0x59f111f1u, 0x923f82a4u, 0xab1c5ed5u,
    0xd807aa98u, 0x12835b01u, 0x243185beu, 0x550c7dc3u, 0x72be5d74u, 0x80deb1feu, 0x9bdc06a7u, 0xc19bf174u,
    0xe49b69c1u, 0xefbe4786u, 0x0fc19dc6u, 0x240ca1ccu, 0x2de92c6fu, 0x4a7484aau, 0x5cb0a9dcu, 0x76f988dau,
    0x983e5152u, 0xa831c66du, 0xb00327c8u, 0xbf597fc7u, 0xc6e00bf3u, 0xd5a79147u, 0x06ca6351u, 0x14292967u,
    0x27b70a85u, 0x2e1b2138u, 0x4d2c6dfcu, 0x53380d13u, 0x650a7354u, 0x766a0abbu, 0x81c2c92eu, 0x92722c85u,
    0xa2bfe8a1u, 0xa81a664bu, 0xc24b8b70u, 0xc76c51a3u, 0xd192e819u, 0xd6990624u, 0xf40e3585u, 0x106aa070u,
    0x19a4c116u, 0x1e376c08u, 0x2748774cu, 0x34b0bcb5u, 0x391c0cb3u, 0x4ed8aa4au, 0x5b9cca4fu, 0x682e6ff3u,
    0x748f82eeu, 0x78a5636fu, 0x84c87814u, 0x8cc70208u, 0x90befffau, 0xa4506cebu, 0xbef9a3f7u, 0xc67178f2u,
};
static const uint32_t sha_iv[8] = {
    0x6a09e667u, 0xbb67ae85u, 0x3c6ef372u, 0xa54ff53au, 0x510e527fu, 0x9b05688cu, 0x1f83d9abu, 0x5be0cd19u,
};

/* memset that the compiler may not drop as a dead store (buffers that held a secret, about to go out of scope) */
static void *(*const volatile sha_wipe_fn)(void *, int, size_t) = memset;
#define sha_wipe(p, n) ((void)sha_wipe_fn((p), 0, (n)))

typedef void (*sha_block_fn)(uint32_t st[8], const unsigned char *p, size_t n);

#define SHA_ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static inline uint32_t sha_be32(const unsigned char *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

static void sha_blocks_c(uint32_t st[8], const unsigned char *p, size_t n) {
    uint32_t w[64];
    for (; n > 0; n--, p += 64) {
        for (int t = 0; t < 16; t++)
            w[t] = sha_be32(p + 4 * t);
        for (int t = 16; t < 64; t++) {
            uint32_t s0 = SHA_ROR(w[t - 15], 7) ^ SHA_ROR(w[t - 15], 18) ^ (w[t - 15] >> 3);
            uint32_t s1 = SHA_ROR(w[t - 2], 17) ^ SHA_ROR(w[t - 2], 19) ^ (w[t - 2] >> 10);
            w[t] = w[t - 16] + s0 + w[t - 7] + s1;
        }
        uint32_t a = st[0], b = st[1], c = st[2], d = st[3], e = st[4], f = st[5], g = st[6], h = st[7];
        for (int t = 0; t < 64; t++) {
            uint32_t t1 = h + (SHA_ROR(e, 6) ^ SHA_ROR(e, 11) ^ SHA_ROR(e, 25)) + ((e & f) ^ (~e & g)) + sha_k[t] + w[t];
            uint32_t t2 = (SHA_ROR(a, 2) ^ SHA_ROR(a, 13) ^ SHA_ROR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
            h = g;
            g = f;
            f = e;
            e = d + t1;
            d = c;
            c = b;
            b = a;
            a = t1 + t2;
        }
        st[0] += a;
        st[1] += b;
        st[2] += c;
        st[3] += d;
        st[4] += e;
        st[5] += f;
        st[6] += g;
        st[7] += h;
    }
    sha_wipe(w, sizeof(w));  /* the schedule holds the message (a secret): not left on the stack */
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#include <immintrin.h>

/* The SHA extensions keep the state as two vectors, {A, B, E, F} and {C, D, G, H} (highest lane first); each
 * sha256rnds2 does two rounds, from the low two lanes of its third operand (message words plus constants). */
__attribute__((target("sha,sse4.1,ssse3"))) static void sha_blocks_ni(uint32_t st[8], const unsigned char *p,
                                                                        size_t n) {
    const __m128i bswap = _mm_set_epi64x(0x0c0d0e0f08090a0bLL, 0x0405060700010203LL);
    __m128i dcba = _mm_loadu_si128((const __m128i *)&st[0]);  /* lanes (low to high): A B C D */
    __m128i hgfe = _mm_loadu_si128((const __m128i *)&st[4]);  /* E F G H */
    __m128i cdab = _mm_shuffle_epi32(dcba, 0xB1);             /* B A D C */
    __m128i efgh = _mm_shuffle_epi32(hgfe, 0x1B);             /* H G F E */
    __m128i abef = _mm_alignr_epi8(cdab, efgh, 8);            /* F E B A */
    __m128i cdgh = _mm_blend_epi16(efgh, cdab, 0xF0);         /* H G D C */
    for (; n > 0; n--, p += 64) {
        __m128i s0 = abef, s1 = cdgh, w[4];
        for (int g = 0; g < 16; g++) {
            __m128i m;
            if (g < 4) {
                m = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 16 * g)), bswap);
            } else {
                m = _mm_sha256msg1_epu32(w[(g - 4) & 3], w[(g - 3) & 3]);
                m = _mm_add_epi32(m, _mm_alignr_epi8(w[(g - 1) & 3], w[(g - 2) & 3], 4));
                m = _mm_sha256msg2_epu32(m, w[(g - 1) & 3]);
            }
            w[g & 3] = m;
            __m128i wk = _mm_add_epi32(m, _mm_loadu_si128((const __m128i *)&sha_k[4 * g]));
            s1 = _mm_sha256rnds2_epu32(s1, s0, wk);
            s0 = _mm_sha256rnds2_epu32(s0, s1, _mm_shuffle_epi32(wk, 0x0E));
        }
        abef = _mm_add_epi32(abef, s0);
        cdgh = _mm_add_epi32(cdgh, s1);
        w[0] = w[1] = w[2] = w[3] = _mm_setzero_si128();
    }
    __m128i feba = _mm_shuffle_epi32(abef, 0x1B);  /* A B E F */
    __m128i dchg = _mm_shuffle_epi32(cdgh, 0xB1);  /* G H C D */
    _mm_storeu_si128((__m128i *)&st[0], _mm_blend_epi16(feba, dchg, 0xF0));  /* A B C D */
    _mm_storeu_si128((__m128i *)&st[4], _mm_alignr_epi8(dchg, feba, 8));     /* E F G H */
}

static int sha_have_ni(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 19)) || !(c & (1u << 9)))  /* SSE4.1, SSSE3 */
        return 0;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d))
        return 0;
    return (b >> 29) & 1;  /* SHA */
}
#else
#define sha_blocks_ni NULL
static int sha_have_ni(void) { return 0; }
#endif

/* The hash of `len` bytes at p, continuing from `st` after `done` bytes (a multiple of 64) already hashed; the
 * 32-byte digest into out. */
static void sha_finish(sha_block_fn fn, uint32_t st[8], uint64_t done, const unsigned char *p, size_t len,
                       unsigned char out[32]) {
    size_t full = len / 64;
    if (full)
        fn(st, p, full);
    unsigned char last[128];
    size_t r = len - full * 64;
    memcpy(last, p + full * 64, r);
    last[r] = 0x80;
    size_t nb = r + 9 <= 64 ? 64 : 128;
    memset(last + r + 1, 0, nb - r - 1);
    uint64_t bits = (done + (uint64_t)len) * 8;
    for (int i = 0; i < 8; i++)
        last[nb - 1 - i] = (unsigned char)(bits >> (8 * i));
    fn(st, last, nb / 64);
    sha_wipe(last, sizeof(last));
    for (int i = 0; i < 8; i++) {
        out[4 * i] = (unsigned char)(st[i] >> 24);
        out[4 * i + 1] = (unsigned char)(st[i] >> 16);
        out[4 * i + 2] = (unsigned char)(st[i] >> 8);
        out[4 * i + 3] = (unsigned char)st[i];
    }
}
