/* The Deliverer of hdrlog._h1feed: Tracker.on_event's loop over an HTTP/1 connection's messages (Pairer.on_message's
 * common cases, mcp.link, conn.messages, emit) and its type. Included by _h1feed.c only, after _h1feed_feed.h
 * (it uses the HttpMessage slot table M_* and find_slots). */

/* ------------------------------------------------------------------------------------------ delivering */

/* Deliverer(Conn, Pairer, HttpMessage, link, one).deliver(conn, direction, msgs, ev, emit): Tracker.on_event's loop
 * over an HTTP/1 connection's messages, for each: Pairer.on_message (its common cases here: a request queued, a final
 * response paired with the oldest request, no stale requests, a latency in whole microseconds not on a tie; anything
 * else calls Pairer.on_message), mcp.link when the response's request carries MCP, conn.messages += 1, then
 * emit(conn, direction, msg, ev). A message that is not an HttpMessage, or a connection that is not a Conn with a
 * Pairer, goes through one(conn, direction, msg, ev, emit) (the same in Python). */
enum { C_PAIRER, C_MESSAGES, C_N };
static const char *const c_names[C_N] = {"pairer", "messages"};
enum { Q_Q, Q_STALE, Q_ROLE, Q_UNPAIRED, Q_MAX, Q_N };
static const char *const q_names[Q_N] = {"_q", "_stale", "role", "unpaired", "max_pending"};

typedef struct {
    PyObject_HEAD
    PyTypeObject *ctype, *qtype, *mtype;
    PyObject *link, *one;
    Py_ssize_t coff[C_N], qoff[Q_N], moff[M_N];
    PyObject *s_in, *s_out, *s_request, *s_response, *s_h2, *s_server, *s_client, *s_mcp, *s_on_message;
} Deliverer;

static void deliverer_dealloc(Deliverer *D) {
    PyObject_GC_UnTrack(D);
    Py_CLEAR(D->ctype);
    Py_CLEAR(D->qtype);
    Py_CLEAR(D->mtype);
    Py_CLEAR(D->link);
    Py_CLEAR(D->one);
    PyObject **strs[] = {&D->s_in, &D->s_out, &D->s_request, &D->s_response, &D->s_h2, &D->s_server, &D->s_client,
                         &D->s_mcp, &D->s_on_message};
    for (size_t k = 0; k < sizeof(strs) / sizeof(strs[0]); k++)
        Py_CLEAR(*strs[k]);
    Py_TYPE(D)->tp_free((PyObject *)D);
}

static int deliverer_traverse(Deliverer *D, visitproc visit, void *arg) {
    Py_VISIT(D->ctype);
    Py_VISIT(D->qtype);
    Py_VISIT(D->mtype);
    Py_VISIT(D->link);
    Py_VISIT(D->one);
    return 0;
}

static PyObject *deliverer_new(PyTypeObject *tp, PyObject *args, PyObject *kw) {
    PyObject *ct, *qt, *mt, *link, *one;
    if (!PyArg_ParseTuple(args, "OOOOO", &ct, &qt, &mt, &link, &one))
        return NULL;
    Deliverer *D = (Deliverer *)tp->tp_alloc(tp, 0);
    if (D == NULL)
        return NULL;
    D->ctype = (PyTypeObject *)Py_NewRef(ct);
    D->qtype = (PyTypeObject *)Py_NewRef(qt);
    D->mtype = (PyTypeObject *)Py_NewRef(mt);
    D->link = Py_NewRef(link);
    D->one = Py_NewRef(one);
    if (!find_slots(D->ctype, c_names, C_N, D->coff) || !find_slots(D->qtype, q_names, Q_N, D->qoff) ||
        !find_slots(D->mtype, m_names, M_N, D->moff)) {
        PyErr_SetString(PyExc_TypeError, "Deliverer: a type's fields are not the object slots expected");
        Py_DECREF(D);
        return NULL;
    }
    struct { PyObject **dst; const char *s; } strs[] = {
        {&D->s_in, "in"}, {&D->s_out, "out"}, {&D->s_request, "request"}, {&D->s_response, "response"},
        {&D->s_h2, "h2"}, {&D->s_server, "server"}, {&D->s_client, "client"}, {&D->s_mcp, "mcp"},
        {&D->s_on_message, "on_message"},
    };
    for (size_t k = 0; k < sizeof(strs) / sizeof(strs[0]); k++) {
        *strs[k].dst = PyUnicode_InternFromString(strs[k].s);
        if (*strs[k].dst == NULL) {
            Py_DECREF(D);
            return NULL;
        }
    }
    return (PyObject *)D;
}

