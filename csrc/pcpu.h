/*
 * pcpu.h - the per-CPU memory allocator of mm/percpu.c, in the arena.
 *
 * Memory is allocated in chunks; a chunk has one unit per possible CPU, all
 * units the same size, back to back in one block of arena pages.  An
 * allocation is an (offset, size) inside a unit and occupies the same offset
 * in every unit, so a per-CPU pointer is the arena offset of unit 0's copy and
 *
 *	per_cpu_ptr(ptr, cpu) = ptr + unit_map[cpu] * unit_size
 *
 *   chunk data block (arena pages, populated page by page, in unison)
 *  +----------------+----------------+-----   -+----------------+
 *  | unit 0 (cpu a) | unit 1 (cpu b) |   ...   | unit n-1       |
 *  +----------------+----------------+-----   -+----------------+
 *  page i of a chunk = page i of every unit: populated and punched together
 *
 *   chunk meta block (arena pages, always populated)
 *  +-------------+-----------+-----------+-----------+-----------+----------+
 *  | struct       | alloc_map | bound_map | md_blocks | populated | memcg    |
 *  | pk_pcpu_chunk| 1 bit/4 B | +1 bit    | 32 B/page | 1 bit/page| 1 B/4 B  |
 *  +-------------+-----------+-----------+-----------+-----------+----------+
 *
 * The first chunk's data block is laid out < static | reserved | dynamic > in
 * every unit.  The static region has no chunk (define_per_cpu() carves it,
 * nothing frees it); the reserved region and the dynamic region are each
 * served by a chunk whose base is its region's start rounded down to a page,
 * with the bits before and after the region hidden as allocated, exactly as
 * pcpu_alloc_first_chunk() does.  The first block is populated at setup and
 * never changes ("immutable").
 *
 * The search and hint code (block metadata, slots, fit, scan) follows the
 * kernel function by function and keeps its names; pcpu.c says where it
 * differs.  Differences forced by user space:
 *
 *  - Setup is lazy: the first chunk is built by the first per-CPU call, not
 *    when the domain is formatted, so a domain that never uses per-CPU memory
 *    pays nothing.
 *  - Population is fallocate() of each unit's page range, depopulation is
 *    fallocate(PUNCH_HOLE); pages are never touched before they are populated.
 *  - Crash recovery.  pcpu_lock and pcpu_alloc_mutex are pk_locks: a waiter
 *    takes one over from a dead owner.  Before touching the maps, the holder
 *    of pcpu_lock writes an intent (the area it allocates or frees); the
 *    holder of pcpu_alloc_mutex writes one for the area it is populating.
 *    Recovery finishes a free, rolls back an allocation, and then rebuilds
 *    every derived field (hints, free_bytes, counts, slots, memcg usage) from
 *    the allocation and boundary maps.  Mutex recovery also frees chunk blocks
 *    that were allocated or half-destroyed by the dead holder (found by their
 *    page descriptors) and makes the files's backing match the populated
 *    bitmaps.  What the dead process had allocated for itself may be lost.
 *  - Double and invalid frees are refused: an area is live iff its first bit
 *    is set in both the allocation map and the boundary map.
 *  - Memcg charging happens under pcpu_lock, not before it (a charge is one
 *    comparison here and cannot reclaim), so recovery can recompute it.
 *
 * Synchronization (kernel names):
 *	config (sizes, slots, unit_map)		written at format, read-only after
 *	first_*, setup, all_chunks linkage	pcpu_alloc_mutex + pcpu_lock to change
 *	chunk maps, hints, slots, counters,
 *	stats, memcg usage_pcpu, intent		pcpu_lock
 *	population (fallocate/punch), chunk
 *	create/destroy, mutex_intent		pcpu_alloc_mutex
 *	warn_limit, balance_tid, memcg usage	atomics
 *	lock order				pcpu_alloc_mutex -> pcpu_lock -> page_lock
 */
#ifndef PK_PCPU_H
#define PK_PCPU_H

#include <stdint.h>

#include "arena.h"
#include "compat.h"
#include "lock.h"

#define PCPU_MIN_ALLOC_SHIFT		2
#define PCPU_MIN_ALLOC_SIZE		(1 << PCPU_MIN_ALLOC_SHIFT)
#define PCPU_MIN_UNIT_SIZE		(32 << 10)	/* also the largest allocation */
#define PCPU_BITMAP_BLOCK_SIZE		PK_PAGE_SIZE
#define PCPU_BITMAP_BLOCK_BITS		((int)(PCPU_BITMAP_BLOCK_SIZE >> PCPU_MIN_ALLOC_SHIFT))
#define PERCPU_DYNAMIC_EARLY_SIZE	(20 << 10)
#define PERCPU_DYNAMIC_RESERVE		(28 << 10)
#define PERCPU_MODULE_RESERVE		(8 << 10)
#define PCPU_SLOT_BASE_SHIFT		5
#define PCPU_SLOT_FAIL_THRESHOLD	3
#define PCPU_EMPTY_POP_PAGES_LOW	2
#define PCPU_EMPTY_POP_PAGES_HIGH	4
#define PCPU_WARN_LIMIT			10

