/*
 * _coremodule.c - the binding of the C core: module percpu._core.
 *
 * Shaped like CPython's Modules/_queuemodule.c: module state, heap types,
 * multi-phase init.  This is the only file that includes Python.h.  The C
 * functions return -errno; here, and only here, that becomes an exception of
 * percpu.errors (through percpu.errors.from_errno) carrying .errno.
 *
 * Types:
 *	Arena	one MAP_SHARED mapping of a domain file: word atomics, llist,
 *		per-CPU slots, the page allocator and kmalloc on offsets.  It
 *		exports the buffer protocol (percpu.mem() slices it).  close()
 *		unmaps once no exported view and no call that released the GIL
 *		is left, so a view can never dangle.
 *	Lock	the process-shared lock (lock.h) at an offset of an arena.
 *
 * GIL: the allocator and the atomics keep the GIL (they never wait on a lock
 * held across Python code, so nothing in this process can be waiting on us);
 * Lock.lock()/acquire() release it once the first CAS fails, and wake up at
 * least every 50 ms to run signal handlers.
 */
#define _GNU_SOURCE
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include "arena.h"
#include "atomic.h"
#include "llist.h"
#include "freelist.h"
#include "lock.h"
#include "pcpu.h"
#include "memalloc.h"
#include "rcu.h"

static struct PyModuleDef core_module;

typedef struct {
	PyTypeObject *arena_type;
	PyTypeObject *lock_type;
	PyTypeObject *freelist_type;
	PyTypeObject *counter_type;
	PyTypeObject *ma_type;
	PyTypeObject *cmref_type;
	PyTypeObject *cpumap_type;
	PyTypeObject *worker_type;
	PyTypeObject *xdpframe_type;
	PyTypeObject *pktlist_type;
	PyTypeObject *framepool_type;
	PyTypeObject *rxqueue_type;
	PyTypeObject *htab_type;
	PyTypeObject *array_type;
} core_state;

typedef struct {
	PyObject_HEAD
	struct pk_arena a;
	uint64_t id;		/* unique per mapping: keys the RCU slot cache */
	uint16_t *possible;	/* possible CPUs in order (lazily built), for folding */
	uint32_t nr_possible;
	Py_ssize_t exports;	/* live buffer views */
	Py_ssize_t inflight;	/* calls running without the GIL */
	int closed;
} ArenaObject;

typedef struct {
	PyObject_HEAD
	ArenaObject *arena;
	struct pk_lock *l;
	uint64_t off;
} LockObject;

typedef struct {
	PyObject_HEAD
	ArenaObject *arena;
	struct pk_freelist *s;
	uint64_t off;
} FreelistObject;

static PyObject *raise_errno(int err, const char *what)
{
	PyObject *mod, *fn, *exc;

	if (err < 0)
		err = -err;
	mod = PyImport_ImportModule("percpu.errors");
	if (mod == NULL) {
		PyErr_Clear();
		errno = err;
		return PyErr_SetFromErrno(PyExc_OSError);
	}
	fn = PyObject_GetAttrString(mod, "from_errno");
	Py_DECREF(mod);
	if (fn == NULL)
		return NULL;
	exc = PyObject_CallFunction(fn, "is", err, what);
	Py_DECREF(fn);
	if (exc == NULL)
		return NULL;
	PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
	Py_DECREF(exc);
	return NULL;
}

/* ---- module functions --------------------------------------------------- */

static PyObject *core_noop(PyObject *m, PyObject *unused)
{
	Py_RETURN_NONE;
}

static PyObject *core_sched_getcpu(PyObject *m, PyObject *unused)
{
	int cpu = sched_getcpu();

	if (cpu < 0)
		return PyErr_SetFromErrno(PyExc_OSError);
	return PyLong_FromLong(cpu);
}

static PyObject *core_gettid(PyObject *m, PyObject *unused)
{
	return PyLong_FromLong(pk_gettid());
}

static PyObject *core_set_task_name(PyObject *m, PyObject *arg)
{
	const char *name = PyUnicode_AsUTF8(arg);
	char buf[16];

	if (name == NULL)
		return NULL;
	/* TASK_COMM_LEN is 16: the kernel truncates to 15 bytes, so do we. */
	strncpy(buf, name, sizeof(buf) - 1);
	buf[sizeof(buf) - 1] = '\0';
	if (prctl(PR_SET_NAME, (unsigned long)buf, 0, 0, 0) < 0)
		return PyErr_SetFromErrno(PyExc_OSError);
	Py_RETURN_NONE;
}

static PyObject *core_get_task_name(PyObject *m, PyObject *unused)
{
	char buf[17] = { 0 };

	if (prctl(PR_GET_NAME, (unsigned long)buf, 0, 0, 0) < 0)
		return PyErr_SetFromErrno(PyExc_OSError);
	return PyUnicode_DecodeUTF8(buf, (Py_ssize_t)strlen(buf), "replace");
}

static PyObject *core_task_alive(PyObject *m, PyObject *arg)
{
	long tid = PyLong_AsLong(arg);

	if (tid == -1 && PyErr_Occurred())
		return NULL;
	return PyBool_FromLong(pk_task_alive((pid_t)tid));
}

/* ---- Arena -------------------------------------------------------------- */

static uint64_t arena_ids;	/* under the GIL */

static void arena_unmap(ArenaObject *self)
{
	PyMem_Free(self->possible);
	self->possible = NULL;
	self->nr_possible = 0;
	if (self->a.base != NULL) {
		munmap(self->a.base, self->a.size);
		self->a.base = NULL;
	}
	if (self->a.fd >= 0) {
		close(self->a.fd);
		self->a.fd = -1;
	}
}

static void arena_maybe_unmap(ArenaObject *self)
{
	if (self->closed && self->exports == 0 && self->inflight == 0)
		arena_unmap(self);
}

static int arena_init(ArenaObject *self, PyObject *args, PyObject *kw)
{
	static char *kwlist[] = { "fd", "size", NULL };
	int fd;
	unsigned long long size;
	void *p;

	if (!PyArg_ParseTupleAndKeywords(args, kw, "iK:Arena", kwlist, &fd, &size))
		return -1;
	if (self->id != 0) {	/* once: Lock/Freelist handles point into the first mapping */
		PyErr_SetString(PyExc_TypeError, "Arena already initialised");
		return -1;
	}
	if (size == 0 || size % PK_PAGE_SIZE) {
		raise_errno(EINVAL, "arena size must be a positive multiple of the page size");
		return -1;
	}
	p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED) {
		PyErr_SetFromErrno(PyExc_OSError);
		return -1;
	}
	/* A 4 KiB punch inside a shmem huge page would not free anything. */
	(void)madvise(p, size, MADV_NOHUGEPAGE);
	self->a.fd = dup(fd);
	if (self->a.fd < 0) {
		munmap(p, size);
		PyErr_SetFromErrno(PyExc_OSError);
		return -1;
	}
	self->a.base = p;
	self->a.size = size;
	self->closed = 0;
	self->id = ++arena_ids;
	return 0;
}

static PyObject *arena_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
	ArenaObject *self = (ArenaObject *)type->tp_alloc(type, 0);

	if (self) {
		self->a.fd = -1;
		self->closed = 1;
	}
	return (PyObject *)self;
}

static void arena_dealloc(ArenaObject *self)
{
	PyTypeObject *tp = Py_TYPE(self);

	arena_unmap(self);
	tp->tp_free((PyObject *)self);
	Py_DECREF(tp);
}

static inline int arena_ok(ArenaObject *self)
{
	if (unlikely(self->closed || self->a.base == NULL)) {
		PyErr_SetString(PyExc_ValueError, "arena is closed");
		return 0;
	}
	return 1;
}

/* Range check for an access of @len bytes at @off with alignment @align. */
static inline int arena_range(ArenaObject *self, uint64_t off, uint64_t len, uint64_t align)
{
	if (!arena_ok(self))
		return 0;
	if (unlikely(off >= self->a.size || len > self->a.size - off || off % align)) {
		PyErr_Format(PyExc_ValueError,
			     "offset %llu (+%llu bytes, alignment %llu) outside the arena of %llu bytes",
			     (unsigned long long)off, (unsigned long long)len,
			     (unsigned long long)align, (unsigned long long)self->a.size);
		return 0;
	}
	return 1;
}

static inline int get_u64(PyObject *o, uint64_t *out)
{
	unsigned long long v = PyLong_AsUnsignedLongLong(o);

	if (v == (unsigned long long)-1 && PyErr_Occurred()) {
		/* A negative or > 64-bit offset is out of range: EINVAL, not OverflowError. */
		if (PyErr_ExceptionMatches(PyExc_OverflowError)) {
			PyErr_Clear();
			raise_errno(EINVAL, "offset or size out of range (negative or above 2**64-1)");
		}
		return 0;
	}
	*out = v;
	return 1;
}

static int arena_getbuffer(ArenaObject *self, Py_buffer *view, int flags)
{
	if (!arena_ok(self))
		return -1;
	if (PyBuffer_FillInfo(view, (PyObject *)self, self->a.base, (Py_ssize_t)self->a.size, 0,
			      flags) < 0)
		return -1;
	self->exports++;
	return 0;
}

static void arena_releasebuffer(ArenaObject *self, Py_buffer *view)
{
	self->exports--;
	arena_maybe_unmap(self);
}

static ArenaObject *rcu_cur;
static uint64_t rcu_cur_id;

/*
 * Run a C call that may sleep on an internal lock (and then release the GIL,
 * see gil_sleep_hook): the arena stays mapped until it returns.
 */
#define ARENA_CALL(ao, stmt)				\
	do {						\
		ArenaObject *ao_ = (ao);		\
		ao_->inflight++;			\
		stmt;					\
		ao_->inflight--;			\
		arena_maybe_unmap(ao_);			\
	} while (0)

static PyObject *arena_close(ArenaObject *self, PyObject *unused)
{
	self->closed = 1;
	if (rcu_cur == self) {
		rcu_cur = NULL;	/* the module's reference is dropped below */
		rcu_cur_id = 0;	/* and no thread's cached reader slot matches any more */
		Py_DECREF(self);
	}
	arena_maybe_unmap(self);
	Py_RETURN_NONE;
}

static PyObject *arena_get_closed(ArenaObject *self, void *c)
{
	return PyBool_FromLong(self->closed);
}

static PyObject *arena_get_size(ArenaObject *self, void *c)
{
	return PyLong_FromUnsignedLongLong(self->a.size);
}

static PyObject *arena_get_fd(ArenaObject *self, void *c)
{
	return PyLong_FromLong(self->a.fd);
}

static PyObject *arena_format(ArenaObject *self, PyObject *args, PyObject *kw)
{
	static char *kwlist[] = { "nr_cpu_ids", "possible", "online", "owner", "classes",
				  "registry_max", "registry_entry", "flags", "rcu_slots",
				  "pcpu_static_size", "pcpu_reserved_size", "pcpu_dyn_size", NULL };
	unsigned int nr_cpu_ids, reg_max, reg_entry, flags = 0, rcu_slots = 512;
	uint32_t pcpu_sizes[3] = { 4096, PERCPU_MODULE_RESERVE, PERCPU_DYNAMIC_RESERVE };
	Py_buffer possible, online;
	int owner, err;
	PyObject *classes, *seq;
	uint32_t cls[PK_MAX_CLASSES];
	Py_ssize_t n, i;

	if (!arena_ok(self))
		return NULL;
	if (!PyArg_ParseTupleAndKeywords(args, kw, "Iy*y*iOII|IIIII:format", kwlist, &nr_cpu_ids,
					 &possible, &online, &owner, &classes, &reg_max, &reg_entry,
					 &flags, &rcu_slots, &pcpu_sizes[0], &pcpu_sizes[1],
					 &pcpu_sizes[2]))
		return NULL;
	seq = PySequence_Fast(classes, "classes must be a sequence of ints");
	if (seq == NULL)
		goto fail;
	n = PySequence_Fast_GET_SIZE(seq);
	if (n > PK_MAX_CLASSES || possible.len != online.len || possible.len > PK_MAX_CPUS / 8) {
		Py_DECREF(seq);
		raise_errno(EINVAL, "bad arena format parameters");
		goto fail;
	}
	for (i = 0; i < n; i++) {
		long v = PyLong_AsLong(PySequence_Fast_GET_ITEM(seq, i));

		if (v == -1 && PyErr_Occurred()) {
			Py_DECREF(seq);
			goto fail;
		}
		cls[i] = (uint32_t)v;
	}
	Py_DECREF(seq);
	err = pk_arena_format(&self->a, nr_cpu_ids, possible.buf, online.buf,
			      (uint32_t)possible.len, owner, cls, (uint32_t)n, reg_max, reg_entry,
			      flags, rcu_slots, pcpu_sizes);
	PyBuffer_Release(&possible);
	PyBuffer_Release(&online);
	if (err)
		return raise_errno(err, "cannot format the arena");
	Py_RETURN_NONE;
fail:
	PyBuffer_Release(&possible);
	PyBuffer_Release(&online);
	return NULL;
}

