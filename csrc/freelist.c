/*
 * freelist.c - the per-CPU freelist; layout and rules in freelist.h.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "atomic.h"
#include "freelist.h"

uint64_t pk_fl_size(uint32_t nr_cpu_ids)
{
	return sizeof(struct pk_freelist) + (uint64_t)nr_cpu_ids * sizeof(struct pk_fl_head);
}

/* The first byte a node may be at: past the arena's meta pages. */
static inline uint64_t data_lo(const struct pk_arena *a)
{
	return (uint64_t)pk_hdr(a)->meta_pages << PK_PAGE_SHIFT;
}

static inline int cpu_possible(const struct pk_arena *a, uint32_t cpu)
{
	return (pk_hdr(a)->possible[cpu / 8] >> (cpu % 8)) & 1;
}

static inline uint64_t *node_next(const struct pk_arena *a, uint64_t node)
{
	return (uint64_t *)(a->base + node);
}

/* ROBUST: the element's bit, or NULL without a bitmap. */
static inline uint64_t *robust_word(const struct pk_arena *a, const struct pk_freelist *s,
				    uint64_t node, uint64_t *bit)
{
	uint64_t idx;

	if (!(s->flags & PK_FL_ROBUST) || !s->bitmap_off || !s->elem_size)
		return NULL;
	idx = (node - s->area_base) / s->elem_size;
	*bit = 1ull << (idx % 64);
	return (uint64_t *)(a->base + s->bitmap_off) + idx / 64;
}

static void recount(struct pk_arena *a, struct pk_freelist *s, struct pk_fl_head *h)
{
	uint64_t n = 0, node = h->first, limit = s->nr_elems ? s->nr_elems : a->size / 8;

	while (node && n <= limit) {
		if (pk_fl_check_node(data_lo(a), a->size, s, node)) {
			/* Cannot happen by construction; keep what is valid. */
			break;
		}
		n++;
		node = READ_ONCE64(node_next(a, node));
	}
	h->count = n;
}

static inline int head_lock(struct pk_arena *a, struct pk_freelist *s, struct pk_fl_head *h)
{
	int r;

	if (likely(pk_lock_trylock(&h->lock) == PK_LOCK_OK))	/* inline fast path */
		return PK_LOCK_OK;
	r = pk_lock_acquire(&h->lock, -1);

	if (unlikely(r == PK_LOCK_RECOVERED))
		recount(a, s, h);
	return r;
}

static inline int head_trylock(struct pk_fl_head *h)
{
	return pk_lock_trylock(&h->lock) == PK_LOCK_OK;
}

static inline void __push_node(struct pk_arena *a, struct pk_fl_head *h, uint64_t node)
{
	WRITE_ONCE64(node_next(a, node), h->first);
	WRITE_ONCE64(&h->first, node);	/* commit; pairs with the READ_ONCE empty check */
	h->count++;
}

static inline uint64_t __pop_node(struct pk_arena *a, struct pk_fl_head *h)
{
	uint64_t node = h->first;

	if (node) {
		WRITE_ONCE64(&h->first, READ_ONCE64(node_next(a, node)));
		h->count--;
	}
	return node;
}

static inline uint32_t next_cpu(const struct pk_arena *a, const struct pk_freelist *s, uint32_t cpu)
{
	do
		cpu = cpu + 1 == s->nr_cpu_ids ? 0 : cpu + 1;
	while (!cpu_possible(a, cpu));
	return cpu;
}

/*
 * ___pcpu_freelist_push_nmi: trylock around the CPUs, then the extra list; never
 * fail.  User space adds one thing the kernel does not need: if every list
 * stays locked for many rounds, an owner may be dead (not merely busy), and only
 * a waiting acquire can take a dead owner's lock over.  So after PUSH_NMI_ROUNDS
 * rounds, each list is tried with a short waiting acquire, which recovers a dead
 * owner and returns -EDEADLK at once for a lock the interrupted thread holds.
 */
#define PUSH_NMI_ROUNDS	100000
#define PUSH_NMI_WAIT_NS	20000000

static int push_nmi_waiting(struct pk_arena *a, struct pk_freelist *s, uint32_t cpu, uint64_t node)
{
	uint32_t c = cpu;
	struct pk_fl_head *h;
	int r;

	do {
		h = &s->heads[c];
		r = pk_lock_acquire(&h->lock, PUSH_NMI_WAIT_NS);
		if (r >= 0) {
			if (r == PK_LOCK_RECOVERED)
				recount(a, s, h);
			__push_node(a, h, node);
			pk_lock_release(&h->lock);
			return 1;
		}
		c = next_cpu(a, s, c);
	} while (c != cpu);
	h = &s->extralist;
	r = pk_lock_acquire(&h->lock, PUSH_NMI_WAIT_NS);
	if (r < 0)
		return 0;
	if (r == PK_LOCK_RECOVERED)
		recount(a, s, h);
	__push_node(a, h, node);
	pk_lock_release(&h->lock);
	return 1;
}

