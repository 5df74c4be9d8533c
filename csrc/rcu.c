/*
 * rcu.c - slot registration and the grace-period scan.  The protocol and its
 * memory ordering are in rcu.h.
 */
#include <errno.h>
#include <string.h>
#include <time.h>

#include "atomic.h"
#include "rcu.h"

uint64_t pk_rcu_block_size(uint32_t nslots)
{
	return sizeof(struct pk_rcu_state) + (uint64_t)nslots * sizeof(struct pk_rcu_slot);
}

void pk_rcu_init(struct pk_rcu_state *r, uint32_t nslots)
{
	int f;

	for (f = 0; f < PK_RCU_FLAVOURS; f++) {
		/* GP 1 is complete from the start; slot value 0 means "quiescent". */
		r->gp_seq[f] = 1;
		r->gp_done[f] = 1;
	}
	r->nslots = nslots;
}

int pk_rcu_register(struct pk_rcu_state *r, uint32_t tid, int32_t pid)
{
	struct timespec ts;
	uint32_t i;
	int ret = -ENOSPC;

	pk_lock_acquire(&r->slot_lock, -1);
	for (i = 0; i < r->nslots; i++) {
		struct pk_rcu_slot *s = &r->slots[i];

		if (READ_ONCE32(&s->tid) != 0)
			continue;
		memset(s->seq, 0, sizeof(s->seq));
		memset(s->nest, 0, sizeof(s->nest));
		s->pid = pid;
		clock_gettime(CLOCK_REALTIME, &ts);
		s->registered_ns = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
		__atomic_store_n(&s->tid, tid, __ATOMIC_RELEASE);
		if (i + 1 > r->hiwater)
			__atomic_store_n(&r->hiwater, i + 1, __ATOMIC_RELEASE);
		ret = (int)i;
		break;
	}
	pk_lock_release(&r->slot_lock);
	return ret;
}

uint64_t pk_rcu_advance(struct pk_rcu_state *r, int f)
{
	uint64_t s, m = UINT64_MAX, done, cur;
	uint32_t i, hi;

	s = __atomic_load_n(&r->gp_seq[f], __ATOMIC_SEQ_CST);		/* A */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);			/* B */
	hi = __atomic_load_n(&r->hiwater, __ATOMIC_ACQUIRE);
	for (i = 0; i < hi; i++) {
		uint64_t v = __atomic_load_n(&r->slots[i].seq[f], __ATOMIC_SEQ_CST);	/* C */

		if (v && v < m)
			m = v;
	}
	done = s < m ? s : m;
	cur = __atomic_load_n(&r->gp_done[f], __ATOMIC_RELAXED);
	while (cur < done &&
	       !__atomic_compare_exchange_n(&r->gp_done[f], &cur, done, 0, __ATOMIC_SEQ_CST,
					    __ATOMIC_RELAXED))
		;
	__atomic_fetch_add(&r->gp_scans, 1, __ATOMIC_RELAXED);
	return cur > done ? cur : done;
}
