/*
 * pcpu.c - the bitmap per-CPU allocator of mm/percpu.c over the arena.
 *
 * The layout, the locks and the crash story are in pcpu.h.  The functions
 * below carry the kernel's names and follow its algorithms: the block hints
 * (pcpu_block_update, pcpu_block_update_hint_alloc/free, the refreshes), the
 * fit search (pcpu_next_fit_region, pcpu_find_block_fit, pcpu_find_zero_area),
 * pcpu_alloc_area/pcpu_free_area, the slot lists (pcpu_chunk_relocate,
 * isolate/reintegrate), the allocation flow of pcpu_alloc_noprof, free_percpu,
 * and the balance work (pcpu_balance_free, pcpu_reclaim_populated,
 * pcpu_balance_populated).  Everything is in bits of PCPU_MIN_ALLOC_SIZE
 * unless a name says bytes.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "atomic.h"
#include "pcpu.h"

#define BITS_PER_LONG 64
#define BITS_TO_LONGS(n) (((n) + BITS_PER_LONG - 1) / BITS_PER_LONG)
#define PFN_DOWN(x) ((x) >> PK_PAGE_SHIFT)
#define PFN_UP(x) (((x) + PK_PAGE_SIZE - 1) >> PK_PAGE_SHIFT)
#define PFN_ALIGN(x) (((x) + PK_PAGE_SIZE - 1) & ~(uint64_t)(PK_PAGE_SIZE - 1))
#define ALIGN_UP(x, a) (((x) + (a) - 1) & ~((a) - 1))

static inline int imin(int a, int b) { return a < b ? a : b; }
static inline int imax(int a, int b) { return a > b ? a : b; }

/* ---- bitmaps (uint64_t words, as the kernel's unsigned long on 64-bit) ---- */

static inline int test_bit(int nr, const uint64_t *map)
{
	return (map[nr / BITS_PER_LONG] >> (nr % BITS_PER_LONG)) & 1;
}

static inline void set_bit(int nr, uint64_t *map)
{
	map[nr / BITS_PER_LONG] |= 1ull << (nr % BITS_PER_LONG);
}

static void bitmap_set(uint64_t *map, int start, int len)
{
	while (len > 0) {
		int b = start % BITS_PER_LONG, n = imin(len, BITS_PER_LONG - b);
		uint64_t m = (n == BITS_PER_LONG ? ~0ull : ((1ull << n) - 1)) << b;

		map[start / BITS_PER_LONG] |= m;
		start += n;
		len -= n;
	}
}

static void bitmap_clear(uint64_t *map, int start, int len)
{
	while (len > 0) {
		int b = start % BITS_PER_LONG, n = imin(len, BITS_PER_LONG - b);
		uint64_t m = (n == BITS_PER_LONG ? ~0ull : ((1ull << n) - 1)) << b;

		map[start / BITS_PER_LONG] &= ~m;
		start += n;
		len -= n;
	}
}

/* First set (or, with @invert, clear) bit in [start, size), else size. */
static int find_next(const uint64_t *map, int size, int start, uint64_t invert)
{
	uint64_t w;
	int i;

	if (start >= size)
		return size;
	i = start / BITS_PER_LONG;
	w = (map[i] ^ invert) & (~0ull << (start % BITS_PER_LONG));
	for (;;) {
		if (w) {
			int r = i * BITS_PER_LONG + __builtin_ctzll(w);

			return r < size ? r : size;
		}
		if (++i * BITS_PER_LONG >= size)
			return size;
		w = map[i] ^ invert;
	}
}

static inline int find_next_bit(const uint64_t *map, int size, int start)
{
	return find_next(map, size, start, 0);
}

static inline int find_next_zero_bit(const uint64_t *map, int size, int start)
{
	return find_next(map, size, start, ~0ull);
}

/* Last set bit in [0, size), else size (the kernel's convention). */
static int find_last_bit(const uint64_t *map, int size)
{
	int i;

	if (size <= 0)
		return size;
	i = (size - 1) / BITS_PER_LONG;
	{
		int top = size - i * BITS_PER_LONG;
		uint64_t w = map[i] & (top == BITS_PER_LONG ? ~0ull : ((1ull << top) - 1));

		for (;;) {
			if (w)
				return i * BITS_PER_LONG + 63 - __builtin_clzll(w);
			if (i-- == 0)
				return size;
			w = map[i];
		}
	}
}

static int bitmap_weight(const uint64_t *map, int size)
{
	int i, n = 0;

	for (i = 0; i < size / BITS_PER_LONG; i++)
		n += __builtin_popcountll(map[i]);
	if (size % BITS_PER_LONG)
		n += __builtin_popcountll(map[i] & ((1ull << (size % BITS_PER_LONG)) - 1));
	return n;
}

static inline int fls32(unsigned int x) { return x ? 32 - __builtin_clz(x) : 0; }
static inline int ffs_(unsigned int x) { return __builtin_ctz(x); }	/* __ffs: x != 0 */

/* ---- chunk accessors --------------------------------------------------- */

static inline uint64_t *alloc_map(struct pk_pcpu_chunk *c)
{
	return (uint64_t *)((char *)c + c->alloc_map_off);
}

static inline uint64_t *bound_map(struct pk_pcpu_chunk *c)
{
	return (uint64_t *)((char *)c + c->bound_map_off);
}

static inline struct pk_block_md *md_blocks(struct pk_pcpu_chunk *c)
{
	return (struct pk_block_md *)((char *)c + c->md_blocks_off);
}

static inline uint64_t *populated(struct pk_pcpu_chunk *c)
{
	return (uint64_t *)((char *)c + c->populated_off);
}

static inline uint8_t *memcg_map(struct pk_pcpu_chunk *c)
{
	return (uint8_t *)c + c->memcg_off;
}

static inline int pcpu_chunk_map_bits(const struct pk_pcpu_chunk *c) { return c->map_bits; }
static inline int pcpu_chunk_nr_blocks(const struct pk_pcpu_chunk *c) { return c->nr_pages; }

static inline uint64_t *pcpu_index_alloc_map(struct pk_pcpu_chunk *c, int index)
{
	return alloc_map(c) + index * PCPU_BITMAP_BLOCK_BITS / BITS_PER_LONG;
}

static inline int pcpu_off_to_block_index(int off) { return off / PCPU_BITMAP_BLOCK_BITS; }
static inline int pcpu_off_to_block_off(int off) { return off & (PCPU_BITMAP_BLOCK_BITS - 1); }
static inline int pcpu_block_off_to_off(int index, int off) { return index * PCPU_BITMAP_BLOCK_BITS + off; }

/* Layout of a chunk's meta block for a region of @nr_pages pages. */
static uint32_t chunk_layout(struct pk_pcpu_chunk *c, int nr_pages)
{
	uint32_t off = (uint32_t)pk_round_up(sizeof(*c), 64);
	int bits = nr_pages * PCPU_BITMAP_BLOCK_BITS;

	c->nr_pages = nr_pages;
	c->map_bits = bits;
	c->alloc_map_off = off;
	off += BITS_TO_LONGS(bits) * 8;
	c->bound_map_off = off;
	off += BITS_TO_LONGS(bits + 1) * 8;
	c->md_blocks_off = off;
	off += (uint32_t)(nr_pages * sizeof(struct pk_block_md));
	c->populated_off = off;
	off += BITS_TO_LONGS(nr_pages) * 8;
	c->memcg_off = off;
	off += (uint32_t)bits;
	return off;
}

/* ---- slots (pcpu_size_to_slot and friends) ----------------------------- */

static int __pcpu_size_to_slot(int size)
{
	int highbit = fls32((unsigned int)size);

	return imax(highbit - PCPU_SLOT_BASE_SHIFT + 2, 1);
}

static int pcpu_size_to_slot(const struct pk_pcpu *p, int size)
{
	if (size == (int)p->unit_size)
		return p->free_slot;
	return __pcpu_size_to_slot(size);
}

static int pcpu_chunk_slot(const struct pk_pcpu *p, const struct pk_pcpu_chunk *c)
{
	if (c->free_bytes < PCPU_MIN_ALLOC_SIZE || c->chunk_md.contig_hint == 0)
		return 0;
	return pcpu_size_to_slot(p, c->chunk_md.contig_hint * PCPU_MIN_ALLOC_SIZE);
}

/* Doubly linked slot lists of chunk offsets, heads in struct pk_pcpu. */
static void list_del_chunk(struct pk_arena *a, struct pk_pcpu *p, struct pk_pcpu_chunk *c)
{
	if (c->slot < 0)
		return;
	if (c->prev)
		pk_chunk(a, c->prev)->next = c->next;
	else
		p->slots[c->slot].first = c->next;
	if (c->next)
		pk_chunk(a, c->next)->prev = c->prev;
	else
		p->slots[c->slot].last = c->prev;
	c->next = c->prev = 0;
	c->slot = -1;
}

static void list_add_chunk(struct pk_arena *a, struct pk_pcpu *p, struct pk_pcpu_chunk *c,
			   int slot, int front)
{
	uint64_t off = pk_chunk_off(a, c);

	list_del_chunk(a, p, c);
	c->slot = slot;
	if (front) {
		c->prev = 0;
		c->next = p->slots[slot].first;
		if (c->next)
			pk_chunk(a, c->next)->prev = off;
		else
			p->slots[slot].last = off;
		p->slots[slot].first = off;
	} else {
		c->next = 0;
		c->prev = p->slots[slot].last;
		if (c->prev)
			pk_chunk(a, c->prev)->next = off;
		else
			p->slots[slot].first = off;
		p->slots[slot].last = off;
	}
}

static void __pcpu_chunk_move(struct pk_arena *a, struct pk_pcpu *p, struct pk_pcpu_chunk *c,
			      int slot, int move_front)
{
	if (c->kind != PK_CHUNK_RESERVED)
		list_add_chunk(a, p, c, slot, move_front);
}

static void pcpu_chunk_move(struct pk_arena *a, struct pk_pcpu *p, struct pk_pcpu_chunk *c, int slot)
{
	__pcpu_chunk_move(a, p, c, slot, 1);
}

static void pcpu_chunk_relocate(struct pk_arena *a, struct pk_pcpu *p, struct pk_pcpu_chunk *c,
				int oslot)
{
	int nslot = pcpu_chunk_slot(p, c);

	/* leave isolated chunks in place */
	if (c->isolated)
		return;
	/* A chunk on no list (new, or rebuilt) always moves: oslot -1. */
	if (oslot != nslot || c->slot < 0)
		__pcpu_chunk_move(a, p, c, nslot, oslot < nslot);
}

static void pcpu_isolate_chunk(struct pk_arena *a, struct pk_pcpu *p, struct pk_pcpu_chunk *c)
{
	if (!c->isolated) {
		c->isolated = 1;
		p->nr_empty_pop_pages -= c->nr_empty_pop_pages;
	}
	list_add_chunk(a, p, c, p->to_depopulate_slot, 1);
}

static void pcpu_reintegrate_chunk(struct pk_arena *a, struct pk_pcpu *p, struct pk_pcpu_chunk *c)
{
	if (c->isolated) {
		c->isolated = 0;
		p->nr_empty_pop_pages += c->nr_empty_pop_pages;
		pcpu_chunk_relocate(a, p, c, -1);
	}
}

static inline void pcpu_update_empty_pages(struct pk_pcpu *p, struct pk_pcpu_chunk *c, int nr)
{
	c->nr_empty_pop_pages += nr;
	if (c->kind != PK_CHUNK_RESERVED && !c->isolated)
		p->nr_empty_pop_pages += nr;
}

static inline int pcpu_region_overlap(int a, int b, int x, int y)
{
	return a < y && x < b;
}

/* ---- block hints ------------------------------------------------------- */

/* pcpu_block_update: [start, end) is a whole free area of @block. */
static void pcpu_block_update(struct pk_block_md *block, int start, int end)
{
	int contig = end - start;

	block->first_free = imin(block->first_free, start);
	if (start == 0)
		block->left_free = contig;
	if (end == block->nr_bits)
		block->right_free = contig;

	if (contig > block->contig_hint) {
		/* the old contig hint becomes the scan hint if it lies before */
		if (start > block->contig_hint_start) {
			if (block->contig_hint > block->scan_hint) {
				block->scan_hint_start = block->contig_hint_start;
				block->scan_hint = block->contig_hint;
			} else if (start < block->scan_hint_start) {
				/* keep scan_hint_start < contig_hint_start */
				block->scan_hint = 0;
			}
		} else {
			block->scan_hint = 0;
		}
		block->contig_hint_start = start;
		block->contig_hint = contig;
	} else if (contig == block->contig_hint) {
		if (block->contig_hint_start &&
		    (!start || ffs_((unsigned)start) > ffs_((unsigned)block->contig_hint_start))) {
			/* better aligned start: prefer it */
			block->contig_hint_start = start;
			if (start < block->scan_hint_start && block->contig_hint > block->scan_hint)
				block->scan_hint = 0;
		} else if (start > block->scan_hint_start || block->contig_hint > block->scan_hint) {
			block->scan_hint_start = start;
			block->scan_hint = contig;
		}
	} else {
		/* smaller than contig: maybe a better (larger or later) scan hint */
		if (start < block->contig_hint_start &&
		    (contig > block->scan_hint ||
		     (contig == block->scan_hint && start > block->scan_hint_start))) {
			block->scan_hint_start = start;
			block->scan_hint = contig;
		}
	}
}

