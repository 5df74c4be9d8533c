/*
 * htab.h - BPF hash maps (kernel/bpf/hashtab.c) in shared memory: HASH and
 * PERCPU_HASH, preallocated (elements on a per-CPU freelist) or with
 * BPF_F_NO_PREALLOC (elements from a BPF memory allocator, freed after an RCU
 * grace period).  Arrays need no mechanism beyond memcpy and live in the
 * binding (_core_maps.inc).
 *
 *  struct pk_htab (kzalloc'd)            buckets (kzalloc'd, 32 B each)
 *  +-------------------------------+     +------+-------+----------+----------+
 *  | magic id type flags sizes     |     | lock | first | pend_new | pend_old |  x n_buckets
 *  | n_buckets hashrnd             |     +------+-------+----------+----------+
 *  | buckets fl fl_extra elems     |          |
 *  | ma pcpu_ma count ...          |          v  (singly linked, 0-terminated)
 *  +-------------------------------+     struct pk_htab_elem
 *                                        +------+------+-----------------+---------------------+
 *                                        | next | hash | key (round 8)   | value (round 8)     |
 *                                        +------+------+-----------------+ or, per-CPU maps:   |
 *                                                                          | pptr (prealloc) or  |
 *                                                                          | the pcpu_ma object  |
 *                                                                          +---------------------+
 *
 * elem_size = 16 + round_up(key_size, 8) + (percpu ? 8 : round_up(value_size, 8)),
 * n_buckets = roundup_pow_of_two(max_entries), bucket = hash & (n_buckets - 1),
 * hash = jhash2/jhash(key, key_size, hashrnd) as htab_map_hash().
 *
 * Preallocated maps: max_entries elements on the freelist `fl`, plus one per
 * possible CPU on `fl_extra` for replacing an element of a full map (the
 * kernel's per-CPU extra_elems, made a list because a user-space caller can
 * migrate or die).  A replacement takes its new element from fl_extra (else
 * fl) and gives the old element back to the same list, so `fl` always holds
 * max_entries - elements in the map: a new key is refused with E2BIG when it
 * is empty, exactly the kernel's prealloc rule.  Per-CPU values of
 * preallocated elements are allocated once at create, one per element.
 *
 * No-prealloc maps count elements in `count` (the kernel's atomic_t
 * flavour) and allocate with bpf_mem_cache_alloc(); the per-CPU flavour
 * takes its value from a second, per-CPU allocator (htab->pcpu_ma).
 *
 * Synchronization:
 *	bucket.first, the next links of its chain, pend_new, pend_old,
 *	the key and (non-per-CPU) value of a linked element
 *			the bucket's lock; every operation, lookups included,
 *			takes it (the kernel's lookups are lock-free under RCU:
 *			ours copy whole values, never torn by an update)
 *	per-CPU values	written in place under the bucket lock by updates;
 *			programs write their CPU's copy through a view, unlocked
 *	count		atomics, changed under the bucket lock of the element
 *	recount		set by a bucket repair; cleared by pk_htab_check()
 *	fl, fl_extra	their own head locks (taken inside a bucket lock)
 *
 * Only one bucket lock is ever held at a time, except by pk_htab_check(),
 * which takes them all in index order.
 *
 * Crash: an operation records what it is doing in its bucket before each
 * step that matters (pend_old: the element it unlinks, pend_new | list bit:
 * the element it links); the next holder of a lock taken over from a dead
 * owner finishes or undoes it (bucket_repair in htab.c).  Lost on a kill:
 * an element between its pop and the pend_new store, or between clearing
 * pend_old and its free (a few instructions each); pk_htab_check() counts
 * the preallocated elements so lost (`leaked`) and recounts `count`.  A
 * per-CPU value written in place (an update of an existing key) is torn when
 * its writer dies mid-copy: that value only, as it would be in the kernel.
 */
#ifndef PK_HTAB_H
#define PK_HTAB_H

#include <stddef.h>
#include <stdint.h>

#include "compat.h"
#include "freelist.h"
#include "lock.h"
#include "memalloc.h"

#define PK_HTAB_MAGIC		0x4241544848ull	/* "HHTAB" */

#define PK_BPF_MAP_TYPE_HASH		1
#define PK_BPF_MAP_TYPE_ARRAY		2
#define PK_BPF_MAP_TYPE_PERCPU_HASH	5
#define PK_BPF_MAP_TYPE_PERCPU_ARRAY	6

#define PK_BPF_ANY		0
#define PK_BPF_NOEXIST		1
#define PK_BPF_EXIST		2
#define PK_BPF_F_LOCK		4

#define PK_HTAB_ELEM_HDR	16
#define PK_HTAB_PEND_EXTRA	1ull
#define PK_HTAB_REPLICATE	2	/* onallcpus: one value_size value for every CPU */	/* pend_new: the element came from fl_extra */

struct pk_htab_bucket {
	struct pk_lock lock;
	uint64_t first;		/* offset of the first element, 0 = empty */
	uint64_t pend_new;	/* crash record: element being linked (| PK_HTAB_PEND_EXTRA) */
	uint64_t pend_old;	/* crash record: element being unlinked */
};

struct pk_htab_elem {
	uint64_t next;		/* next element in the bucket; the freelist link when free */
	uint32_t hash;
	uint32_t pad;
	unsigned char key[];	/* round_up(key_size, 8), then the value or its pointer */
};

