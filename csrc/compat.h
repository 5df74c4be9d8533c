/*
 * compat.h - small kernel-flavoured helpers shared by every file of the core.
 *
 * Mirrors include/linux/compiler.h and include/linux/cache.h: likely/unlikely,
 * READ_ONCE/WRITE_ONCE (relaxed atomic accesses, so the compiler neither tears
 * nor fuses them), ____cacheline_aligned, BUILD_BUG_ON.  Nothing here touches
 * Python.
 */
#ifndef PK_COMPAT_H
#define PK_COMPAT_H

#include <stddef.h>
#include <stdint.h>

#define likely(x)	__builtin_expect(!!(x), 1)
#define unlikely(x)	__builtin_expect(!!(x), 0)

#define PK_CACHELINE		64
#define ____cacheline_aligned	__attribute__((aligned(PK_CACHELINE)))
#define PK_PAGE_SHIFT		12
#define PK_PAGE_SIZE		(1u << PK_PAGE_SHIFT)

#define BUILD_BUG_ON(cond)	_Static_assert(!(cond), #cond)

#define PK_HIDDEN	__attribute__((visibility("hidden")))

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield" ::: "memory");
#else
	__asm__ __volatile__("" ::: "memory");
#endif
}

static inline uint64_t pk_round_up(uint64_t x, uint64_t a)
{
	return (x + a - 1) / a * a;
}

/*
 * Prefetch a line for writing (get it exclusive before the store).  gcc turns
 * __builtin_prefetch(p, 1) into a plain read prefetch unless -mprfchw, which
 * would leave the line shared and the store to wait for a second trip.
 */
static inline void pk_prefetchw(const void *p)
{
#if defined(__x86_64__)
	__asm__ volatile("prefetchw %0" : : "m"(*(const char *)p));
#else
	__builtin_prefetch(p, 1);
#endif
}

#endif /* PK_COMPAT_H */
