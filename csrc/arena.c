/*
 * arena.c - formatting and checking the arena, the page allocator, kmalloc.
 * The layout, the rules and the crash story are in arena.h.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "arena.h"
#include "atomic.h"
#include "pcpu.h"
#include "rcu.h"

#define BITS_PER_WORD 64

static inline uint64_t *pk_bitmap(const struct pk_arena *a)
{
	return (uint64_t *)(a->base + pk_hdr(a)->bitmap_off);
}

static inline int test_bit(const uint64_t *bm, uint32_t i)
{
	return (bm[i / BITS_PER_WORD] >> (i % BITS_PER_WORD)) & 1;
}

static inline void set_bit(uint64_t *bm, uint32_t i)
{
	bm[i / BITS_PER_WORD] |= 1ull << (i % BITS_PER_WORD);
}

static inline void clear_bit(uint64_t *bm, uint32_t i)
{
	bm[i / BITS_PER_WORD] &= ~(1ull << (i % BITS_PER_WORD));
}

static int populate(struct pk_arena *a, uint64_t off, uint64_t len)
{
	if (fallocate(a->fd, 0, (off_t)off, (off_t)len) < 0)
		return -errno;
	return 0;
}

static void punch(struct pk_arena *a, uint64_t off, uint64_t len)
{
	/* Failure leaves the pages populated: a leak of backing, not of data. */
	(void)fallocate(a->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			(off_t)off, (off_t)len);
}

int pk_arena_format(struct pk_arena *a, uint32_t nr_cpu_ids, const uint8_t *possible,
		    const uint8_t *online, uint32_t mask_len, int32_t owner,
		    const uint32_t *classes, uint32_t nr_classes, uint32_t registry_max,
		    uint32_t registry_entry, uint32_t flags, uint32_t rcu_slots,
		    const uint32_t *pcpu_sizes)
{
	struct pk_header *h = pk_hdr(a);
	uint64_t nr_pages = a->size >> PK_PAGE_SHIFT;
	uint64_t off, meta;
	struct timespec ts;
	uint32_t i;
	int err;

	BUILD_BUG_ON(sizeof(struct pk_header) > PK_PAGE_SIZE);
	if (a->size % PK_PAGE_SIZE || nr_pages > UINT32_MAX || nr_pages < 8)
		return -EINVAL;
	if (nr_cpu_ids == 0 || nr_cpu_ids > PK_MAX_CPUS || mask_len > PK_MAX_CPUS / 8)
		return -EINVAL;
	if (nr_classes == 0 || nr_classes > PK_MAX_CLASSES)
		return -EINVAL;
	for (i = 0; i < nr_cpu_ids && i / 8 < mask_len; i++)
		if ((possible[i / 8] >> (i % 8)) & 1)
			break;
	if (i == nr_cpu_ids || i / 8 >= mask_len)
		return -EINVAL;	/* no possible CPU: every per-CPU walk would be empty */
	for (i = 0; i < nr_classes; i++) {
		if (classes[i] < PK_MIN_OBJ || classes[i] > PK_PAGE_SIZE || classes[i] % 8 ||
		    (i && classes[i] <= classes[i - 1]))
			return -EINVAL;
	}
	if (READ_ONCE64(&h->magic) != 0)
		return -EEXIST;

	off = PK_PAGE_SIZE;
	h->registry_off = off;
	off += pk_round_up((uint64_t)registry_max * registry_entry, PK_PAGE_SIZE);
	if (rcu_slots == 0 || rcu_slots > 65536)
		return -EINVAL;
	h->rcu_off = off;
	h->rcu_nslots = rcu_slots;
	off += pk_round_up(pk_rcu_block_size(rcu_slots), PK_PAGE_SIZE);
	h->pcpu_off = off;
	off += pk_round_up(pk_pcpu_block_size(nr_cpu_ids), PK_PAGE_SIZE);
	h->bitmap_off = off;
	off += pk_round_up(pk_round_up(nr_pages, 64) / 8, PK_PAGE_SIZE);
	h->desc_off = off;
	off += pk_round_up(nr_pages * sizeof(struct pk_page_desc), PK_PAGE_SIZE);
	meta = off >> PK_PAGE_SHIFT;
	if (meta + 1 >= nr_pages)
		return -ENOMEM;
	err = populate(a, 0, off);
	if (err)
		return err;
	{
		uint8_t mask[PK_MAX_CPUS / 8] = { 0 };

		memcpy(mask, possible, mask_len);
		err = pk_pcpu_format((struct pk_pcpu *)(a->base + h->pcpu_off), nr_cpu_ids, mask,
				     pcpu_sizes[0], pcpu_sizes[1], pcpu_sizes[2]);
		if (err)
			return err;
	}

	h->version = PK_VERSION;
	h->page_size = PK_PAGE_SIZE;
	h->size = a->size;
	h->nr_pages = (uint32_t)nr_pages;
	h->meta_pages = (uint32_t)meta;
	h->nr_cpu_ids = nr_cpu_ids;
	h->owner_pid = owner;
	clock_gettime(CLOCK_REALTIME, &ts);
	h->created_ns = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
	h->registry_max = registry_max;
	h->registry_entry = registry_entry;
	memcpy(h->possible, possible, mask_len);
	memcpy(h->online, online, mask_len);
	h->nr_classes = nr_classes;
	h->flags = flags;
	for (i = 0; i < nr_classes; i++) {
		h->classes[i].size = classes[i];
		h->classes[i].nobjs = PK_PAGE_SIZE / classes[i];
	}
	for (i = 0; i < meta; i++) {
		pk_desc(a, i)->type = PK_PG_META;
		set_bit(pk_bitmap(a), i);
	}
	h->hint = (uint32_t)meta;
	pk_rcu_init((struct pk_rcu_state *)(a->base + h->rcu_off), rcu_slots);
	/* Pairs with the acquire load in pk_arena_validate(): all of the above first. */
	smp_store_release64(&h->magic, PK_MAGIC);
	return 0;
}