/* pcpu_block_update_scan: a free area skipped by pcpu_find_zero_area(). */
static void pcpu_block_update_scan(struct pk_pcpu_chunk *c, int bit_off, int bits)
{
	int s_off = pcpu_off_to_block_off(bit_off);
	int e_off = s_off + bits;
	int s_index, l_bit;

	if (e_off > PCPU_BITMAP_BLOCK_BITS)
		return;
	s_index = pcpu_off_to_block_index(bit_off);
	/* scan backwards: alignment may have skipped free bits */
	l_bit = find_last_bit(pcpu_index_alloc_map(c, s_index), s_off);
	s_off = (s_off == l_bit) ? 0 : l_bit + 1;
	pcpu_block_update(md_blocks(c) + s_index, s_off, e_off);
}

/* pcpu_next_md_free_region, for pcpu_for_each_md_free_region. */
static void pcpu_next_md_free_region(struct pk_pcpu_chunk *c, int *bit_off, int *bits)
{
	int i = pcpu_off_to_block_index(*bit_off);
	int block_off = pcpu_off_to_block_off(*bit_off);
	struct pk_block_md *block;

	*bits = 0;
	for (block = md_blocks(c) + i; i < pcpu_chunk_nr_blocks(c); block++, i++) {
		/* a free area spanning blocks */
		if (*bits) {
			*bits += block->left_free;
			if (block->left_free == PCPU_BITMAP_BLOCK_BITS)
				continue;
			return;
		}
		*bits = block->contig_hint;
		if (*bits && block->contig_hint_start >= block_off &&
		    *bits + block->contig_hint_start < PCPU_BITMAP_BLOCK_BITS) {
			*bit_off = pcpu_block_off_to_off(i, block->contig_hint_start);
			return;
		}
		block_off = 0;
		*bits = block->right_free;
		*bit_off = (i + 1) * PCPU_BITMAP_BLOCK_BITS - block->right_free;
	}
}

static void pcpu_chunk_refresh_hint(struct pk_pcpu_chunk *c, int full_scan)
{
	struct pk_block_md *chunk_md = &c->chunk_md;
	int bit_off, bits;

	if (!full_scan && chunk_md->scan_hint) {
		/* promote scan_hint to contig_hint */
		bit_off = chunk_md->scan_hint_start + chunk_md->scan_hint;
		chunk_md->contig_hint_start = chunk_md->scan_hint_start;
		chunk_md->contig_hint = chunk_md->scan_hint;
		chunk_md->scan_hint = 0;
	} else {
		bit_off = chunk_md->first_free;
		chunk_md->contig_hint = 0;
	}
	bits = 0;
	for (pcpu_next_md_free_region(c, &bit_off, &bits); bit_off < pcpu_chunk_map_bits(c);
	     bit_off += bits + 1, pcpu_next_md_free_region(c, &bit_off, &bits))
		pcpu_block_update(chunk_md, bit_off, bit_off + bits);
}

static void pcpu_block_refresh_hint(struct pk_pcpu_chunk *c, int index)
{
	struct pk_block_md *block = md_blocks(c) + index;
	uint64_t *map = pcpu_index_alloc_map(c, index);
	int start, end;

	if (block->scan_hint) {
		start = block->scan_hint_start + block->scan_hint;
		block->contig_hint_start = block->scan_hint_start;
		block->contig_hint = block->scan_hint;
		block->scan_hint = 0;
	} else {
		start = block->first_free;
		block->contig_hint = 0;
	}
	block->right_free = 0;
	/* for_each_clear_bitrange_from */
	for (start = find_next_zero_bit(map, PCPU_BITMAP_BLOCK_BITS, start);
	     start < PCPU_BITMAP_BLOCK_BITS;
	     start = find_next_zero_bit(map, PCPU_BITMAP_BLOCK_BITS, end + 1)) {
		end = find_next_bit(map, PCPU_BITMAP_BLOCK_BITS, start + 1);
		pcpu_block_update(block, start, end);
	}
}

static void pcpu_block_update_hint_alloc(struct pk_pcpu *p, struct pk_pcpu_chunk *c, int bit_off,
					 int bits)
{
	struct pk_block_md *chunk_md = &c->chunk_md;
	struct pk_block_md *s_block, *e_block, *block;
	int nr_empty_pages = 0;
	int s_index, e_index, s_off, e_off;

	s_index = pcpu_off_to_block_index(bit_off);
	e_index = pcpu_off_to_block_index(bit_off + bits - 1);
	s_off = pcpu_off_to_block_off(bit_off);
	e_off = pcpu_off_to_block_off(bit_off + bits - 1) + 1;
	s_block = md_blocks(c) + s_index;
	e_block = md_blocks(c) + e_index;

	/* s_block */
	if (s_block->contig_hint == PCPU_BITMAP_BLOCK_BITS)
		nr_empty_pages++;
	if (s_off == s_block->first_free)
		s_block->first_free = find_next_zero_bit(pcpu_index_alloc_map(c, s_index),
							 PCPU_BITMAP_BLOCK_BITS, s_off + bits);
	if (pcpu_region_overlap(s_block->scan_hint_start,
				s_block->scan_hint_start + s_block->scan_hint, s_off, s_off + bits))
		s_block->scan_hint = 0;
	if (pcpu_region_overlap(s_block->contig_hint_start,
				s_block->contig_hint_start + s_block->contig_hint, s_off,
				s_off + bits)) {
		/* the block's contig hint is broken: rescan */
		if (!s_off)
			s_block->left_free = 0;
		pcpu_block_refresh_hint(c, s_index);
	} else {
		s_block->left_free = imin(s_block->left_free, s_off);
		if (s_index == e_index)
			s_block->right_free = imin(s_block->right_free, PCPU_BITMAP_BLOCK_BITS - e_off);
		else
			s_block->right_free = 0;
	}

	/* e_block */
	if (s_index != e_index) {
		if (e_block->contig_hint == PCPU_BITMAP_BLOCK_BITS)
			nr_empty_pages++;
		e_block->first_free = find_next_zero_bit(pcpu_index_alloc_map(c, e_index),
							 PCPU_BITMAP_BLOCK_BITS, e_off);
		if (e_off == PCPU_BITMAP_BLOCK_BITS) {
			/* the whole e_block is used: reset it with the middle ones */
			e_block++;
		} else {
			if (e_off > e_block->scan_hint_start)
				e_block->scan_hint = 0;
			e_block->left_free = 0;
			if (e_off > e_block->contig_hint_start)
				pcpu_block_refresh_hint(c, e_index);
			else
				e_block->right_free = imin(e_block->right_free,
							   PCPU_BITMAP_BLOCK_BITS - e_off);
		}
		nr_empty_pages += e_index - s_index - 1;
		for (block = s_block + 1; block < e_block; block++) {
			block->scan_hint = 0;
			block->contig_hint = 0;
			block->left_free = 0;
			block->right_free = 0;
		}
	}

	/*
	 * A non-atomic allocation may cover unpopulated pages: they are counted
	 * here and given back by pcpu_chunk_populated().
	 */
	if (nr_empty_pages)
		pcpu_update_empty_pages(p, c, -nr_empty_pages);

	if (pcpu_region_overlap(chunk_md->scan_hint_start,
				chunk_md->scan_hint_start + chunk_md->scan_hint, bit_off, bit_off + bits))
		chunk_md->scan_hint = 0;
	/* only a broken chunk contig hint needs a chunk scan */
	if (pcpu_region_overlap(chunk_md->contig_hint_start,
				chunk_md->contig_hint_start + chunk_md->contig_hint, bit_off,
				bit_off + bits))
		pcpu_chunk_refresh_hint(c, 0);
}

static void pcpu_block_update_hint_free(struct pk_pcpu *p, struct pk_pcpu_chunk *c, int bit_off,
					int bits)
{
	struct pk_block_md *s_block, *e_block, *block;
	int nr_empty_pages = 0;
	int s_index, e_index, s_off, e_off, start, end;

	s_index = pcpu_off_to_block_index(bit_off);
	e_index = pcpu_off_to_block_index(bit_off + bits - 1);
	s_off = pcpu_off_to_block_off(bit_off);
	e_off = pcpu_off_to_block_off(bit_off + bits - 1) + 1;
	s_block = md_blocks(c) + s_index;
	e_block = md_blocks(c) + e_index;

	/* the free area's extent inside s_block and e_block */
	start = s_off;
	if (s_off == s_block->contig_hint + s_block->contig_hint_start) {
		start = s_block->contig_hint_start;
	} else {
		int l_bit = find_last_bit(pcpu_index_alloc_map(c, s_index), start);

		start = (start == l_bit) ? 0 : l_bit + 1;
	}
	end = e_off;
	if (e_off == e_block->contig_hint_start)
		end = e_block->contig_hint_start + e_block->contig_hint;
	else
		end = find_next_bit(pcpu_index_alloc_map(c, e_index), PCPU_BITMAP_BLOCK_BITS, end);

	e_off = (s_index == e_index) ? end : PCPU_BITMAP_BLOCK_BITS;
	if (!start && e_off == PCPU_BITMAP_BLOCK_BITS)
		nr_empty_pages++;
	pcpu_block_update(s_block, start, e_off);

	if (s_index != e_index) {
		if (end == PCPU_BITMAP_BLOCK_BITS)
			nr_empty_pages++;
		pcpu_block_update(e_block, 0, end);
		nr_empty_pages += e_index - s_index - 1;
		for (block = s_block + 1; block < e_block; block++) {
			block->first_free = 0;
			block->scan_hint = 0;
			block->contig_hint_start = 0;
			block->contig_hint = PCPU_BITMAP_BLOCK_BITS;
			block->left_free = PCPU_BITMAP_BLOCK_BITS;
			block->right_free = PCPU_BITMAP_BLOCK_BITS;
		}
	}
	if (nr_empty_pages)
		pcpu_update_empty_pages(p, c, nr_empty_pages);

	/* the chunk hint may be off by up to a page, never above the free space */
	if ((end - start) >= PCPU_BITMAP_BLOCK_BITS || s_index != e_index)
		pcpu_chunk_refresh_hint(c, 1);
	else
		pcpu_block_update(&c->chunk_md, pcpu_block_off_to_off(s_index, start), end);
}

/* ---- the fit search ----------------------------------------------------- */

static int pcpu_check_block_hint(struct pk_block_md *block, int bits, int align)
{
	int bit_off = ALIGN_UP(block->contig_hint_start, align) - block->contig_hint_start;

	return bit_off + bits <= block->contig_hint;
}

static int pcpu_next_hint(struct pk_block_md *block, int alloc_bits)
{
	if (block->scan_hint && block->contig_hint_start > block->scan_hint_start &&
	    alloc_bits > block->scan_hint)
		return block->scan_hint_start + block->scan_hint;
	return block->first_free;
}

static void pcpu_next_fit_region(struct pk_pcpu_chunk *c, int alloc_bits, int align, int *bit_off,
				 int *bits)
{
	int i = pcpu_off_to_block_index(*bit_off);
	int block_off = pcpu_off_to_block_off(*bit_off);
	struct pk_block_md *block;

	*bits = 0;
	for (block = md_blocks(c) + i; i < pcpu_chunk_nr_blocks(c); block++, i++) {
		if (*bits) {
			*bits += block->left_free;
			if (*bits >= alloc_bits)
				return;
			if (block->left_free == PCPU_BITMAP_BLOCK_BITS)
				continue;
		}
		*bits = ALIGN_UP(block->contig_hint_start, align) - block->contig_hint_start;
		if (block->contig_hint && block->contig_hint_start >= block_off &&
		    block->contig_hint >= *bits + alloc_bits) {
			int start = pcpu_next_hint(block, alloc_bits);

			*bits += alloc_bits + block->contig_hint_start - start;
			*bit_off = pcpu_block_off_to_off(i, start);
			return;
		}
		block_off = 0;
		*bit_off = ALIGN_UP(PCPU_BITMAP_BLOCK_BITS - block->right_free, align);
		*bits = PCPU_BITMAP_BLOCK_BITS - *bit_off;
		*bit_off = pcpu_block_off_to_off(i, *bit_off);
		if (*bits >= alloc_bits)
			return;
	}
	*bit_off = pcpu_chunk_map_bits(c);	/* no fit */
}