struct pk_htab {
	uint64_t magic;
	uint64_t id;
	uint32_t map_type, map_flags, key_size, value_size;
	uint32_t max_entries, n_buckets, elem_size, hashrnd;
	uint32_t key_rsize, value_rsize, percpu, prealloc;
	uint64_t buckets;	/* offset of n_buckets struct pk_htab_bucket */
	uint64_t fl, fl_extra;	/* prealloc: the freelists */
	uint64_t elems, nr_elems;	/* prealloc: the element area */
	uint64_t ma, pcpu_ma;	/* no-prealloc: the allocators */
	uint64_t count;		/* no-prealloc: elements in the map */
	uint64_t recount;	/* a repair ran: count may be off until pk_htab_check() */
	uint64_t repairs;	/* buckets repaired after a dead lock holder */
	uint64_t pad[4];
};

/* What an operation needs besides the map: the arena, the allocators' envs, the CPU. */
struct pk_htab_ctx {
	struct pk_arena *a;
	struct pk_ma_env *e, *pe;	/* for ma and pcpu_ma */
	struct pk_ma *ma, *pcpu_ma;
	struct pk_freelist *fl, *fl_extra;
	uint32_t cpu;
	int nmi;
	uint32_t nr_possible;
	const uint64_t *unit_off;	/* per possible CPU, in order: unit_map[cpu] * unit_size */
	uint64_t this_unit;		/* the calling CPU's unit offset */
};

uint32_t pk_jhash(const void *key, uint32_t length, uint32_t initval);
uint32_t pk_jhash2(const uint32_t *k, uint32_t length, uint32_t initval);

static inline uint32_t pk_htab_hash(const struct pk_htab *h, const void *key)
{
	if (likely(h->key_size % 4 == 0))
		return pk_jhash2((const uint32_t *)key, h->key_size / 4, h->hashrnd);
	return pk_jhash(key, h->key_size, h->hashrnd);
}

static inline struct pk_htab_elem *pk_htab_elem_at(struct pk_arena *a, uint64_t off)
{
	return (struct pk_htab_elem *)(a->base + off);
}

/* The value (or per-CPU pointer slot) of an element. */
static inline unsigned char *pk_htab_val(const struct pk_htab *h, struct pk_htab_elem *l)
{
	return l->key + h->key_rsize;
}

/*
 * All operations: Context: may spin/sleep on a bucket lock for the length of
 * another operation (NMI context: trylock, -EBUSY); the GIL may be held.
 * Process-safe: yes.  A dead holder's lock is taken over and its bucket repaired.
 *
 * pk_htab_lookup: copy the value into @out (per-CPU maps: every possible
 *	CPU's copy, value_rsize each, in CPU order) -> 0 / -ENOENT / -EBUSY.
 * pk_htab_lookup_val: the offset of the element's value (per-CPU maps: this
 *	CPU's copy), 0 when the key is missing (or -EBUSY in NMI: *err).
 * pk_htab_update: htab_map_update_elem / htab_percpu_map_update_elem; @onallcpus:
 *	1: the value holds every possible CPU's copy; PK_HTAB_REPLICATE: one
 *	value for every CPU; 0: this CPU's copy (a program's update) -> 0 / -EINVAL / -EEXIST /
 *	-ENOENT / -E2BIG / -ENOMEM / -EBUSY; with @old_out, the value it
 *	replaces is copied there first (*had_old says whether there was one).
 * pk_htab_delete: -> 0 / -ENOENT / -EBUSY; with @out, the value is copied
 *	out first (lookup_and_delete).
 * pk_htab_get_next_key: the key after @key (NULL: the first), the first key
 *	when @key is missing -> 0 / -ENOENT at the end.
 * pk_htab_batch: whole buckets from *cursor while they fit in @max elements;
 *	copies keys (and values), deletes them with @del; -> elements copied
 *	(*cursor advanced; = n_buckets at the end), or -ENOSPC when the first
 *	bucket alone does not fit.
 */
int pk_htab_lookup(struct pk_htab_ctx *c, struct pk_htab *h, const void *key, void *out);
uint64_t pk_htab_lookup_val(struct pk_htab_ctx *c, struct pk_htab *h, const void *key, int *err);
int pk_htab_update(struct pk_htab_ctx *c, struct pk_htab *h, const void *key, const void *value,
		   uint64_t flags, int onallcpus, void *old_out, int *had_old);
int pk_htab_delete(struct pk_htab_ctx *c, struct pk_htab *h, const void *key, void *out);
int pk_htab_get_next_key(struct pk_htab_ctx *c, struct pk_htab *h, const void *key, void *next);
int64_t pk_htab_batch(struct pk_htab_ctx *c, struct pk_htab *h, uint32_t *cursor, void *keys,
		      void *values, uint32_t max, int del);

/*
 * Consistency check and repair: takes every bucket lock in order, checks every
 * chain (elements inside the area or allocated from ma, hash matching key and
 * bucket, no cycle), sets count to the elements found and clears recount.
 * Returns the elements in the map, or -EUCLEAN with @msg.  *leaked: preallocated
 * elements neither in a bucket nor on a freelist (lost to a killed process).
 */
int64_t pk_htab_check(struct pk_htab_ctx *c, struct pk_htab *h, uint64_t *leaked, char *msg,
		      size_t msglen);
/* Map free (no-prealloc): every element back to its allocator, no grace period. */
void pk_htab_free_all(struct pk_htab_ctx *c, struct pk_htab *h);

#endif /* PK_HTAB_H */