int pk_arena_validate(const struct pk_arena *a)
{
	const struct pk_header *h = pk_hdr(a);

	if (a->size < PK_PAGE_SIZE)
		return -EINVAL;
	if (smp_load_acquire64(&h->magic) != PK_MAGIC)
		return -EINVAL;
	if (h->version != PK_VERSION || h->page_size != PK_PAGE_SIZE)
		return -EPROTO;
	if (h->size != a->size || (uint64_t)h->nr_pages << PK_PAGE_SHIFT != a->size ||
	    h->meta_pages >= h->nr_pages || h->nr_classes > PK_MAX_CLASSES ||
	    h->nr_cpu_ids == 0 || h->nr_cpu_ids > PK_MAX_CPUS ||
	    h->desc_off + (uint64_t)h->nr_pages * 16 > a->size ||
	    h->rcu_off < PK_PAGE_SIZE || h->rcu_nslots == 0 ||
	    h->rcu_off + pk_rcu_block_size(h->rcu_nslots) > (uint64_t)h->meta_pages << PK_PAGE_SHIFT ||
	    h->pcpu_off < PK_PAGE_SIZE ||
	    h->pcpu_off + pk_pcpu_block_size(h->nr_cpu_ids) > (uint64_t)h->meta_pages << PK_PAGE_SHIFT)
		return -EUCLEAN;
	return 0;
}

/* ---- page allocator ---------------------------------------------------- */

/* Rebuild the bitmap and counters from the descriptors (the commit points). */
static void rebuild_pages(struct pk_arena *a)
{
	struct pk_header *h = pk_hdr(a);
	uint64_t *bm = pk_bitmap(a);
	uint32_t pg, j, n, used = 0, run = 0;

	for (pg = h->meta_pages; pg < h->nr_pages; pg++)
		clear_bit(bm, pg);
	for (pg = h->meta_pages; pg < h->nr_pages; pg++) {
		struct pk_page_desc *d = pk_desc(a, pg);

		if (d->type == PK_PG_HEAD) {
			n = d->next;
			if (n == 0 || n > h->nr_pages - pg)	/* no 32-bit wrap */
				n = 1;
			for (j = 0; j < n; j++)
				set_bit(bm, pg + j);
			used += n;
			pg += n - 1;
		} else if (d->type == PK_PG_SLAB) {
			set_bit(bm, pg);
			used++;
		} else if (d->type != PK_PG_FREE) {
			d->type = PK_PG_FREE;	/* an orphaned tail of a freed block */
		}
	}
	/* Give back the backing of every free page a dead owner left populated. */
	for (pg = h->meta_pages; pg <= h->nr_pages; pg++) {
		if (pg < h->nr_pages && !test_bit(bm, pg)) {
			run++;
			continue;
		}
		if (run)
			punch(a, (uint64_t)(pg - run) << PK_PAGE_SHIFT, (uint64_t)run << PK_PAGE_SHIFT);
		run = 0;
	}
	h->nr_used_pages = used;
	h->generation++;
}