static int pcpu_is_populated(struct pk_pcpu_chunk *c, int bit_off, int bits, int *next_off)
{
	int start = (int)PFN_DOWN((uint64_t)bit_off * PCPU_MIN_ALLOC_SIZE);
	int end = (int)PFN_UP((uint64_t)(bit_off + bits) * PCPU_MIN_ALLOC_SIZE);

	start = find_next_zero_bit(populated(c), end, start);
	if (start >= end)
		return 1;
	end = find_next_bit(populated(c), end, start + 1);
	*next_off = end * PK_PAGE_SIZE / PCPU_MIN_ALLOC_SIZE;
	return 0;
}

static int pcpu_find_block_fit(struct pk_pcpu_chunk *c, int alloc_bits, int align, int pop_only)
{
	struct pk_block_md *chunk_md = &c->chunk_md;
	int bit_off, bits, next_off = 0;

	/* does not fit the chunk hint: assume pressure, a new chunk will come */
	if (!pcpu_check_block_hint(chunk_md, alloc_bits, align))
		return -1;
	bit_off = pcpu_next_hint(chunk_md, alloc_bits);
	bits = 0;
	for (pcpu_next_fit_region(c, alloc_bits, align, &bit_off, &bits);
	     bit_off < pcpu_chunk_map_bits(c);
	     bit_off += bits, pcpu_next_fit_region(c, alloc_bits, align, &bit_off, &bits)) {
		if (!pop_only || pcpu_is_populated(c, bit_off, bits, &next_off))
			break;
		bit_off = next_off;
		bits = 0;
	}
	if (bit_off >= pcpu_chunk_map_bits(c))
		return -1;
	return bit_off;
}

/* bitmap_find_next_zero_area_off that remembers the largest area it skipped. */
static int pcpu_find_zero_area(const uint64_t *map, int size, int start, int nr, int align_mask,
			       int *largest_off, int *largest_bits)
{
	int index, end, i, area_off, area_bits;

again:
	index = find_next_zero_bit(map, size, start);
	index = (index + align_mask) & ~align_mask;
	area_off = index;
	end = index + nr;
	if (end > size)
		return end;
	i = find_next_bit(map, end, index);
	if (i < end) {
		area_bits = i - area_off;
		/* remember the largest skipped area, best aligned on ties */
		if (area_bits > *largest_bits ||
		    (area_bits == *largest_bits && *largest_off &&
		     (!area_off || ffs_((unsigned)area_off) > ffs_((unsigned)*largest_off)))) {
			*largest_off = area_off;
			*largest_bits = area_bits;
		}
		start = i + 1;
		goto again;
	}
	return index;
}

static void pcpu_stats_area_alloc(struct pk_pcpu *p, struct pk_pcpu_chunk *c, int size)
{
	struct pk_pcpu_stats *s = &p->stats;

	s->nr_alloc++;
	s->nr_cur_alloc++;
	if (s->nr_cur_alloc > s->nr_max_alloc)
		s->nr_max_alloc = s->nr_cur_alloc;
	if ((uint64_t)size < s->min_alloc_size)
		s->min_alloc_size = (uint64_t)size;
	if ((uint64_t)size > s->max_alloc_size)
		s->max_alloc_size = (uint64_t)size;
	c->nr_alloc++;
	if (size > c->max_alloc_size)
		c->max_alloc_size = size;
}

static void pcpu_stats_area_dealloc(struct pk_pcpu *p, struct pk_pcpu_chunk *c)
{
	p->stats.nr_dealloc++;
	p->stats.nr_cur_alloc--;
	c->nr_alloc--;
}

static int pcpu_alloc_area(struct pk_arena *a, struct pk_pcpu *p, struct pk_pcpu_chunk *c,
			   int alloc_bits, int align, int start)
{
	struct pk_block_md *chunk_md = &c->chunk_md;
	int align_mask = align ? align - 1 : 0;
	int area_off = 0, area_bits = 0;
	int bit_off, end, oslot;

	oslot = pcpu_chunk_slot(p, c);
	end = imin(start + alloc_bits + PCPU_BITMAP_BLOCK_BITS, pcpu_chunk_map_bits(c));
	bit_off = pcpu_find_zero_area(alloc_map(c), end, start, alloc_bits, align_mask, &area_off,
				      &area_bits);
	if (bit_off >= end)
		return -1;

	/* From here the maps change: recovery rolls this allocation back. */
	p->intent.chunk = pk_chunk_off(a, c);
	p->intent.bit_off = bit_off;
	p->intent.bits = alloc_bits;
	__atomic_store_n(&p->intent.op, PK_INTENT_ALLOC, __ATOMIC_RELEASE);

	if (area_bits)
		pcpu_block_update_scan(c, area_off, area_bits);
	bitmap_set(alloc_map(c), bit_off, alloc_bits);
	set_bit(bit_off, bound_map(c));
	bitmap_clear(bound_map(c), bit_off + 1, alloc_bits - 1);
	set_bit(bit_off + alloc_bits, bound_map(c));
	c->free_bytes -= alloc_bits * PCPU_MIN_ALLOC_SIZE;
	if (bit_off == chunk_md->first_free)
		chunk_md->first_free = find_next_zero_bit(alloc_map(c), pcpu_chunk_map_bits(c),
							  bit_off + alloc_bits);
	pcpu_block_update_hint_alloc(p, c, bit_off, alloc_bits);
	pcpu_chunk_relocate(a, p, c, oslot);
	return bit_off * PCPU_MIN_ALLOC_SIZE;
}

/* pcpu_free_area: the size comes from the boundary map. Returns bytes freed. */
static int pcpu_free_area(struct pk_arena *a, struct pk_pcpu *p, struct pk_pcpu_chunk *c, int off)
{
	struct pk_block_md *chunk_md = &c->chunk_md;
	int bit_off, bits, end, oslot, freed;

	pcpu_stats_area_dealloc(p, c);
	oslot = pcpu_chunk_slot(p, c);
	bit_off = off / PCPU_MIN_ALLOC_SIZE;
	end = find_next_bit(bound_map(c), pcpu_chunk_map_bits(c), bit_off + 1);
	bits = end - bit_off;

	p->intent.chunk = pk_chunk_off(a, c);
	p->intent.bit_off = bit_off;
	p->intent.bits = bits;
	__atomic_store_n(&p->intent.op, PK_INTENT_FREE, __ATOMIC_RELEASE);

	bitmap_clear(alloc_map(c), bit_off, bits);
	freed = bits * PCPU_MIN_ALLOC_SIZE;
	c->free_bytes += freed;
	chunk_md->first_free = imin(chunk_md->first_free, bit_off);
	pcpu_block_update_hint_free(p, c, bit_off, bits);
	pcpu_chunk_relocate(a, p, c, oslot);
	return freed;
}

static void pcpu_init_md_block(struct pk_block_md *block, int nr_bits)
{
	block->scan_hint = 0;
	block->scan_hint_start = 0;
	block->contig_hint = nr_bits;
	block->contig_hint_start = 0;
	block->left_free = nr_bits;
	block->right_free = nr_bits;
	block->first_free = 0;
	block->nr_bits = nr_bits;
}

static void pcpu_init_md_blocks(struct pk_pcpu_chunk *c)
{
	int i;

	pcpu_init_md_block(&c->chunk_md, pcpu_chunk_map_bits(c));
	for (i = 0; i < pcpu_chunk_nr_blocks(c); i++)
		pcpu_init_md_block(md_blocks(c) + i, PCPU_BITMAP_BLOCK_BITS);
}

static void pcpu_chunk_populated(struct pk_pcpu *p, struct pk_pcpu_chunk *c, int rs, int re)
{
	int nr = re - rs;

	bitmap_set(populated(c), rs, nr);
	c->nr_populated += nr;
	p->nr_populated += (uint64_t)nr;
	p->nr_pages_populated += (uint64_t)nr;
	pcpu_update_empty_pages(p, c, nr);
}

static void pcpu_chunk_depopulated(struct pk_pcpu *p, struct pk_pcpu_chunk *c, int rs, int re)
{
	int nr = re - rs;

	bitmap_clear(populated(c), rs, nr);
	c->nr_populated -= nr;
	p->nr_populated -= (uint64_t)nr;
	p->nr_pages_depopulated += (uint64_t)nr;
	pcpu_update_empty_pages(p, c, -nr);
}

/* ---- the backend: pages of the arena file (percpu-vm.c's role) ---------- */

static inline uint64_t unit_page_off(const struct pk_pcpu *p, const struct pk_pcpu_chunk *c,
				     uint32_t unit, int page)
{
	return c->base_off + (uint64_t)unit * p->unit_size + ((uint64_t)page << PK_PAGE_SHIFT);
}

static int pcpu_populate_chunk(struct pk_arena *a, struct pk_pcpu *p, struct pk_pcpu_chunk *c,
			       int rs, int re)
{
	uint64_t len = (uint64_t)(re - rs) << PK_PAGE_SHIFT;
	uint32_t u;

	for (u = 0; u < p->nr_units; u++) {
		if (fallocate(a->fd, 0, (off_t)unit_page_off(p, c, u, rs), (off_t)len) < 0) {
			int err = errno;

			while (u-- > 0)
				(void)fallocate(a->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
						(off_t)unit_page_off(p, c, u, rs), (off_t)len);
			return err == ENOSPC ? -ENOMEM : -err;
		}
	}
	return 0;
}

static void pcpu_depopulate_chunk(struct pk_arena *a, struct pk_pcpu *p, struct pk_pcpu_chunk *c,
				  int rs, int re)
{
	uint64_t len = (uint64_t)(re - rs) << PK_PAGE_SHIFT;
	uint32_t u;

	if (rs == 0 && re == c->nr_pages && (uint32_t)c->nr_pages == p->unit_pages) {
		/* whole units are contiguous: one call */
		(void)fallocate(a->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
				(off_t)c->base_off, (off_t)(len * p->nr_units));
		return;
	}
	for (u = 0; u < p->nr_units; u++)
		(void)fallocate(a->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
				(off_t)unit_page_off(p, c, u, rs), (off_t)len);
}

static int pcpu_lock_(struct pk_arena *a, struct pk_pcpu *p);
static void pcpu_unlock_(struct pk_pcpu *p);
static int pcpu_mutex_lock(struct pk_arena *a, struct pk_pcpu *p);
static void pcpu_mutex_unlock(struct pk_pcpu *p);

static uint32_t chunk_meta_pages(int nr_pages)
{
	struct pk_pcpu_chunk tmp;

	return (uint32_t)PFN_UP((uint64_t)chunk_layout(&tmp, nr_pages));
}

/* Allocate and initialise a chunk's meta block for a region of @nr_pages. */
static struct pk_pcpu_chunk *alloc_chunk_meta(struct pk_arena *a, int nr_pages, int *err)
{
	uint32_t pages = chunk_meta_pages(nr_pages);
	int64_t off = pk_alloc_pages(a, pages, PK_PG_HEAD, PK_CLS_PCPU_META);
	struct pk_pcpu_chunk *c;

	if (off < 0) {
		*err = (int)off;
		return NULL;
	}
	c = pk_chunk(a, (uint64_t)off);
	memset(c, 0, (size_t)pages << PK_PAGE_SHIFT);
	chunk_layout(c, nr_pages);
	c->meta_pages = pages;
	c->slot = -1;
	pcpu_init_md_blocks(c);
	return c;
}

/* pcpu_create_chunk: called with pcpu_alloc_mutex held, pcpu_lock not held. */
static struct pk_pcpu_chunk *pcpu_create_chunk(struct pk_arena *a, struct pk_pcpu *p)
{
	uint32_t nr = p->unit_pages * p->nr_units;
	struct pk_pcpu_chunk *c;
	int64_t data;
	int err = 0;

	c = alloc_chunk_meta(a, (int)p->unit_pages, &err);
	if (c == NULL)
		return NULL;
	data = pk_alloc_pages_flags(a, nr, PK_PG_HEAD, PK_CLS_PCPU_DATA, PK_AP_NOPOPULATE);
	if (data < 0) {
		pk_free_pages(a, pk_chunk_off(a, c));
		return NULL;
	}
	/* page -> chunk, as page->private: the data head page names the meta block */
	pk_desc(a, (uint32_t)(data >> PK_PAGE_SHIFT))->prev =
		(uint32_t)(pk_chunk_off(a, c) >> PK_PAGE_SHIFT);
	c->kind = PK_CHUNK_DYN;
	c->base_off = (uint64_t)data;
	c->data_off = (uint64_t)data;
	c->free_bytes = (int32_t)p->unit_size;
	c->magic = PK_PCPU_CHUNK_MAGIC;

