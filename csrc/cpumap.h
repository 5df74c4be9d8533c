/*
 * cpumap.h - the BPF CPU map (kernel/bpf/cpumap.c) and its ptr_ring
 * (include/linux/ptr_ring.h) in shared memory.
 *
 * A producer (an XDP program's bpf_redirect_map() + xdp_do_redirect()) puts a
 * frame offset into its bulk queue of 8 for (producer CPU, entry); the 9th
 * frame, or xdp_do_flush() at the end of the poll, moves the queue into the
 * entry's MPSC ring under the ring's producer lock, and the end-of-poll flush
 * wakes the entry's worker.  The worker (a process pinned to the entry's CPU)
 * consumes up to CPUMAP_BATCH offsets at a time without a lock.  Only offsets
 * cross the ring: frames stay where the frame pool put them.
 *
 *  struct pk_cpumap (kzalloc)      entries[max_entries] (u64, RCU)
 *  +------------------------+      +--------+--------+-----+
 *  | magic id max_entries   | ---> | entry0 |   0    | ... |  xchg on update/delete
 *  | entries slot_stats pool|      +--------+--------+-----+
 *  +------------------------+           |
 *                                       v  struct pk_cpumap_entry (kzalloc)
 *   ring (pages) <-------------------- cpu qsize ring bulkq(pcpu) stats(pcpu)
 *   +------+------+------+--------+    state worker held[64]
 *   | prod | cons | wake | slots  |
 *   +------+------+------+--------+    bulkq: per CPU {lock, count, q[8]}
 *
 * Synchronization:
 *	entries[k]		xchg by updaters (under the map's update lock, in
 *				Python); READ_ONCE by producers inside an RCU
 *				read-side section; an entry is freed only after a
 *				grace period (and after its worker drained the ring)
 *	ring->producer, prod_pending, queue[producer]	ring->producer_lock
 *	ring->consumer_head/tail, zeroing of consumed slots	the single consumer
 *	ring->sleeping		futex word: consumer sets 1 then rechecks; the
 *				producer's flush xchg's it to 0 and wakes
 *	bulkq (per CPU)		its own lock (the kernel's bq_lock, M7): several
 *				processes may act as the same CPU in user space
 *	stats (per CPU)		relaxed atomic adds (several processes per CPU)
 *	entry->held, nheld	the entry's worker only; read by the reaper after
 *				the worker died
 * Lock order: bulkq lock -> ring producer lock -> memalloc cache locks.
 *
 * Crash: a producer killed inside the ring lock left at most one slot written
 * and not published; prod_pending names it and the next holder finishes the
 * publication (the recovered lock tells it to look).  A worker killed
 * mid-batch left its frames in held[]; the reaper frees them and counts them
 * as dropped (reason: worker died), then drains the ring.
 */
#ifndef PK_CPUMAP_H
#define PK_CPUMAP_H

#include <stdint.h>

#include <stdatomic.h>

#include "atomic.h"
#include "compat.h"
#include "lock.h"

#define PK_CPU_MAP_BULK_SIZE	8	/* 8 == one cacheline on 64-bit archs */
#define PK_CPUMAP_BATCH		8
#define PK_CPUMAP_QSIZE_MAX	16384
#define PK_CPUMAP_HELD_MAX	64	/* frames a worker hands to its stack at once */
#define PK_PTR_RING_BATCH	16	/* SMP_CACHE_BYTES * 2 / sizeof(void *) */

#define PK_CPUMAP_MAGIC		0x50414d555043ull	/* "CPUMAP" */
#define PK_CPUMAP_ENTRY_MAGIC	0x59544e4555504300ull

/* XDP actions (enum xdp_action). */
#define PK_XDP_ABORTED	0
#define PK_XDP_DROP	1
#define PK_XDP_PASS	2
#define PK_XDP_TX	3
#define PK_XDP_REDIRECT	4