#define PK_PCPU_MAGIC		0x55504350u	/* "PCPU" */
#define PK_PCPU_CHUNK_MAGIC	0x4b4e4843u	/* "CHNK" */
#define PK_PCPU_MAX_SLOTS	32
#define PK_PCPU_MAX_UNIT_SIZE	(64u << 20)
#define PK_MEMCG_MAX		64
#define PK_MEMCG_NAME		32

/* Page descriptor classes of the blocks the allocator owns (type PK_PG_HEAD). */
#define PK_CLS_PCPU_META	0xf0
#define PK_CLS_PCPU_DATA	0xf1

enum { PK_CHUNK_DYN = 0, PK_CHUNK_FIRST = 1, PK_CHUNK_RESERVED = 2 };
enum { PK_INTENT_NONE = 0, PK_INTENT_ALLOC = 1, PK_INTENT_FREE = 2, PK_INTENT_POPULATE = 3 };

/* struct pcpu_block_md, in bits. */
struct pk_block_md {
	int32_t scan_hint;		/* largest known free run before contig */
	int32_t scan_hint_start;
	int32_t contig_hint;		/* largest known free run */
	int32_t contig_hint_start;
	int32_t left_free;		/* free run touching the left edge */
	int32_t right_free;		/* free run touching the right edge */
	int32_t first_free;		/* a lower bound of the first free bit */
	int32_t nr_bits;
};

struct pk_pcpu_chunk {
	uint32_t magic;
	int32_t kind;			/* PK_CHUNK_* */
	uint64_t base_off;		/* arena offset of unit 0's page 0 (base_addr) */
	uint64_t next, prev;		/* slot list: chunk offsets, 0 = end */
	uint64_t all_next;		/* every chunk, newest first */
	uint64_t data_off;		/* the data block this chunk's pages are in */
	int32_t slot;			/* the list it is on, -1 = none */
	int32_t nr_pages;
	int32_t map_bits;
	int32_t start_offset, end_offset;	/* hidden bytes (first chunk regions) */
	int32_t free_bytes;
	int32_t nr_alloc;		/* live allocations (stats) */
	int32_t max_alloc_size;		/* largest ever (stats) */
	int32_t nr_populated;
	int32_t nr_empty_pop_pages;
	uint8_t immutable, isolated;
	uint8_t dying;			/* being destroyed by the balance work */
	uint8_t pad;
	uint32_t meta_pages;
	struct pk_block_md chunk_md;
	/* byte offsets from the start of this struct */
	uint32_t alloc_map_off, bound_map_off, md_blocks_off, populated_off, memcg_off;
	uint32_t pad2;
} ____cacheline_aligned;

struct pk_memcg {
	char name[PK_MEMCG_NAME];	/* "" = free slot; written under pcpu_lock */
	uint64_t limit;			/* bytes; atomic */
	uint64_t usage_pcpu;		/* charged by the per-CPU allocator; pcpu_lock */
	uint64_t usage_other;		/* charged by other allocators; atomic */
	uint64_t max_usage;		/* atomic, best effort */
	uint64_t failcnt;		/* atomic */
	uint64_t nr_pcpu_objs;		/* pcpu_lock */
	uint64_t pad;
};

struct pk_pcpu_stats {			/* struct percpu_stats */
	uint64_t nr_alloc, nr_dealloc, nr_cur_alloc, nr_max_alloc;
	uint64_t nr_chunks, nr_max_chunks;
	uint64_t min_alloc_size, max_alloc_size;
};

struct pk_pcpu_intent {
	uint32_t op;			/* PK_INTENT_* */
	int32_t bit_off;
	int32_t bits;
	uint32_t pad;
	uint64_t chunk;
};

struct pk_pcpu {
	uint32_t magic;
	uint32_t nr_cpu_ids;
	/* pcpu_alloc_info, written at format */
	uint32_t static_size, reserved_size, dyn_size, unit_size;
	uint32_t atom_size, alloc_size, size_sum, unit_pages;
	uint32_t nr_units;
	int32_t nr_slots, sidelined_slot, free_slot, to_depopulate_slot;
	uint32_t unit_map_off;		/* int32 per CPU id, -1 = not possible */

	struct pk_lock lock ____cacheline_aligned;		/* pcpu_lock */
	struct pk_lock alloc_mutex ____cacheline_aligned;	/* pcpu_alloc_mutex */