	pcpu_lock_(a, p);
	c->all_next = p->all_chunks;
	__atomic_store_n(&p->all_chunks, pk_chunk_off(a, c), __ATOMIC_RELEASE);	/* commit */
	p->nr_data_pages += nr;
	p->stats.nr_chunks++;
	if (p->stats.nr_chunks > p->stats.nr_max_chunks)
		p->stats.nr_max_chunks = p->stats.nr_chunks;
	p->nr_chunks_created++;
	pcpu_unlock_(p);
	return c;
}

/* pcpu_destroy_chunk: mutex held, lock not held, chunk off the lists and depopulated. */
static void pcpu_destroy_chunk(struct pk_arena *a, struct pk_pcpu *p, struct pk_pcpu_chunk *c)
{
	uint64_t off = pk_chunk_off(a, c), *pp;
	uint64_t data = c->data_off;

	pcpu_lock_(a, p);
	for (pp = &p->all_chunks; *pp; pp = &pk_chunk(a, *pp)->all_next) {
		if (*pp == off) {
			*pp = c->all_next;	/* commit */
			break;
		}
	}
	c->magic = 0;
	list_del_chunk(a, p, c);
	p->nr_data_pages -= (uint64_t)p->unit_pages * p->nr_units;
	p->stats.nr_chunks--;
	p->nr_chunks_destroyed++;
	pcpu_unlock_(p);
	pk_free_pages(a, data);
	pk_free_pages(a, off);
}

/* pcpu_alloc_first_chunk: a chunk serving [tmp_off, tmp_off + map_size) of each unit. */
static struct pk_pcpu_chunk *pcpu_alloc_first_chunk(struct pk_arena *a, struct pk_pcpu *p,
						    uint64_t block, uint32_t tmp_off,
						    uint32_t map_size, int kind, int *err)
{
	uint32_t aligned = tmp_off & ~(PK_PAGE_SIZE - 1);
	int start_offset = (int)(tmp_off - aligned);
	int region_size = (int)PFN_ALIGN((uint64_t)start_offset + map_size);
	int offset_bits, region_bits;
	struct pk_pcpu_chunk *c;

	c = alloc_chunk_meta(a, region_size >> PK_PAGE_SHIFT, err);
	if (c == NULL)
		return NULL;
	c->kind = kind;
	c->base_off = block + aligned;
	c->data_off = block;
	c->start_offset = start_offset;
	c->end_offset = region_size - start_offset - (int)map_size;
	region_bits = pcpu_chunk_map_bits(c);
	c->immutable = 1;
	bitmap_set(populated(c), 0, c->nr_pages);
	c->nr_populated = c->nr_pages;
	c->nr_empty_pop_pages = c->nr_pages;
	c->free_bytes = (int)map_size;
	if (c->start_offset) {
		/* hide the beginning of the bitmap */
		offset_bits = c->start_offset / PCPU_MIN_ALLOC_SIZE;
		bitmap_set(alloc_map(c), 0, offset_bits);
		set_bit(0, bound_map(c));
		set_bit(offset_bits, bound_map(c));
		c->chunk_md.first_free = offset_bits;
		pcpu_block_update_hint_alloc(p, c, 0, offset_bits);
	}
	if (c->end_offset) {
		/* hide the end of the bitmap */
		offset_bits = c->end_offset / PCPU_MIN_ALLOC_SIZE;
		bitmap_set(alloc_map(c), pcpu_chunk_map_bits(c) - offset_bits, offset_bits);
		set_bit((start_offset + (int)map_size) / PCPU_MIN_ALLOC_SIZE, bound_map(c));
		set_bit(region_bits, bound_map(c));
		pcpu_block_update_hint_alloc(p, c, pcpu_chunk_map_bits(c) - offset_bits, offset_bits);
	}
	c->magic = PK_PCPU_CHUNK_MAGIC;
	return c;
}

/* ---- format and setup ---------------------------------------------------- */

uint64_t pk_pcpu_block_size(uint32_t nr_cpu_ids)
{
	return pk_round_up(sizeof(struct pk_pcpu), 64) + 4ull * nr_cpu_ids;
}

int pk_pcpu_format(struct pk_pcpu *p, uint32_t nr_cpu_ids, const uint8_t *possible,
		   uint32_t static_size, uint32_t reserved_size, uint32_t dyn_size)
{
	uint64_t size_sum, unit_size, s;
	int32_t *map;
	uint32_t cpu, unit = 0;

	if (reserved_size % PCPU_MIN_ALLOC_SIZE || static_size > PK_PCPU_MAX_UNIT_SIZE ||
	    reserved_size > PK_PCPU_MAX_UNIT_SIZE || dyn_size > PK_PCPU_MAX_UNIT_SIZE)
		return -EINVAL;
	/* pcpu_build_alloc_info() with atom_size = PAGE_SIZE: one unit per allocation */
	s = dyn_size > PERCPU_DYNAMIC_EARLY_SIZE ? dyn_size : PERCPU_DYNAMIC_EARLY_SIZE;
	size_sum = PFN_ALIGN((uint64_t)static_size + reserved_size + s);
	unit_size = size_sum > PCPU_MIN_UNIT_SIZE ? size_sum : PCPU_MIN_UNIT_SIZE;
	if (unit_size > PK_PCPU_MAX_UNIT_SIZE)
		return -E2BIG;
	memset(p, 0, sizeof(*p));
	p->nr_cpu_ids = nr_cpu_ids;
	p->static_size = static_size;
	p->reserved_size = reserved_size;
	p->dyn_size = (uint32_t)(size_sum - static_size - reserved_size);
	p->unit_size = (uint32_t)unit_size;
	p->unit_pages = (uint32_t)(unit_size >> PK_PAGE_SHIFT);
	p->atom_size = PK_PAGE_SIZE;
	p->alloc_size = (uint32_t)unit_size;
	p->size_sum = (uint32_t)size_sum;
	p->sidelined_slot = __pcpu_size_to_slot((int)unit_size) + 1;
	p->free_slot = p->sidelined_slot + 1;
	p->to_depopulate_slot = p->free_slot + 1;
	p->nr_slots = p->to_depopulate_slot + 1;
	if (p->nr_slots > PK_PCPU_MAX_SLOTS)
		return -E2BIG;
	p->unit_map_off = (uint32_t)pk_round_up(sizeof(struct pk_pcpu), 64);
	map = (int32_t *)((char *)p + p->unit_map_off);
	for (cpu = 0; cpu < nr_cpu_ids; cpu++)
		map[cpu] = ((possible[cpu / 8] >> (cpu % 8)) & 1) ? (int32_t)unit++ : -1;
	if (unit == 0)
		return -EINVAL;
	p->nr_units = unit;
	p->warn_limit = PCPU_WARN_LIMIT;
	p->stats.min_alloc_size = unit_size;	/* as pcpu_stats_save_ai() */
	p->magic = PK_PCPU_MAGIC;
	return 0;
}

/* pcpu_setup_first_chunk: build the first chunk on first use.  Mutex held. */
static int pcpu_setup_first_chunk(struct pk_arena *a, struct pk_pcpu *p)
{
	uint32_t static_size, dyn_size, u;
	struct pk_pcpu_chunk *fc, *rc = NULL;
	uint64_t nr = (uint64_t)p->unit_pages * p->nr_units;
	int64_t block;
	int err = 0;

	if (nr > UINT32_MAX)
		return -E2BIG;
	block = pk_alloc_pages(a, (uint32_t)nr, PK_PG_HEAD, PK_CLS_PCPU_DATA);	/* populated */
	if (block < 0)
		return (int)block;
	/* the part of each unit past size_sum is unused: give its backing back */
	if (p->size_sum < p->unit_size)
		for (u = 0; u < p->nr_units; u++)
			(void)fallocate(a->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
					(off_t)((uint64_t)block + (uint64_t)u * p->unit_size + p->size_sum),
					(off_t)(p->unit_size - p->size_sum));
	/* the static region ends 4-byte aligned; the dynamic region shrinks for it */
	static_size = ALIGN_UP(p->static_size, (uint32_t)PCPU_MIN_ALLOC_SIZE);
	dyn_size = p->dyn_size - (static_size - p->static_size);
	if (p->reserved_size) {
		rc = pcpu_alloc_first_chunk(a, p, (uint64_t)block, static_size, p->reserved_size,
					    PK_CHUNK_RESERVED, &err);
		if (rc == NULL)
			goto fail;
	}
	fc = pcpu_alloc_first_chunk(a, p, (uint64_t)block, static_size + p->reserved_size, dyn_size,
				    PK_CHUNK_FIRST, &err);
	if (fc == NULL)
		goto fail;

	pcpu_lock_(a, p);
	if (rc) {
		rc->all_next = p->all_chunks;
		p->all_chunks = pk_chunk_off(a, rc);
		p->reserved_chunk = pk_chunk_off(a, rc);
	}
	fc->all_next = p->all_chunks;
	p->all_chunks = pk_chunk_off(a, fc);
	p->first_chunk = pk_chunk_off(a, fc);
	p->first_block = (uint64_t)block;
	p->nr_empty_pop_pages = fc->nr_empty_pop_pages;
	pcpu_chunk_relocate(a, p, fc, -1);
	p->nr_populated += PFN_DOWN(p->size_sum);
	p->nr_data_pages += nr;
	p->stats.nr_chunks++;
	if (p->stats.nr_chunks > p->stats.nr_max_chunks)
		p->stats.nr_max_chunks = p->stats.nr_chunks;
	__atomic_store_n(&p->setup, 1, __ATOMIC_RELEASE);	/* commit */
	pcpu_unlock_(p);
	return 0;
fail:
	if (rc)
		pk_free_pages(a, pk_chunk_off(a, rc));
	pk_free_pages(a, (uint64_t)block);
	return err ? err : -ENOMEM;
}

int pk_pcpu_setup(struct pk_arena *a, struct pk_pcpu *p)
{
	int err = 0;

	if (likely(__atomic_load_n(&p->setup, __ATOMIC_ACQUIRE)))	/* pairs with the commit */
		return 0;
	pcpu_mutex_lock(a, p);
	if (!p->setup)
		err = pcpu_setup_first_chunk(a, p);
	pcpu_mutex_unlock(p);
	return err;
}

/* ---- recovery ----------------------------------------------------------- */

static inline int chunk_ok(struct pk_arena *a, uint64_t off)
{
	return off >= PK_PAGE_SIZE && off % PK_PAGE_SIZE == 0 && off < a->size &&
	       pk_chunk(a, off)->magic == PK_PCPU_CHUNK_MAGIC;
}

#define for_each_chunk(a, p, c)						\
	for ((c) = chunk_ok((a), (p)->all_chunks) ? pk_chunk((a), (p)->all_chunks) : NULL; (c); \
	     (c) = chunk_ok((a), (c)->all_next) ? pk_chunk((a), (c)->all_next) : NULL)

static int hidden_allocs(const struct pk_pcpu_chunk *c)
{
	return (c->start_offset ? 1 : 0) + (c->end_offset ? 1 : 0);
}

/* Is bit @i the start of a live allocation (not a hidden region)? */
static inline int live_start(struct pk_pcpu_chunk *c, int i)
{
	return i >= c->start_offset / PCPU_MIN_ALLOC_SIZE &&
	       i < c->map_bits - c->end_offset / PCPU_MIN_ALLOC_SIZE &&
	       test_bit(i, alloc_map(c)) && test_bit(i, bound_map(c));
}