int pk_page_lock(struct pk_arena *a)
{
	int r = pk_lock_acquire(&pk_hdr(a)->page_lock, -1);

	if (unlikely(r == PK_LOCK_RECOVERED))
		rebuild_pages(a);
	return r;
}

void pk_page_unlock(struct pk_arena *a)
{
	pk_lock_release(&pk_hdr(a)->page_lock);
}

static int64_t find_zero_run(const uint64_t *bm, uint32_t start, uint32_t end, uint32_t n)
{
	uint32_t i = start, j;

	while (i + n <= end) {
		if (i % BITS_PER_WORD == 0 && bm[i / BITS_PER_WORD] == ~0ull) {
			i += BITS_PER_WORD;
			continue;
		}
		if (test_bit(bm, i)) {
			i++;
			continue;
		}
		for (j = i; j < i + n && !test_bit(bm, j); j++)
			;
		if (j == i + n)
			return i;
		i = j + 1;
	}
	return -1;
}

int64_t pk_alloc_pages(struct pk_arena *a, uint32_t n, int type, int cls)
{
	return pk_alloc_pages_flags(a, n, type, cls, 0);
}

int64_t pk_alloc_pages_flags(struct pk_arena *a, uint32_t n, int type, int cls, unsigned flags)
{
	struct pk_header *h = pk_hdr(a);
	uint64_t *bm = pk_bitmap(a);
	int64_t pg;
	uint32_t j;
	int err;

	if (n == 0 || n > h->nr_pages - h->meta_pages)
		return -EINVAL;
	pk_page_lock(a);
	pg = find_zero_run(bm, h->hint, h->nr_pages, n);
	if (pg < 0)
		pg = find_zero_run(bm, h->meta_pages, h->nr_pages, n);
	if (pg < 0) {
		pk_page_unlock(a);
		return -ENOMEM;
	}
	err = flags & PK_AP_NOPOPULATE ? 0 :
		populate(a, (uint64_t)pg << PK_PAGE_SHIFT, (uint64_t)n << PK_PAGE_SHIFT);
	if (err) {
		pk_page_unlock(a);
		return err == -ENOSPC ? -ENOMEM : err;
	}
	for (j = 1; j < n; j++) {
		struct pk_page_desc *t = pk_desc(a, (uint32_t)pg + j);

		memset(t, 0, sizeof(*t));
		t->next = (uint32_t)pg;
		t->type = PK_PG_TAIL;
	}
	{
		struct pk_page_desc *d = pk_desc(a, (uint32_t)pg);
		struct pk_page_desc nd = { .cls = (uint8_t)cls };

		nd.next = type == PK_PG_HEAD ? n : 0;
		memcpy(d, &nd, sizeof(nd));
		/* The type byte is the commit point (see rebuild_pages()). */
		__atomic_store_n(&d->type, (uint8_t)type, __ATOMIC_RELEASE);
	}
	for (j = 0; j < n; j++)
		set_bit(bm, (uint32_t)pg + j);
	h->nr_used_pages += n;
	h->nr_page_allocs++;
	h->hint = (uint32_t)pg + n < h->nr_pages ? (uint32_t)pg + n : h->meta_pages;
	pk_page_unlock(a);
	return pg << PK_PAGE_SHIFT;
}

/* Free a HEAD block or (from the slab, under its class lock) a SLAB page. */
static int free_pages_typed(struct pk_arena *a, uint64_t off, int type)
{
	struct pk_header *h = pk_hdr(a);
	uint64_t pg = off >> PK_PAGE_SHIFT;
	struct pk_page_desc *d;
	uint32_t n, j;

	if (off % PK_PAGE_SIZE || pg < h->meta_pages || pg >= h->nr_pages)
		return -EINVAL;
	pk_page_lock(a);
	d = pk_desc(a, (uint32_t)pg);
	if (d->type != type) {
		pk_page_unlock(a);
		return -EINVAL;
	}
	n = type == PK_PG_HEAD ? d->next : 1;
	__atomic_store_n(&d->type, (uint8_t)PK_PG_FREE, __ATOMIC_RELEASE);
	for (j = 1; j < n; j++)
		pk_desc(a, (uint32_t)pg + j)->type = PK_PG_FREE;
	/* Punch before clearing the bits: nobody may reuse a page being punched. */
	punch(a, off, (uint64_t)n << PK_PAGE_SHIFT);
	for (j = 0; j < n; j++)
		clear_bit(pk_bitmap(a), (uint32_t)pg + j);
	h->nr_used_pages -= n;
	h->nr_page_frees++;
	pk_page_unlock(a);
	return 0;
}