static PyObject *arena_validate(ArenaObject *self, PyObject *unused)
{
	int err;

	if (!arena_ok(self))
		return NULL;
	err = pk_arena_validate(&self->a);
	if (err)
		return raise_errno(err, err == -EPROTO ? "arena version mismatch"
				   : "not a percpu arena, or not initialised");
	Py_RETURN_NONE;
}

/* Pages of chunk data blocks reserved in the page allocator but without backing. */
static uint64_t pcpu_unpopulated(ArenaObject *self)
{
	struct pk_pcpu *p = (struct pk_pcpu *)(self->a.base + pk_hdr(&self->a)->pcpu_off);
	uint64_t data = READ_ONCE64(&p->nr_data_pages), pop = READ_ONCE64(&p->nr_populated);

	return data > pop * p->nr_units ? data - pop * p->nr_units : 0;
}

static PyObject *arena_header(ArenaObject *self, PyObject *unused)
{
	struct pk_header *h;
	uint32_t n;

	if (!arena_ok(self))
		return NULL;
	h = pk_hdr(&self->a);
	n = (h->nr_cpu_ids + 7) / 8;
	return Py_BuildValue(
		"{s:K,s:I,s:I,s:K,s:I,s:I,s:I,s:i,s:K,s:K,s:I,s:I,s:I,s:I,s:K,s:y#,s:y#,s:I,s:K,s:K,s:K,s:K,s:I,s:K,s:K}",
		"magic", (unsigned long long)h->magic, "version", h->version,
		"page_size", h->page_size, "size", (unsigned long long)h->size,
		"nr_pages", h->nr_pages, "meta_pages", h->meta_pages,
		"nr_cpu_ids", h->nr_cpu_ids, "owner_pid", h->owner_pid,
		"created_ns", (unsigned long long)h->created_ns,
		"registry_off", (unsigned long long)h->registry_off,
		"registry_max", h->registry_max, "registry_entry", h->registry_entry,
		"nr_classes", h->nr_classes, "flags", h->flags, "generation", (unsigned long long)h->generation,
		"possible", h->possible, (Py_ssize_t)n, "online", h->online, (Py_ssize_t)n,
		"nr_used_pages", READ_ONCE32(&h->nr_used_pages),
		"nr_page_allocs", (unsigned long long)h->nr_page_allocs,
		"nr_page_frees", (unsigned long long)h->nr_page_frees,
		"user_off", (unsigned long long)offsetof(struct pk_header, user),
		"rcu_off", (unsigned long long)h->rcu_off, "rcu_nslots", h->rcu_nslots,
		"pcpu_off", (unsigned long long)h->pcpu_off,
		"pcpu_unpopulated_pages", (unsigned long long)pcpu_unpopulated(self));
}

static PyObject *arena_slab_stats(ArenaObject *self, PyObject *unused)
{
	struct pk_header *h;
	PyObject *list;
	uint32_t i;

	if (!arena_ok(self))
		return NULL;
	h = pk_hdr(&self->a);
	list = PyList_New(0);
	if (list == NULL)
		return NULL;
	for (i = 0; i < h->nr_classes; i++) {
		struct pk_slab_class *c = &h->classes[i];
		PyObject *d = Py_BuildValue("{s:I,s:I,s:I,s:I,s:K,s:K,s:K}", "size", c->size,
					    "objs_per_slab", c->nobjs, "slabs", c->nr_slabs,
					    "empty_slabs", c->nr_empty,
					    "inuse", (unsigned long long)c->nr_inuse,
					    "allocs", (unsigned long long)c->nr_alloc,
					    "frees", (unsigned long long)c->nr_free);

		if (d == NULL || PyList_Append(list, d) < 0) {
			Py_XDECREF(d);
			Py_DECREF(list);
			return NULL;
		}
		Py_DECREF(d);
	}
	return list;
}

static PyObject *arena_kmalloc(ArenaObject *self, PyObject *const *args, Py_ssize_t nargs)
{
	uint64_t size;
	int zero = 0;
	int64_t r;

	if (nargs < 1 || nargs > 2) {
		PyErr_SetString(PyExc_TypeError, "kmalloc(size, zero=False)");
		return NULL;
	}
	if (!arena_ok(self))
		return NULL;
	if (unlikely(!PyLong_Check(args[0]) || PyBool_Check(args[0])))
		return raise_errno(EINVAL, "kmalloc: size must be an int");
	if (_PyLong_Sign(args[0]) <= 0)
		return raise_errno(EINVAL, "kmalloc: size must be positive");
	if (!get_u64(args[0], &size))
		return NULL;
	if (nargs == 2 && (zero = PyObject_IsTrue(args[1])) < 0)
		return NULL;
	ARENA_CALL(self, r = pk_kmalloc(&self->a, size, zero));
	if (likely(r > 0))
		return PyLong_FromLongLong(r);
	if (r == -ENOMEM)
		Py_RETURN_NONE;
	return raise_errno((int)r, size > self->a.size ? "kmalloc: size larger than the arena"
						       : "kmalloc: bad size");
}

static PyObject *arena_kzalloc(ArenaObject *self, PyObject *arg)
{
	PyObject *args[2] = { arg, Py_True };

	return arena_kmalloc(self, args, 2);
}

static PyObject *arena_kfree(ArenaObject *self, PyObject *arg)
{
	uint64_t off;
	int r;

	if (!arena_ok(self) || !get_u64(arg, &off))
		return NULL;
	if (off == 0)	/* kfree(NULL) is a no-op, as in the kernel */
		Py_RETURN_NONE;
	ARENA_CALL(self, r = pk_kfree(&self->a, off));
	if (unlikely(r))
		return raise_errno(r, "kfree: not an allocated object (bad pointer or double free)");
	Py_RETURN_NONE;
}

static PyObject *arena_ksize(ArenaObject *self, PyObject *arg)
{
	uint64_t off;
	int64_t r;

	if (!arena_ok(self) || !get_u64(arg, &off))
		return NULL;
	r = pk_ksize(&self->a, off);
	if (r < 0)
		return raise_errno((int)r, "ksize: not an allocated object");
	return PyLong_FromLongLong(r);
}

static PyObject *arena_alloc_pages(ArenaObject *self, PyObject *arg)
{
	long n = PyLong_AsLong(arg);
	int64_t r;

	if (n == -1 && PyErr_Occurred()) {
		if (!PyErr_ExceptionMatches(PyExc_OverflowError))
			return NULL;
		PyErr_Clear();
		return raise_errno(EINVAL, "alloc_pages: bad number of pages");
	}
	if (!arena_ok(self))
		return NULL;
	if (n <= 0 || (uint64_t)n > self->a.size / PK_PAGE_SIZE)
		return raise_errno(EINVAL, "alloc_pages: bad number of pages");
	ARENA_CALL(self, r = pk_alloc_pages(&self->a, (uint32_t)n, PK_PG_HEAD, 0));
	if (r > 0)
		return PyLong_FromLongLong(r);
	if (r == -ENOMEM)
		Py_RETURN_NONE;
	return raise_errno((int)r, "alloc_pages");
}

static PyObject *arena_free_pages(ArenaObject *self, PyObject *arg)
{
	uint64_t off;
	int r;

	if (!arena_ok(self) || !get_u64(arg, &off))
		return NULL;
	ARENA_CALL(self, r = pk_free_pages(&self->a, off));
	if (r)
		return raise_errno(r, "free_pages: not the start of a page block");
	Py_RETURN_NONE;
}

static PyObject *arena_check(ArenaObject *self, PyObject *unused)
{
	char msg[256];
	int r;

	if (!arena_ok(self))
		return NULL;
	ARENA_CALL(self, r = pk_arena_check(&self->a, msg, sizeof(msg)));
	if (r)
		return raise_errno(r, msg);
	Py_RETURN_NONE;
}

static PyObject *arena_populate(ArenaObject *self, PyObject *const *args, Py_ssize_t nargs)
{
	uint64_t off, len;

	if (nargs != 2 || !get_u64(args[0], &off) || !get_u64(args[1], &len)) {
		if (!PyErr_Occurred())
			PyErr_SetString(PyExc_TypeError, "populate(off, length)");
		return NULL;
	}
	if (!arena_range(self, off, len, PK_PAGE_SIZE))
		return NULL;
	if (fallocate(self->a.fd, 0, (off_t)off, (off_t)len) < 0)
		return raise_errno(errno, "fallocate");
	Py_RETURN_NONE;
}

static PyObject *arena_punch(ArenaObject *self, PyObject *const *args, Py_ssize_t nargs)
{
	uint64_t off, len;

	if (nargs != 2 || !get_u64(args[0], &off) || !get_u64(args[1], &len)) {
		if (!PyErr_Occurred())
			PyErr_SetString(PyExc_TypeError, "punch(off, length)");
		return NULL;
	}
	if (!arena_range(self, off, len, PK_PAGE_SIZE))
		return NULL;
	if (fallocate(self->a.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off,
		      (off_t)len) < 0)
		return raise_errno(errno, "fallocate(PUNCH_HOLE)");
	Py_RETURN_NONE;
}

/* Word atomics: 64-bit, naturally aligned. */

static PyObject *arena_load(ArenaObject *self, PyObject *arg)
{
	uint64_t off;

	if (!get_u64(arg, &off) || !arena_range(self, off, 8, 8))
		return NULL;
	return PyLong_FromUnsignedLongLong(READ_ONCE64(self->a.base + off));
}

static int args_u64(PyObject *const *args, Py_ssize_t nargs, Py_ssize_t want, uint64_t *out,
		    const char *sig)
{
	Py_ssize_t i;

	if (nargs != want) {
		PyErr_Format(PyExc_TypeError, "expected %s", sig);
		return 0;
	}
	for (i = 0; i < want; i++)
		if (!get_u64(args[i], &out[i]))
			return 0;
	return 1;
}

static PyObject *arena_store(ArenaObject *self, PyObject *const *args, Py_ssize_t nargs)
{
	uint64_t v[2];

	if (!args_u64(args, nargs, 2, v, "store(off, value)") || !arena_range(self, v[0], 8, 8))
		return NULL;
	atomic_store(PK_A64(self->a.base + v[0]), v[1]);
	Py_RETURN_NONE;
}

static PyObject *arena_fetch_add(ArenaObject *self, PyObject *const *args, Py_ssize_t nargs)
{
	uint64_t off, delta;
	long long d;

	if (nargs != 2) {
		PyErr_SetString(PyExc_TypeError, "expected fetch_add(off, delta)");
		return NULL;
	}
	if (!get_u64(args[0], &off))
		return NULL;
	d = PyLong_AsLongLong(args[1]);	/* negative deltas subtract (mod 2**64) */
	if (d == -1 && PyErr_Occurred())
		return NULL;
	delta = (uint64_t)d;
	if (!arena_range(self, off, 8, 8))
		return NULL;
	return PyLong_FromUnsignedLongLong(pk_fetch_add64(self->a.base + off, delta));
}

/* fetch_or(off, bits) / fetch_and(off, bits) -> old: atomic set_bit / clear_bit on a word. */
static PyObject *arena_fetch_or(ArenaObject *self, PyObject *const *args, Py_ssize_t nargs)
{
	uint64_t v[2];

	if (!args_u64(args, nargs, 2, v, "fetch_or(off, bits)") || !arena_range(self, v[0], 8, 8))
		return NULL;
	return PyLong_FromUnsignedLongLong(atomic_fetch_or(PK_A64(self->a.base + v[0]), v[1]));
}

static PyObject *arena_fetch_and(ArenaObject *self, PyObject *const *args, Py_ssize_t nargs)
{
	uint64_t v[2];

	if (!args_u64(args, nargs, 2, v, "fetch_and(off, bits)") || !arena_range(self, v[0], 8, 8))
		return NULL;
	return PyLong_FromUnsignedLongLong(atomic_fetch_and(PK_A64(self->a.base + v[0]), v[1]));
}

static PyObject *arena_cmpxchg(ArenaObject *self, PyObject *const *args, Py_ssize_t nargs)
{
	uint64_t v[3];

	if (!args_u64(args, nargs, 3, v, "cmpxchg(off, old, new)") ||
	    !arena_range(self, v[0], 8, 8))
		return NULL;
	return PyLong_FromUnsignedLongLong(pk_cmpxchg64(self->a.base + v[0], v[1], v[2]));
}

static PyObject *arena_xchg(ArenaObject *self, PyObject *const *args, Py_ssize_t nargs)
{
	uint64_t v[2];

	if (!args_u64(args, nargs, 2, v, "xchg(off, value)") || !arena_range(self, v[0], 8, 8))
		return NULL;
	return PyLong_FromUnsignedLongLong(pk_xchg64(self->a.base + v[0], v[1]));
}

