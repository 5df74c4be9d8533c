/*
 * memalloc.c - the BPF memory allocator in shared memory (see memalloc.h).
 *
 * The functions keep the kernel's names and order where the semantics match:
 * unit_alloc, unit_free, unit_free_rcu, bpf_mem_refill, alloc_bulk, free_bulk,
 * do_call_rcu_ttrace, check_free_by_rcu, __free_by_rcu, __free_rcu,
 * drain_mem_cache, check_mem_cache.  Where the kernel relies on running on its
 * CPU with irqs off, a cache lock stands in; where it relies on a callback
 * after a grace period, a cookie stored in the cache is polled (by the next
 * refill of that cache, or by the caller's process when its RCU callback
 * thread sees the grace period end).
 *
 * Every multi-step move of a chain between lists writes a record first (the
 * cache's xfer_* fields for moves inside one cache, the allocator's st_*
 * fields for moves into another cache's free_by_rcu_ttrace) and commits with
 * a single store; the repair that runs when a dead holder's lock is taken over
 * decides from the record and the lists whether the move happened, and
 * finishes or forgets it.
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "atomic.h"
#include "llist.h"
#include "memalloc.h"
#include "pcpu.h"
#include "rcu.h"

BUILD_BUG_ON(sizeof(struct pk_ma_cache) > PK_MA_CACHE_STRIDE);

const uint32_t pk_ma_sizes[PK_MA_NUM_CACHES] = { 96, 192, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096 };

/* "similar to kmalloc, but sizeof == 8 bucket is gone", stored as idx + 1 */
static const uint8_t size_index[24] = {
	3, 3, 4, 4, 5, 5, 5, 5, 1, 1, 1, 1, 6, 6, 6, 6, 2, 2, 2, 2, 2, 2, 2, 2,
};

static inline int fls64_(uint64_t x)
{
	return x ? 64 - __builtin_clzll(x) : 0;
}

int pk_ma_cache_idx(uint64_t size)
{
	if (!size || size > PK_MA_SIZE_MAX)
		return -1;
	if (size <= 192)
		return size_index[(size - 1) / 8] - 1;
	return fls64_(size - 1) - 2;
}

void pk_ma_watermarks(uint32_t unit_size, int percpu, uint32_t *low, uint32_t *high, uint32_t *batch)
{
	uint32_t l, h, b;

	if (percpu) {
		l = 1;
		h = 3;
	} else if (unit_size <= 256) {
		l = 32;
		h = 96;
	} else {
		l = 32 * 256 / unit_size;
		h = 96 * 256 / unit_size;
		if (l < 1)
			l = 1;
		if (h < 3)
			h = 3;
	}
	b = (h - l) / 4 * 3;
	*low = l;
	*high = h;
	*batch = b ? b : 1;
}

int pk_ma_check_size(int percpu, uint64_t size)
{
	if ((percpu && size > PK_MA_SIZE_MAX) || (!percpu && size > PK_MA_SIZE_MAX - PK_MA_NODE_SZ))
		return -E2BIG;
	return 0;
}

/* ---- helpers ---------------------------------------------------------------- */

#define LINK(e, obj)		READ_ONCE64((e)->a->base + (obj))
#define SET_LINK(e, obj, v)	WRITE_ONCE64((e)->a->base + (obj), (v))
#define COFF(e, c)		((uint64_t)((char *)(c) - (e)->a->base))
#define FOFF(e, c, field)	(COFF(e, c) + offsetof(struct pk_ma_cache, field))
#define CACHE(e, off)		pk_ma_cache_at((e)->a->base, (off))

static inline uint64_t walk_limit(const struct pk_ma_env *e)
{
	return e->a->size / 16 + 16;
}

uint64_t *pk_ma_list_head(struct pk_ma_cache *c, int l)
{
	switch (l) {
	case PK_MA_L_FREE:	return &c->free_llist;
	case PK_MA_L_EXTRA:	return &c->free_llist_extra;
	case PK_MA_L_BY_RCU:	return &c->free_by_rcu;
	case PK_MA_L_EXTRA_RCU:	return &c->free_llist_extra_rcu;
	case PK_MA_L_WAIT:	return &c->waiting_for_gp;
	case PK_MA_L_TTRACE:	return &c->free_by_rcu_ttrace;
	case PK_MA_L_WAIT_TTRACE: return &c->waiting_for_gp_ttrace;
	}
	return NULL;
}

static int reachable(struct pk_ma_env *e, uint64_t first, uint64_t node)
{
	uint64_t n = walk_limit(e);

	while (first && n--) {
		if (first == node)
			return 1;
		first = LINK(e, first);
	}
	return 0;
}

/* Last node of the chain at @head: @n nodes, or up to the end when n == 0. */
static uint64_t chain_tail(struct pk_ma_env *e, uint64_t head, uint64_t n, uint64_t *count)
{
	uint64_t k = 1, lim = walk_limit(e), next;

	while ((n == 0 || k < n) && lim--) {
		next = LINK(e, head);
		if (!next)
			break;
		head = next;
		k++;
	}
	if (count)
		*count = k;
	return head;
}

static uint64_t chain_len(struct pk_ma_env *e, uint64_t first)
{
	uint64_t k = 0, lim = walk_limit(e);

	while (first && lim--) {
		k++;
		first = LINK(e, first);
	}
	return k;
}

static void ev(struct pk_ma_env *e, int kind, uint64_t cache)
{
	int i;

	for (i = 0; i < e->nr_ev; i++)
		if (e->ev[i].kind == kind && e->ev[i].cache == cache)
			return;
	if (e->nr_ev < PK_MA_MAX_EV) {
		e->ev[e->nr_ev].kind = kind;
		e->ev[e->nr_ev].cache = cache;
		e->nr_ev++;
	}
}

/* ---- grace periods as cookies ------------------------------------------------- */

static inline struct pk_rcu_state *ma_rcu(struct pk_ma_env *e)
{
	return (struct pk_rcu_state *)(e->a->base + pk_hdr(e->a)->rcu_off);
}

/* get_state_synchronize_rcu(), and start that grace period (call_rcu_hurry). */
static uint64_t gp_cookie(struct pk_ma_env *e, int f)
{
	struct pk_rcu_state *r = ma_rcu(e);
	uint64_t cur = __atomic_load_n(&r->gp_seq[f], __ATOMIC_SEQ_CST), target = cur + 1;

	while (cur < target &&
	       !__atomic_compare_exchange_n(&r->gp_seq[f], &cur, target, 0, __ATOMIC_SEQ_CST,
					    __ATOMIC_SEQ_CST))
		;
	return target;
}

/* poll_state_synchronize_rcu(): one scan at most. */
static int gp_passed(struct pk_ma_env *e, int f, uint64_t cookie)
{
	struct pk_rcu_state *r = ma_rcu(e);

	if (__atomic_load_n(&r->gp_done[f], __ATOMIC_ACQUIRE) >= cookie)
		return 1;
	return pk_rcu_advance(r, f) >= cookie;
}

