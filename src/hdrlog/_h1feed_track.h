/* Track and its bound on_event (TrackedOnEvent) of hdrlog._h1feed: Tracker.on_event for a data event of a known
 * connection in C (the C feed, then the Deliverer), the rest left to Python. Included by _h1feed.c only, after
 * _h1feed_deliver.h (it uses Feeder, Deliverer and small_int). */

/* ------------------------------------------------------------------------------------------ tracking */

/* Track(Event, Conn, on_event, feeder, deliverer).bind(tracker) -> a callable that is tracker.on_event for a data
 * event of a known connection (hdrlog.conntrack.Tracker.on_event's first part, then the C feed and the Deliverer):
 * anything else (another kind, a new connection, an event or connection of another type) is passed to the Python
 * on_event(tracker, ev) untouched; the parts of a data event that are not the common case call the Tracker's own
 * methods (_lost, _on_data when the C feed declines, _run and release_held for a held request, _truncated). It
 * holds the tracker weakly (no reference cycle through the tracker's __dict__). */
enum { E_TS, E_CONN, E_PID, E_LENGTH, E_OFFSET, E_LOST, E_KIND, E_DIR, E_ATTR, E_LOCAL, E_PEER, E_FD, E_DATA, E_N };
static const char *const e_names[E_N] = {"ts_ns", "conn", "pid", "length", "offset", "lost", "kind", "dir", "attr",
                                         "local", "peer", "fd", "data"};
enum { T_PAIRER, T_PARSERS, T_H2, T_LAST, T_PEER, T_LOCAL, T_ATTR, T_N };
static const char *const t_names[T_N] = {"pairer", "parsers", "h2", "last_ns", "peer", "local", "attr"};

typedef struct {
    PyObject_HEAD
    PyTypeObject *etype, *ctype;
    Py_ssize_t eoff[E_N], toff[T_N];
    PyObject *on_event, *feeder, *deliverer;
    PyObject *s_conns, *s_counts, *s_events, *s_fds, *s_on_event, *s_learn, *s_lost, *s_on_data, *s_run,
        *s_release_held, *s_truncated, *s_emit, *s_held, *one;
} Track;

typedef struct {
    PyObject_HEAD
    Track *T;
    PyObject *wr;  /* weak reference to the tracker */
    vectorcallfunc vectorcall;
} Bound;

static void track_dealloc(Track *T) {
    PyObject_GC_UnTrack(T);
    Py_CLEAR(T->etype);
    Py_CLEAR(T->ctype);
    Py_CLEAR(T->on_event);
    Py_CLEAR(T->feeder);
    Py_CLEAR(T->deliverer);
    PyObject **strs[] = {&T->s_conns, &T->s_counts, &T->s_events, &T->s_fds, &T->s_on_event, &T->s_learn, &T->s_lost,
                         &T->s_on_data, &T->s_run, &T->s_release_held, &T->s_truncated, &T->s_emit, &T->s_held,
                         &T->one};
    for (size_t k = 0; k < sizeof(strs) / sizeof(strs[0]); k++)
        Py_CLEAR(*strs[k]);
    Py_TYPE(T)->tp_free((PyObject *)T);
}

static int track_traverse(Track *T, visitproc visit, void *arg) {
    Py_VISIT(T->etype);
    Py_VISIT(T->ctype);
    Py_VISIT(T->on_event);
    Py_VISIT(T->feeder);
    Py_VISIT(T->deliverer);
    return 0;
}

static PyTypeObject FeederType, DelivererType, BoundType;

