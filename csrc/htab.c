/*
 * htab.c - BPF hash maps in the arena; see htab.h for the layout, the
 * synchronization rules and what a kill can lose.
 *
 * The operations follow kernel/bpf/hashtab.c: htab_map_update_elem()'s
 * check_flags() after the bucket lookup, alloc_htab_elem()'s full-map rule,
 * the new element linked at the head before the old one is unlinked, per-CPU
 * updates of an existing element in place, pcpu_init_value()'s zeroing of the
 * other CPUs for a program's insert, htab_map_get_next_key()'s restart from
 * bucket 0 for a missing key, and the whole-bucket batches of
 * __htab_map_lookup_and_delete_batch().
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "atomic.h"
#include "htab.h"

/* ---- jhash (include/linux/jhash.h) ---- */

static inline uint32_t rol32(uint32_t w, unsigned s)
{
	return (w << s) | (w >> ((-s) & 31));
}

#define JHASH_INITVAL 0xdeadbeefu

#define __jhash_mix(a, b, c)				\
	do {						\
		a -= c;  a ^= rol32(c, 4);  c += b;	\
		b -= a;  b ^= rol32(a, 6);  a += c;	\
		c -= b;  c ^= rol32(b, 8);  b += a;	\
		a -= c;  a ^= rol32(c, 16); c += b;	\
		b -= a;  b ^= rol32(a, 19); a += c;	\
		c -= b;  c ^= rol32(b, 4);  b += a;	\
	} while (0)

#define __jhash_final(a, b, c)				\
	do {						\
		c ^= b; c -= rol32(b, 14);		\
		a ^= c; a -= rol32(c, 11);		\
		b ^= a; b -= rol32(a, 25);		\
		c ^= b; c -= rol32(b, 16);		\
		a ^= c; a -= rol32(c, 4);		\
		b ^= a; b -= rol32(a, 14);		\
		c ^= b; c -= rol32(b, 24);		\
	} while (0)

static inline uint32_t get32(const unsigned char *k)
{
	uint32_t v;

	memcpy(&v, k, 4);
	return v;
}

uint32_t pk_jhash(const void *key, uint32_t length, uint32_t initval)
{
	const unsigned char *k = key;
	uint32_t a, b, c;

	a = b = c = JHASH_INITVAL + length + initval;
	while (length > 12) {
		a += get32(k);
		b += get32(k + 4);
		c += get32(k + 8);
		__jhash_mix(a, b, c);
		length -= 12;
		k += 12;
	}
	switch (length) {
	case 12: c += (uint32_t)k[11] << 24;	/* fall through */
	case 11: c += (uint32_t)k[10] << 16;	/* fall through */
	case 10: c += (uint32_t)k[9] << 8;	/* fall through */
	case 9:  c += k[8];			/* fall through */
	case 8:  b += (uint32_t)k[7] << 24;	/* fall through */
	case 7:  b += (uint32_t)k[6] << 16;	/* fall through */
	case 6:  b += (uint32_t)k[5] << 8;	/* fall through */
	case 5:  b += k[4];			/* fall through */
	case 4:  a += (uint32_t)k[3] << 24;	/* fall through */
	case 3:  a += (uint32_t)k[2] << 16;	/* fall through */
	case 2:  a += (uint32_t)k[1] << 8;	/* fall through */
	case 1:  a += k[0];
		__jhash_final(a, b, c);
		break;
	default:
		break;
	}
	return c;
}

uint32_t pk_jhash2(const uint32_t *k, uint32_t length, uint32_t initval)
{
	const unsigned char *p = (const unsigned char *)k;
	uint32_t a, b, c;

	a = b = c = JHASH_INITVAL + (length << 2) + initval;
	while (length > 3) {
		a += get32(p);
		b += get32(p + 4);
		c += get32(p + 8);
		__jhash_mix(a, b, c);
		length -= 3;
		p += 12;
	}
	switch (length) {
	case 3: c += get32(p + 8);	/* fall through */
	case 2: b += get32(p + 4);	/* fall through */
	case 1: a += get32(p);
		__jhash_final(a, b, c);
		break;
	default:
		break;
	}
	return c;
}