	uint32_t setup ____cacheline_aligned;	/* the first chunk exists */
	uint32_t static_used;
	uint64_t first_block;		/* data block of the first chunk */
	uint64_t first_chunk, reserved_chunk;
	uint64_t all_chunks;
	struct { uint64_t first, last; } slots[PK_PCPU_MAX_SLOTS];
	int64_t nr_empty_pop_pages;	/* pcpu_nr_empty_pop_pages */
	uint64_t nr_populated;		/* pcpu_nr_populated: pages per unit */
	uint64_t nr_data_pages;		/* pages of every chunk data block */
	struct pk_pcpu_stats stats;
	uint32_t atomic_alloc_failed;
	int32_t warn_limit;		/* atomic */
	uint32_t balance_tid;		/* atomic: who has balance work queued */
	uint32_t pad;
	uint64_t balance_ns;		/* atomic: when (CLOCK_MONOTONIC) it was queued */
	uint64_t recoveries;
	uint64_t nr_balance_runs, nr_pages_populated, nr_pages_depopulated;
	uint64_t nr_chunks_created, nr_chunks_destroyed;
	struct pk_pcpu_intent intent;		/* pcpu_lock */
	struct pk_pcpu_intent mutex_intent;	/* pcpu_alloc_mutex */
	struct pk_memcg memcg[PK_MEMCG_MAX];	/* slot 0 unused: "no group" */
};

/* Result details of an allocation, for the caller's messages and work. */
struct pk_pcpu_res {
	const char *err;		/* the kernel's failure text, NULL = none */
	uint64_t size, align;		/* after rounding, for the messages */
	int need_balance;
	int warn;			/* print the failure (warn_limit had budget) */
	int warn_last;			/* ... and it was the last one */
};

uint64_t pk_pcpu_block_size(uint32_t nr_cpu_ids);
int pk_pcpu_format(struct pk_pcpu *p, uint32_t nr_cpu_ids, const uint8_t *possible,
		   uint32_t static_size, uint32_t reserved_size, uint32_t dyn_size);

static inline const int32_t *pk_pcpu_unit_map(const struct pk_pcpu *p)
{
	return (const int32_t *)((const char *)p + p->unit_map_off);
}

int pk_pcpu_setup(struct pk_arena *a, struct pk_pcpu *p);
int64_t pk_pcpu_alloc(struct pk_arena *a, struct pk_pcpu *p, uint64_t size, uint64_t align,
		      int reserved, int is_atomic, int do_warn, int memcg, struct pk_pcpu_res *res);
int pk_pcpu_free(struct pk_arena *a, struct pk_pcpu *p, uint64_t ptr, int *need_balance);
int64_t pk_pcpu_alloc_size(struct pk_arena *a, struct pk_pcpu *p, uint64_t ptr);
int64_t pk_pcpu_static_alloc(struct pk_arena *a, struct pk_pcpu *p, uint64_t size, uint64_t align);
void pk_pcpu_balance(struct pk_arena *a, struct pk_pcpu *p);
int pk_pcpu_check(struct pk_arena *a, struct pk_pcpu *p, char *msg, size_t len);
int pk_pcpu_lock(struct pk_arena *a, struct pk_pcpu *p);
void pk_pcpu_unlock(struct pk_pcpu *p);
int pk_pcpu_area_live(struct pk_arena *a, struct pk_pcpu *p, uint64_t ptr, uint64_t size);

/* Chunk statistics of percpu-stats.c: chunk_map_stats(). */
struct pk_pcpu_chunk_stats {
	int64_t nr_alloc, max_alloc_size, empty_pop_pages, first_bit, free_bytes, contig_bytes;
	int64_t sum_frag, max_frag, cur_min_alloc, cur_med_alloc, cur_max_alloc;
};
int pk_pcpu_chunk_stats(struct pk_pcpu_chunk *c, struct pk_pcpu_chunk_stats *s);

static inline struct pk_pcpu_chunk *pk_chunk(const struct pk_arena *a, uint64_t off)
{
	return off ? (struct pk_pcpu_chunk *)(a->base + off) : NULL;
}

static inline uint64_t pk_chunk_off(const struct pk_arena *a, const struct pk_pcpu_chunk *c)
{
	return c ? (uint64_t)((const char *)c - a->base) : 0;
}

/* memcg groups */
int pk_memcg_create(struct pk_arena *a, struct pk_pcpu *p, const char *name, uint64_t limit);
int pk_memcg_lookup(struct pk_pcpu *p, const char *name);
int pk_memcg_remove(struct pk_arena *a, struct pk_pcpu *p, int id);
int pk_memcg_try_charge(struct pk_pcpu *p, int id, uint64_t bytes);
void pk_memcg_uncharge(struct pk_pcpu *p, int id, uint64_t bytes);
uint64_t pk_pcpu_obj_full_size(const struct pk_pcpu *p, uint64_t size);

#endif /* PK_PCPU_H */