static void push_nmi(struct pk_arena *a, struct pk_freelist *s, uint32_t cpu, uint64_t node)
{
	uint64_t rounds = 0;
	uint32_t c;

	for (;;) {
		c = cpu;
		do {
			struct pk_fl_head *h = &s->heads[c];

			if (head_trylock(h)) {
				__push_node(a, h, node);
				pk_lock_release(&h->lock);
				return;
			}
			c = next_cpu(a, s, c);
		} while (c != cpu);
		if (head_trylock(&s->extralist)) {
			__push_node(a, &s->extralist, node);
			pk_lock_release(&s->extralist.lock);
			return;
		}
		if (++rounds % PUSH_NMI_ROUNDS == 0 && push_nmi_waiting(a, s, cpu, node))
			return;
		cpu_relax();
	}
}

int pk_fl_push(struct pk_arena *a, struct pk_freelist *s, uint32_t cpu, uint64_t node, int nmi)
{
	uint64_t bit, *w;
	int err = pk_fl_check_node(data_lo(a), a->size, s, node);

	if (err)
		return err;
	w = robust_word(a, s, node, &bit);
	if (w && (__atomic_fetch_or(w, bit, __ATOMIC_ACQ_REL) & bit))
		return -EEXIST;
	if (!nmi) {
		struct pk_fl_head *h = &s->heads[cpu];

		head_lock(a, s, h);
		__push_node(a, h, node);
		pk_lock_release(&h->lock);
		return 0;
	}
	push_nmi(a, s, cpu, node);
	return 0;
}

static uint64_t pop_one(struct pk_arena *a, struct pk_freelist *s, uint32_t cpu, int nmi)
{
	struct pk_fl_head *h;
	uint64_t node;
	uint32_t c = cpu;

	do {
		h = &s->heads[c];
		if (READ_ONCE64(&h->first)) {	/* 54a9c3a42d92: skip empty heads unlocked */
			if (!nmi)
				head_lock(a, s, h);
			else if (!head_trylock(h))
				goto next;
			node = __pop_node(a, h);
			pk_lock_release(&h->lock);
			if (node)
				return node;
		}
next:
		c = next_cpu(a, s, c);
	} while (c != cpu);
	h = &s->extralist;
	if (!READ_ONCE64(&h->first))
		return 0;
	if (!nmi)
		head_lock(a, s, h);
	else if (!head_trylock(h))
		return 0;
	node = __pop_node(a, h);
	pk_lock_release(&h->lock);
	return node;
}

static inline void robust_clear(struct pk_arena *a, struct pk_freelist *s, uint64_t node)
{
	uint64_t bit, *w = robust_word(a, s, node, &bit);

	if (w)
		__atomic_fetch_and(w, ~bit, __ATOMIC_ACQ_REL);
}

uint64_t pk_fl_pop(struct pk_arena *a, struct pk_freelist *s, uint32_t cpu, int nmi)
{
	uint64_t node = pop_one(a, s, cpu, nmi);

	if (node)
		robust_clear(a, s, node);
	return node;
}