/* ---- helpers ---- */

static inline struct pk_htab_bucket *bucket_of(struct pk_htab_ctx *c, struct pk_htab *h, uint32_t hash)
{
	return (struct pk_htab_bucket *)(c->a->base + h->buckets) + (hash & (h->n_buckets - 1));
}

#define ELEM(c, off) pk_htab_elem_at((c)->a, (off))

/* The per-CPU pointer of an element of a per-CPU map. */
static inline uint64_t elem_pptr(struct pk_htab_ctx *c, struct pk_htab *h, struct pk_htab_elem *l)
{
	uint64_t v;

	memcpy(&v, pk_htab_val(h, l), 8);
	if (!h->prealloc)	/* the pcpu_ma object holds the per-CPU pointer */
		memcpy(&v, c->a->base + v, 8);
	return v;
}

/* An upper bound on a sane chain, so that a corrupted one cannot loop forever. */
static inline uint64_t chain_limit(const struct pk_htab *h)
{
	return h->prealloc ? h->nr_elems + 1 : (uint64_t)h->max_entries + 1024;
}

static struct pk_htab_elem *find(struct pk_htab_ctx *c, struct pk_htab *h, struct pk_htab_bucket *b,
				 uint32_t hash, const void *key, uint64_t *offp)
{
	uint64_t off = b->first, n = 0, lim = chain_limit(h);

	while (off && n++ < lim) {
		struct pk_htab_elem *l = ELEM(c, off);

		if (l->hash == hash && !memcmp(l->key, key, h->key_size)) {
			if (offp)
				*offp = off;
			return l;
		}
		off = l->next;
	}
	return NULL;
}

static int in_chain(struct pk_htab_ctx *c, struct pk_htab *h, struct pk_htab_bucket *b, uint64_t want)
{
	uint64_t off = b->first, n = 0, lim = chain_limit(h);

	while (off && n++ < lim) {
		if (off == want)
			return 1;
		off = ELEM(c, off)->next;
	}
	return 0;
}

/* Unlink @want from @b's chain (a single store commits it). */
static void unlink_elem(struct pk_htab_ctx *c, struct pk_htab *h, struct pk_htab_bucket *b, uint64_t want)
{
	uint64_t *link = &b->first, n = 0, lim = chain_limit(h);

	while (*link && n++ < lim) {
		if (*link == want) {
			WRITE_ONCE64(link, ELEM(c, want)->next);
			return;
		}
		link = &ELEM(c, *link)->next;
	}
}

static void free_elem(struct pk_htab_ctx *c, struct pk_htab *h, uint64_t off, int extra)
{
	if (h->prealloc) {
		pk_fl_push(c->a, extra ? c->fl_extra : c->fl, c->cpu, off, c->nmi);
		return;
	}
	if (h->percpu) {
		uint64_t obj;

		memcpy(&obj, pk_htab_val(h, ELEM(c, off)), 8);
		if (obj)
			pk_ma_free(c->pe, c->pcpu_ma, c->cpu, obj, 1, 1);
	}
	/*
	 * bpf_mem_cache_free_rcu(): not reused before a grace period, so a
	 * program's view of a deleted element reads the old value inside its RCU
	 * section (the kernel's htab_elem_free() uses bpf_mem_cache_free() and
	 * lets its lock-free lookups detect a reused element instead).
	 */
	pk_ma_free(c->e, c->ma, c->cpu, off, 1, 1);
}

/*
 * Finish or undo what a dead lock holder was doing in @b (see htab.h).  Runs
 * with the lock taken over.  Count changes of no-prealloc maps cannot be told
 * apart at every instruction, so those maps are marked for a recount.
 */