int pk_free_pages(struct pk_arena *a, uint64_t off)
{
	return free_pages_typed(a, off, PK_PG_HEAD);
}

/* ---- kmalloc ----------------------------------------------------------- */

static inline char *obj_addr(const struct pk_arena *a, uint32_t pg, uint32_t idx, uint32_t size)
{
	return a->base + ((uint64_t)pg << PK_PAGE_SHIFT) + (uint64_t)idx * size;
}

static void partial_add(struct pk_arena *a, struct pk_slab_class *c, uint32_t pg)
{
	struct pk_page_desc *d = pk_desc(a, pg);

	d->prev = 0;
	d->next = c->partial;
	if (c->partial)
		pk_desc(a, c->partial)->prev = pg;
	c->partial = pg;
}

static void partial_del(struct pk_arena *a, struct pk_slab_class *c, uint32_t pg)
{
	struct pk_page_desc *d = pk_desc(a, pg);

	if (d->prev)
		pk_desc(a, d->prev)->next = d->next;
	else
		c->partial = d->next;
	if (d->next)
		pk_desc(a, d->next)->prev = d->prev;
	d->next = d->prev = 0;
}

/* Count a slab page's free chain; -1 if it is not a proper chain. */
static int chain_count(const struct pk_arena *a, uint32_t pg, const struct pk_page_desc *d,
		       uint32_t size, uint32_t nobjs)
{
	uint32_t idx1 = d->free_head, n = 0;

	if (d->bump > nobjs)
		return -1;
	while (idx1) {
		if (idx1 > d->bump || ++n > d->bump)
			return -1;
		idx1 = *(uint32_t *)obj_addr(a, pg, idx1 - 1, size);
	}
	return (int)n;
}

/* Rebuild one class from its slab pages after its lock owner died. */
static void rebuild_class(struct pk_arena *a, int ci)
{
	struct pk_header *h = pk_hdr(a);
	struct pk_slab_class *c = &h->classes[ci];
	uint32_t pg;

	c->partial = 0;
	c->nr_slabs = c->nr_empty = 0;
	c->nr_inuse = 0;
	for (pg = h->meta_pages; pg < h->nr_pages; pg++) {
		struct pk_page_desc *d = pk_desc(a, pg);
		int nfree;

		if (d->type != PK_PG_SLAB || d->cls != ci)
			continue;
		nfree = chain_count(a, pg, d, c->size, c->nobjs);
		if (nfree < 0) {
			/* Keep the objects in use; the broken free chain is lost. */
			d->free_head = 0;
			nfree = 0;
			if (d->bump > c->nobjs)
				d->bump = (uint16_t)c->nobjs;
		}
		d->inuse = (uint16_t)(d->bump - nfree);
		c->nr_slabs++;
		c->nr_inuse += d->inuse;
		if (d->inuse == 0)
			c->nr_empty++;
		if (d->free_head || d->bump < c->nobjs)
			partial_add(a, c, pg);
		else
			d->next = d->prev = 0;
	}
	h->generation++;
}

int pk_class_lock(struct pk_arena *a, int ci)
{
	int r = pk_lock_acquire(&pk_hdr(a)->classes[ci].lock, -1);

	if (unlikely(r == PK_LOCK_RECOVERED))
		rebuild_class(a, ci);
	return r;
}

void pk_class_unlock(struct pk_arena *a, int ci)
{
	pk_lock_release(&pk_hdr(a)->classes[ci].lock);
}

int pk_kmalloc_class(const struct pk_arena *a, uint64_t size)
{
	const struct pk_header *h = pk_hdr(a);
	uint32_t i;

	for (i = 0; i < h->nr_classes; i++)
		if (size <= h->classes[i].size)
			return (int)i;
	return -1;
}

