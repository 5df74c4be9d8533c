/*
 * memalloc.h - the BPF memory allocator (kernel/bpf/memalloc.c) in shared memory.
 *
 * "Any context (including NMI) BPF specific memory allocator": kmalloc (the
 * domain's slab, or the per-CPU allocator for the per-CPU flavour) fronted by a
 * cache of free objects per (CPU, bucket), refilled and trimmed by irq_work,
 * with the kernel's RCU and RCU Tasks Trace paths for objects freed with
 * free_rcu and for objects on their way back to kmalloc.
 *
 *  struct pk_ma (kzalloc'd)              caches block (pages, zeroed)
 *  +---------------------------+         +------------------------------+
 *  | magic id flags memcg      |  ---->  | cache[cpu 0][bucket 0]  256 B |
 *  | caches_off caches_size    |         | cache[cpu 0][bucket 1]        |
 *  | move_lock + staging record|         | ...  nr_cpu_ids x nr_buckets  |
 *  | created released ...      |         +------------------------------+
 *  +---------------------------+
 *
 *  object (kmalloc'd, unit_size bytes)       per-CPU flavour: a 16-byte holder
 *  +0  llist link while free,                +0  link / owning cache
 *      offset of the owning cache while      +8  per-CPU pointer (pcpu_alloc of
 *      allocated (the kernel's "hint")           unit_size bytes, align 8)
 *  +8  the user's bytes: what is returned
 *
 * The kernel's 'active' counter with irqs off becomes the cache's lock: in
 * normal context it is waited for (a preempted or dead holder in another
 * process never makes an allocation fail), in NMI context only tried, and a
 * busy cache makes a nested allocation return NULL and a nested free go to
 * free_llist_extra, as in the kernel.  Grace periods are cookies in the cache
 * (the polled RCU API), so any process can finish what another started.
 *
 * Synchronization (per cache c):
 *	free_llist, free_cnt, free_by_rcu, waiting_for_gp, gp_cookie,
 *	free_by_rcu_ttrace, waiting_for_gp_ttrace, ttrace_cookie, xfer_*,
 *	draining, nr_*				c->lock
 *	free_llist_extra, free_llist_extra_rcu	llist_add from any context without
 *						the lock; emptied only under c->lock
 *	tgt					WRITE_ONCE by frees ("not accurate")
 *	unit_size, watermarks, batch, percpu_size written before the allocator is
 *						published (unit_init: under move_lock)
 * Cross-cache moves (into tgt->free_by_rcu_ttrace) hold ma->move_lock and
 * then one cache lock at a time; the staging record in struct pk_ma makes
 * them restartable.  Lock order: move_lock -> one cache lock -> kmalloc class
 * lock / pcpu locks.  Nothing ever holds two cache locks, except check and
 * destroy, which take all of them in index order under move_lock.
 *
 * Crash: a lock taken over from a dead owner triggers the repair of what it
 * protects (counts recounted, a half-done move finished or forgotten), so a
 * SIGKILL loses at most the object(s) the dead process was itself allocating
 * or freeing, never another's, and never lets an object be handed out twice.
 */
#ifndef PK_MEMALLOC_H
#define PK_MEMALLOC_H

#include <stdint.h>

#include "compat.h"
#include "lock.h"

#define PK_MA_MAGIC		0x4d454d414c4c4f43ull	/* "COLLAMEM" */
#define PK_MA_NUM_CACHES	11
#define PK_MA_SIZE_MAX		4096			/* BPF_MEM_ALLOC_SIZE_MAX */
#define PK_MA_NODE_SZ		8			/* LLIST_NODE_SZ */
#define PK_MA_PERCPU_SIZE	16			/* LLIST_NODE_SZ + sizeof(void *) */
#define PK_MA_CACHE_STRIDE	256

#define PK_MA_F_PERCPU		1u
#define PK_MA_F_CACHES		2u	/* size == 0 flavour: NUM_CACHES buckets per CPU */

/* Lists, for move records and reports. */
enum pk_ma_list {
	PK_MA_L_NONE = 0,
	PK_MA_L_FREE,		/* free_llist */
	PK_MA_L_EXTRA,		/* free_llist_extra */
	PK_MA_L_BY_RCU,		/* free_by_rcu */
	PK_MA_L_EXTRA_RCU,	/* free_llist_extra_rcu */
	PK_MA_L_WAIT,		/* waiting_for_gp */
	PK_MA_L_TTRACE,		/* free_by_rcu_ttrace */
	PK_MA_L_WAIT_TTRACE,	/* waiting_for_gp_ttrace */
	PK_MA_L_BACKEND,	/* back to kmalloc / free_percpu */
	PK_MA_NR_LISTS
};

