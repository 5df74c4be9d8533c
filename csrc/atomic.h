/*
 * atomic.h - C11 <stdatomic.h> under the kernel's names.
 *
 * Every shared word of the arena is accessed through these helpers, never
 * with plain loads and stores, so that a reader in another process sees whole
 * values (see reference/peers.md: struct.pack_into tears an 8-byte store).
 * The arena is plain memory shared by mmap; the words are cast to _Atomic
 * types, which is valid for lock-free sizes (4 and 8 bytes) on every target
 * gcc supports for this project.
 *
 * Memory orders: the helpers named like the kernel's full-barrier operations
 * (cmpxchg, xchg, atomic_*_return) are seq_cst; the _relaxed / _acquire /
 * _release variants say so in their names and every caller gives the reason.
 */
#ifndef PK_ATOMIC_H
#define PK_ATOMIC_H

#include <stdatomic.h>
#include <stdint.h>

#define PK_A64(p)	((_Atomic uint64_t *)(p))
#define PK_A32(p)	((_Atomic uint32_t *)(p))

#define READ_ONCE64(p)		atomic_load_explicit(PK_A64(p), memory_order_relaxed)
#define WRITE_ONCE64(p, v)	atomic_store_explicit(PK_A64(p), (v), memory_order_relaxed)
#define READ_ONCE32(p)		atomic_load_explicit(PK_A32(p), memory_order_relaxed)
#define WRITE_ONCE32(p, v)	atomic_store_explicit(PK_A32(p), (v), memory_order_relaxed)

#define smp_load_acquire64(p)	 atomic_load_explicit(PK_A64(p), memory_order_acquire)
#define smp_store_release64(p, v) atomic_store_explicit(PK_A64(p), (v), memory_order_release)
#define smp_mb()		atomic_thread_fence(memory_order_seq_cst)

static inline uint64_t pk_cmpxchg64(void *p, uint64_t old, uint64_t new_)
{
	atomic_compare_exchange_strong(PK_A64(p), &old, new_);
	return old;	/* the value found: equal to 'old' on success */
}

static inline uint32_t pk_cmpxchg32(void *p, uint32_t old, uint32_t new_)
{
	atomic_compare_exchange_strong(PK_A32(p), &old, new_);
	return old;
}

static inline uint64_t pk_xchg64(void *p, uint64_t v)
{
	return atomic_exchange(PK_A64(p), v);
}

static inline uint64_t pk_fetch_add64(void *p, uint64_t v)
{
	return atomic_fetch_add(PK_A64(p), v);
}

#endif /* PK_ATOMIC_H */
