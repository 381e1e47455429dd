/* One Feeder.feed call of hdrlog._h1feed, its helpers: the Call state, a held message's release
 * (BodyCapture._release), the side capture of a body (BodyCapture._side_take), the MCP body hook decided from the
 * head (BodyCapture._want_body, quiet bodies), Pairer.response_to read without a call, an HttpMessage made from a
 * fast head, bytes search and the Python-exception path (Http1Parser.feed's except clause). Included by _h1feed.c
 * only (which defines Feeder, h1_head, the slot tables and helpers used here), before _h1feed_feed.h. */

/* ------------------------------------------------------------------------------------------ one feed call */

typedef struct {
    Feeder *F;
    PyObject *p, *data, *out;
    const unsigned char *buf;
    Py_ssize_t n;
    long long finals;
} Call;

static int is_final_msg(Call *c, PyObject *msg) {
    Feeder *F = c->F;
    if (!str_is(SLOT(msg, F->moff[M_KIND]), F->s_response))
        return 0;
    PyObject *st = SLOT(msg, F->moff[M_STATUS]);
    if (st == NULL || st == Py_None)
        return 1;
    long s = PyLong_AsLong(st);
    if (s == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 1;  /* not an int we can read: is_final(None)'s answer */
    }
    return s >= 200 || s == 101 || s < 100;
}

/* BodyCapture._release(complete): complete 1 / 0 = True / False, -1 = None. -1 on a Python error. */
static int release(Call *c, int complete) {
    Feeder *F = c->F;
    PyObject *p = c->p;
    PyObject *msg = SLOT(p, F->poff[P_HELD]), *sink = SLOT(p, F->poff[P_SINK]);
    SLOT(p, F->poff[P_HELD]) = Py_NewRef(Py_None);  /* the references move to msg and sink */
    SLOT(p, F->poff[P_SINK]) = Py_NewRef(Py_None);
    int rc = 0;
    if (sink != NULL && sink != Py_None && complete >= 0) {
        PyObject *r = PyObject_CallMethodOneArg(sink, F->s_finish, complete ? Py_True : Py_False);
        if (r == NULL)
            rc = -1;
        Py_XDECREF(r);
    }
    if (rc == 0 && msg != NULL && msg != Py_None) {
        if (PyList_Append(c->out, msg) < 0)
            rc = -1;
        else if (is_final_msg(c, msg))
            c->finals++;
    }
    Py_XDECREF(msg);
    Py_XDECREF(sink);
    return rc;
}

/* a whole body s[:k] that a fresh BodySink of `owner` (an Mcp), not decided (no Mcp-* header), would take with
 * add() and drop at finish(True) without any other effect: within the owner's limit, too short to be sniffed
 * (< SNIFF_BYTES) and without "jsonrpc" */
static int body_is_quiet(Call *c, PyObject *owner, const unsigned char *s, Py_ssize_t k) {
    Feeder *F = c->F;
    long long limit;
    if (k >= c->F->sniff || Py_TYPE(owner) != F->otype || !get_ll(owner, F->ooff[O_LIMIT], &limit) || k > limit)
        return 0;
    static const char needle[] = "\"jsonrpc\"";
    if (k >= (Py_ssize_t)sizeof(needle) - 1 && memmem(s, (size_t)k, needle, sizeof(needle) - 1) != NULL)
        return 0;
    return 1;
}

/* the same for a BodySink made by Mcp that has taken nothing yet */
static int sink_ends_quietly(Call *c, PyObject *sink, const unsigned char *s, Py_ssize_t k) {
    Feeder *F = c->F;
    if (Py_TYPE(sink) != F->ktype)
        return 0;
    PyObject *buf = SLOT(sink, F->koff[K_BUF]), *owner = SLOT(sink, F->koff[K_OWNER]);
    if (buf == NULL || !PyBytes_CheckExact(buf) || PyBytes_GET_SIZE(buf) != 0 || owner == NULL ||
        SLOT(sink, F->koff[K_DONE]) != Py_False || SLOT(sink, F->koff[K_DECIDED]) != Py_False ||
        SLOT(sink, F->koff[K_TRUNC]) != Py_False)
        return 0;
    return body_is_quiet(c, owner, s, k);
}

