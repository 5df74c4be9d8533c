/*
 * rcu.pml - Promela model of the grace-period protocol of csrc/rcu.h,
 * csrc/rcu.c (pk_rcu_advance), csrc/_coremodule.c (rcu_start_gp,
 * rcu_reclaim_dead) and src/percpu/runtime/rcu.py (synchronize, poll_state,
 * DeferFreeList.reclaim).  See docs/model/README.md for how to run it.
 *
 * Memory model: Promela interleaves statements, i.e. it is sequentially
 * consistent.  The real protocol gets the orderings it needs from seq_cst
 * fences and accesses: R1 (reader, after storing its slot, before loading
 * protected data) pairs with B (scanner, after loading gp_seq, before loading
 * the slots, C); R2 (release clear of the slot) pairs with C.  The
 * store-buffering pattern R1/B is exactly the case where SC and weaker models
 * differ, and the fences restore SC for it; so every statement below is one
 * atomic load or store (or one RMW where the real code has one), and the
 * interleavings spin explores are the ones the fences allow.
 *
 * Counters: gp_seq is 64 bits and never wraps; with NU bounded updates it
 * takes the values 1 .. 1+NU, so a byte is enough and no wrap is modelled.
 *
 * Variants (all off by default):
 *   -DBUG         the scanner reads the slots BEFORE gp_seq (A and C swapped):
 *                 spin must find a reader that sees a freed object.
 *   -DBUG_READER  the reader loads the shared pointer BEFORE publishing its
 *                 slot (R1 on the wrong side): must also fail.
 *   -DNMI         a complete nested read-side section (a signal handler) may
 *                 run between any two statements of the outermost lock and
 *                 unlock, not only inside the section.  This is the
 *                 async-signal case of the C inline functions; see README.
 *   -DNO_RECLAIM  scanners never free a dead reader's slot: the progress
 *                 property must fail (a reader that died inside a section
 *                 holds every later grace period back).
 */

#ifndef NR
#define NR	2	/* reader processes */
#endif
#ifndef NU
#define NU	2	/* updates (pointer swaps + grace periods) */
#endif
#define NOBJ	(NU + 1)	/* objects 0 .. NU; object 0 is published first */
#define INF	255		/* m = UINT64_MAX */

byte want = 0;		/* the newest cookie handed to other processes */
byte gp_seq = 1;	/* pk_rcu_init: GP 1 is complete from the start */
byte gp_done = 1;
byte slot[NR];		/* slot.seq: 0 = quiescent, else gp_seq read at the outermost lock */
byte nest[NR];		/* slot.nest: written by the owner only */
bool dead[NR];		/* the owner died (pk_task_alive() would say so) */
byte ptr = 0;		/* the RCU-protected pointer: index of the current object */
bool freed[NOBJ];	/* the object was freed by the updater */
bool upd_finished = false;

/*
 * pk_rcu_read_lock: n = nest; if n == 0 { g = gp_seq; slot = g; R1 } nest = n + 1.
 * IRQ() is a point where, under -DNMI, a whole nested section may run.
 */
#ifdef NMI
#define IRQ()	if :: nmi_section(i) :: skip fi
#else
#define IRQ()	skip
#endif

inline rcu_lock(i, n, g)
{
#ifdef NMI
	n = nest[i];
	IRQ();
	if
	:: n == 0 ->
		g = gp_seq;
		IRQ();
		slot[i] = g;		/* then R1 (seq_cst fence) */
		IRQ();
		g = 0
	:: else -> skip
	fi;
	nest[i] = n + 1;
	n = 0
#else
	/* nest is private to the owner, so its accesses are merged with the
	 * neighbouring shared access: each atomic step still makes exactly one
	 * access to shared state (gp_seq, then slot). */
	if
	:: nest[i] == 0 ->
		atomic { g = gp_seq };
		atomic { slot[i] = g; g = 0; nest[i] = 1 }	/* then R1 */
	:: else -> nest[i]++
	fi
#endif
}

/* pk_rcu_read_unlock: n = nest; nest = n - 1; if n == 1, slot = 0 (R2, release). */
inline rcu_unlock(i, n)
{
#ifdef NMI
	n = nest[i];
	IRQ();
	nest[i] = n - 1;
	IRQ();
	if
	:: n == 1 -> slot[i] = 0
	:: else -> skip
	fi;
	n = 0
#else
	if
	:: nest[i] == 1 -> atomic { nest[i] = 0; slot[i] = 0 }	/* R2 */
	:: else -> nest[i]--
	fi
#endif
}

/* A complete read-side section that does not interleave with its own process
 * (a signal handler), used by -DNMI only.  Its locals are separate. */
#ifdef NMI
inline nmi_section(i)
{
	rcu_lock_nmi(i);
	q = ptr;
	assert(!freed[q]);
	q = 0;
	rcu_unlock_nmi(i)
}
inline rcu_lock_nmi(i)
{
	hn = nest[i];
	if
	:: hn == 0 -> hg = gp_seq; slot[i] = hg; hg = 0
	:: else -> skip
	fi;
	nest[i] = hn + 1;
	hn = 0
}
inline rcu_unlock_nmi(i)
{
	hn = nest[i];
	nest[i] = hn - 1;
	if
	:: hn == 1 -> slot[i] = 0
	:: else -> skip
	fi;
	hn = 0
}
#endif

/* Drop the local reference and unlock; one step unless -DNMI (whose
 * interrupt points inside rcu_unlock must stay interleavable). */