static void bucket_repair(struct pk_htab_ctx *c, struct pk_htab *h, struct pk_htab_bucket *b)
{
	uint64_t pn = b->pend_new, po = b->pend_old;
	uint64_t n = pn & ~PK_HTAB_PEND_EXTRA, o = po & ~PK_HTAB_PEND_EXTRA;

	pk_fetch_add64(&h->repairs, 1);
	if (!h->prealloc)
		WRITE_ONCE64(&h->recount, 1);
	if (n) {
		if (in_chain(c, h, b, n)) {
			/* Committed: the new element is in; finish removing the old one. */
			if (o && in_chain(c, h, b, o))
				unlink_elem(c, h, b, o);
			WRITE_ONCE64(&b->pend_new, 0);
			WRITE_ONCE64(&b->pend_old, 0);
			if (o)
				free_elem(c, h, o, (int)(pn & PK_HTAB_PEND_EXTRA));
		} else {
			/* Not committed: the map is as before; give the new element back. */
			WRITE_ONCE64(&b->pend_new, 0);
			WRITE_ONCE64(&b->pend_old, 0);
			free_elem(c, h, n, (int)(pn & PK_HTAB_PEND_EXTRA));
		}
		return;
	}
	if (o) {
		/* A delete in progress (finish it), or a replacement past its unlink. */
		if (in_chain(c, h, b, o))
			unlink_elem(c, h, b, o);
		WRITE_ONCE64(&b->pend_old, 0);
		free_elem(c, h, o, (int)(po & PK_HTAB_PEND_EXTRA));
	}
}

static int bucket_lock(struct pk_htab_ctx *c, struct pk_htab *h, struct pk_htab_bucket *b)
{
	int r = pk_lock_trylock(&b->lock);

	if (likely(r == PK_LOCK_OK))
		return 0;
	/* Re-entry from a signal handler, or NMI context: the kernel's -EBUSY. */
	if (r == -EDEADLK || c->nmi)
		return -EBUSY;
	r = pk_lock_acquire(&b->lock, -1);
	if (r == -EDEADLK)
		return -EBUSY;
	if (r < 0)
		return r;
	if (r == PK_LOCK_RECOVERED)
		bucket_repair(c, h, b);
	return 0;
}

static inline void bucket_unlock(struct pk_htab_bucket *b)
{
	pk_lock_release(&b->lock);
}

static void copy_out(struct pk_htab_ctx *c, struct pk_htab *h, struct pk_htab_elem *l, unsigned char *out)
{
	uint32_t i;
	uint64_t pptr;

	if (!h->percpu) {
		memcpy(out, pk_htab_val(h, l), h->value_size);
		return;
	}
	pptr = elem_pptr(c, h, l);
	for (i = 0; i < c->nr_possible; i++) {
		/* bpf_long_memcpy of round_up(value_size, 8) bytes per CPU */
		memcpy(out, c->a->base + pptr + c->unit_off[i], h->value_rsize);
		out += h->value_rsize;
	}
}

/* pcpu_copy_value() / pcpu_init_value() */
static void pcpu_write(struct pk_htab_ctx *c, struct pk_htab *h, uint64_t pptr, const unsigned char *value,
		       int onallcpus, int init)
{
	uint32_t i;

	if (onallcpus == PK_HTAB_REPLICATE) {
		/* one value for every possible CPU (user space's single value) */
		for (i = 0; i < c->nr_possible; i++) {
			unsigned char *d = (unsigned char *)c->a->base + pptr + c->unit_off[i];

			memcpy(d, value, h->value_size);
			memset(d + h->value_size, 0, h->value_rsize - h->value_size);
		}
		return;
	}
	if (onallcpus) {
		for (i = 0; i < c->nr_possible; i++)
			memcpy(c->a->base + pptr + c->unit_off[i], value + (uint64_t)i * h->value_rsize,
			       h->value_rsize);
		return;
	}
	if (!init) {
		memcpy(c->a->base + pptr + c->this_unit, value, h->value_size);
		return;
	}
	for (i = 0; i < c->nr_possible; i++) {
		unsigned char *d = (unsigned char *)c->a->base + pptr + c->unit_off[i];

		if (c->unit_off[i] == c->this_unit) {
			memcpy(d, value, h->value_size);
			memset(d + h->value_size, 0, h->value_rsize - h->value_size);
		} else {
			memset(d, 0, h->value_rsize);
		}
	}
}

/* ---- operations ---- */

