/* hdrlog._ringfast: C fast path of the ring buffer reader (hdrlog.ringbuf).
 *
 * walk(cons, data, base, mask, callback[, decode, wall_offset_ns, event_type, addr_cache, comm_cache, on_event,
 *      fork_kind]) -> int
 *
 * RingReader.consume's loop in one call per batch: every committed record between the consumer position (cons: a
 * writable memoryview of format "Q", the consumer page) and the producer position (the first 8 bytes of data: a
 * memoryview of the producer page and the data area mapped twice after it, which begins at offset base) is handed
 * over as a slice of data (a memoryview holding data's export, as the Python loop's slices do), and the consumer
 * position is published once, with one 8-byte release store, also when a callback raises (the record that raised
 * is not read again). A busy (reserved, not committed) record ends the batch; discarded records are skipped.
 * Returns the number of records handed over, or -1 when the ring was empty (consumer position >= producer's).
 *
 * With the seven optional arguments (Pipeline.ring_dispatch), a record is decoded here by decode (hdrlog._h1fast's
 * decode_event: decode(raw, wall_offset_ns, event_type, addr_cache, comm_cache) -> Event or None) and the Event
 * given to on_event directly; a record decode declines (None) or a FORK event goes to callback (Pipeline.on_raw,
 * which decodes it again and does all the rest), so the output is what on_raw alone would produce.
 *
 * Layout (kernel/bpf/ringbuf.c): each record is u32 len (bit 31 busy, bit 30 discarded), u32 page offset, then len
 * bytes, the whole rounded up to 8. No state is kept between calls. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#define RB_BUSY (1u << 31)
#define RB_DISCARD (1u << 30)
#define RB_HDR 8

static PyObject *str_kind;  /* "kind", interned once: constant, shared by every reader */

static PyObject *walk(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5 && nargs != 12) {
        PyErr_SetString(PyExc_TypeError, "walk(cons, data, base, mask, callback[, decode, wall_offset_ns, "
                                         "event_type, addr_cache, comm_cache, on_event, fork_kind]) takes 5 or 12 arguments");
        return NULL;
    }
    PyObject *data = args[1], *cb = args[4];
    Py_ssize_t base = PyLong_AsSsize_t(args[2]);
    if (base == -1 && PyErr_Occurred())
        return NULL;
    unsigned long long mask = PyLong_AsUnsignedLongLong(args[3]);
    if (mask == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    PyObject *decode = NULL, *on_event = NULL;
    long fork_kind = -1;
    if (nargs == 12) {
        decode = args[5];
        on_event = args[10];
        fork_kind = PyLong_AsLong(args[11]);
        if (fork_kind == -1 && PyErr_Occurred())
            return NULL;
    }
    Py_buffer cv, dv;
    if (PyObject_GetBuffer(args[0], &cv, PyBUF_WRITABLE) < 0)
        return NULL;
    if (PyObject_GetBuffer(data, &dv, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&cv);
        return NULL;
    }
    PyObject *res = NULL;
    if (cv.len < 8 || ((uintptr_t)cv.buf & 7) || dv.len < 8 || ((uintptr_t)dv.buf & 7) || base < 8 ||
        base > dv.len || mask >= (unsigned long long)(dv.len - base)) {
        PyErr_SetString(PyExc_ValueError, "walk: the positions or the data area do not fit the buffers given");
        goto out;
    }
    uint64_t *cons_p = (uint64_t *)cv.buf;
    const unsigned char *d = (const unsigned char *)dv.buf;
    uint64_t cons = __atomic_load_n(cons_p, __ATOMIC_RELAXED);  /* only this process writes it */
    uint64_t prod = __atomic_load_n((const uint64_t *)d, __ATOMIC_ACQUIRE);
    if (cons >= prod) {
        res = PyLong_FromLong(-1);
        goto out;
    }
    long n = 0;
    int failed = 0;
    while (cons < prod) {
        Py_ssize_t off = base + (Py_ssize_t)(cons & mask);
        if (off + 4 > dv.len || (off & 3)) {  /* never with the kernel's layout (positions are multiples of 8) */
            PyErr_SetString(PyExc_ValueError, "walk: a record header lies past the data area or is misaligned");
            failed = 1;
            break;
        }
        uint32_t ln = __atomic_load_n((const uint32_t *)(d + off), __ATOMIC_ACQUIRE);
        if (ln & RB_BUSY)
            break;  /* reserved but not committed yet: the rest of the batch waits for it */
        uint32_t length = ln & ~(RB_BUSY | RB_DISCARD);
        cons += ((uint64_t)length + RB_HDR + 7) & ~(uint64_t)7;  /* before the callback: a record that raises is not re-read */
        if (ln & RB_DISCARD)
            continue;
        Py_ssize_t lo = off + RB_HDR, hi = lo + (Py_ssize_t)length;
        if (lo > dv.len)
            lo = dv.len;  /* clamped as the Python loop's slice would be */
        if (hi > dv.len)
            hi = dv.len;
        PyObject *mv = PySequence_GetSlice(data, lo, hi);
        if (mv == NULL) {
            failed = 1;
            break;
        }
        PyObject *r;
        if (decode != NULL) {
            PyObject *dargs[5] = {mv, args[6], args[7], args[8], args[9]};
            PyObject *ev = PyObject_Vectorcall(decode, dargs, 5, NULL);
            if (ev == NULL) {
                Py_DECREF(mv);
                failed = 1;
                break;
            }
            int direct = 0;
            if (ev != Py_None) {
                PyObject *kind = PyObject_GetAttr(ev, str_kind);
                if (kind == NULL) {
                    Py_DECREF(ev);
                    Py_DECREF(mv);
                    failed = 1;
                    break;
                }
                long k = PyLong_Check(kind) ? PyLong_AsLong(kind) : -1;
                Py_DECREF(kind);
                if (k == -1 && PyErr_Occurred()) {
                    Py_DECREF(ev);
                    Py_DECREF(mv);
                    failed = 1;
                    break;
                }
                direct = k != fork_kind;
            }
            if (direct) {
                r = PyObject_Vectorcall(on_event, &ev, 1, NULL);
            } else {
                r = PyObject_Vectorcall(cb, &mv, 1, NULL);
            }
            Py_DECREF(ev);
        } else {
            r = PyObject_Vectorcall(cb, &mv, 1, NULL);
        }
        Py_DECREF(mv);
        if (r == NULL) {
            failed = 1;
            break;
        }
        Py_DECREF(r);
        n++;
    }
    __atomic_store_n(cons_p, cons, __ATOMIC_RELEASE);  /* publish (one 8-byte store): the producer may reuse the space */
    if (!failed)
        res = PyLong_FromLong(n);
out:
    PyBuffer_Release(&dv);
    PyBuffer_Release(&cv);
    return res;
}

static PyMethodDef methods[] = {
    {"walk", (PyCFunction)(void (*)(void))walk, METH_FASTCALL,
     "walk(cons, data, base, mask, callback[, decode, wall_offset_ns, event_type, addr_cache, comm_cache, "
     "on_event, fork_kind]) -> records handed over, or -1 if the ring was empty. See the module source."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_ringfast", "C fast path of the ring buffer reader (hdrlog.ringbuf).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__ringfast(void) {
    if (str_kind == NULL) {
        str_kind = PyUnicode_InternFromString("kind");
        if (str_kind == NULL)
            return NULL;
    }
    return PyModule_Create(&module);
}
