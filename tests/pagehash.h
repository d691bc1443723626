/* SPDX-License-Identifier: MIT */
/* pagehash: the per-page hash and the page-content generator shared by lp-dump and lp-restore. */
#ifndef LP_PAGEHASH_H
#define LP_PAGEHASH_H

#include <stdint.h>
#include <string.h>

#define PH_PAGE 4096u
#define PH_WORDS (PH_PAGE / 8)

#define PH_K1 0x9e3779b97f4a7c15ull
#define PH_K2 0xbf58476d1ce4e5b9ull
#define PH_K3 0x94d049bb133111ebull

static inline uint64_t ph_mix(uint64_t z)
{
	z = (z ^ (z >> 30)) * PH_K2;
	z = (z ^ (z >> 27)) * PH_K3;
	return z ^ (z >> 31);
}

/*
 * Four independent lanes, each a chain h = rotl((h ^ (w + pos*K1)) * K2).
 * For fixed later words every step is a bijection of h, and for a fixed h
 * it is injective in w, so any change confined to one word always changes
 * the lane, and the final combine is injective in each lane: a single
 * changed word (hence byte) always changes the hash. Other changes collide
 * with probability ~2^-64. Four lanes keep four multiplies in flight.
 */
static inline uint64_t pagehash(const void *page)
{
	const uint64_t *w = page;
	uint64_t a = 1, b = 2, c = 3, d = 4, h;
	unsigned int i;

	for (i = 0; i < PH_WORDS; i += 4) {
		a = (a ^ (w[i + 0] + (uint64_t)(i + 1) * PH_K1)) * PH_K2;
		b = (b ^ (w[i + 1] + (uint64_t)(i + 2) * PH_K1)) * PH_K2;
		c = (c ^ (w[i + 2] + (uint64_t)(i + 3) * PH_K1)) * PH_K2;
		d = (d ^ (w[i + 3] + (uint64_t)(i + 4) * PH_K1)) * PH_K2;
		a = (a << 29) | (a >> 35);
		b = (b << 29) | (b >> 35);
		c = (c << 29) | (c >> 35);
		d = (d << 29) | (d >> 35);
	}
	h = ph_mix(a);
	h = ph_mix(h ^ b);
	h = ph_mix(h ^ c);
	h = ph_mix(h ^ d);
	return h;
}

static inline uint64_t pagehash_zero(void)
{
	static const uint64_t zero[PH_WORDS];

	return pagehash(zero);
}

/*
 * The content of a data page: a splitmix64 stream keyed by (seed, level,
 * process index, vma index, page index), so a page served from the wrong
 * offset, process, level or VMA never matches. Word 0 is never zero, so a
 * data page is never mistaken for a zero page.
 */
static inline void ph_fill(void *page, uint64_t seed, uint32_t level, uint32_t proc, uint32_t vma,
			   uint64_t pgidx)
{
	uint64_t *w = page, s;
	unsigned int i;

	s = ph_mix(seed ^ ph_mix(((uint64_t)level << 48) ^ ((uint64_t)proc << 32) ^
				 ((uint64_t)vma << 24) ^ (pgidx * PH_K3)));
	for (i = 0; i < PH_WORDS; i++) {
		s += PH_K1;
		w[i] = ph_mix(s);
	}
	w[0] |= 1;
}

/* A small deterministic PRNG for choices (page classes, orders, ranges). */
static inline uint64_t ph_rand(uint64_t *state)
{
	*state += PH_K1;
	return ph_mix(*state);
}

#endif