int pk_htab_lookup(struct pk_htab_ctx *c, struct pk_htab *h, const void *key, void *out)
{
	uint32_t hash = pk_htab_hash(h, key);
	struct pk_htab_bucket *b = bucket_of(c, h, hash);
	struct pk_htab_elem *l;
	int r = bucket_lock(c, h, b);

	if (r)
		return r;
	l = find(c, h, b, hash, key, NULL);
	if (l)
		copy_out(c, h, l, out);
	bucket_unlock(b);
	return l ? 0 : -ENOENT;
}

uint64_t pk_htab_lookup_val(struct pk_htab_ctx *c, struct pk_htab *h, const void *key, int *err)
{
	uint32_t hash = pk_htab_hash(h, key);
	struct pk_htab_bucket *b = bucket_of(c, h, hash);
	struct pk_htab_elem *l;
	uint64_t v = 0;
	int r = bucket_lock(c, h, b);

	*err = r;
	if (r)
		return 0;
	l = find(c, h, b, hash, key, NULL);
	if (l)
		v = h->percpu ? elem_pptr(c, h, l) + c->this_unit
			      : (uint64_t)((char *)pk_htab_val(h, l) - c->a->base);
	bucket_unlock(b);
	return v;
}

/* A new element (no link yet): 0 with *err set when there is none. */
static uint64_t alloc_elem(struct pk_htab_ctx *c, struct pk_htab *h, int replace, int *extra, int *err)
{
	uint64_t l, obj;

	*extra = 0;
	if (h->prealloc) {
		if (replace && (l = pk_fl_pop(c->a, c->fl_extra, c->cpu, c->nmi)) != 0) {
			*extra = 1;
			return l;
		}
		l = pk_fl_pop(c->a, c->fl, c->cpu, c->nmi);
		if (!l)
			*err = -E2BIG;	/* alloc_htab_elem(): the freelist is empty */
		return l;
	}
	if (!replace) {
		/* is_map_full(): count >= max_entries; inc_elem_count() */
		if (pk_fetch_add64(&h->count, 1) >= h->max_entries) {
			pk_fetch_add64(&h->count, (uint64_t)-1);
			*err = -E2BIG;
			return 0;
		}
	}
	l = pk_ma_cache_alloc(c->e, c->ma, c->cpu, 0);
	if (l && h->percpu) {
		obj = pk_ma_cache_alloc(c->pe, c->pcpu_ma, c->cpu, 0);
		if (!obj) {
			pk_ma_free(c->e, c->ma, c->cpu, l, 0, 1);
			l = 0;
		} else {
			memcpy(pk_htab_val(h, ELEM(c, l)), &obj, 8);
		}
	}
	if (!l) {
		if (!replace)
			pk_fetch_add64(&h->count, (uint64_t)-1);	/* dec_count */
		*err = -ENOMEM;
	}
	return l;
}