/* Recompute every derived field of @c from its allocation map. */
static void rebuild_chunk(struct pk_pcpu_chunk *c)
{
	uint64_t *map = alloc_map(c);
	int i, s, e, n = 0, empty = 0;

	for (i = 0; i < c->nr_pages; i++) {
		struct pk_block_md *b = md_blocks(c) + i;
		uint64_t *bm = pcpu_index_alloc_map(c, i);

		memset(b, 0, sizeof(*b));
		b->nr_bits = PCPU_BITMAP_BLOCK_BITS;
		b->first_free = PCPU_BITMAP_BLOCK_BITS;
		for (s = find_next_zero_bit(bm, PCPU_BITMAP_BLOCK_BITS, 0); s < PCPU_BITMAP_BLOCK_BITS;
		     s = find_next_zero_bit(bm, PCPU_BITMAP_BLOCK_BITS, e + 1)) {
			e = find_next_bit(bm, PCPU_BITMAP_BLOCK_BITS, s + 1);
			pcpu_block_update(b, s, e);
		}
		if (b->contig_hint == PCPU_BITMAP_BLOCK_BITS && test_bit(i, populated(c)))
			empty++;
	}
	memset(&c->chunk_md, 0, sizeof(c->chunk_md));
	c->chunk_md.nr_bits = c->map_bits;
	c->chunk_md.first_free = c->map_bits;
	for (s = find_next_zero_bit(map, c->map_bits, 0); s < c->map_bits;
	     s = find_next_zero_bit(map, c->map_bits, e + 1)) {
		e = find_next_bit(map, c->map_bits, s + 1);
		pcpu_block_update(&c->chunk_md, s, e);
	}
	c->free_bytes = (c->map_bits - bitmap_weight(map, c->map_bits)) * PCPU_MIN_ALLOC_SIZE;
	for (i = find_next_bit(map, c->map_bits, 0); i < c->map_bits;
	     i = find_next_bit(map, c->map_bits, i + 1))
		if (test_bit(i, bound_map(c)))
			n++;
	c->nr_alloc = n - hidden_allocs(c);
	c->nr_populated = bitmap_weight(populated(c), c->nr_pages);
	c->nr_empty_pop_pages = empty;
}

static void clear_area(struct pk_arena *a, uint64_t chunk, int bit_off, int bits)
{
	struct pk_pcpu_chunk *c;

	if (!chunk_ok(a, chunk))
		return;
	c = pk_chunk(a, chunk);
	if (bit_off < 0 || bits <= 0 || bit_off + bits > c->map_bits)
		return;
	bitmap_clear(alloc_map(c), bit_off, bits);
	memcg_map(c)[bit_off] = 0;
}

/*
 * Pages of @c that a live holder of pcpu_alloc_mutex is populating for its
 * new area: counted out of nr_empty_pop_pages at allocation, to be counted
 * back by pcpu_chunk_populated().  Returns how many are still unpopulated.
 */
static int inflight_unpopulated(struct pk_arena *a, struct pk_pcpu *p, struct pk_pcpu_chunk *c,
				int *rs, int *re)
{
	const struct pk_pcpu_intent *mi = &p->mutex_intent;
	int i, n = 0;

	if (mi->op != PK_INTENT_POPULATE || mi->chunk != pk_chunk_off(a, c) || mi->bits <= 0)
		return 0;
	*rs = (int)PFN_DOWN((uint64_t)mi->bit_off * PCPU_MIN_ALLOC_SIZE);
	*re = (int)PFN_UP((uint64_t)(mi->bit_off + mi->bits) * PCPU_MIN_ALLOC_SIZE);
	if (*re > c->nr_pages)
		*re = c->nr_pages;
	for (i = *rs; i < *re; i++)
		n += !test_bit(i, populated(c));
	return n;
}

/* Rebuild everything derivable under pcpu_lock after a holder died. */
static void pcpu_rebuild(struct pk_arena *a, struct pk_pcpu *p)
{
	struct pk_pcpu_chunk *c;
	uint64_t cur = 0, nchunks = 0;
	int i, slot;

	/* finish the dead holder's free, or roll back its allocation */
	if (p->intent.op == PK_INTENT_ALLOC || p->intent.op == PK_INTENT_FREE) {
		clear_area(a, p->intent.chunk, p->intent.bit_off, p->intent.bits);
		/* died between the two intents: the area is rolled back once, here */
		if (p->intent.op == PK_INTENT_ALLOC && p->mutex_intent.op == PK_INTENT_POPULATE &&
		    p->mutex_intent.chunk == p->intent.chunk && p->mutex_intent.bit_off == p->intent.bit_off)
			p->mutex_intent.op = PK_INTENT_NONE;
	}
	p->intent.op = PK_INTENT_NONE;

	for (i = 0; i < PK_PCPU_MAX_SLOTS; i++)
		p->slots[i].first = p->slots[i].last = 0;
	for (i = 1; i < PK_MEMCG_MAX; i++) {
		p->memcg[i].usage_pcpu = 0;
		p->memcg[i].nr_pcpu_objs = 0;
	}
	p->nr_empty_pop_pages = 0;
	p->nr_populated = p->setup ? PFN_DOWN(p->size_sum) : 0;
	p->nr_data_pages = p->setup ? (uint64_t)p->unit_pages * p->nr_units : 0;
	for_each_chunk(a, p, c) {
		int b, rs, re;

		rebuild_chunk(c);
		/* a live process populating its area adds these pages back when done */
		c->nr_empty_pop_pages -= inflight_unpopulated(a, p, c, &rs, &re);
		cur += (uint64_t)c->nr_alloc;
		/* memcg charges, recounted from the per-allocation group bytes */
		for (b = 0; b < c->map_bits; b++) {
			uint8_t g = memcg_map(c)[b];

			if (!g)
				continue;
			if (!live_start(c, b) || g >= PK_MEMCG_MAX || !p->memcg[g].name[0]) {
				memcg_map(c)[b] = 0;
				continue;
			}
			{
				int e = find_next_bit(bound_map(c), c->map_bits, b + 1);

				p->memcg[g].usage_pcpu +=
					pk_pcpu_obj_full_size(p, (uint64_t)(e - b) * PCPU_MIN_ALLOC_SIZE);
				p->memcg[g].nr_pcpu_objs++;
			}
		}
		c->next = c->prev = 0;
		if (c->kind == PK_CHUNK_RESERVED) {
			c->slot = -1;
			continue;
		}
		if (c->kind == PK_CHUNK_DYN) {
			nchunks++;
			p->nr_populated += (uint64_t)c->nr_populated;
			p->nr_data_pages += (uint64_t)p->unit_pages * p->nr_units;
		}
		if (c->dying) {
			/* the live balance work owns it (mutex recovery clears dying first) */
			p->nr_empty_pop_pages += c->nr_empty_pop_pages;
			c->slot = -1;
			continue;
		}
		if (c->isolated)
			slot = c->slot == p->sidelined_slot ? p->sidelined_slot : p->to_depopulate_slot;
		else
			slot = pcpu_chunk_slot(p, c);
		if (!c->isolated)
			p->nr_empty_pop_pages += c->nr_empty_pop_pages;
		c->slot = -1;
		list_add_chunk(a, p, c, slot, 0);
	}
	p->stats.nr_cur_alloc = cur;
	if (p->stats.nr_alloc < cur)
		p->stats.nr_alloc = cur;
	p->stats.nr_dealloc = p->stats.nr_alloc - cur;
	p->stats.nr_chunks = nchunks + (p->setup ? 1 : 0);
	p->recoveries++;
}

static int pcpu_lock_(struct pk_arena *a, struct pk_pcpu *p)
{
	int r = pk_lock_acquire(&p->lock, -1);

	if (unlikely(r == PK_LOCK_RECOVERED))
		pcpu_rebuild(a, p);
	return r;
}

static void pcpu_unlock_(struct pk_pcpu *p)
{
	pk_lock_release(&p->lock);
}

int pk_pcpu_lock(struct pk_arena *a, struct pk_pcpu *p)
{
	return pcpu_lock_(a, p);
}

void pk_pcpu_unlock(struct pk_pcpu *p)
{
	pcpu_unlock_(p);
}

static int block_referenced(struct pk_arena *a, struct pk_pcpu *p, uint64_t off)
{
	struct pk_pcpu_chunk *c;

	if (p->setup && off == p->first_block)
		return 1;
	for_each_chunk(a, p, c)
		if (pk_chunk_off(a, c) == off || c->data_off == off)
			return 1;
	return 0;
}

/* After the mutex was taken over: finish what its dead holder left half done. */
static void pcpu_recover_mutex(struct pk_arena *a, struct pk_pcpu *p)
{
	struct pk_header *h = pk_hdr(a);
	struct pk_pcpu_chunk *c;
	uint32_t pg;

	pcpu_lock_(a, p);
	for_each_chunk(a, p, c)
		c->dying = 0;	/* its destroyer died: the chunk goes back on the lists */
	if (p->mutex_intent.op == PK_INTENT_POPULATE)
		clear_area(a, p->mutex_intent.chunk, p->mutex_intent.bit_off, p->mutex_intent.bits);
	p->mutex_intent.op = PK_INTENT_NONE;
	if (!p->setup) {
		/* died inside the first chunk's setup: forget it; its blocks are freed below */
		int i;

		p->all_chunks = p->first_chunk = p->reserved_chunk = p->first_block = 0;
		for (i = 0; i < PK_PCPU_MAX_SLOTS; i++)
			p->slots[i].first = p->slots[i].last = 0;
	}
	pcpu_rebuild(a, p);
	pcpu_unlock_(p);

	/* blocks of chunks that were being created or destroyed */
	for (pg = h->meta_pages; pg < h->nr_pages; pg++) {
		struct pk_page_desc *d = pk_desc(a, pg);

		if (__atomic_load_n(&d->type, __ATOMIC_ACQUIRE) != PK_PG_HEAD ||
		    (d->cls != PK_CLS_PCPU_META && d->cls != PK_CLS_PCPU_DATA))
			continue;
		if (!block_referenced(a, p, (uint64_t)pg << PK_PAGE_SHIFT))
			pk_free_pages(a, (uint64_t)pg << PK_PAGE_SHIFT);
	}
	/* make the file's backing match the populated bitmaps (the mutex's domain) */
	for_each_chunk(a, p, c) {
		int i;

		if (c->immutable)
			continue;
		for (i = 0; i < c->nr_pages; i++) {
			if (test_bit(i, populated(c)))
				(void)pcpu_populate_chunk(a, p, c, i, i + 1);
			else
				pcpu_depopulate_chunk(a, p, c, i, i + 1);
		}
	}
}

static int pcpu_mutex_lock(struct pk_arena *a, struct pk_pcpu *p)
{
	int r = pk_lock_acquire(&p->alloc_mutex, -1);

	if (unlikely(r == PK_LOCK_RECOVERED))
		pcpu_recover_mutex(a, p);
	return r;
}

static void pcpu_mutex_unlock(struct pk_pcpu *p)
{
	pk_lock_release(&p->alloc_mutex);
}

/* ---- memcg groups ---------------------------------------------------------- */

uint64_t pk_pcpu_obj_full_size(const struct pk_pcpu *p, uint64_t size)
{
	/* pcpu_obj_full_size(): every unit, plus one objcg pointer per 4 bytes */
	return size * p->nr_units + size / PCPU_MIN_ALLOC_SIZE * sizeof(uint64_t);
}

static inline uint64_t memcg_usage(struct pk_memcg *g)
{
	return g->usage_pcpu + __atomic_load_n(&g->usage_other, __ATOMIC_RELAXED);
}

static void memcg_note_max(struct pk_memcg *g)
{
	uint64_t u = memcg_usage(g), m = __atomic_load_n(&g->max_usage, __ATOMIC_RELAXED);

	while (u > m && !__atomic_compare_exchange_n(&g->max_usage, &m, u, 0, __ATOMIC_RELAXED,
						     __ATOMIC_RELAXED))
		;
}

int pk_memcg_create(struct pk_arena *a, struct pk_pcpu *p, const char *name, uint64_t limit)
{
	int i, free_id = -1;
	size_t n = strlen(name);

	if (n == 0 || n >= PK_MEMCG_NAME)
		return -EINVAL;
	pcpu_lock_(a, p);
	for (i = 1; i < PK_MEMCG_MAX; i++) {
		if (p->memcg[i].name[0] == 0) {
			if (free_id < 0)
				free_id = i;
		} else if (strncmp(p->memcg[i].name, name, PK_MEMCG_NAME) == 0) {
			pcpu_unlock_(p);
			return -EEXIST;
		}
	}
	if (free_id < 0) {
		pcpu_unlock_(p);
		return -ENOSPC;
	}
	memset(&p->memcg[free_id], 0, sizeof(p->memcg[free_id]));
	p->memcg[free_id].limit = limit;
	memcpy(p->memcg[free_id].name, name, n + 1);
	pcpu_unlock_(p);
	return free_id;
}

int pk_memcg_lookup(struct pk_pcpu *p, const char *name)
{
	int i;

	for (i = 1; i < PK_MEMCG_MAX; i++)
		if (p->memcg[i].name[0] && strncmp(p->memcg[i].name, name, PK_MEMCG_NAME) == 0)
			return i;
	return -ENOENT;
}

