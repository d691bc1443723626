/* SPDX-License-Identifier: MIT */
/* ranges: sorted segments with per-page bitmaps, indexed so faults and prefetch stay cheap. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "images.h"
#include "ranges.h"

/*
 * A segment whose count drops to 0 frees its bitmap and stays in the
 * array, marked dead in the live index, until the next operation that
 * edits the array anyway (add, drop, move): removing it at once would
 * cost a memmove of the whole array per emptied segment. ranges_next
 * walks the live index, never the dead segments.
 */
struct seg {
	uint64_t start;		/* run-time address of the first page */
	uint64_t end;
	uint64_t img;		/* image address of the first page */
	uint64_t count;		/* pages still lazy; 0: bits is NULL */
	uint64_t first;		/* no lazy page below this page index */
	uint64_t *bits;		/* bit i: page i lazy; bits past the end are 0 */
};

/*
 * The live index is a two-level bitmap over segment indices: bit i of
 * live is set iff segs[i].count != 0, bit w of live_sum iff live[w] != 0.
 * Bits at and above nr are always 0. After every edit of the array all
 * segments are non-empty, so the index only ever needs "all of [0, nr)"
 * rebuilt, never shifted.
 */
struct ranges {
	struct seg *segs;
	size_t nr;
	size_t cap;
	size_t nr_empty;	/* segments with count 0 still in segs */
	uint64_t remaining;
	uint64_t *live;
	uint64_t *live_sum;
	size_t live_cap;	/* segments the index covers, a multiple of LIVE_SPAN */
};

#define LIVE_SPAN 4096		/* segments per live_sum word */

static unsigned int page_shift;
static pthread_once_t page_once = PTHREAD_ONCE_INIT;

static void ranges_page_init(void)
{
	page_shift = __builtin_ctzll(pagemap_page_size());
}

#define PAGE_MASK_LOW ((1ULL << page_shift) - 1)

static inline uint64_t words(uint64_t nbits)
{
	return (nbits + 63) / 64;
}