int pk_htab_update(struct pk_htab_ctx *c, struct pk_htab *h, const void *key, const void *value,
		   uint64_t flags, int onallcpus, void *old_out, int *had_old)
{
	uint32_t hash;
	struct pk_htab_bucket *b;
	struct pk_htab_elem *old, *l;
	uint64_t old_off = 0, new_off;
	int r, extra;

	if ((flags & ~(uint64_t)PK_BPF_F_LOCK) > PK_BPF_EXIST)
		return -EINVAL;
	if (flags & PK_BPF_F_LOCK)	/* no bpf_spin_lock in our values */
		return -EINVAL;
	hash = pk_htab_hash(h, key);
	b = bucket_of(c, h, hash);
	r = bucket_lock(c, h, b);
	if (r)
		return r;
	old = find(c, h, b, hash, key, &old_off);
	/* check_flags() */
	if (old && (flags & ~(uint64_t)PK_BPF_F_LOCK) == PK_BPF_NOEXIST) {
		r = -EEXIST;
		goto out;
	}
	if (!old && flags == PK_BPF_EXIST) {
		r = -ENOENT;
		goto out;
	}
	if (had_old)
		*had_old = old != NULL;
	if (old && old_out)
		copy_out(c, h, old, old_out);
	if (h->percpu && old) {
		/* __htab_percpu_map_update_elem(): in place */
		pcpu_write(c, h, elem_pptr(c, h, old), value, onallcpus, 0);
		goto out;
	}
	new_off = alloc_elem(c, h, old != NULL, &extra, &r);
	if (!new_off) {
		if (old && h->prealloc) {
			/*
			 * More replacements in flight than spare elements (several
			 * callers acting as one CPU): the kernel's replace of a full
			 * map never fails, so copy in place, under the bucket lock.
			 */
			memcpy(pk_htab_val(h, old), value, h->value_size);
			r = 0;
		}
		goto out;
	}
	/* pend_new first: pend_old alone means a delete in progress to bucket_repair(). */
	WRITE_ONCE64(&b->pend_new, new_off | (uint64_t)extra);
	if (old)
		WRITE_ONCE64(&b->pend_old, old_off | (uint64_t)extra);
	l = ELEM(c, new_off);
	l->hash = hash;
	l->pad = 0;
	memcpy(l->key, key, h->key_size);
	memset(l->key + h->key_size, 0, h->key_rsize - h->key_size);
	if (h->percpu) {
		pcpu_write(c, h, elem_pptr(c, h, l), value, onallcpus, 1);
	} else {
		memcpy(pk_htab_val(h, l), value, h->value_size);
		memset(pk_htab_val(h, l) + h->value_size, 0, h->value_rsize - h->value_size);
	}
	WRITE_ONCE64(&l->next, b->first);
	/* commit: the new element hides the old; release: its key and value are written
	 * before it (the compiler may not sink the memcpys past a kill point either) */
	smp_store_release64(&b->first, new_off);
	if (old)
		unlink_elem(c, h, b, old_off);
	WRITE_ONCE64(&b->pend_new, 0);
	WRITE_ONCE64(&b->pend_old, 0);
	if (old)
		free_elem(c, h, old_off, extra);
	r = 0;
out:
	bucket_unlock(b);
	return r;
}

/* Unlink and free a linked element, under its bucket's lock, with the crash record. */
static void remove_elem(struct pk_htab_ctx *c, struct pk_htab *h, struct pk_htab_bucket *b, uint64_t off)
{
	WRITE_ONCE64(&b->pend_old, off);
	unlink_elem(c, h, b, off);
	if (!h->prealloc)
		pk_fetch_add64(&h->count, (uint64_t)-1);
	WRITE_ONCE64(&b->pend_old, 0);
	free_elem(c, h, off, 0);
}

int pk_htab_delete(struct pk_htab_ctx *c, struct pk_htab *h, const void *key, void *out)
{
	uint32_t hash = pk_htab_hash(h, key);
	struct pk_htab_bucket *b = bucket_of(c, h, hash);
	struct pk_htab_elem *l;
	uint64_t off = 0;
	int r = bucket_lock(c, h, b);

	if (r)
		return r;
	l = find(c, h, b, hash, key, &off);
	if (!l) {
		bucket_unlock(b);
		return -ENOENT;
	}
	if (out)
		copy_out(c, h, l, out);
	remove_elem(c, h, b, off);
	bucket_unlock(b);
	return 0;
}

int pk_htab_get_next_key(struct pk_htab_ctx *c, struct pk_htab *h, const void *key, void *next)
{
	uint32_t i = 0, hash;
	struct pk_htab_bucket *b;
	struct pk_htab_elem *l;
	int r;

	if (key) {
		hash = pk_htab_hash(h, key);
		b = bucket_of(c, h, hash);
		r = bucket_lock(c, h, b);
		if (r)
			return r;
		l = find(c, h, b, hash, key, NULL);
		if (l && l->next) {
			memcpy(next, ELEM(c, l->next)->key, h->key_size);
			bucket_unlock(b);
			return 0;
		}
		bucket_unlock(b);
		if (l)
			i = (hash & (h->n_buckets - 1)) + 1;	/* the next bucket */
		/* else: find_first_elem from bucket 0 */
	}
	for (; i < h->n_buckets; i++) {
		b = (struct pk_htab_bucket *)(c->a->base + h->buckets) + i;
		if (!READ_ONCE64(&b->first))
			continue;
		r = bucket_lock(c, h, b);
		if (r)
			return r;
		if (b->first) {
			memcpy(next, ELEM(c, b->first)->key, h->key_size);
			bucket_unlock(b);
			return 0;
		}
		bucket_unlock(b);
	}
	return -ENOENT;
}