int pk_memcg_remove(struct pk_arena *a, struct pk_pcpu *p, int id)
{
	int r = 0;

	if (id <= 0 || id >= PK_MEMCG_MAX)
		return -EINVAL;
	pcpu_lock_(a, p);
	if (!p->memcg[id].name[0])
		r = -ENOENT;
	else if (memcg_usage(&p->memcg[id]) != 0)
		r = -EBUSY;
	else
		p->memcg[id].name[0] = 0;
	pcpu_unlock_(p);
	return r;
}

/* Charge a group from outside the per-CPU allocator (the BPF memory allocator). */
int pk_memcg_try_charge(struct pk_pcpu *p, int id, uint64_t bytes)
{
	struct pk_memcg *g;
	uint64_t old;

	if (id <= 0 || id >= PK_MEMCG_MAX || !p->memcg[id].name[0])
		return -EINVAL;
	g = &p->memcg[id];
	old = __atomic_fetch_add(&g->usage_other, bytes, __ATOMIC_RELAXED);
	if (READ_ONCE64(&g->usage_pcpu) + old + bytes > __atomic_load_n(&g->limit, __ATOMIC_RELAXED)) {
		__atomic_fetch_sub(&g->usage_other, bytes, __ATOMIC_RELAXED);
		__atomic_fetch_add(&g->failcnt, 1, __ATOMIC_RELAXED);
		return -ENOMEM;
	}
	memcg_note_max(g);
	return 0;
}

void pk_memcg_uncharge(struct pk_pcpu *p, int id, uint64_t bytes)
{
	if (id > 0 && id < PK_MEMCG_MAX)
		__atomic_fetch_sub(&p->memcg[id].usage_other, bytes, __ATOMIC_RELAXED);
}

/* Under pcpu_lock: may group @id take @bytes more? */
static int pcpu_memcg_charge(struct pk_pcpu *p, int id, uint64_t bytes)
{
	struct pk_memcg *g = &p->memcg[id];

	if (!g->name[0])
		return -ENOENT;	/* the thread's group was removed */
	if (memcg_usage(g) + bytes > __atomic_load_n(&g->limit, __ATOMIC_RELAXED)) {
		__atomic_fetch_add(&g->failcnt, 1, __ATOMIC_RELAXED);
		return -ENOMEM;
	}
	return 0;
}

static void pcpu_memcg_post_alloc(struct pk_pcpu *p, struct pk_pcpu_chunk *c, int off, int id,
				  uint64_t size)
{
	memcg_map(c)[off / PCPU_MIN_ALLOC_SIZE] = (uint8_t)id;
	p->memcg[id].usage_pcpu += pk_pcpu_obj_full_size(p, size);
	p->memcg[id].nr_pcpu_objs++;
	memcg_note_max(&p->memcg[id]);
}

static void pcpu_memcg_free_hook(struct pk_pcpu *p, struct pk_pcpu_chunk *c, int off, int size)
{
	uint8_t id = memcg_map(c)[off / PCPU_MIN_ALLOC_SIZE];

	if (!id)
		return;
	memcg_map(c)[off / PCPU_MIN_ALLOC_SIZE] = 0;
	if (id < PK_MEMCG_MAX) {
		p->memcg[id].usage_pcpu -= pk_pcpu_obj_full_size(p, (uint64_t)size);
		p->memcg[id].nr_pcpu_objs--;
	}
}

/* ---- pcpu_alloc_noprof ------------------------------------------------------ */

static inline int is_power_of_2(uint64_t x) { return x && !(x & (x - 1)); }

int64_t pk_pcpu_alloc(struct pk_arena *a, struct pk_pcpu *p, uint64_t size, uint64_t align,
		      int reserved, int is_atomic, int do_warn, int memcg, struct pk_pcpu_res *res)
{
	struct pk_pcpu_chunk *c = NULL, *next;
	int bits, bit_align, slot, off = -1, err;
	uint64_t cpu_unit, ptr;
	uint32_t u;

	memset(res, 0, sizeof(*res));
	/* the minimum allocation is PCPU_MIN_ALLOC_SIZE, hence the minimum alignment */
	if (unlikely(align < PCPU_MIN_ALLOC_SIZE))
		align = PCPU_MIN_ALLOC_SIZE;
	if (size <= UINT64_MAX - (PCPU_MIN_ALLOC_SIZE - 1))
		size = ALIGN_UP(size, (uint64_t)PCPU_MIN_ALLOC_SIZE);
	res->size = size;
	res->align = align;
	if (unlikely(!size || size > PCPU_MIN_UNIT_SIZE || align > PK_PAGE_SIZE || !is_power_of_2(align)))
		return -EINVAL;	/* "illegal size (%zu) or align (%zu) for percpu allocation" */
	bits = (int)(size >> PCPU_MIN_ALLOC_SHIFT);
	bit_align = (int)(align >> PCPU_MIN_ALLOC_SHIFT);
	if (memcg < 0 || memcg >= PK_MEMCG_MAX)
		return -EINVAL;

	err = pk_pcpu_setup(a, p);
	if (err)
		return err;
	if (!is_atomic)
		pcpu_mutex_lock(a, p);
	pcpu_lock_(a, p);

	if (memcg) {
		err = pcpu_memcg_charge(p, memcg, pk_pcpu_obj_full_size(p, size));
		if (err) {
			res->err = NULL;	/* a refused charge is silent, as in the kernel */
			goto fail_unlock_quiet;
		}
	}

	/* serve reserved allocations from the reserved chunk if there is one */
	if (reserved && p->reserved_chunk) {
		c = pk_chunk(a, p->reserved_chunk);
		off = pcpu_find_block_fit(c, bits, bit_align, is_atomic);
		if (off >= 0)
			off = pcpu_alloc_area(a, p, c, bits, bit_align, off);
		if (off >= 0)
			goto area_found;
		res->err = "alloc from reserved chunk failed";
		goto fail_unlock;
	}

restart:
	for (slot = pcpu_size_to_slot(p, (int)size); slot <= p->free_slot; slot++) {
		uint64_t co, no;

		for (co = p->slots[slot].first; co; co = no) {
			c = pk_chunk(a, co);
			no = c->next;
			off = pcpu_find_block_fit(c, bits, bit_align, is_atomic);
			if (off < 0) {
				if (slot < PCPU_SLOT_FAIL_THRESHOLD)
					pcpu_chunk_move(a, p, c, 0);
				continue;
			}
			off = pcpu_alloc_area(a, p, c, bits, bit_align, off);
			if (off >= 0) {
				pcpu_reintegrate_chunk(a, p, c);
				goto area_found;
			}
		}
	}
	pcpu_unlock_(p);

	if (is_atomic) {
		res->err = "atomic alloc failed, no space left";
		goto fail;
	}
	/* no space left: create a new chunk */
	if (p->slots[p->free_slot].first == 0) {
		next = pcpu_create_chunk(a, p);
		if (next == NULL) {
			res->err = "failed to allocate new chunk";
			goto fail;
		}
		pcpu_lock_(a, p);
		pcpu_chunk_relocate(a, p, next, -1);
	} else {
		pcpu_lock_(a, p);
	}
	goto restart;

area_found:
	if (memcg && pcpu_memcg_charge(p, memcg, pk_pcpu_obj_full_size(p, size))) {
		/* others charged the group while pcpu_lock was dropped for a new chunk */
		pcpu_stats_area_alloc(p, c, (int)size);
		pcpu_free_area(a, p, c, off);
		p->intent.op = PK_INTENT_NONE;
		err = -ENOMEM;
		goto fail_unlock_quiet;
	}
	pcpu_stats_area_alloc(p, c, (int)size);
	if (memcg)
		pcpu_memcg_post_alloc(p, c, off, memcg, size);
	if (p->nr_empty_pop_pages < PCPU_EMPTY_POP_PAGES_LOW)
		res->need_balance = 1;
	if (!is_atomic) {
		/* populating happens without pcpu_lock: the mutex intent covers it */
		p->mutex_intent = p->intent;
		p->mutex_intent.op = PK_INTENT_POPULATE;
	}
	__atomic_store_n(&p->intent.op, PK_INTENT_NONE, __ATOMIC_RELEASE);
	pcpu_unlock_(p);

	/* populate if not all pages are already there */
	if (!is_atomic) {
		int rs = (int)PFN_DOWN((uint64_t)off), page_end = (int)PFN_UP((uint64_t)off + size), re;

		for (rs = find_next_zero_bit(populated(c), page_end, rs); rs < page_end;
		     rs = find_next_zero_bit(populated(c), page_end, re + 1)) {
			int ret;

			re = find_next_bit(populated(c), page_end, rs + 1);
			ret = pcpu_populate_chunk(a, p, c, rs, re);
			pcpu_lock_(a, p);
			if (ret) {
				int freed;

				p->mutex_intent.op = PK_INTENT_NONE;	/* before the area can be reused */
				freed = pcpu_free_area(a, p, c, off);
				pcpu_memcg_free_hook(p, c, off, freed);
				p->intent.op = PK_INTENT_NONE;
				res->err = "failed to populate";
				goto fail_unlock;
			}
			pcpu_chunk_populated(p, c, rs, re);
			pcpu_unlock_(p);
		}
		p->mutex_intent.op = PK_INTENT_NONE;
		pcpu_mutex_unlock(p);
	}

	/* clear the area in every unit (populated pages are not assumed zero) */
	for (u = 0; u < p->nr_units; u++) {
		cpu_unit = c->base_off + (uint64_t)u * p->unit_size + (uint64_t)off;
		memset(a->base + cpu_unit, 0, size);
	}
	ptr = c->base_off + (uint64_t)off;
	return (int64_t)ptr;

fail_unlock:
	pcpu_unlock_(p);
fail:
	if (res->err && do_warn) {
		/* warn_limit, decremented atomically (the 2025 fix for its race) */
		int32_t w = __atomic_load_n(&p->warn_limit, __ATOMIC_RELAXED);

		while (w > 0 && !__atomic_compare_exchange_n(&p->warn_limit, &w, w - 1, 0,
							     __ATOMIC_RELAXED, __ATOMIC_RELAXED))
			;
		if (w > 0) {
			res->warn = 1;
			res->warn_last = w == 1;
		}
	}
	if (is_atomic) {
		/* see the flag handling in pcpu_balance_populated() */
		__atomic_store_n(&p->atomic_alloc_failed, 1, __ATOMIC_RELAXED);
		res->need_balance = 1;
	} else {
		p->mutex_intent.op = PK_INTENT_NONE;
		pcpu_mutex_unlock(p);
	}
	return -ENOMEM;

fail_unlock_quiet:
	pcpu_unlock_(p);
	if (!is_atomic)
		pcpu_mutex_unlock(p);
	return err;
}

/* ---- free_percpu ------------------------------------------------------------- */

static int addr_in_chunk(struct pk_pcpu_chunk *c, uint64_t ptr)
{
	uint64_t start, end;

	if (c == NULL)
		return 0;
	start = c->base_off + (uint64_t)c->start_offset;
	end = c->base_off + ((uint64_t)c->nr_pages << PK_PAGE_SHIFT) - (uint64_t)c->end_offset;
	return ptr >= start && ptr < end;
}

/*
 * pcpu_chunk_addr_search, without the lock: the first chunk's regions by
 * address, other chunks through the page descriptor of unit 0's page (the
 * data block's head names the meta block, as page->private names the chunk).
 * The result is checked again under pcpu_lock.
 */
static struct pk_pcpu_chunk *pcpu_chunk_addr_search(struct pk_arena *a, struct pk_pcpu *p,
						    uint64_t ptr, int *err)
{
	struct pk_header *h = pk_hdr(a);
	struct pk_pcpu_chunk *c;
	struct pk_page_desc *d;
	uint32_t pg, head;
	uint64_t meta;

	*err = -EINVAL;
	if (ptr >= a->size || ptr < ((uint64_t)h->meta_pages << PK_PAGE_SHIFT))
		return NULL;
	if (p->setup) {
		c = pk_chunk(a, p->first_chunk);
		if (addr_in_chunk(c, ptr))
			return c;
		c = pk_chunk(a, p->reserved_chunk);
		if (addr_in_chunk(c, ptr))
			return c;
		if (ptr >= p->first_block && ptr < p->first_block + p->unit_size) {
			*err = -EPERM;	/* static: "these allocations can never be freed" */
			return NULL;
		}
	}
	pg = (uint32_t)(ptr >> PK_PAGE_SHIFT);
	d = pk_desc(a, pg);
	head = d->type == PK_PG_TAIL ? d->next : pg;
	if (head >= h->nr_pages)
		return NULL;
	d = pk_desc(a, head);
	if (d->type != PK_PG_HEAD || d->cls != PK_CLS_PCPU_DATA)
		return NULL;
	meta = (uint64_t)d->prev << PK_PAGE_SHIFT;
	if (!chunk_ok(a, meta))
		return NULL;
	c = pk_chunk(a, meta);
	if (c->base_off != (uint64_t)head << PK_PAGE_SHIFT || !addr_in_chunk(c, ptr))
		return NULL;
	return c;
}