static inline uint64_t min_u64(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

static inline uint64_t max_u64(uint64_t a, uint64_t b)
{
	return a > b ? a : b;
}

static inline uint64_t seg_pages(const struct seg *s)
{
	return (s->end - s->start) >> page_shift;
}

/* The first bit at or after FROM that is set (or clear, if !SET), below LIMIT; LIMIT if none. */
static uint64_t bits_next(const uint64_t *bits, uint64_t limit, uint64_t from, bool set)
{
	uint64_t w, nw = words(limit), v;

	if (from >= limit)
		return limit;
	w = from / 64;
	v = (set ? bits[w] : ~bits[w]) & (~0ULL << (from % 64));
	while (!v) {
		if (++w >= nw)
			return limit;
		v = set ? bits[w] : ~bits[w];
	}
	return min_u64(w * 64 + __builtin_ctzll(v), limit);
}

/* Clears bits [from, to); returns how many were set. */
static uint64_t bits_clear(uint64_t *bits, uint64_t from, uint64_t to)
{
	uint64_t n = 0;

	while (from < to) {
		uint64_t w = from / 64, lo = from % 64;
		uint64_t span = min_u64(to - from, 64 - lo);
		uint64_t mask = (span == 64 ? ~0ULL : (1ULL << span) - 1) << lo;

		n += __builtin_popcountll(bits[w] & mask);
		bits[w] &= ~mask;
		from += span;
	}
	return n;
}

/* Copies N bits of SRC (SRC_NBITS long) from bit OFF to DST at bit 0; returns how many are set. */
static uint64_t bits_extract(uint64_t *dst, const uint64_t *src, uint64_t src_nbits,
			     uint64_t off, uint64_t n)
{
	uint64_t j, nw = words(n), snw = words(src_nbits), cnt = 0;

	for (j = 0; j < nw; j++) {
		uint64_t pos = off + j * 64, w = pos / 64, sh = pos % 64, v;

		v = src[w] >> sh;
		if (sh && w + 1 < snw)
			v |= src[w + 1] << (64 - sh);
		if (j == nw - 1 && n % 64)
			v &= (1ULL << (n % 64)) - 1;
		dst[j] = v;
		cnt += __builtin_popcountll(v);
	}
	return cnt;
}

static void live_set(struct ranges *r, size_t i)
{
	r->live[i / 64] |= 1ULL << (i % 64);
	r->live_sum[i / LIVE_SPAN] |= 1ULL << (i / 64 % 64);
}

static void live_clear(struct ranges *r, size_t i)
{
	r->live[i / 64] &= ~(1ULL << (i % 64));
	if (!r->live[i / 64])
		r->live_sum[i / LIVE_SPAN] &= ~(1ULL << (i / 64 % 64));
}

/* The first non-empty segment at or after index I; nr if none. */
static size_t live_next(const struct ranges *r, size_t i)
{
	size_t w, sw, nsw;
	uint64_t v;

	if (i >= r->nr)
		return r->nr;
	w = i / 64;
	v = r->live[w] & (~0ULL << (i % 64));
	if (v)
		return w * 64 + __builtin_ctzll(v);
	w++;
	nsw = (r->nr + LIVE_SPAN - 1) / LIVE_SPAN;
	sw = w / 64;
	if (sw >= nsw)
		return r->nr;
	v = r->live_sum[sw] & (~0ULL << (w % 64));
	while (!v) {
		if (++sw >= nsw)
			return r->nr;
		v = r->live_sum[sw];
	}
	w = sw * 64 + __builtin_ctzll(v);
	return w * 64 + __builtin_ctzll(r->live[w]);
}

/* Marks [0, nr) live and everything else dead. */
static void live_reset(struct ranges *r)
{
	size_t w, full = r->nr / 64;

	if (!r->live_cap)
		return;
	memset(r->live, 0, r->live_cap / 64 * sizeof(*r->live));
	memset(r->live_sum, 0, r->live_cap / LIVE_SPAN * sizeof(*r->live_sum));
	for (w = 0; w < full; w++)
		r->live[w] = ~0ULL;
	if (r->nr % 64)
		r->live[full] = (1ULL << (r->nr % 64)) - 1;
	for (w = 0; w < words(r->nr); w++)
		r->live_sum[w / 64] |= 1ULL << (w % 64);
}

static int live_reserve(struct ranges *r, size_t cap)
{
	size_t ncap = r->live_cap ? r->live_cap : LIVE_SPAN;
	uint64_t *p;

	if (cap <= r->live_cap)
		return 0;
	while (ncap < cap)
		ncap *= 2;
	p = realloc(r->live, ncap / 64 * sizeof(*p));
	if (!p)
		return -ENOMEM;
	memset(p + r->live_cap / 64, 0, (ncap - r->live_cap) / 64 * sizeof(*p));
	r->live = p;
	p = realloc(r->live_sum, ncap / LIVE_SPAN * sizeof(*p));
	if (!p)
		return -ENOMEM;
	memset(p + r->live_cap / LIVE_SPAN, 0, (ncap - r->live_cap) / LIVE_SPAN * sizeof(*p));
	r->live_sum = p;
	r->live_cap = ncap;
	return 0;
}

static int ranges_reserve(struct ranges *r, size_t need)
{
	size_t ncap = r->cap ? r->cap : 16;
	struct seg *p;

	if (need > r->cap) {
		while (ncap < need)
			ncap *= 2;
		p = realloc(r->segs, ncap * sizeof(*p));
		if (!p)
			return -ENOMEM;
		r->segs = p;
		r->cap = ncap;
	}
	return live_reserve(r, r->cap);
}

/* Removes the empty segments; afterwards every segment is live. */
static void ranges_compact(struct ranges *r)
{
	size_t i, j = 0;

	if (!r->nr_empty)
		return;
	for (i = 0; i < r->nr; i++)
		if (r->segs[i].count)
			r->segs[j++] = r->segs[i];
	r->nr = j;
	r->nr_empty = 0;
	live_reset(r);
}

/* The first segment whose end is above ADDR; nr if none. */
static size_t seg_after(const struct ranges *r, uint64_t addr)
{
	size_t lo = 0, hi = r->nr;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (r->segs[mid].end > addr)
			hi = mid;
		else
			lo = mid + 1;
	}
	return lo;
}