#ifdef NMI
#define UNLOCK(ref)	ref = 0; rcu_unlock(i, n)
#else
#define UNLOCK(ref)	atomic { ref = 0; rcu_unlock(i, n) }
#endif

/* Reader i: loops over read-side sections forever; may nest once; may die
 * inside a section (then its slot stays set until a scanner reclaims it). */
proctype reader(byte i)
{
	byte n, g, p, p2;
#ifdef NMI
	byte hn, hg, q;
#endif

	do
	::
#ifdef BUG_READER
		p = ptr;		/* BUG: protected load before the slot is published */
		rcu_lock(i, n, g);
#else
		rcu_lock(i, n, g);
		p = ptr;		/* after R1 */
#endif
		assert(!freed[p]);		/* a load of the object's "freed" flag */
		if
		:: /* nested section: must not touch the slot */
			rcu_lock(i, n, g);
			atomic { p2 = ptr };
			assert(!freed[p2]);
			if
			:: atomic { dead[i] = true; p = 0; p2 = 0; goto died }	/* killed while nested */
			:: skip
			fi;
			assert(!freed[p]);	/* the outer reference is still protected */
			UNLOCK(p2)
		:: skip
		fi;
		assert(!freed[p]);		/* still valid at the end of the section */
		if
		:: atomic { dead[i] = true; p = 0; goto died }	/* killed inside the section */
		:: skip
		fi;
		UNLOCK(p)
	od;
died:
	skip	/* the process is gone; its slot and nest keep their values */
}

/*
 * pk_rcu_advance: s = gp_seq (A); B; m = min(slot != 0) loaded one slot at a
 * time (C); done = min(s, m); CAS-max into gp_done.  Every step is a separate
 * statement so readers and other scanners interleave with the scan.
 */
inline advance(s, m, j, done)
{
#ifndef BUG
	atomic { s = gp_seq; m = INF; j = 0 }	/* A, then B */
#else
	atomic { m = INF; j = 0 }
#endif
	do
	:: j < NR ->
		atomic {		/* C: one load per slot, then local work */
			done = slot[j];
			if
			:: done != 0 && done < m -> m = done
			:: else -> skip
			fi;
			j++
		}
	:: else -> break
	od;
#ifdef BUG
	s = gp_seq;			/* BUG: gp_seq read after the slots */
#endif
	atomic {			/* done = min(s, m); the CAS-max loop on gp_done */
		done = (s < m -> s : m);
		if
		:: gp_done < done -> gp_done = done
		:: else -> skip
		fi;
		s = 0; m = 0; j = 0; done = 0
	}
}

/* rcu_reclaim_dead: clear the slot of an owner found dead (and only then).
 * The real code checks each slot's owner and re-checks tid under slot_lock.
 * Death is permanent and only scanners write a dead owner's slot, so the
 * whole pass is one atomic step here without losing interleavings that
 * matter. */
inline reclaim_dead(j)
{
	atomic {
		j = 0;
		do
		:: j < NR ->
			if
			:: dead[j] -> nest[j] = 0; slot[j] = 0
			:: else -> skip
			fi;
			j++
		:: else -> break
		od;
		j = 0
	}
}

/* rcu_start_gp(f, target): gp_seq = max(gp_seq, target), one seq_cst CAS. */
inline start_gp(t)
{
	atomic { if :: gp_seq < t -> gp_seq = t :: else -> skip fi }
}

/* Updater: NU times, publish a new object, take a cookie (rcu_get_state:
 * smp_mb, then gp_seq + 1 -- the next GP, NOT started), hand it on (want: the
 * cookie stored with a deferred object or a call_rcu callback, which any
 * process may start), wait until gp_done >= cookie (poll_state: starting the
 * GP and scanning itself, or leaving both to another process), then free the
 * old object (DeferFreeList.reclaim / kfree). */
proctype updater()
{
	byte k = 0, old, cookie, s, m, j, d;

	do
	:: k < NU ->
		atomic { old = ptr; ptr = k + 1 };	/* rcu_assign_pointer / xchg */
		cookie = gp_seq + 1;			/* rcu_get_state: fence, load, +1 */
		atomic { if :: want < cookie -> want = cookie :: else -> skip fi };
		do
		:: gp_done >= cookie -> break		/* rcu_gp_done(f) >= cookie */
		:: else ->
			if
			:: start_gp(cookie)		/* poll_state / _Waiter: CAS-max */
			:: advance(s, m, j, d)		/* synchronize / poll_state scan */
			:: skip				/* leave it to another process */
			fi
		od;
		atomic { freed[old] = true; old = 0; cookie = 0; k++ }
	:: else -> break
	od;
	upd_finished = true
}

/* An independent process that scans (another waiter, the call_rcu thread,
 * a DeferFreeList.reclaim elsewhere) and, like _Waiter.step, frees the slots
 * of dead readers. */
proctype scanner()
{
	byte s, m, j, d;

	do
	::
#ifndef NO_RECLAIM
	   reclaim_dead(j);
#endif
	   start_gp(want);	/* reclaim()/the call_rcu thread start stored cookies */
	   advance(s, m, j, d)
	od
}

init
{
	byte r = 0;

	atomic {
		do
		:: r < NR -> run reader(r); r++
		:: else -> break
		od;
		run updater();
		run scanner()
	}
}

/* Progress: every update's grace period ends (checked with -a -f: weak
 * fairness, so every live reader eventually leaves its section). */
ltl progress { <> upd_finished }