/* One element of a batch: its key, and its value when @vp. */
static inline void copy_elem(struct pk_htab_ctx *c, struct pk_htab *h, struct pk_htab_elem *l,
			     unsigned char **kp, unsigned char **vp, uint64_t vsz)
{
	memcpy(*kp, l->key, h->key_size);
	*kp += h->key_size;
	if (vp) {
		copy_out(c, h, l, *vp);
		*vp += vsz;
	}
}

int64_t pk_htab_batch(struct pk_htab_ctx *c, struct pk_htab *h, uint32_t *cursor, void *keys,
		      void *values, uint32_t max, int del)
{
	uint64_t vsz = h->percpu ? (uint64_t)h->value_rsize * c->nr_possible : h->value_size;
	unsigned char *kp = keys, *vp = values;
	uint32_t i, total = 0;
	int r;

	for (i = *cursor; i < h->n_buckets; i++) {
		struct pk_htab_bucket *b = (struct pk_htab_bucket *)(c->a->base + h->buckets) + i;
		uint64_t off, cnt = 0, lim = chain_limit(h);

		if (!READ_ONCE64(&b->first))
			continue;
		r = bucket_lock(c, h, b);
		if (r) {
			if (total)
				break;
			return r;
		}
		for (off = b->first; off && cnt < lim; off = ELEM(c, off)->next)
			cnt++;
		if (cnt > max - total) {
			bucket_unlock(b);
			if (total == 0)
				return -ENOSPC;
			break;
		}
		if (!del) {
			/* copy the chain as counted, without unlinking */
			for (off = b->first; off && cnt; off = ELEM(c, off)->next, cnt--) {
				copy_elem(c, h, ELEM(c, off), &kp, vp ? &vp : NULL, vsz);
				total++;
			}
		}
		while (del && (off = b->first) != 0 && cnt--) {
			copy_elem(c, h, ELEM(c, off), &kp, vp ? &vp : NULL, vsz);
			total++;
			remove_elem(c, h, b, off);
		}
		bucket_unlock(b);
	}
	*cursor = i;
	return total;
}

/* ---- check, repair, free ---- */

static int elem_ok(struct pk_htab_ctx *c, struct pk_htab *h, uint64_t off)
{
	if (off % 8)
		return 0;
	if (h->prealloc)
		return off >= h->elems && off < h->elems + h->nr_elems * h->elem_size &&
		       (off - h->elems) % h->elem_size == 0;
	return off < c->a->size && pk_ma_of_obj(c->a, off) == h->ma;
}

