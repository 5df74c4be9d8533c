/*
 * arena.h - the domain's shared-memory arena: header, page allocator, slab.
 *
 * A domain is a small machine in one sparse shared-memory file, mapped
 * MAP_SHARED by every process at its own address.  Nothing in it is a pointer:
 * every reference is a 64-bit offset from the start of the file, 0 is NULL.
 *
 *   page 0              meta pages (populated at creation)          data pages
 *  +--------+----------+--------------+---------------------------+----------- ...
 *  | header | registry | page bitmap  | page descriptors          | pages, populated
 *  |        | (Python) | 1 bit / page | 16 B / page ("struct page")| on allocation,
 *  +--------+----------+--------------+---------------------------+ punched on free
 *
 * The page allocator mirrors the kernel's buddy allocator only in contract
 * (alloc_pages / free_pages of n contiguous pages); it is a first-fit bitmap
 * with a rotating hint.  A page is populated (fallocate) when it is handed
 * out and its backing is returned with fallocate(PUNCH_HOLE) when it is
 * freed, so the file's st_blocks always equals meta pages + allocated pages.
 *
 * kmalloc is a slab allocator: one cache per size class (sizes written by
 * Python into the header at creation), each a doubly-linked list of partial
 * slab pages.  Free objects of a slab page are chained through their first 4
 * bytes (object index + 1) and carry PK_FREE_MAGIC in the next 4, which lets
 * kfree() catch a double free.  Larger sizes come straight from pages.
 *
 * Crash safety: a page descriptor's type is the commit point of every page
 * operation.  When a lock is taken over from a dead owner (PK_LOCK_RECOVERED),
 * the structure it protects is rebuilt from the descriptors: the page bitmap
 * and the used-page count for the page lock, the partial list and counters of
 * one size class for a class lock.  What a dead process was in the middle of
 * allocating or freeing for itself may be lost; nothing else is.
 *
 * Synchronization:
 *	header fixed fields	written once by the creator before 'magic'
 *	bitmap, descriptors of free/HEAD/TAIL pages, nr_used_pages
 *				page_lock
 *	descriptor of a SLAB page (inuse, free_head, bump, next, prev)
 *				the lock of its size class
 *	class counters		the lock of the class
 *	lock order		class lock -> page_lock
 */
#ifndef PK_ARENA_H
#define PK_ARENA_H

#include <stdint.h>

#include "compat.h"
#include "lock.h"

#define PK_MAGIC		0x3155504352455050ull	/* "PPERCPU1" little-endian */
#define PK_VERSION		2
#define PK_MAX_CPUS		4096
#define PK_MAX_CLASSES		16
#define PK_MIN_OBJ		8
#define PK_FREE_MAGIC		0xf7eef7eeu
#define PK_SLAB_KEEP_EMPTY	1	/* empty slab pages a class keeps */

enum pk_page_type {
	PK_PG_FREE = 0,
	PK_PG_META = 1,		/* header, registry, bitmap, descriptors */
	PK_PG_HEAD = 2,		/* first page of an alloc_pages() block */
	PK_PG_TAIL = 3,		/* other pages of the block; next = head index */
	PK_PG_SLAB = 4,		/* a kmalloc slab page of class 'cls' */
};

struct pk_page_desc {
	uint8_t type;		/* enum pk_page_type: the commit point */
	uint8_t cls;		/* SLAB: size class */
	uint16_t inuse;		/* SLAB: objects handed out */
	uint16_t free_head;	/* SLAB: first free object index + 1, 0 = none */
	uint16_t bump;		/* SLAB: objects ever carved (free chain + inuse) */
	uint32_t next;		/* SLAB: partial list; HEAD: nr pages; TAIL: head */
	uint32_t prev;		/* SLAB: partial list */
};
BUILD_BUG_ON(sizeof(struct pk_page_desc) != 16);