/* ---- locks and repair ----------------------------------------------------------- */

/*
 * Redo or forget the intra-cache move recorded in c->xfer_* (c's lock held,
 * its previous holder dead).  Every list of c is as that holder left it.
 */
static void free_one(struct pk_ma_env *e, struct pk_ma *ma, struct pk_ma_cache *c, uint64_t obj);

static void xfer_repair(struct pk_ma_env *e, struct pk_ma *ma, struct pk_ma_cache *c)
{
	uint64_t head = c->xfer_head, *src, *dst, tail, n;

	if (!head)
		return;
	src = pk_ma_list_head(c, (int)c->xfer_src);
	dst = pk_ma_list_head(c, (int)c->xfer_dst);
	if (c->xfer_dst == PK_MA_L_BACKEND) {
		/* The free loop advances xfer_head before each kfree: free the rest. */
		if (src && reachable(e, READ_ONCE64(src), head))
			goto done;	/* not detached yet */
		while (head) {
			uint64_t next = LINK(e, head);

			WRITE_ONCE64(&c->xfer_head, next);
			free_one(e, ma, c, head);
			head = next;
		}
		goto done;
	}
	if (src && reachable(e, READ_ONCE64(src), head))
		goto done;	/* not detached: nothing happened */
	if (dst && reachable(e, READ_ONCE64(dst), head))
		goto done;	/* committed */
	if (dst) {
		tail = chain_tail(e, head, c->xfer_n, &n);
		SET_LINK(e, tail, READ_ONCE64(dst));
		WRITE_ONCE64(dst, head);
	}
done:
	c->xfer_head = 0;
}

/* The kernel's repair is a reboot; ours runs when a dead holder's lock is taken over. */
static void cache_repair(struct pk_ma_env *e, struct pk_ma *ma, struct pk_ma_cache *c)
{
	/* A swap (free_by_rcu -> waiting_for_gp) stores the destination first. */
	if (c->waiting_for_gp && c->free_by_rcu == c->waiting_for_gp)
		c->free_by_rcu = 0;
	if (c->waiting_for_gp_ttrace && c->free_by_rcu_ttrace == c->waiting_for_gp_ttrace)
		c->free_by_rcu_ttrace = 0;
	xfer_repair(e, ma, c);
	/*
	 * A move out of this cache whose holder died before its detach: the chain
	 * is still on our list and may be handed out once we unlock: forget it.
	 */
	if (ma->st_head && ma->st_src == COFF(e, c) && !ma->st_done &&
	    reachable(e, READ_ONCE64(pk_ma_list_head(c, (int)ma->st_srclist)), ma->st_head))
		WRITE_ONCE64(&ma->st_head, 0);
	/* A move into this cache whose holder died holding our lock: did it commit? */
	if (ma->st_head && ma->st_tgt == COFF(e, c) && !ma->st_done &&
	    reachable(e, c->free_by_rcu_ttrace, ma->st_head))
		WRITE_ONCE32(&ma->st_done, 1);
	c->free_cnt = (int64_t)chain_len(e, c->free_llist);
	c->nr_recovered++;
}

static void cache_lock(struct pk_ma_env *e, struct pk_ma *ma, struct pk_ma_cache *c)
{
	if (pk_lock_acquire(&c->lock, -1) == PK_LOCK_RECOVERED)
		cache_repair(e, ma, c);
}

static int cache_trylock(struct pk_ma_env *e, struct pk_ma *ma, struct pk_ma_cache *c)
{
	return pk_lock_trylock(&c->lock) == PK_LOCK_OK;
}

static inline void cache_unlock(struct pk_ma_cache *c)
{
	pk_lock_release(&c->lock);
}

static void splice_into_tgt(struct pk_ma_env *e, struct pk_ma *ma, struct pk_ma_cache *tgt)
{
	uint64_t tail = chain_tail(e, ma->st_head, ma->st_n, NULL);

	SET_LINK(e, tail, tgt->free_by_rcu_ttrace);
	WRITE_ONCE64(&tgt->free_by_rcu_ttrace, ma->st_head);	/* commit */
	WRITE_ONCE32(&ma->st_done, 1);
}

/* move_lock taken over from a dead holder: finish or forget its staged move. */
static void staging_repair(struct pk_ma_env *e, struct pk_ma *ma)
{
	struct pk_ma_cache *src, *tgt;
	int in_src;

	ma->nr_recovered++;
	if (!ma->st_head)
		return;
	src = CACHE(e, ma->st_src);
	tgt = CACHE(e, ma->st_tgt);
	if (!ma->st_done) {
		cache_lock(e, ma, src);
		if (!ma->st_head) {	/* src's repair just forgot it */
			cache_unlock(src);
			goto out;
		}
		in_src = reachable(e, READ_ONCE64(pk_ma_list_head(src, (int)ma->st_srclist)), ma->st_head);
		cache_unlock(src);
		if (!in_src) {
			cache_lock(e, ma, tgt);	/* a repair of tgt's lock settles st_done */
			if (!ma->st_done)
				splice_into_tgt(e, ma, tgt);
			cache_unlock(tgt);
		}
	}
out:
	ma->st_head = 0;
	ma->st_done = 0;
}

static void move_lock(struct pk_ma_env *e, struct pk_ma *ma)
{
	if (pk_lock_acquire(&ma->move_lock, -1) == PK_LOCK_RECOVERED)
		staging_repair(e, ma);
}

static inline void move_unlock(struct pk_ma *ma)
{
	pk_lock_release(&ma->move_lock);
}

void pk_ma_lock_cache(struct pk_ma_env *e, struct pk_ma *ma, uint64_t cache_off)
{
	cache_lock(e, ma, CACHE(e, cache_off));
}

void pk_ma_unlock_cache(struct pk_ma_env *e, uint64_t cache_off)
{
	cache_unlock(CACHE(e, cache_off));
}

/* ---- the backend: kmalloc, or kmalloc + pcpu_alloc ------------------------------- */

static uint64_t charge_size(struct pk_ma_env *e, uint64_t size)
{
	int ci = pk_kmalloc_class(e->a, size);

	if (ci >= 0)
		return pk_hdr(e->a)->classes[ci].size;
	return (size + PK_PAGE_SIZE - 1) & ~(uint64_t)(PK_PAGE_SIZE - 1);
}

/* __alloc(): a zeroed object, or 0. */
static uint64_t __alloc(struct pk_ma_env *e, struct pk_ma *ma, struct pk_ma_cache *c, int atomic)
{
	uint64_t hsize = c->percpu_size ? c->percpu_size : c->unit_size, charge = 0;
	int64_t obj, pptr;

	if (ma->memcg > 0) {
		charge = charge_size(e, hsize);
		if (pk_memcg_try_charge(e->p, ma->memcg, charge))
			return 0;
	}
	obj = pk_kmalloc(e->a, hsize, 1);
	if (obj <= 0)
		goto fail;
	if (c->percpu_size) {
		struct pk_pcpu_res res;

		/* __alloc_percpu_gfp(c->unit_size, 8, flags): zero-filled */
		pptr = pk_pcpu_alloc(e->a, e->p, c->unit_size, 8, 0, atomic, 0, ma->memcg, &res);
		if (res.need_balance)
			e->need_balance = 1;
		if (pptr <= 0) {
			pk_kfree(e->a, (uint64_t)obj);
			goto fail;
		}
		WRITE_ONCE64(e->a->base + obj + 8, (uint64_t)pptr);
	}
	return (uint64_t)obj;
fail:
	if (charge)
		pk_memcg_uncharge(e->p, ma->memcg, charge);
	return 0;
}