/* llist */

static PyObject *arena_llist_add(ArenaObject *self, PyObject *const *args, Py_ssize_t nargs)
{
	uint64_t v[2];

	if (!args_u64(args, nargs, 2, v, "llist_add(head, node)") ||
	    !arena_range(self, v[0], 8, 8) || !arena_range(self, v[1], 8, 8))
		return NULL;
	if (v[1] == 0)
		return raise_errno(EINVAL, "llist_add: node offset 0 is NULL");
	return PyBool_FromLong(pk_llist_add_batch(self->a.base, v[0], v[1], v[1]));
}

static PyObject *arena_llist_add_batch(ArenaObject *self, PyObject *const *args, Py_ssize_t nargs)
{
	uint64_t v[3];

	if (!args_u64(args, nargs, 3, v, "llist_add_batch(head, first, last)") ||
	    !arena_range(self, v[0], 8, 8) || !arena_range(self, v[1], 8, 8) ||
	    !arena_range(self, v[2], 8, 8))
		return NULL;
	if (v[1] == 0 || v[2] == 0)
		return raise_errno(EINVAL, "llist_add_batch: node offset 0 is NULL");
	return PyBool_FromLong(pk_llist_add_batch(self->a.base, v[0], v[1], v[2]));
}

static PyObject *arena_llist_del_all(ArenaObject *self, PyObject *arg)
{
	uint64_t head;

	if (!get_u64(arg, &head) || !arena_range(self, head, 8, 8))
		return NULL;
	return PyLong_FromUnsignedLongLong(pk_llist_del_all(self->a.base, head));
}

static PyObject *arena_llist_del_first(ArenaObject *self, PyObject *arg)
{
	uint64_t head;

	uint64_t first, next;

	if (!get_u64(arg, &head) || !arena_range(self, head, 8, 8))
		return NULL;
	/* __llist_del_first with every node offset checked before it is followed. */
	first = READ_ONCE64(self->a.base + head);
	do {
		if (!first)
			return PyLong_FromLong(0);
		if (first % 8 || first >= self->a.size || self->a.size - first < 8)
			return raise_errno(EUCLEAN, "llist_del_first: the list holds an offset outside the arena");
		next = READ_ONCE64(self->a.base + first);
	} while (!atomic_compare_exchange_weak(PK_A64(self->a.base + head), &first, next));
	return PyLong_FromUnsignedLongLong(first);
}

static PyObject *arena_llist_nodes(ArenaObject *self, PyObject *const *args, Py_ssize_t nargs)
{
	uint64_t v[2], node;
	PyObject *list;

	if (!args_u64(args, nargs, 2, v, "llist_nodes(first, limit)"))
		return NULL;
	list = PyList_New(0);
	if (list == NULL)
		return NULL;
	for (node = v[0]; node; node = READ_ONCE64(self->a.base + node)) {
		PyObject *o;

		if (!arena_range(self, node, 8, 8))
			goto fail;
		if ((uint64_t)PyList_GET_SIZE(list) >= v[1]) {
			raise_errno(ELOOP, "llist_nodes: more nodes than the limit (a cycle?)");
			goto fail;
		}
		o = PyLong_FromUnsignedLongLong(node);
		if (o == NULL || PyList_Append(list, o) < 0) {
			Py_XDECREF(o);
			goto fail;
		}
		Py_DECREF(o);
	}
	return list;
fail:
	Py_DECREF(list);
	return NULL;
}

/* Per-CPU slots: an array of one cache line per CPU, counter in its first word. */

static PyObject *arena_percpu_add(ArenaObject *self, PyObject *const *args, Py_ssize_t nargs)
{
	uint64_t off, cpu;
	long long d;

	if (nargs != 3 || !get_u64(args[0], &off) || !get_u64(args[1], &cpu)) {
		if (!PyErr_Occurred())
			PyErr_SetString(PyExc_TypeError, "expected percpu_add(off, cpu, delta)");
		return NULL;
	}
	d = PyLong_AsLongLong(args[2]);
	if (d == -1 && PyErr_Occurred())
		return NULL;
	if (cpu >= PK_MAX_CPUS || off >= self->a.size || cpu * PK_CACHELINE >= self->a.size - off)
		return raise_errno(EINVAL, "percpu_add: bad cpu or offset");
	if (!arena_range(self, off + cpu * PK_CACHELINE, 8, PK_CACHELINE))
		return NULL;
	/*
	 * Relaxed: a counter, not a publication; the slot is the CPU's own, but a
	 * stale CPU id after migration makes two processes share it, hence atomic.
	 */
	atomic_fetch_add_explicit(PK_A64(self->a.base + off + cpu * PK_CACHELINE), (uint64_t)d,
				  memory_order_relaxed);
	Py_RETURN_NONE;
}

static PyObject *arena_percpu_sum(ArenaObject *self, PyObject *const *args, Py_ssize_t nargs)
{
	uint64_t v[2], sum = 0, cpu;

	if (!args_u64(args, nargs, 2, v, "percpu_sum(off, nr_cpus)"))
		return NULL;
	if (v[1] == 0 || v[1] > PK_MAX_CPUS ||
	    !arena_range(self, v[0], v[1] * PK_CACHELINE, PK_CACHELINE))
		return PyErr_Occurred() ? NULL : raise_errno(EINVAL, "percpu_sum: bad cpu count");
	for (cpu = 0; cpu < v[1]; cpu++)
		sum += READ_ONCE64(self->a.base + v[0] + cpu * PK_CACHELINE);
	return PyLong_FromLongLong((long long)sum);
}

static PyObject *arena_rcu_start_gp(ArenaObject *self, PyObject *const *args, Py_ssize_t nargs);
static PyObject *arena_rcu_get_state(ArenaObject *self, PyObject *arg);
static PyObject *arena_rcu_gp_done(ArenaObject *self, PyObject *arg);
static PyObject *arena_rcu_advance(ArenaObject *self, PyObject *arg);
static PyObject *arena_rcu_blockers(ArenaObject *self, PyObject *const *args, Py_ssize_t nargs);
static PyObject *arena_rcu_reclaim_dead(ArenaObject *self, PyObject *unused);
static PyObject *arena_rcu_info(ArenaObject *self, PyObject *unused);
static PyObject *arena_rcu_stat_add(ArenaObject *self, PyObject *const *args, Py_ssize_t nargs);

#include "_core_pcpu.inc"
#include "_core_memalloc.inc"
#include "_core_cpumask.inc"
#include "_core_xdpparse.inc"
#include "_core_cpumap.inc"
#include "_core_maps.inc"

static PyGetSetDef arena_getset[] = {
	{ "closed", (getter)arena_get_closed, NULL, "True once close() was called", NULL },
	{ "size", (getter)arena_get_size, NULL, "bytes mapped", NULL },
	{ "fd", (getter)arena_get_fd, NULL, "the arena's own file descriptor", NULL },
	{ NULL }
};

#define FAST(name) (PyCFunction)(void (*)(void))arena_##name, METH_FASTCALL

static PyMethodDef arena_methods[] = {
	{ "close", (PyCFunction)arena_close, METH_NOARGS, "Unmap once no view is left." },
	{ "format", (PyCFunction)(void (*)(void))arena_format, METH_VARARGS | METH_KEYWORDS,
	  "Write a new header: layout, CPU masks, size classes." },
	{ "validate", (PyCFunction)arena_validate, METH_NOARGS, "Check magic, version, size." },
	{ "header", (PyCFunction)arena_header, METH_NOARGS, "The header's fields as a dict." },
	{ "slab_stats", (PyCFunction)arena_slab_stats, METH_NOARGS, "Per size class counters." },
	{ "kmalloc", FAST(kmalloc), "kmalloc(size, zero=False) -> offset | None" },
	{ "kzalloc", (PyCFunction)arena_kzalloc, METH_O, "kzalloc(size) -> offset | None" },
	{ "kfree", (PyCFunction)arena_kfree, METH_O, "kfree(offset)" },
	{ "ksize", (PyCFunction)arena_ksize, METH_O, "ksize(offset) -> usable bytes" },
	{ "alloc_pages", (PyCFunction)arena_alloc_pages, METH_O, "alloc_pages(n) -> offset | None" },
	{ "free_pages", (PyCFunction)arena_free_pages, METH_O, "free_pages(offset)" },
	{ "check", (PyCFunction)arena_check, METH_NOARGS, "Verify every page and size class." },
	{ "populate", FAST(populate), "populate(off, length): fallocate" },
	{ "punch", FAST(punch), "punch(off, length): fallocate(PUNCH_HOLE)" },
	{ "load", (PyCFunction)arena_load, METH_O, "load(off) -> u64" },
	{ "store", FAST(store), "store(off, value)" },
	{ "fetch_add", FAST(fetch_add), "fetch_add(off, delta) -> old" },
	{ "fetch_or", FAST(fetch_or), "fetch_or(off, bits) -> old (atomic)" },
	{ "fetch_and", FAST(fetch_and), "fetch_and(off, bits) -> old (atomic)" },
	{ "cmpxchg", FAST(cmpxchg), "cmpxchg(off, old, new) -> found" },
	{ "xchg", FAST(xchg), "xchg(off, value) -> old" },
	{ "llist_add", FAST(llist_add), "llist_add(head, node) -> was_empty" },
	{ "llist_add_batch", FAST(llist_add_batch), "llist_add_batch(head, first, last)" },
	{ "llist_del_all", (PyCFunction)arena_llist_del_all, METH_O, "llist_del_all(head)" },
	{ "llist_del_first", (PyCFunction)arena_llist_del_first, METH_O,
	  "__llist_del_first(head): one consumer at a time" },
	{ "llist_nodes", FAST(llist_nodes), "llist_nodes(first, limit) -> [offsets]" },
	{ "percpu_add", FAST(percpu_add), "percpu_add(off, cpu, delta)" },
	{ "percpu_sum", FAST(percpu_sum), "percpu_sum(off, nr_cpus) -> int" },
	{ "rcu_start_gp", FAST(rcu_start_gp),
	  "rcu_start_gp(flavour[, target]) -> gp_seq after starting the next GP (or up to target)" },
	{ "rcu_get_state", (PyCFunction)arena_rcu_get_state, METH_O,
	  "rcu_get_state(flavour) -> cookie: the next grace period (not started)" },
	{ "rcu_gp_done", (PyCFunction)arena_rcu_gp_done, METH_O, "rcu_gp_done(flavour) -> int" },
	{ "rcu_advance", (PyCFunction)arena_rcu_advance, METH_O,
	  "rcu_advance(flavour) -> gp_done after one scan of the reader slots" },
	{ "rcu_blockers", FAST(rcu_blockers),
	  "rcu_blockers(flavour, target) -> [(slot, tid, pid, seq)] holding GP target back" },
	{ "rcu_reclaim_dead", (PyCFunction)arena_rcu_reclaim_dead, METH_NOARGS,
	  "Free reader slots whose owner died; returns how many." },
	{ "rcu_info", (PyCFunction)arena_rcu_info, METH_NOARGS, "RCU state and readers." },
	{ "rcu_stat_add", FAST(rcu_stat_add), "rcu_stat_add(name, flavour, delta)" },
	PCPU_ARENA_METHODS
	MA_ARENA_METHODS
	{ NULL }
};

static PyType_Slot arena_slots[] = {
	{ Py_tp_new, arena_new },
	{ Py_tp_init, arena_init },
	{ Py_tp_dealloc, arena_dealloc },
	{ Py_tp_methods, arena_methods },
	{ Py_tp_getset, arena_getset },
	{ Py_bf_getbuffer, arena_getbuffer },
	{ Py_bf_releasebuffer, arena_releasebuffer },
	{ Py_tp_doc, "Arena(fd, size): a MAP_SHARED mapping of a domain file." },
	{ 0, NULL }
};

static PyType_Spec arena_spec = {
	.name = "percpu._core.Arena",
	.basicsize = sizeof(ArenaObject),
	.flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
	.slots = arena_slots,
};

/* ---- Lock --------------------------------------------------------------- */

static int lock_init(LockObject *self, PyObject *args, PyObject *kw)
{
	static char *kwlist[] = { "arena", "offset", NULL };
	PyObject *arena;
	unsigned long long off;
	core_state *st = PyType_GetModuleState(Py_TYPE(self));

	if (!PyArg_ParseTupleAndKeywords(args, kw, "O!K:Lock", kwlist, st->arena_type, &arena,
					 &off))
		return -1;
	if (self->arena != NULL) {	/* a waiter may be using the current one */
		PyErr_SetString(PyExc_TypeError, "Lock already initialised");
		return -1;
	}
	if (!arena_range((ArenaObject *)arena, off, sizeof(struct pk_lock), 8))
		return -1;
	self->arena = (ArenaObject *)Py_NewRef(arena);
	self->off = off;
	self->l = (struct pk_lock *)(self->arena->a.base + off);
	return 0;
}

