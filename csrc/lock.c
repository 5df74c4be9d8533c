/*
 * lock.c - process-shared lock with owner TID and dead-owner recovery.
 * The design and the word layout are in lock.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "atomic.h"
#include "compat.h"
#include "lock.h"

#define PK_LOCK_SPINS		200		/* cpu_relax rounds before sleeping */
#define PK_LOCK_SLEEP_NS	2000000		/* one futex wait: 2 ms */
#define PK_LOCK_PROBE_NS	10000000	/* probe the owner after 10 ms stuck */

__thread pid_t pk_cached_tid __attribute__((tls_model("initial-exec")));
void (*pk_lock_sleep_hook)(int sleeping);

pid_t pk_gettid_slow(void)
{
	pk_cached_tid = (pid_t)syscall(SYS_gettid);
	return pk_cached_tid;
}

void pk_tid_reset(void)
{
	pk_cached_tid = 0;
}

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/*
 * pk_task_alive - does @tid name a task that can still release a lock?
 * A SIGKILLed process stays a zombie until its parent reaps it, and the parent
 * may be the very process waiting for the lock, so a zombie counts as dead.
 */
/* Can this process read other tasks' /proc/<tid>/stat at all (mounted, no hidepid)? */
static int proc_usable(void)
{
	static int usable = -1;

	if (usable < 0) {
		char path[64];

		snprintf(path, sizeof(path), "/proc/%d/stat", (int)getppid());
		usable = access("/proc/self/stat", R_OK) == 0 && access(path, R_OK) == 0;
	}
	return usable;
}

int pk_task_alive(pid_t tid)
{
	char path[64], buf[512];
	ssize_t n;
	int fd;
	char *p;

	if (tid <= 0)
		return 0;
	if (kill(tid, 0) < 0 && errno == ESRCH)
		return 0;
	if (!proc_usable())
		return 1;	/* cannot tell a zombie from a live task: never steal from the living */
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)tid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? 0 : 1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 1;
	buf[n] = '\0';
	p = strrchr(buf, ')');	/* comm may contain spaces and parens */
	if (!p || p[1] != ' ')
		return 1;
	return !(p[2] == 'Z' || p[2] == 'X' || p[2] == 'x');
}

static long futex_wait(uint32_t *uaddr, uint32_t val, int64_t ns)
{
	struct timespec ts = { .tv_sec = ns / 1000000000, .tv_nsec = ns % 1000000000 };

	return syscall(SYS_futex, uaddr, FUTEX_WAIT, val, &ts, NULL, 0);
}

static void futex_wake(uint32_t *uaddr, int n)
{
	syscall(SYS_futex, uaddr, FUTEX_WAKE, n, NULL, NULL, 0);
}

static int lock_acquire_slow(struct pk_lock *l, int64_t budget_ns, int *hooked);

int pk_lock_acquire(struct pk_lock *l, int64_t budget_ns)
{
	int hooked = 0, r = lock_acquire_slow(l, budget_ns, &hooked);

	if (hooked)
		pk_lock_sleep_hook(0);
	return r;
}

static int lock_acquire_slow(struct pk_lock *l, int64_t budget_ns, int *hooked)
{
	uint32_t tid = (uint32_t)pk_gettid();
	uint32_t v, want;
	int64_t start = 0, stuck_since = 0;
	uint32_t stuck_word = 0;
	int spins = 0, slept = 0;

	v = pk_cmpxchg32(&l->word, 0, tid);
	if (likely(v == 0))
		return PK_LOCK_OK;

	for (;;) {
		if (v == 0) {
			/* Once we have slept, others may be asleep too: keep WAITERS. */
			want = tid | (slept ? PK_LOCK_WAITERS : 0);
			v = pk_cmpxchg32(&l->word, 0, want);
			if (v == 0)
				return PK_LOCK_OK;
			continue;
		}
		if ((v & PK_LOCK_TID_MASK) == tid)
			return -EDEADLK;
		if (spins < PK_LOCK_SPINS) {
			spins++;
			cpu_relax();
			v = READ_ONCE32(&l->word);
			continue;
		}
		if (start == 0) {
			start = now_ns();
			stuck_since = start;
			stuck_word = v;
		}
		if (!(v & PK_LOCK_WAITERS)) {
			uint32_t seen = pk_cmpxchg32(&l->word, v, v | PK_LOCK_WAITERS);

			if (seen != v) {
				v = seen;
				continue;
			}
			v |= PK_LOCK_WAITERS;
		}
		if (!*hooked && pk_lock_sleep_hook) {
			pk_lock_sleep_hook(1);
			*hooked = 1;
		}
		futex_wait(&l->word, v, PK_LOCK_SLEEP_NS);
		slept = 1;
		v = READ_ONCE32(&l->word);

		int64_t now = now_ns();

		if (v != stuck_word) {
			/* The owner made progress (or changed): restart the probe clock. */
			stuck_word = v;
			stuck_since = now;
		} else if (v != 0 && now - stuck_since >= PK_LOCK_PROBE_NS) {
			stuck_since = now;
			if (!pk_task_alive((pid_t)(v & PK_LOCK_TID_MASK))) {
				/* Take over from exactly the word we judged dead. */
				if (pk_cmpxchg32(&l->word, v, tid | PK_LOCK_WAITERS) == v) {
					l->recoveries++;
					return PK_LOCK_RECOVERED;
				}
				v = READ_ONCE32(&l->word);
				continue;
			}
		}
		if (budget_ns >= 0 && now - start >= budget_ns)
			return -ETIMEDOUT;
	}
}

int pk_lock_release_slow(struct pk_lock *l, uint32_t old)
{
	futex_wake(&l->word, 1);
	return 0;
}