static PyObject *track_new(PyTypeObject *tp, PyObject *args, PyObject *kw) {
    PyObject *et, *ct, *on_event, *feeder, *deliverer;
    if (!PyArg_ParseTuple(args, "OOOO!O!", &et, &ct, &on_event, &FeederType, &feeder, &DelivererType, &deliverer))
        return NULL;
    Track *T = (Track *)tp->tp_alloc(tp, 0);
    if (T == NULL)
        return NULL;
    T->etype = (PyTypeObject *)Py_NewRef(et);
    T->ctype = (PyTypeObject *)Py_NewRef(ct);
    T->on_event = Py_NewRef(on_event);
    T->feeder = Py_NewRef(feeder);
    T->deliverer = Py_NewRef(deliverer);
    if (!find_slots(T->etype, e_names, E_N, T->eoff) || !find_slots(T->ctype, t_names, T_N, T->toff) ||
        ((Deliverer *)deliverer)->ctype != T->ctype) {
        PyErr_SetString(PyExc_TypeError, "Track: a type's fields are not the object slots expected");
        Py_DECREF(T);
        return NULL;
    }
    struct { PyObject **dst; const char *s; } strs[] = {
        {&T->s_conns, "conns"}, {&T->s_counts, "counts"}, {&T->s_events, "events"}, {&T->s_fds, "fds"},
        {&T->s_on_event, "on_event"}, {&T->s_learn, "learn"}, {&T->s_lost, "_lost"}, {&T->s_on_data, "_on_data"},
        {&T->s_run, "_run"}, {&T->s_release_held, "release_held"}, {&T->s_truncated, "_truncated"},
        {&T->s_emit, "emit"}, {&T->s_held, "_held"},
    };
    for (size_t k = 0; k < sizeof(strs) / sizeof(strs[0]); k++) {
        *strs[k].dst = PyUnicode_InternFromString(strs[k].s);
        if (*strs[k].dst == NULL) {
            Py_DECREF(T);
            return NULL;
        }
    }
    T->one = PyLong_FromLong(1);
    if (T->one == NULL) {
        Py_DECREF(T);
        return NULL;
    }
    return (PyObject *)T;
}

static PyObject *bound_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames);

static PyObject *track_bind(Track *T, PyObject *tracker) {
    Bound *b = PyObject_GC_New(Bound, &BoundType);
    if (b == NULL)
        return NULL;
    b->T = (Track *)Py_NewRef(T);
    b->wr = PyWeakref_NewRef(tracker, NULL);
    b->vectorcall = bound_vectorcall;
    if (b->wr == NULL) {
        Py_DECREF(b->T);
        b->T = NULL;
        Py_DECREF(b);
        return NULL;
    }
    PyObject_GC_Track(b);
    return (PyObject *)b;
}

static void bound_dealloc(Bound *b) {
    PyObject_GC_UnTrack(b);
    Py_CLEAR(b->T);
    Py_CLEAR(b->wr);
    PyObject_GC_Del(b);
}

static int bound_traverse(Bound *b, visitproc visit, void *arg) {
    Py_VISIT(b->T);
    Py_VISIT(b->wr);
    return 0;
}