/* The non-empty segment holding ADDR, with ADDR's page index in *PG. */
static const struct seg *seg_find(const struct ranges *r, uint64_t addr, uint64_t *pg)
{
	size_t i = seg_after(r, addr);
	const struct seg *s;

	if (i >= r->nr)
		return NULL;
	s = &r->segs[i];
	if (s->start > addr || !s->count)
		return NULL;
	*pg = (addr - s->start) >> page_shift;
	return s;
}

static inline bool seg_test(const struct seg *s, uint64_t pg)
{
	return s->bits[pg / 64] >> (pg % 64) & 1;
}

/* The run of lazy pages from page PG (which is lazy) of S, at most MAX_PAGES. */
static void seg_run(const struct seg *s, uint64_t pg, uint64_t max_pages, struct rrun *out)
{
	uint64_t limit = pg + min_u64(max_pages, seg_pages(s) - pg);

	out->addr = s->start + (pg << page_shift);
	out->img = s->img + (pg << page_shift);
	out->nr_pages = bits_next(s->bits, limit, pg, false) - pg;
}

/* [a, b) of S as a new segment; out->count 0 and no bitmap if nothing there is lazy. */
static int seg_slice(const struct seg *s, uint64_t a, uint64_t b, struct seg *out)
{
	uint64_t off = (a - s->start) >> page_shift, n = (b - a) >> page_shift;
	uint64_t *bits;

	out->start = a;
	out->end = b;
	out->img = s->img + (a - s->start);
	out->count = 0;
	out->first = 0;
	out->bits = NULL;
	if (!s->count)
		return 0;
	bits = malloc(words(n) * sizeof(*bits));
	if (!bits)
		return -ENOMEM;
	out->count = bits_extract(bits, s->bits, seg_pages(s), off, n);
	if (!out->count) {
		free(bits);
		return 0;
	}
	out->bits = bits;
	out->first = bits_next(bits, n, 0, true);
	return 0;
}

struct ranges *ranges_new(void)
{
	pthread_once(&page_once, ranges_page_init);
	return calloc(1, sizeof(struct ranges));
}

void ranges_free(struct ranges *r)
{
	size_t i;

	if (!r)
		return;
	for (i = 0; i < r->nr; i++)
		free(r->segs[i].bits);
	free(r->segs);
	free(r->live);
	free(r->live_sum);
	free(r);
}

int ranges_add(struct ranges *r, uint64_t start, uint64_t end, uint64_t img_start)
{
	uint64_t n, *bits;
	size_t i;

	if (!r || start >= end || (start | end | img_start) & PAGE_MASK_LOW)
		return -EINVAL;
	n = (end - start) >> page_shift;
	/* the image address of the last page must not wrap */
	if (end - start - (1ULL << page_shift) > UINT64_MAX - img_start)
		return -EINVAL;
	/* a segment with nothing lazy left no longer counts as overlapping */
	ranges_compact(r);
	i = seg_after(r, start);
	if (i < r->nr && r->segs[i].start < end)
		return -EINVAL;
	if (ranges_reserve(r, r->nr + 1))
		return -ENOMEM;
	bits = malloc(words(n) * sizeof(*bits));
	if (!bits)
		return -ENOMEM;
	memset(bits, 0xff, words(n) * sizeof(*bits));
	if (n % 64)
		bits[n / 64] = (1ULL << (n % 64)) - 1;
	memmove(&r->segs[i + 1], &r->segs[i], (r->nr - i) * sizeof(*r->segs));
	r->segs[i] = (struct seg){
		.start = start, .end = end, .img = img_start, .count = n, .first = 0, .bits = bits,
	};
	/* no empty segments, so the live set is [0, nr) and grows at the top */
	live_set(r, r->nr);
	r->nr++;
	r->remaining += n;
	return 0;
}

