/*
 * lock.h - the process-shared lock of the arena (raw_spinlock_t's stand-in).
 *
 * The kernel's spinlocks rely on preemption being off while they are held; a
 * user-space holder can be preempted, descheduled, or SIGKILLed.  So this lock
 * spins briefly, then sleeps on a futex (the word is in MAP_SHARED memory, so
 * the futex is not FUTEX_PRIVATE), and it records its owner so that a holder
 * that died is detected and the lock recovered instead of waited on forever.
 *
 * Lock word (32 bits, the futex word):
 *
 *	 31        30         29 ............................ 0
 *	+---------+----------+-----------------------------------+
 *	| WAITERS | (unused) | owner TID (0 = unlocked)          |
 *	+---------+----------+-----------------------------------+
 *
 * Same layout as the kernel's robust-futex word (FUTEX_WAITERS, FUTEX_TID_MASK).
 * We cannot use the kernel's robust list itself: glibc owns the per-thread
 * robust list head.  Instead a waiter that has slept PK_LOCK_PROBE_NS without
 * progress checks whether the owner TID still names a live, non-zombie task
 * (kill(tid, 0) and /proc/<tid>/stat); if not, it takes the lock over with one
 * CAS from the exact word it observed and reports the recovery to its caller,
 * whose data may be half-updated (pthread's EOWNERDEAD).
 *
 * Known limit: if the dead owner's TID is reused by a new task before a waiter
 * probes, the lock looks held by a live task until that task exits.
 *
 * Synchronization: the word is only changed by CAS (acquire, take-over, set
 * WAITERS) and by the owner's exchange to 0 (release).  'recoveries' is
 * written only by the thread that just took over the lock, under the lock.
 */
#ifndef PK_LOCK_H
#define PK_LOCK_H

#include <errno.h>
#include <stdint.h>
#include <sys/types.h>

#define PK_LOCK_WAITERS		0x80000000u
#define PK_LOCK_TID_MASK	0x3fffffffu

struct pk_lock {
	uint32_t word;		/* futex word: owner TID | WAITERS, CAS only */
	uint32_t recoveries;	/* dead owners taken over, under the lock */
};

/* pk_lock_acquire() results besides -errno. */
#define PK_LOCK_OK		0
#define PK_LOCK_RECOVERED	1	/* the previous owner died holding it */

/* initial-exec: one %fs-relative load instead of a __tls_get_addr call. */
extern __thread pid_t pk_cached_tid __attribute__((tls_model("initial-exec")));

/*
 * Called with 1 before a waiter first sleeps on the futex and with 0 when it
 * returns, on the same thread.  The binding uses it to release the GIL while
 * an internal lock (kmalloc, freelist heads, RCU slots) is waited for, so a
 * stopped or descheduled holder in another process never freezes this one.
 */
extern void (*pk_lock_sleep_hook)(int sleeping);

pid_t pk_gettid_slow(void);
void pk_tid_reset(void);	/* after fork, in the child */
int pk_task_alive(pid_t tid);

static inline pid_t pk_gettid(void)
{
	pid_t tid = pk_cached_tid;

	return __builtin_expect(tid != 0, 1) ? tid : pk_gettid_slow();
}

/*
 * pk_lock_trylock - take the lock if it is free, never spin or sleep.
 * Context: any, including a signal handler (NMI context).
 * Returns: PK_LOCK_OK, -EBUSY if held, -EDEADLK if held by the caller.
 * MT-safe / process-safe: yes.
 */
static inline int pk_lock_trylock(struct pk_lock *l)
{
	uint32_t tid = (uint32_t)pk_gettid();
	uint32_t v = 0;

	if (__builtin_expect(__atomic_compare_exchange_n(&l->word, &v, tid, 0, __ATOMIC_ACQUIRE,
							 __ATOMIC_RELAXED), 1))
		return PK_LOCK_OK;
	return (v & PK_LOCK_TID_MASK) == tid ? -EDEADLK : -EBUSY;
}

/*
 * pk_lock_acquire - take the lock: spin briefly, then sleep on the futex.
 * @budget_ns: give up after about this long with -ETIMEDOUT (so the binding
 *	can check for signals and call again); < 0 waits forever.
 * Context: may sleep; call without the GIL when it may wait.
 * Returns: PK_LOCK_OK, PK_LOCK_RECOVERED, -EDEADLK if the caller holds it,
 *	-ETIMEDOUT when the budget ran out.
 * MT-safe / process-safe: yes.
 */
int pk_lock_acquire(struct pk_lock *l, int64_t budget_ns);

/*
 * pk_lock_release - release a lock the calling thread holds.
 * Returns: 0, or -EPERM when the caller is not the owner (nothing changes).
 * MT-safe / process-safe: yes.
 */
int pk_lock_release_slow(struct pk_lock *l, uint32_t old);

static inline int pk_lock_release(struct pk_lock *l)
{
	uint32_t tid = (uint32_t)pk_gettid();
	uint32_t v = __atomic_load_n(&l->word, __ATOMIC_RELAXED);

	if (__builtin_expect((v & PK_LOCK_TID_MASK) != tid, 0))
		return -EPERM;
	/* Pairs with the acquire CAS of the next owner: publishes the critical section. */
	v = __atomic_exchange_n(&l->word, 0, __ATOMIC_RELEASE);
	if (__builtin_expect(v & PK_LOCK_WAITERS, 0))
		return pk_lock_release_slow(l, v);
	return 0;
}

static inline uint32_t pk_lock_owner(const struct pk_lock *l)
{
	return __atomic_load_n(&l->word, __ATOMIC_RELAXED) & PK_LOCK_TID_MASK;
}

#endif /* PK_LOCK_H */
