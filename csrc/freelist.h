/*
 * freelist.h - the BPF per-CPU freelist (kernel/bpf/percpu_freelist.{c,h}) in
 * shared memory, as of v5.10-v6.14: a raw-spinlocked head per possible CPU,
 * the extra list, trylock-only NMI paths, the empty-head skip of 54a9c3a42d92
 * and the even populate split of 4b45cd81f737.
 *
 *  struct pk_freelist (kzalloc'd, cache-line aligned parts)
 *  +--------------------------------------------------+
 *  | magic nr_cpu_ids flags | area: base size elem_sz  |  line 0
 *  | extralist: lock first count                      |  line 1
 *  | heads[nr_cpu_ids]: lock first count              |  one line per CPU id
 *  | robust bitmap (flag ROBUST): 1 bit per element   |
 *  +--------------------------------------------------+
 *
 * Nodes are offsets of elements of a caller-owned area; while an element is
 * free its first 8 bytes are the offset of the next free element (0 = end),
 * exactly the kernel's struct pcpu_freelist_node.  Pop order: this CPU, then
 * the following possible CPUs in wrap order (for_each_cpu_wrap), skipping a
 * head that reads empty before locking, then the extra list.  Push: this
 * CPU's head.  In NMI context nothing spins (see pk_fl_push/pk_fl_pop).
 *
 * Synchronization:
 *	head.first, head.count, the next links of the nodes on a list
 *			the head's lock (READ_ONCE of first without it, as the kernel)
 *	robust bitmap	atomic test-and-set / clear, before the push / after the pop
 *	area, flags	written once at init (populate fills an empty area)
 *
 * Crash: a lock taken over from a dead holder (PK_LOCK_RECOVERED) triggers a
 * recount of that list (count is the only field not committed by the single
 * store to first).  A node the dead process was pushing or had just popped was
 * its own; every other node stays reachable.
 */
#ifndef PK_FREELIST_H
#define PK_FREELIST_H

#include <errno.h>
#include <stdint.h>

#include "compat.h"
#include "lock.h"

#define PK_FL_MAGIC	0x4c46504350ull	/* "PCPFL" */
#define PK_FL_ROBUST	1u		/* per-element bitmap: refuse double push */

struct pk_fl_head {
	struct pk_lock lock;
	uint64_t first;		/* offset of the first free node, 0 = empty */
	uint64_t count;		/* nodes on this list, under lock */
	uint64_t pad[5];
} ____cacheline_aligned;

struct pk_freelist {
	uint64_t magic;
	uint32_t nr_cpu_ids;
	uint32_t flags;
	uint64_t area_base;	/* element area: [base, base + nr_elems * elem_size) */
	uint64_t elem_size;	/* 0 until populate() or set_area() */
	uint64_t nr_elems;
	uint64_t bitmap_off;	/* ROBUST: offset of the bitmap inside the arena */
	uint64_t pad[2];
	struct pk_fl_head extralist;
	struct pk_fl_head heads[];
};

struct pk_arena;

uint64_t pk_fl_size(uint32_t nr_cpu_ids);
/*
 * 0, or -EINVAL for a node outside the data pages of the arena (never the
 * header, registry, RCU block or page map: [arena_lo, arena_size)), outside
 * the element area once there is one, or misaligned.
 */
static inline int pk_fl_check_node(uint64_t arena_lo, uint64_t arena_size, const struct pk_freelist *s,
				   uint64_t node)
{
	if (node < arena_lo || node % 8 || node >= arena_size || arena_size - node < 8)
		return -EINVAL;
	if (s->elem_size) {
		uint64_t rel = node - s->area_base, es = s->elem_size;

		if (node < s->area_base || rel >= s->nr_elems * es)
			return -EINVAL;
		/* Element sizes are usually powers of two: a mask, not a division. */
		if ((es & (es - 1)) == 0 ? (rel & (es - 1)) : (rel % es))
			return -EINVAL;
	}
	return 0;
}

/*
 * Push/pop on behalf of @cpu (a possible CPU of the arena).
 * Return: push 0 / -EINVAL (bad node) / -EEXIST (robust: already free);
 *	   pop the node offset, or 0 when nothing could be taken.
 */
int pk_fl_push(struct pk_arena *a, struct pk_freelist *s, uint32_t cpu, uint64_t node, int nmi);
uint64_t pk_fl_pop(struct pk_arena *a, struct pk_freelist *s, uint32_t cpu, int nmi);
/*
 * Push nodes[0..n) as n successive pushes would (normal context: one lock of
 * @cpu's head).  The whole batch is checked first: on an error nothing is pushed.
 */
int pk_fl_push_bulk(struct pk_arena *a, struct pk_freelist *s, uint32_t cpu,
		    const uint64_t *nodes, uint64_t n, int nmi);
/* Pop up to n nodes in the order n successive pops would return them. */
uint64_t pk_fl_pop_bulk(struct pk_arena *a, struct pk_freelist *s, uint32_t cpu, int nmi,
			uint64_t *out, uint64_t n);
int pk_fl_populate(struct pk_arena *a, struct pk_freelist *s, uint64_t buf, uint64_t elem_size,
		   uint64_t nr_elems);
/* Walk every list: -EUCLEAN with a message on a cycle, duplicate or stray node. */
int pk_fl_check(struct pk_arena *a, struct pk_freelist *s, uint64_t *total, char *msg,
		size_t msglen);

#endif /* PK_FREELIST_H */