struct pk_ptr_ring {
	/* producers, under producer_lock */
	struct pk_lock producer_lock;
	uint32_t producer;
	uint32_t prod_pending;		/* slot index + 1 being published, 0 = none */
	uint64_t nr_produced;
	uint64_t pad0[5];
	/* the consumer */
	uint32_t consumer_head;
	uint32_t consumer_tail;
	uint32_t size;
	uint32_t batch;
	uint64_t nr_consumed;
	uint64_t pad1[5];
	/* wake-up */
	uint32_t sleeping;		/* futex word */
	uint32_t pad2;
	uint64_t nr_wakeups;
	uint64_t pad3[6];
	uint64_t queue[];		/* frame offsets, 0 = empty */
};

#define PK_PTR_RING_BYTES(size)	(sizeof(struct pk_ptr_ring) + (uint64_t)(size) * 8)

/*
 * A ring slot carries the frame's offset (low 40 bits) and, so that the
 * worker need not read the frame's header line, its length and data offset
 * (12 bits each): a frame is at most 4095 bytes (the pool's are 2080).
 */
#define PK_SLOT_OFF_BITS	40
#define PK_SLOT_OFF(v)		((v) & ((1ull << PK_SLOT_OFF_BITS) - 1))
#define PK_SLOT_LEN(v)		((uint32_t)((v) >> PK_SLOT_OFF_BITS) & 0xfff)
#define PK_SLOT_DOFF(v)		((uint32_t)((v) >> (PK_SLOT_OFF_BITS + 12)) & 0xfff)
#define PK_SLOT(off, len, doff)	((off) | ((uint64_t)(len) << PK_SLOT_OFF_BITS) | \
				 ((uint64_t)(doff) << (PK_SLOT_OFF_BITS + 12)))

struct pk_xdp_bulk_queue {		/* one per (entry, CPU), in the per-CPU area */
	struct pk_lock lock;
	uint32_t count;			/* lock */
	uint32_t done;			/* lock: q[0, done) already left for the ring (crash record) */
	uint64_t q[PK_CPU_MAP_BULK_SIZE];
	uint64_t pad2[6];
};					/* 128 bytes */

/* Per-CPU statistics of one map slot (the tracepoints' fields, accumulated). */
struct pk_cpumap_stats {
	/* xdp:xdp_cpumap_enqueue, in the producer CPU's copy */
	uint64_t enq_processed;
	uint64_t enq_drops;
	uint64_t enq_events;		/* flushes with processed > 0 */
	/* xdp:xdp_cpumap_kthread, in the consumer CPU's copy */
	uint64_t kt_iters;
	uint64_t kt_processed;
	uint64_t kt_drops;
	uint64_t kt_sched;
	uint64_t kt_pass;
	uint64_t kt_drop;
	uint64_t kt_redirect;
	uint64_t kt_exceptions;		/* TX, ABORTED, unknown verdicts of the entry program */
	uint64_t died_drops;		/* frames lost with a dead worker (reaper's CPU) */
	uint64_t stack_errors;		/* stack handler raised: its frames counted in kt_drops */
	uint64_t pad[3];
};					/* 128 bytes */
#define PK_CPUMAP_NR_STATS	13

enum pk_cpumap_state {
	PK_ENTRY_NEW = 0,
	PK_ENTRY_RUNNING,
	PK_ENTRY_STOPPING,	/* replaced or deleted: the worker drains, then exits */
	PK_ENTRY_DEAD,		/* the worker died; frames it held were counted */
	PK_ENTRY_EXITED,	/* the worker drained the ring and exited */
};

struct pk_cpumap_entry {
	uint64_t magic;
	uint32_t cpu;
	uint32_t map_id;
	uint32_t qsize;
	uint32_t prog_id;
	uint64_t ring;			/* offset of struct pk_ptr_ring */
	uint64_t bulkq;			/* per-CPU pointer: struct pk_xdp_bulk_queue */
	uint64_t stats;			/* per-CPU pointer: struct pk_cpumap_stats (the slot's) */
	uint64_t ctrl;			/* the worker's kthread control block (+0 should_stop) */
	uint64_t state;			/* enum pk_cpumap_state (+ PK_ENTRY_EXITED) */
	uint32_t remote;		/* built-in entry program: 0 none/Python, 1 drop, 2 pass, 3 redirect */
	uint32_t pad;
	uint64_t worker_pid;
	uint64_t nheld;
	uint64_t held[PK_CPUMAP_HELD_MAX];
};