/*
 * free_one(): back to kmalloc (and free_percpu).  Under c's lock.  Counted
 * released before the kfree: a process killed in between leaks the object
 * with the books balanced; only between the caller's advance of xfer_head and
 * the count can a kill leave one object neither listed nor counted.
 */
static void free_one(struct pk_ma_env *e, struct pk_ma *ma, struct pk_ma_cache *c, uint64_t obj)
{
	uint64_t hsize = c->percpu_size ? c->percpu_size : c->unit_size;

	__atomic_fetch_add(&ma->released, 1, __ATOMIC_RELAXED);
	c->nr_released++;
	if (c->percpu_size) {
		int need = 0;

		pk_pcpu_free(e->a, e->p, READ_ONCE64(e->a->base + obj + 8), &need);
		if (need)
			e->need_balance = 1;
	}
	pk_kfree(e->a, obj);
	if (ma->memcg > 0)
		pk_memcg_uncharge(e->p, ma->memcg, charge_size(e, hsize));
}

/* Free the whole list @l of c now (drain / draining paths).  Under c's lock. */
static uint64_t free_list_now(struct pk_ma_env *e, struct pk_ma *ma, struct pk_ma_cache *c, int l)
{
	uint64_t *h = pk_ma_list_head(c, l), head, cnt = 0;

	head = READ_ONCE64(h);
	if (!head)
		return 0;
	c->xfer_src = (uint32_t)l;
	c->xfer_dst = PK_MA_L_BACKEND;
	c->xfer_n = 0;
	WRITE_ONCE64(&c->xfer_head, head);
	if (l == PK_MA_L_EXTRA || l == PK_MA_L_EXTRA_RCU) {
		/* lock-free producers: detach with CAS so no add is lost */
		while (pk_cmpxchg64(h, head, 0) != head) {
			head = READ_ONCE64(h);
			WRITE_ONCE64(&c->xfer_head, head);
		}
	} else {
		WRITE_ONCE64(h, 0);
	}
	while (head) {
		uint64_t next = LINK(e, head);

		WRITE_ONCE64(&c->xfer_head, next);
		free_one(e, ma, c, head);
		head = next;
		cnt++;
	}
	return cnt;
}

/* ---- moves inside one cache (under its lock) ---------------------------------- */

/*
 * Detach up to @n nodes (0: all) from list @src and push them onto @dst.
 * Lock-free lists (the two extras) are detached whole with a CAS.
 * Returns the number moved.
 */
static uint64_t xfer(struct pk_ma_env *e, struct pk_ma_cache *c, int src, int dst, uint64_t n)
{
	uint64_t *sh = pk_ma_list_head(c, src), *dh = pk_ma_list_head(c, dst), head, tail, k;

	head = READ_ONCE64(sh);
	if (!head)
		return 0;
	c->xfer_src = (uint32_t)src;
	c->xfer_dst = (uint32_t)dst;
	if (src == PK_MA_L_EXTRA || src == PK_MA_L_EXTRA_RCU) {
		c->xfer_n = 0;
		WRITE_ONCE64(&c->xfer_head, head);
		while (pk_cmpxchg64(sh, head, 0) != head) {
			head = READ_ONCE64(sh);
			WRITE_ONCE64(&c->xfer_head, head);
		}
		tail = chain_tail(e, head, 0, &k);
		c->xfer_n = k;
	} else {
		tail = chain_tail(e, head, n, &k);
		c->xfer_n = k;
		WRITE_ONCE64(&c->xfer_head, head);
		WRITE_ONCE64(sh, LINK(e, tail));	/* detach: commit 1 */
	}
	SET_LINK(e, tail, READ_ONCE64(dh));
	WRITE_ONCE64(dh, head);				/* commit 2 */
	WRITE_ONCE64(&c->xfer_head, 0);
	return k;
}

/* ---- the fast paths --------------------------------------------------------------- */

static void bpf_mem_refill(struct pk_ma_env *e, struct pk_ma *ma, struct pk_ma_cache *c);

static inline void irq_work_raise(struct pk_ma_env *e, struct pk_ma *ma, struct pk_ma_cache *c)
{
	if (e->nmi)
		ev(e, PK_MA_EV_REFILL, COFF(e, c));
	else
		bpf_mem_refill(e, ma, c);	/* the self-IPI fires as the caller's "irqs" come back on */
}

static uint64_t unit_alloc(struct pk_ma_env *e, struct pk_ma *ma, struct pk_ma_cache *c)
{
	uint64_t node = 0;
	int64_t cnt = 0;
	int tries = e->nmi ? 1 : 2;

	if (unlikely(!c->unit_size))
		return 0;	/* a per-CPU bucket nobody initialised */
	while (tries--) {
		if (e->nmi) {
			if (!cache_trylock(e, ma, c)) {
				__atomic_fetch_add(&c->nr_empty, 1, __ATOMIC_RELAXED);
				irq_work_raise(e, ma, c);	/* cnt stays 0 < low_watermark */
				return 0;	/* nested: the kernel's active != 1 */
			}
		} else {
			cache_lock(e, ma, c);
		}
		if (unlikely(c->draining)) {	/* destroyed since the caller's check */
			cache_unlock(c);
			return 0;
		}
		node = c->free_llist;
		if (likely(node)) {
			c->free_llist = LINK(e, node);
			cnt = --c->free_cnt;
			SET_LINK(e, node, COFF(e, c));	/* the hint: the owning cache */
			c->nr_alloc++;
		} else {
			cnt = 0;
			__atomic_fetch_add(&c->nr_empty, 1, __ATOMIC_RELAXED);
		}
		cache_unlock(c);
		if (cnt < c->low_watermark)
			irq_work_raise(e, ma, c);
		if (node)
			return node;
		/*
		 * Empty: in the kernel nothing else runs on this CPU before the refill;
		 * here another process acting as the same CPU may have emptied the list
		 * while preempted before its refill.  The refill above ran: try again.
		 */
	}
	return 0;
}