static int small_int(PyObject *o, long long *v) {  /* an exact int that fits a long long */
    if (o == NULL || !PyLong_CheckExact(o))
        return 0;
    int overflow;
    *v = PyLong_AsLongLongAndOverflow(o, &overflow);
    return !overflow && !(*v == -1 && PyErr_Occurred());
}

/* Pairer.on_message(msg, direction)'s common cases; 1 done, 0 not (nothing changed: call it), -1 error */
static int pair(Deliverer *D, PyObject *pr, PyObject *msg, int d) {
    PyObject *qs = SLOT(pr, D->qoff[Q_Q]), *stales = SLOT(pr, D->qoff[Q_STALE]), *role = SLOT(pr, D->qoff[Q_ROLE]);
    if (qs == NULL || !PyTuple_CheckExact(qs) || PyTuple_GET_SIZE(qs) != 2 || stales == NULL ||
        !PyList_CheckExact(stales) || PyList_GET_SIZE(stales) != 2 || role == NULL)
        return 0;
    PyObject *kind = SLOT(msg, D->moff[M_KIND]);
    if (str_is(kind, D->s_request)) {
        PyObject *q = PyTuple_GET_ITEM(qs, d);
        long long maxp;
        if (!PyList_CheckExact(q) || !small_int(SLOT(pr, D->qoff[Q_MAX]), &maxp) || PyList_GET_SIZE(q) >= maxp)
            return 0;
        if (PyList_Append(q, msg) < 0)
            return -1;
        if (role == Py_None)
            set_slot(pr, D->qoff[Q_ROLE], d == 0 ? D->s_server : D->s_client);
        return 1;
    }
    if (!str_is(kind, D->s_response))
        return 0;
    PyObject *q = PyTuple_GET_ITEM(qs, 1 - d);
    long long stale, status, t1, t0;
    if (!PyList_CheckExact(q) || !small_int(PyList_GET_ITEM(stales, 1 - d), &stale) || stale != 0)
        return 0;
    if (PyList_GET_SIZE(q) == 0) {
        long long unp;
        if (!small_int(SLOT(pr, D->qoff[Q_UNPAIRED]), &unp))
            return 0;
        if (role == Py_None)
            set_slot(pr, D->qoff[Q_ROLE], d == 1 ? D->s_server : D->s_client);
        return set_slot_ll(pr, D->qoff[Q_UNPAIRED], unp + 1) < 0 ? -1 : 1;
    }
    PyObject *st = SLOT(msg, D->moff[M_STATUS]);
    if (st != Py_None && (!small_int(st, &status) || (status >= 100 && status < 200 && status != 101)))
        return 0;  /* an interim response pairs without taking its request */
    PyObject *req = PyList_GET_ITEM(q, 0);
    if (Py_TYPE(req) != D->mtype || !small_int(SLOT(msg, D->moff[M_TS]), &t1) ||
        !small_int(SLOT(req, D->moff[M_TS]), &t0))
        return 0;
    if (t1 < t0 || t1 - t0 >= (1LL << 40) || (t1 - t0) % 1000 == 500)
        return 0;  /* round() decides */
    long long dt = t1 - t0, us = dt / 1000, ns = dt % 1000;
    PyObject *lat = PyFloat_FromDouble((double)(us + (ns > 500)) / 1000.0);
    if (lat == NULL)
        return -1;
    if (role == Py_None)
        set_slot(pr, D->qoff[Q_ROLE], d == 1 ? D->s_server : D->s_client);
    Py_INCREF(req);
    if (PyList_SetSlice(q, 0, 1, NULL) < 0) {
        Py_DECREF(req);
        Py_DECREF(lat);
        return -1;
    }
    Py_XSETREF(SLOT(msg, D->moff[M_REQ]), req);
    Py_XSETREF(SLOT(msg, D->moff[M_LAT]), lat);
    return 1;
}