struct pk_cpumap {
	uint64_t magic;
	uint32_t id;
	uint32_t max_entries;
	uint32_t value_size;
	uint32_t map_flags;
	uint64_t entries;		/* offset of u64[max_entries] */
	uint64_t slot_stats;		/* offset of u64[max_entries]: per-CPU stats pointers */
	uint64_t pool;			/* the frame pool's memalloc offset */
};

/* ---- the frame (xdp_frame), at the start of a pool object ---- */
struct pk_xdp_frame {
	uint32_t data_off;		/* from the frame start to the first data byte */
	uint32_t len;			/* data_end - data */
	uint32_t frame_sz;		/* bytes of the whole object */
	uint32_t ingress_ifindex;
	uint32_t rx_queue_index;
	uint32_t flags;
	uint64_t tstamp;		/* ns; 0 when unknown */
};
#define PK_XDP_FRAME_HDR	32
#define PK_XDP_PACKET_HEADROOM	256
#define PK_XDP_TAILROOM		0	/* no skb_shared_info here: frags are not supported */
#define PK_ETH_HLEN		14

/* ---- the ring ---- */
/* __ptr_ring_discard_one(): the consumer advances past one entry. */
static inline void ring_discard_one(struct pk_ptr_ring *r)
{
	uint32_t consumer_head = r->consumer_head;
	int64_t head = consumer_head++;

	if (unlikely(consumer_head - r->consumer_tail >= r->batch || consumer_head >= r->size)) {
		/* Zero in reverse order: the producer must not see a free slot
		 * ahead of one that is still in use. */
		while (likely(head >= (int64_t)r->consumer_tail))
			atomic_store_explicit(PK_A64(&r->queue[head--]), 0, memory_order_relaxed);
		WRITE_ONCE32(&r->consumer_tail, consumer_head);
	}
	if (unlikely(consumer_head >= r->size)) {
		/* head before tail, in program order: a consumer killed between
		 * the two leaves tail > head, which the reaper reads as "nothing
		 * consumed and not yet zeroed" (never tail = 0 with head = size-1) */
		WRITE_ONCE32(&r->consumer_head, 0);
		atomic_signal_fence(memory_order_seq_cst);
		WRITE_ONCE32(&r->consumer_tail, 0);
		return;
	}
	WRITE_ONCE32(&r->consumer_head, consumer_head);
}


void pk_ptr_ring_init(struct pk_ptr_ring *r, uint32_t size);
/* Under producer_lock: 0 or -ENOSPC. */
int __pk_ptr_ring_produce(struct pk_ptr_ring *r, uint64_t v);
/* After a recovered producer_lock: finish a publication cut short. */
void pk_ptr_ring_repair(struct pk_ptr_ring *r);
/* The single consumer: up to n offsets; returns how many. */
int __pk_ptr_ring_consume_batched(struct pk_ptr_ring *r, uint64_t *out, int n);
int pk_ptr_ring_empty(struct pk_ptr_ring *r);
/* Wake the consumer if it sleeps (after a flush). */
void pk_ptr_ring_wake(struct pk_ptr_ring *r);
/* The consumer: sleep until woken or @ns passed, unless the ring is not empty. 1 if it slept. */
int pk_ptr_ring_wait(struct pk_ptr_ring *r, int64_t ns);
/*
 * After the consumer died, under producer_lock: collect every frame still in
 * the ring into @out (room for r->size offsets), skipping the @nskip offsets
 * in @skip (frames the consumer had taken), and reset the ring to empty.
 * Returns the count.
 */
int pk_ptr_ring_drain_dead(struct pk_ptr_ring *r, uint64_t *out, const uint64_t *skip, int nskip);

#endif /* PK_CPUMAP_H */