static void unit_free(struct pk_ma_env *e, struct pk_ma *ma, struct pk_ma_cache *c, uint64_t node,
		      uint64_t hint)
{
	int64_t cnt = 0;

	WRITE_ONCE64(&c->tgt, hint);	/* "The hint is not accurate." */
	if (e->nmi && !cache_trylock(e, ma, c)) {
		pk_llist_add_batch(e->a->base, FOFF(e, c, free_llist_extra), node, node);
		__atomic_fetch_add(&c->nr_busy, 1, __ATOMIC_RELAXED);
		return;
	}
	if (!e->nmi)
		cache_lock(e, ma, c);
	if (unlikely(c->draining)) {	/* destroyed since the caller's check: the object leaks */
		cache_unlock(c);
		return;
	}
	SET_LINK(e, node, c->free_llist);
	WRITE_ONCE64(&c->free_llist, node);
	cnt = ++c->free_cnt;
	c->nr_free++;
	cache_unlock(c);
	if (cnt > c->high_watermark)
		irq_work_raise(e, ma, c);
}

static void unit_free_rcu(struct pk_ma_env *e, struct pk_ma *ma, struct pk_ma_cache *c, uint64_t node,
			  uint64_t hint)
{
	int in_progress;

	WRITE_ONCE64(&c->tgt, hint);
	if (e->nmi && !cache_trylock(e, ma, c)) {
		pk_llist_add_batch(e->a->base, FOFF(e, c, free_llist_extra_rcu), node, node);
		__atomic_fetch_add(&c->nr_busy, 1, __ATOMIC_RELAXED);
	} else {
		if (!e->nmi)
			cache_lock(e, ma, c);
		SET_LINK(e, node, c->free_by_rcu);
		WRITE_ONCE64(&c->free_by_rcu, node);
		c->nr_free++;
		cache_unlock(c);
	}
	in_progress = READ_ONCE64(&c->waiting_for_gp) != 0;
	if (!in_progress)
		irq_work_raise(e, ma, c);
	else if (!e->nmi && __atomic_load_n(&ma_rcu(e)->gp_done[PK_RCU_NORMAL], __ATOMIC_ACQUIRE) >=
				    READ_ONCE64(&c->gp_cookie))
		irq_work_raise(e, ma, c);	/* its callback is due: run it now */
}

/* ---- refill, trim and the RCU paths (normal context only) ---------------------- */

/*
 * alloc_bulk(): reuse objects on their way to kmalloc first, then kmalloc.
 * Each new object is added under the lock as soon as it is allocated
 * (add_obj_to_free_list), so a process killed here loses at most the one
 * object in its hands; kmalloc itself runs outside the lock (it may populate
 * pages).
 */
static void alloc_bulk(struct pk_ma_env *e, struct pk_ma *ma, struct pk_ma_cache *c, uint64_t cnt,
		       int atomic)
{
	uint64_t got = 0, obj, i;

	cache_lock(e, ma, c);
	if (!c->draining) {
		got = xfer(e, c, PK_MA_L_TTRACE, PK_MA_L_FREE, cnt);
		if (got < cnt)
			got += xfer(e, c, PK_MA_L_WAIT_TTRACE, PK_MA_L_FREE, cnt - got);
		c->free_cnt += (int64_t)got;
		c->nr_alloc_bulk += got;
	}
	cache_unlock(c);
	for (i = got; i < cnt; i++) {
		obj = __alloc(e, ma, c, atomic);
		if (!obj)
			break;
		/* add_obj_to_free_list() */
		cache_lock(e, ma, c);
		if (unlikely(c->draining)) {
			__atomic_fetch_add(&ma->created, 1, __ATOMIC_RELAXED);
			c->nr_new++;
			free_one(e, ma, c, obj);
			cache_unlock(c);
			break;
		}
		SET_LINK(e, obj, c->free_llist);
		WRITE_ONCE64(&c->free_llist, obj);
		c->free_cnt++;
		c->nr_new++;
		c->nr_alloc_bulk++;
		__atomic_fetch_add(&ma->created, 1, __ATOMIC_RELAXED);
		cache_unlock(c);
	}
}

/*
 * Move a chain from @c's list @srclist into @tgt's free_by_rcu_ttrace through
 * the staging record.  Caller holds move_lock and no cache lock.  @n nodes
 * from the top (0: the whole list).  Returns the number moved.
 */
static uint64_t move_to_tgt(struct pk_ma_env *e, struct pk_ma *ma, struct pk_ma_cache *c, int srclist,
			    uint64_t n, struct pk_ma_cache *tgt, uint64_t cookie)
{
	uint64_t *sh, head, tail, k;

	cache_lock(e, ma, c);
	sh = pk_ma_list_head(c, srclist);
	head = READ_ONCE64(sh);
	/* waiting_for_gp: only the batch whose grace period the caller saw end */
	if (!head || (srclist == PK_MA_L_WAIT && c->gp_cookie != cookie)) {
		cache_unlock(c);
		return 0;
	}
	ma->st_src = COFF(e, c);
	ma->st_tgt = COFF(e, tgt);
	ma->st_srclist = (uint32_t)srclist;
	ma->st_done = 0;
	if (srclist == PK_MA_L_EXTRA) {
		ma->st_n = 0;
		WRITE_ONCE64(&ma->st_head, head);
		while (pk_cmpxchg64(sh, head, 0) != head) {
			head = READ_ONCE64(sh);
			WRITE_ONCE64(&ma->st_head, head);
		}
		chain_tail(e, head, 0, &k);
		ma->st_n = k;
	} else {
		if (srclist == PK_MA_L_FREE) {
			/* n is the count to keep: the kernel's do { } while (cnt > mid), under the lock */
			n = c->free_cnt > (int64_t)n ? (uint64_t)(c->free_cnt - (int64_t)n) : 1;
		}
		tail = chain_tail(e, head, n, &k);
		ma->st_n = k;
		WRITE_ONCE64(&ma->st_head, head);
		WRITE_ONCE64(sh, LINK(e, tail));	/* detach: commit */
		if (srclist == PK_MA_L_FREE)
			c->free_cnt -= (int64_t)k;
	}
	cache_unlock(c);

	cache_lock(e, ma, tgt);
	splice_into_tgt(e, ma, tgt);
	cache_unlock(tgt);
	WRITE_ONCE64(&ma->st_head, 0);
	return k;
}

static void do_call_rcu_ttrace(struct pk_ma_env *e, struct pk_ma *ma, struct pk_ma_cache *c);

/* free_bulk(): trim free_llist to the midpoint into the allocating cache tgt. */
static void free_bulk(struct pk_ma_env *e, struct pk_ma *ma, struct pk_ma_cache *c)
{
	uint64_t toff = READ_ONCE64(&c->tgt), mid = (c->high_watermark + c->low_watermark) / 2, k;
	struct pk_ma_cache *tgt;

	/* An untrusted hint (another process may write it racily) falls back to c. */
	if (toff < ma->caches_off || toff >= ma->caches_off + ma->caches_size ||
	    (toff - ma->caches_off) % PK_MA_CACHE_STRIDE)
		toff = COFF(e, c);
	tgt = CACHE(e, toff);
	if (tgt->unit_size != c->unit_size || tgt->percpu_size != c->percpu_size)
		tgt = c;	/* WARN_ON_ONCE in the kernel */
	move_lock(e, ma);
	k = move_to_tgt(e, ma, c, PK_MA_L_FREE, mid, tgt, 0);	/* down to mid, at least one */
	move_to_tgt(e, ma, c, PK_MA_L_EXTRA, 0, tgt, 0);
	move_unlock(ma);
	cache_lock(e, ma, c);
	c->nr_free_bulk += k;
	cache_unlock(c);
	do_call_rcu_ttrace(e, ma, tgt);
}

