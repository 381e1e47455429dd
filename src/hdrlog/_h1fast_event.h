/* decode_event of hdrlog._h1fast: one ring-buffer record decoded into an Event (hdrlog.events.decode's common
 * case), with the Event type's slot offsets found once per type. Included by _h1fast.c only, after
 * _h1fast_head.h. */

/* decode_event(raw, wall_offset_ns, Event, addr_cache, comm_cache): hdrlog.events.decode's common case in one call.
 *
 * raw: one ring-buffer record (struct hdrlog_event of probes/hdrlog.h, little-endian, 104 bytes, then the data).
 * Returns Event(ts + wall_offset_ns, conn, pid, tid, len, offset, lost, kind, fn, dir, attr, local, peer, comm,
 * fd, data) built exactly as the Python decode builds it, taking local/peer from addr_cache (keyed by the 40-byte
 * tuple, only when attr is not 0) and comm from comm_cache (keyed by the 16-byte comm), or None when the Python
 * decode must run: a record shorter than its header, a tuple or comm not in its cache yet (the Python side fills
 * the caches), a timestamp sum outside 64 bits.  tests/test_events.py checks both decode every fixture event, and
 * random records, identically. */
#define EV_HDR 104
#define EV_NFIELDS 16

/* Event (a slots dataclass whose __init__ only assigns its fields in order) is made without running that __init__:
 * allocated as object.__new__ would (tp_alloc) and its 16 slots filled at the offsets of their member descriptors,
 * ~0.2 µs less per event. ev_slots finds them once per type; a type that does not look so (a field missing, not an
 * object slot, a __post_init__) is called instead. */
static const char *const ev_names[EV_NFIELDS] = {"ts_ns", "conn", "pid", "tid", "length", "offset", "lost", "kind",
                                                  "fn", "dir", "attr", "local", "peer", "comm", "fd", "data"};
static PyTypeObject *ev_type;    /* the type ev_off describes (a strong reference), or NULL */
static int ev_direct;            /* 1: fill its slots directly, 0: call it */
static Py_ssize_t ev_off[EV_NFIELDS];

static void ev_slots(PyObject *type) {
    Py_XDECREF(ev_type);
    Py_INCREF(type);
    ev_type = (PyTypeObject *)type;
    ev_direct = 0;
    if (!PyType_Check(type) || ev_type->tp_alloc == NULL || ev_type->tp_dict == NULL)
        return;
    if (PyDict_GetItemString(ev_type->tp_dict, "__post_init__") != NULL || ev_type->tp_itemsize != 0)
        return;
    for (int k = 0; k < EV_NFIELDS; k++) {
        PyObject *d = PyDict_GetItemString(ev_type->tp_dict, ev_names[k]);
        if (d == NULL || !Py_IS_TYPE(d, &PyMemberDescr_Type))
            return;
        PyMemberDef *m = ((PyMemberDescrObject *)d)->d_member;
        if (m->type != T_OBJECT_EX || (m->flags & READONLY) || m->offset < (Py_ssize_t)sizeof(PyObject) ||
            m->offset + (Py_ssize_t)sizeof(PyObject *) > ev_type->tp_basicsize)
            return;
        ev_off[k] = m->offset;
    }
    ev_direct = 1;
}