bool ranges_lookup(const struct ranges *r, uint64_t addr, uint64_t *img)
{
	const struct seg *s;
	uint64_t pg;

	if (!r)
		return false;
	s = seg_find(r, addr, &pg);
	if (!s || !seg_test(s, pg))
		return false;
	if (img)
		*img = s->img + (pg << page_shift);
	return true;
}

bool ranges_run(const struct ranges *r, uint64_t addr, uint64_t max_pages, struct rrun *out)
{
	const struct seg *s;
	uint64_t pg;

	if (!r || !max_pages)
		return false;
	s = seg_find(r, addr, &pg);
	if (!s || !seg_test(s, pg))
		return false;
	seg_run(s, pg, max_pages, out);
	return true;
}

bool ranges_next(const struct ranges *r, uint64_t hint, uint64_t max_pages, struct rrun *out)
{
	size_t i, hint_seg;
	uint64_t hint_pg = 0;
	int pass;

	if (!r || !r->remaining || !max_pages)
		return false;
	i = hint_seg = seg_after(r, hint);
	if (i < r->nr && r->segs[i].start <= hint)
		hint_pg = (hint - r->segs[i].start) >> page_shift;
	for (pass = 0; pass < 2; pass++) {
		for (i = live_next(r, i); i < r->nr; i = live_next(r, i + 1)) {
			const struct seg *s = &r->segs[i];
			uint64_t n = seg_pages(s), from = s->first, b;

			if (pass == 0 && i == hint_seg)
				from = max_u64(from, hint_pg);
			b = bits_next(s->bits, n, from, true);
			if (b < n) {
				seg_run(s, b, max_pages, out);
				return true;
			}
		}
		i = 0;
	}
	return false;
}

uint64_t ranges_clear(struct ranges *r, uint64_t addr, uint64_t nr_pages)
{
	uint64_t end, done = 0;
	size_t i;

	if (!r || !nr_pages)
		return 0;
	addr &= ~PAGE_MASK_LOW;
	if (nr_pages > (UINT64_MAX - addr) >> page_shift)
		end = UINT64_MAX;
	else
		end = addr + (nr_pages << page_shift);
	for (i = seg_after(r, addr); i < r->nr && r->segs[i].start < end; i++) {
		struct seg *s = &r->segs[i];
		uint64_t pa, pb, c;

		if (!s->count)
			continue;
		pa = (max_u64(addr, s->start) - s->start) >> page_shift;
		pb = (min_u64(end, s->end) - s->start) >> page_shift;
		c = bits_clear(s->bits, pa, pb);
		if (!c)
			continue;
		s->count -= c;
		done += c;
		if (pa <= s->first && s->first < pb)
			s->first = pb;
		if (!s->count) {
			free(s->bits);
			s->bits = NULL;
			s->first = 0;
			live_clear(r, i);
			r->nr_empty++;
		}
	}
	r->remaining -= done;
	return done;
}


/* The first segment whose start is at or above ADDR; nr if none. */
static size_t seg_from(const struct ranges *r, uint64_t addr)
{
	size_t lo = 0, hi = r->nr;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (r->segs[mid].start >= addr)
			hi = mid;
		else
			lo = mid + 1;
	}
	return lo;
}

/* Only called with every segment live (after ranges_compact). */
static void live_resize(struct ranges *r, size_t old, size_t nr)
{
	for (; old < nr; old++)
		live_set(r, old);
	while (old > nr)
		live_clear(r, --old);
}

struct hole {
	uint64_t start;
	uint64_t end;
};