struct pk_ma_cache {
	/* the fast paths */
	struct pk_lock lock;		/* the kernel's 'active' */
	uint64_t free_llist;		/* lock */
	int64_t free_cnt;		/* lock: objects on free_llist only */
	uint32_t unit_size;		/* 0: bucket not initialised (percpu_init) */
	uint32_t percpu_size;
	uint32_t low_watermark;
	uint32_t high_watermark;
	uint32_t batch;
	uint32_t draining;		/* lock */
	uint64_t nr_alloc;		/* lock: objects handed out from here */
	uint64_t nr_free;		/* lock: objects freed into here (any list) */

	/* lists */
	uint64_t free_llist_extra;	/* lock-free adds */
	uint64_t free_llist_extra_rcu;	/* lock-free adds */
	uint64_t tgt;			/* cache offset, WRITE_ONCE */
	uint64_t free_by_rcu;
	uint64_t waiting_for_gp;
	uint64_t gp_cookie;		/* RCU cookie of waiting_for_gp (in progress iff list != 0) */
	uint64_t free_by_rcu_ttrace;
	uint64_t waiting_for_gp_ttrace;

	uint64_t ttrace_cookie[2];	/* Tasks Trace and RCU cookies of waiting_for_gp_ttrace */
	uint64_t xfer_head;		/* an intra-cache move in progress (lock) */
	uint64_t xfer_n;		/* nodes in it, 0 = up to the end of the chain */
	uint32_t xfer_src, xfer_dst;	/* enum pk_ma_list */
	uint32_t cpu, idx;
	uint64_t nr_new;		/* objects taken from kmalloc */
	uint64_t nr_released;		/* objects given back to kmalloc */

	uint64_t nr_refill;		/* bpf_mem_refill runs */
	uint64_t nr_alloc_bulk;		/* objects added by alloc_bulk (reused + new) */
	uint64_t nr_free_bulk;		/* objects trimmed by free_bulk */
	uint64_t nr_empty;		/* unit_alloc returned NULL (empty, or busy in NMI), atomic */
	uint64_t nr_busy;		/* frees that found the cache busy: to an extra list, atomic */
	uint32_t nr_gp[2];		/* RCU, Tasks Trace waits started */
	uint64_t ma_off;		/* the allocator (for bpf_mem_cache_raw_free) */
	uint64_t nr_recovered;		/* dead holders repaired after */
};

struct pk_ma {
	uint64_t magic;			/* PK_MA_MAGIC while usable; 0 after destroy */
	uint64_t id;			/* unique: validates a handle or a late callback */
	uint32_t nr_cpu_ids;
	uint32_t flags;
	uint32_t nr_buckets;		/* 1 or PK_MA_NUM_CACHES */
	uint32_t size;			/* as given to init (0: all buckets) */
	int32_t memcg;			/* the accounting group active at init */
	uint32_t pad0;
	uint64_t caches_off;
	uint64_t caches_size;

	struct pk_lock move_lock;	/* cross-cache moves, unit_init, check, destroy */
	uint64_t st_head;		/* staging: a chain detached from st_src's list */
	uint64_t st_n;			/* its length (0: to the end of the chain) */
	uint64_t st_src, st_tgt;	/* cache offsets */
	uint32_t st_srclist, st_done;	/* st_done: spliced into st_tgt (written under its lock) */

	uint64_t created;		/* objects taken from kmalloc (under a cache lock) */
	uint64_t released;		/* given back (under a cache lock, or raw_free) */
	uint64_t direct;		/* bpf_mem_cache_alloc_flags(GFP_KERNEL) fallbacks, atomic */
	uint64_t raw_freed;		/* bpf_mem_cache_raw_free, atomic */
	uint64_t deferred;		/* destroy: objects waiting for grace periods */
	uint64_t deferred_cookie[2];
	uint64_t nr_recovered;		/* move_lock repairs */
};

/* What a call needs from the domain and tells its caller. */
#define PK_MA_MAX_EV	4
struct pk_ma_env {
	struct pk_arena *a;
	struct pk_pcpu *p;
	int nmi;			/* NMI context: trylock only, no inline refill */
	int need_balance;		/* the per-CPU allocator wants its balance work */
	int nr_ev;
	struct {
		int kind;		/* PK_MA_EV_* */
		uint64_t cache;		/* cache offset */
	} ev[PK_MA_MAX_EV];
};
#define PK_MA_EV_REFILL		1	/* run bpf_mem_refill(cache) in irq_work (NMI) */
#define PK_MA_EV_RCU		2	/* a grace period wait started on waiting_for_gp */
#define PK_MA_EV_TTRACE		3	/* ... on waiting_for_gp_ttrace */