static PyObject *ev_make(PyObject *type, PyObject **fields) {
    if ((PyTypeObject *)type != ev_type)
        ev_slots(type);
    if (!ev_direct)
        return PyObject_Vectorcall(type, fields, EV_NFIELDS, NULL);
    PyObject *ev = ev_type->tp_alloc(ev_type, 0);
    if (ev == NULL)
        return NULL;
    for (int k = 0; k < EV_NFIELDS; k++) {
        Py_INCREF(fields[k]);
        *(PyObject **)((char *)ev + ev_off[k]) = fields[k];
    }
    return ev;
}
static PyObject *decode_event(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "decode_event(raw, wall_offset_ns, Event, addr_cache, comm_cache) takes 5 arguments");
        return NULL;
    }
    PyObject *addr_cache = args[3], *comm_cache = args[4];
    if (!PyDict_CheckExact(addr_cache) || !PyDict_CheckExact(comm_cache)) {
        PyErr_SetString(PyExc_TypeError, "decode_event: the caches must be dicts");
        return NULL;
    }
    long long off = PyLong_AsLongLong(args[1]);
    if (off == -1 && PyErr_Occurred()) {
        PyErr_Clear();  /* not a 64-bit int: the Python decode adds it */
        Py_RETURN_NONE;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) {
        PyErr_Clear();  /* not a contiguous buffer: the Python decode says what is wrong */
        Py_RETURN_NONE;
    }
    const unsigned char *b = (const unsigned char *)view.buf;
    Py_ssize_t n = view.len;
    PyObject *res = NULL, *ev_args[16] = {0};
    int k;
    if (n < EV_HDR)
        goto none;
    unsigned long long ts, conn;
    uint32_t u32[6];  /* pid, tid, len, cap, offset, lost */
    int32_t fd;
    memcpy(&ts, b, 8);
    memcpy(&conn, b + 8, 8);
    memcpy(u32, b + 16, 24);
    memcpy(&fd, b + 100, 4);
#if PY_BIG_ENDIAN
#error "hdrlog events are little-endian; decode_event reads them natively"
#endif
    __int128 wall = (__int128)ts + off;
    if (wall < 0 || wall > (__int128)UINT64_MAX)
        goto none;
    PyObject *local = Py_None, *peer = Py_None, *comm;
    unsigned attr = b[43];
    if (attr) {
        PyObject *key = PyBytes_FromStringAndSize((const char *)b + 44, 40);
        if (key == NULL)
            goto error;
        PyObject *pair = PyDict_GetItemWithError(addr_cache, key);
        Py_DECREF(key);
        if (pair == NULL) {
            if (PyErr_Occurred())
                goto error;
            goto none;
        }
        if (!PyTuple_CheckExact(pair) || PyTuple_GET_SIZE(pair) != 2)
            goto none;
        local = PyTuple_GET_ITEM(pair, 0);
        peer = PyTuple_GET_ITEM(pair, 1);
    }
    {
        PyObject *key = PyBytes_FromStringAndSize((const char *)b + 84, 16);
        if (key == NULL)
            goto error;
        comm = PyDict_GetItemWithError(comm_cache, key);
        Py_DECREF(key);
        if (comm == NULL) {
            if (PyErr_Occurred())
                goto error;
            goto none;
        }
        /* the Python decode's `_comm_cache.get(comm) or _comm(comm)`: an empty cached name is computed again (the
         * same empty string, so the result is the same: taking the cached one is exact) */
    }
    Py_ssize_t cap = u32[3], avail = n - EV_HDR;
    if (cap > avail)
        cap = avail;
    ev_args[0] = PyLong_FromUnsignedLongLong((unsigned long long)wall);
    ev_args[1] = PyLong_FromUnsignedLongLong(conn);
    ev_args[2] = PyLong_FromUnsignedLong(u32[0]);
    ev_args[3] = PyLong_FromUnsignedLong(u32[1]);
    ev_args[4] = PyLong_FromUnsignedLong(u32[2]);
    ev_args[5] = PyLong_FromUnsignedLong(u32[4]);
    ev_args[6] = PyLong_FromUnsignedLong(u32[5]);
    ev_args[7] = PyLong_FromLong(b[40]);
    ev_args[8] = PyLong_FromLong(b[41]);
    ev_args[9] = PyLong_FromLong(b[42]);
    ev_args[10] = PyLong_FromLong(attr);
    Py_INCREF(local);
    ev_args[11] = local;
    Py_INCREF(peer);
    ev_args[12] = peer;
    Py_INCREF(comm);
    ev_args[13] = comm;
    ev_args[14] = PyLong_FromLong(fd);
    ev_args[15] = PyBytes_FromStringAndSize((const char *)b + EV_HDR, cap);
    for (k = 0; k < 16; k++)
        if (ev_args[k] == NULL)
            goto error;
    res = ev_make(args[2], ev_args);
    goto done;
none:
    res = Py_None;
    Py_INCREF(res);
    goto done;
error:
    res = NULL;
done:
    for (k = 0; k < 16; k++)
        Py_XDECREF(ev_args[k]);
    PyBuffer_Release(&view);
    return res;
}