/* Appends to OUT[*NR] the parts of S outside holes H (non-empty, sorted) that hold lazy pages. */
static int seg_cut(const struct seg *s, const struct hole *h, size_t nh, struct seg *out,
		   size_t *nr, size_t max)
{
	uint64_t cur = s->start;
	size_t k;

	for (k = 0; k <= nh; k++) {
		uint64_t e = k < nh ? min_u64(h[k].start, s->end) : s->end;

		if (cur < e) {
			if (*nr == max || seg_slice(s, cur, e, &out[*nr]))
				return -ENOMEM;
			if (out[*nr].count)
				(*nr)++;
		}
		if (k < nh)
			cur = max_u64(cur, h[k].end);
	}
	return 0;
}

/* Merges two address-sorted runs of segments into DST; returns how many. */
static size_t segs_merge(struct seg *dst, const struct seg *a, size_t na, const struct seg *b,
			 size_t nb)
{
	size_t i = 0, j = 0, n = 0;

	while (i < na || j < nb) {
		if (j == nb || (i < na && a[i].start < b[j].start))
			dst[n++] = a[i++];
		else
			dst[n++] = b[j++];
	}
	return n;
}

/*
 * Cuts the holes H (one or two, non-empty, sorted by start) out of the
 * segments and puts MOVED (sorted, inside hole MG) in. All allocation
 * happens before anything is changed, so on -ENOMEM the ranges are as
 * they were. Each hole touches a contiguous run of segments (a region);
 * only the regions are rewritten, by splicing, so the cost beyond the
 * touched segments is one memmove of the array tail per region. The
 * parts of cut segments left outside the holes are at most four: each
 * one begins at a hole's end or ends at a hole's start.
 */
static int ranges_rewrite(struct ranges *r, const struct hole *h, size_t nh, size_t mg,
			  const struct seg *moved, size_t nr_moved)
{
	struct {
		size_t lo, hi;	/* segments replaced */
		size_t first, nr;	/* by these in cont */
	} reg[2];
	struct seg rem[4], *cont = NULL;
	size_t nr_rem = 0, nreg = nh, g, i, pos, nr;
	uint64_t remaining;

	ranges_compact(r);
	for (g = 0; g < nh; g++) {
		reg[g].lo = seg_after(r, h[g].start);
		reg[g].hi = seg_from(r, h[g].end);
	}
	/* regions that overlap or touch become one, so the splices stay ordered */
	if (nh == 2 && reg[1].lo <= reg[0].hi) {
		reg[0].hi = max_u64(reg[0].hi, reg[1].hi);
		nreg = 1;
		mg = 0;
	}
	if (!nr_moved) {
		for (g = 0; g < nreg && reg[g].lo == reg[g].hi; g++)
			;
		if (g == nreg)
			return 0;
	}

	for (g = 0; g < nreg; g++) {
		reg[g].first = nr_rem;
		for (i = reg[g].lo; i < reg[g].hi; i++)
			if (seg_cut(&r->segs[i], h, nh, rem, &nr_rem, 4))
				goto fail;
		reg[g].nr = nr_rem - reg[g].first;
	}
	cont = malloc(max_u64(nr_rem + nr_moved, 1) * sizeof(*cont));
	if (!cont)
		goto fail;
	for (g = pos = 0; g < nreg; g++) {
		size_t n = segs_merge(cont + pos, rem + reg[g].first, reg[g].nr, moved,
				      g == mg ? nr_moved : 0);

		reg[g].first = pos;
		reg[g].nr = n;
		pos += n;
	}
	if (ranges_reserve(r, r->nr + pos))
		goto fail;

	/* commit: nothing below can fail */
	remaining = r->remaining;
	nr = r->nr;
	for (g = nreg; g-- > 0;) {
		for (i = reg[g].lo; i < reg[g].hi; i++) {
			remaining -= r->segs[i].count;
			free(r->segs[i].bits);
		}
		memmove(&r->segs[reg[g].lo + reg[g].nr], &r->segs[reg[g].hi],
			(nr - reg[g].hi) * sizeof(*r->segs));
		memcpy(&r->segs[reg[g].lo], cont + reg[g].first, reg[g].nr * sizeof(*r->segs));
		for (i = 0; i < reg[g].nr; i++)
			remaining += cont[reg[g].first + i].count;
		nr = nr + reg[g].nr - (reg[g].hi - reg[g].lo);
	}
	live_resize(r, r->nr, nr);
	r->nr = nr;
	r->remaining = remaining;
	free(cont);
	return 0;
fail:
	while (nr_rem)
		free(rem[--nr_rem].bits);
	free(cont);
	return -ENOMEM;
}