/* free_by_rcu_ttrace -> waiting_for_gp_ttrace (or kmalloc now when draining); takes c's lock. */
static void do_call_rcu_ttrace(struct pk_ma_env *e, struct pk_ma *ma, struct pk_ma_cache *c)
{
	uint64_t head;

	cache_lock(e, ma, c);
	if (c->draining) {
		free_list_now(e, ma, c, PK_MA_L_TTRACE);
		cache_unlock(c);
		return;
	}
	if (c->waiting_for_gp_ttrace || !(head = c->free_by_rcu_ttrace)) {
		cache_unlock(c);	/* at most one callback in flight per cache */
		return;
	}
	/*
	 * rcu_trace_implies_rcu_gp() is false here: both grace periods are waited
	 * for, started together (readers of either flavour that could hold the
	 * objects exist now).
	 */
	c->ttrace_cookie[0] = gp_cookie(e, PK_RCU_TRACE);
	c->ttrace_cookie[1] = gp_cookie(e, PK_RCU_NORMAL);
	WRITE_ONCE64(&c->waiting_for_gp_ttrace, head);	/* destination first: see cache_repair */
	WRITE_ONCE64(&c->free_by_rcu_ttrace, 0);
	c->nr_gp[1]++;
	cache_unlock(c);
	ev(e, PK_MA_EV_TTRACE, COFF(e, c));
}

/* check_free_by_rcu() */
static void check_free_by_rcu(struct pk_ma_env *e, struct pk_ma *ma, struct pk_ma_cache *c)
{
	cache_lock(e, ma, c);
	xfer(e, c, PK_MA_L_EXTRA_RCU, PK_MA_L_BY_RCU, 0);
	if (!c->free_by_rcu || c->waiting_for_gp) {
		/* empty, or call_rcu_in_progress: the callback will take the next batch */
		cache_unlock(c);
		return;
	}
	if (c->draining) {
		free_list_now(e, ma, c, PK_MA_L_BY_RCU);
		cache_unlock(c);
		return;
	}
	c->gp_cookie = gp_cookie(e, PK_RCU_NORMAL);
	WRITE_ONCE64(&c->waiting_for_gp, c->free_by_rcu);	/* destination first */
	WRITE_ONCE64(&c->free_by_rcu, 0);
	c->nr_gp[0]++;
	cache_unlock(c);
	ev(e, PK_MA_EV_RCU, COFF(e, c));
}

/*
 * The callbacks: __free_by_rcu (after an RCU grace period, waiting_for_gp
 * goes to tgt's free_by_rcu_ttrace) and __free_rcu (after Tasks Trace + RCU,
 * waiting_for_gp_ttrace goes back to kmalloc).  Run whenever their cookies
 * have passed, by whichever process looks first.
 */
static void poll_callbacks(struct pk_ma_env *e, struct pk_ma *ma, struct pk_ma_cache *c)
{
	uint64_t ck;

	if (READ_ONCE64(&c->waiting_for_gp)) {
		ck = READ_ONCE64(&c->gp_cookie);
		if (gp_passed(e, PK_RCU_NORMAL, ck)) {
			uint64_t toff = READ_ONCE64(&c->tgt);
			struct pk_ma_cache *tgt;

			if (toff < ma->caches_off || toff >= ma->caches_off + ma->caches_size ||
			    (toff - ma->caches_off) % PK_MA_CACHE_STRIDE ||
			    CACHE(e, toff)->unit_size != c->unit_size)
				toff = COFF(e, c);
			tgt = CACHE(e, toff);
			move_lock(e, ma);
			move_to_tgt(e, ma, c, PK_MA_L_WAIT, 0, tgt, ck);	/* __free_by_rcu */
			move_unlock(ma);
			do_call_rcu_ttrace(e, ma, tgt);
		}
	}
	if (READ_ONCE64(&c->waiting_for_gp_ttrace)) {
		uint64_t t0 = READ_ONCE64(&c->ttrace_cookie[0]), t1 = READ_ONCE64(&c->ttrace_cookie[1]);

		if (gp_passed(e, PK_RCU_TRACE, t0) && gp_passed(e, PK_RCU_NORMAL, t1)) {
			cache_lock(e, ma, c);
			if (c->ttrace_cookie[0] == t0 && c->ttrace_cookie[1] == t1)
				free_list_now(e, ma, c, PK_MA_L_WAIT_TTRACE);	/* __free_rcu */
			cache_unlock(c);
			do_call_rcu_ttrace(e, ma, c);	/* the next batch, if any */
		}
	}
}

int pk_ma_poll(struct pk_ma_env *e, struct pk_ma *ma, uint64_t cache_off)
{
	struct pk_ma_cache *c = CACHE(e, cache_off);

	if (!c->unit_size || READ_ONCE32(&c->draining))
		return 0;
	/*
	 * The caller is inside an RCU read-side section: do not sit behind a busy
	 * (or stopped, or dead) holder and hold every grace period up.  Busy: say
	 * "still pending" and let the caller come back after the next one.
	 */
	if (pk_lock_trylock(&ma->move_lock) != PK_LOCK_OK)
		return 3;
	pk_lock_release(&ma->move_lock);
	if (pk_lock_trylock(&c->lock) != PK_LOCK_OK)
		return 3;
	pk_lock_release(&c->lock);
	poll_callbacks(e, ma, c);
	/* still waiting: the caller queues another callback */
	return (READ_ONCE64(&c->waiting_for_gp) ? 1 : 0) | (READ_ONCE64(&c->waiting_for_gp_ttrace) ? 2 : 0);
}

static void bpf_mem_refill(struct pk_ma_env *e, struct pk_ma *ma, struct pk_ma_cache *c)
{
	int64_t cnt = READ_ONCE64(&c->free_cnt);	/* racy, as the kernel's */

	if (READ_ONCE32(&c->draining) || !c->unit_size)
		return;
	__atomic_fetch_add(&c->nr_refill, 1, __ATOMIC_RELAXED);
	if (cnt < c->low_watermark)
		alloc_bulk(e, ma, c, c->batch, 1);
	else if (cnt > c->high_watermark)
		free_bulk(e, ma, c);
	poll_callbacks(e, ma, c);
	check_free_by_rcu(e, ma, c);
}

void pk_ma_refill(struct pk_ma_env *e, struct pk_ma *ma, uint64_t cache_off)
{
	bpf_mem_refill(e, ma, CACHE(e, cache_off));
}

/* ---- init ------------------------------------------------------------------------------ */