/* BodyCapture._side_take(data, pos) with _side == 3: returns the end of the body bytes taken, -1 on error */
static Py_ssize_t side_take(Call *c, Py_ssize_t pos) {
    Feeder *F = c->F;
    PyObject *p = c->p;
    long long brem;
    if (!get_ll(p, F->poff[P_BREM], &brem)) {
        PyErr_SetString(PyExc_RuntimeError, "_h1feed: _brem is not an int");
        return -1;
    }
    Py_ssize_t k = (brem < c->n - pos) ? (Py_ssize_t)brem : c->n - pos;
    if (k > 0) {
        brem -= k;
        if (set_slot_ll(p, F->poff[P_BREM], brem) < 0)
            return -1;
        PyObject *sink = SLOT(p, F->poff[P_SINK]);
        if (sink != NULL && sink != Py_None) {
            if (brem == 0 && sink_ends_quietly(c, sink, c->buf + pos, k)) {
                /* add() would keep the chunk, finish(True) find no jsonrpc: done, and finish() not called (it would
                 * return at once): _release below sees no sink */
                set_slot(sink, F->koff[K_DONE], Py_True);
                set_slot(p, F->poff[P_SINK], Py_None);
            } else {
                PyObject *chunk = (pos == 0 && k == c->n) ? Py_NewRef(c->data)
                                  : PyBytes_FromStringAndSize((const char *)c->buf + pos, k);
                if (chunk == NULL)
                    return -1;
                Py_INCREF(sink);
                PyObject *r = PyObject_CallMethodOneArg(sink, F->s_add, chunk);
                Py_DECREF(sink);
                Py_DECREF(chunk);
                if (r == NULL)
                    return -1;
                int more = PyObject_IsTrue(r);
                Py_DECREF(r);
                if (more < 0)
                    return -1;
                if (!more && release(c, -1) < 0)
                    return -1;
            }
        }
    }
    if (brem == 0) {
        if (set_slot_ll(p, F->poff[P_SIDE], 0) < 0)
            return -1;
        set_slot(p, F->poff[P_BMODE], Py_None);
        PyObject *held = SLOT(p, F->poff[P_HELD]);
        if (held != NULL && held != Py_None && release(c, 1) < 0)
            return -1;
    }
    return pos + k;
}

/* lower-case ASCII search of w in the str u (ASCII) */
static int ascii_contains_ci(PyObject *u, const char *w) {
    Py_ssize_t n = PyUnicode_GET_LENGTH(u), wn = (Py_ssize_t)strlen(w);
    const unsigned char *s = PyUnicode_1BYTE_DATA(u);
    for (Py_ssize_t i = 0; i + wn <= n; i++) {
        Py_ssize_t j = 0;
        while (j < wn && (unsigned char)(s[i + j] >= 'A' && s[i + j] <= 'Z' ? s[i + j] | 0x20 : s[i + j]) ==
                             (unsigned char)w[j])
            j++;
        if (j == wn)
            return 1;
    }
    return 0;
}

/* BodyCapture._want_body(msg, clen) for a fast head: 1 held (side capture set up), 0 not, 2 its body was in the
 * chunk and taken quietly (the message is out), -1 a Python error */