uint64_t ranges_drop(struct ranges *r, uint64_t start, uint64_t end)
{
	struct hole h;
	uint64_t before;

	if (!r)
		return 0;
	h.start = start & ~PAGE_MASK_LOW;
	h.end = end > UINT64_MAX - PAGE_MASK_LOW ? UINT64_MAX & ~PAGE_MASK_LOW
						 : (end + PAGE_MASK_LOW) & ~PAGE_MASK_LOW;
	if (h.start >= h.end)
		return 0;
	before = r->remaining;
	/*
	 * Without memory to split, forgetting the pages is still right: the
	 * segment keeps covering the hole, but nothing in it is lazy.
	 */
	if (ranges_rewrite(r, &h, 1, 0, NULL, 0))
		return ranges_clear(r, h.start, (h.end - h.start) >> page_shift);
	return before - r->remaining;
}

int ranges_move(struct ranges *r, uint64_t from, uint64_t to, uint64_t len)
{
	struct hole h[2];
	struct seg *moved = NULL;
	size_t lo, hi, i, nr_moved = 0, mg;
	int ret = 0;

	if (!r || (from | to | len) & PAGE_MASK_LOW || from + len < from || to + len < to)
		return -EINVAL;
	if (!len || from == to)
		return 0;
	ranges_compact(r);
	lo = seg_after(r, from);
	hi = seg_from(r, from + len);
	if (hi > lo) {
		moved = malloc((hi - lo) * sizeof(*moved));
		if (!moved)
			return -ENOMEM;
	}
	for (i = lo; i < hi; i++) {
		const struct seg *s = &r->segs[i];
		struct seg *m = &moved[nr_moved];

		ret = seg_slice(s, max_u64(s->start, from), min_u64(s->end, from + len), m);
		if (ret)
			goto out;
		if (m->count) {
			m->start += to - from;
			m->end += to - from;
			nr_moved++;
		}
	}
	if (from < to) {
		h[0] = (struct hole){ from, from + len };
		h[1] = (struct hole){ to, to + len };
		mg = 1;
	} else {
		h[0] = (struct hole){ to, to + len };
		h[1] = (struct hole){ from, from + len };
		mg = 0;
	}
	ret = ranges_rewrite(r, h, 2, mg, moved, nr_moved);
out:
	if (ret)
		while (nr_moved)
			free(moved[--nr_moved].bits);
	free(moved);
	return ret;
}

struct ranges *ranges_clone(const struct ranges *r)
{
	struct ranges *c = ranges_new();
	size_t i;

	if (!c || !r)
		return c;
	if (ranges_reserve(c, r->nr - r->nr_empty))
		goto fail;
	for (i = 0; i < r->nr; i++) {
		const struct seg *s = &r->segs[i];
		struct seg *d = &c->segs[c->nr];
		size_t sz = words(seg_pages(s)) * sizeof(*s->bits);

		if (!s->count)
			continue;
		*d = *s;
		d->bits = malloc(sz);
		if (!d->bits)
			goto fail;
		memcpy(d->bits, s->bits, sz);
		c->nr++;
	}
	c->remaining = r->remaining;
	live_reset(c);
	return c;
fail:
	ranges_free(c);
	return NULL;
}

uint64_t ranges_remaining(const struct ranges *r)
{
	return r ? r->remaining : 0;
}

/* Segments emptied by clears are not counted: they are gone as far as callers can tell. */
uint64_t ranges_segments(const struct ranges *r)
{
	return r ? r->nr - r->nr_empty : 0;
}