static void init_cache(struct pk_ma_env *e, struct pk_ma *ma, struct pk_ma_cache *c, uint32_t unit_size,
		       int percpu, uint32_t cpu, uint32_t idx)
{
	c->percpu_size = percpu ? PK_MA_PERCPU_SIZE : 0;
	pk_ma_watermarks(unit_size, percpu, &c->low_watermark, &c->high_watermark, &c->batch);
	c->cpu = cpu;
	c->idx = idx;
	c->ma_off = (uint64_t)((char *)ma - e->a->base);
	c->tgt = COFF(e, c);
	__atomic_store_n(&c->unit_size, unit_size, __ATOMIC_RELEASE);
}

static void prefill_mem_cache(struct pk_ma_env *e, struct pk_ma *ma, struct pk_ma_cache *c)
{
	/* 4 for small non-percpu units, else 1 (since Dec 2023) */
	alloc_bulk(e, ma, c, !c->percpu_size && c->unit_size <= 256 ? 4 : 1, 0);
}

static inline int cpu_possible(struct pk_arena *a, uint32_t cpu)
{
	return (pk_hdr(a)->possible[cpu / 8] >> (cpu % 8)) & 1;
}

int64_t pk_ma_create(struct pk_ma_env *e, uint32_t size, int percpu, int init_buckets, int memcg,
		     uint64_t id)
{
	struct pk_arena *a = e->a;
	uint32_t nr = pk_hdr(a)->nr_cpu_ids, nb, cpu, i;
	uint64_t csize;
	int64_t off, coff;
	struct pk_ma *ma;

	if (percpu && size == 0 && init_buckets)
		return -EINVAL;
	nb = size ? 1 : PK_MA_NUM_CACHES;
	csize = (uint64_t)nr * nb * PK_MA_CACHE_STRIDE;
	off = pk_kmalloc(a, sizeof(struct pk_ma), 1);
	if (off <= 0)
		return off < 0 ? off : -ENOMEM;
	coff = pk_kmalloc(a, csize, 1);
	if (coff <= 0) {
		pk_kfree(a, (uint64_t)off);
		return coff < 0 ? coff : -ENOMEM;
	}
	memset(a->base + coff, 0, csize);	/* slab objects are zeroed; be explicit for pages */
	ma = (struct pk_ma *)(a->base + off);
	ma->id = id;
	ma->nr_cpu_ids = nr;
	ma->flags = (percpu ? PK_MA_F_PERCPU : 0) | (size ? 0 : PK_MA_F_CACHES);
	ma->nr_buckets = nb;
	ma->size = size;
	ma->memcg = memcg;
	ma->caches_off = (uint64_t)coff;
	ma->caches_size = csize;
	if (init_buckets) {
		for (cpu = 0; cpu < nr; cpu++) {
			if (!cpu_possible(a, cpu))
				continue;
			for (i = 0; i < nb; i++) {
				struct pk_ma_cache *c = CACHE(e, pk_ma_cache_off(ma, cpu, i));
				uint32_t unit = size ? size + (percpu ? 0 : PK_MA_NODE_SZ) : pk_ma_sizes[i];

				init_cache(e, ma, c, unit, percpu, cpu, i);
				prefill_mem_cache(e, ma, c);
			}
		}
	}
	smp_store_release64(&ma->magic, PK_MA_MAGIC);
	return off;
}

int pk_ma_unit_init(struct pk_ma_env *e, struct pk_ma *ma, uint64_t size)
{
	int i = pk_ma_cache_idx(size);
	uint32_t cpu;

	if (i < 0)
		return -EINVAL;
	if (!(ma->flags & PK_MA_F_PERCPU) || !(ma->flags & PK_MA_F_CACHES))
		return -EINVAL;
	move_lock(e, ma);	/* callers serialise (bpf_percpu_ma_lock) */
	for (cpu = 0; cpu < ma->nr_cpu_ids; cpu++) {
		struct pk_ma_cache *c;

		if (!cpu_possible(e->a, cpu))
			continue;
		c = CACHE(e, pk_ma_cache_off(ma, cpu, (uint32_t)i));
		if (c->unit_size)
			continue;	/* already initialised: idempotent, and completes an init cut short */
		init_cache(e, ma, c, pk_ma_sizes[i], 1, cpu, (uint32_t)i);
		prefill_mem_cache(e, ma, c);
	}
	move_unlock(ma);
	return 0;
}

/* ---- the API ------------------------------------------------------------------------ */

uint64_t pk_ma_obj_cache(struct pk_arena *a, const struct pk_ma *ma, uint64_t ptr)
{
	uint64_t hint, data_lo = (uint64_t)pk_hdr(a)->meta_pages << PK_PAGE_SHIFT;

	if (ptr % 8 || ptr < data_lo + PK_MA_NODE_SZ || ptr >= a->size)
		return 0;
	hint = READ_ONCE64(a->base + ptr - PK_MA_NODE_SZ);
	if (hint < ma->caches_off || hint >= ma->caches_off + ma->caches_size ||
	    (hint - ma->caches_off) % PK_MA_CACHE_STRIDE)
		return 0;
	if (!pk_ma_cache_at(a->base, hint)->unit_size)
		return 0;
	return hint;
}

uint64_t pk_ma_of_obj(struct pk_arena *a, uint64_t ptr)
{
	uint64_t data_lo = (uint64_t)pk_hdr(a)->meta_pages << PK_PAGE_SHIFT, hint, moff;
	struct pk_ma *ma;

	if (ptr % 8 || ptr < data_lo + PK_MA_NODE_SZ || ptr >= a->size)
		return 0;
	hint = READ_ONCE64(a->base + ptr - PK_MA_NODE_SZ);
	if (hint % 8 || hint < data_lo || hint > a->size - sizeof(struct pk_ma_cache))
		return 0;
	moff = READ_ONCE64(&pk_ma_cache_at(a->base, hint)->ma_off);
	if (moff % 8 || moff < data_lo || moff > a->size - sizeof(struct pk_ma))
		return 0;
	ma = (struct pk_ma *)(a->base + moff);
	if (READ_ONCE64(&ma->magic) != PK_MA_MAGIC || pk_ma_obj_cache(a, ma, ptr) != hint)
		return 0;
	return moff;
}

uint64_t pk_ma_alloc(struct pk_ma_env *e, struct pk_ma *ma, uint32_t cpu, uint64_t size)
{
	uint64_t obj;
	int idx;

	if (!size || size > PK_MA_SIZE_MAX)
		return 0;
	if (!(ma->flags & PK_MA_F_PERCPU))
		size += PK_MA_NODE_SZ;
	idx = pk_ma_cache_idx(size);
	if (idx < 0)
		return 0;
	obj = unit_alloc(e, ma, CACHE(e, pk_ma_cache_off(ma, cpu, (uint32_t)idx)));
	return obj ? obj + PK_MA_NODE_SZ : 0;
}