static int want_body(Call *c, PyObject *msg, h1_head *hd, int req, PyObject *method, Py_ssize_t h) {
    Feeder *F = c->F;
    PyObject *p = c->p, *hook = SLOT(p, F->poff[P_BODY]);
    if (!req) {
        int st = hd->status;
        if (st == 204 || st == 304 || str_is(method, F->s_head) || (str_is(method, F->s_connect) && st < 300))
            return 0;
    }
    PyObject *sink = NULL;
    long long cl = hd->clen;
    if (Py_TYPE(hook) == F->otype && (hd->ctype == NULL || hd->ctype_ascii) && hd->session == NULL &&
        hd->mversion == NULL) {
        /* hdrlog.mcp.Mcp.__call__ without an Mcp-* header */
        if (hd->ctype == NULL)
            return 0;
        int sse = ascii_contains_ci(hd->ctype, "text/event-stream");
        if (!sse && !ascii_contains_ci(hd->ctype, "json"))
            return 0;
        if (sse && str_is(method, F->s_get))
            return 0;
        long long cand;
        if (!get_ll(hook, F->ooff[O_CAND], &cand) || set_slot_ll(hook, F->ooff[O_CAND], cand + 1) < 0)
            return -1;
        if (cl <= 0 && (req || cl == 0))
            return 0;  /* no body: BodySink.finish(True) on nothing does nothing */
        if (cl > 0 && h + cl <= c->n && body_is_quiet(c, hook, c->buf + h, (Py_ssize_t)cl)) {
            /* the whole body is here and its sink would end quietly: the state _side_take leaves, the message out */
            set_slot(p, F->poff[P_BMODE], Py_None);
            if (set_slot_ll(p, F->poff[P_BREM], 0) < 0 || set_slot_ll(p, F->poff[P_SIDE], 0) < 0)
                return -1;
            set_slot(p, F->poff[P_CSTATE], F->s_size);
            set_slot(p, F->poff[P_CLINE], F->empty_bytes);
            if (PyList_Append(c->out, msg) < 0)
                return -1;
            if (!req)
                c->finals++;
            return 2;
        }
        PyObject *s = F->ktype->tp_alloc(F->ktype, 0);
        if (s == NULL)
            return -1;
        PyObject *vals[K_N] = {hook, msg, sse ? Py_True : Py_False, Py_None, Py_None, Py_False, F->empty_bytes,
                               Py_False, Py_False, Py_False};
        for (int k = 0; k < K_N; k++)
            SLOT(s, F->koff[k]) = Py_NewRef(vals[k]);
        sink = s;
    } else {
        PyObject *args[2] = {msg, method};
        Py_INCREF(hook);  /* the hook may replace parser._body */
        sink = PyObject_Vectorcall(hook, args, 2, NULL);
        Py_DECREF(hook);
        if (sink == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_Exception))
                return -1;
            PyObject *t, *v, *tb;
            PyErr_Fetch(&t, &v, &tb);
            PyObject *dbg = PyObject_GetAttr(p, F->s_debug);
            int d = dbg == NULL ? -1 : PyObject_IsTrue(dbg);
            Py_XDECREF(dbg);
            if (d > 0) {  /* debug: raise (as _want_body does) */
                PyErr_Restore(t, v, tb);
                return -1;
            }
            Py_XDECREF(t);
            Py_XDECREF(v);
            Py_XDECREF(tb);
            return d < 0 ? -1 : 0;  /* d < 0: reading debug failed, that error */
        }
        if (sink == Py_None) {
            Py_DECREF(sink);
            return 0;
        }
    }
    /* framing known: Content-Length cl (-1: none); a response without one is not taken (see feed) */
    if (cl <= 0) {
        PyObject *r = PyObject_CallMethodOneArg(sink, F->s_finish, Py_True);
        Py_DECREF(sink);
        if (r == NULL)
            return -1;
        Py_DECREF(r);
        return 0;
    }
    Py_XSETREF(SLOT(p, F->poff[P_SINK]), sink);
    set_slot(p, F->poff[P_HELD], msg);
    set_slot(p, F->poff[P_BMODE], F->s_side);
    if (set_slot_ll(p, F->poff[P_BREM], cl) < 0)
        return -1;
    set_slot(p, F->poff[P_CSTATE], F->s_size);
    set_slot(p, F->poff[P_CLINE], F->empty_bytes);
    return 1;
}

/* Pairer.response_to(direction, skip) when rt is a Pairer's bound _response_to_in/_out (read, not called): a new
 * reference to the method (or None); NULL with no error set when rt is something else (then it is called) */