/* the methods the common case leaves to Python: tracker.NAME(args...) */
static int call_method(PyObject *tracker, PyObject *name, PyObject **a, size_t n) {
    PyObject *buf[6];
    buf[0] = tracker;
    for (size_t k = 0; k < n; k++)
        buf[k + 1] = a[k];
    PyObject *r = PyObject_VectorcallMethod(name, buf, (n + 1) | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

/* Tracker.on_event(ev) for a data event of a known connection; the rest to the Python on_event */
static PyObject *track_event(Track *T, PyObject *tracker, PyObject *ev) {
    long long kind, dir;
    if (Py_TYPE(ev) != T->etype || !small_int(SLOT(ev, T->eoff[E_KIND]), &kind) || kind != 1 ||
        !small_int(SLOT(ev, T->eoff[E_DIR]), &dir))
        goto python;  /* not a data event (or an odd one) */
    for (int k = 0; k < E_N; k++)
        if (SLOT(ev, T->eoff[k]) == NULL)
            goto python;  /* a field never set: Python says which */
    PyObject *conns = PyObject_GetAttr(tracker, T->s_conns);
    if (conns == NULL)
        return NULL;
    PyObject *key = PyTuple_Pack(2, SLOT(ev, T->eoff[E_PID]), SLOT(ev, T->eoff[E_CONN]));
    if (key == NULL) {
        Py_DECREF(conns);
        return NULL;
    }
    PyObject *c = PyDict_CheckExact(conns) ? PyDict_GetItemWithError(conns, key) : NULL;
    Py_DECREF(key);
    Py_DECREF(conns);  /* c: borrowed from the tracker's dict, which keeps it until this event closes it (it cannot) */
    if (c == NULL) {
        if (PyErr_Occurred())
            return NULL;
        goto python;  /* a new connection: Tracker._conn */
    }
    if (Py_TYPE(c) != T->ctype)
        goto python;
    for (int k = 0; k < T_N; k++)
        if (SLOT(c, T->toff[k]) == NULL)
            goto python;
    Py_INCREF(c);
    PyObject *counts = PyObject_GetAttr(tracker, T->s_counts), *res = NULL, *msgs = NULL, *emit = NULL;
    if (counts == NULL)
        goto done;
    {   /* self.counts["events"] += 1 */
        PyObject *v = PyObject_GetItem(counts, T->s_events), *nv;
        nv = v == NULL ? NULL : PyNumber_Add(v, T->one);
        Py_XDECREF(v);
        int rc = nv == NULL ? -1 : PyObject_SetItem(counts, T->s_events, nv);
        Py_XDECREF(nv);
        Py_DECREF(counts);
        if (rc < 0)
            goto done;
    }
    long long fd;
    if (!small_int(SLOT(ev, T->eoff[E_FD]), &fd) || fd >= 0) {  /* Go's events: FdSockets fills the tuple */
        PyObject *fds = PyObject_GetAttr(tracker, T->s_fds);
        if (fds == NULL)
            goto done;
        PyObject *r = PyObject_CallMethodOneArg(fds, T->s_on_event, ev);
        Py_DECREF(fds);
        if (r == NULL)
            goto done;
        Py_DECREF(r);
    }
    set_slot(c, T->toff[T_LAST], SLOT(ev, T->eoff[E_TS]));
    PyObject *peer = SLOT(ev, T->eoff[E_PEER]);
    if (peer != Py_None) {
        int learn = peer != SLOT(c, T->toff[T_PEER]) || SLOT(ev, T->eoff[E_LOCAL]) != SLOT(c, T->toff[T_LOCAL]);
        if (!learn) {
            learn = PyObject_RichCompareBool(SLOT(ev, T->eoff[E_ATTR]), SLOT(c, T->toff[T_ATTR]), Py_NE);
            if (learn < 0)
                goto done;
        }
        if (learn) {
            PyObject *r = PyObject_CallMethodOneArg(c, T->s_learn, ev);
            if (r == NULL)
                goto done;
            Py_DECREF(r);
        }
    }
    Deliverer *D = (Deliverer *)T->deliverer;
    PyObject *direction, *other;
    if (dir == 1 || dir == 2) {
        direction = dir == 1 ? D->s_in : D->s_out;
        other = dir == 1 ? D->s_out : D->s_in;
    } else {  /* DIRECTION.get(ev.dir) is None */
        res = Py_NewRef(Py_None);
        goto done;
    }
    int lost = PyObject_IsTrue(SLOT(ev, T->eoff[E_LOST]));
    if (lost < 0)
        goto done;
    if (lost) {
        PyObject *a[2] = {c, ev};
        if (call_method(tracker, T->s_lost, a, 2) < 0)
            goto done;
    }
    PyObject *data = SLOT(ev, T->eoff[E_DATA]), *parsers = SLOT(c, T->toff[T_PARSERS]);
    PyObject *p = NULL;
    if (PyBytes_CheckExact(data) && PyBytes_GET_SIZE(data) > 0 && SLOT(c, T->toff[T_H2]) == Py_None &&
        parsers != NULL && PyDict_CheckExact(parsers)) {
        p = PyDict_GetItemWithError(parsers, direction);
        if (p == NULL && PyErr_Occurred())
            goto done;
    }
    if (p != NULL && Py_TYPE(p) == ((Feeder *)T->feeder)->ptype) {
        Py_INCREF(p);
        msgs = feed_impl((Feeder *)T->feeder, p, data, SLOT(ev, T->eoff[E_TS]));
        Py_DECREF(p);
        if (msgs == NULL)
            goto done;
        if (msgs == Py_None)
            Py_CLEAR(msgs);
    }
    if (msgs == NULL) {  /* the rest of on_event in Python (the C feed declined, or was not for this chunk) */
        PyObject *a[4] = {c, direction, ev, p != NULL ? Py_True : Py_False};
        if (call_method(tracker, T->s_on_data, a, 4) < 0)
            goto done;
        res = Py_NewRef(Py_None);
        goto done;
    }
    Py_ssize_t nm = PyList_GET_SIZE(msgs);
    if (nm > 0) {
        /* a final response while the other direction holds a request for its body: that request goes first */
        PyObject *op = PyDict_GetItemWithError(parsers, other);
        if (op == NULL && PyErr_Occurred())
            goto done;
        if (op != NULL) {
            PyObject *held = Py_TYPE(op) == ((Feeder *)T->feeder)->ptype
                                 ? Py_NewRef(SLOT(op, ((Feeder *)T->feeder)->poff[P_HELD]))
                                 : PyObject_GetAttr(op, T->s_held);
            if (held == NULL)
                goto done;
            int is_held = held != Py_None;
            Py_DECREF(held);
            int final = 0;
            for (Py_ssize_t i = 0; is_held && !final && i < nm; i++) {
                PyObject *m = PyList_GET_ITEM(msgs, i);
                long long st;
                PyObject *sto = SLOT(m, D->moff[M_STATUS]);
                final = Py_TYPE(m) == D->mtype && str_is(SLOT(m, D->moff[M_KIND]), D->s_response) &&
                        (sto == Py_None ? 0 : small_int(sto, &st) ? st >= 200 : -1);
                if (final < 0) {
                    PyErr_SetString(PyExc_TypeError, "on_event: a status that is not an int");
                    goto done;
                }
            }
            if (final) {
                Py_INCREF(op);
                PyObject *rel = PyObject_CallMethodNoArgs(op, T->s_release_held);
                Py_DECREF(op);
                if (rel == NULL)
                    goto done;
                PyObject *a[4] = {c, other, rel, ev};
                int rc = call_method(tracker, T->s_run, a, 4);
                Py_DECREF(rel);
                if (rc < 0)
                    goto done;
            }
        }
        emit = PyObject_GetAttr(tracker, T->s_emit);
        if (emit == NULL)
            goto done;
        PyObject *r = deliver_impl(D, c, direction, msgs, ev, emit);
        if (r == NULL)
            goto done;
        Py_DECREF(r);
    }
    {   /* the call moved more than was captured */
        long long off, len;
        Py_ssize_t n = PyBytes_GET_SIZE(data);
        int trunc;
        if (small_int(SLOT(ev, T->eoff[E_OFFSET]), &off) && small_int(SLOT(ev, T->eoff[E_LENGTH]), &len) &&
            off < (1LL << 62) && off >= -(1LL << 62)) {
            trunc = off + n < len;
        } else {  /* ev.offset + n < ev.length in Python's arithmetic */
            PyObject *nn = PyLong_FromSsize_t(n), *end = nn == NULL ? NULL
                                                                     : PyNumber_Add(SLOT(ev, T->eoff[E_OFFSET]), nn);
            Py_XDECREF(nn);
            trunc = end == NULL ? -1 : PyObject_RichCompareBool(end, SLOT(ev, T->eoff[E_LENGTH]), Py_LT);
            Py_XDECREF(end);
            if (trunc < 0)
                goto done;
        }
        if (trunc) {
            PyObject *nn = PyLong_FromSsize_t(n);
            if (nn == NULL)
                goto done;
            PyObject *a[4] = {c, direction, ev, nn};
            int rc = call_method(tracker, T->s_truncated, a, 4);
            Py_DECREF(nn);
            if (rc < 0)
                goto done;
        }
    }
    res = Py_NewRef(Py_None);
done:
    Py_XDECREF(msgs);
    Py_XDECREF(emit);
    Py_DECREF(c);
    return res;
python: {
        PyObject *a[2] = {tracker, ev};
        return PyObject_Vectorcall(T->on_event, a, 2, NULL);
    }
}

static PyObject *bound_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    Bound *b = (Bound *)self;
    if (PyVectorcall_NARGS(nargsf) != 1 || kwnames != NULL) {
        PyErr_SetString(PyExc_TypeError, "on_event(ev) takes 1 argument");
        return NULL;
    }
    PyObject *tracker = PyWeakref_GetObject(b->wr);
    if (tracker == NULL)
        return NULL;
    if (tracker == Py_None) {
        PyErr_SetString(PyExc_ReferenceError, "the Tracker is gone");
        return NULL;
    }
    Py_INCREF(tracker);
    PyObject *r = track_event(b->T, tracker, args[0]);
    Py_DECREF(tracker);
    return r;
}

static PyMethodDef track_methods[] = {
    {"bind", (PyCFunction)track_bind, METH_O, "bind(tracker) -> tracker.on_event in C (see the module source)"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject TrackType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "hdrlog._h1feed.Track",
    .tp_basicsize = sizeof(Track),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Track(Event, Conn, Tracker.on_event, Feeder, Deliverer)",
    .tp_new = track_new,
    .tp_dealloc = (destructor)track_dealloc,
    .tp_traverse = (traverseproc)track_traverse,
    .tp_methods = track_methods,
};

static PyTypeObject BoundType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "hdrlog._h1feed.TrackedOnEvent",
    .tp_basicsize = sizeof(Bound),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "a Tracker's on_event in C (Track.bind)",
    .tp_dealloc = (destructor)bound_dealloc,
    .tp_traverse = (traverseproc)bound_traverse,
    .tp_vectorcall_offset = offsetof(Bound, vectorcall),
    .tp_call = PyVectorcall_Call,
};