struct pk_ma_stats {
	uint64_t on_list[PK_MA_NR_LISTS];	/* objects on each list, all caches */
	uint64_t in_flight;			/* in a move record */
	uint64_t outstanding;			/* allocated and not freed */
	uint64_t created, released;
};

struct pk_arena;
struct pk_pcpu;

int pk_ma_cache_idx(uint64_t size);
/* The head word of list @l (enum pk_ma_list) of a cache; NULL for PK_MA_L_BACKEND. */
uint64_t *pk_ma_list_head(struct pk_ma_cache *c, int l);
extern const uint32_t pk_ma_sizes[PK_MA_NUM_CACHES];
void pk_ma_watermarks(uint32_t unit_size, int percpu, uint32_t *low, uint32_t *high,
		      uint32_t *batch);
int pk_ma_check_size(int percpu, uint64_t size);

static inline struct pk_ma_cache *pk_ma_cache_at(char *base, uint64_t off)
{
	return (struct pk_ma_cache *)(base + off);
}

static inline uint64_t pk_ma_cache_off(const struct pk_ma *ma, uint32_t cpu, uint32_t idx)
{
	return ma->caches_off + ((uint64_t)cpu * ma->nr_buckets + idx) * PK_MA_CACHE_STRIDE;
}

/* bpf_mem_alloc_init / bpf_mem_alloc_percpu_init (init_buckets = 0): offset or -errno. */
int64_t pk_ma_create(struct pk_ma_env *e, uint32_t size, int percpu, int init_buckets, int memcg,
		     uint64_t id);
int pk_ma_unit_init(struct pk_ma_env *e, struct pk_ma *ma, uint64_t size);

/* The operations; cpu is a possible CPU.  Allocations return the user pointer or 0. */
uint64_t pk_ma_alloc(struct pk_ma_env *e, struct pk_ma *ma, uint32_t cpu, uint64_t size);
uint64_t pk_ma_cache_alloc(struct pk_ma_env *e, struct pk_ma *ma, uint32_t cpu, int gfp_kernel);
/* Frees: 0, or -EINVAL for a pointer that is not an allocated object of @ma. */
int pk_ma_free(struct pk_ma_env *e, struct pk_ma *ma, uint32_t cpu, uint64_t ptr, int rcu,
	       int cache_flavour);
int pk_ma_raw_free(struct pk_ma_env *e, struct pk_ma *ma, uint64_t ptr);
/* The allocator an allocated object belongs to (its offset), or 0. */
uint64_t pk_ma_of_obj(struct pk_arena *a, uint64_t ptr);
/* The owning cache of an allocated object, or 0. */
uint64_t pk_ma_obj_cache(struct pk_arena *a, const struct pk_ma *ma, uint64_t ptr);

/* bpf_mem_refill(c) in normal context; also finishes grace periods that ended. */
void pk_ma_refill(struct pk_ma_env *e, struct pk_ma *ma, uint64_t cache_off);
/* A cache's lock with the dead-holder repair (for snapshots). */
void pk_ma_lock_cache(struct pk_ma_env *e, struct pk_ma *ma, uint64_t cache_off);
void pk_ma_unlock_cache(struct pk_ma_env *e, uint64_t cache_off);
/* The grace-period callbacks of one cache, if their cookies passed; returns 1|2 for
 * an RCU / Tasks Trace wait still pending. */
int pk_ma_poll(struct pk_ma_env *e, struct pk_ma *ma, uint64_t cache_off);

/* Consistent snapshot (all locks): -EUCLEAN with a message on corruption. */
int pk_ma_check(struct pk_ma_env *e, struct pk_ma *ma, struct pk_ma_stats *st, char *msg,
		size_t msglen);
/*
 * Destroy: drain every list, free what needs no grace period, keep the rest
 * on ma->deferred with cookies.  Fills @st (on_list after the drain: the
 * kernel's seven-list check) and up to @nleak offsets of objects still
 * allocated.  Returns 1 if deferred objects remain (call pk_ma_destroy_finish
 * after both grace periods), 0 if everything was freed.
 */
int pk_ma_destroy(struct pk_ma_env *e, struct pk_ma *ma, struct pk_ma_stats *st, uint64_t *leaks,
		  int nleak, int *nleaks);
void pk_ma_destroy_finish(struct pk_ma_env *e, uint64_t ma_off);

#endif /* PK_MEMALLOC_H */