static void lock_dealloc(LockObject *self)
{
	PyTypeObject *tp = Py_TYPE(self);

	Py_CLEAR(self->arena);
	tp->tp_free((PyObject *)self);
	Py_DECREF(tp);
}

static inline int lock_ok(LockObject *self)
{
	if (unlikely(self->arena == NULL))
		return PyErr_SetString(PyExc_ValueError, "Lock not initialised"), 0;
	return arena_ok(self->arena);
}

/*
 * The waiting part of lock()/acquire(): without the GIL, in slices of 50 ms
 * so that signal handlers (KeyboardInterrupt) run.  Returns PK_LOCK_* or -errno,
 * or -EINTR with an exception set.
 */
static int lock_wait_held(LockObject *self, ArenaObject *a, int64_t timeout_ns)
{
	int64_t waited = 0, slice = 50000000;
	int r;

	for (;;) {
		int64_t budget = timeout_ns < 0 ? slice
				: (timeout_ns - waited < slice ? timeout_ns - waited : slice);

		a->inflight++;
		Py_BEGIN_ALLOW_THREADS
		r = pk_lock_acquire(self->l, budget);
		Py_END_ALLOW_THREADS
		a->inflight--;
		if (a->closed) {
			/* Never keep a lock this process can no longer release. */
			if (r >= 0)
				pk_lock_release(self->l);
			arena_maybe_unmap(a);
			PyErr_SetString(PyExc_ValueError, "arena closed while waiting for a lock");
			return -EINTR;
		}
		if (r != -ETIMEDOUT)
			return r;
		waited += budget;
		if (PyErr_CheckSignals() < 0)
			return -EINTR;
		if (timeout_ns >= 0 && waited >= timeout_ns)
			return -ETIMEDOUT;
	}
}

static int lock_wait(LockObject *self, int64_t timeout_ns)
{
	ArenaObject *a = (ArenaObject *)Py_NewRef(self->arena);	/* alive across the wait */
	int r = lock_wait_held(self, a, timeout_ns);

	Py_DECREF(a);
	return r;
}

static PyObject *lock_lock(LockObject *self, PyObject *unused)
{
	int r;

	if (!lock_ok(self))
		return NULL;
	r = pk_lock_trylock(self->l);
	if (likely(r == 0))
		Py_RETURN_FALSE;
	if (r == -EDEADLK)
		return raise_errno(EDEADLK, "lock is already held by this thread");
	r = lock_wait(self, -1);
	if (r == -EINTR)
		return NULL;
	if (r < 0)
		return raise_errno(r, "lock");
	return PyBool_FromLong(r == PK_LOCK_RECOVERED);
}

static PyObject *lock_trylock(LockObject *self, PyObject *unused)
{
	int r;

	if (!lock_ok(self))
		return NULL;
	r = pk_lock_trylock(self->l);
	if (r == -EDEADLK)
		return raise_errno(EDEADLK, "lock is already held by this thread");
	return PyBool_FromLong(r == 0);
}

static PyObject *lock_unlock(LockObject *self, PyObject *unused)
{
	if (!lock_ok(self))
		return NULL;
	if (unlikely(pk_lock_release(self->l) < 0))
		return raise_errno(EPERM, "unlock of a lock this thread does not hold");
	Py_RETURN_NONE;
}

static PyObject *lock_acquire(LockObject *self, PyObject *args, PyObject *kw)
{
	static char *kwlist[] = { "blocking", "timeout", NULL };
	int blocking = 1, r;
	double timeout = -1;

	if (!PyArg_ParseTupleAndKeywords(args, kw, "|pd:acquire", kwlist, &blocking, &timeout))
		return NULL;
	if (!lock_ok(self))
		return NULL;
	if (!blocking && timeout != -1)
		return raise_errno(EINVAL, "can't specify a timeout for a non-blocking call");
	if (timeout != timeout || (timeout < 0 && timeout != -1))
		return raise_errno(EINVAL, "timeout value must be a non-negative number");
	if (timeout > 9.2e9) {	/* beyond int64 nanoseconds, as threading.TIMEOUT_MAX */
		PyErr_SetString(PyExc_OverflowError, "timeout value is too large");
		return NULL;
	}
	r = pk_lock_trylock(self->l);
	if (r == 0)
		Py_RETURN_TRUE;
	if (r == -EDEADLK)
		return raise_errno(EDEADLK, "lock is already held by this thread");
	if (!blocking)
		Py_RETURN_FALSE;
	r = lock_wait(self, timeout < 0 ? -1 : (int64_t)(timeout * 1e9));
	if (r == -EINTR)
		return NULL;
	if (r == -ETIMEDOUT)
		Py_RETURN_FALSE;
	if (r < 0)
		return raise_errno(r, "acquire");
	Py_RETURN_TRUE;
}

static PyObject *lock_exit(LockObject *self, PyObject *const *args, Py_ssize_t nargs)
{
	return lock_unlock(self, NULL);	/* fast call: no argument tuple per with-block */
}

static PyObject *lock_get_owner(LockObject *self, void *c)
{
	if (!lock_ok(self))
		return NULL;
	return PyLong_FromUnsignedLong(pk_lock_owner(self->l));
}

static PyObject *lock_get_locked(LockObject *self, void *c)
{
	if (!lock_ok(self))
		return NULL;
	return PyBool_FromLong(pk_lock_owner(self->l) != 0);
}

static PyObject *lock_get_recoveries(LockObject *self, void *c)
{
	if (!lock_ok(self))
		return NULL;
	return PyLong_FromUnsignedLong(READ_ONCE32(&self->l->recoveries));
}

static PyObject *lock_get_offset(LockObject *self, void *c)
{
	return PyLong_FromUnsignedLongLong(self->off);
}

static PyObject *lock_repr(LockObject *self)
{
	if (self->arena == NULL || self->arena->closed)
		return PyUnicode_FromFormat("<Lock off=%llu closed>", (unsigned long long)self->off);
	return PyUnicode_FromFormat("<Lock off=%llu owner=%u recoveries=%u>",
				    (unsigned long long)self->off, pk_lock_owner(self->l),
				    READ_ONCE32(&self->l->recoveries));
}

static PyMethodDef lock_methods[] = {
	{ "lock", (PyCFunction)lock_lock, METH_NOARGS,
	  "Take the lock; True if its previous owner died holding it." },
	{ "trylock", (PyCFunction)lock_trylock, METH_NOARGS, "Take it if free; never waits." },
	{ "unlock", (PyCFunction)lock_unlock, METH_NOARGS, "Release; EPERM if not the owner." },
	{ "acquire", (PyCFunction)(void (*)(void))lock_acquire, METH_VARARGS | METH_KEYWORDS,
	  "acquire(blocking=True, timeout=-1) -> bool, like threading.Lock." },
	{ "release", (PyCFunction)lock_unlock, METH_NOARGS, "Same as unlock()." },
	{ "__enter__", (PyCFunction)lock_lock, METH_NOARGS, NULL },
	{ "__exit__", (PyCFunction)(void (*)(void))lock_exit, METH_FASTCALL, NULL },
	{ NULL }
};

static PyGetSetDef lock_getset[] = {
	{ "owner", (getter)lock_get_owner, NULL, "TID of the holder, 0 if free", NULL },
	{ "locked", (getter)lock_get_locked, NULL, "True while held", NULL },
	{ "recoveries", (getter)lock_get_recoveries, NULL, "dead owners taken over", NULL },
	{ "offset", (getter)lock_get_offset, NULL, "offset of the lock word", NULL },
	{ NULL }
};

static PyType_Slot lock_slots[] = {
	{ Py_tp_init, lock_init },
	{ Py_tp_dealloc, lock_dealloc },
	{ Py_tp_methods, lock_methods },
	{ Py_tp_getset, lock_getset },
	{ Py_tp_repr, lock_repr },
	{ Py_tp_doc, "Lock(arena, offset): the process-shared lock at an arena offset." },
	{ 0, NULL }
};

static PyType_Spec lock_spec = {
	.name = "percpu._core.Lock",
	.basicsize = sizeof(LockObject),
	.flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
	.slots = lock_slots,
};



/* ---- CPU identity and context ------------------------------------------- */

/*
 * smp_processor_id() for the C fast paths: the thread's on_cpu() override,
 * else the process's pinned CPU (a kthread worker), else sched_getcpu() folded
 * into the domain's possible CPUs.  +1 encodings so zero-initialised = unset.
 */
static __thread int cpu_override1 __attribute__((tls_model("initial-exec")));
static __thread int nmi_depth __attribute__((tls_model("initial-exec")));
static int pinned_cpu1;

static int arena_build_possible(ArenaObject *a)
{
	struct pk_header *h = pk_hdr(&a->a);
	uint32_t cpu, n = 0;

	a->possible = PyMem_Malloc(sizeof(uint16_t) * (h->nr_cpu_ids ? h->nr_cpu_ids : 1));
	if (a->possible == NULL) {
		PyErr_NoMemory();
		return -1;
	}
	for (cpu = 0; cpu < h->nr_cpu_ids; cpu++)
		if ((h->possible[cpu / 8] >> (cpu % 8)) & 1)
			a->possible[n++] = (uint16_t)cpu;
	a->nr_possible = n;
	return 0;
}

/* The CPU the calling thread acts as in arena @a; -1 with an exception set. */
static inline int this_cpu(ArenaObject *a)
{
	struct pk_header *h;
	int real;

	h = pk_hdr(&a->a);
	real = cpu_override1 ? cpu_override1 - 1 : pinned_cpu1 ? pinned_cpu1 - 1 : -1;
	/* An override set for another domain is folded like a real CPU id, never trusted. */
	if (likely(real >= 0) && (uint32_t)real < h->nr_cpu_ids &&
	    ((h->possible[real / 8] >> (real % 8)) & 1))
		return real;
	if (unlikely(a->possible == NULL) && arena_build_possible(a) < 0)
		return -1;
	if (real < 0)
		real = sched_getcpu();
	if (real < 0)
		real = 0;
	if ((uint32_t)real < h->nr_cpu_ids && ((h->possible[real / 8] >> (real % 8)) & 1))
		return real;
	return a->possible[(uint32_t)real % a->nr_possible];
}

static int current_arena(ArenaObject **out);

static PyObject *core_smp_processor_id(PyObject *m, PyObject *const *args, Py_ssize_t nargs)
{
	ArenaObject *a;
	int cpu;

	if (nargs != 0) {
		PyErr_SetString(PyExc_TypeError, "smp_processor_id() takes no arguments");
		return NULL;
	}
	if (cpu_override1)
		return PyLong_FromLong(cpu_override1 - 1);
	if (pinned_cpu1)
		return PyLong_FromLong(pinned_cpu1 - 1);
	if (current_arena(&a) < 0)
		return NULL;
	cpu = this_cpu(a);
	return cpu < 0 ? NULL : PyLong_FromLong(cpu);
}

static int opt_cpu(PyObject *arg, int *out1)
{
	long v;

	if (arg == Py_None) {
		*out1 = 0;
		return 0;
	}
	v = PyLong_AsLong(arg);
	if (v == -1 && PyErr_Occurred())
		return -1;
	if (v < 0 || v >= PK_MAX_CPUS) {
		raise_errno(EINVAL, "CPU number out of range");
		return -1;
	}
	*out1 = (int)v + 1;
	return 0;
}

static PyObject *cpu1_obj(int v1)
{
	if (v1 == 0)
		Py_RETURN_NONE;
	return PyLong_FromLong(v1 - 1);
}

static PyObject *core_set_cpu_override(PyObject *m, PyObject *arg)
{
	int v1, prev = cpu_override1;

	if (opt_cpu(arg, &v1) < 0)
		return NULL;
	cpu_override1 = v1;
	return cpu1_obj(prev);
}

static PyObject *core_set_pinned_cpu(PyObject *m, PyObject *arg)
{
	int v1, prev = pinned_cpu1;

	if (opt_cpu(arg, &v1) < 0)
		return NULL;
	pinned_cpu1 = v1;
	return cpu1_obj(prev);
}

static PyObject *core_cpu_override(PyObject *m, PyObject *u)
{
	return cpu1_obj(cpu_override1);
}

static PyObject *core_pinned_cpu(PyObject *m, PyObject *u)
{
	return cpu1_obj(pinned_cpu1);
}

static PyObject *core_nmi_enter(PyObject *m, PyObject *u)
{
	nmi_depth++;
	Py_RETURN_NONE;
}

static PyObject *core_nmi_exit(PyObject *m, PyObject *u)
{
	if (nmi_depth == 0)
		return raise_errno(EINVAL, "nmi_exit() outside NMI context");
	nmi_depth--;
	Py_RETURN_NONE;
}

static inline int core_in_nmi_ctx(void)
{
	return nmi_depth > 0;
}