int64_t pk_kmalloc(struct pk_arena *a, uint64_t size, int zero)
{
	struct pk_header *h = pk_hdr(a);
	struct pk_slab_class *c;
	struct pk_page_desc *d;
	uint32_t pg, idx;
	char *obj;
	int ci;

	if (size == 0 || size > a->size)
		return -EINVAL;
	ci = pk_kmalloc_class(a, size);
	if (ci < 0) {
		uint64_t n = (size + PK_PAGE_SIZE - 1) >> PK_PAGE_SHIFT;

		if (n > UINT32_MAX)
			return -EINVAL;
		/* Fresh pages read as zero: they were punched or never touched. */
		return pk_alloc_pages(a, (uint32_t)n, PK_PG_HEAD, 0);
	}
	c = &h->classes[ci];
	pk_class_lock(a, ci);
	pg = c->partial;
	if (!pg) {
		int64_t off = pk_alloc_pages(a, 1, PK_PG_SLAB, ci);

		if (off < 0) {
			pk_class_unlock(a, ci);
			return off;
		}
		pg = (uint32_t)(off >> PK_PAGE_SHIFT);
		c->nr_slabs++;
		c->nr_empty++;
		partial_add(a, c, pg);
	}
	d = pk_desc(a, pg);
	if (d->free_head) {
		idx = d->free_head - 1u;
		obj = obj_addr(a, pg, idx, c->size);
		d->free_head = (uint16_t)*(uint32_t *)obj;
	} else {
		idx = d->bump++;
		obj = obj_addr(a, pg, idx, c->size);
	}
	((uint32_t *)obj)[1] = 0;	/* no longer PK_FREE_MAGIC */
	if (d->inuse++ == 0)
		c->nr_empty--;
	if (!d->free_head && d->bump == c->nobjs)
		partial_del(a, c, pg);
	c->nr_inuse++;
	c->nr_alloc++;
	pk_class_unlock(a, ci);
	if (zero)
		memset(obj, 0, c->size);
	return obj - a->base;
}

/* Locate the slab object or page block at @off; returns its class or -2 for pages. */
static int classify(const struct pk_arena *a, uint64_t off, uint32_t *pg_out)
{
	const struct pk_header *h = pk_hdr(a);
	uint64_t pg = off >> PK_PAGE_SHIFT;
	const struct pk_page_desc *d;
	uint8_t type;

	if (off >= a->size || pg < h->meta_pages)
		return -EINVAL;
	d = pk_desc(a, (uint32_t)pg);
	type = __atomic_load_n(&d->type, __ATOMIC_ACQUIRE);
	*pg_out = (uint32_t)pg;
	if (type == PK_PG_HEAD)
		return off % PK_PAGE_SIZE ? -EINVAL : -2;
	if (type == PK_PG_SLAB && d->cls < h->nr_classes)
		return d->cls;
	return -EINVAL;
}

int pk_kfree(struct pk_arena *a, uint64_t off)
{
	struct pk_header *h = pk_hdr(a);
	struct pk_slab_class *c;
	struct pk_page_desc *d;
	uint32_t pg, rel, idx, was_full;
	uint32_t *obj;
	int ci = classify(a, off, &pg);

	if (ci == -2)
		return pk_free_pages(a, off);
	if (ci < 0)
		return ci;
	c = &h->classes[ci];
	pk_class_lock(a, ci);
	d = pk_desc(a, pg);
	rel = (uint32_t)(off % PK_PAGE_SIZE);
	if (d->type != PK_PG_SLAB || d->cls != ci || rel % c->size || rel / c->size >= d->bump)
		goto einval;
	idx = rel / c->size;
	obj = (uint32_t *)(a->base + off);
	if (obj[1] == PK_FREE_MAGIC) {
		uint32_t i1 = d->free_head, n = 0;

		while (i1 && n++ <= d->bump) {
			if (i1 == idx + 1)
				goto einval;	/* double free */
			i1 = *(uint32_t *)obj_addr(a, pg, i1 - 1, c->size);
		}
	}
	was_full = !d->free_head && d->bump == c->nobjs;
	obj[0] = d->free_head;
	obj[1] = PK_FREE_MAGIC;
	d->free_head = (uint16_t)(idx + 1);	/* commit */
	d->inuse--;
	c->nr_inuse--;
	c->nr_free++;
	if (was_full)
		partial_add(a, c, pg);
	if (d->inuse == 0 && ++c->nr_empty > PK_SLAB_KEEP_EMPTY) {
		partial_del(a, c, pg);
		c->nr_slabs--;
		c->nr_empty--;
		free_pages_typed(a, (uint64_t)pg << PK_PAGE_SHIFT, PK_PG_SLAB);
	}
	pk_class_unlock(a, ci);
	return 0;
einval:
	pk_class_unlock(a, ci);
	return -EINVAL;
}