uint64_t pk_ma_cache_alloc(struct pk_ma_env *e, struct pk_ma *ma, uint32_t cpu, int gfp_kernel)
{
	struct pk_ma_cache *c = CACHE(e, pk_ma_cache_off(ma, cpu, 0));
	uint64_t obj = unit_alloc(e, ma, c);

	if (!obj && gfp_kernel && !e->nmi) {
		/* bpf_mem_cache_alloc_flags(GFP_KERNEL): straight from kmalloc */
		obj = __alloc(e, ma, c, 0);
		if (obj) {
			SET_LINK(e, obj, COFF(e, c));
			__atomic_fetch_add(&ma->created, 1, __ATOMIC_RELAXED);
			__atomic_fetch_add(&ma->direct, 1, __ATOMIC_RELAXED);
		}
	}
	return obj ? obj + PK_MA_NODE_SZ : 0;
}

int pk_ma_free(struct pk_ma_env *e, struct pk_ma *ma, uint32_t cpu, uint64_t ptr, int rcu,
	       int cache_flavour)
{
	uint64_t hint = pk_ma_obj_cache(e->a, ma, ptr), node = ptr - PK_MA_NODE_SZ;
	struct pk_ma_cache *c;
	int idx = 0;

	if (!hint)
		return -EINVAL;
	if (!cache_flavour) {
		idx = pk_ma_cache_idx(pk_ma_cache_at(e->a->base, hint)->unit_size);
		if (idx < 0)
			return -EINVAL;	/* WARN_ON_ONCE(idx < 0) */
	}
	c = CACHE(e, pk_ma_cache_off(ma, cpu, (uint32_t)idx));
	if (!c->unit_size)
		c = CACHE(e, hint);	/* a bucket this CPU never initialised: the owner's */
	/* Claim the object: of two racing frees of it, one wins, the other gets EINVAL. */
	if (pk_cmpxchg64(e->a->base + node, hint, 0) != hint)
		return -EINVAL;
	if (rcu)
		unit_free_rcu(e, ma, c, node, hint);
	else
		unit_free(e, ma, c, node, hint);
	return 0;
}

int pk_ma_raw_free(struct pk_ma_env *e, struct pk_ma *ma, uint64_t ptr)
{
	uint64_t hint = pk_ma_obj_cache(e->a, ma, ptr);
	struct pk_ma_cache *c;
	uint64_t hsize;

	if (!hint)
		return -EINVAL;
	c = CACHE(e, hint);
	hsize = c->percpu_size ? c->percpu_size : c->unit_size;
	if (pk_cmpxchg64(e->a->base + ptr - PK_MA_NODE_SZ, hint, 0) != hint)
		return -EINVAL;	/* a racing free took it */
	/* counted before the kfree: a kill in between leaks it with the books balanced */
	__atomic_fetch_add(&ma->released, 1, __ATOMIC_RELAXED);
	__atomic_fetch_add(&ma->raw_freed, 1, __ATOMIC_RELAXED);
	if (c->percpu_size) {
		int need = 0;

		pk_pcpu_free(e->a, e->p, READ_ONCE64(e->a->base + ptr), &need);
		if (need)
			e->need_balance = 1;
	}
	pk_kfree(e->a, ptr - PK_MA_NODE_SZ);
	if (ma->memcg > 0)
		pk_memcg_uncharge(e->p, ma->memcg, charge_size(e, hsize));
	return 0;
}

/* ---- check and destroy ------------------------------------------------------------------ */

static int cmp_u64(const void *x, const void *y)
{
	uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;

	return a < b ? -1 : a > b;
}

static void lock_all(struct pk_ma_env *e, struct pk_ma *ma)
{
	uint64_t off;

	move_lock(e, ma);
	for (off = ma->caches_off; off < ma->caches_off + ma->caches_size; off += PK_MA_CACHE_STRIDE)
		if (CACHE(e, off)->unit_size)
			cache_lock(e, ma, CACHE(e, off));
}

static void unlock_all(struct pk_ma_env *e, struct pk_ma *ma)
{
	uint64_t off;

	for (off = ma->caches_off; off < ma->caches_off + ma->caches_size; off += PK_MA_CACHE_STRIDE)
		if (CACHE(e, off)->unit_size)
			cache_unlock(CACHE(e, off));
	move_unlock(ma);
}

static void outstanding(struct pk_ma_env *e, struct pk_ma *ma, struct pk_ma_stats *st)
{
	uint64_t off, alloc = 0, freed = 0;

	for (off = ma->caches_off; off < ma->caches_off + ma->caches_size; off += PK_MA_CACHE_STRIDE) {
		alloc += CACHE(e, off)->nr_alloc;
		/* nr_busy: frees that found the cache busy and went to an extra list */
		freed += CACHE(e, off)->nr_free + __atomic_load_n(&CACHE(e, off)->nr_busy, __ATOMIC_RELAXED);
	}
	alloc += __atomic_load_n(&ma->direct, __ATOMIC_RELAXED);
	freed += __atomic_load_n(&ma->raw_freed, __ATOMIC_RELAXED);
	st->outstanding = alloc - freed;
	st->created = __atomic_load_n(&ma->created, __ATOMIC_RELAXED);
	st->released = __atomic_load_n(&ma->released, __ATOMIC_RELAXED);
}

int pk_ma_check(struct pk_ma_env *e, struct pk_ma *ma, struct pk_ma_stats *st, char *msg, size_t msglen)
{
	uint64_t off, cap = 1024, n = 0, *all = malloc(cap * sizeof(*all)), node, lim, k;
	int l, err = 0;

	memset(st, 0, sizeof(*st));
	if (all == NULL)
		return -ENOMEM;
	lock_all(e, ma);
	for (off = ma->caches_off; off < ma->caches_off + ma->caches_size && !err;
	     off += PK_MA_CACHE_STRIDE) {
		struct pk_ma_cache *c = CACHE(e, off);

		if (!c->unit_size)
			continue;
		for (l = PK_MA_L_FREE; l <= PK_MA_L_WAIT_TTRACE && !err; l++) {
			lim = walk_limit(e);
			k = 0;
			for (node = READ_ONCE64(pk_ma_list_head(c, l)); node && !err; node = LINK(e, node)) {
				if (!lim--) {
					snprintf(msg, msglen, "cpu %u bucket %u list %d: cycle", c->cpu, c->idx, l);
					err = -EUCLEAN;
					break;
				}
				if (node % 8 || node >= e->a->size) {
					snprintf(msg, msglen, "cpu %u bucket %u list %d: stray node 0x%llx",
						 c->cpu, c->idx, l, (unsigned long long)node);
					err = -EUCLEAN;
					break;
				}
				if (n == cap) {
					uint64_t *m = realloc(all, 2 * cap * sizeof(*all));

					if (!m) {
						err = -ENOMEM;
						break;
					}
					all = m;
					cap *= 2;
				}
				all[n++] = node;
				k++;
			}
			st->on_list[l] += k;
			if (!err && l == PK_MA_L_FREE && (int64_t)k != c->free_cnt) {
				snprintf(msg, msglen, "cpu %u bucket %u: free_cnt %lld but %llu on free_llist",
					 c->cpu, c->idx, (long long)c->free_cnt, (unsigned long long)k);
				err = -EUCLEAN;
			}
		}
		if (c->xfer_head)
			st->in_flight += c->xfer_n ? c->xfer_n : chain_len(e, c->xfer_head);
	}
	if (!err && ma->st_head)
		st->in_flight += ma->st_n ? ma->st_n : chain_len(e, ma->st_head);
	if (!err) {
		qsort(all, n, sizeof(*all), cmp_u64);
		for (k = 1; k < n; k++)
			if (all[k] == all[k - 1]) {
				snprintf(msg, msglen, "object 0x%llx is on two lists (or twice on one)",
					 (unsigned long long)all[k]);
				err = -EUCLEAN;
				break;
			}
	}
	outstanding(e, ma, st);
	unlock_all(e, ma);
	free(all);
	return err;
}