static PyObject *core_in_nmi(PyObject *m, PyObject *u)
{
	return PyBool_FromLong(nmi_depth > 0);
}

/* ---- RCU ---------------------------------------------------------------- */

/*
 * The read side must be one C call with no lookup: the process's current
 * domain is mirrored here (rcu_set_current, called by percpu.runtime.domain
 * whenever it changes), and each thread caches its reader slot in TLS, keyed
 * by the arena's id so a stale cache is never used after a domain switch.
 */
/* rcu_cur, rcu_cur_id (declared above arena_close): strong ref, under the GIL */
static __thread struct {
	uint64_t id;
	struct pk_rcu_state *r;
	struct pk_rcu_slot *slot;
} rcu_tls __attribute__((tls_model("initial-exec")));

static inline struct pk_rcu_state *arena_rcu(ArenaObject *a)
{
	return (struct pk_rcu_state *)(a->a.base + pk_hdr(&a->a)->rcu_off);
}

static PyObject *core_rcu_set_current(PyObject *m, PyObject *arg)
{
	core_state *st = PyModule_GetState(m);

	if (arg == Py_None) {
		Py_CLEAR(rcu_cur);
		rcu_cur_id = 0;
		Py_RETURN_NONE;
	}
	if (!PyObject_TypeCheck(arg, st->arena_type)) {
		PyErr_SetString(PyExc_TypeError, "rcu_set_current() takes an Arena or None");
		return NULL;
	}
	if (!arena_ok((ArenaObject *)arg))
		return NULL;
	Py_XSETREF(rcu_cur, (ArenaObject *)Py_NewRef(arg));
	rcu_cur_id = rcu_cur->id;
	Py_RETURN_NONE;
}

/* Free the slots of dead owners (their sections count as quiescent). */
static uint32_t rcu_reclaim_dead(struct pk_rcu_state *r)
{
	uint32_t i, n = 0, hi = __atomic_load_n(&r->hiwater, __ATOMIC_ACQUIRE);

	for (i = 0; i < hi; i++) {
		struct pk_rcu_slot *sl = &r->slots[i];
		uint32_t tid = __atomic_load_n(&sl->tid, __ATOMIC_ACQUIRE);

		if (tid == 0 || pk_task_alive((pid_t)tid))
			continue;
		pk_lock_acquire(&r->slot_lock, -1);
		if (__atomic_load_n(&sl->tid, __ATOMIC_RELAXED) == tid) {
			int f;

			for (f = 0; f < PK_RCU_FLAVOURS; f++) {
				sl->nest[f] = 0;
				__atomic_store_n(&sl->seq[f], 0, __ATOMIC_RELEASE);
			}
			__atomic_store_n(&sl->tid, 0, __ATOMIC_RELEASE);
			__atomic_fetch_add(&r->dead_readers, 1, __ATOMIC_RELAXED);
			n++;
		}
		pk_lock_release(&r->slot_lock);
	}
	return n;
}

static int rcu_slot_slow(void)
{
	struct pk_rcu_state *r;
	uint32_t tid, i, hi;
	int32_t pid;
	int idx = -1;
	ArenaObject *a;

	if (current_arena(&a) < 0)
		return -1;
	Py_INCREF(a);	/* registration may sleep on the slot lock with the GIL released */
	r = arena_rcu(a);
	tid = (uint32_t)pk_gettid();
	pid = (int32_t)getpid();
	hi = __atomic_load_n(&r->hiwater, __ATOMIC_ACQUIRE);
	for (i = 0; i < hi; i++) {
		if (__atomic_load_n(&r->slots[i].tid, __ATOMIC_ACQUIRE) == tid &&
		    r->slots[i].pid == pid) {
			idx = (int)i;
			break;
		}
	}
	if (idx < 0)
		ARENA_CALL(a, idx = pk_rcu_register(r, tid, pid));
	if (idx == -ENOSPC) {
		uint32_t freed;

		ARENA_CALL(a, freed = rcu_reclaim_dead(r));
		if (freed > 0)
			ARENA_CALL(a, idx = pk_rcu_register(r, tid, pid));
	}
	if (a->closed || a != rcu_cur) {
		Py_DECREF(a);
		PyErr_SetString(PyExc_RuntimeError,
				"the current domain was closed or switched while claiming an RCU reader slot");
		return -1;
	}
	if (idx < 0) {
		Py_DECREF(a);
		raise_errno(ENOSPC, "no free RCU reader slot in this domain (one per reader thread)");
		return -1;
	}
	rcu_tls.id = a->id;
	rcu_tls.r = r;
	rcu_tls.slot = &r->slots[idx];
	Py_DECREF(a);	/* rcu_cur still holds it; close() resets rcu_cur_id */
	return 0;
}

/*
 * This thread's reader slot in arena @a, registering one if needed, without
 * making @a current (the current domain is process-wide: a background thread
 * must not switch it under the others).  NULL with an exception set.
 */
static struct pk_rcu_slot *rcu_slot_in(ArenaObject *a)
{
	struct pk_rcu_state *r = arena_rcu(a);
	uint32_t tid, i, hi;
	int32_t pid;
	int idx = -1;

	if (rcu_tls.id == a->id && a->id != 0)
		return rcu_tls.slot;
	if (a == rcu_cur) {
		/* the current domain: cache the slot as rcu_read_lock() does */
		if (rcu_slot_slow() < 0)
			return NULL;
		return rcu_tls.slot;
	}
	tid = (uint32_t)pk_gettid();
	pid = (int32_t)getpid();
	hi = __atomic_load_n(&r->hiwater, __ATOMIC_ACQUIRE);
	for (i = 0; i < hi; i++)
		if (__atomic_load_n(&r->slots[i].tid, __ATOMIC_ACQUIRE) == tid && r->slots[i].pid == pid)
			return &r->slots[i];
	ARENA_CALL(a, idx = pk_rcu_register(r, tid, pid));
	if (idx < 0) {
		raise_errno(ENOSPC, "no free RCU reader slot in this domain (one per reader thread)");
		return NULL;
	}
	return &r->slots[idx];
}

static inline int rcu_slot(void)
{
	if (likely(rcu_tls.id == rcu_cur_id && rcu_cur_id != 0))
		return 0;
	return rcu_slot_slow();
}

static PyObject *rcu_lock_f(int f)
{
	if (unlikely(rcu_slot() < 0))
		return NULL;
	pk_rcu_read_lock(rcu_tls.r, rcu_tls.slot, f);
	Py_RETURN_NONE;
}

static PyObject *rcu_unlock_f(int f)
{
	if (unlikely(rcu_slot() < 0))
		return NULL;
	if (unlikely(pk_rcu_read_unlock(rcu_tls.slot, f) < 0))
		return raise_errno(EINVAL, f ? "rcu_read_unlock_trace() outside a read-side section"
					     : "rcu_read_unlock() outside a read-side section");
	Py_RETURN_NONE;
}

/*
 * METH_FASTCALL rather than METH_NOARGS: CPython 3.11 specialises calls of
 * fast-call builtins (PRECALL_NO_KW_BUILTIN_FAST) but not of no-arg ones, and
 * the read side is two calls per section.
 */
#define NOARGS_CHECK(name)							\
	if (unlikely(nargs != 0)) {						\
		PyErr_SetString(PyExc_TypeError, name "() takes no arguments");	\
		return NULL;							\
	}

static PyObject *core_rcu_read_lock(PyObject *m, PyObject *const *a, Py_ssize_t nargs)
{
	NOARGS_CHECK("rcu_read_lock")
	return rcu_lock_f(0);
}

static PyObject *core_rcu_read_unlock(PyObject *m, PyObject *const *a, Py_ssize_t nargs)
{
	NOARGS_CHECK("rcu_read_unlock")
	return rcu_unlock_f(0);
}

static PyObject *core_rcu_read_lock_trace(PyObject *m, PyObject *const *a, Py_ssize_t nargs)
{
	NOARGS_CHECK("rcu_read_lock_trace")
	return rcu_lock_f(1);
}

static PyObject *core_rcu_read_unlock_trace(PyObject *m, PyObject *const *a, Py_ssize_t nargs)
{
	NOARGS_CHECK("rcu_read_unlock_trace")
	return rcu_unlock_f(1);
}

static PyObject *core_rcu_read_unlock_exit(PyObject *m, PyObject *const *a, Py_ssize_t n)
{
	return rcu_unlock_f(0);
}

static PyObject *core_rcu_read_unlock_trace_exit(PyObject *m, PyObject *const *a, Py_ssize_t n)
{
	return rcu_unlock_f(1);
}

static PyObject *core_rcu_nesting(PyObject *m, PyObject *arg)
{
	long f = PyLong_AsLong(arg);

	if (f == -1 && PyErr_Occurred())
		return NULL;
	if (f < 0 || f >= PK_RCU_FLAVOURS)
		return raise_errno(EINVAL, "RCU flavour is 0 (rcu) or 1 (tasks trace)");
	if (rcu_tls.id != rcu_cur_id || rcu_cur_id == 0)
		return PyLong_FromLong(0);
	return PyLong_FromUnsignedLong(rcu_tls.slot->nest[f]);
}

/* Arena methods: the grace-period side. */

static int get_flavour(PyObject *o, int *f)
{
	long v = PyLong_AsLong(o);

	if (v == -1 && PyErr_Occurred())
		return 0;
	if (v < 0 || v >= PK_RCU_FLAVOURS) {
		raise_errno(EINVAL, "RCU flavour is 0 (rcu) or 1 (tasks trace)");
		return 0;
	}
	*f = (int)v;
	return 1;
}

/*
 * rcu_start_gp(f) starts the next grace period; rcu_start_gp(f, target) makes
 * sure grace periods up to 'target' are started (a CAS-max, so updaters that
 * took the same cookie share one).  Returns gp_seq afterwards.  The seq_cst
 * RMW is what orders a cookie-taker's earlier unpublishing before every reader
 * that reads the new value (see rcu.h).
 */
static PyObject *arena_rcu_start_gp(ArenaObject *self, PyObject *const *args, Py_ssize_t nargs)
{
	struct pk_rcu_state *r;
	uint64_t target, cur;
	int f;

	if (nargs < 1 || nargs > 2) {
		PyErr_SetString(PyExc_TypeError, "expected rcu_start_gp(flavour[, target])");
		return NULL;
	}
	if (!arena_ok(self) || !get_flavour(args[0], &f))
		return NULL;
	r = arena_rcu(self);
	if (nargs == 1)
		return PyLong_FromUnsignedLongLong(__atomic_add_fetch(&r->gp_seq[f], 1, __ATOMIC_SEQ_CST));
	if (!get_u64(args[1], &target))
		return NULL;
	cur = __atomic_load_n(&r->gp_seq[f], __ATOMIC_SEQ_CST);
	if (target > cur + 1)
		return raise_errno(EINVAL, "RCU cookie from the future (not from get_state)");
	while (cur < target &&
	       !__atomic_compare_exchange_n(&r->gp_seq[f], &cur, target, 0, __ATOMIC_SEQ_CST,
					    __ATOMIC_SEQ_CST))
		;
	return PyLong_FromUnsignedLongLong(cur > target ? cur : target);
}

/* A cookie: the next grace period, which waits for every reader there is now. */
static PyObject *arena_rcu_get_state(ArenaObject *self, PyObject *arg)
{
	int f;

	if (!arena_ok(self) || !get_flavour(arg, &f))
		return NULL;
	/* Orders the caller's earlier unpublishing before the read (see rcu.h). */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	return PyLong_FromUnsignedLongLong(
		__atomic_load_n(&arena_rcu(self)->gp_seq[f], __ATOMIC_SEQ_CST) + 1);
}

static PyObject *arena_rcu_gp_done(ArenaObject *self, PyObject *arg)
{
	int f;

	if (!arena_ok(self) || !get_flavour(arg, &f))
		return NULL;
	return PyLong_FromUnsignedLongLong(__atomic_load_n(&arena_rcu(self)->gp_done[f],
							   __ATOMIC_SEQ_CST));
}

static PyObject *arena_rcu_advance(ArenaObject *self, PyObject *arg)
{
	int f;

	if (!arena_ok(self) || !get_flavour(arg, &f))
		return NULL;
	return PyLong_FromUnsignedLongLong(pk_rcu_advance(arena_rcu(self), f));
}