int64_t pk_ksize(const struct pk_arena *a, uint64_t off)
{
	uint32_t pg;
	int ci = classify(a, off, &pg);

	if (ci == -2)
		return (int64_t)pk_desc(a, pg)->next << PK_PAGE_SHIFT;
	if (ci < 0)
		return ci;
	if (off % PK_PAGE_SIZE % pk_hdr(a)->classes[ci].size)
		return -EINVAL;
	return pk_hdr(a)->classes[ci].size;
}

/* ---- check ------------------------------------------------------------- */

#define FAIL(...) do { snprintf(msg, msglen, __VA_ARGS__); err = -EUCLEAN; goto out; } while (0)

int pk_arena_check(struct pk_arena *a, char *msg, size_t msglen)
{
	struct pk_header *h = pk_hdr(a);
	uint64_t *bm = pk_bitmap(a);
	uint64_t inuse[PK_MAX_CLASSES] = { 0 };
	uint32_t slabs[PK_MAX_CLASSES] = { 0 }, empty[PK_MAX_CLASSES] = { 0 };
	uint32_t pg, j, used = 0, ci;
	int err = 0;

	msg[0] = '\0';
	for (ci = 0; ci < h->nr_classes; ci++)
		pk_class_lock(a, (int)ci);
	pk_page_lock(a);
	for (pg = 0; pg < h->nr_pages; pg++) {
		struct pk_page_desc *d = pk_desc(a, pg);

		if (pg < h->meta_pages) {
			if (d->type != PK_PG_META || !test_bit(bm, pg))
				FAIL("meta page %u not marked", pg);
			continue;
		}
		switch (d->type) {
		case PK_PG_FREE:
			if (test_bit(bm, pg))
				FAIL("free page %u marked in the bitmap", pg);
			break;
		case PK_PG_HEAD:
			if (d->next == 0 || d->next > h->nr_pages - pg)
				FAIL("page %u: block of %u pages out of range", pg, d->next);
			for (j = 0; j < d->next; j++) {
				if (!test_bit(bm, pg + j))
					FAIL("page %u of a block not marked", pg + j);
				if (j && (pk_desc(a, pg + j)->type != PK_PG_TAIL ||
					  pk_desc(a, pg + j)->next != pg))
					FAIL("page %u: bad tail of block %u", pg + j, pg);
			}
			used += d->next;
			pg += d->next - 1;
			break;
		case PK_PG_SLAB: {
			struct pk_slab_class *c;
			int nfree;

			if (d->cls >= h->nr_classes)
				FAIL("slab page %u: class %u", pg, d->cls);
			c = &h->classes[d->cls];
			if (!test_bit(bm, pg))
				FAIL("slab page %u not marked", pg);
			nfree = chain_count(a, pg, d, c->size, c->nobjs);
			if (nfree < 0)
				FAIL("slab page %u: broken free chain", pg);
			if (d->inuse != d->bump - nfree)
				FAIL("slab page %u: inuse %u, bump %u, free %d", pg, d->inuse,
				     d->bump, nfree);
			inuse[d->cls] += d->inuse;
			slabs[d->cls]++;
			empty[d->cls] += d->inuse == 0;
			used++;
			break;
		}
		default:
			FAIL("page %u: stray type %u", pg, d->type);
		}
	}
	if (used != h->nr_used_pages)
		FAIL("used pages %u, counted %u", h->nr_used_pages, used);
	for (ci = 0; ci < h->nr_classes; ci++) {
		struct pk_slab_class *c = &h->classes[ci];
		uint32_t p = c->partial, prev = 0, n = 0;

		if (c->nr_inuse != inuse[ci] || c->nr_slabs != slabs[ci] || c->nr_empty != empty[ci])
			FAIL("class %u: counters (%llu, %u, %u) vs pages (%llu, %u, %u)", c->size,
			     (unsigned long long)c->nr_inuse, c->nr_slabs, c->nr_empty,
			     (unsigned long long)inuse[ci], slabs[ci], empty[ci]);
		while (p) {
			struct pk_page_desc *d = pk_desc(a, p);

			if (p >= h->nr_pages || d->type != PK_PG_SLAB || d->cls != ci ||
			    d->prev != prev || ++n > slabs[ci])
				FAIL("class %u: broken partial list at page %u", c->size, p);
			if (!d->free_head && d->bump == c->nobjs)
				FAIL("class %u: full page %u on the partial list", c->size, p);
			prev = p;
			p = d->next;
		}
	}
out:
	pk_page_unlock(a);
	for (ci = h->nr_classes; ci-- > 0;)
		pk_class_unlock(a, (int)ci);
	return err;
}