int pk_fl_push_bulk(struct pk_arena *a, struct pk_freelist *s, uint32_t cpu,
		    const uint64_t *nodes, uint64_t n, int nmi)
{
	struct pk_fl_head *h = &s->heads[cpu];
	uint64_t i, bit, *w;

	if (n == 0)
		return 0;
	if (s->elem_size && !(s->elem_size & (s->elem_size - 1)) && s->elem_size >= 8 &&
	    s->area_base % 8 == 0 && s->area_base >= data_lo(a) &&
	    s->area_base + s->nr_elems * s->elem_size <= a->size) {
		/* The common case, hoisted: a power-of-two element size inside the arena. */
		uint64_t base = s->area_base, span = s->nr_elems * s->elem_size;
		uint64_t mask = s->elem_size - 1;

		for (i = 0; i < n; i++) {
			uint64_t rel = nodes[i] - base;	/* below base wraps to a huge value */

			if (unlikely(rel >= span || (rel & mask)))
				return -EINVAL;
		}
	} else {
		for (i = 0; i < n; i++)
			if (unlikely(pk_fl_check_node(data_lo(a), a->size, s, nodes[i])))
				return -EINVAL;
	}
	if (s->flags & PK_FL_ROBUST) {
		for (i = 0; i < n; i++) {
			w = robust_word(a, s, nodes[i], &bit);
			if (w && (__atomic_fetch_or(w, bit, __ATOMIC_ACQ_REL) & bit)) {
				while (i-- > 0) {	/* refuse the whole batch: undo */
					w = robust_word(a, s, nodes[i], &bit);
					__atomic_fetch_and(w, ~bit, __ATOMIC_ACQ_REL);
				}
				return -EEXIST;
			}
		}
	}
	if (nmi) {
		/* NMI: no batch lock to wait for; n trylock-only pushes, the batch already checked. */
		for (i = 0; i < n; i++)
			push_nmi(a, s, cpu, nodes[i]);
		return 0;
	}
	/* n successive pushes leave nodes[n-1] first: chain them in reverse (plain
	 * stores: the nodes are ours until the store to first publishes them). */
	{
		char *base = a->base;

		for (i = n - 1; i > 0; i--)
			*(uint64_t *)(base + nodes[i]) = nodes[i - 1];
	}
	head_lock(a, s, h);
	WRITE_ONCE64(node_next(a, nodes[0]), h->first);
	WRITE_ONCE64(&h->first, nodes[n - 1]);	/* commit */
	h->count += n;
	pk_lock_release(&h->lock);
	return 0;
}

/* Up to n nodes off one locked list: walk the chain, then one store to first. */
static uint64_t take_chain(struct pk_arena *a, struct pk_fl_head *h, uint64_t *out, uint64_t n)
{
	const char *base = a->base;
	uint64_t node = h->first, k = 0;

	/* Plain loads: the links of nodes on a list change only under its lock, held here. */
	while (k < n && node) {
		out[k++] = node;
		node = *(const uint64_t *)(base + node);
	}
	if (k) {
		WRITE_ONCE64(&h->first, node);	/* commit: the k nodes are ours */
		h->count -= k;
	}
	return k;
}

uint64_t pk_fl_pop_bulk(struct pk_arena *a, struct pk_freelist *s, uint32_t cpu, int nmi,
			uint64_t *out, uint64_t n)
{
	uint64_t got = 0;
	uint32_t c = cpu;
	struct pk_fl_head *h;

	/* Same order as n pops: drain this CPU, then the next ones, then the extra list. */
	do {
		h = &s->heads[c];
		if (READ_ONCE64(&h->first)) {
			if (!nmi)
				head_lock(a, s, h);
			else if (!head_trylock(h))
				goto next;
			got += take_chain(a, h, out + got, n - got);
			pk_lock_release(&h->lock);
		}
next:
		c = next_cpu(a, s, c);
	} while (got < n && c != cpu);
	h = &s->extralist;
	if (got < n && READ_ONCE64(&h->first) &&
	    ((!nmi && head_lock(a, s, h) >= 0) || (nmi && head_trylock(h)))) {
		got += take_chain(a, h, out + got, n - got);
		pk_lock_release(&h->lock);
	}
	if (s->flags & PK_FL_ROBUST) {
		uint64_t i;

		for (i = 0; i < got; i++)
			robust_clear(a, s, out[i]);
	}
	return got;
}