int pk_pcpu_free(struct pk_arena *a, struct pk_pcpu *p, uint64_t ptr, int *need_balance)
{
	struct pk_pcpu_chunk *c;
	int off, size, err;

	*need_balance = 0;
	if (ptr == 0)
		return 0;
	if (!__atomic_load_n(&p->setup, __ATOMIC_ACQUIRE))
		return -EINVAL;
	c = pcpu_chunk_addr_search(a, p, ptr, &err);
	if (c == NULL)
		return err;
	pcpu_lock_(a, p);
	off = (int)(ptr - c->base_off);
	/* the chunk may have been destroyed and its meta block reused meanwhile */
	if (c->magic != PK_PCPU_CHUNK_MAGIC || !addr_in_chunk(c, ptr) || off % PCPU_MIN_ALLOC_SIZE ||
	    !live_start(c, off / PCPU_MIN_ALLOC_SIZE)) {
		pcpu_unlock_(p);
		return -ENOENT;	/* not allocated: a double or invalid free */
	}
	size = pcpu_free_area(a, p, c, off);
	pcpu_memcg_free_hook(p, c, off, size);

	/* more than one fully free chunk: wake the grim reaper */
	if (!c->isolated && c->free_bytes == (int)p->unit_size) {
		uint64_t pos;

		for (pos = p->slots[p->free_slot].first; pos; pos = pk_chunk(a, pos)->next) {
			if (pos != pk_chunk_off(a, c) && !pk_chunk(a, pos)->immutable) {
				*need_balance = 1;
				break;
			}
		}
	} else if (c->kind == PK_CHUNK_DYN &&
		   ((c->isolated && c->nr_empty_pop_pages) ||
		    (p->nr_empty_pop_pages > PCPU_EMPTY_POP_PAGES_HIGH + c->nr_empty_pop_pages &&
		     c->nr_empty_pop_pages >= c->nr_pages / 4))) {
		/* pcpu_should_reclaim_chunk() of percpu-vm.c */
		pcpu_isolate_chunk(a, p, c);
		*need_balance = 1;
	}
	__atomic_store_n(&p->intent.op, PK_INTENT_NONE, __ATOMIC_RELEASE);
	pcpu_unlock_(p);
	return 0;
}

/* The size of the live area at @ptr (the removed pcpu_alloc_size()). */
int64_t pk_pcpu_alloc_size(struct pk_arena *a, struct pk_pcpu *p, uint64_t ptr)
{
	struct pk_pcpu_chunk *c;
	int off, end, err;
	int64_t r;

	if (!__atomic_load_n(&p->setup, __ATOMIC_ACQUIRE))
		return -EINVAL;
	c = pcpu_chunk_addr_search(a, p, ptr, &err);
	if (c == NULL)
		return err;
	pcpu_lock_(a, p);
	off = (int)(ptr - c->base_off);
	if (c->magic != PK_PCPU_CHUNK_MAGIC || !addr_in_chunk(c, ptr) || off % PCPU_MIN_ALLOC_SIZE ||
	    !live_start(c, off / PCPU_MIN_ALLOC_SIZE)) {
		r = -ENOENT;
	} else {
		end = find_next_bit(bound_map(c), c->map_bits, off / PCPU_MIN_ALLOC_SIZE + 1);
		r = (int64_t)(end - off / PCPU_MIN_ALLOC_SIZE) * PCPU_MIN_ALLOC_SIZE;
	}
	pcpu_unlock_(p);
	return r;
}

/*
 * Lock-free: is [ptr, ptr+size) inside a live area whose pages are populated?
 * For readers that must never touch an unpopulated page (sums over CPUs).
 */
int pk_pcpu_area_live(struct pk_arena *a, struct pk_pcpu *p, uint64_t ptr, uint64_t size)
{
	struct pk_pcpu_chunk *c;
	int off, bit, start, end, err;

	if (!__atomic_load_n(&p->setup, __ATOMIC_ACQUIRE))
		return 0;
	if (p->first_block && ptr >= p->first_block && ptr + size <= p->first_block + p->static_used)
		return 1;
	c = pcpu_chunk_addr_search(a, p, ptr, &err);
	if (c == NULL || size == 0)
		return 0;
	off = (int)(ptr - c->base_off);
	if ((uint64_t)off + size > ((uint64_t)c->nr_pages << PK_PAGE_SHIFT))
		return 0;
	bit = off / PCPU_MIN_ALLOC_SIZE;
	if (!test_bit(bit, alloc_map(c)))
		return 0;
	start = (int)PFN_DOWN((uint64_t)off);
	end = (int)PFN_UP((uint64_t)off + size);
	return find_next_zero_bit(populated(c), end, start) >= end;
}

/* define_per_cpu(): carve the static region; never freed. */
int64_t pk_pcpu_static_alloc(struct pk_arena *a, struct pk_pcpu *p, uint64_t size, uint64_t align)
{
	uint64_t off;
	int err;

	if (size == 0 || align == 0 || !is_power_of_2(align) || align > PK_PAGE_SIZE)
		return -EINVAL;
	err = pk_pcpu_setup(a, p);
	if (err)
		return err;
	pcpu_lock_(a, p);
	off = ALIGN_UP((uint64_t)p->static_used, align);
	if (off + size > p->static_size) {
		pcpu_unlock_(p);
		return -ENOSPC;
	}
	p->static_used = (uint32_t)(off + size);
	pcpu_unlock_(p);
	return (int64_t)(p->first_block + off);
}

/* ---- balance work ------------------------------------------------------------ */

static void pcpu_balance_free(struct pk_arena *a, struct pk_pcpu *p, int empty_only)
{
	uint64_t co, no, first = p->slots[p->free_slot].first, *to_free;
	struct pk_pcpu_chunk *c;
	size_t n = 0, i;
	int rs, re;

	for (co = first; co; co = pk_chunk(a, co)->next)
		n++;
	if (n < 2)
		return;
	to_free = malloc(n * sizeof(*to_free));
	if (to_free == NULL)
		return;
	n = 0;
	/* keep one free chunk: there is no reason for several */
	for (co = first; co; co = no) {
		c = pk_chunk(a, co);
		no = c->next;
		/* the first chunk (immutable) can be fully free when nothing is static */
		if (co == first || c->immutable)
			continue;
		if (!empty_only || c->nr_empty_pop_pages == 0) {
			list_del_chunk(a, p, c);
			c->dying = 1;	/* off every list; a rebuild leaves it there */
			to_free[n++] = co;
		}
	}
	if (n == 0) {
		free(to_free);
		return;
	}
	pcpu_unlock_(p);
	for (i = 0; i < n; i++) {
		c = pk_chunk(a, to_free[i]);
		for (rs = find_next_bit(populated(c), c->nr_pages, 0); rs < c->nr_pages;
		     rs = find_next_bit(populated(c), c->nr_pages, re + 1)) {
			re = find_next_zero_bit(populated(c), c->nr_pages, rs + 1);
			pcpu_depopulate_chunk(a, p, c, rs, re);
			pcpu_lock_(a, p);
			pcpu_chunk_depopulated(p, c, rs, re);
			pcpu_unlock_(p);
		}
		pcpu_destroy_chunk(a, p, c);
	}
	free(to_free);
	pcpu_lock_(a, p);
}

static void pcpu_balance_populated(struct pk_arena *a, struct pk_pcpu *p)
{
	struct pk_pcpu_chunk *c = NULL;
	int slot, nr_to_pop, ret;

retry_pop:
	if (p->atomic_alloc_failed) {
		nr_to_pop = PCPU_EMPTY_POP_PAGES_HIGH;
		p->atomic_alloc_failed = 0;
	} else {
		int64_t n = PCPU_EMPTY_POP_PAGES_HIGH - p->nr_empty_pop_pages;

		nr_to_pop = n < 0 ? 0 : n > PCPU_EMPTY_POP_PAGES_HIGH ? PCPU_EMPTY_POP_PAGES_HIGH : (int)n;
	}
	for (slot = pcpu_size_to_slot(p, PK_PAGE_SIZE); slot <= p->free_slot; slot++) {
		int nr_unpop = 0, rs, re;
		uint64_t co;

		if (!nr_to_pop)
			break;
		for (co = p->slots[slot].first; co; co = pk_chunk(a, co)->next) {
			c = pk_chunk(a, co);
			nr_unpop = c->nr_pages - c->nr_populated;
			if (nr_unpop)
				break;
		}
		if (!nr_unpop)
			continue;
		/* @c cannot go away while pcpu_alloc_mutex is held */
		for (rs = find_next_zero_bit(populated(c), c->nr_pages, 0); rs < c->nr_pages;
		     rs = find_next_zero_bit(populated(c), c->nr_pages, re + 1)) {
			int nr;

			re = find_next_bit(populated(c), c->nr_pages, rs + 1);
			nr = imin(re - rs, nr_to_pop);
			pcpu_unlock_(p);
			ret = pcpu_populate_chunk(a, p, c, rs, rs + nr);
			pcpu_lock_(a, p);
			if (!ret) {
				nr_to_pop -= nr;
				pcpu_chunk_populated(p, c, rs, rs + nr);
			} else {
				nr_to_pop = 0;
			}
			if (!nr_to_pop)
				break;
		}
	}
	if (nr_to_pop) {
		/* ran out of chunks to populate: create one and retry */
		pcpu_unlock_(p);
		c = pcpu_create_chunk(a, p);
		pcpu_lock_(a, p);
		if (c) {
			pcpu_chunk_relocate(a, p, c, -1);
			goto retry_pop;
		}
	}
}

static void pcpu_reclaim_populated(struct pk_arena *a, struct pk_pcpu *p)
{
	struct pk_pcpu_chunk *c;
	int i, end, reintegrate;

	while (p->slots[p->to_depopulate_slot].first) {
		c = pk_chunk(a, p->slots[p->to_depopulate_slot].first);
		reintegrate = 0;
		/* reverse order keeps populated pages near the chunk's start */
		for (i = c->nr_pages - 1, end = -1; i >= 0; i--) {
			struct pk_block_md *block;

			if (c->nr_empty_pop_pages == 0)
				break;
			/* reintegrate the chunk to prevent atomic alloc failures */
			if (p->nr_empty_pop_pages < PCPU_EMPTY_POP_PAGES_HIGH) {
				reintegrate = 1;
				break;
			}
			block = md_blocks(c) + i;
			if (block->contig_hint == PCPU_BITMAP_BLOCK_BITS && test_bit(i, populated(c))) {
				if (end == -1)
					end = i;
				if (i > 0)
					continue;
				i--;
			}
			if (end == -1)
				continue;
			pcpu_unlock_(p);
			pcpu_depopulate_chunk(a, p, c, i + 1, end + 1);
			pcpu_lock_(a, p);
			pcpu_chunk_depopulated(p, c, i + 1, end + 1);
			end = -1;
		}
		if (reintegrate || c->free_bytes == (int)p->unit_size)
			pcpu_reintegrate_chunk(a, p, c);
		else
			list_add_chunk(a, p, c, p->sidelined_slot, 0);
	}
}

/* pcpu_balance_workfn */
void pk_pcpu_balance(struct pk_arena *a, struct pk_pcpu *p)
{
	/* new requests from here on queue another run */
	__atomic_store_n(&p->balance_tid, 0, __ATOMIC_RELEASE);
	if (!__atomic_load_n(&p->setup, __ATOMIC_ACQUIRE))
		return;
	pcpu_mutex_lock(a, p);
	pcpu_lock_(a, p);
	p->nr_balance_runs++;
	pcpu_balance_free(a, p, 0);
	pcpu_reclaim_populated(a, p);
	pcpu_balance_populated(a, p);
	pcpu_balance_free(a, p, 1);
	pcpu_unlock_(p);
	pcpu_mutex_unlock(p);
}

/* ---- statistics (percpu-stats.c) ------------------------------------------------ */

static int cmpint(const void *x, const void *y)
{
	return *(const int *)x - *(const int *)y;
}