static PyObject *arena_rcu_blockers(ArenaObject *self, PyObject *const *args, Py_ssize_t nargs)
{
	struct pk_rcu_state *r;
	uint64_t target;
	uint32_t i, hi;
	PyObject *list;
	int f;

	if (nargs != 2) {
		PyErr_SetString(PyExc_TypeError, "expected rcu_blockers(flavour, target)");
		return NULL;
	}
	if (!arena_ok(self) || !get_flavour(args[0], &f) || !get_u64(args[1], &target))
		return NULL;
	r = arena_rcu(self);
	list = PyList_New(0);
	if (list == NULL)
		return NULL;
	hi = __atomic_load_n(&r->hiwater, __ATOMIC_ACQUIRE);
	for (i = 0; i < hi; i++) {
		struct pk_rcu_slot *sl = &r->slots[i];
		uint64_t v = __atomic_load_n(&sl->seq[f], __ATOMIC_SEQ_CST);
		PyObject *t;

		if (v == 0 || v >= target)
			continue;
		t = Py_BuildValue("(IIiK)", i, __atomic_load_n(&sl->tid, __ATOMIC_RELAXED), sl->pid,
				  (unsigned long long)v);
		if (t == NULL || PyList_Append(list, t) < 0) {
			Py_XDECREF(t);
			Py_DECREF(list);
			return NULL;
		}
		Py_DECREF(t);
	}
	return list;
}

static PyObject *arena_rcu_reclaim_dead(ArenaObject *self, PyObject *unused)
{
	if (!arena_ok(self))
		return NULL;
	uint32_t n;

	ARENA_CALL(self, n = rcu_reclaim_dead(arena_rcu(self)));
	return PyLong_FromUnsignedLong(n);
}

static PyObject *arena_rcu_info(ArenaObject *self, PyObject *unused)
{
	struct pk_rcu_state *r;
	PyObject *readers, *d;
	uint32_t i, hi;

	if (!arena_ok(self))
		return NULL;
	r = arena_rcu(self);
	readers = PyList_New(0);
	if (readers == NULL)
		return NULL;
	hi = __atomic_load_n(&r->hiwater, __ATOMIC_ACQUIRE);
	for (i = 0; i < hi; i++) {
		struct pk_rcu_slot *sl = &r->slots[i];
		uint32_t tid = __atomic_load_n(&sl->tid, __ATOMIC_ACQUIRE);
		PyObject *e;

		if (tid == 0)
			continue;
		e = Py_BuildValue("{s:I,s:I,s:i,s:(KK),s:(II),s:K}", "slot", i, "tid", tid,
				  "pid", sl->pid,
				  "seq", (unsigned long long)__atomic_load_n(&sl->seq[0], __ATOMIC_RELAXED),
				  (unsigned long long)__atomic_load_n(&sl->seq[1], __ATOMIC_RELAXED),
				  "nest", __atomic_load_n(&sl->nest[0], __ATOMIC_RELAXED),
				  __atomic_load_n(&sl->nest[1], __ATOMIC_RELAXED),
				  "registered_ns", (unsigned long long)sl->registered_ns);
		if (e == NULL || PyList_Append(readers, e) < 0) {
			Py_XDECREF(e);
			Py_DECREF(readers);
			return NULL;
		}
		Py_DECREF(e);
	}
	d = Py_BuildValue("{s:(KK),s:(KK),s:I,s:I,s:(KK),s:(KK),s:K,s:K,s:K,s:N}",
			  "gp_seq", (unsigned long long)r->gp_seq[0], (unsigned long long)r->gp_seq[1],
			  "gp_done", (unsigned long long)r->gp_done[0],
			  (unsigned long long)r->gp_done[1],
			  "nslots", r->nslots, "hiwater", hi,
			  "cbs_queued", (unsigned long long)r->cbs_queued[0],
			  (unsigned long long)r->cbs_queued[1],
			  "cbs_invoked", (unsigned long long)r->cbs_invoked[0],
			  (unsigned long long)r->cbs_invoked[1],
			  "dead_readers", (unsigned long long)r->dead_readers,
			  "stalls", (unsigned long long)r->stalls,
			  "gp_scans", (unsigned long long)r->gp_scans, "readers", readers);
	return d;
}

static PyObject *arena_rcu_stat_add(ArenaObject *self, PyObject *const *args, Py_ssize_t nargs)
{
	struct pk_rcu_state *r;
	const char *name;
	long long delta;
	uint64_t *p;
	int f;

	if (nargs != 3) {
		PyErr_SetString(PyExc_TypeError, "expected rcu_stat_add(name, flavour, delta)");
		return NULL;
	}
	if (!arena_ok(self) || !(name = PyUnicode_AsUTF8(args[0])) || !get_flavour(args[1], &f))
		return NULL;
	delta = PyLong_AsLongLong(args[2]);
	if (delta == -1 && PyErr_Occurred())
		return NULL;
	r = arena_rcu(self);
	if (!strcmp(name, "cbs_queued"))
		p = &r->cbs_queued[f];
	else if (!strcmp(name, "cbs_invoked"))
		p = &r->cbs_invoked[f];
	else if (!strcmp(name, "stalls"))
		p = &r->stalls;
	else
		return raise_errno(EINVAL, "unknown RCU counter");
	__atomic_fetch_add(p, (uint64_t)delta, __ATOMIC_RELAXED);
	Py_RETURN_NONE;
}

/* The current domain's arena (asking percpu.runtime.domain to create one if needed). */
static int current_arena(ArenaObject **out)
{
	if (rcu_cur == NULL || rcu_cur->closed) {
		PyObject *mod = PyImport_ImportModule("percpu.runtime.domain"), *d;

		if (mod == NULL)
			return -1;
		d = PyObject_CallMethod(mod, "current_domain", NULL);
		Py_DECREF(mod);
		if (d == NULL)
			return -1;
		Py_DECREF(d);
		if (rcu_cur == NULL || rcu_cur->closed) {
			PyErr_SetString(PyExc_RuntimeError, "no current domain");
			return -1;
		}
	}
	*out = rcu_cur;
	return 0;
}

/* ---- Freelist ------------------------------------------------------------ */

static PyObject *core_freelist_size(PyObject *m, PyObject *arg)
{
	long n = PyLong_AsLong(arg);

	if (n == -1 && PyErr_Occurred())
		return NULL;
	if (n <= 0 || n > PK_MAX_CPUS)
		return raise_errno(EINVAL, "nr_cpu_ids out of range");
	return PyLong_FromUnsignedLongLong(pk_fl_size((uint32_t)n));
}

static int freelist_init(FreelistObject *self, PyObject *args, PyObject *kw)
{
	static char *kwlist[] = { "arena", "offset", "create", "flags", NULL };
	/* By def, not PyType_GetModuleState: Py_TYPE(self) may be a Python subclass. */
	PyObject *mod = PyType_GetModuleByDef(Py_TYPE(self), &core_module);
	core_state *st = mod ? PyModule_GetState(mod) : NULL;
	PyObject *arena;
	unsigned long long off;
	int create = 0;
	unsigned int flags = 0;
	struct pk_freelist *s;
	uint32_t nr;

	if (st == NULL)
		return -1;
	if (!PyArg_ParseTupleAndKeywords(args, kw, "O!K|pI:Freelist", kwlist, st->arena_type, &arena,
					 &off, &create, &flags))
		return -1;
	if (self->arena != NULL) {
		PyErr_SetString(PyExc_TypeError, "Freelist already initialised");
		return -1;
	}
	if (!arena_ok((ArenaObject *)arena))
		return -1;
	if (pk_arena_validate(&((ArenaObject *)arena)->a) < 0) {
		raise_errno(EINVAL, "not an initialised percpu arena");
		return -1;
	}
	if (off < ((uint64_t)pk_hdr(&((ArenaObject *)arena)->a)->meta_pages << PK_PAGE_SHIFT)) {
		raise_errno(EINVAL, "a freelist cannot live in the arena's meta pages");
		return -1;
	}
	nr = pk_hdr(&((ArenaObject *)arena)->a)->nr_cpu_ids;
	if (!arena_range((ArenaObject *)arena, off, pk_fl_size(nr), PK_CACHELINE))
		return -1;
	s = (struct pk_freelist *)(((ArenaObject *)arena)->a.base + off);
	if (create) {
		if (READ_ONCE64(&s->magic) != 0) {
			raise_errno(EEXIST, "memory at that offset already holds a freelist");
			return -1;
		}
		s->nr_cpu_ids = nr;
		s->flags = flags & PK_FL_ROBUST;
		smp_store_release64(&s->magic, PK_FL_MAGIC);
	} else if (smp_load_acquire64(&s->magic) != PK_FL_MAGIC || s->nr_cpu_ids != nr) {
		raise_errno(EINVAL, "no freelist at that offset");
		return -1;
	}
	self->arena = (ArenaObject *)Py_NewRef(arena);
	self->off = off;
	self->s = s;
	return 0;
}

static void freelist_dealloc(FreelistObject *self)
{
	PyTypeObject *tp = Py_TYPE(self);

	Py_CLEAR(self->arena);
	tp->tp_free((PyObject *)self);
	Py_DECREF(tp);
}

static inline int fl_ok(FreelistObject *self)
{
	if (unlikely(self->arena == NULL))
		return PyErr_SetString(PyExc_ValueError, "freelist not initialised"), 0;
	if (!arena_ok(self->arena))
		return 0;
	/* destroy() clears the magic: every handle, in every process, stops here. */
	if (unlikely(READ_ONCE64(&self->s->magic) != PK_FL_MAGIC))
		return PyErr_SetString(PyExc_ValueError, "freelist was destroyed"), 0;
	return 1;
}

static PyObject *freelist_invalidate(FreelistObject *self, PyObject *unused)
{
	if (!fl_ok(self))
		return NULL;
	WRITE_ONCE64(&self->s->magic, 0);
	Py_RETURN_NONE;
}

static PyObject *fl_err(int r, uint64_t node)
{
	if (r == -EEXIST)
		return raise_errno(EINVAL, "pcpu_freelist_push: node is already on the freelist "
				   "(double push, refused in robust mode)");
	return raise_errno(r, "pcpu_freelist_push: node outside the element area or misaligned");
}

static PyObject *freelist_push(FreelistObject *self, PyObject *arg)
{
	uint64_t node;
	int cpu, r;

	if (!fl_ok(self) || !get_u64(arg, &node))
		return NULL;
	cpu = this_cpu(self->arena);
	if (cpu < 0)
		return NULL;
	ARENA_CALL(self->arena, r = pk_fl_push(&self->arena->a, self->s, (uint32_t)cpu, node, nmi_depth > 0));
	if (unlikely(r))
		return fl_err(r, node);
	Py_RETURN_NONE;
}

static PyObject *freelist_pop(FreelistObject *self, PyObject *unused)
{
	uint64_t node;
	int cpu;

	if (!fl_ok(self))
		return NULL;
	cpu = this_cpu(self->arena);
	if (cpu < 0)
		return NULL;
	ARENA_CALL(self->arena, node = pk_fl_pop(&self->arena->a, self->s, (uint32_t)cpu, nmi_depth > 0));
	if (node == 0)
		Py_RETURN_NONE;
	return PyLong_FromUnsignedLongLong(node);
}

/* A buffer of native unsigned 64-bit items ('Q', or 'L' where long is 64 bits). */
static int u64_format(const Py_buffer *v)
{
	const char *f = v->format ? v->format : "B";

	if (v->itemsize != 8)
		return 0;
	if (*f == '@' || *f == '=' || *f == '<')
		f++;
	return !strcmp(f, "Q") || (!strcmp(f, "L") && sizeof(long) == 8);
}

/* Nodes from a list/tuple of ints or a buffer of native uint64 ('Q'). */
static PyObject *freelist_push_bulk(FreelistObject *self, PyObject *arg)
{
	uint64_t *nodes = NULL, stackbuf[64];
	Py_buffer view;
	Py_ssize_t n, i;
	int cpu, r, have_view = 0;

	if (!fl_ok(self))
		return NULL;
	if (PyObject_CheckBuffer(arg) && !PyBytes_Check(arg)) {
		if (PyObject_GetBuffer(arg, &view, PyBUF_FORMAT | PyBUF_C_CONTIGUOUS) < 0)
			return NULL;
		have_view = 1;
		if (!u64_format(&view)) {
			PyBuffer_Release(&view);
			return raise_errno(EINVAL, "push_bulk: a buffer of unsigned 64-bit offsets ('Q')");
		}
		n = view.len / 8;
		/* A private copy: the buffer may be shared memory another process changes
		 * between the check of the nodes and their linking. */
		nodes = n <= 64 ? stackbuf : PyMem_Malloc(sizeof(uint64_t) * (size_t)(n ? n : 1));
		if (nodes == NULL) {
			PyBuffer_Release(&view);
			return PyErr_NoMemory();
		}
		memcpy(nodes, view.buf, (size_t)n * 8);
		PyBuffer_Release(&view);
		have_view = 0;
	} else {
		PyObject *seq = PySequence_Fast(arg, "push_bulk takes a sequence or a 'Q' buffer");

		if (seq == NULL)
			return NULL;
		n = PySequence_Fast_GET_SIZE(seq);
		nodes = n <= 64 ? stackbuf : PyMem_Malloc(sizeof(uint64_t) * (size_t)n);
		if (nodes == NULL) {
			Py_DECREF(seq);
			return PyErr_NoMemory();
		}
		for (i = 0; i < n; i++) {
			if (!get_u64(PySequence_Fast_GET_ITEM(seq, i), &nodes[i])) {
				Py_DECREF(seq);
				if (nodes != stackbuf)
					PyMem_Free(nodes);
				return NULL;
			}
		}
		Py_DECREF(seq);
	}
	cpu = this_cpu(self->arena);
	if (cpu < 0) {
		r = -1;
		goto out;
	}
	ARENA_CALL(self->arena,
		   r = pk_fl_push_bulk(&self->arena->a, self->s, (uint32_t)cpu, nodes, (uint64_t)n,
				       nmi_depth > 0));
	if (r)
		fl_err(r, 0);
out:
	if (have_view)
		PyBuffer_Release(&view);
	else if (nodes != stackbuf)
		PyMem_Free(nodes);
	if (r)
		return NULL;
	Py_RETURN_NONE;
}

