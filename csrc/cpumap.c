/*
 * cpumap.c - the ptr_ring of the CPU map (include/linux/ptr_ring.h), in
 * shared memory.  The bulk queues, flush list and the worker's batch live in
 * the binding (_core_cpumap.inc), which owns the per-thread state.
 *
 * The ring follows ptr_ring: a slot is free iff it holds 0, so the producer
 * never reads the consumer's index and the consumer never reads the
 * producer's; the consumer zeroes consumed slots lazily, 'batch' at a time
 * and in reverse order, so the producer's and the consumer's cache lines do
 * not bounce on every entry.  Capacity is exactly 'size' entries, and right
 * after the consumer takes k < batch entries the producer may still find the
 * ring full (as in the kernel).
 */
#include <errno.h>
#include <linux/futex.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "atomic.h"
#include "cpumap.h"

void pk_ptr_ring_init(struct pk_ptr_ring *r, uint32_t size)
{
	memset(r, 0, sizeof(*r));
	r->size = size;
	r->batch = PK_PTR_RING_BATCH;
	if (r->batch > size / 2 || !r->batch)
		r->batch = 1;
	memset(r->queue, 0, (size_t)size * 8);
}

int __pk_ptr_ring_produce(struct pk_ptr_ring *r, uint64_t v)
{
	uint32_t p = r->producer;

	if (unlikely(!r->size) || atomic_load_explicit(PK_A64(&r->queue[p]), memory_order_relaxed))
		return -ENOSPC;
	/* Crash record: if we die between the slot store and the index store,
	 * the next holder sees the slot filled and publishes it. */
	WRITE_ONCE32(&r->prod_pending, p + 1);
	/* Release: the frame's contents before its offset (the consumer's acquire load). */
	atomic_store_explicit(PK_A64(&r->queue[p]), v, memory_order_release);
	p++;
	if (unlikely(p >= r->size))
		p = 0;
	WRITE_ONCE32(&r->producer, p);
	WRITE_ONCE32(&r->prod_pending, 0);
	r->nr_produced++;
	return 0;
}

void pk_ptr_ring_repair(struct pk_ptr_ring *r)
{
	uint32_t pend = READ_ONCE32(&r->prod_pending);

	if (pend && pend - 1 == r->producer && READ_ONCE64(&r->queue[pend - 1])) {
		/* The slot was written and not published: publish it. */
		r->producer = pend >= r->size ? 0 : pend;
		r->nr_produced++;
	}
	if (r->producer >= r->size)
		r->producer = 0;
	WRITE_ONCE32(&r->prod_pending, 0);
}

int __pk_ptr_ring_consume_batched(struct pk_ptr_ring *r, uint64_t *out, int n)
{
	int i;

	for (i = 0; i < n; i++) {
		/* Acquire: pairs with the producer's release store of the offset. */
		uint64_t v = atomic_load_explicit(PK_A64(&r->queue[r->consumer_head]),
						  memory_order_acquire);

		if (!v)
			break;
		out[i] = v;
		ring_discard_one(r);
	}
	r->nr_consumed += (uint64_t)i;
	return i;
}

int pk_ptr_ring_empty(struct pk_ptr_ring *r)
{
	uint32_t h = READ_ONCE32(&r->consumer_head);

	if (unlikely(h >= r->size))
		return 1;
	return !atomic_load_explicit(PK_A64(&r->queue[h]), memory_order_acquire);
}

static long futex_wait(uint32_t *uaddr, uint32_t val, int64_t ns)
{
	struct timespec ts = { .tv_sec = ns / 1000000000, .tv_nsec = ns % 1000000000 };

	return syscall(SYS_futex, uaddr, FUTEX_WAIT, val, ns >= 0 ? &ts : NULL, NULL, 0);
}

void pk_ptr_ring_wake(struct pk_ptr_ring *r)
{
	/* Full barrier: the flush's slot stores before the sleeping check, pairing
	 * with the consumer's store of sleeping=1 before its emptiness recheck. */
	smp_mb();
	if (READ_ONCE32(&r->sleeping) && atomic_exchange(PK_A32(&r->sleeping), 0)) {
		syscall(SYS_futex, &r->sleeping, FUTEX_WAKE, 1, NULL, NULL, 0);
		atomic_fetch_add_explicit(PK_A64(&r->nr_wakeups), 1, memory_order_relaxed);
	}
}

int pk_ptr_ring_wait(struct pk_ptr_ring *r, int64_t ns)
{
	atomic_store(PK_A32(&r->sleeping), 1);	/* seq_cst: before the recheck below */
	if (!pk_ptr_ring_empty(r)) {
		WRITE_ONCE32(&r->sleeping, 0);
		return 0;
	}
	futex_wait(&r->sleeping, 1, ns);
	WRITE_ONCE32(&r->sleeping, 0);
	return 1;
}

int pk_ptr_ring_drain_dead(struct pk_ptr_ring *r, uint64_t *out, const uint64_t *skip, int nskip)
{
	uint32_t head = r->consumer_head, tail = r->consumer_tail, i;
	int k, got = 0;

	/* [tail, head) holds consumed slots not yet zeroed (possibly half zeroed
	 * if the consumer died inside the zeroing loop); the slot at head may be a
	 * frame the consumer took (then it is in skip).  Everything else that is
	 * not 0 was produced and never consumed. */
	if (head >= r->size)
		head = 0;
	if (tail > head || head - tail >= r->batch)
		tail = head;	/* not a state a live consumer leaves: nothing is stale */
	for (i = 0; i < r->size; i++) {
		uint64_t v = READ_ONCE64(&r->queue[i]);

		if (!v || (i >= tail && i < head))
			continue;
		v = PK_SLOT_OFF(v);	/* the frame offset (skip holds offsets) */
		for (k = 0; k < nskip; k++)
			if (skip[k] == v)
				break;
		if (k == nskip)
			out[got++] = v;
	}
	memset(r->queue, 0, (size_t)r->size * 8);
	r->consumer_head = r->consumer_tail = 0;
	r->producer = 0;
	r->prod_pending = 0;
	return got;
}