int64_t pk_htab_check(struct pk_htab_ctx *c, struct pk_htab *h, uint64_t *leaked, char *msg,
		      size_t msglen)
{
	struct pk_htab_bucket *bk = (struct pk_htab_bucket *)(c->a->base + h->buckets);
	uint64_t total = 0, lim = chain_limit(h);
	uint8_t *seen = NULL;
	uint32_t i, locked = 0;
	int64_t ret = 0;

	*leaked = 0;
	msg[0] = 0;
	for (i = 0; i < h->n_buckets; i++, locked++) {
		int r = pk_lock_acquire(&bk[i].lock, -1);

		if (r < 0) {
			snprintf(msg, msglen, "bucket %u: lock error %d", i, r);
			ret = r;
			goto unlock;
		}
		if (r == PK_LOCK_RECOVERED)
			bucket_repair(c, h, &bk[i]);
	}
	if (h->prealloc) {
		seen = calloc(h->nr_elems ? h->nr_elems : 1, 1);
		if (!seen) {
			ret = -ENOMEM;
			goto unlock;
		}
	}
	for (i = 0; i < h->n_buckets; i++) {
		uint64_t off = bk[i].first, n = 0;

		while (off) {
			struct pk_htab_elem *l;
			uint64_t o2;

			if (!elem_ok(c, h, off) || ++n > lim) {
				snprintf(msg, msglen, "bucket %u: element %#llx is not one of the map's%s", i,
					 (unsigned long long)off, n > lim ? " (cycle)" : "");
				ret = -EUCLEAN;
				goto unlock;
			}
			l = ELEM(c, off);
			if (l->hash != pk_htab_hash(h, l->key) || (l->hash & (h->n_buckets - 1)) != i) {
				snprintf(msg, msglen, "bucket %u: element %#llx has a wrong hash", i,
					 (unsigned long long)off);
				ret = -EUCLEAN;
				goto unlock;
			}
			for (o2 = l->next; o2 && elem_ok(c, h, o2); o2 = ELEM(c, o2)->next)
				if (!memcmp(ELEM(c, o2)->key, l->key, h->key_size)) {
					snprintf(msg, msglen, "bucket %u: a key is in the map twice", i);
					ret = -EUCLEAN;
					goto unlock;
				}
			if (seen)
				seen[(off - h->elems) / h->elem_size] = 1;
			total++;
			off = l->next;
		}
	}
	if (h->prealloc) {
		/* The freelists: nothing pops or pushes while every bucket is locked. */
		struct pk_freelist *fls[2] = { c->fl, c->fl_extra };
		uint64_t e, nfree = 0, xfree = 0;
		int k;

		for (k = 0; k < 2; k++) {
			struct pk_freelist *s = fls[k];
			uint32_t cpu;

			for (cpu = 0; cpu <= s->nr_cpu_ids; cpu++) {
				struct pk_fl_head *hd = cpu < s->nr_cpu_ids ? &s->heads[cpu] : &s->extralist;
				uint64_t node = READ_ONCE64(&hd->first), n = 0;

				while (node && n++ <= h->nr_elems) {
					if (!elem_ok(c, h, node))
						break;
					seen[(node - h->elems) / h->elem_size] = 1;
					nfree++;
					xfree += k;	/* found on fl_extra */
					node = READ_ONCE64(&ELEM(c, node)->next);
				}
			}
		}
		/* Give what a killed process lost back: fl_extra up to one per CPU, then fl. */
		/* (the spares counted by the walk, not by the heads' counts: a dead pusher
		 * may have left a count behind its list) */
		for (e = 0; e < h->nr_elems; e++) {
			uint64_t off = h->elems + e * h->elem_size;
			int spare;

			if (seen[e])
				continue;
			(*leaked)++;
			spare = xfree < h->nr_elems - h->max_entries;
			pk_fl_push(c->a, spare ? c->fl_extra : c->fl, c->cpu, off, 0);
			xfree += spare;
		}
	} else {
		WRITE_ONCE64(&h->count, total);
	}
	WRITE_ONCE64(&h->recount, 0);
	ret = (int64_t)total;
unlock:
	free(seen);
	for (i = 0; i < locked; i++)
		pk_lock_release(&bk[i].lock);
	return ret;
}

void pk_htab_free_all(struct pk_htab_ctx *c, struct pk_htab *h)
{
	struct pk_htab_bucket *bk = (struct pk_htab_bucket *)(c->a->base + h->buckets);
	uint32_t i;

	if (h->prealloc)
		return;
	for (i = 0; i < h->n_buckets; i++) {
		uint64_t off = bk[i].first, n = 0, lim = chain_limit(h);

		bk[i].first = 0;
		while (off && n++ < lim && elem_ok(c, h, off)) {
			uint64_t next = ELEM(c, off)->next;

			if (h->percpu) {
				uint64_t obj;

				memcpy(&obj, pk_htab_val(h, ELEM(c, off)), 8);
				pk_ma_free(c->pe, c->pcpu_ma, c->cpu, obj, 0, 1);
			}
			pk_ma_free(c->e, c->ma, c->cpu, off, 0, 1);
			off = next;
		}
	}
	WRITE_ONCE64(&h->count, 0);
}