static PyObject *freelist_pop_bulk(FreelistObject *self, PyObject *arg)
{
	uint64_t stackbuf[64], *out, got, i;
	Py_buffer view;
	PyObject *list;
	long long n;
	int cpu;

	if (!fl_ok(self))
		return NULL;
	if (PyObject_CheckBuffer(arg)) {
		/* Fill a writable 'Q' buffer; returns how many nodes were written. */
		if (PyObject_GetBuffer(arg, &view, PyBUF_WRITABLE | PyBUF_FORMAT | PyBUF_C_CONTIGUOUS) < 0)
			return NULL;
		if (!u64_format(&view)) {
			PyBuffer_Release(&view);
			return raise_errno(EINVAL, "pop_bulk: a writable buffer of unsigned 64-bit offsets ('Q')");
		}
		cpu = this_cpu(self->arena);
		if (cpu < 0) {
			PyBuffer_Release(&view);
			return NULL;
		}
		ARENA_CALL(self->arena,
			   got = pk_fl_pop_bulk(&self->arena->a, self->s, (uint32_t)cpu, nmi_depth > 0,
						view.buf, (uint64_t)view.len / 8));
		PyBuffer_Release(&view);
		return PyLong_FromUnsignedLongLong(got);
	}
	n = PyLong_AsLongLong(arg);
	if (n == -1 && PyErr_Occurred())
		return NULL;
	if (n < 0)
		return raise_errno(EINVAL, "pop_bulk: a negative count");
	if ((uint64_t)n > self->arena->a.size / 8)
		n = (long long)(self->arena->a.size / 8);	/* there cannot be more nodes than that */
	out = n <= 64 ? stackbuf : PyMem_Malloc(sizeof(uint64_t) * (size_t)n);
	if (out == NULL)
		return PyErr_NoMemory();
	cpu = this_cpu(self->arena);
	if (cpu < 0) {
		if (out != stackbuf)
			PyMem_Free(out);
		return NULL;
	}
	ARENA_CALL(self->arena,
		   got = pk_fl_pop_bulk(&self->arena->a, self->s, (uint32_t)cpu, nmi_depth > 0, out, (uint64_t)n));
	list = PyList_New((Py_ssize_t)got);
	for (i = 0; list && i < got; i++) {
		PyObject *o = PyLong_FromUnsignedLongLong(out[i]);

		if (o == NULL) {
			Py_CLEAR(list);
			break;
		}
		PyList_SET_ITEM(list, (Py_ssize_t)i, o);
	}
	if (out != stackbuf)
		PyMem_Free(out);
	return list;
}

static PyObject *freelist_populate(FreelistObject *self, PyObject *const *args, Py_ssize_t nargs)
{
	uint64_t v[3];
	int r;

	if (!fl_ok(self) || !args_u64(args, nargs, 3, v, "populate(buf, elem_size, nr_elems)"))
		return NULL;
	ARENA_CALL(self->arena, r = pk_fl_populate(&self->arena->a, self->s, v[0], v[1], v[2]));
	if (r == -EEXIST)
		return raise_errno(EINVAL, "pcpu_freelist_populate: some of these elements are already "
				      "free (refused in robust mode)");
	if (r)
		return raise_errno(r, "pcpu_freelist_populate: elements outside the arena's data pages or "
				      "the freelist's area, or elem_size not a multiple of 8");
	Py_RETURN_NONE;
}

static PyObject *freelist_set_area(FreelistObject *self, PyObject *const *args, Py_ssize_t nargs)
{
	uint64_t v[4];
	struct pk_freelist *s;

	if (!fl_ok(self) || !args_u64(args, nargs, 4, v, "set_area(base, elem_size, nr_elems, bitmap)"))
		return NULL;
	s = self->s;
	if (s->elem_size)
		return raise_errno(EEXIST, "the freelist's element area is already set");
	if (v[0] < ((uint64_t)pk_hdr(&self->arena->a)->meta_pages << PK_PAGE_SHIFT) || v[0] % 8 ||
	    v[1] < 8 || v[1] % 8 || v[2] == 0 || v[0] >= self->arena->a.size ||
	    v[2] > (self->arena->a.size - v[0]) / v[1])
		return raise_errno(EINVAL, "element area outside the arena or elem_size not a multiple of 8");
	if (v[3] && !arena_range(self->arena, v[3], (v[2] + 63) / 64 * 8, 8))
		return NULL;
	s->area_base = v[0];
	s->nr_elems = v[2];
	s->bitmap_off = v[3];
	__atomic_store_n(&s->elem_size, v[1], __ATOMIC_RELEASE);
	Py_RETURN_NONE;
}

static PyObject *freelist_check(FreelistObject *self, PyObject *unused)
{
	char msg[256];
	uint64_t total;
	int r;

	if (!fl_ok(self))
		return NULL;
	ARENA_CALL(self->arena, r = pk_fl_check(&self->arena->a, self->s, &total, msg, sizeof(msg)));
	if (r)
		return raise_errno(r, r == -EUCLEAN ? msg : "freelist check");
	return PyLong_FromUnsignedLongLong(total);
}

static PyObject *freelist_counts(FreelistObject *self, PyObject *unused)
{
	struct pk_freelist *s;
	PyObject *d, *v;
	uint32_t cpu;

	if (!fl_ok(self))
		return NULL;
	s = self->s;
	d = PyDict_New();
	for (cpu = 0; d && cpu < s->nr_cpu_ids; cpu++) {
		if (!((pk_hdr(&self->arena->a)->possible[cpu / 8] >> (cpu % 8)) & 1))
			continue;
		PyObject *k = PyLong_FromLong(cpu);

		v = PyLong_FromUnsignedLongLong(READ_ONCE64(&s->heads[cpu].count));
		if (k == NULL || v == NULL || PyDict_SetItem(d, k, v) < 0) {
			Py_XDECREF(k);
			Py_XDECREF(v);
			Py_CLEAR(d);
			break;
		}
		Py_DECREF(k);
		Py_DECREF(v);
	}
	if (d) {
		v = PyLong_FromUnsignedLongLong(READ_ONCE64(&s->extralist.count));
		if (v == NULL || PyDict_SetItemString(d, "extra", v) < 0)
			Py_CLEAR(d);
		Py_XDECREF(v);
	}
	return d;
}

static PyObject *freelist_info(FreelistObject *self, PyObject *unused)
{
	struct pk_freelist *s;

	if (!fl_ok(self))
		return NULL;
	s = self->s;
	return Py_BuildValue("{s:K,s:I,s:O,s:K,s:K,s:K,s:K}", "offset", (unsigned long long)self->off,
			     "nr_cpu_ids", s->nr_cpu_ids, "robust",
			     (s->flags & PK_FL_ROBUST) ? Py_True : Py_False,
			     "area_base", (unsigned long long)s->area_base,
			     "elem_size", (unsigned long long)s->elem_size,
			     "nr_elems", (unsigned long long)s->nr_elems,
			     "bitmap_off", (unsigned long long)s->bitmap_off);
}

static PyObject *freelist_get_offset(FreelistObject *self, void *c)
{
	return PyLong_FromUnsignedLongLong(self->off);
}

static PyMethodDef freelist_methods[] = {
	{ "push", (PyCFunction)freelist_push, METH_O,
	  "push(node): to this CPU's head (NMI context: trylock around the CPUs, then the extra list)." },
	{ "pop", (PyCFunction)freelist_pop, METH_NOARGS,
	  "pop() -> node | None: this CPU, the others in wrap order, then the extra list." },
	{ "push_bulk", (PyCFunction)freelist_push_bulk, METH_O,
	  "push_bulk(nodes): as len(nodes) pushes, under one lock (a list or a 'Q' buffer)." },
	{ "pop_bulk", (PyCFunction)freelist_pop_bulk, METH_O,
	  "pop_bulk(n) -> [nodes] | pop_bulk(buffer) -> count: as n pops." },
	{ "populate", (PyCFunction)(void (*)(void))freelist_populate, METH_FASTCALL,
	  "populate(buf, elem_size, nr_elems): the kernel's even split over possible CPUs." },
	{ "set_area", (PyCFunction)(void (*)(void))freelist_set_area, METH_FASTCALL,
	  "set_area(base, elem_size, nr_elems, bitmap_off): the element area (once)." },
	{ "check", (PyCFunction)freelist_check, METH_NOARGS,
	  "Walk every list under its lock; returns the node count, Corrupted if broken." },
	{ "counts", (PyCFunction)freelist_counts, METH_NOARGS, "{cpu: nodes, 'extra': nodes}" },
	{ "info", (PyCFunction)freelist_info, METH_NOARGS, "Layout fields." },
	{ "invalidate", (PyCFunction)freelist_invalidate, METH_NOARGS,
	  "Mark the freelist destroyed (every handle then refuses to use it)." },
	{ NULL }
};

static PyGetSetDef freelist_getset[] = {
	{ "offset", (getter)freelist_get_offset, NULL, "offset of the freelist in the arena", NULL },
	{ NULL }
};

static PyType_Slot freelist_slots[] = {
	{ Py_tp_init, freelist_init },
	{ Py_tp_dealloc, freelist_dealloc },
	{ Py_tp_methods, freelist_methods },
	{ Py_tp_getset, freelist_getset },
	{ Py_tp_doc, "Freelist(arena, offset, create=False, flags=0): kernel/bpf/percpu_freelist.c." },
	{ 0, NULL }
};

/* BASETYPE: percpu.PcpuFreelist subclasses it, so s.push(n) is a plain method call. */
static PyType_Spec freelist_spec = {
	.name = "percpu._core.Freelist",
	.basicsize = sizeof(FreelistObject),
	.flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_BASETYPE,
	.slots = freelist_slots,
};

/* ---- the facade's kmalloc: on the current domain, one C call --------------- */

static PyObject *core_kmalloc(PyObject *m, PyObject *const *args, Py_ssize_t nargs)
{
	ArenaObject *a;

	if (nargs != 1) {
		PyErr_SetString(PyExc_TypeError, "kmalloc(size)");
		return NULL;
	}
	PyObject *res;

	if (current_arena(&a) < 0)
		return NULL;
	Py_INCREF(a);	/* the call may release the GIL: keep the mapping alive */
	res = arena_kmalloc(a, args, 1);
	Py_DECREF(a);
	return res;
}

static PyObject *core_kzalloc(PyObject *m, PyObject *const *args, Py_ssize_t nargs)
{
	ArenaObject *a;

	if (nargs != 1) {
		PyErr_SetString(PyExc_TypeError, "kzalloc(size)");
		return NULL;
	}
	PyObject *res;

	if (current_arena(&a) < 0)
		return NULL;
	Py_INCREF(a);	/* the call may release the GIL: keep the mapping alive */
	res = arena_kzalloc(a, args[0]);
	Py_DECREF(a);
	return res;
}

static PyObject *core_kfree(PyObject *m, PyObject *const *args, Py_ssize_t nargs)
{
	ArenaObject *a;

	if (nargs != 1) {
		PyErr_SetString(PyExc_TypeError, "kfree(ptr)");
		return NULL;
	}
	PyObject *res;

	if (current_arena(&a) < 0)
		return NULL;
	Py_INCREF(a);	/* the call may release the GIL: keep the mapping alive */
	res = arena_kfree(a, args[0]);
	Py_DECREF(a);
	return res;
}

/* ---- module ------------------------------------------------------------- */