/* chunk_map_stats(); caller holds pcpu_lock.  -ENOMEM if no buffer. */
int pk_pcpu_chunk_stats(struct pk_pcpu_chunk *c, struct pk_pcpu_chunk_stats *s)
{
	int last_alloc, as_len = 0, start, end, i, *sizes;
	int sum_frag = 0, max_frag = 0, cur_min = 0, cur_med = 0, cur_max = 0;

	sizes = malloc(sizeof(int) * (2 * (size_t)(c->nr_alloc + hidden_allocs(c)) + 3));
	if (sizes == NULL)
		return -ENOMEM;
	/* find_last_bit returns its size argument when nothing is found */
	last_alloc = find_last_bit(alloc_map(c), c->map_bits - c->end_offset / PCPU_MIN_ALLOC_SIZE - 1);
	last_alloc = test_bit(last_alloc, alloc_map(c)) ? last_alloc + 1 : 0;
	start = c->start_offset / PCPU_MIN_ALLOC_SIZE;
	/* positive: allocations; negative: free fragments */
	while (start < last_alloc) {
		if (test_bit(start, alloc_map(c))) {
			end = find_next_bit(bound_map(c), last_alloc, start + 1);
			sizes[as_len] = 1;
		} else {
			end = find_next_bit(alloc_map(c), last_alloc, start + 1);
			sizes[as_len] = -1;
		}
		sizes[as_len++] *= (end - start) * PCPU_MIN_ALLOC_SIZE;
		start = end;
	}
	if (as_len > 0) {
		qsort(sizes, (size_t)as_len, sizeof(int), cmpint);
		for (i = 0; i < as_len && sizes[i] < 0; i++) {
			sum_frag -= sizes[i];
			max_frag = imax(max_frag, -sizes[i]);
		}
		/* as the kernel: reads sizes[as_len] (our spare slot) if all are free */
		sizes[as_len] = 0;
		cur_min = sizes[i];
		cur_med = sizes[(i + as_len - 1) / 2];
		cur_max = sizes[as_len - 1];
	}
	free(sizes);
	s->nr_alloc = c->nr_alloc;
	s->max_alloc_size = c->max_alloc_size;
	s->empty_pop_pages = c->nr_empty_pop_pages;
	s->first_bit = c->chunk_md.first_free;
	s->free_bytes = c->free_bytes;
	s->contig_bytes = (int64_t)c->chunk_md.contig_hint * PCPU_MIN_ALLOC_SIZE;
	s->sum_frag = sum_frag;
	s->max_frag = max_frag;
	s->cur_min_alloc = cur_min;
	s->cur_med_alloc = cur_med;
	s->cur_max_alloc = cur_max;
	return 0;
}

/* ---- consistency check ------------------------------------------------------- */

#define FAIL(...) do { snprintf(msg, len, __VA_ARGS__); err = -EUCLEAN; goto out; } while (0)

/* Largest free run in [s, e) of @map, its left and right edge runs. */
static void true_runs(const uint64_t *map, int s, int e, int *largest, int *left, int *right,
		      int *first)
{
	int i = s, z, o;

	*largest = *left = *right = 0;
	*first = e;
	while (i < e) {
		z = find_next_zero_bit(map, e, i);
		if (z >= e)
			break;
		o = find_next_bit(map, e, z + 1);
		if (z == s)
			*left = o - z;
		if (o == e)
			*right = o - z;
		if (*first == e)
			*first = z;
		if (o - z > *largest)
			*largest = o - z;
		i = o;
	}
}

static int region_free(const uint64_t *map, int start, int n)
{
	return n <= 0 || find_next_bit(map, start + n, start) >= start + n;
}

int pk_pcpu_check(struct pk_arena *a, struct pk_pcpu *p, char *msg, size_t len)
{
	struct pk_pcpu_chunk *c;
	int64_t empty = 0;
	uint64_t cur = 0, pop = 0, nchunks = 0, seen = 0, usage[PK_MEMCG_MAX] = { 0 };
	int err = 0, i, slot;

	msg[0] = 0;
	if (p->magic != PK_PCPU_MAGIC)
		return snprintf(msg, len, "per-CPU allocator state not formatted"), -EUCLEAN;
	pcpu_lock_(a, p);
	if (p->intent.op != PK_INTENT_NONE)
		FAIL("intent %u left set", p->intent.op);
	if (!p->setup)
		goto out;
	for_each_chunk(a, p, c) {
		uint64_t *map = alloc_map(c);
		int largest, left, right, first, n = 0, zeros, b, rs, re;
		uint64_t co = pk_chunk_off(a, c);

		if (++seen > 1u << 20)
			FAIL("chunk list loops");
		zeros = c->map_bits - bitmap_weight(map, c->map_bits);
		if (c->free_bytes != zeros * PCPU_MIN_ALLOC_SIZE)
			FAIL("chunk %#llx: free_bytes %d, map has %d free bytes", (unsigned long long)co,
			     c->free_bytes, zeros * PCPU_MIN_ALLOC_SIZE);
		for (b = 0; b < c->map_bits; b++)
			if (live_start(c, b))
				n++;
		if (c->nr_alloc != n)
			FAIL("chunk %#llx: nr_alloc %d, %d live areas", (unsigned long long)co, c->nr_alloc, n);
		for (b = 0; b < c->map_bits; b++) {
			uint8_t g = memcg_map(c)[b];

			if (!g)
				continue;
			if (!live_start(c, b) || g >= PK_MEMCG_MAX || !p->memcg[g].name[0])
				FAIL("chunk %#llx: group byte %u at bit %d of no live area",
				     (unsigned long long)co, g, b);
			usage[g] += pk_pcpu_obj_full_size(
				p, (uint64_t)(find_next_bit(bound_map(c), c->map_bits, b + 1) - b) * 4);
		}
		/*
		 * Block hints: never above the bitmap, hint regions free.  A live
		 * holder of the mutex may be populating its new area: those pages
		 * hold allocated bits before they are populated, and were counted
		 * out of nr_empty_pop_pages ahead of time.
		 */
		rs = re = 0;
		n = -inflight_unpopulated(a, p, c, &rs, &re);
		for (i = 0; i < c->nr_pages; i++) {
			struct pk_block_md *blk = md_blocks(c) + i;
			int s = i * PCPU_BITMAP_BLOCK_BITS;

			true_runs(map, s, s + PCPU_BITMAP_BLOCK_BITS, &largest, &left, &right, &first);
			/*
			 * The kernel's block hints are conservative, not exact: a promoted
			 * scan hint restarts the scan after itself (pcpu_block_refresh_hint),
			 * which can leave right_free or contig_hint below the truth.  They
			 * never claim more than there is.
			 */
			if (blk->contig_hint > largest || blk->left_free > left || blk->right_free > right ||
			    (largest && !blk->contig_hint))
				FAIL("chunk %#llx block %d: hints contig %d left %d right %d, bitmap %d %d %d",
				     (unsigned long long)co, i, blk->contig_hint, blk->left_free,
				     blk->right_free, largest, left, right);
			if (!region_free(map, s + blk->contig_hint_start, blk->contig_hint) ||
			    !region_free(map, s + blk->scan_hint_start, blk->scan_hint))
				FAIL("chunk %#llx block %d: a hint covers allocated bits", (unsigned long long)co, i);
			if (blk->scan_hint && blk->scan_hint > blk->contig_hint)
				FAIL("chunk %#llx block %d: scan_hint above contig_hint", (unsigned long long)co, i);
			if (largest && blk->first_free > first - s)
				FAIL("chunk %#llx block %d: first_free %d after the first free bit %d",
				     (unsigned long long)co, i, blk->first_free, first - s);
			if (largest == PCPU_BITMAP_BLOCK_BITS && test_bit(i, populated(c)))
				n++;
			if (!test_bit(i, populated(c)) && largest != PCPU_BITMAP_BLOCK_BITS && (i < rs || i >= re))
				FAIL("chunk %#llx: unpopulated page %d holds allocated bits",
				     (unsigned long long)co, i);
		}
		if (c->nr_empty_pop_pages != n)
			FAIL("chunk %#llx: nr_empty_pop_pages %d, %d empty populated pages",
			     (unsigned long long)co, c->nr_empty_pop_pages, n);
		if (c->nr_populated != bitmap_weight(populated(c), c->nr_pages))
			FAIL("chunk %#llx: nr_populated %d", (unsigned long long)co, c->nr_populated);
		/* the chunk hint: a free region, never more than the free space */
		true_runs(map, 0, c->map_bits, &largest, &left, &right, &first);
		if (c->chunk_md.contig_hint > largest ||
		    !region_free(map, c->chunk_md.contig_hint_start, c->chunk_md.contig_hint) ||
		    c->chunk_md.contig_hint * PCPU_MIN_ALLOC_SIZE > c->free_bytes)
			FAIL("chunk %#llx: chunk contig_hint %d at %d, largest free run %d",
			     (unsigned long long)co, c->chunk_md.contig_hint,
			     c->chunk_md.contig_hint_start, largest);
		if (largest && c->chunk_md.first_free > first)
			FAIL("chunk %#llx: first_free %d after the first free bit %d", (unsigned long long)co,
			     c->chunk_md.first_free, first);
		/* slots */
		if (c->kind == PK_CHUNK_RESERVED || c->dying) {
			if (c->slot != -1)
				FAIL("reserved or dying chunk %#llx on slot %d", (unsigned long long)co, c->slot);
			if (c->dying)
				empty += c->nr_empty_pop_pages;
		} else if (c->isolated) {
			if (c->slot != p->sidelined_slot && c->slot != p->to_depopulate_slot)
				FAIL("isolated chunk %#llx on slot %d", (unsigned long long)co, c->slot);
		} else {
			slot = pcpu_chunk_slot(p, c);
			if (c->slot != slot && !(c->slot == 0 && slot < PCPU_SLOT_FAIL_THRESHOLD))
				FAIL("chunk %#llx on slot %d, its contig hint says %d", (unsigned long long)co,
				     c->slot, slot);
			empty += c->nr_empty_pop_pages;
		}
		if (c->kind == PK_CHUNK_DYN) {
			nchunks++;
			pop += (uint64_t)c->nr_populated;
		}
		cur += (uint64_t)c->nr_alloc;
	}
	/* every listed chunk is on the list its slot field names, links agree */
	for (slot = 0; slot < p->nr_slots; slot++) {
		uint64_t co, prev = 0, n = 0;

		for (co = p->slots[slot].first; co; prev = co, co = pk_chunk(a, co)->next) {
			if (!chunk_ok(a, co))
				FAIL("slot %d: bad chunk %#llx", slot, (unsigned long long)co);
			c = pk_chunk(a, co);
			if (c->slot != slot || c->prev != prev || ++n > seen)
				FAIL("slot %d: chunk %#llx has slot %d prev %#llx", slot,
				     (unsigned long long)co, c->slot, (unsigned long long)c->prev);
		}
		if (p->slots[slot].last != prev)
			FAIL("slot %d: last %#llx, walked to %#llx", slot,
			     (unsigned long long)p->slots[slot].last, (unsigned long long)prev);
	}
	if (p->nr_empty_pop_pages != empty)
		FAIL("pcpu_nr_empty_pop_pages %lld, chunks have %lld", (long long)p->nr_empty_pop_pages,
		     (long long)empty);
	if (p->nr_populated != pop + PFN_DOWN(p->size_sum))
		FAIL("pcpu_nr_populated %llu, chunks have %llu", (unsigned long long)p->nr_populated,
		     (unsigned long long)(pop + PFN_DOWN(p->size_sum)));
	if (p->stats.nr_cur_alloc != cur || p->stats.nr_alloc - p->stats.nr_dealloc != cur)
		FAIL("stats: nr_cur_alloc %llu (alloc %llu dealloc %llu), chunks have %llu",
		     (unsigned long long)p->stats.nr_cur_alloc, (unsigned long long)p->stats.nr_alloc,
		     (unsigned long long)p->stats.nr_dealloc, (unsigned long long)cur);
	if (p->stats.nr_chunks != nchunks + 1 || p->stats.nr_max_chunks < p->stats.nr_chunks)
		FAIL("stats: nr_chunks %llu, %llu chunks", (unsigned long long)p->stats.nr_chunks,
		     (unsigned long long)nchunks + 1);
	if (p->nr_data_pages != (nchunks + 1) * p->unit_pages * p->nr_units)
		FAIL("nr_data_pages %llu for %llu chunks", (unsigned long long)p->nr_data_pages,
		     (unsigned long long)nchunks + 1);
	for (i = 1; i < PK_MEMCG_MAX; i++)
		if (p->memcg[i].name[0] && p->memcg[i].usage_pcpu != usage[i])
			FAIL("memcg %s: usage_pcpu %llu, areas hold %llu", p->memcg[i].name,
			     (unsigned long long)p->memcg[i].usage_pcpu, (unsigned long long)usage[i]);
out:
	pcpu_unlock_(p);
	return err;
}