int pk_fl_populate(struct pk_arena *a, struct pk_freelist *s, uint64_t buf, uint64_t elem_size,
		   uint64_t nr_elems)
{
	uint32_t cpu, nr_possible = 0, idx = 0;
	uint64_t per, rem, j;
	int claimed = 0;

	if (elem_size < 8 || elem_size % 8 || buf < data_lo(a) || buf % 8 || nr_elems == 0 ||
	    buf >= a->size || nr_elems > (a->size - buf) / elem_size)
		return -EINVAL;
	if (s->elem_size && (buf < s->area_base || buf + nr_elems * elem_size >
			     s->area_base + s->nr_elems * s->elem_size || elem_size != s->elem_size ||
			     (buf - s->area_base) % elem_size))
		return -EINVAL;
	for (cpu = 0; cpu < s->nr_cpu_ids; cpu++)
		nr_possible += cpu_possible(a, cpu);
	if ((s->flags & PK_FL_ROBUST) && s->elem_size && s->bitmap_off) {
		/*
		 * Robust: claim every element's bit atomically (as push does), so a
		 * concurrent populate or push of the same element cannot slip in; if
		 * one is already free, give back what was claimed and change nothing.
		 */
		for (j = 0; j < nr_elems; j++) {
			uint64_t bit, *w = robust_word(a, s, buf + j * elem_size, &bit);

			if (w && (__atomic_fetch_or(w, bit, __ATOMIC_ACQ_REL) & bit)) {
				while (j-- > 0) {
					w = robust_word(a, s, buf + j * elem_size, &bit);
					__atomic_fetch_and(w, ~bit, __ATOMIC_ACQ_REL);
				}
				return -EEXIST;
			}
		}
		claimed = 1;
	}
	if (!s->elem_size) {
		s->area_base = buf;
		s->nr_elems = nr_elems;
		/* Last, with release: pk_fl_check_node reads it before the others. */
		__atomic_store_n(&s->elem_size, elem_size, __ATOMIC_RELEASE);
	}
	per = nr_elems / nr_possible;
	rem = nr_elems % nr_possible;
	/* 4b45cd81f737: the first nr_elems % P possible CPUs (by position) get one more. */
	for (cpu = 0; cpu < s->nr_cpu_ids; cpu++) {
		struct pk_fl_head *h = &s->heads[cpu];
		uint64_t cnt;

		if (!cpu_possible(a, cpu))
			continue;
		cnt = per + (idx++ < rem ? 1 : 0);
		head_lock(a, s, h);	/* the kernel takes none ("not visible yet"); ours may be */
		for (j = 0; j < cnt; j++, buf += elem_size) {
			uint64_t bit, *w = claimed ? NULL : robust_word(a, s, buf, &bit);

			if (w)	/* first populate of a robust freelist: the bitmap starts empty */
				__atomic_fetch_or(w, bit, __ATOMIC_ACQ_REL);
			__push_node(a, h, buf);
		}
		pk_lock_release(&h->lock);
	}
	return 0;
}

#define FAIL(...) do { snprintf(msg, msglen, __VA_ARGS__); err = -EUCLEAN; goto out; } while (0)

static struct pk_fl_head *list_at(struct pk_freelist *s, uint32_t i)
{
	return i < s->nr_cpu_ids ? &s->heads[i] : &s->extralist;
}

/*
 * Every list is locked for the walk (heads in CPU order, then the extra list:
 * push and pop hold one head at a time, so this cannot deadlock), so a node
 * moving between lists cannot be seen twice or missed.
 */
int pk_fl_check(struct pk_arena *a, struct pk_freelist *s, uint64_t *total, char *msg,
		size_t msglen)
{
	uint64_t nelems = s->elem_size ? s->nr_elems : 0, limit, seen_n = 0;
	uint8_t *seen = NULL;
	uint32_t i, nlists = s->nr_cpu_ids + 1;
	int err = 0;

	msg[0] = '\0';
	*total = 0;
	if (nelems) {
		seen = calloc((nelems + 7) / 8, 1);
		if (!seen)
			return -ENOMEM;
	}
	limit = nelems ? nelems : a->size / 8;
	for (i = 0; i < nlists; i++)
		if (i == s->nr_cpu_ids || cpu_possible(a, i))
			head_lock(a, s, list_at(s, i));
	for (i = 0; i < nlists; i++) {
		struct pk_fl_head *h = list_at(s, i);
		const char *what = i < s->nr_cpu_ids ? "cpu" : "extralist";
		uint64_t node, n = 0;

		if (i < s->nr_cpu_ids && !cpu_possible(a, i)) {
			if (h->first)
				FAIL("head of impossible CPU %u is not empty", i);
			continue;
		}
		for (node = h->first; node; node = READ_ONCE64(node_next(a, node))) {
			if (pk_fl_check_node(data_lo(a), a->size, s, node))
				FAIL("%s %u: node %llu outside the element area or misaligned", what, i,
				     (unsigned long long)node);
			if (++n > limit)
				FAIL("%s %u: cycle (more than %llu nodes)", what, i,
				     (unsigned long long)limit);
			if (seen) {
				uint64_t idx = (node - s->area_base) / s->elem_size;

				if (seen[idx / 8] & (1u << (idx % 8)))
					FAIL("node %llu is on the lists twice", (unsigned long long)node);
				seen[idx / 8] |= 1u << (idx % 8);
			}
		}
		if (n != h->count)
			FAIL("%s %u: count %llu, walked %llu", what, i, (unsigned long long)h->count,
			     (unsigned long long)n);
		seen_n += n;
	}
	*total = seen_n;
out:
	for (i = nlists; i-- > 0;)
		if (i == s->nr_cpu_ids || cpu_possible(a, i))
			pk_lock_release(&list_at(s, i)->lock);
	free(seen);
	return err;
}