static PyMethodDef core_methods[] = {
	{ "noop", core_noop, METH_NOARGS, "Do nothing: the benchmarks' C-call floor." },
	{ "sched_getcpu", core_sched_getcpu, METH_NOARGS, "The CPU this thread runs on now." },
	{ "gettid", core_gettid, METH_NOARGS, "This thread's TID (cached; reset after fork)." },
	{ "set_task_name", core_set_task_name, METH_O,
	  "prctl(PR_SET_NAME): the name ps and top show (15 bytes)." },
	{ "get_task_name", core_get_task_name, METH_NOARGS, "prctl(PR_GET_NAME)." },
	{ "rcu_set_current", core_rcu_set_current, METH_O,
	  "Mirror the process's current domain for the RCU read side (Arena or None)." },
	{ "rcu_read_lock", (PyCFunction)(void (*)(void))core_rcu_read_lock, METH_FASTCALL,
	  "rcu_read_lock(): enter a read-side section of the current domain (nests)." },
	{ "rcu_read_unlock", (PyCFunction)(void (*)(void))core_rcu_read_unlock, METH_FASTCALL,
	  "rcu_read_unlock(): leave it; EINVAL outside a section." },
	{ "rcu_read_lock_trace", (PyCFunction)(void (*)(void))core_rcu_read_lock_trace, METH_FASTCALL,
	  "rcu_read_lock_trace(): enter a Tasks Trace read-side section." },
	{ "rcu_read_unlock_trace", (PyCFunction)(void (*)(void))core_rcu_read_unlock_trace,
	  METH_FASTCALL, "rcu_read_unlock_trace()" },
	{ "rcu_read_unlock_exit", (PyCFunction)(void (*)(void))core_rcu_read_unlock_exit, METH_FASTCALL,
	  "rcu_read_unlock() taking __exit__'s arguments." },
	{ "rcu_read_unlock_trace_exit", (PyCFunction)(void (*)(void))core_rcu_read_unlock_trace_exit,
	  METH_FASTCALL, "rcu_read_unlock_trace() taking __exit__'s arguments." },
	{ "rcu_nesting", core_rcu_nesting, METH_O,
	  "rcu_nesting(flavour) -> this thread's read-side nesting depth in the current domain." },
	{ "smp_processor_id", (PyCFunction)(void (*)(void))core_smp_processor_id, METH_FASTCALL,
	  "The CPU this thread acts as: on_cpu override, pinned worker CPU, or sched_getcpu folded." },
	{ "set_cpu_override", core_set_cpu_override, METH_O,
	  "Set this thread's on_cpu override (None clears); returns the previous one." },
	{ "cpu_override", core_cpu_override, METH_NOARGS, "This thread's on_cpu override or None." },
	{ "set_pinned_cpu", core_set_pinned_cpu, METH_O,
	  "Declare this process a worker of a CPU (None clears); returns the previous one." },
	{ "pinned_cpu", core_pinned_cpu, METH_NOARGS, "The process's worker CPU or None." },
	{ "nmi_enter", core_nmi_enter, METH_NOARGS, "Enter NMI context (this thread, nests)." },
	{ "nmi_exit", core_nmi_exit, METH_NOARGS, "Leave NMI context." },
	{ "in_nmi", core_in_nmi, METH_NOARGS, "True in NMI context." },
	{ "freelist_size", core_freelist_size, METH_O, "Bytes of a freelist for nr_cpu_ids CPUs." },
	{ "kmalloc", (PyCFunction)(void (*)(void))core_kmalloc, METH_FASTCALL,
	  "kmalloc(size) -> offset | None, in the current domain." },
	{ "kzalloc", (PyCFunction)(void (*)(void))core_kzalloc, METH_FASTCALL,
	  "kzalloc(size) -> offset | None, in the current domain." },
	{ "kfree", (PyCFunction)(void (*)(void))core_kfree, METH_FASTCALL,
	  "kfree(ptr): free an allocation of the current domain; kfree(0) does nothing." },
	MA_MODULE_METHODS
	CM_MODULE_METHODS
	XP_MODULE_METHODS
	CPUMAP_MODULE_METHODS
	MAPS_MODULE_METHODS
	{ "pcpu_set_hook", core_pcpu_set_hook, METH_O,
	  "pcpu_set_hook(callable | None): receives the per-CPU allocator's events." },
	{ "memcg_set_active", core_memcg_set_active, METH_VARARGS,
	  "memcg_set_active(arena | None, id) -> previous: charge this thread's allocations." },
	{ "memcg_restore", core_memcg_restore, METH_VARARGS,
	  "memcg_restore(previous): undo memcg_set_active." },
	{ "task_alive", core_task_alive, METH_O,
	  "True if the TID names a live, non-zombie task (the lock's owner probe)." },
	{ NULL }
};


/*
 * pk_lock_sleep_hook: release the GIL while an internal lock is slept on, if
 * this thread holds it (a Lock.lock() wait has released it already).  The
 * arena cannot be unmapped meanwhile: every C call that can wait on an internal
 * lock runs inside ARENA_CALL, which counts it in 'inflight'.
 */
static __thread PyThreadState *sleep_ts;

static void gil_sleep_hook(int sleeping)
{
	if (sleeping) {
		if (PyGILState_Check())
			sleep_ts = PyEval_SaveThread();
	} else if (sleep_ts) {
		PyThreadState *ts = sleep_ts;

		sleep_ts = NULL;
		PyEval_RestoreThread(ts);
	}
}

static void atfork_child(void)
{
	pk_tid_reset();
	rcu_tls.id = 0;	/* the child's thread must claim its own reader slot */
}

static int core_exec(PyObject *m)
{
	core_state *st = PyModule_GetState(m);
	static int atfork_done;

	st->arena_type = (PyTypeObject *)PyType_FromModuleAndSpec(m, &arena_spec, NULL);
	if (st->arena_type == NULL || PyModule_AddType(m, st->arena_type) < 0)
		return -1;
	st->lock_type = (PyTypeObject *)PyType_FromModuleAndSpec(m, &lock_spec, NULL);
	if (st->lock_type == NULL || PyModule_AddType(m, st->lock_type) < 0)
		return -1;
	st->freelist_type = (PyTypeObject *)PyType_FromModuleAndSpec(m, &freelist_spec, NULL);
	if (st->freelist_type == NULL || PyModule_AddType(m, st->freelist_type) < 0)
		return -1;
	st->ma_type = (PyTypeObject *)PyType_FromModuleAndSpec(m, &ma_spec, NULL);
	if (st->ma_type == NULL || PyModule_AddType(m, st->ma_type) < 0)
		return -1;
	st->cmref_type = (PyTypeObject *)PyType_FromModuleAndSpec(m, &cmref_spec, NULL);
	if (st->cmref_type == NULL || PyModule_AddType(m, st->cmref_type) < 0)
		return -1;
	st->counter_type = (PyTypeObject *)PyType_FromModuleAndSpec(m, &counter_spec, NULL);
	if (st->counter_type == NULL || PyModule_AddType(m, st->counter_type) < 0)
		return -1;
	st->cpumap_type = (PyTypeObject *)PyType_FromModuleAndSpec(m, &cpumap_spec, NULL);
	if (st->cpumap_type == NULL || PyModule_AddType(m, st->cpumap_type) < 0)
		return -1;
	st->worker_type = (PyTypeObject *)PyType_FromModuleAndSpec(m, &worker_spec, NULL);
	if (st->worker_type == NULL || PyModule_AddType(m, st->worker_type) < 0)
		return -1;
	st->htab_type = (PyTypeObject *)PyType_FromModuleAndSpec(m, &htab_spec, NULL);
	if (st->htab_type == NULL || PyModule_AddType(m, st->htab_type) < 0)
		return -1;
	st->array_type = (PyTypeObject *)PyType_FromModuleAndSpec(m, &array_spec, NULL);
	if (st->array_type == NULL || PyModule_AddType(m, st->array_type) < 0)
		return -1;
	st->xdpframe_type = (PyTypeObject *)PyType_FromModuleAndSpec(m, &xdpframe_spec, NULL);
	if (st->xdpframe_type == NULL || PyModule_AddType(m, st->xdpframe_type) < 0)
		return -1;
	st->framepool_type = (PyTypeObject *)PyType_FromModuleAndSpec(m, &fpool_spec, NULL);
	if (st->framepool_type == NULL || PyModule_AddType(m, st->framepool_type) < 0)
		return -1;
	st->rxqueue_type = (PyTypeObject *)PyType_FromModuleAndSpec(m, &rxqueue_spec, NULL);
	if (st->rxqueue_type == NULL || PyModule_AddType(m, st->rxqueue_type) < 0)
		return -1;
	st->pktlist_type = (PyTypeObject *)PyType_FromModuleAndSpec(m, &pktlist_spec, NULL);
	if (st->pktlist_type == NULL || PyModule_AddType(m, st->pktlist_type) < 0)
		return -1;
	if (!atfork_done) {
		pk_lock_sleep_hook = gil_sleep_hook;
		pthread_atfork(NULL, NULL, atfork_child);
		atfork_done = 1;
	}
#define ADD_INT(name, v) if (PyModule_AddIntConstant(m, name, (long)(v)) < 0) return -1
	ADD_INT("PAGE_SIZE", PK_PAGE_SIZE);
	ADD_INT("CACHELINE", PK_CACHELINE);
	ADD_INT("MAX_CPUS", PK_MAX_CPUS);
	ADD_INT("MAX_CLASSES", PK_MAX_CLASSES);
	ADD_INT("VERSION", PK_VERSION);
	ADD_INT("LOCK_SIZE", sizeof(struct pk_lock));
	ADD_INT("REGISTRY_LOCK_OFF", offsetof(struct pk_header, registry_lock));
	ADD_INT("PAGE_LOCK_OFF", offsetof(struct pk_header, page_lock));
	ADD_INT("USER_OFF", offsetof(struct pk_header, user));
	ADD_INT("CLASSES_OFF", offsetof(struct pk_header, classes));
	ADD_INT("CLASS_STRIDE", sizeof(struct pk_slab_class));
	ADD_INT("RCU_FLAVOURS", PK_RCU_FLAVOURS);
	ADD_INT("FREELIST_ROBUST", PK_FL_ROBUST);
	ADD_INT("PCPU_MIN_UNIT_SIZE", PCPU_MIN_UNIT_SIZE);
	ADD_INT("PCPU_MIN_ALLOC_SIZE", PCPU_MIN_ALLOC_SIZE);
	ADD_INT("PCPU_EMPTY_POP_PAGES_LOW", PCPU_EMPTY_POP_PAGES_LOW);
	ADD_INT("PCPU_EMPTY_POP_PAGES_HIGH", PCPU_EMPTY_POP_PAGES_HIGH);
	ADD_INT("PERCPU_MODULE_RESERVE", PERCPU_MODULE_RESERVE);
	ADD_INT("PERCPU_DYNAMIC_RESERVE", PERCPU_DYNAMIC_RESERVE);
	ADD_INT("PERCPU_DYNAMIC_EARLY_SIZE", PERCPU_DYNAMIC_EARLY_SIZE);
	ADD_INT("MEMCG_MAX", PK_MEMCG_MAX);
	ADD_INT("USER_WORDS", sizeof(((struct pk_header *)0)->user) / 8);
	return 0;
}

static int core_traverse(PyObject *m, visitproc visit, void *arg)
{
	core_state *st = PyModule_GetState(m);

	Py_VISIT(st->arena_type);
	Py_VISIT(st->lock_type);
	Py_VISIT(st->freelist_type);
	Py_VISIT(st->counter_type);
	Py_VISIT(st->ma_type);
	Py_VISIT(st->cmref_type);
	Py_VISIT(st->cpumap_type);
	Py_VISIT(st->worker_type);
	Py_VISIT(st->xdpframe_type);
	Py_VISIT(st->htab_type);
	Py_VISIT(st->array_type);
	Py_VISIT(st->pktlist_type);
	Py_VISIT(st->framepool_type);
	Py_VISIT(st->rxqueue_type);
	return 0;
}

static int core_clear(PyObject *m)
{
	core_state *st = PyModule_GetState(m);

	Py_CLEAR(st->arena_type);
	Py_CLEAR(st->lock_type);
	Py_CLEAR(st->freelist_type);
	Py_CLEAR(st->counter_type);
	Py_CLEAR(st->ma_type);
	Py_CLEAR(st->cmref_type);
	Py_CLEAR(st->cpumap_type);
	Py_CLEAR(st->worker_type);
	Py_CLEAR(st->xdpframe_type);
	Py_CLEAR(st->htab_type);
	Py_CLEAR(st->array_type);
	Py_CLEAR(st->pktlist_type);
	Py_CLEAR(st->framepool_type);
	Py_CLEAR(st->rxqueue_type);
	return 0;
}

static void core_free(void *m)
{
	core_clear((PyObject *)m);
}

static PyModuleDef_Slot core_slots[] = {
	{ Py_mod_exec, core_exec },
	{ 0, NULL }
};

static struct PyModuleDef core_module = {
	PyModuleDef_HEAD_INIT,
	.m_name = "percpu._core",
	.m_doc = "The C core of percpu: atomics, the shared lock, llist and the arena allocators.",
	.m_size = sizeof(core_state),
	.m_methods = core_methods,
	.m_slots = core_slots,
	.m_traverse = core_traverse,
	.m_clear = core_clear,
	.m_free = core_free,
};

PyMODINIT_FUNC PyInit__core(void)
{
	return PyModuleDef_Init(&core_module);
}