static PyObject *deliver_impl(Deliverer *D, PyObject *conn, PyObject *dir, PyObject *msgs, PyObject *ev,
                              PyObject *emit) {
    if (!PyList_CheckExact(msgs)) {
        PyErr_SetString(PyExc_TypeError, "deliver: msgs must be a list");
        return NULL;
    }
    int d = str_is(dir, D->s_in) ? 0 : str_is(dir, D->s_out) ? 1 : -1;
    PyObject *pr = Py_TYPE(conn) == D->ctype ? SLOT(conn, D->coff[C_PAIRER]) : NULL;
    int fast = d >= 0 && pr != NULL && Py_TYPE(pr) == D->qtype;
    PyObject *res = NULL;
    Py_XINCREF(pr);  /* the Pairer of this loop, whatever emit or on_message do to conn.pairer (as Python binds it) */
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(msgs); i++) {
        PyObject *m = Py_NewRef(PyList_GET_ITEM(msgs, i)), *r;
        long long count;
        if (!fast || Py_TYPE(m) != D->mtype || !small_int(SLOT(conn, D->coff[C_MESSAGES]), &count)) {
            PyObject *a[5] = {conn, dir, m, ev, emit};
            r = PyObject_Vectorcall(D->one, a, 5, NULL);
            Py_DECREF(m);
            if (r == NULL)
                goto out;
            Py_DECREF(r);
            continue;
        }
        if (!str_is(SLOT(m, D->moff[M_PROTO]), D->s_h2)) {
            int rc = pair(D, pr, m, d);
            if (rc < 0)
                goto error;
            if (rc == 0) {
                PyObject *a[3] = {pr, m, dir};
                r = PyObject_VectorcallMethod(D->s_on_message, a, 3 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
                if (r == NULL)
                    goto error;
                Py_SETREF(m, r);
                if (Py_TYPE(m) != D->mtype) {  /* not expected: the rest in Python */
                    PyErr_SetString(PyExc_TypeError, "deliver: Pairer.on_message returned something else");
                    goto error;
                }
            }
        }
        PyObject *extra = SLOT(m, D->moff[M_EXTRA]), *req = SLOT(m, D->moff[M_REQ]);
        if (extra != NULL && req != NULL && req != Py_None && PyObject_IsTrue(extra) > 0) {
            int has = PySequence_Contains(extra, D->s_mcp);
            if (has < 0)
                goto error;
            if (has) {
                r = PyObject_CallOneArg(D->link, m);
                if (r == NULL)
                    goto error;
                Py_DECREF(r);
            }
        }
        if (PyErr_Occurred())
            goto error;
        if (!small_int(SLOT(conn, D->coff[C_MESSAGES]), &count) ||
            set_slot_ll(conn, D->coff[C_MESSAGES], count + 1) < 0) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "deliver: Conn.messages is not an int");
            goto error;
        }
        PyObject *a[4] = {conn, dir, m, ev};
        r = PyObject_Vectorcall(emit, a, 4, NULL);
        Py_DECREF(m);
        if (r == NULL)
            goto out;
        Py_DECREF(r);
        continue;
    error:
        Py_DECREF(m);
        goto out;
    }
    res = Py_NewRef(Py_None);
out:
    Py_XDECREF(pr);
    return res;
}

static PyObject *deliverer_deliver(Deliverer *D, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "deliver(conn, direction, msgs, ev, emit) takes 5 arguments");
        return NULL;
    }
    return deliver_impl(D, args[0], args[1], args[2], args[3], args[4]);
}

static PyMethodDef deliverer_methods[] = {
    {"deliver", (PyCFunction)(void (*)(void))deliverer_deliver, METH_FASTCALL,
     "deliver(conn, direction, msgs, ev, emit): pair, link, count and emit each message (Tracker.on_event's loop)"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject DelivererType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "hdrlog._h1feed.Deliverer",
    .tp_basicsize = sizeof(Deliverer),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Deliverer(Conn, Pairer, HttpMessage, link, one)",
    .tp_new = deliverer_new,
    .tp_dealloc = (destructor)deliverer_dealloc,
    .tp_traverse = (traverseproc)deliverer_traverse,
    .tp_methods = deliverer_methods,
};