static PyObject *pairer_method(Feeder *F, PyObject *rt, long long skip) {
    if (!PyMethod_Check(rt))
        return NULL;
    PyObject *fn = PyMethod_GET_FUNCTION(rt), *pr = PyMethod_GET_SELF(rt);
    if (Py_TYPE(pr) != F->rtype || (fn != F->rt_in && fn != F->rt_out))
        return NULL;
    int src = fn == F->rt_in ? 1 : 0;  /* the requests of the other direction */
    PyObject *qs = SLOT(pr, F->roff[R_Q]), *stales = SLOT(pr, F->roff[R_STALE]);
    if (qs == NULL || !PyTuple_CheckExact(qs) || PyTuple_GET_SIZE(qs) != 2 || stales == NULL ||
        !PyList_CheckExact(stales) || PyList_GET_SIZE(stales) != 2)
        return NULL;
    PyObject *q = PyTuple_GET_ITEM(qs, src), *st = PyList_GET_ITEM(stales, src);
    if (!PyList_CheckExact(q) || !PyLong_CheckExact(st))
        return NULL;
    int overflow;
    long long stale = PyLong_AsLongLongAndOverflow(st, &overflow);
    if (overflow || stale < 0)
        return NULL;
    Py_ssize_t len = PyList_GET_SIZE(q);
    long long i = (len > stale ? stale : 0) + skip;
    if (i >= len)
        return Py_NewRef(Py_None);
    PyObject *req = PyList_GET_ITEM(q, (Py_ssize_t)i);
    if (Py_TYPE(req) != F->mtype)
        return NULL;
    PyObject *m = SLOT(req, F->moff[M_METHOD]);
    return m == NULL ? NULL : Py_NewRef(m);
}

/* the head's HttpMessage, made as object.__new__ and its __init__ would (slots filled in order) */
static PyObject *make_msg(Call *c, h1_head *hd, int req, PyObject *ts) {
    Feeder *F = c->F;
    PyObject *extra = PyDict_New();
    if (extra == NULL)
        return NULL;
    PyObject *msg = F->mtype->tp_alloc(F->mtype, 0);
    if (msg == NULL) {
        Py_DECREF(extra);
        return NULL;
    }
    PyObject *vals[M_N] = {req ? F->s_request : F->s_response, hd->minor ? F->s_11 : F->s_10, ts, hd->headers,
                           req ? hd->first : Py_None, req ? hd->second : Py_None,
                           req ? (hd->host ? hd->host : Py_None) : Py_None, req ? Py_None : hd->first,
                           req ? Py_None : hd->second, Py_False, Py_None, Py_None, Py_None, extra};
    for (int k = 0; k < M_N; k++)
        SLOT(msg, F->moff[k]) = Py_NewRef(vals[k]);
    Py_DECREF(extra);
    return msg;
}

/* a bytes search in buf[a:b] as bytes.find: offset or -1 */
static Py_ssize_t find(const unsigned char *buf, Py_ssize_t a, Py_ssize_t b, const char *w, Py_ssize_t wn) {
    if (a < 0)
        a = 0;
    if (b - a < wn)
        return -1;
    const unsigned char *r = memmem(buf + a, (size_t)(b - a), w, (size_t)wn);
    return r == NULL ? -1 : (Py_ssize_t)(r - buf);
}

/* a Python exception while the chunk was being taken: as Http1Parser.feed's except clause (debug: raise, else
 * _fail()) with _out the messages so far */
static PyObject *failed(Call *c) {
    Feeder *F = c->F;
    if (!PyErr_ExceptionMatches(PyExc_Exception))
        return NULL;
    PyObject *t, *v, *tb;
    PyErr_Fetch(&t, &v, &tb);
    PyObject *dbg = PyObject_GetAttr(c->p, F->s_debug);
    int d = dbg == NULL ? -1 : PyObject_IsTrue(dbg);
    Py_XDECREF(dbg);
    if (d != 0) {
        if (d < 0) {  /* reading debug failed: that error */
            Py_XDECREF(t);
            Py_XDECREF(v);
            Py_XDECREF(tb);
        } else {
            PyErr_Restore(t, v, tb);
        }
        return NULL;
    }
    Py_XDECREF(t);
    Py_XDECREF(v);
    Py_XDECREF(tb);
    set_slot(c->p, F->poff[P_OUT], c->out);
    PyObject *r = PyObject_CallMethodNoArgs(c->p, F->s_fail);
    set_slot(c->p, F->poff[P_OUT], F->no_out);
    if (r == NULL)
        return NULL;
    Py_DECREF(r);
    return Py_NewRef(c->out);
}
