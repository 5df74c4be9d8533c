/*
 * llist.h - lock-less NULL-terminated singly linked lists on arena offsets.
 *
 * Mirrors include/linux/llist.h.  A head is one 64-bit word holding the
 * offset of the first node (0 = empty); a node's first 8 bytes hold the
 * offset of the next one, exactly as a free object's first word links it in
 * the kernel's freelists.
 *
 * Synchronization (as the kernel's):
 *	llist_add, llist_add_batch	any number of producers, lock-free
 *	llist_del_all			any number, lock-free (one xchg)
 *	__llist_del_first		one consumer at a time (ABA otherwise), or
 *					with every other deleter excluded by a lock
 */
#ifndef PK_LLIST_H
#define PK_LLIST_H

#include <stdint.h>

#include "atomic.h"

static inline uint64_t *pk_node(char *base, uint64_t off)
{
	return (uint64_t *)(base + off);
}

/* Returns 1 if the list was empty before (the kernel's llist_add() result). */
static inline int pk_llist_add_batch(char *base, uint64_t head, uint64_t first, uint64_t last)
{
	uint64_t old = READ_ONCE64(base + head);

	do {
		WRITE_ONCE64(pk_node(base, last), old);
	} while (!atomic_compare_exchange_weak(PK_A64(base + head), &old, first));
	return old == 0;
}

static inline uint64_t pk_llist_del_all(char *base, uint64_t head)
{
	return pk_xchg64(base + head, 0);
}

static inline uint64_t __pk_llist_del_first(char *base, uint64_t head)
{
	uint64_t first = READ_ONCE64(base + head), next;

	do {
		if (!first)
			return 0;
		next = READ_ONCE64(pk_node(base, first));
	} while (!atomic_compare_exchange_weak(PK_A64(base + head), &first, next));
	return first;
}

#endif /* PK_LLIST_H */