struct pk_slab_class {
	struct pk_lock lock;		/* protects everything below */
	uint32_t size;			/* object size, set at creation */
	uint32_t nobjs;			/* objects per slab page */
	uint32_t partial;		/* first page with a free object (0 = none) */
	uint32_t nr_slabs;		/* slab pages of this class */
	uint32_t nr_empty;		/* of which with inuse == 0 */
	uint32_t pad;
	uint64_t nr_inuse;		/* objects handed out */
	uint64_t nr_alloc;		/* cumulative */
	uint64_t nr_free;		/* cumulative */
} ____cacheline_aligned;

struct pk_header {
	uint64_t magic;			/* written last by the creator */
	uint32_t version;
	uint32_t page_size;
	uint64_t size;			/* bytes of the file */
	uint32_t nr_pages;
	uint32_t meta_pages;		/* pages [0, meta_pages) are PK_PG_META */
	uint32_t nr_cpu_ids;
	int32_t owner_pid;		/* creator; only it unlinks */
	uint64_t created_ns;		/* CLOCK_REALTIME */
	uint64_t registry_off;		/* Python-managed table of named objects */
	uint32_t registry_max;
	uint32_t registry_entry;
	uint64_t bitmap_off;
	uint64_t desc_off;
	uint32_t nr_classes;
	uint32_t flags;
	uint64_t generation;		/* bumped by every recovery */
	uint64_t rcu_off;		/* struct pk_rcu_state, in the meta pages */
	uint32_t rcu_nslots;
	uint32_t pad0;
	uint64_t pcpu_off;		/* struct pk_pcpu, in the meta pages */
	uint8_t possible[PK_MAX_CPUS / 8];
	uint8_t online[PK_MAX_CPUS / 8];

	struct pk_lock registry_lock ____cacheline_aligned;

	struct pk_lock page_lock ____cacheline_aligned;
	uint32_t nr_used_pages;		/* data pages handed out, page_lock */
	uint32_t hint;			/* next page to try, page_lock */
	uint64_t nr_page_allocs;	/* cumulative, page_lock */
	uint64_t nr_page_frees;

	struct pk_slab_class classes[PK_MAX_CLASSES];

	/* A word area for the runtime's own counters (Python-managed). */
	uint64_t user[64] ____cacheline_aligned;
};

struct pk_arena {
	char *base;
	uint64_t size;
	int fd;
};

static inline struct pk_header *pk_hdr(const struct pk_arena *a)
{
	return (struct pk_header *)a->base;
}

static inline struct pk_page_desc *pk_desc(const struct pk_arena *a, uint32_t pg)
{
	return (struct pk_page_desc *)(a->base + pk_hdr(a)->desc_off) + pg;
}

int pk_arena_format(struct pk_arena *a, uint32_t nr_cpu_ids, const uint8_t *possible,
		    const uint8_t *online, uint32_t possible_len, int32_t owner,
		    const uint32_t *classes, uint32_t nr_classes, uint32_t registry_max,
		    uint32_t registry_entry, uint32_t flags, uint32_t rcu_slots,
		    const uint32_t *pcpu_sizes);
int pk_arena_validate(const struct pk_arena *a);

int64_t pk_alloc_pages(struct pk_arena *a, uint32_t n, int type, int cls);
/* PK_AP_NOPOPULATE: reserve the pages without backing; the caller populates. */
#define PK_AP_NOPOPULATE	1u
int64_t pk_alloc_pages_flags(struct pk_arena *a, uint32_t n, int type, int cls, unsigned flags);
int pk_free_pages(struct pk_arena *a, uint64_t off);

int pk_kmalloc_class(const struct pk_arena *a, uint64_t size);
int64_t pk_kmalloc(struct pk_arena *a, uint64_t size, int zero);
int pk_kfree(struct pk_arena *a, uint64_t off);
int64_t pk_ksize(const struct pk_arena *a, uint64_t off);

int pk_page_lock(struct pk_arena *a);
void pk_page_unlock(struct pk_arena *a);
int pk_class_lock(struct pk_arena *a, int c);
void pk_class_unlock(struct pk_arena *a, int c);

/* Full consistency check; returns 0 or -EUCLEAN with a message in @msg. */
int pk_arena_check(struct pk_arena *a, char *msg, size_t msglen);

#endif /* PK_ARENA_H */