/*
 * Objects whose header names one of @ma's caches of the object's own kmalloc
 * class: allocated and never freed.  Records the first @max and clears every
 * header, so that no allocator later placed at the same offset can take them
 * for its own.  Returns how many were found.
 */
static uint64_t find_leaks(struct pk_ma_env *e, struct pk_ma *ma, uint64_t *out, int max, int *nout)
{
	struct pk_header *h = pk_hdr(e->a);
	uint64_t found = 0;
	uint32_t pg, i;

	*nout = 0;
	for (pg = h->meta_pages; pg < h->nr_pages; pg++) {
		struct pk_page_desc *d = pk_desc(e->a, pg);
		uint64_t base = (uint64_t)pg << PK_PAGE_SHIFT, size, obj, hint;
		uint32_t nobj;

		if (d->type == PK_PG_SLAB) {
			size = h->classes[d->cls].size;
			nobj = d->bump;
		} else if (d->type == PK_PG_HEAD) {
			size = (uint64_t)d->next << PK_PAGE_SHIFT;
			nobj = base == ma->caches_off ? 0 : 1;
		} else {
			continue;
		}
		for (i = 0; i < nobj; i++) {
			struct pk_ma_cache *c;

			obj = base + i * size;
			hint = pk_ma_obj_cache(e->a, ma, obj + PK_MA_NODE_SZ);
			if (!hint)
				continue;
			c = CACHE(e, hint);
			if (charge_size(e, c->percpu_size ? c->percpu_size : c->unit_size) != size)
				continue;	/* not an object of that cache's class: someone else's word */
			if (*nout < max)
				out[(*nout)++] = obj + PK_MA_NODE_SZ;
			SET_LINK(e, obj, 0);
			found++;
		}
	}
	return found;
}

/* drain_mem_cache(): the lists that need no grace period go back now. */
static void drain_mem_cache(struct pk_ma_env *e, struct pk_ma *ma, struct pk_ma_cache *c, uint64_t *dfirst)
{
	int l;

	c->draining = 1;
	free_list_now(e, ma, c, PK_MA_L_FREE);
	free_list_now(e, ma, c, PK_MA_L_EXTRA);
	c->free_cnt = 0;
	/*
	 * The kernel frees these at once too: its users guarantee no reader is
	 * left.  Processes here may still be inside a read-side section, so
	 * objects that are waiting for a grace period go back after one.
	 */
	for (l = PK_MA_L_BY_RCU; l <= PK_MA_L_WAIT_TTRACE; l++) {
		uint64_t *h = pk_ma_list_head(c, l), head, tail;

		head = READ_ONCE64(h);
		if (l == PK_MA_L_EXTRA_RCU)
			head = pk_xchg64(h, 0);	/* lock-free producers; destroy is the end */
		else
			WRITE_ONCE64(h, 0);
		if (!head)
			continue;
		tail = chain_tail(e, head, 0, NULL);
		SET_LINK(e, tail, *dfirst);
		*dfirst = head;
		/* the cache block outlives the objects: remember each one's cache */
	}
}

int pk_ma_destroy(struct pk_ma_env *e, struct pk_ma *ma, struct pk_ma_stats *st, uint64_t *leaks,
		  int nleak, int *nleaks)
{
	uint64_t off, dfirst = 0;
	int l;

	memset(st, 0, sizeof(*st));
	lock_all(e, ma);
	if (READ_ONCE64(&ma->magic) != PK_MA_MAGIC) {	/* another destroy got here first */
		unlock_all(e, ma);
		return -ENOENT;
	}
	WRITE_ONCE64(&ma->magic, 0);	/* every handle stops here */
	for (off = ma->caches_off; off < ma->caches_off + ma->caches_size; off += PK_MA_CACHE_STRIDE) {
		struct pk_ma_cache *c = CACHE(e, off);

		if (c->unit_size)
			drain_mem_cache(e, ma, c, &dfirst);
	}
	/* check_mem_cache(): the seven lists must be empty now */
	for (off = ma->caches_off; off < ma->caches_off + ma->caches_size; off += PK_MA_CACHE_STRIDE) {
		struct pk_ma_cache *c = CACHE(e, off);

		if (!c->unit_size)
			continue;
		for (l = PK_MA_L_FREE; l <= PK_MA_L_WAIT_TTRACE; l++)
			st->on_list[l] += chain_len(e, READ_ONCE64(pk_ma_list_head(c, l)));
	}
	outstanding(e, ma, st);
	*nleaks = 0;
	if (st->outstanding)
		find_leaks(e, ma, leaks, nleak, nleaks);
	ma->deferred = dfirst;
	if (dfirst) {
		ma->deferred_cookie[0] = gp_cookie(e, PK_RCU_TRACE);
		ma->deferred_cookie[1] = gp_cookie(e, PK_RCU_NORMAL);
		st->in_flight = chain_len(e, dfirst);
	}
	unlock_all(e, ma);
	return 1;	/* the caches block is freed after a grace period (late callbacks) */
}

void pk_ma_destroy_finish(struct pk_ma_env *e, uint64_t ma_off)
{
	struct pk_ma *ma = (struct pk_ma *)(e->a->base + ma_off);
	uint64_t obj = ma->deferred;

	/* The objects' owning caches are unknown now; any cache of the right unit will do. */
	while (obj) {
		uint64_t next = LINK(e, obj);
		struct pk_ma_cache *c = NULL;
		uint64_t off;
		int64_t ks = pk_ksize(e->a, obj);

		ma->deferred = next;
		for (off = ma->caches_off; off < ma->caches_off + ma->caches_size; off += PK_MA_CACHE_STRIDE) {
			struct pk_ma_cache *x = CACHE(e, off);
			uint64_t hs = x->percpu_size ? x->percpu_size : x->unit_size;

			if (x->unit_size && ks >= 0 && charge_size(e, hs) == (uint64_t)ks) {
				c = x;
				break;
			}
		}
		if (c)
			free_one(e, ma, c, obj);
		else
			pk_kfree(e->a, obj);
		obj = next;
	}
	pk_kfree(e->a, ma->caches_off);
	pk_kfree(e->a, ma_off);
}
