/*
 * rcu.h - RCU across the processes of a domain: reader slots and grace periods.
 *
 * Mirrors the contract of include/linux/rcupdate.h (rcu_read_lock, synchronize_rcu,
 * the polled-cookie API) with liburcu's "memb" flavour as the mechanism: every
 * reader thread owns a slot in shared memory; a grace period waits until no slot
 * shows a read-side section that began before it.  There are two flavours with
 * the same machinery: RCU (index 0) and RCU Tasks Trace (index 1).
 *
 *  rcu block (in the meta pages, header->rcu_off)
 *  +-------------------+-------------------+--------------+----------------------+
 *  | gp_seq[2]         | gp_done[2]        | slot_lock,   | slots[nslots]        |
 *  | GPs started       | GPs completed     | counters     | one cache line each  |
 *  +-------------------+-------------------+--------------+----------------------+
 *
 *  slot: seq[2]   0 = quiescent, else gp_seq read at the outermost rcu_read_lock
 *        nest[2]  nesting depth, written by the owner thread only
 *        tid, pid owner (0 = free slot)
 *
 * Protocol (all orderings below are the pairs the correctness argument needs):
 *
 *  reader lock (outermost)            grace-period scan (any process)
 *    s = gp_seq                         s = gp_seq                       (A)
 *    slot.seq = s                       smp_mb()                         (B)
 *    smp_mb()             (R1)          m = min(slot.seq != 0)           (C)
 *    ... loads of protected data ...    gp_done = max(gp_done, min(s, m))
 *  reader unlock (outermost)
 *    slot.seq = 0 (release)  (R2)
 *
 * GP number g is complete once no slot holds 0 < seq < g and gp_seq >= g was
 * read before the scan.  R1 pairs with B (store-buffering / Dekker): either the
 * scan sees the reader's slot, or the reader's loads see every store made
 * before the scanner's B, in particular the unpublishing of an object that was
 * retired before GP g started.  R2 pairs with the scan's loads (C): a slot seen
 * as 0 means the section's loads are done.  A reader that read gp_seq before g
 * started but stored its slot after a scan stores a value < g; it is, by R1/B,
 * a reader that cannot see objects retired before g, so it need not be waited
 * for.  gp_seq is 64 bits and never wraps, so no phase flip is needed (liburcu's
 * two-phase wait exists because its phase is one bit).
 *
 * A cookie (get_state_synchronize_rcu) is gp_seq + 1 read after a full barrier:
 * GP number 'cookie' waits for every reader that existed when it was taken.
 *
 * Signals: the inline read side is not async-signal-safe for a C caller: a
 * handler that runs a whole section between the slot store and the nest
 * increment of an outermost lock would clear the slot under the interrupted
 * section (docs/model/rcu.pml, -DNMI).  Python's handlers, the only "NMI" the
 * library has, run between bytecodes, never inside these C calls.
 *
 * Synchronization:
 *	gp_seq		CAS-max or fetch_add by GP starters (any process)
 *	gp_done		CAS-max by any scanner
 *	slot.seq	the owner thread; a scanner may CAS it to 0 only after the
 *			owner was found dead
 *	slot.tid/pid	claimed by CAS on tid under slot_lock; freed by the owner
 *			(thread exit) or by a scanner that found it dead
 */
#ifndef PK_RCU_H
#define PK_RCU_H

#include <stdint.h>

#include "compat.h"
#include "lock.h"

#define PK_RCU_FLAVOURS		2
#define PK_RCU_NORMAL		0
#define PK_RCU_TRACE		1

struct pk_rcu_slot {
	uint64_t seq[PK_RCU_FLAVOURS];	/* owner; 0 = quiescent */
	uint32_t nest[PK_RCU_FLAVOURS];	/* owner only */
	uint32_t tid;			/* owner TID, 0 = free; CAS under slot_lock */
	int32_t pid;			/* owner process */
	uint64_t registered_ns;
	uint64_t pad[2];
} ____cacheline_aligned;

struct pk_rcu_state {
	uint64_t gp_seq[PK_RCU_FLAVOURS] ____cacheline_aligned;
	uint64_t gp_done[PK_RCU_FLAVOURS] ____cacheline_aligned;
	struct pk_lock slot_lock ____cacheline_aligned;
	uint32_t nslots;		/* set at format */
	uint32_t hiwater;		/* slots [0, hiwater) were ever used */
	uint64_t cbs_queued[PK_RCU_FLAVOURS];	/* call_rcu callbacks, all processes */
	uint64_t cbs_invoked[PK_RCU_FLAVOURS];
	uint64_t dead_readers;		/* slots reclaimed from dead owners */
	uint64_t stalls;		/* stall warnings issued */
	uint64_t gp_scans;
	struct pk_rcu_slot slots[];
};

struct pk_arena;

uint64_t pk_rcu_block_size(uint32_t nslots);
void pk_rcu_init(struct pk_rcu_state *r, uint32_t nslots);
/* Claim a free slot for (tid, pid); -ENOSPC when all are taken. */
int pk_rcu_register(struct pk_rcu_state *r, uint32_t tid, int32_t pid);
/* Scan and advance gp_done; returns the new gp_done. */
uint64_t pk_rcu_advance(struct pk_rcu_state *r, int f);

static inline void pk_rcu_read_lock(struct pk_rcu_state *r, struct pk_rcu_slot *s, int f)
{
	uint32_t n = s->nest[f];

	if (n == 0) {
		uint64_t g = __atomic_load_n(&r->gp_seq[f], __ATOMIC_RELAXED);

#if defined(__x86_64__) || defined(__i386__)
		/* R1 (pairs with B): a locked xchg is a full barrier on x86 and cheaper than mfence. */
		(void)__atomic_exchange_n(&s->seq[f], g, __ATOMIC_SEQ_CST);
#else
		__atomic_store_n(&s->seq[f], g, __ATOMIC_RELAXED);
		__atomic_thread_fence(__ATOMIC_SEQ_CST);	/* R1: pairs with B */
#endif
	}
	s->nest[f] = n + 1;
}

/* Returns -EINVAL (and changes nothing) when the section was not entered. */
static inline int pk_rcu_read_unlock(struct pk_rcu_slot *s, int f)
{
	uint32_t n = s->nest[f];

	if (__builtin_expect(n == 0, 0))
		return -EINVAL;
	s->nest[f] = n - 1;
	if (n == 1)
		__atomic_store_n(&s->seq[f], 0, __ATOMIC_RELEASE);	/* R2: pairs with C */
	return 0;
}

#endif /* PK_RCU_H */
